"""Sequence files (``user item item ...``): remapping, round trip, and every bad input."""

from __future__ import annotations

import gzip
import re
import warnings

import numpy as np
import pytest
from data_testutil import assert_same, raw_sequences

from catrec.data import read_dataset, read_sequence_file, write_sequence_file
from catrec.data.readers import SequenceData
from catrec.errors import DataError

BEAUTY_TEXT = "1 1 2 3\n2 4 5 6 7\n"


def test_remaps_items_in_numeric_order(write):
    data = read_sequence_file(write("s.txt", "a 10 2 33\nb 2 5\n"))
    assert data.user_tokens.tolist() == ["a", "b"]
    assert data.item_tokens.tolist() == ["<pad>", "2", "5", "10", "33"]
    assert data.offsets.tolist() == [0, 3, 5]
    assert data.items.tolist() == [3, 1, 4, 1, 2]
    assert data.items.dtype == np.int64 and data.offsets.dtype == np.int64
    assert (data.n_users, data.n_items, data.n_interactions) == (2, 4, 5)
    assert data.lengths.tolist() == [3, 2]
    assert data.sequence(1).tolist() == [1, 2]


def test_negative_and_huge_integer_ids_keep_numeric_order(write):
    huge = "9" * 40
    data = read_sequence_file(write("s.txt", f"u 3 -1 {huge} -20 0\n"))
    assert data.item_tokens.tolist() == ["<pad>", "-20", "-1", "0", "3", huge]
    assert data.items.tolist() == [4, 2, 5, 1, 3]


def test_non_numeric_ids_are_lexicographic_tokens(write):
    # One non-integer token makes the whole vocabulary lexicographic; "01" and "1" are two items.
    data = read_sequence_file(write("s.txt", "x b a10 a9 1 01 10 2\n"))
    assert data.item_tokens.tolist() == ["<pad>", "01", "1", "10", "2", "a10", "a9", "b"]
    assert data.item_tokens[data.items].tolist() == ["b", "a10", "a9", "1", "01", "10", "2"]


def test_unicode_tokens(write):
    data = read_sequence_file(write("s.txt", "ユーザー 猫 café 猫\n"))
    assert data.user_tokens.tolist() == ["ユーザー"]
    assert data.item_tokens[data.items].tolist() == ["猫", "café", "猫"]


def test_beauty_slice_counts(beauty_slice):
    # Counted independently of catrec (tests/fixtures/README.md), with
    # awk '{u++; n+=NF-1; for(i=2;i<=NF;i++) s[$i]=1} END{...}' beauty-first2000.txt
    data = read_sequence_file(beauty_slice)
    assert (data.n_users, data.n_interactions, data.n_items) == (2000, 24226, 8017)
    assert data.lengths.max() == 204 and data.lengths.min() == 5
    assert data.user_tokens.tolist() == [str(u) for u in range(1, 2001)]


def test_beauty_slice_tokens_and_round_trip(beauty_slice, tmp_path):
    data = read_sequence_file(beauty_slice)
    assert data.n_users == 2000
    tokens = data.item_tokens[1:].astype(np.int64)
    assert (np.diff(tokens) > 0).all()  # numeric order, no gaps in the mapping
    lines = beauty_slice.read_text().splitlines()
    for u in (0, 1, 999, 1999):
        user, *items = lines[u].split(" ")
        assert data.user_tokens[u] == user
        assert data.item_tokens[data.sequence(u)].tolist() == items
    out = write_sequence_file(data, tmp_path / "again.txt")
    assert out.read_bytes() == beauty_slice.read_bytes()  # same bytes as the reference format
    assert_same(read_sequence_file(out), data)


def test_round_trip_of_mixed_tokens(write, tmp_path):
    data = read_sequence_file(write("s.txt", "u2 b a 10 b\nu1 é 3\n"))
    out = write_sequence_file(data, tmp_path / "out.txt")
    assert out.read_text() == "u2 b a 10 b\nu1 é 3\n"
    assert_same(read_sequence_file(out), data)
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*.tmp"))


