"""Readers for the two input formats catrec accepts.

1. Sequence files (S3-Rec / ICLRec format, ``shared/data/README.md``): one line per user,
   ``user item item ...`` in chronological order.
2. Interaction tables: CSV / TSV with user, item and timestamp columns, or RecBole ``.inter``
   atomic files (tab-separated, headers such as ``user_id:token``). Rows are ordered by timestamp
   with a stable tie order (file order).

Raw ids are tokens (strings). Items are remapped to ``1..n_items`` (0 is padding); the mapping is
kept in :class:`SequenceData` so that recommendations come back as raw ids.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from catrec.errors import DataError

PAD = 0


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
        return len(self.user_tokens)

    @property
    def n_items(self) -> int:
        return len(self.item_tokens) - 1

    @property
    def n_interactions(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        """Sequence length of each user, ``[U]`` int64."""
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        """Item indices of user ``user`` (a row index, not a raw id), chronological."""
        return self.items[self.offsets[user] : self.offsets[user + 1]]


def _sort_tokens(tokens: list[str]) -> list[str]:
    """Numeric order when every token is a non-negative integer, else lexicographic order.

    Keeps the ids of the shared datasets (contiguous integers from 1) unchanged by the remap.
    """
    if all(t.isdigit() and t.isascii() for t in tokens):
        return sorted(tokens, key=lambda t: (len(t.lstrip("0")), t.lstrip("0"), t))
    return sorted(tokens)


def _build(name: str, users: list[str], seqs: list[list[str]]) -> SequenceData:
    if not users:
        raise DataError(f"{name}: no users found (empty dataset)")
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


def read_sequence_file(path: str | Path) -> SequenceData:
    """Read a sequence file: one line per user, ``user_id item_id item_id ...``.

    Tokens are separated by whitespace (single spaces in the reference files; tabs and runs of
    spaces are accepted), CRLF line ends and a missing final newline are accepted. Blank lines
    are skipped with a warning giving their count.

    Raises:
        DataError: the file is missing, empty, not UTF-8 text, has a line with a user id but no
            items, or lists the same user twice. The message names the file and line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read dataset file ({exc.strerror or exc})") from exc
    if not raw.strip():
        raise DataError(f"{path}: file is empty; expected one line per user: 'user item item ...'")
    if b"\x00" in raw:
        line_no = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise DataError(f"{path}, line {line_no}: binary data (NUL byte); expected text lines")
    users: list[str] = []
    seqs: list[list[str]] = []
    seen: dict[str, int] = {}
    blank = 0
    lines = raw.split(b"\n")
    if not lines[-1].strip():
        lines.pop()  # the final newline (or trailing whitespace) ends the last line
    for line_no, line in enumerate(lines, start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}, line {line_no}: not valid UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc
        tokens = text.split()
        if not tokens:
            blank += 1
            continue
        if len(tokens) < 2:
            raise DataError(
                f"{path}, line {line_no}: expected 'user_id item_id [item_id ...]' "
                f"but found only {tokens[0]!r}"
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
    if blank:
        warnings.warn(f"{path}: skipped {blank} blank line(s)", stacklevel=2)
    return _build(str(path), users, seqs)


_USER_COLS = ("user_id", "user", "userid", "uid")
_ITEM_COLS = ("item_id", "item", "itemid", "iid", "business_id", "movie_id")
_TIME_COLS = ("timestamp", "time", "ts", "datetime", "date")


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, path):
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{path}: missing {what} column {wanted!r}; columns are {columns}")
        return wanted
    for c in candidates:
        if c in columns:
            return c
    raise DataError(
        f"{path}: missing {what} column; expected one of {list(candidates)} "
        f"(or name it explicitly), columns are {columns}"
    )


def read_interaction_table(
    path: str | Path,
    *,
    sep: str | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
) -> SequenceData:
    """Read an interaction table (CSV, TSV or RecBole ``.inter``) into per-user sequences.

    Rows are ordered by timestamp within each user; rows with equal timestamps keep file order
    (stable sort). RecBole header suffixes such as ``:token`` or ``:float`` are stripped.

    Args:
        path: the table; separator from the extension (``.csv`` → ``,``; ``.tsv``, ``.inter``,
            ``.txt`` → tab) unless ``sep`` is given.
        user_col, item_col, time_col: column names; by default the first present of common names
            (``user_id``/``user``, ``item_id``/``item``, ``timestamp``/``time``).

    Raises:
        DataError: unreadable or empty file, a missing column, an empty or non-numeric cell.
    """
    path = Path(path)
    if sep is None:
        sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: file is empty; expected a header and interaction rows") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse as a {sep!r}-separated table: {exc}") from exc
    df.columns = [str(c).split(":", 1)[0].strip() for c in df.columns]
    cols = list(df.columns)
    u = _pick(cols, user_col, _USER_COLS, "user", path)
    i = _pick(cols, item_col, _ITEM_COLS, "item", path)
    t = _pick(cols, time_col, _TIME_COLS, "timestamp", path)
    if df.empty:
        raise DataError(f"{path}: header only, no interaction rows")
    for col in (u, i, t):
        bad = np.flatnonzero(df[col].str.strip().eq("").to_numpy())
        if bad.size:
            # +2: one for the header line, one because file lines count from 1.
            raise DataError(f"{path}, line {bad[0] + 2}: empty value in column {col!r}")
    ts = pd.to_numeric(df[t], errors="coerce")
    if ts.isna().any():
        # Not numbers: accept ISO dates / datetimes, otherwise name the first bad line.
        dt = pd.to_datetime(df[t], errors="coerce", utc=True, format="mixed")
        if dt.isna().any():
            row = int(np.flatnonzero(dt.isna().to_numpy())[0])
            raise DataError(
                f"{path}, line {row + 2}: timestamp {df[t].iloc[row]!r} in column {t!r} is "
                "neither a number nor a date"
            )
        ts = dt.astype("int64")
    # Users in order of first appearance; within a user, by time, ties in file order.
    codes, uniques = pd.factorize(df[u].str.strip())
    order = np.lexsort((np.arange(len(df)), ts.to_numpy(), codes))
    items_sorted = df[i].str.strip().to_numpy()[order]
    counts = np.bincount(codes, minlength=len(uniques))
    bounds = np.r_[0, np.cumsum(counts)]
    users = [str(x) for x in uniques]
    seqs = [list(items_sorted[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return _build(str(path), users, seqs)


def read_dataset(path: str | Path, **table_options) -> SequenceData:
    """Read a dataset file, choosing the reader from the extension.

    ``.csv``, ``.tsv`` and ``.inter`` are interaction tables; anything else (``.txt``) is a
    sequence file.
    """
    suffix = Path(path).suffix.lower()
    if suffix in {".csv", ".tsv", ".inter"}:
        return read_interaction_table(path, **table_options)
    return read_sequence_file(path)
