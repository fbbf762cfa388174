"""Property-based tests (hypothesis, derandomized) for the readers and the split.

Valid files must load exactly and round-trip; corrupted files must load correctly or raise
DataError, never any other exception.
"""

from __future__ import annotations

import csv
import io
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from data_testutil import assert_same, check_invariants, raw_sequences
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catrec.data import (
    SequenceData,
    leave_one_out,
    read_interaction_table,
    read_sequence_file,
    write_sequence_file,
)
from catrec.errors import DataError

SETTINGS = settings(
    derandomize=True,
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- strategies ----------------------------------------------------------------------------

int_tokens = st.one_of(
    st.integers(1, 30).map(str),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["0", "007", "-0", "9" * 60]),
)
text_tokens = st.text(
    # U+FEFF is a byte-order mark: accepted at the start of a file only
    st.characters(blacklist_categories=("Cc", "Cs", "Z"), blacklist_characters="\ufeff"),
    min_size=1,
    max_size=6,
).filter(lambda t: t.split() == [t])
tokens = st.one_of(int_tokens, text_tokens)


@st.composite
def datasets(draw, token=tokens, max_users=8) -> dict[str, list[str]]:
    """``{user: [item, ...]}``: unique users, at least one item each."""
    users = draw(st.lists(token, min_size=1, max_size=max_users, unique=True))
    return {u: draw(st.lists(token, min_size=1, max_size=6)) for u in users}


def render(seqs: dict[str, list[str]], sep=" ", end="\n", final=True) -> bytes:
    text = end.join(sep.join([u, *items]) for u, items in seqs.items())
    return (text + (end if final else "")).encode("utf-8")


def expected_vocab(seqs: dict[str, list[str]]) -> list[str]:
    vocab = {t for items in seqs.values() for t in items}
    if all(re.fullmatch("-?[0-9]+", t) for t in vocab):
        return sorted(vocab, key=lambda t: (int(t), t))
    return sorted(vocab)


def in_tmp(content: bytes, name: str, fn: Callable[[Path], object]):
    """``fn(path)`` with ``content`` in a fresh file; warnings (blank lines) are ignored."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(path)


def read_or_error(content: bytes, name: str, reader) -> SequenceData | DataError:
    """The reader's result or its DataError; any other exception fails the test."""

    def attempt(path):
        try:
            return reader(path)
        except DataError as exc:
            assert str(path) in str(exc)  # every message names the file
            return exc

    return in_tmp(content, name, attempt)


def round_trip(data: SequenceData) -> SequenceData:
    with tempfile.TemporaryDirectory() as folder:
        return read_sequence_file(write_sequence_file(data, Path(folder) / "rt.txt"))


# --- sequence files ------------------------------------------------------------------------


@SETTINGS
@given(
    seqs=datasets(),
    sep=st.sampled_from([" ", "\t", "  ", " \t "]),
    end=st.sampled_from(["\n", "\r\n", "\r"]),
    final=st.booleans(),
)
def test_valid_sequence_files_load_exactly_and_round_trip(seqs, sep, end, final):
    data = read_or_error(render(seqs, sep, end, final), "s.txt", read_sequence_file)
    assert isinstance(data, SequenceData), data
    check_invariants(data)
    assert raw_sequences(data) == seqs
    assert data.user_tokens.tolist() == list(seqs)
    assert data.item_tokens[1:].tolist() == expected_vocab(seqs)
    again = round_trip(data)
    assert_same(again, data, name=False)
    with tempfile.TemporaryDirectory() as folder:  # canonical form, byte for byte
        assert write_sequence_file(data, Path(folder) / "c.txt").read_bytes() == render(seqs)


# Corruptions: each takes the file's bytes and a random source, returns new bytes.
BENIGN = {
    "crlf": lambda b, r: b.replace(b"\n", b"\r\n"),
    "no_final_newline": lambda b, r: b.rstrip(b"\n"),
    "blank_lines": lambda b, r: b.replace(b"\n", b"\n \n\n", 1 + r.integers(3)),
    "tabs": lambda b, r: b.replace(b" ", b"\t", 1 + r.integers(3)),
    "space_runs": lambda b, r: b.replace(b" ", b"   "),
    "leading_blanks": lambda b, r: b"\n\t\n" + b,
}


def _insert(b: bytes, r, piece: bytes) -> bytes:
    at = int(r.integers(len(b) + 1))
    return b[:at] + piece + b[at:]


HOSTILE = {
    "binary": lambda b, r: _insert(b, r, bytes(r.integers(0, 256, 1 + r.integers(6)).tolist())),
    "nul": lambda b, r: _insert(b, r, b"\x00"),
    "invalid_utf8": lambda b, r: _insert(b, r, b"\xff\xc3"),
    "huge_id": lambda b, r: _insert(b, r, b" " + b"9" * 5000 + b" "),
    "negative_id": lambda b, r: _insert(b, r, b" -17 "),
    "unicode_token": lambda b, r: _insert(b, r, " 猫\u00e9\u200d ".encode()),
    "tab": lambda b, r: _insert(b, r, b"\t"),
    "newline": lambda b, r: _insert(b, r, b"\n"),
    "cr": lambda b, r: _insert(b, r, b"\r"),
    "delete": lambda b, r: (lambda a: b[:a] + b[a + 1 + int(r.integers(8)) :])(
        int(r.integers(len(b) + 1))
    ),
    "duplicate_line": lambda b, r: b + b.split(b"\n")[0] + b"\n",
    "truncate": lambda b, r: b[: int(r.integers(len(b) + 1))],
    "bom": lambda b, r: b"\xef\xbb\xbf" + b,
}


