"""Model passes of a robustness evaluation: first-order adversarial items, top-K lists and ranks.

Everything here runs the model; nothing here draws plans or writes files.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from catrec.evaluate import score_users
from catrec.fullrank import (
    SCORE_BUDGET,
    chunk_bounds,
    chunked_ranks,
    plan_chunks,
    table_absmax,
    top_k,
)
from catrec.metrics.ranking import ranks_from_scores
from catrec.models.base import SequentialRecommender, trim_padding
from catrec.robustness.plan import real_lengths
from catrec.train.softmax_ce import full_softmax_ce


def _batches(inputs: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row batches in order of sequence length, so that each batch trims most of its padding."""
    order = np.argsort(real_lengths(inputs), kind="stable")
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def _replacement_gradients(
    model: SequentialRecommender, x: Tensor, y: Tensor, columns: Tensor, chunked: bool = False
) -> tuple[Tensor, Tensor]:
    """``g [B, k, d]`` (loss gradient at each replaced column, 0 where the input drops it) and
    ``current [B, k, d]`` (embeddings of the items there); see :func:`replacement_gains`.

    ``chunked`` computes the cross-entropy with :func:`catrec.train.softmax_ce.full_softmax_ce`
    (a few rows of ``[rows, n_items]`` logits at a time) instead of ``[B, n_items]`` logits.
    """
    n_rows = model.n_items + 1
    ids = model.prediction_input(x)  # [B, W']
    kept = ids.shape[1] - (0 if model.mask_token is None else 1)  # x columns kept, at the front
    offset = x.shape[1] - kept  # x column c is ids column c - offset
    table = model.item_table().detach()
    # cuDNN's RNN has no backward in eval mode (GRU4Rec on CUDA): the native kernels do.
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        e = model.embed(ids, table).requires_grad_(True)  # [B, W', d]
        h = model.encode(e, ids > 0)[:, -1]  # [B, d]
        if chunked:
            loss = full_softmax_ce(h, table[1:n_rows], y - 1) * len(y)
        else:
            logits = model.score(h, table)[:, 1:n_rows]  # [B, n_items]; padding is no candidate
            loss = F.cross_entropy(logits, y - 1, reduction="sum")
        (grad,) = torch.autograd.grad(loss, e)  # [B, W', d]
    B = x.shape[0]
    arange = torch.arange(B, device=x.device)[:, None]  # [B, 1]
    c_ids = columns - offset  # [B, k]
    reached = c_ids >= 0
    g = grad[arange, c_ids.clamp(min=0)] * reached[..., None]  # [B, k, d]
    current = table[:n_rows][x[arange, columns]]  # [B, k, d] embeddings of the replaced items
    return g, current


def replacement_gains(
    model: SequentialRecommender, x: Tensor, y: Tensor, columns: Tensor
) -> Tensor:
    """First-order loss gains ``[B, k, n_items + 1]`` of putting item j at each replaced column.

    ``gain[b, i, j] = g · (E_j - E_{x[b, c]})`` with ``c = columns[b, i]`` and
    ``g = d CE(score(h_last), y[b]) / d e_c`` on the clean input ``x [B, W]`` (left-padded; the
    cross-entropy is the full softmax over items 1..n_items, as in training). Rows are independent
    (the loss is summed, so each row's gradient is its own). The model should be in eval mode.

    Bidirectional models predict from ``model.prediction_input(x)``: the ``x`` columns it keeps
    followed by one mask token. A column that input drops (the oldest item of a history already
    ``max_len`` long) cannot change the prediction: its gradient and gains are 0.
    """
    g, current = _replacement_gradients(model, x, y, columns)
    items_table = model.item_table().detach()[: model.n_items + 1]  # [n_items + 1, d]
    return g @ items_table.T - (g * current).sum(-1, keepdim=True)  # [B, k, n_items + 1]


def _best_items_chunked(
    model: SequentialRecommender, g: Tensor, current: Tensor, banned_ids: Tensor, width: int
) -> Tensor:
    """Greedy adversarial picks ``[B, k]`` (0 where nothing is admissible), ``width`` items at a
    time: for each column in turn, the first item of largest gain (as ``argmax``) among those not
    in ``banned_ids [B, F]`` (padding, history, target) and not picked for an earlier column."""
    B, k, _ = g.shape
    rows = torch.arange(B, device=g.device)
    flat_rows = rows.repeat_interleave(banned_ids.shape[1])
    picked = torch.zeros(B, k, dtype=torch.int64, device=g.device)
    for j in range(k):
        ban_items = torch.cat([banned_ids, picked[:, :j]], 1).reshape(-1)
        ban_rows = torch.cat([flat_rows, rows.repeat_interleave(j)])
        best_v = torch.full((B,), float("-inf"), device=g.device)
        best_i = torch.zeros(B, dtype=torch.int64, device=g.device)
        base = (g[:, j] * current[:, j]).sum(-1, keepdim=True)  # [B, 1]
        for lo, new, hi in chunk_bounds(model.n_items + 1, width):
            gain = model.score_items(g[:, j], lo, hi) - base  # [B, hi - lo]
            inside = (ban_items >= lo) & (ban_items < hi)
            gain[ban_rows[inside], ban_items[inside] - lo] = float("-inf")
            if lo == 0:
                gain[:, 0] = float("-inf")
            v, i = gain[:, new - lo :].max(dim=1)  # first maximum within the chunk
            better = v > best_v  # strictly: an earlier item keeps a tie
            best_v = torch.where(better, v, best_v)
            best_i = torch.where(better, i + new, best_i)
        picked[:, j] = torch.where(torch.isinf(best_v), 0, best_i)
    return picked


