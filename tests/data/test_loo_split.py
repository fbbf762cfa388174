"""Leave-one-out split and truncation on a hand-written dataset, and ``windows``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from catrec.data import leave_one_out, read_sequence_file
from catrec.data.split import windows
from catrec.errors import DataError

# u3 (2 items) and u4 (1 item) cannot be split. Item ids 1..10 all occur, so indices == ids.
TEXT = "u1 1 2 3 4 5 6 7\nu2 8 9 10\nu3 5 6\nu4 3\nu5 2 4 6 8\n"


@pytest.fixture
def data(write):
    return read_sequence_file(write("tiny.txt", TEXT))


def test_split_with_truncation(data):
    with pytest.warns(UserWarning, match=r"tiny\.txt: dropped 2 of 5 users with fewer than 3"):
        split = leave_one_out(data, max_len=3)
    assert split.max_len == 3 and split.n_dropped == 2
    assert split.n_users == 3 and split.n_items == 10
    assert split.data.user_tokens.tolist() == ["u1", "u2", "u5"]
    # Training parts: u1 (1..5), u2 (8), u5 (2, 4); train_seq keeps the last L + 1 = 4.
    assert split.train_seq.tolist() == [[2, 3, 4, 5], [0, 0, 0, 8], [0, 0, 2, 4]]
    assert split.valid_inputs.tolist() == [[3, 4, 5], [0, 0, 8], [0, 2, 4]]
    assert split.valid_targets.tolist() == [6, 9, 6]
    assert split.test_inputs.tolist() == [[4, 5, 6], [0, 8, 9], [2, 4, 6]]
    assert split.test_targets.tolist() == [7, 10, 8]
    for a in (split.train_seq, split.valid_inputs, split.test_inputs, split.test_targets):
        assert a.dtype == np.int64
    # the kept users' full sequences are untouched
    assert split.data.offsets.tolist() == [0, 7, 10, 14]
    assert split.data.items.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 2, 4, 6, 8]


def test_split_without_truncation(data):
    with pytest.warns(UserWarning):
        split = leave_one_out(data, max_len=6)
    assert split.train_seq.tolist() == [
        [0, 0, 1, 2, 3, 4, 5],
        [0, 0, 0, 0, 0, 0, 8],
        [0, 0, 0, 0, 0, 2, 4],
    ]
    assert split.valid_inputs.tolist()[0] == [0, 1, 2, 3, 4, 5]
    assert split.test_inputs.tolist()[0] == [1, 2, 3, 4, 5, 6]


def test_max_len_one(data):
    with pytest.warns(UserWarning):
        split = leave_one_out(data, max_len=1)
    assert split.train_seq.tolist() == [[4, 5], [0, 8], [2, 4]]
    assert split.valid_inputs.tolist() == [[5], [8], [4]]
    assert split.test_inputs.tolist() == [[6], [9], [6]]


def test_no_warning_when_nobody_is_dropped(write):
    data = read_sequence_file(write("ok.txt", "a 1 2 3\nb 3 2 1 4\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split = leave_one_out(data, max_len=2)
    assert split.n_dropped == 0
    assert split.train_seq.tolist() == [[0, 0, 1], [0, 3, 2]]


def test_error_when_no_user_is_left(write):
    data = read_sequence_file(write("short.txt", "a 1 2\nb 3\n"))
    with pytest.raises(DataError) as info:
        leave_one_out(data, max_len=5)
    assert str(info.value) == (
        f"{data.name}: no user has at least 3 interactions (train, validation and test need one "
        "each); 2 users dropped"
    )


def test_max_len_must_be_positive(data):
    with pytest.raises(ValueError, match="max_len must be >= 1, got 0"):
        leave_one_out(data, max_len=0)


def test_windows():
    items = np.array([1, 2, 3, 4, 5, 6])
    starts, ends = np.array([0, 2, 5, 6]), np.array([2, 5, 6, 6])  # last slice is empty
    assert windows(items, starts, ends, 2).tolist() == [[1, 2], [4, 5], [0, 6], [0, 0]]
    assert windows(items, starts, ends, 4).tolist() == [
        [0, 0, 1, 2],
        [0, 3, 4, 5],
        [0, 0, 0, 6],
        [0, 0, 0, 0],
    ]
    assert windows(items, starts, ends, 0).shape == (4, 0)


def test_windows_of_no_items():
    empty = np.zeros(0, dtype=np.int64)
    out = windows(empty, np.array([0, 0]), np.array([0, 0]), 3)
    assert out.tolist() == [[0, 0, 0], [0, 0, 0]] and out.dtype == np.int64
