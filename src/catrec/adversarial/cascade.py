"""Cascade effect of each training interaction (CAT.md §1; Tan et al., SDM 2024, §3).

For a causal encoder the input at position t of sequence u feeds the n - t later predictions
(first order), and each of those predictions' targets v_k is read at its f(v_k) positions in all
training sequences (second order):

    C(u, t) = (n - t) + gamma * sum_{k=t+1..n} f(v_k)

For a bidirectional encoder every position reaches every other:

    C(u, t) = (n - 1) + gamma * sum_{k != t} f(v_k)

All arrays here are the padded training windows of :class:`catrec.data.SplitData`, computed in one
vectorised pass (suffix sums), O(number of interactions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Cascade = Literal["two_hop", "first_order", "none"]
Scaling = Literal["proportional", "inverse", "none"]


def item_frequency(seq: np.ndarray, n_items: int) -> np.ndarray:
    """f(v): positions where item v occurs in the windows ``seq [U, W]``.

    Returns ``[n_items + 1]`` float64 with f(0) = 0 (padding is not an item).
    """
    f = np.bincount(seq.ravel(), minlength=n_items + 1).astype(np.float64)
    f[0] = 0.0
    return f


def cascade_effect(
    seq: np.ndarray,
    n_items: int,
    method: Cascade = "two_hop",
    gamma: float = 1.0,
    causal: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw cascade effect C(u, t) of every input position of the training windows.

    Args:
        seq: ``[U, W]`` int64 training windows, left-padded with 0 (``SplitData.train_seq`` for
            causal models: inputs are columns ``:-1``; for bidirectional models all columns).
        n_items: number of items (ids ``1..n_items``).
        method: ``two_hop`` (gamma as given), ``first_order`` (gamma = 0) or ``none`` (C = 1).
        gamma: weight of the second-order term.
        causal: causal encoder (first-order term n - t) or bidirectional (n - 1).

    Returns:
        ``(C, is_input)``: both aligned with the model's input columns, ``[U, W - 1]`` for causal
        models (the last position is a target only) and ``[U, W]`` for bidirectional ones. ``C`` is
        float64, 0 where ``is_input`` (bool) is False.
    """
    seq = np.asarray(seq, dtype=np.int64)
    real = seq > 0  # [U, W]
    if method == "none":
        C = real.astype(np.float64)
    else:
        g = 0.0 if method == "first_order" else float(gamma)
        F = item_frequency(seq, n_items)[seq]  # [U, W], f(v) at each position (0 on padding)
        if causal:
            # Suffix sums excluding the position itself: sum_{k > t}.
            after_items = np.cumsum(real[:, ::-1], axis=1)[:, ::-1] - real
            after_f = np.cumsum(F[:, ::-1], axis=1)[:, ::-1] - F
            C = after_items + g * after_f
        else:
            n = real.sum(axis=1, keepdims=True)
            C = (n - 1) + g * (F.sum(axis=1, keepdims=True) - F)
        C = np.where(real, C, 0.0)
    if causal:
        return C[:, :-1], real[:, :-1]
    return C, real


@dataclass(frozen=True)
class CascadeWeights:
    """Normalised cascade weights used to scale perturbations (CAT.md §1–2).

    Attributes:
        position: ``[U, L]`` float32 c(u, t) (or its inverse form) at each input position, 0 on
            padding.
        item: ``[n_items + 1]`` float32 c_item(i): mean of ``position`` over item i's training
            input interactions, 1 for items that never occur as an input (and for padding).
        realised_mean: mean of ``position`` over all input positions after clipping and
            renormalisation (1 within 1e-6 unless the clip makes that impossible).
        clipped_share: share of input positions clipped at ``c_max``.
    """

    position: np.ndarray
    item: np.ndarray
    realised_mean: float = 1.0
    clipped_share: float = 0.0


#: Tolerance on the realised mean of the clipped weights (CAT.md §1: "until the mean is 1").
MEAN_TOL = 1e-6


