"""Interaction tables (CSV, TSV, RecBole .inter): ordering, columns, and every bad input."""

from __future__ import annotations

import re
import warnings

import pytest
from data_testutil import raw_sequences

from catrec.data import read_interaction_table
from catrec.errors import DataError

# u1's rows out of time order, with a tie at t=30 where file order (c before a) is not
# lexicographic order, so only a stable sort gives c, a.
ROWS = [("u1", "c", "30"), ("u2", "b", "10"), ("u1", "b", "10"), ("u1", "a", "30"),
        ("u2", "a", "5"), ("u1", "d", "20")]  # fmt: skip
EXPECTED = {"u1": ["b", "d", "c", "a"], "u2": ["a", "b"]}


def table(sep: str, header: list[str], rows=ROWS, end: str = "\n") -> str:
    return "".join(sep.join(r) + end for r in [header, *rows])


def test_csv_orders_by_time_with_stable_ties(write):
    data = read_interaction_table(write("t.csv", table(",", ["user_id", "item_id", "timestamp"])))
    assert data.user_tokens.tolist() == ["u1", "u2"]  # order of first appearance
    assert data.item_tokens.tolist() == ["<pad>", "a", "b", "c", "d"]
    assert data.items.tolist() == [2, 4, 3, 1, 1, 2]
    assert data.offsets.tolist() == [0, 4, 6]
    assert raw_sequences(data) == EXPECTED


def test_tsv(write):
    data = read_interaction_table(write("t.tsv", table("\t", ["user", "item", "time"])))
    assert raw_sequences(data) == EXPECTED


def test_recbole_inter_with_typed_headers_and_extra_columns(write):
    header = ["user_id:token", "rating:float", "item_id:token", "timestamp:float"]
    rows = [(u, "5.0", i, f"{t}.0") for u, i, t in ROWS]
    data = read_interaction_table(write("t.inter", table("\t", header, rows)))
    assert raw_sequences(data) == EXPECTED


def test_explicit_columns_separator_and_case_insensitive_defaults(write):
    path = write("t.txt", table(";", ["who", "what", "when"]))
    data = read_interaction_table(path, sep=";", user_col="who", item_col="what", time_col="when")
    assert raw_sequences(data) == EXPECTED
    data = read_interaction_table(write("t2.csv", table(",", ["UserID", "Item_Id", "TimeStamp"])))
    assert raw_sequences(data) == EXPECTED


def test_numeric_ids_keep_numeric_order_and_cells_are_stripped(write):
    rows = [("7", " 10 ", "2"), ("7", "9", "1"), (" 7", "100", "3")]
    data = read_interaction_table(write("t.csv", table(",", ["user", "item", "ts"], rows)))
    assert data.user_tokens.tolist() == ["7"]
    assert data.item_tokens.tolist() == ["<pad>", "9", "10", "100"]
    assert data.items.tolist() == [1, 2, 3]


def test_iso_dates_with_offsets_are_one_format(write):
    rows = [("u", "late", "2021-03-01T10:00:00+02:00"), ("u", "early", "2020-12-31"),
            ("u", "mid", "2021-03-01 07:59:59Z")]  # fmt: skip
    data = read_interaction_table(write("t.csv", table(",", ["user", "item", "date"], rows)))
    assert raw_sequences(data) == {"u": ["early", "mid", "late"]}  # late is 08:00:00 UTC
    rows = [("u", "b", "March 2 2021"), ("u", "a", "March 1 2021")]
    data = read_interaction_table(write("t2.csv", table(",", ["user", "item", "date"], rows)))
    assert raw_sequences(data) == {"u": ["a", "b"]}


def test_a_column_mixing_date_formats_is_refused(write):
    # (used to be parsed row by row, each value in whatever format fitted it)
    path = write("t.csv", "user,item,date\nu,b,March 2 2021\nu,a,2021-03-01\n")
    assert _error(path).startswith(
        f"{path}, line 2: timestamp 'March 2 2021' in column 'date' is in another date format "
        "than line 3 ('2021-03-01')"
    )


DAY_FIRST = "user,item,date\nu,A,12.01.2017 17:18\nu,B,13.01.2017 09:00\nu,C,14.01.2017 09:00\nu,D,15.01.2017 09:00\n"  # noqa: E501


