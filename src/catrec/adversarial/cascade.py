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
    """

    position: np.ndarray
    item: np.ndarray


def cascade_weights(
    C: np.ndarray,
    is_input: np.ndarray,
    inputs: np.ndarray,
    n_items: int,
    scaling: Scaling = "proportional",
    c_max: float = 5.0,
) -> CascadeWeights:
    """Normalise raw cascade effects into perturbation weights.

    ``proportional``: c = C / mean(C); ``inverse``: c = C^-1 / mean(C^-1); ``none``: c = 1. Means
    are over all input positions of all training sequences; the result is clipped to
    ``[0, c_max]``. Mean normalisation keeps the average perturbation budget equal to generic
    adversarial training with the same eps.

    Args:
        C, is_input: from :func:`cascade_effect`, ``[U, L]``.
        inputs: ``[U, L]`` item ids at the same positions (to average c per item).
        n_items: number of items.
    """
    w = np.zeros_like(C, dtype=np.float64)
    if scaling == "none":
        w[is_input] = 1.0
    else:
        vals = C[is_input]
        if scaling == "inverse":
            vals = 1.0 / np.maximum(vals, np.finfo(np.float64).tiny)
        mean = vals.mean() if vals.size else 0.0
        # All-zero effects (e.g. one-item bidirectional windows): fall back to uniform weights.
        w[is_input] = np.clip(vals / mean, 0.0, c_max) if mean > 0 else 1.0
    ids = np.where(is_input, inputs, 0).ravel()
    sums = np.bincount(ids, weights=w.ravel(), minlength=n_items + 1)
    counts = np.bincount(ids, weights=is_input.ravel().astype(np.float64), minlength=n_items + 1)
    item = np.where(counts > 0, sums / np.maximum(counts, 1.0), 1.0)
    item[0] = 1.0
    return CascadeWeights(position=w.astype(np.float32), item=item.astype(np.float32))
