"""The fused cross-entropy's scratch buffer stays bounded for large catalogues."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from catrec.train import softmax_ce
from catrec.train.softmax_ce import chunk_rows, clear_buffers, full_softmax_ce


def test_chunk_rows_bounded_by_the_buffer_budget():
    assert chunk_rows(256, 12_000) == 256
    assert chunk_rows(256, 1_000_000) == softmax_ce.MAX_BUFFER // 1_000_000
    assert chunk_rows(256, 10**9) == 1


def test_large_buffers_are_not_cached_and_results_unchanged(monkeypatch):
    clear_buffers()
    torch.manual_seed(0)
    h = torch.randn(50, 8, requires_grad=True)
    w = torch.randn(300, 8, requires_grad=True)
    y = torch.randint(0, 300, (50,))
    want = F.cross_entropy(h @ w.T, y)
    monkeypatch.setattr(softmax_ce, "MAX_BUFFER", 300 * 7)  # 7 rows per chunk
    monkeypatch.setattr(softmax_ce, "MAX_CACHED", 300 * 4)  # too big to keep
    loss = full_softmax_ce(h, w, y)
    assert softmax_ce._BUFFERS == {}
    torch.testing.assert_close(loss, want)
    (gh,) = torch.autograd.grad(loss, h)
    torch.testing.assert_close(gh, torch.autograd.grad(want, h)[0])
    monkeypatch.setattr(softmax_ce, "MAX_CACHED", 300 * 7)
    full_softmax_ce(h, w, y)
    full_softmax_ce(h, w[:200], y.clamp(max=199))  # another catalogue replaces the first
    assert [k[0] for k in softmax_ce._BUFFERS] == [200]