def test_write_rejects_tokens_a_sequence_file_cannot_hold(tmp_path):
    def make(users, item_tokens, seqs):
        offsets = np.cumsum([0, *map(len, seqs)])
        return SequenceData(
            "x",
            np.array(users, dtype=object),
            np.array(["<pad>", *item_tokens], dtype=object),
            offsets.astype(np.int64),
            np.array([i for s in seqs for i in s], dtype=np.int64),
        )

    with pytest.raises(DataError, match=r"item 'a b'.*without whitespace"):
        write_sequence_file(make(["u"], ["a b"], [[1]]), tmp_path / "x.txt")
    with pytest.raises(DataError, match=r"user ''"):
        write_sequence_file(make([""], ["a"], [[1]]), tmp_path / "x.txt")
    with pytest.raises(DataError, match=r"user 'v': no items"):
        write_sequence_file(make(["u", "v"], ["a"], [[1], []]), tmp_path / "x.txt")
    with pytest.raises(DataError, match=r"a user appears twice"):
        write_sequence_file(make(["u", "u"], ["a"], [[1], [1]]), tmp_path / "x.txt")
    assert not list(tmp_path.iterdir())  # nothing half-written


# --- accepted variations --------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"1 1 2 3\r\n2 4 5 6 7\r\n",  # CRLF
        b"1 1 2 3\n2 4 5 6 7",  # no final newline
        b"1 1 2 3\r\n2 4 5 6 7",  # both
        b"1 1 2 3\r2 4 5 6 7\r",  # old Mac CR line ends
        b"1\t1  2\t 3 \n 2 4 5 6 7\t\n",  # tabs, runs of spaces, leading and trailing blanks
        b"\xef\xbb\xbf1 1 2 3\n2 4 5 6 7\n",  # UTF-8 byte-order mark
    ],
    ids=["crlf", "no-final-newline", "crlf-no-final", "cr", "tabs-spaces", "bom"],
)
def test_line_end_and_spacing_variants_read_the_same(write, content):
    reference = read_sequence_file(write("ref.txt", BEAUTY_TEXT))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these may warn
        data = read_sequence_file(write("v.txt", content))
    assert_same(data, reference, name=False)


def test_blank_lines_are_skipped_with_a_counted_warning(write):
    path = write("s.txt", "1 1 2\n\n2 3 4\n   \n\t\r\n3 5 6\n\n")
    with pytest.warns(UserWarning, match=r"s\.txt: skipped 4 blank line\(s\) \(first at line 2\)"):
        data = read_sequence_file(path)
    assert data.user_tokens.tolist() == ["1", "2", "3"]
    assert data.items.tolist() == [1, 2, 3, 4, 5, 6]


def test_a_single_final_newline_is_not_a_blank_line(write):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_sequence_file(write("s.txt", "1 1 2\n")).n_users == 1


def test_error_line_numbers_count_blank_lines(write):
    path = write("s.txt", "u1 1\n\nu2 2\nu1 3\n")
    with pytest.raises(DataError, match=r"line 4: user 'u1' already listed on line 1"):
        read_sequence_file(path)


# --- rejected input: file, line and expectation in every message ---------------------------


def _error(path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError) as info:
            read_sequence_file(path)
    return str(info.value)


def test_user_without_items(write):
    path = write("s.txt", "u1 1 2\nu2\nu3 4\n")
    msg = _error(path)
    assert msg.startswith(f"{path}, line 2: user 'u2' has no items")
    assert "expected 'user_id item_id [item_id ...]'" in msg


def test_user_without_items_on_last_line_without_newline(write):
    path = write("s.txt", "u1 1 2\r\nu2 ")
    assert _error(path).startswith(f"{path}, line 2: user 'u2' has no items")


