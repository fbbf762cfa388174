"""Readers for the two input formats catrec accepts, and a writer for the first.

1. Sequence files (S3-Rec / ICLRec format, ``shared/data/README.md``): one line per user,
   ``user item item ...`` in chronological order.
2. Interaction tables: CSV / TSV with user, item and timestamp columns, or RecBole ``.inter``
   atomic files (tab-separated, headers such as ``user_id:token``). Rows are ordered by timestamp
   with a stable tie order (file order).

Raw ids are tokens (strings). Items are remapped to ``1..n_items`` (0 is padding); the mapping is
kept in :class:`SequenceData` so that recommendations come back as raw ids.

Policy for both formats: text must be UTF-8 (a byte-order mark is ignored at the start of the
file and rejected elsewhere); LF, CRLF and CR line ends are accepted, as is a missing final
newline; control characters other than tab, CR and LF mean binary data and are rejected; blank
lines (empty or only spaces and tabs, no separator) are skipped with one warning giving their
count and the first one's line number. Tokens are separated by ASCII spaces and tabs only; any
other whitespace character (NBSP U+00A0, LINE SEPARATOR U+2028, U+3000, ...) in a sequence file,
or in a user or item cell of a table, is an error naming the line and the character. Every
rejection is a :class:`~catrec.errors.DataError`
naming the file, the line and what was expected.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from catrec.errors import DataError
from catrec.utils import atomic_write_bytes

PAD = 0

# C0 control characters other than tab, LF and CR (and DEL): a text dataset never has them, a
# compressed or binary file almost always does.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Whitespace other than space, tab, CR and LF (NBSP, U+2028, U+3000, NEL, ...): never a token
# separator, and refused inside ids, so that no id is split or joined invisibly.
_ODD_SPACE = re.compile(r"[^\S \t\r\n]")
_TOKEN_SEP = re.compile(r"[ \t]+")
_INT_TOKEN = re.compile(r"-?[0-9]+")
_MAX_INT_DIGITS = 4000  # int() refuses longer strings (sys.int_max_str_digits)


@dataclass(frozen=True)
class SequenceData:
    """Chronological item sequences of all users, in compressed (CSR) form.

    Attributes:
        name: dataset name or file path it was read from.
        user_tokens: raw user ids, ``[U]`` (str).
        item_tokens: raw item ids, ``[n_items + 1]`` (str); index 0 is the padding placeholder.
        offsets: ``[U + 1]`` int64; user ``u``'s items are ``items[offsets[u]:offsets[u + 1]]``.
        items: ``[n_interactions]`` int64 item indices in ``1..n_items``, chronological per user.
    """

    name: str
    user_tokens: np.ndarray
    item_tokens: np.ndarray
    offsets: np.ndarray
    items: np.ndarray

    @property
    def n_users(self) -> int:
        """U, the number of users."""
        return len(self.user_tokens)

    @property
    def n_items(self) -> int:
        """The number of items, padding excluded."""
        return len(self.item_tokens) - 1

    @property
    def n_interactions(self) -> int:
        """N, the total length of all sequences."""
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        """Sequence length of each user, ``[U]`` int64."""
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        """Item indices of user ``user`` (a row index, not a raw id), chronological; ``[len]``."""
        return self.items[self.offsets[user] : self.offsets[user + 1]]


def _sort_tokens(tokens: list[str]) -> list[str]:
    """Numeric order when every token is an integer (``-?[0-9]+``), else lexicographic order.

    Keeps the ids of the shared datasets (contiguous integers from 1) unchanged by the remap.
    Tokens of equal value (``1`` and ``01``) are distinct items, ordered by their text.
    """
    if all(_INT_TOKEN.fullmatch(t) and len(t) <= _MAX_INT_DIGITS for t in tokens):
        return sorted(tokens, key=lambda t: (int(t), t))
    return sorted(tokens)


def _build(name: str, users: list[str], seqs: list[list[str]]) -> SequenceData:
    if not users:
        raise DataError(f"{name}: no users found; expected at least one user with items")
    vocab = _sort_tokens(list({t for s in seqs for t in s}))
    index = {t: i + 1 for i, t in enumerate(vocab)}
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = np.fromiter((index[t] for s in seqs for t in s), dtype=np.int64, count=int(offsets[-1]))
    return SequenceData(
        name=name,
        user_tokens=np.array(users, dtype=object),
        item_tokens=np.array(["<pad>", *vocab], dtype=object),
        offsets=offsets,
        items=items,
    )


def _line_of(raw: bytes, pos: int) -> int:
    """1-based line number of byte offset ``pos`` (LF, CRLF and CR all end a line)."""
    head = raw[:pos]
    return head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n") + 1


def _read_text(path: Path, expected: str) -> str:
    """The file's text: UTF-8, no binary data, no byte-order mark. ``expected`` ends messages."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc}); {expected}") from exc
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        raise DataError(f"{path}: file is empty; {expected}")
    bad = _CONTROL.search(raw)
    if bad:
        raise DataError(
            f"{path}, line {_line_of(raw, bad.start())}: binary data (control byte "
            f"0x{raw[bad.start()]:02x}); {expected}"
        )
    bom = raw.find(b"\xef\xbb\xbf")
    if bom >= 0:
        raise DataError(
            f"{path}, line {_line_of(raw, bom)}: byte-order mark (U+FEFF) inside the file "
            f"(files joined together?); {expected}"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}, line {_line_of(raw, exc.start)}: not valid UTF-8 text ({exc.reason} at "
            f"byte {exc.start}); {expected}"
        ) from exc


