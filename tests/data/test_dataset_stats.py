"""``dataset_stats`` on a hand-made dataset, against hand-computed values."""

from __future__ import annotations

import warnings

import pytest

from catrec.data import dataset_stats, leave_one_out, read_sequence_file

# lengths 5, 3, 2, 4; u3 is dropped by the split.
# u1: test target 2 occurs earlier (position 2) but not in the last L = 2 inputs (3, 1).
# u2: test target 6 never occurs earlier.
# u4: test target 4 occurs earlier and is among the last 2 inputs (4, 7).
TEXT = "u1 1 2 3 1 2\nu2 4 5 6\nu3 7 8\nu4 5 4 7 4\n"


@pytest.fixture
def split_and_raw(write):
    raw = read_sequence_file(write("stats.txt", TEXT))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return leave_one_out(raw, max_len=2), raw


def test_stats_of_the_raw_dataset(split_and_raw):
    split, raw = split_and_raw
    stats = dataset_stats(split, raw=raw)
    # sorted lengths 2, 3, 4, 5; linear interpolation at (n - 1) * p / 100 = 3p / 100
    assert stats == {
        "users": 4,
        "items": 8,
        "interactions": 14,
        "users_dropped_too_short": 1,
        "density": pytest.approx(14 / 32),
        "sequence_length": {
            "mean": 3.5,
            "p0": 2.0,
            "p25": pytest.approx(2.75),
            "p50": pytest.approx(3.5),
            "p75": pytest.approx(4.25),
            "p90": pytest.approx(4.7),
            "p99": pytest.approx(4.97),
            "p100": 5.0,
        },
        "test_target_in_history": pytest.approx(2 / 3),
        "test_target_in_input": pytest.approx(1 / 3),
        "max_len": 2,
    }


def test_stats_of_the_split_only(split_and_raw):
    split, _ = split_and_raw
    stats = dataset_stats(split)
    # kept users: lengths 5, 3, 4; the item vocabulary is kept whole (8 items)
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 8, 12)
    assert stats["density"] == pytest.approx(12 / 24)
    assert stats["sequence_length"]["mean"] == 4.0
    assert stats["sequence_length"]["p50"] == 4.0
    assert stats["sequence_length"]["p25"] == pytest.approx(3.5)
    assert stats["test_target_in_history"] == pytest.approx(2 / 3)


def test_longer_inputs_see_more_history(write):
    raw = read_sequence_file(write("stats.txt", TEXT))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = leave_one_out(raw, max_len=3)  # u1's inputs become (2, 3, 1): target 2 is seen
    stats = dataset_stats(split, raw=raw)
    assert stats["test_target_in_input"] == pytest.approx(2 / 3)
    assert stats["test_target_in_history"] == pytest.approx(2 / 3)


def test_beauty_slice_stats(beauty_slice):
    raw = read_sequence_file(beauty_slice)
    stats = dataset_stats(leave_one_out(raw, max_len=50), raw=raw)
    assert stats["users"] == 2000 and stats["users_dropped_too_short"] == 0
    assert stats["interactions"] == int(raw.lengths.sum())
    assert stats["sequence_length"]["p0"] >= 5.0  # every user has at least 5 (README)
    # ICLRec's preprocessing leaves no repeated item in a user's sequence
    assert stats["test_target_in_history"] == 0.0
