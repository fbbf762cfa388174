"""Full ranking of one batch of users in bounded memory (large catalogues).

Full ranking scores every item for every user: ``[B, n_items + 1]`` floats per batch, 4 GB for
1,024 users and a million items, plus the comparison masks. Here the catalogue is scored a chunk
of items at a time, ``[B, C]`` with ``B x C`` at most a budget of elements, and only what ranking
needs is kept across chunks: per user a count, a running top-K list or a running argmax.

Ranks are exactly those of :func:`catrec.metrics.ranking.ranks_from_scores` on the masked full
scores (CAT.md §4): with ``t`` the target's masked score, rank = 1 + #(scores > t) + #(other
scores == t) = #(masked scores >= t), and ``inf`` when ``t = -inf``. Two details make the chunked
path reproduce the plain one bit for bit:

- every chunk has the same width ``C`` (the last one starts ``C`` items before the end and counts
  only its new columns) and is at least :data:`MIN_CHUNK` items wide: MKL rounds a dot product
  differently in narrow or odd-shaped products, and a one-ulp difference decides a near tie;
- the target's score is read from the chunk that holds it, not recomputed: ranking counts against
  a first guess (``h_i · E_{y_i}`` from one small product), checks the guess against the chunk
  value, and re-counts the batch with the chunk values in the rare case they differ.

NaN detection is kept: a chunk is scanned for NaN unless NaN is impossible (hidden states and item
table finite and too small for a dot product to overflow).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from catrec.metrics.ranking import NumericalError
from catrec.models.base import SequentialRecommender, items_read

#: Elements (users x items) of one block of scores: 2**25 float32 = 128 MiB, plus a 32 MiB mask.
SCORE_BUDGET = 1 << 25
#: Elements of one chunk on a CPU once the catalogue is chunked: 2**20 float32 = 4 MiB, which stays
#: in cache through the product and the counting passes. Measured at a million items (1,024
#: random users, SASRec d = 64, 2 cores): 1.9 s per batch with 1,024-item chunks against 4.1 s
#: with 32,768-item (128 MiB) chunks, 2.4 s at 2,048 and 2.2 s at 512 (docs/benchmarks/scale-1m.md).
CPU_CHUNK_ELEMENTS = 1 << 20
#: Narrowest chunk of items; narrower products are rounded differently by the BLAS (see above).
MIN_CHUNK = 256
_FLOAT32_MAX = 3.4e38
#: Below this target score, counting uses exact comparisons (no subnormal differences).
_TINY = 1e-30
#: Widest chunk: a float32 count of up to 2**24 ones is exact.
MAX_CHUNK = 1 << 24


@dataclass(frozen=True)
class ChunkPlan:
    """How a batch is scored: ``users`` per batch and ``width`` items per chunk.

    ``width >= n_cols`` means one chunk, i.e. the plain whole-catalogue product.
    """

    users: int
    width: int

    @property
    def elements(self) -> int:
        return self.users * self.width


def plan_chunks(
    batch_size: int,
    n_cols: int,
    budget: int = SCORE_BUDGET,
    device: str | torch.device = "cpu",
) -> ChunkPlan:
    """Users per batch and items per chunk for ``n_cols`` columns within ``budget`` elements.

    The whole catalogue is one chunk while ``batch_size x n_cols <= budget`` (small catalogues
    are ranked exactly as before); otherwise chunks are ``budget // users`` items wide on a GPU
    and ``min(budget, CPU_CHUNK_ELEMENTS) // users`` on a CPU (cache-sized, see
    :data:`CPU_CHUNK_ELEMENTS`), at least :data:`MIN_CHUNK`, and the batch shrinks so that
    ``users x MIN_CHUNK <= budget``.

    Raises:
        ValueError: ``batch_size`` or ``budget`` is below 1.
    """
    if batch_size < 1 or budget < 1:
        raise ValueError(f"batch_size and budget must be >= 1, got {batch_size}, {budget}")
    if batch_size * n_cols <= budget:
        return ChunkPlan(batch_size, n_cols)
    users = max(1, min(batch_size, budget // MIN_CHUNK))
    block = budget if torch.device(device).type != "cpu" else min(budget, CPU_CHUNK_ELEMENTS)
    return ChunkPlan(users, min(MAX_CHUNK, max(MIN_CHUNK, block // users)))


def chunk_bounds(n_cols: int, width: int) -> Iterator[tuple[int, int, int]]:
    """``(lo, new, hi)`` per chunk: score columns ``lo:hi``, count only ``new:hi``.

    Every chunk is ``min(width, n_cols)`` columns wide: the last one starts ``width`` columns
    before the end (overlapping its predecessor) when ``width`` does not divide ``n_cols``.
    """
    width = min(width, n_cols)
    for new in range(0, n_cols, width):
        hi = min(new + width, n_cols)
        yield hi - width, new, hi


class _HistoryMask:
    """The ``(row, item)`` pairs to mask, sorted by item, so each chunk finds its own in O(log)."""

    def __init__(self, ids: Tensor, mask_history: bool) -> None:
        B, W = ids.shape
        if mask_history:
            rows = torch.arange(B, device=ids.device).repeat_interleave(W)
            items = ids.reshape(-1)
            keep = items > 0
            rows, items = rows[keep], items[keep]
            order = torch.argsort(items, stable=True)
            self.rows, self.items = rows[order], items[order]
        else:
            self.rows = self.items = ids.new_zeros(0)

    def apply(self, block: Tensor, lo: int, hi: int) -> None:
        """Set padding and history items of ``block [B, hi - lo]`` (columns ``lo:hi``) to -inf."""
        if lo == 0:
            block[:, 0] = float("-inf")
        if self.items.numel():
            a, b = torch.searchsorted(
                self.items, torch.tensor([lo, hi], device=self.items.device)
            ).tolist()
            if b > a:
                block[self.rows[a:b], self.items[a:b] - lo] = float("-inf")


def _nan_possible(hidden: Tensor, table_absmax: float) -> bool:
    """False when no dot product of ``hidden [B, d]`` with a finite table row can be NaN."""
    if not bool(torch.isfinite(hidden).all()) or not table_absmax < float("inf"):
        return True
    bound = float(hidden.abs().max()) * table_absmax * hidden.shape[1]
    return not bound * 2 < _FLOAT32_MAX  # no partial sum can overflow to inf, so no inf - inf


def table_absmax(model: SequentialRecommender) -> float:
    """Largest ``|value|`` of the scored item rows (``inf`` if any is not finite)."""
    table = model.item_table()[: model.n_items + 1].detach()
    if not bool(torch.isfinite(table).all()):
        return float("inf")
    return float(table.abs().max())


def _guess_target_scores(hidden: Tensor, table: Tensor, targets: Tensor) -> Tensor:
    """``[B]`` target scores from one ``[B, B]`` product: usually bit-equal to the chunk values
    (same kernel family), which :func:`chunked_ranks` checks."""
    return (hidden @ table[targets].T).diagonal().clone()


def _count_at_least(view: Tensor, t: Tensor, scratch: Tensor, fast: bool) -> Tensor:
    """``[B]`` int64: how many entries of each row of ``view [B, C]`` are ``>= t [B]``.

    ``fast`` (every ``t`` finite and ``|t| >= _TINY``, no NaN in ``view``): ``sign(t - s)``
    clamped at 0 is 1 exactly where ``s < t`` (the difference of two floats is 0 only when they
    are equal, and cannot be subnormal at these magnitudes), and float sums of 0/1 are exact below
    2**24 columns: about 3x faster than summing a bool mask. Overwrites ``view``.
    """
    if not fast:
        ge = torch.ge(view, t[:, None], out=scratch[:, : view.shape[1]])
        return ge.sum(dim=1)
    below = torch.sub(t[:, None], view, out=view).sign_().clamp_(min=0).sum(dim=1)
    return view.shape[1] - below.to(torch.int64)


def top_k(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` best columns of masked ``scores [B, V]``, best first: ``(ids [B, k], scores)``.

    Equal scores are listed by item index (as a stable sort of all columns would), so the list
    is deterministic; the item at position ``j`` has the pessimistic rank
    :func:`~catrec.metrics.ranking.ranks_from_scores` gives it (``j + 1``) whenever its score is
    not tied. Masked columns (``-inf``) appear only when fewer than ``k`` columns are unmasked;
    callers drop them. ``k`` is capped at ``V``.

    ``torch.topk`` alone leaves the order of ties unspecified; a full sort costs ~50x more at
    12k items, so only rows with a tie across the k-th place are fully sorted.

    Raises:
        catrec.metrics.ranking.NumericalError: any score is NaN.
    """
    if torch.isnan(scores).any():
        raise NumericalError("model produced NaN scores")
    return _ordered_topk(scores, k)


