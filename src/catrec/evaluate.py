"""Full-ranking evaluation over all items (CAT.md §4).

Scores every item for every user, never a sampled candidate set. The padding id is never ranked;
items of the user's input sequence, as far as the model reads it, are excluded by default (score
``-inf``, never 0, since dot products can be negative). A target that occurs in the input
sequence is then a miss; how often that happens is reported as ``target_in_history``.

Large catalogues are ranked a chunk of items at a time (:mod:`catrec.fullrank`): a batch holds at
most ``max_scores`` users x items scores, whatever the catalogue size, with identical ranks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from catrec.fullrank import SCORE_BUDGET, chunked_ranks, plan_chunks, table_absmax
from catrec.metrics.ranking import (
    DEFAULT_KS,
    NumericalError,
    RankingAccumulator,
    ranks_from_scores,
)
from catrec.models.base import SequentialRecommender, items_read, trim_padding


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
    """Masked next-item scores ``[B, n_items + 1]`` for input sequences ``inputs [B, L]``.

    The history mask is taken on what the model reads, ``model.prediction_input`` (for BERT4Rec:
    without the oldest item of a full-length input, which makes room for the mask token), so
    that an item the model never saw cannot change the ranking through the mask.
    """
    ids = trim_padding(inputs)
    return mask_scores(model.predict(ids), items_read(model, ids), mask_history)


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
    progress: bool = False,
    desc: str = "ranking",
    dist=None,
    max_scores: int = SCORE_BUDGET,
    ranks_out: np.ndarray | None = None,
) -> dict[str, float]:
    """HR@K, NDCG@K, MRR over all users by full ranking.

    Args:
        inputs: ``[U, L]`` left-padded input sequences; targets: ``[U]`` item ids.
        batch_size: most users per batch.
        max_scores: most scores (users x items, float32: 4 bytes each) held at once. While
            ``batch_size x (n_items + 1)`` fits, each batch is scored whole; beyond, the items
            are scored in chunks and the batch may shrink (:func:`catrec.fullrank.plan_chunks`).
            The ranks are the same either way.
        progress: show a progress bar over users (titled ``desc``; it disappears when done).
        dist: a :class:`catrec.train.distributed.DistContext` to share the work between the
            ranks of a data-parallel job: the single process's batches are dealt round-robin to
            the ranks and the per-user ranks summed over ranks, so every rank returns exactly the
            single-process metrics.
        ranks_out: ``[U]`` float array filled with each user's pessimistic rank of the target
            (in the order of ``inputs``; ``inf`` for a masked target), for paired tests.

    Returns:
        metrics keyed ``"HR@10"``, ``"NDCG@10"``, ``"MRR"``, ..., plus ``"n_users"`` and
        ``"target_in_history"`` (share of targets that occur in their input sequence).

    Raises:
        catrec.metrics.ranking.NumericalError: the model produced NaN scores.
    """
    was_training = model.training
    model.eval()
    # Users in order of sequence length, so that each batch trims most of its padding; the
    # metrics are means over users and do not depend on the order.
    order = np.argsort((inputs > 0).sum(axis=1), kind="stable")
    n_cols = model.n_items + 1
    plan = plan_chunks(batch_size, n_cols, max_scores, device)
    absmax = table_absmax(model) if plan.width < n_cols else None
    bar = tqdm(
        total=len(targets),
        desc=desc,
        unit="user",
        disable=not progress,
        leave=False,
        mininterval=0.5,
        dynamic_ncols=True,
    )
    try:
        if dist is None:
            acc = RankingAccumulator(ks)
            for start in range(0, len(targets), plan.users):
                rows = order[start : start + plan.users]
                x = torch.as_tensor(inputs[rows], device=device)
                y = torch.as_tensor(targets[rows], device=device)
                if plan.width >= n_cols:
                    ranks = ranks_from_scores(score_users(model, x, mask_history), y)
                else:
                    ranks, _ = chunked_ranks(
                        model,
                        trim_padding(x),
                        y,
                        plan.width,
                        mask_history=mask_history,
                        absmax=absmax,
                    )
                acc.add(ranks)
                if ranks_out is not None:
                    ranks_out[rows] = ranks.cpu().numpy()
                bar.update(len(rows))
        else:
            acc = _sharded_ranks(
                model, inputs, targets, order, batch_size, mask_history, ks, dist, ranks_out
            )
    finally:
        bar.close()
        model.train(was_training)
    out = acc.compute()
    out["n_users"] = len(targets)
    out["target_in_history"] = float((inputs == targets[:, None]).any(axis=1).mean())
    return out


def _sharded_ranks(
    model, inputs, targets, order, batch_size, mask_history, ks, dist, ranks_out=None
) -> RankingAccumulator:
    """Ranks of this rank's batches, summed over ranks into ``[U]`` (each user scored by exactly
    one rank, in the single process's batch), then accumulated in the single process's order."""
    batches = [order[s : s + batch_size] for s in range(0, len(targets), batch_size)]
    device = dist.device
    # [ranks of every user | times each user was scored | NaN flag]
    buf = torch.zeros(2 * len(targets) + 1, dtype=torch.float64, device=device)
    ranks, seen = buf[: len(targets)], buf[len(targets) : 2 * len(targets)]
    for i in range(dist.rank, len(batches), dist.world_size):
        rows = torch.as_tensor(batches[i], device=device)
        x = torch.as_tensor(inputs[batches[i]], device=device)
        y = torch.as_tensor(targets[batches[i]], device=device)
        try:
            ranks[rows] = ranks_from_scores(score_users(model, x, mask_history), y)
        except NumericalError:
            buf[-1] = 1.0  # every rank raises below, none waits for the others
            break
        seen[rows] += 1.0
    dist.sum_(buf, "the sharded evaluation")
    if buf[-1] > 0:
        raise NumericalError("model produced NaN scores")
    if not bool((seen == 1).all()):  # an invariant of the round-robin deal
        raise RuntimeError("sharded evaluation scored some user more or less than once")
    acc = RankingAccumulator(ks)
    ranks = ranks.cpu()
    if ranks_out is not None:
        ranks_out[:] = ranks.numpy()
    for rows in batches:
        acc.add(ranks[torch.as_tensor(rows)])
    return acc
