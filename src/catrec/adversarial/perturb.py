"""FGSM-style perturbations of CAT's two levels (CAT.md §2; Tan et al., SDM 2024, §3).

Both are built from gradients of the clean pass (no extra backward) and are constants: the caller
adds them to detached-free embeddings, and gradients flow to the parameters, not through them.
"""

from __future__ import annotations

import torch
from torch import Tensor

TINY = 1e-12


def _unit(grad: Tensor) -> Tensor:
    """``grad / max(||grad||_2, tiny)`` along the last dimension; zero rows stay zero (no NaN)."""
    return grad / grad.norm(dim=-1, keepdim=True).clamp_min(TINY)


@torch.no_grad()
def interaction_perturbation(
    grad: Tensor,
    inputs_embeds: Tensor,
    padding_mask: Tensor,
    weights: Tensor,
    eps: float,
    absolute: bool = False,
    scale: Tensor | None = None,
) -> Tensor:
    """Level 1: ``delta_{u,t} = eps * s * c(u,t) * g_{u,t} / ||g_{u,t}||``.

    Args:
        grad: ``[B, L, d]`` dL_rec / d e, the clean pass's gradient w.r.t. input embeddings.
        inputs_embeds: ``[B, L, d]`` the clean input embeddings (for the relative scale ``s``).
        padding_mask: ``[B, L]`` True at real positions; padding gets no perturbation.
        weights: ``[B, L]`` c(u, t) (ones for generic adversarial training).
        eps: relative size (fraction of the mean L2 norm of the batch's real input embeddings),
            or absolute L2 norm when ``absolute``.
        scale: ``eps * s`` computed elsewhere (data-parallel training: ``s`` over every rank's
            batch), overriding both readings of ``eps``.

    Returns:
        ``[B, L, d]`` detached perturbation.
    """
    mask = padding_mask.unsqueeze(-1).to(grad.dtype)
    if scale is not None:
        pass
    elif absolute:
        scale = eps
    else:
        norms = inputs_embeds.norm(dim=-1)[padding_mask]
        scale = eps * (norms.mean() if norms.numel() else norms.new_zeros(()))
    return scale * weights.unsqueeze(-1) * _unit(grad) * mask


@torch.no_grad()
def item_perturbation(
    grad: Tensor,
    table: Tensor,
    weights: Tensor,
    eps: float,
    absolute: bool = False,
    n_scored: int | None = None,
) -> Tensor:
    """Level 2: ``Delta_i = eps_item * s * c_item(i) * G_i / ||G_i||`` for every table row.

    Args:
        grad: ``[V, d]`` dL_rec / dE (rows without gradient get zero perturbation).
        table: ``[V, d]`` the item table (for the relative scale ``s``: mean row norm of the item
            rows ``1..n_scored - 1``, padding excluded).
        weights: ``[V]`` c_item(i).
        eps: relative size, or absolute L2 norm when ``absolute``.
        n_scored: rows that are items (``n_items + 1``); default all rows.

    Returns:
        ``[V, d]`` detached perturbation; row 0 (padding) is zero.
    """
    if absolute:
        scale = eps
    else:
        rows = table[1 : n_scored if n_scored is not None else table.shape[0]]
        scale = eps * rows.norm(dim=-1).mean()
    delta = scale * weights.unsqueeze(-1) * _unit(grad)
    delta[0] = 0.0
    return delta


#: Most elements of the ``[rows, n_items]`` gain block of :func:`replacement_items` (64 MiB).
_GAIN_BLOCK = 1 << 24


def real_items(inputs: Tensor, n_items: int) -> Tensor:
    """``[B, L]`` True where ``inputs [B, L]`` holds an item ``1..n_items`` (not padding, not a
    mask token): the positions that are perturbed or replaced."""
    return (inputs > 0) & (inputs <= n_items)


def draw_replaced(inputs: Tensor, prob: float, n_items: int) -> Tensor:
    """``[B, L]`` True at each real item of ``inputs`` with probability ``prob`` (one uniform
    draw per position from the torch generator): the positions a replacement rewrites."""
    return (torch.rand(inputs.shape, device=inputs.device) < prob) & real_items(inputs, n_items)


@torch.no_grad()
def replacement_items(
    grad: Tensor, inputs: Tensor, table: Tensor, n_items: int, prob: float
) -> Tensor:
    """Adversarial item replacement (issue 12; a discrete counterpart of level 1): inputs with a
    random share ``prob`` of their real items replaced by the item of largest first-order loss
    gain.

    At a chosen position ``(u, t)`` holding item ``i``, replacing it by ``j`` changes the input
    embedding by ``E_j - E_i``, so the first-order gain is ``g_{u,t} · (E_j - E_i)``; the pick is
    ``argmax_{j != i} g_{u,t} · E_j`` over the items ``1..n_items`` (the same first-order step as
    the robustness suite's adversarial replacement, :func:`catrec.robustness.replacement_gains`,
    taken on the training loss). Positions are drawn from the torch generator.

    Args:
        grad: ``[B, L, d]`` dL_rec / d e of the clean pass.
        inputs: ``[B, L]`` input ids (0 = padding; ids above ``n_items``, e.g. a mask token, are
            never replaced).
        table: ``[V, d]`` item table (rows ``1..n_items`` are the candidates).
        prob: share of real input items to replace, in ``(0, 1]``.

    Returns:
        ``[B, L]`` new input ids; ``inputs`` is not modified.
    """
    rows, cols = draw_replaced(inputs, prob, n_items).nonzero(as_tuple=True)
    out = inputs.clone()
    if rows.numel() == 0:
        return out
    g = grad[rows, cols]  # [N, d]
    current = inputs[rows, cols]  # [N]
    items = table[1 : n_items + 1]  # [n_items, d]
    step = max(1, _GAIN_BLOCK // max(n_items, 1))
    picks = []
    for s in range(0, len(g), step):
        gain = g[s : s + step] @ items.T  # [n, n_items]
        gain[torch.arange(gain.shape[0], device=gain.device), current[s : s + step] - 1] = float(
            "-inf"
        )
        picks.append(gain.argmax(dim=1) + 1)
    out[rows, cols] = torch.cat(picks)
    return out
