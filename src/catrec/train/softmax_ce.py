"""Full-softmax cross-entropy over all items, fused and chunked (the hot path of training).

``F.cross_entropy`` on ``[N, n_items]`` logits materialises the logits, keeps them for backward and
recomputes the softmax there; with ~1,500 positions x 12,000 items per batch that is several
passes over 70 MB tensors and an ``mmap``/page-fault storm per step. Here the loss and both
gradients are computed in the forward pass, a chunk of rows at a time, in buffers reused across
chunks: the same three matrix products, fewer memory passes, and nothing ``[N, n_items]`` kept for
backward. The result equals ``F.cross_entropy(h @ items.T, y)`` (tested).

Memory: the scratch buffer holds at most :data:`MAX_BUFFER` elements (fewer rows per chunk for a
large catalogue) and is kept between calls only up to :data:`MAX_CACHED` elements.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_ROWS = 256
#: Most elements of the ``[rows, n_items]`` scratch buffer (2**24 float32 = 64 MiB): with a
#: million items a chunk is 16 rows, not 256 (1 GB).
MAX_BUFFER = 1 << 24
#: Largest buffer kept between calls (32 MiB of float32); a larger one is freed after its call.
MAX_CACHED = 1 << 23

# At most one cached buffer (the last catalogue trained on): a process that trains on several
# datasets in turn does not keep one buffer per catalogue.
_BUFFERS: dict[tuple, Tensor] = {}


def chunk_rows(chunk: int, n_cols: int) -> int:
    """Rows per chunk: ``chunk``, fewer when ``chunk x n_cols`` would exceed :data:`MAX_BUFFER`."""
    return max(1, min(chunk, MAX_BUFFER // max(n_cols, 1)))


def clear_buffers() -> None:
    """Free the cached scratch buffer (the next call allocates a new one)."""
    _BUFFERS.clear()


def _buffer(rows: int, cols: int, like: Tensor) -> Tensor:
    """A reused ``[rows, cols]`` scratch buffer: a fresh 12 MB tensor per chunk costs page faults
    (the kernel zeroes every new page) that made the logits product 2-4x slower than the others.

    Buffers over :data:`MAX_CACHED` elements are not kept after the call (the caller's reference
    is the only one); at that size one allocation per call is cheap next to the products.
    """
    key = (cols, like.dtype, like.device)
    buf = _BUFFERS.get(key)
    if buf is not None and buf.shape[0] >= rows:
        return buf
    buf = torch.empty(rows, cols, dtype=like.dtype, device=like.device)
    _BUFFERS.clear()
    if rows * cols <= MAX_CACHED:
        _BUFFERS[key] = buf
    return buf


class _FusedSoftmaxCE(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, hidden: Tensor, items: Tensor, targets: Tensor, chunk: int, dtype: torch.dtype | None
    ) -> Tensor:
        # Autocast is handled here, explicitly: with ``dtype`` (bf16) the three products run in it,
        # while the softmax normalisation, the loss and the gradient of the table accumulate in
        # fp32 (a bf16 sum over 12,000 items or 1,500 positions would lose most of its digits).
        with torch.autocast(hidden.device.type, enabled=False):
            return _forward(ctx, hidden, items, targets, chunk, dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_out / ctx.n
        return (
            grad_h * scale if grad_h is not None else None,
            (grad_w * scale).to(ctx.items_dtype) if grad_w is not None else None,
            None,
            None,
            None,
        )


def _forward(
    ctx, hidden: Tensor, items: Tensor, targets: Tensor, chunk: int, dtype: torch.dtype | None
) -> Tensor:
    n = hidden.shape[0]
    need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    low = dtype is not None and dtype != torch.float32
    hid, its = (hidden.to(dtype), items.to(dtype)) if low else (hidden, items)
    acc = torch.promote_types(hidden.dtype, torch.float32) if low else hidden.dtype
    grad_h = torch.empty_like(hidden) if need_h else None
    grad_w = torch.zeros_like(items, dtype=acc) if need_w else None
    total = hidden.new_zeros((), dtype=torch.float64)
    # Target logits computed directly (fp32, from the values the products see), so the loss never
    # takes log of an underflowed exp.
    target_logit = (hid.to(acc) * its[targets].to(acc)).sum(-1)  # [N]
    chunk = chunk_rows(chunk, items.shape[0])
    buf = _buffer(min(chunk, n), items.shape[0], hid.new_empty((), dtype=acc))  # [chunk, V]
    low_buf = _buffer(min(chunk, n), items.shape[0], hid) if low else None
    for s in range(0, n, chunk):
        h = hid[s : s + chunk]  # [c, d]
        y = targets[s : s + chunk]
        if low:  # logits in bf16, then fp32 for the normalisation
            p = buf[: len(h)].copy_(torch.mm(h, its.T, out=low_buf[: len(h)]))
        else:
            p = torch.mm(h, its.T, out=buf[: len(h)])  # [c, V] logits, then probabilities
        m = p.amax(dim=1, keepdim=True)
        p.sub_(m).exp_()
        z = p.sum(dim=1, keepdim=True)
        total += (z.log().squeeze(1) + m.squeeze(1) - target_logit[s : s + chunk]).sum().double()
        if need_h or need_w:
            p.div_(z)
            p[torch.arange(len(y), device=p.device), y] -= 1.0  # softmax - onehot
            if low:
                p = low_buf[: len(h)].copy_(p)
            if need_h and low:
                grad_h[s : s + chunk] = torch.mm(p, its)
            elif need_h:
                torch.mm(p, its, out=grad_h[s : s + chunk])
            if need_w:
                if low:
                    grad_w.add_(torch.mm(p.T, h))
                else:
                    grad_w.addmm_(p.T, h)
    ctx.save_for_backward(grad_h, grad_w)
    ctx.n = n
    ctx.items_dtype = items.dtype
    return (total / n).to(acc)


def full_softmax_ce(
    hidden: Tensor, items: Tensor, targets: Tensor, chunk: int = CHUNK_ROWS
) -> Tensor:
    """Mean cross-entropy of ``targets`` under a softmax over all items.

    Args:
        hidden: ``[N, d]`` hidden states (only positions that have a target).
        items: ``[V, d]`` candidate embeddings (the item rows of the table, padding excluded).
        targets: ``[N]`` int64 indices into ``items`` (0-based).

    Returns:
        scalar fp32 loss (nats, averaged over the N positions). Differentiable w.r.t. ``hidden``
        and ``items``. Raises ``ValueError`` when N = 0.

    Under ``torch.autocast`` (bf16) the three ``[N, V]`` products run in the autocast dtype; the
    softmax normalisation, the loss and the table's gradient stay fp32.
    """
    if hidden.shape[0] == 0:
        raise ValueError("no positions with a target in this batch")
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    return _FusedSoftmaxCE.apply(hidden, items, targets, chunk, dtype)
