"""Rank-list stability metrics: finite rank-biased overlap and Jaccard@K (CAT.md §4).

Both compare a clean top-K list with a perturbed one, per user, and are vectorised over users:
lists are ``[U, K]`` integer arrays (numpy or torch), each row without duplicates.

Finite, normalised rank-biased overlap (Webber, Moffat & Zobel, TOIS 2010, with a finite-depth
normalisation):

    RBO@K = (1 - p) / (1 - p^K) * sum_{d=1..K} p^(d-1) * |A_d ∩ B_d| / d

where ``A_d``, ``B_d`` are the top-d prefixes. Identical top-K lists score exactly 1, disjoint
ones 0. ``p`` is always explicit: the popular ``rbo`` package defaults to ``p = 1``, which is
plain average overlap, not a top-weighted RBO (the trap the CASPER code fell into). ``p = 1`` is
accepted here only as the explicit limiting case, ``(1/K) * sum_d |A_d ∩ B_d| / d``.

How this relates to the ``rbo`` package (version 0.1.3, ``RankingSimilarity``), verified in
``tests/metrics/test_stability.py``: none of its variants equals RBO@K above for ``p < 1``.
``rbo(k=K, p=p)`` is the *truncated* sum ``(1-p) * sum_d p^(d-1) A_d`` without the
``1 / (1 - p^K)`` normalisation (identical lists give ``1 - p^K``, 0.6513 for p = 0.9, K = 10),
so ``rbo(k=K, p=p) / (1 - p^K)`` equals RBO@K exactly. ``rbo(k=K, p=p, ext=True)`` and
``rbo_ext(p)`` are the extrapolated RBO (``truncated + A_K * p^K``): 1 for identical and 0 for
disjoint lists, but different values for partial overlaps. The package has no ``min`` variant.
Its default ``p = 1.0`` is average overlap, which equals RBO@K only in the limit p -> 1.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

Lists = np.ndarray | Tensor


def _as_lists(a: Lists, b: Lists, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Two ``[U, k]`` int64 arrays from ``a``, ``b`` (first ``k`` columns); validated."""
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    if isinstance(b, Tensor):
        b = b.detach().cpu().numpy()
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 1:
        a = a[None, :]
    if b.ndim == 1:
        b = b[None, :]
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"depth k must be a positive integer, got {k!r}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"lists for {a.shape[0]} and {b.shape[0]} users")
    if a.shape[1] < k or b.shape[1] < k:
        raise ValueError(f"depth {k} exceeds list lengths {a.shape[1]} and {b.shape[1]}")
    a, b = a[:, :k], b[:, :k]
    for name, x in (("a", a), ("b", b)):
        s = np.sort(x, axis=1)
        if (s[:, 1:] == s[:, :-1]).any():
            raise ValueError(f"list {name} repeats an item within a row; top-K lists are sets")
    return a, b


def overlap_at_depths(a: Lists, b: Lists, k: int) -> np.ndarray:
    """``|A_d ∩ B_d|`` for d = 1..k: ``[U, k]`` int64.

    A matching pair (a at rank i, b at rank j, 0-based) is in every prefix of depth
    ``d > max(i, j)``, so the overlaps are a cumulative sum over ``max(i, j)`` (O(U K^2), no loop).
    """
    a, b = _as_lists(a, b, k)
    match = a[:, :, None] == b[:, None, :]  # [U, k, k]
    depth = np.maximum.outer(np.arange(k), np.arange(k))  # [k, k] prefix index of each pair
    per_depth = np.zeros((a.shape[0], k), dtype=np.int64)
    for m in range(k):  # k is small (10): a loop over depths, vectorised over users
        per_depth[:, m] = match[:, depth == m].sum(axis=1)
    return np.cumsum(per_depth, axis=1)


def rbo_at_k(a: Lists, b: Lists, p: float, k: int) -> np.ndarray:
    """Finite normalised RBO@K per user, ``[U]`` float64 (see the module docstring).

    Args:
        a, b: ``[U, >=k]`` ranked item lists (or ``[>=k]`` for one user), best first.
        p: persistence, ``0 < p <= 1`` (explicit; 0.9 is CAT.md's default; 1 = average overlap).
        k: evaluation depth K.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"RBO persistence p must be in (0, 1], got {p}")
    x = overlap_at_depths(a, b, k)  # [U, k]
    d = np.arange(1, k + 1, dtype=np.float64)
    agreement = x / d  # [U, k]
    if p == 1.0:
        weights = np.full(k, 1.0 / k)
    else:
        weights = (1.0 - p) / (1.0 - p**k) * p ** (d - 1.0)  # sums to 1 over d = 1..k
    return agreement @ weights


def jaccard_at_k(a: Lists, b: Lists, k: int) -> np.ndarray:
    """Jaccard@K = ``|A ∩ B| / |A ∪ B|`` of the top-K sets per user, ``[U]`` float64."""
    a, b = _as_lists(a, b, k)
    inter = (a[:, :, None] == b[:, None, :]).sum(axis=(1, 2))
    return inter / (2.0 * k - inter)


def bootstrap_means(
    values: np.ndarray, n_resamples: int = 1000, seed: int = 0, chunk: int = 50
) -> np.ndarray:
    """Means of ``values [U, M]`` over users in ``n_resamples`` bootstrap resamples: ``[R, M]``.

    All columns share the same resampled users (a paired bootstrap), so that ratios of columns,
    such as a relative drop between clean and perturbed NDCG, get a consistent interval.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    n = values.shape[0]
    if n == 0:
        raise ValueError("no users to resample")
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples, values.shape[1]))
    for start in range(0, n_resamples, chunk):
        r = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(r, n))  # [r, U]
        counts = np.bincount((idx + n * np.arange(r)[:, None]).ravel(), minlength=r * n)
        out[start : start + r] = counts.reshape(r, n) @ values / n
    return out


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Percentile interval ``[..., 2]`` (low, high) of bootstrap ``samples [R, ...]``."""
    lo = (1.0 - level) / 2.0
    return np.stack(
        [np.quantile(samples, lo, axis=0), np.quantile(samples, 1.0 - lo, axis=0)], axis=-1
    )


__all__ = [
    "bootstrap_means",
    "jaccard_at_k",
    "overlap_at_depths",
    "percentile_interval",
    "rbo_at_k",
]