def test_day_first_dates_are_read_day_first_for_the_whole_column(write):
    # 12.01 read month-first (December 1st) used to put A last: B, C, D, A
    data = read_interaction_table(write("t.csv", DAY_FIRST))
    assert raw_sequences(data) == {"u": ["A", "B", "C", "D"]}
    month_first = DAY_FIRST.replace(".01.2017", "").replace(",1", ",01/1")  # 01/12 ...
    month_first = month_first.replace(" 17:18", "/2017 17:18").replace(" 09:00", "/2017 09:00")
    data = read_interaction_table(write("m.csv", month_first))
    assert raw_sequences(data) == {"u": ["A", "B", "C", "D"]}


def test_ambiguous_date_column_is_refused_naming_a_row(write):
    path = write("t.csv", "user,item,date\nu,A,01.02.2017\nu,B,03.02.2017\nu,C,02.01.2017\n")
    msg = _error(path)
    assert msg.startswith(f"{path}, line 2: timestamp '01.02.2017' in column 'date' is ambiguous")
    assert "--time-format" in msg
    data = read_interaction_table(path, time_format="%d.%m.%Y")
    assert raw_sequences(data) == {"u": ["C", "A", "B"]}
    data = read_interaction_table(path, time_format="%m.%d.%Y")
    assert raw_sequences(data) == {"u": ["A", "C", "B"]}


def test_explicit_time_format_must_match_every_row(write):
    path = write("t.csv", DAY_FIRST)
    assert _error(path, time_format="%d.%m.%Y").startswith(
        f"{path}, line 2: timestamp '12.01.2017 17:18' in column 'date' does not match the time "
        "format '%d.%m.%Y'"
    )
    data = read_interaction_table(path, time_format="%d.%m.%Y %H:%M")
    assert raw_sequences(data) == {"u": ["A", "B", "C", "D"]}


def test_timestamps_beyond_int64_keep_their_exact_order(write):
    big = 2**64  # float64 cannot tell these apart
    rows = [("u", "c", str(big + 2)), ("u", "a", str(big)), ("u", "b", str(big + 1)),
            ("u", "d", f"{big + 2}.5"), ("u", "first", "-1e30")]  # fmt: skip
    data = read_interaction_table(write("t.csv", table(",", ["user", "item", "ts"], rows)))
    assert raw_sequences(data) == {"u": ["first", "a", "b", "c", "d"]}


def test_named_columns(write):
    text = "reviewerID,asin,overall,unixReviewTime\nu1,b,5,20\nu1,a,4,10\n"
    path = write("amazon.csv", text)
    assert "missing user column" in _error(path)
    data = read_interaction_table(
        path, user_col="reviewerID", item_col="asin", time_col="unixReviewTime"
    )
    assert raw_sequences(data) == {"u1": ["a", "b"]}


@pytest.mark.parametrize("char", ["\u00a0", "\u2028", "\u3000"])
def test_unicode_whitespace_in_an_id_cell_is_refused(write, char):
    path = write("t.csv", f"user,item,ts\nu,a,1\nu,x{char}y,2\n")
    assert _error(path).startswith(f"{path}, line 3: whitespace character U+{ord(char):04X} in ")


def test_quoted_cells_crlf_bom_and_no_final_newline(write):
    text = '\ufeffuser_id,item_id,timestamp\r\n"u,1",a,2\r\n"u,1","b ""x""",1'
    data = read_interaction_table(write("t.csv", text))
    assert raw_sequences(data) == {"u,1": ['b "x"', "a"]}


def test_float_and_negative_timestamps(write):
    rows = [("u", "a", "1.5"), ("u", "b", "-3"), ("u", "c", "1e-3")]
    data = read_interaction_table(write("t.csv", table(",", ["user", "item", "ts"], rows)))
    assert raw_sequences(data) == {"u": ["b", "c", "a"]}


def test_blank_lines_are_skipped_with_a_counted_warning(write):
    text = "\nuser,item,ts\nu,a,1\n\n  \nu,b,2\n"
    with pytest.warns(UserWarning, match=r"t\.csv: skipped 3 blank line\(s\) \(first at line 1\)"):
        data = read_interaction_table(write("t.csv", text))
    assert raw_sequences(data) == {"u": ["a", "b"]}


# --- rejected input ----------------------------------------------------------------------------


def _error(path, **kw) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError) as info:
            read_interaction_table(path, **kw)
    return str(info.value)