def _warn_blank(path: Path, blank: list[int]) -> None:
    if blank:
        warnings.warn(
            f"{path}: skipped {len(blank)} blank line(s) (first at line {blank[0]})", stacklevel=3
        )


def _check_spaces(path: Path, line_no: int, text: str, expected: str) -> None:
    odd = _ODD_SPACE.search(text)
    if odd:
        raise DataError(
            f"{path}, line {line_no}: whitespace character U+{ord(odd.group()):04X} in "
            f"{text.strip()!r}; ids are separated by spaces or tabs only and cannot contain "
            f"other whitespace; {expected}"
        )


def read_sequence_file(path: str | Path) -> SequenceData:
    """Read a sequence file: one line per user, ``user_id item_id item_id ...``.

    Tokens are separated by spaces and tabs (single spaces in the reference files; tabs and runs
    are accepted); other whitespace characters are refused (see the module docstring). Items
    are remapped to ``1..n_items`` in numeric order of their ids when all ids are integers (so
    the shared files' ids map to themselves), else in lexicographic order. Users keep file order.

    Returns:
        :class:`SequenceData` with ``[U]`` users and ``[n_interactions]`` items.

    Raises:
        DataError: the file is missing, empty, binary or not UTF-8, has a line with a user id
            but no items or with a whitespace character other than space and tab, or lists the
            same user twice. The message names the file and line.
    """
    path = Path(path)
    expected = "expected one line per user: 'user_id item_id [item_id ...]'"
    text = _read_text(path, expected)
    users: list[str] = []
    seqs: list[list[str]] = []
    seen: dict[str, int] = {}
    blank: list[int] = []
    lines = _LINE_BREAK.split(text)
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start a blank one
    for line_no, line in enumerate(lines, start=1):
        _check_spaces(path, line_no, line, expected)
        tokens = _TOKEN_SEP.split(line.strip(" \t")) if line.strip(" \t") else []
        if not tokens:
            blank.append(line_no)
            continue
        if len(tokens) < 2:
            raise DataError(
                f"{path}, line {line_no}: user {tokens[0]!r} has no items; "
                "expected 'user_id item_id [item_id ...]'"
            )
        user = tokens[0]
        if user in seen:
            raise DataError(
                f"{path}, line {line_no}: user {user!r} already listed on line {seen[user]}; "
                "expected one line per user"
            )
        seen[user] = line_no
        users.append(user)
        seqs.append(tokens[1:])
    _warn_blank(path, blank)
    return _build(str(path), users, seqs)


def _check_token(token: object, what: str) -> str:
    """``token`` if a sequence file can hold it and give it back unchanged, else DataError."""
    ok = isinstance(token, str) and token.split() == [token] and "\ufeff" not in token
    if ok:
        try:
            ok = not _CONTROL.search(token.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates
            ok = False
    if not ok:
        raise DataError(
            f"cannot write {what} {token!r} to a sequence file; expected a non-empty UTF-8 "
            "string without whitespace, control characters or U+FEFF"
        )
    return token


def write_sequence_file(data: SequenceData, path: str | Path) -> Path:
    """Write ``data`` as a sequence file (``user item item ...``, LF line ends), atomically.

    Reading the file back with :func:`read_sequence_file` gives the same users, items and
    sequences; the item indices are identical too when ``data.item_tokens`` holds exactly the
    items that occur, in reader order (true for anything a reader returned).

    Raises:
        DataError: a user has no items or appears twice, or a token is empty or contains
            whitespace.
    """
    path = Path(path)
    if len(set(data.user_tokens.tolist())) != data.n_users:
        raise DataError(f"cannot write {data.name}: a user appears twice; expected unique users")
    item_tokens = [_check_token(t, "item") for t in data.item_tokens[1:]]
    lines = []
    for u, user in enumerate(data.user_tokens):
        seq = data.sequence(u)
        if len(seq) == 0:
            raise DataError(f"cannot write user {user!r}: no items; a sequence file needs one")
        lines.append(" ".join([_check_token(user, "user"), *(item_tokens[i - 1] for i in seq)]))
    atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode("utf-8"))
    return path


