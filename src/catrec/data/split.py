"""Leave-one-out split and padded sequence windows (CAT.md, "Notation").

Per user with sequence ``(v_1, ..., v_m)``: the test target is ``v_m``, the validation target is
``v_{m-1}``, and the training part is ``(v_1, ..., v_{m-2})``. Inputs are left-padded with 0 and
truncated to the most recent items.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from catrec.data.readers import SequenceData
from catrec.errors import DataError

MIN_LENGTH = 3  # one training item, one validation target, one test target


def windows(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """The last ``width`` items of each slice ``items[starts[u]:ends[u]]``, left-padded with 0.

    Vectorised over users (no Python loop).

    Args:
        items: ``[N]`` int64 item indices.
        starts, ends: ``[U]`` int64 slice bounds.
        width: number of columns.

    Returns:
        ``[U, width]`` int64; the most recent item of each slice is in the last column.
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    idx = ends[:, None] - width + np.arange(width)[None, :]  # [U, width]
    valid = idx >= starts[:, None]
    if len(items) == 0:  # every slice is empty: nothing to gather
        return np.zeros(idx.shape, dtype=np.int64)
    out = np.where(valid, items[np.clip(idx, 0, len(items) - 1)], 0)
    return out.astype(np.int64, copy=False)


@dataclass(frozen=True)
class SplitData:
    """Leave-one-out split of a :class:`SequenceData`, as padded matrices.

    Attributes:
        data: the dataset, restricted to users with at least 3 interactions.
        max_len: L, the input length.
        train_seq: ``[U, L + 1]`` the most recent L + 1 items of each training part (CAT.md
            ``s_u``), left-padded. Causal models read inputs ``[:, :-1]`` and targets ``[:, 1:]``;
            bidirectional models use the last L columns.
        valid_inputs: ``[U, L]`` items before the validation target; ``valid_targets``: ``[U]``.
        test_inputs: ``[U, L]`` items before the test target; ``test_targets``: ``[U]``.
        n_dropped: users dropped for having fewer than 3 interactions.
    """

    data: SequenceData
    max_len: int
    train_seq: np.ndarray
    valid_inputs: np.ndarray
    valid_targets: np.ndarray
    test_inputs: np.ndarray
    test_targets: np.ndarray
    n_dropped: int

    @property
    def n_items(self) -> int:
        """The number of items, padding excluded (the whole vocabulary, dropped users' too)."""
        return self.data.n_items

    @property
    def n_users(self) -> int:
        """U, the number of users kept."""
        return self.data.n_users


def _keep_users(data: SequenceData, keep: np.ndarray) -> SequenceData:
    lengths = data.lengths[keep]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    mask = np.repeat(keep, data.lengths)
    return SequenceData(
        name=data.name,
        user_tokens=data.user_tokens[keep],
        item_tokens=data.item_tokens,
        offsets=offsets,
        items=data.items[mask],
    )


def leave_one_out(data: SequenceData, max_len: int = 50) -> SplitData:
    """Split every user's sequence into training part, validation target and test target.

    Users with fewer than 3 interactions cannot be split; they are dropped with a warning that
    gives their count. The item vocabulary is kept whole (ids do not change).

    Args:
        data: the dataset, ``[U_all]`` users.
        max_len: L, the input length; longer histories keep their most recent items.

    Returns:
        :class:`SplitData` with ``train_seq [U, L + 1]``, ``valid_inputs``/``test_inputs``
        ``[U, L]`` (left-padded with 0) and ``valid_targets``/``test_targets`` ``[U]``, for the
        ``U`` users with at least 3 interactions, in their original order.

    Raises:
        ValueError: ``max_len < 1``.
        DataError: no user has 3 or more interactions.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    lengths = data.lengths
    keep = lengths >= MIN_LENGTH
    n_dropped = int((~keep).sum())
    if not keep.any():
        raise DataError(
            f"{data.name}: no user has at least {MIN_LENGTH} interactions "
            f"(train, validation and test need one each); {n_dropped} users dropped"
        )
    if n_dropped:
        warnings.warn(
            f"{data.name}: dropped {n_dropped} of {len(lengths)} users with fewer than "
            f"{MIN_LENGTH} interactions (cannot be split into train / validation / test)",
            stacklevel=2,
        )
        data = _keep_users(data, keep)
    starts, ends = data.offsets[:-1], data.offsets[1:]
    items = data.items
    return SplitData(
        data=data,
        max_len=max_len,
        train_seq=windows(items, starts, ends - 2, max_len + 1),
        valid_inputs=windows(items, starts, ends - 2, max_len),
        valid_targets=items[ends - 2].copy(),
        test_inputs=windows(items, starts, ends - 1, max_len),
        test_targets=items[ends - 1].copy(),
        n_dropped=n_dropped,
    )


def training_popularity(split: SplitData) -> np.ndarray:
    """Occurrences of each item in all users' training parts, ``[n_items + 1]`` (0 for padding).

    The training part of a user is the whole sequence but its last two items (validation and test
    targets), not only the ``max_len + 1`` most recent items kept in ``split.train_seq``.
    """
    data = split.data
    lengths = data.lengths
    pos = np.arange(data.n_interactions) - np.repeat(data.offsets[:-1], lengths)
    keep = pos < np.repeat(lengths - 2, lengths)
    counts = np.bincount(data.items[keep], minlength=split.n_items + 1).astype(np.int64)
    counts[0] = 0
    return counts