@pytest.mark.parametrize("content", [b"", b"\n", b"  \r\n\n\t", b"\xef\xbb\xbf"])
def test_empty_file(write, content):
    path = write("s.txt", content)
    msg = _error(path)
    assert msg.startswith(f"{path}: file is empty")
    assert "expected one line per user" in msg


def test_only_unicode_blank_characters(write):
    path = write("s.txt", "\u00a0\n\u3000\n")
    assert _error(path).startswith(f"{path}, line 1: whitespace character U+00A0")


@pytest.mark.parametrize("char", ["\u00a0", "\u2028", "\u3000", "\u0085", "\u2009"])
def test_unicode_whitespace_is_an_error_not_a_separator(write, char):
    # str.split() used to split "b<NBSP>c" into two items silently
    path = write("s.txt", f"1 a b\n2 a b{char}c d\n")
    assert _error(path).startswith(f"{path}, line 2: whitespace character U+{ord(char):04X} in ")


def test_duplicated_user(write):
    path = write("s.txt", "u1 1\nu2 2\nu1 3\n")
    msg = _error(path)
    assert msg == (
        f"{path}, line 3: user 'u1' already listed on line 1; expected one line per user"
    )


@pytest.mark.parametrize(
    ("content", "line", "what"),
    [
        (b"1 1 2\n2 3 \x00 4\n", 2, r"binary data \(control byte 0x00\)"),
        (b"1 1 2\r\n2 3\r\n3 \x07\r\n", 3, r"binary data \(control byte 0x07\)"),
        (gzip.compress(b"1 1 2\n", mtime=0), 1, r"binary data \(control byte 0x1f\)"),
        (b"1 1 2\n2 3 \xff\xfe 4\n", 2, r"not valid UTF-8 text \(invalid start byte at byte 10\)"),
        (b"1 1 2\n2 3 caf\xc3", 2, r"not valid UTF-8 text \(unexpected end of data"),
        (b"\xef\xbb\xbf1 1 2\n\xef\xbb\xbf2 3 4\n", 2, r"byte-order mark \(U\+FEFF\) inside"),
    ],
    ids=["nul", "bell-crlf", "gzip", "invalid-utf8", "truncated-utf8", "joined-bom-files"],
)
def test_binary_and_invalid_utf8(write, content, line, what):
    path = write("s.txt", content)
    msg = _error(path)
    assert re.match(rf"{re.escape(str(path))}, line {line}: {what}", msg), msg
    assert "expected one line per user" in msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope.txt"
    msg = _error(path)
    assert msg.startswith(f"{path}: cannot read file (No such file or directory)")


def test_directory_instead_of_file(tmp_path):
    assert _error(tmp_path).startswith(f"{tmp_path}: cannot read file")


# --- read_dataset dispatch -------------------------------------------------------------------


def test_read_dataset_dispatches_on_extension(write):
    seq = read_dataset(write("d.txt", "u 1 2\n"))
    table = read_dataset(write("d.csv", "user_id,item_id,timestamp\nu,2,2\nu,1,1\n"))
    assert seq.item_tokens[seq.items].tolist() == table.item_tokens[table.items].tolist()
    assert read_dataset(write("d.TSV", "user\titem\ttime\nu\t1\t1\n")).n_interactions == 1
    renamed = read_dataset(
        write("d.inter", "a\tb\tc\nu\t1\t1\n"), user_col="a", item_col="b", time_col="c"
    )
    assert renamed.n_interactions == 1


def test_read_dataset_refuses_table_options_for_sequence_files(write):
    with pytest.raises(TypeError, match=r"\['user_col'\] apply to interaction tables"):
        read_dataset(write("d.txt", "u 1 2\n"), user_col="u")


def test_raw_sequences_helper_agrees_with_reader(write):
    text = "u 3 1\nv 2\n"
    assert raw_sequences(read_sequence_file(write("s.txt", text))) == {"u": ["3", "1"], "v": ["2"]}