_USER_COLS = ("user_id", "user", "userid", "uid")
_ITEM_COLS = ("item_id", "item", "itemid", "iid", "business_id", "movie_id")
_TIME_COLS = ("timestamp", "time", "ts", "datetime", "date")


def _pick(
    columns: list[str],
    wanted: str | None,
    candidates: tuple[str, ...],
    what: str,
    path: Path,
    line: int,
) -> int:
    """Index of the ``what`` column: ``wanted`` exactly, else the first candidate (any case)."""
    if wanted is not None:
        if wanted not in columns:
            raise DataError(
                f"{path}, line {line}: missing {what} column {wanted!r}; columns are {columns}"
            )
        return columns.index(wanted)
    lower = [c.lower() for c in columns]
    for c in candidates:
        if c in lower:
            return lower.index(c)
    raise DataError(
        f"{path}, line {line}: missing {what} column; expected one of {list(candidates)} "
        f"(or name it explicitly), columns are {columns}"
    )


# Finite decimal numbers (unix time in any unit); "inf" is recognised only to be refused.
_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_INFINITE = re.compile(r"[-+]?inf(?:inity)?", re.IGNORECASE)
_INTEGER = re.compile(r"[-+]?[0-9]+")


def _date_formats() -> tuple[str, ...]:
    """Date formats tried on a timestamp column, each for the whole column ("ISO8601" is
    pandas' ISO 8601 family: ``2021-03-01``, ``2021-03-01T10:00:00+02:00``, ...).

    Day-first and month-first readings of ``01.02.2017`` are both candidates: a column is read by
    the one that parses every row, and refused when both do and disagree.
    """
    times = ("", " %H:%M", " %H:%M:%S", " %I:%M %p", " %I:%M:%S %p")
    out = ["ISO8601"]
    for t in times:
        out += [f"%Y/%m/%d{t}", f"%Y.%m.%d{t}"]
        out += [f"{d} %Y{t}" for d in ("%d %b", "%d %B", "%b %d", "%B %d", "%b %d,", "%B %d,")]
        for sep in ("/", ".", "-"):
            out += [f"%d{sep}%m{sep}%Y{t}", f"%m{sep}%d{sep}%Y{t}"]
    out += ["%a, %d %b %Y %H:%M:%S %z", "%a %b %d %H:%M:%S %z %Y"]  # RFC 2822, Twitter
    return tuple(out)


DATE_FORMATS = _date_formats()