def normalise_clipped(vals: np.ndarray, c_max: float, n_total: int) -> tuple[np.ndarray, float]:
    """Scale ``vals >= 0`` by ``a`` so that ``mean(min(a * vals, c_max)) = 1`` (CAT.md §1).

    Mean normalisation gives ``cat`` the average level-1 budget of generic adversarial training;
    clipping at ``c_max`` afterwards lowers the mean (about 0.93 on Beauty), so the scale is found
    by fixed-point steps ``a <- a / mean(min(a * vals, c_max))`` until the clipped mean is 1 within
    :data:`MEAN_TOL`. ``m(a) = mean(min(a v, c_max))`` is concave with ``m(0) = 0``, so the steps
    increase ``a`` monotonically to the root when it exists.

    Args:
        vals: ``[N]`` float64 unnormalised weights of the counted positions.
        c_max: clip (> 0).
        n_total: number of positions the mean is taken over (``>= N``; positions beyond ``vals``
            have weight 0, e.g. the C = 0 positions left out of an inverse mean).

    Returns:
        ``(weights [N], realised mean)``. When a mean of 1 is out of reach (``c_max`` times the
        share of positive values is below 1) every positive value is set to ``c_max`` and the
        realised mean says how far it falls short.

    Raises:
        ValueError: a value or the mean is not finite.
    """
    if not np.all(np.isfinite(vals)):
        raise ValueError("cascade weights: non-finite values before normalisation")
    total = vals.sum()
    if n_total == 0 or total <= 0:
        return np.zeros_like(vals), 0.0
    reachable = c_max * np.count_nonzero(vals) / n_total
    if reachable < 1.0 + MEAN_TOL:
        w = np.where(vals > 0, c_max, 0.0)
        return w, float(w.sum() / n_total)
    a = n_total / total
    for _ in range(10_000):
        m = np.minimum(a * vals, c_max).sum() / n_total
        if not np.isfinite(m):
            raise ValueError(f"cascade weights: the mean is not finite ({m})")
        if abs(m - 1.0) <= MEAN_TOL * 0.1:
            break
        a /= m
    w = np.minimum(a * vals, c_max)
    return w, float(w.sum() / n_total)


def cascade_weights(
    C: np.ndarray,
    is_input: np.ndarray,
    inputs: np.ndarray,
    n_items: int,
    scaling: Scaling = "proportional",
    c_max: float = 5.0,
) -> CascadeWeights:
    """Normalise raw cascade effects into perturbation weights.

    ``proportional``: c ∝ C; ``inverse``: c ∝ 1 / C over the positions with C > 0 (a position with
    C = 0, such as a one-item BERT4Rec window, has no cascade to invert: weight 0, left out of the
    mean); ``none``: c = 1. The scale is chosen so that the mean over all input positions of all
    training sequences is 1 *after* clipping to ``[0, c_max]`` (:func:`normalise_clipped`), which
    keeps the average perturbation budget equal to generic adversarial training with the same eps.

    Args:
        C, is_input: from :func:`cascade_effect`, ``[U, L]``.
        inputs: ``[U, L]`` item ids at the same positions (to average c per item).
        n_items: number of items.

    Raises:
        ValueError: a weight or the mean is not finite.
    """
    w = np.zeros_like(C, dtype=np.float64)
    realised, clipped = 1.0, 0.0
    if scaling == "none":
        w[is_input] = 1.0
    else:
        vals = C[is_input].astype(np.float64)
        n_total = vals.size
        if scaling == "inverse":
            positive = vals > 0
            vals = np.where(positive, 1.0 / np.where(positive, vals, 1.0), 0.0)
            n_total = int(positive.sum())
        if vals.size and vals.sum() > 0:
            norm, realised = normalise_clipped(vals, c_max, n_total)
            clipped = float(np.count_nonzero(norm >= c_max) / max(vals.size, 1))
            w[is_input] = norm
        else:
            # All-zero effects (e.g. only one-item bidirectional windows): uniform weights.
            w[is_input] = 1.0
    ids = np.where(is_input, inputs, 0).ravel()
    sums = np.bincount(ids, weights=w.ravel(), minlength=n_items + 1)
    counts = np.bincount(ids, weights=is_input.ravel().astype(np.float64), minlength=n_items + 1)
    item = np.where(counts > 0, sums / np.maximum(counts, 1.0), 1.0)
    item[0] = 1.0
    return CascadeWeights(
        position=w.astype(np.float32),
        item=item.astype(np.float32),
        realised_mean=realised,
        clipped_share=clipped,
    )
