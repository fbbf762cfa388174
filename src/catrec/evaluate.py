"""Full-ranking evaluation over all items (CAT.md §4).

Scores every item for every user, never a sampled candidate set. The padding id is never ranked;
items of the user's input sequence are excluded by default (score ``-inf``, never 0, since dot
products can be negative). A target that occurs in the input sequence is then a miss; how often
that happens is reported as ``target_in_history``.

Large catalogues are ranked a chunk of items at a time (:mod:`catrec.fullrank`): a batch holds at
most ``max_scores`` users x items scores, whatever the catalogue size, with identical ranks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from catrec.fullrank import SCORE_BUDGET, chunked_ranks, plan_chunks, table_absmax
from catrec.metrics.ranking import DEFAULT_KS, RankingAccumulator, ranks_from_scores
from catrec.models.base import SequentialRecommender, trim_padding


def mask_scores(scores: Tensor, item_ids: Tensor, mask_history: bool = True) -> Tensor:
    """Set padding (column 0) and, optionally, the items of ``item_ids [B, L]`` to ``-inf``.

    ``scores [B, n_items + 1]`` is modified in place and returned.
    """
    if mask_history:
        scores.scatter_(1, item_ids, float("-inf"))  # padding id 0 is masked here too
    scores[:, 0] = float("-inf")
    return scores


@torch.no_grad()
def score_users(
    model: SequentialRecommender,
    inputs: Tensor,
    mask_history: bool = True,
) -> Tensor:
    """Masked next-item scores ``[B, n_items + 1]`` for input sequences ``inputs [B, L]``."""
    ids = trim_padding(inputs)
    return mask_scores(model.predict(ids), ids, mask_history)


@torch.no_grad()
def evaluate_ranking(
    model: SequentialRecommender,
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    batch_size: int = 1024,
    mask_history: bool = True,
    ks: tuple[int, ...] = DEFAULT_KS,
    device: str | torch.device = "cpu",
    max_scores: int = SCORE_BUDGET,
) -> dict[str, float]:
    """HR@K, NDCG@K, MRR over all users by full ranking.

    Args:
        inputs: ``[U, L]`` left-padded input sequences; targets: ``[U]`` item ids.
        batch_size: most users per batch.
        max_scores: most scores (users x items, float32: 4 bytes each) held at once. While
            ``batch_size x (n_items + 1)`` fits, each batch is scored whole; beyond, the items
            are scored in chunks and the batch may shrink (:func:`catrec.fullrank.plan_chunks`).
            The ranks are the same either way.

    Returns:
        metrics keyed ``"HR@10"``, ``"NDCG@10"``, ``"MRR"``, ..., plus ``"n_users"`` and
        ``"target_in_history"`` (share of targets that occur in their input sequence).

    Raises:
        catrec.metrics.ranking.NumericalError: the model produced NaN scores.
    """
    was_training = model.training
    model.eval()
    acc = RankingAccumulator(ks)
    # Users in order of sequence length, so that each batch trims most of its padding; the
    # metrics are means over users and do not depend on the order.
    order = np.argsort((inputs > 0).sum(axis=1), kind="stable")
    n_cols = model.n_items + 1
    plan = plan_chunks(batch_size, n_cols, max_scores)
    absmax = table_absmax(model) if plan.width < n_cols else None
    try:
        for start in range(0, len(targets), plan.users):
            rows = order[start : start + plan.users]
            x = torch.as_tensor(inputs[rows], device=device)
            y = torch.as_tensor(targets[rows], device=device)
            if plan.width >= n_cols:
                acc.add(ranks_from_scores(score_users(model, x, mask_history), y))
            else:
                ids = trim_padding(x)
                ranks, _ = chunked_ranks(
                    model, ids, y, plan.width, mask_history=mask_history, absmax=absmax
                )
                acc.add(ranks)
    finally:
        model.train(was_training)
    out = acc.compute()
    out["n_users"] = len(targets)
    out["target_in_history"] = float((inputs == targets[:, None]).any(axis=1).mean())
    return out