def adversarial_items(
    model: SequentialRecommender,
    inputs: np.ndarray,
    targets: np.ndarray,
    columns: np.ndarray,
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    on_batch: Callable[[], None] | None = None,
    max_scores: int = SCORE_BUDGET,
) -> np.ndarray:
    """First-order adversarial replacement items ``[U, k]`` (0 for skipped rows).

    For each row and replaced column the item with the largest :func:`replacement_gains` among
    real items that are not in the input, not the target and not already picked for this row
    (columns are filled in order, oldest first).

    Args:
        inputs: ``[U, L]`` left-padded test inputs; targets: ``[U]``.
        columns: ``[U, k]`` columns to replace (``-1`` rows are skipped).
        max_scores: most gains (users x items) held at once: beyond ``batch_size x k x
            (n_items + 1)`` the catalogue is searched in chunks (the cross-entropy gradient too),
            with the same picks up to floating-point summation order.
    """
    was_training = model.training
    model.eval()
    U, k = columns.shape
    out = np.zeros((U, k), dtype=np.int64)
    n_rows = model.n_items + 1
    plan = plan_chunks(batch_size, n_rows * k, max_scores)
    chunked = plan.width < n_rows * k
    if chunked:
        plan = plan_chunks(batch_size, n_rows, max_scores, device)
    try:
        valid = np.flatnonzero(columns[:, 0] >= 0)
        for rows in _batches(inputs[valid], plan.users):
            rows = valid[rows]
            x = trim_padding(torch.as_tensor(inputs[rows], device=device))  # [B, W]
            first = inputs.shape[1] - x.shape[1]  # columns trimmed away (padding everywhere)
            y = torch.as_tensor(targets[rows], device=device)
            cols = torch.as_tensor(columns[rows], device=device) - first  # [B, k]
            if chunked:
                g, current = _replacement_gradients(model, x, y, cols, chunked=True)
                banned = torch.cat([x, y[:, None]], 1)  # [B, W + 1]
                out[rows] = _best_items_chunked(model, g, current, banned, plan.width).cpu().numpy()
                if on_batch is not None:
                    on_batch()
                continue
            gains = replacement_gains(model, x, y, cols)  # [B, k, n_items + 1]
            B = len(rows)
            banned = torch.zeros(B, n_rows, dtype=torch.bool, device=gains.device)
            banned[:, 0] = True
            banned.scatter_(1, x, True)
            banned.scatter_(1, y[:, None], True)
            arange = torch.arange(B, device=gains.device)
            for j in range(k):
                gain = gains[:, j].masked_fill(banned, float("-inf"))  # [B, n_items + 1]
                best = gain.argmax(dim=1)
                best = torch.where(torch.isinf(gain[arange, best]), 0, best)
                banned[arange, best] = True
                out[rows, j] = best.cpu().numpy()
            if on_batch is not None:
                on_batch()
    finally:
        model.train(was_training)
    out[(out == 0).any(axis=1)] = 0
    return out


@torch.no_grad()
def topk_and_ranks(
    model: SequentialRecommender,
    inputs: np.ndarray,
    targets: np.ndarray,
    depth: int,
    *,
    mask_history: bool = True,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    on_batch: Callable[[], None] | None = None,
    max_scores: int = SCORE_BUDGET,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``depth`` item lists ``[U, depth]`` and pessimistic target ranks ``[U]`` by full
    ranking of the masked scores (as :func:`catrec.evaluate.evaluate_ranking`, also for
    ``max_scores``: large catalogues are ranked in chunks, with the same ranks and lists). Lists
    are :func:`catrec.fullrank.top_k`'s: equal scores by item index, so they are deterministic."""
    was_training = model.training
    model.eval()
    U = len(targets)
    top = np.zeros((U, depth), dtype=np.int64)
    ranks = np.zeros(U, dtype=np.float64)
    n_cols = model.n_items + 1
    plan = plan_chunks(batch_size, n_cols, max_scores, device)
    absmax = table_absmax(model) if plan.width < n_cols else None
    try:
        for rows in _batches(inputs, plan.users):
            if plan.width < n_cols:
                x = trim_padding(torch.as_tensor(inputs[rows], device=device))
                y = torch.as_tensor(targets[rows], device=device)
                r, t = chunked_ranks(
                    model, x, y, plan.width, mask_history=mask_history, depth=depth, absmax=absmax
                )
                ranks[rows], top[rows] = r.cpu().numpy(), t.cpu().numpy()
                if on_batch is not None:
                    on_batch()
                continue
            x = torch.as_tensor(inputs[rows], device=device)
            scores = score_users(model, x, mask_history)  # [B, n_items + 1]
            ranks[rows] = (
                ranks_from_scores(scores, torch.as_tensor(targets[rows], device=device))
                .cpu()
                .numpy()
            )
            top[rows] = top_k(scores, depth)[0].cpu().numpy()
            if on_batch is not None:
                on_batch()
    finally:
        model.train(was_training)
    return top, ranks


def apply_replacements(inputs: np.ndarray, columns: np.ndarray, items: np.ndarray) -> np.ndarray:
    """A copy of ``inputs [R, L]`` with ``items [R, k]`` written at ``columns [R, k]``."""
    out = inputs.copy()
    np.put_along_axis(out, columns, items, axis=1)
    return out