def _ordered_topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """:func:`top_k` without the NaN check (the caller has made it, or knows NaN impossible)."""
    k = min(k, scores.shape[1])
    values, ids = torch.topk(scores, k, dim=1)  # [B, k]
    ids, order = ids.sort(dim=1)  # by index, then stably by descending score
    values, order = values.gather(1, order).sort(dim=1, descending=True, stable=True)
    ids = ids.gather(1, order)
    tied = (scores >= values[:, -1:]).sum(dim=1) > k  # a tie across the k-th place
    if bool(tied.any()):
        v, i = torch.sort(scores[tied], dim=1, descending=True, stable=True)
        values[tied], ids[tied] = v[:, :k], i[:, :k]
    return ids, values


@torch.no_grad()
def chunked_ranks(
    model: SequentialRecommender,
    ids: Tensor,
    targets: Tensor,
    width: int,
    *,
    mask_history: bool = True,
    depth: int = 0,
    absmax: float | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Pessimistic ranks ``[B]`` (float64, ``inf`` for masked targets) and, with ``depth > 0``,
    top-``depth`` item ids ``[B, depth]`` of the masked scores, ``width`` items at a time.

    Args:
        ids: ``[B, W]`` left-padded input ids (the history that is masked).
        targets: ``[B]`` target item ids.
        width: items per chunk (see :func:`plan_chunks`).
        absmax: :func:`table_absmax` of the model, if already known (one pass over the table).

    Memory: one ``[B, width]`` float block and one ``[B, width]`` bool comparison, reused.
    The top lists equal :func:`top_k` of the full scores, ties included (listed by item index).

    Raises:
        NumericalError: a masked score is NaN.
    """
    n_cols = model.n_items + 1
    h = model.predict_hidden(ids)  # [B, d]
    B = h.shape[0]
    read = items_read(model, ids)  # the history as far as the model reads it (as score_users)
    history = _HistoryMask(read, mask_history)
    check_nan = _nan_possible(h, table_absmax(model) if absmax is None else absmax)
    masked = targets == 0
    if mask_history:
        masked |= (read == targets[:, None]).any(dim=1)
    rows = torch.arange(B, device=h.device)
    # Reused across chunks: a fresh 128 MB tensor per chunk costs page faults (the kernel zeroes
    # every new page), which took about as long as the products.
    w = min(width, n_cols)
    block = torch.empty(B, w, dtype=h.dtype, device=h.device)
    above = torch.empty(B, w, dtype=torch.bool, device=h.device)
    guess = _guess_target_scores(h, model.item_table(), targets)  # checked against the chunks
    live = ~masked
    guess[masked] = 1.0  # any normal number: the count of a masked target is not used
    for _attempt in range(2):
        t = guess[live]
        fast = bool((torch.isfinite(t) & (t.abs() >= _TINY)).all())
        count = torch.zeros(B, dtype=torch.int64, device=h.device)
        seen = torch.full_like(guess, float("nan"))
        top_v = top_i = None
        for lo, new, hi in chunk_bounds(n_cols, width):
            model.score_items(h, lo, hi, out=block)  # [B, w]
            history.apply(block, lo, hi)
            view = block[:, new - lo :]  # [B, hi - new], the columns not counted yet
            if check_nan and bool(torch.isnan(view).any()):
                raise NumericalError("model produced NaN scores")
            here = (targets >= new) & (targets < hi)
            seen[here] = view[rows[here], targets[here] - new]
            if depth:  # ties by item index: the kept list's ids all precede this chunk's
                i, v = _ordered_topk(view, depth)
                i += new
                if top_v is not None:
                    j, v = _ordered_topk(torch.cat([top_v, v], 1), depth)
                    i = torch.cat([top_i, i], 1).gather(1, j)
                top_v, top_i = v, i
            count += _count_at_least(view, guess, above, fast)  # overwrites the block
        if torch.equal(seen[live], guess[live]):
            break
        guess = torch.where(live, seen, guess)  # exact now: the second count is final
    ranks = count.to(torch.float64)
    ranks[masked] = float("inf")
    return ranks, top_i