@SETTINGS
@given(
    seqs=datasets(),
    names=st.lists(st.sampled_from(sorted(BENIGN)), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_benign_variations_read_the_same(seqs, names, seed):
    r = np.random.default_rng(seed)
    content = render(seqs)
    for name in names:
        content = BENIGN[name](content, r)
    data = read_or_error(content, "s.txt", read_sequence_file)
    assert isinstance(data, SequenceData), (names, content, data)
    assert raw_sequences(data) == seqs


@SETTINGS
@given(
    seqs=datasets(),
    names=st.lists(st.sampled_from(sorted(BENIGN) + sorted(HOSTILE)), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_corrupted_sequence_files_load_correctly_or_raise_data_error(seqs, names, seed):
    r = np.random.default_rng(seed)
    content = render(seqs)
    for name in names:
        content = {**BENIGN, **HOSTILE}[name](content, r)
    data = read_or_error(content, "s.txt", read_sequence_file)
    if isinstance(data, SequenceData):
        check_invariants(data)
        assert_same(round_trip(data), data, name=False)
        # correct means: what the lines say, once decoded and split on whitespace
        text = content.decode("utf-8").removeprefix("\ufeff")
        lines = [ln.split() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
        assert raw_sequences(data) == {ln[0]: ln[1:] for ln in lines if ln}


@SETTINGS
@given(
    content=st.one_of(
        st.binary(max_size=300),
        st.text(st.sampled_from("12 -ab\t\r\n\x00\x1cé\u00a0\u2028"), max_size=200).map(str.encode),
    )
)
def test_arbitrary_bytes_never_crash_the_sequence_reader(content):
    data = read_or_error(content, "s.txt", read_sequence_file)
    if isinstance(data, SequenceData):
        check_invariants(data)


# --- interaction tables (CSV) --------------------------------------------------------------

cell_tokens = st.one_of(
    st.integers(0, 50).map(str),
    st.text(st.sampled_from('ab,"é 猫;'), min_size=1, max_size=5).map(str.strip).filter(bool),
)


@st.composite
def interaction_rows(draw) -> list[tuple[str, str, int]]:
    users = draw(st.lists(cell_tokens, min_size=1, max_size=5, unique=True))
    n = draw(st.integers(1, 25))
    return [
        (draw(st.sampled_from(users)), draw(cell_tokens), draw(st.integers(-3, 3)))  # many ties
        for _ in range(n)
    ]


def render_csv(rows, lineterminator="\n") -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=lineterminator)
    w.writerow(["user_id", "item_id", "timestamp"])
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def expected_table(rows) -> dict[str, list[str]]:
    """Oracle: users by first appearance, items by time with ties in file order."""
    out: dict[str, list[tuple[int, str]]] = {}
    for user, item, ts in rows:
        out.setdefault(user, []).append((ts, item))
    return {u: [item for _, item in sorted(v, key=lambda p: p[0])] for u, v in out.items()}


@SETTINGS
@given(rows=interaction_rows(), end=st.sampled_from(["\n", "\r\n"]))
def test_valid_csv_tables_load_in_time_order_with_stable_ties(rows, end):
    data = read_or_error(render_csv(rows, end), "t.csv", read_interaction_table)
    assert isinstance(data, SequenceData), data
    check_invariants(data)
    assert raw_sequences(data) == expected_table(rows)
    assert data.user_tokens.tolist() == list(expected_table(rows))


@SETTINGS
@given(
    rows=interaction_rows(),
    names=st.lists(st.sampled_from(sorted(BENIGN) + sorted(HOSTILE)), min_size=1, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_corrupted_csv_tables_load_or_raise_data_error(rows, names, seed):
    r = np.random.default_rng(seed)
    content = render_csv(rows)
    for name in names:
        content = {**BENIGN, **HOSTILE}[name](content, r)
    data = read_or_error(content, "t.csv", read_interaction_table)
    if isinstance(data, SequenceData):
        check_invariants(data)


# --- split ---------------------------------------------------------------------------------


@SETTINGS
@given(
    seqs=datasets(token=st.integers(1, 15).map(str), max_users=10),
    max_len=st.integers(1, 6),
)
def test_split_invariants(seqs, max_len):
    data = read_or_error(render(seqs), "s.txt", read_sequence_file)
    kept = {u: items for u, items in seqs.items() if len(items) >= 3}
    if not kept:
        with pytest.raises(DataError, match="no user has at least 3 interactions"):
            leave_one_out(data, max_len)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = leave_one_out(data, max_len)
    L = max_len
    assert split.n_dropped == len(seqs) - len(kept)
    assert split.data.user_tokens.tolist() == list(kept)
    assert split.train_seq.shape == (len(kept), L + 1)
    assert split.valid_inputs.shape == split.test_inputs.shape == (len(kept), L)
    tok = data.item_tokens

    def padded(items: list[str], width: int) -> list[str]:
        items = items[-width:]
        return ["<pad>"] * (width - len(items)) + items

    for row, items in enumerate(kept.values()):
        train = items[:-2]
        assert tok[split.test_targets[row]] == items[-1]
        assert tok[split.valid_targets[row]] == items[-2]
        assert tok[split.train_seq[row]].tolist() == padded(train, L + 1)
        assert tok[split.valid_inputs[row]].tolist() == padded(train, L)
        assert tok[split.test_inputs[row]].tolist() == padded(items[:-1], L)
        # padding only on the left
        nonpad = split.train_seq[row] > 0
        assert not (nonpad[:-1] & ~nonpad[1:]).any()
