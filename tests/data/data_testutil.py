"""Assertions shared by the data tests (imported by name: tests/data is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from catrec.data import SequenceData


def assert_same(got: SequenceData, want: SequenceData, *, name: bool = True) -> None:
    """Field-by-field equality (the dataclass ``==`` cannot compare numpy arrays)."""
    if name:
        assert got.name == want.name or Path(got.name).name != Path(want.name).name
    assert got.user_tokens.tolist() == want.user_tokens.tolist()
    assert got.item_tokens.tolist() == want.item_tokens.tolist()
    assert np.array_equal(got.offsets, want.offsets)
    assert np.array_equal(got.items, want.items)
    assert got.offsets.dtype == want.offsets.dtype == np.int64
    assert got.items.dtype == want.items.dtype == np.int64


def raw_sequences(data: SequenceData) -> dict[str, list[str]]:
    """``{user token: [item token, ...]}`` in chronological order."""
    return {
        str(data.user_tokens[u]): [str(t) for t in data.item_tokens[data.sequence(u)]]
        for u in range(data.n_users)
    }


def check_invariants(data: SequenceData) -> None:
    """What every SequenceData a reader returns must satisfy."""
    assert data.n_users >= 1
    assert data.offsets[0] == 0 and data.offsets[-1] == len(data.items)
    assert (np.diff(data.offsets) >= 1).all()  # every user has items
    assert len(set(data.user_tokens.tolist())) == data.n_users
    assert data.item_tokens[0] == "<pad>"
    assert len(set(data.item_tokens[1:].tolist())) == data.n_items
    assert data.items.min() >= 1 and data.items.max() <= data.n_items
    assert len(np.unique(data.items)) == data.n_items  # no unused vocabulary
    for token in [*data.user_tokens, *data.item_tokens[1:]]:
        assert isinstance(token, str) and token and token == token.strip()