def _dates(values: pd.Series, fmt: str) -> pd.Series:
    """UTC datetimes of ``values`` in format ``fmt`` (NaT where a value does not match)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pd.to_datetime(values, errors="coerce", utc=True, format=fmt)
        except (ValueError, TypeError, OverflowError):
            return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")


def _numeric_keys(values: np.ndarray) -> np.ndarray:
    """Exact sort keys ``[N]`` int64 of number strings: the integers themselves when they fit
    int64, else dense ranks of their exact decimal values (float64 would merge or reorder
    timestamps beyond 2**53)."""
    if all(_INTEGER.fullmatch(v) and len(v) <= 20 for v in values):
        ints = [int(v) for v in values]
        if all(-(2**63) <= i < 2**63 for i in ints):
            return np.array(ints, dtype=np.int64)
    exact = [Decimal(v) for v in values]
    rank = {d: r for r, d in enumerate(sorted(set(exact)))}
    return np.fromiter((rank[d] for d in exact), dtype=np.int64, count=len(exact))


def _parse_times(
    path: Path,
    col: str,
    values: np.ndarray,
    line_nos: np.ndarray,
    time_format: str | None = None,
) -> np.ndarray:
    """Sortable int64 keys ``[N]`` from timestamp strings ``[N]``, one format for the column.

    ``time_format`` (strptime) when given; else all numbers (unix time, exactly ordered), or
    dates in the one format of :data:`DATE_FORMATS` that reads every row.
    """
    strings = pd.Series(values, dtype=object)
    if time_format is not None:
        dt = _dates(strings, time_format)
        bad = np.flatnonzero(dt.isna().to_numpy())
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"{path}, line {line_nos[row]}: timestamp {values[row]!r} in column {col!r} does "
                f"not match the time format {time_format!r}"
            )
        return dt.astype("int64").to_numpy()
    is_num = np.fromiter((bool(_NUMBER.fullmatch(v)) for v in values), bool, len(values))
    is_inf = np.fromiter((bool(_INFINITE.fullmatch(v)) for v in values), bool, len(values))
    if (is_num | is_inf).all():
        if is_inf.any():
            row = int(np.flatnonzero(is_inf)[0])
            raise DataError(
                f"{path}, line {line_nos[row]}: timestamp {values[row]!r} in column {col!r} is "
                "not a finite number; expected a number or a date"
            )
        return _numeric_keys(values)
    dates = strings[~is_num]
    # Candidates first on a sample (cheap), then on the whole column.
    sample = dates.iloc[:1000]
    parsed = {}
    for fmt in DATE_FORMATS:
        if _dates(sample, fmt).notna().all():
            dt = _dates(dates, fmt)
            if dt.notna().all():
                parsed[fmt] = dt
    if not parsed:
        _raise_unparsed(path, col, values, line_nos, np.flatnonzero(~is_num), dates)
    if is_num.any():
        num_row, date_row = int(np.flatnonzero(is_num)[0]), int(np.flatnonzero(~is_num)[0])
        raise DataError(
            f"{path}, line {line_nos[num_row]}: timestamp {values[num_row]!r} in column {col!r} "
            f"is a number but line {line_nos[date_row]} has a date ({values[date_row]!r}); "
            "expected all numbers or all dates"
        )
    (fmt, first), *others = parsed.items()
    for other, dt in others:
        differ = np.flatnonzero((dt != first).to_numpy())
        if differ.size:
            row = int(differ[0])
            raise DataError(
                f"{path}, line {line_nos[row]}: timestamp {values[row]!r} in column {col!r} is "
                f"ambiguous: as {fmt!r} it is {first.iloc[row]:%Y-%m-%d %H:%M}, as {other!r} "
                f"{dt.iloc[row]:%Y-%m-%d %H:%M}, and no row of the column tells which; give the "
                "format (--time-format, YAML time_format)"
            )
    return first.astype("int64").to_numpy()


def _raise_unparsed(
    path: Path,
    col: str,
    values: np.ndarray,
    line_nos: np.ndarray,
    rows: np.ndarray,
    dates: pd.Series,
) -> None:
    """DataError for a date column no single format reads: name a row no format reads, or, when
    every row is some date, two rows in different formats."""
    ok = {fmt: _dates(dates, fmt).notna().to_numpy() for fmt in DATE_FORMATS}
    best = max(ok, key=lambda f: int(ok[f].sum()))
    readable = np.logical_or.reduce(list(ok.values()))
    if not readable.all():
        row = int(rows[np.flatnonzero(~readable)[0]])
        raise DataError(
            f"{path}, line {line_nos[row]}: timestamp {values[row]!r} in column {col!r} is "
            "neither a number nor a date; expected e.g. 1367193600 or 2013-04-29T00:00:00 "
            "(or give the format: --time-format, YAML time_format)"
        )
    good, bad = int(rows[np.flatnonzero(ok[best])[0]]), int(rows[np.flatnonzero(~ok[best])[0]])
    raise DataError(
        f"{path}, line {line_nos[bad]}: timestamp {values[bad]!r} in column {col!r} is in another "
        f"date format than line {line_nos[good]} ({values[good]!r}); expected one format for the "
        "whole column (or give it: --time-format, YAML time_format)"
    )


def read_interaction_table(
    path: str | Path,
    *,
    sep: str | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    time_format: str | None = None,
) -> SequenceData:
    """Read an interaction table (CSV, TSV or RecBole ``.inter``) into per-user sequences.

    The first non-blank line is the header. RecBole type suffixes such as ``:token`` or
    ``:float`` are stripped from column names. Cells are stripped of surrounding spaces and tabs;
    double quotes follow CSV rules. Rows are ordered by timestamp within each user; rows with
    equal timestamps keep file order (stable sort). Users keep the order of their first row.
    Timestamps are numbers (any unit; ordered exactly, even beyond int64) or dates, not a mix.
    A date column is read with one format for all its rows: ``time_format`` when given, else
    the one format of :data:`DATE_FORMATS` (ISO 8601, ``2017/01/12``, ``12 Jan 2017``,
    day-first ``12.01.2017 17:18``, month-first ``01/12/2017``, ...) that reads every row; a
    column that two formats read differently (``01.02.2017`` and nothing after the 12th) is
    refused as ambiguous.

    Args:
        path: the table; separator from the extension (``.csv`` → ``,``; ``.tsv``, ``.inter``,
            ``.txt`` → tab) unless ``sep`` is given.
        user_col, item_col, time_col: column names; by default the first present of common names
            (``user_id``/``user``, ``item_id``/``item``, ``timestamp``/``time``), any case.
        time_format: strptime format of every timestamp, e.g. ``"%d.%m.%Y %H:%M"``.

    Returns:
        :class:`SequenceData` with ``[U]`` users and one item per row ``[n_interactions]``.

    Raises:
        DataError: unreadable, empty or binary file, header only, a missing column, a row with
            the wrong number of fields, an empty cell, a timestamp that is neither a number
            nor a date, a date column in several or ambiguous formats, a user or item id with a
            whitespace character other than space and tab. The message names the file and line.
    """
    path = Path(path)
    if sep is None:
        sep = "," if path.suffix.lower() == ".csv" else "\t"
    expected = f"expected a {sep!r}-separated table with a header line and one row per interaction"
    text = _read_text(path, expected)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    blank: list[int] = []  # a blank line has no separator and nothing but whitespace
    rows: list[list[str]] = []
    line_nos: list[int] = []  # first file line of each row
    last = 0  # last file line read so far
    header: list[str] = []
    try:
        for row in reader:
            first, last = last + 1, reader.line_num
            if len(row) <= 1 and not "".join(row).strip(" \t"):
                blank.append(first)
                continue
            header, header_line = [c.split(":", 1)[0].strip() for c in row], first
            break
        if not header:
            raise DataError(f"{path}: only blank lines; {expected}")
        u = _pick(header, user_col, _USER_COLS, "user", path, header_line)
        i = _pick(header, item_col, _ITEM_COLS, "item", path, header_line)
        t = _pick(header, time_col, _TIME_COLS, "timestamp", path, header_line)
        n_cols = len(header)
        for row in reader:
            first, last = last + 1, reader.line_num
            if len(row) == n_cols:
                rows.append(row)
                line_nos.append(first)
            elif len(row) <= 1 and not "".join(row).strip(" \t"):
                blank.append(first)
            else:
                raise DataError(
                    f"{path}, line {first}: {len(row)} field(s); expected {n_cols} as in the "
                    f"header on line {header_line} ({sep.join(header)!r})"
                )
    except csv.Error as exc:
        raise DataError(
            f"{path}, line {last + 1}: cannot parse the row starting on this line ({exc}; "
            f"an unclosed or stray double quote?); {expected}"
        ) from exc
    if not rows:
        raise DataError(f"{path}: header only, no interaction rows; {expected}")
    _warn_blank(path, blank)
    lines = np.array(line_nos, dtype=np.int64)
    cols = {}
    for name, c in (("user", u), ("item", i), ("timestamp", t)):
        values = np.array([r[c].strip(" \t") for r in rows], dtype=object)
        if name != "timestamp":
            for row, cell in enumerate(values):
                if _ODD_SPACE.search(cell):
                    _check_spaces(path, int(lines[row]), cell, expected)
        empty = np.flatnonzero(values == "")
        if empty.size:
            raise DataError(
                f"{path}, line {lines[empty[0]]}: empty value in column {header[c]!r}; "
                f"expected a {name} for every row"
            )
        cols[name] = values
    ts = _parse_times(path, header[t], cols["timestamp"], lines, time_format)
    # Users in order of first appearance; within a user, by time, ties in file order.
    codes, uniques = pd.factorize(cols["user"])
    order = np.lexsort((np.arange(len(rows)), ts, codes))
    items_sorted = cols["item"][order]
    bounds = np.r_[0, np.cumsum(np.bincount(codes, minlength=len(uniques)))]
    users = [str(x) for x in uniques]
    seqs = [list(items_sorted[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return _build(str(path), users, seqs)


def read_dataset(path: str | Path, **table_options) -> SequenceData:
    """Read a dataset file, choosing the reader from the extension.

    ``.csv``, ``.tsv`` and ``.inter`` are interaction tables (``table_options`` go to
    :func:`read_interaction_table`); anything else (``.txt``) is a sequence file.

    Raises:
        DataError: see the two readers.
        TypeError: ``table_options`` given for a sequence file (they would be ignored).
    """
    suffix = Path(path).suffix.lower()
    if suffix in {".csv", ".tsv", ".inter"}:
        return read_interaction_table(path, **table_options)
    if table_options:
        raise TypeError(
            f"{path}: options {sorted(table_options)} apply to interaction tables "
            "(.csv, .tsv, .inter), not to sequence files"
        )
    return read_sequence_file(path)
