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
lines (empty or whitespace-only, no separator) are skipped with one warning giving their count
and the first one's line number. Every rejection is a :class:`~catrec.errors.DataError`
naming the file, the line and what was expected.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from dataclasses import dataclass
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


def read_sequence_file(path: str | Path) -> SequenceData:
    """Read a sequence file: one line per user, ``user_id item_id item_id ...``.

    Tokens are separated by whitespace (single spaces in the reference files; tabs and runs of
    spaces are accepted). Items are remapped to ``1..n_items`` in numeric order of their ids
    when all ids are integers (so the shared files' ids map to themselves), else in
    lexicographic order. Users keep file order.

    Returns:
        :class:`SequenceData` with ``[U]`` users and ``[n_interactions]`` items.

    Raises:
        DataError: the file is missing, empty, binary or not UTF-8, has a line with a user id
            but no items, or lists the same user twice. The message names the file and line.
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
        tokens = line.split()
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


def _to_dates(values: pd.Series) -> pd.Series:
    """UTC datetimes (NaT where unparseable): ISO 8601 first (fast), else any common format."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns when it falls back to dateutil
        try:
            dt = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            dt = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
        if dt.isna().any():
            try:
                dt = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
            except (ValueError, TypeError, OverflowError):
                pass  # keep the ISO result; the rows it could not parse are reported
    return dt


def _parse_times(path: Path, col: str, values: np.ndarray, line_nos: np.ndarray) -> np.ndarray:
    """Sortable ``[N]`` keys from timestamp strings ``[N]``: all numbers, or all dates."""
    strings = pd.Series(values, dtype=object)
    nums = pd.to_numeric(strings, errors="coerce")
    is_num = nums.notna().to_numpy()
    if is_num.all():
        keys = nums.to_numpy()
        if keys.dtype.kind == "f" and not np.isfinite(keys).all():
            row = int(np.flatnonzero(~np.isfinite(keys))[0])
            raise DataError(
                f"{path}, line {line_nos[row]}: timestamp {values[row]!r} in column {col!r} is "
                "not a finite number; expected a number or a date"
            )
        return keys
    dt = _to_dates(strings[~is_num])
    bad = np.flatnonzero(~is_num)[dt.isna().to_numpy()]
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{path}, line {line_nos[row]}: timestamp {values[row]!r} in column {col!r} is "
            "neither a number nor a date; expected e.g. 1367193600 or 2013-04-29T00:00:00"
        )
    if is_num.any():
        num_row, date_row = int(np.flatnonzero(is_num)[0]), int(np.flatnonzero(~is_num)[0])
        raise DataError(
            f"{path}, line {line_nos[num_row]}: timestamp {values[num_row]!r} in column {col!r} "
            f"is a number but line {line_nos[date_row]} has a date ({values[date_row]!r}); "
            "expected all numbers or all dates"
        )
    return dt.astype("int64").to_numpy()


def read_interaction_table(
    path: str | Path,
    *,
    sep: str | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
) -> SequenceData:
    """Read an interaction table (CSV, TSV or RecBole ``.inter``) into per-user sequences.

    The first non-blank line is the header. RecBole type suffixes such as ``:token`` or
    ``:float`` are stripped from column names. Cells are stripped of surrounding whitespace;
    double quotes follow CSV rules. Rows are ordered by timestamp within each user; rows with
    equal timestamps keep file order (stable sort). Users keep the order of their first row.
    Timestamps are numbers (any unit) or dates (ISO 8601 or other common formats), not a mix.

    Args:
        path: the table; separator from the extension (``.csv`` → ``,``; ``.tsv``, ``.inter``,
            ``.txt`` → tab) unless ``sep`` is given.
        user_col, item_col, time_col: column names; by default the first present of common names
            (``user_id``/``user``, ``item_id``/``item``, ``timestamp``/``time``), any case.

    Returns:
        :class:`SequenceData` with ``[U]`` users and one item per row ``[n_interactions]``.

    Raises:
        DataError: unreadable, empty or binary file, header only, a missing column, a row with
            the wrong number of fields, an empty cell, a timestamp that is neither a number
            nor a date. The message names the file and line.
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
            if len(row) <= 1 and not "".join(row).strip():
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
            elif len(row) <= 1 and not "".join(row).strip():
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
        values = np.array([r[c].strip() for r in rows], dtype=object)
        empty = np.flatnonzero(values == "")
        if empty.size:
            raise DataError(
                f"{path}, line {lines[empty[0]]}: empty value in column {header[c]!r}; "
                f"expected a {name} for every row"
            )
        cols[name] = values
    ts = _parse_times(path, header[t], cols["timestamp"], lines)
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