def test_missing_column_names_file_and_expected_columns(write):
    path = write("t.csv", "user_id,item_id,rating\nu,a,5\n")
    msg = _error(path)
    assert msg == (
        f"{path}, line 1: missing timestamp column; expected one of "
        "['timestamp', 'time', 'ts', 'datetime', 'date'] (or name it explicitly), "
        "columns are ['user_id', 'item_id', 'rating']"
    )
    path = write("t2.csv", "\nwho,item,ts\nu,a,5\n")
    assert _error(path).startswith(
        f"{path}, line 2: missing user column; expected one of ['user_id'"
    )
    msg = _error(write("t3.csv", "user,item,ts\nu,a,5\n"), item_col="sku")
    assert "line 1: missing item column 'sku'; columns are ['user', 'item', 'ts']" in msg


@pytest.mark.parametrize("content", ["", "\n\n", " \r\n"])
def test_empty_file(write, content):
    path = write("t.csv", content)
    msg = _error(path)
    assert msg.startswith(f"{path}: file is empty; expected a ',"), msg
    assert "header line and one row per interaction" in msg


@pytest.mark.parametrize("content", ["user,item,ts\n", "user,item,ts", "user,item,ts\n\n\n"])
def test_header_only(write, content):
    path = write("t.csv", content)
    assert _error(path).startswith(f"{path}: header only, no interaction rows")


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("user,item,ts\nu,a,1\nu,,2\n", 3, "item"),
        ("user,item,ts\nu,a,1\n\n , b,2\n", 4, "user"),
        ("user,item,ts\r\nu,a,1\r\nu,b,  \r\n", 3, "ts"),
    ],
)
def test_empty_cell(write, text, line, column):
    path = write("t.csv", text)
    assert _error(path) == (
        f"{path}, line {line}: empty value in column {column!r}; "
        f"expected a {dict(ts='timestamp').get(column, column)} for every row"
    )


@pytest.mark.parametrize("bad", ["soon", "nan", "12:xx", "2021-13-45"])
def test_timestamp_neither_number_nor_date(write, bad):
    path = write("t.csv", f"user,item,ts\nu,a,1\n\nu,b,{bad}\n")
    msg = _error(path)
    assert msg.startswith(
        f"{path}, line 4: timestamp {bad!r} in column 'ts' is neither a number nor a date"
    )


def test_timestamp_not_finite(write):
    path = write("t.csv", "user,item,ts\nu,a,1\nu,b,inf\n")
    assert _error(path).startswith(
        f"{path}, line 3: timestamp 'inf' in column 'ts' is not a finite number"
    )


def test_timestamps_mixing_numbers_and_dates(write):
    path = write("t.csv", "user,item,ts\nu,a,2020-01-01\nu,b,5\n")
    assert _error(path).startswith(
        f"{path}, line 3: timestamp '5' in column 'ts' is a number but line 2 has a date"
    )


@pytest.mark.parametrize(
    ("text", "line", "n"),
    [("user,item,ts\nu,a,1\nu,b,2,3\n", 3, 4), ("user,item,ts\nu,a\n", 2, 2)],
)
def test_wrong_number_of_fields(write, text, line, n):
    # pandas would silently shift a row with one extra field into an index column.
    path = write("t.csv", text)
    assert _error(path) == (
        f"{path}, line {line}: {n} field(s); expected 3 as in the header on line 1 ('user,item,ts')"
    )


@pytest.mark.parametrize(
    ("content", "line", "what"),
    [
        (b"user,item,ts\nu,a,1\nu,\x00,2\n", 3, "binary data"),
        (b"user,item,ts\nu,a,1\nu,\xe9,2\n", 3, "not valid UTF-8"),
    ],
)
def test_binary_and_invalid_utf8(write, content, line, what):
    path = write("t.csv", content)
    assert re.match(rf"{re.escape(str(path))}, line {line}: {what}", _error(path))


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('user,item,ts\nu,a,1\nu,"b,1\nu,c,2\n', 3, "unexpected end of data"),
        ('user,item,ts\nu,a,1\n\nu,"b"x,2\n', 4, "',' expected after '\"'"),
    ],
)
def test_bad_quotes(write, text, line, reason):
    path = write("t.csv", text)
    assert _error(path) == (
        f"{path}, line {line}: cannot parse the row starting on this line ({reason}; an unclosed "
        "or stray double quote?); expected a ','-separated table with a header line and one row "
        "per interaction"
    )


def test_missing_file(tmp_path):
    path = tmp_path / "none.csv"
    assert _error(path).startswith(f"{path}: cannot read file (No such file or directory)")
