"""Recommendations for a JSON Lines file of histories, streamed in batches.

In: one object per line, ``{"user": ..., "history": ["i1", "i2", ...]}`` (``user`` optional, any
JSON value, copied through; blank lines are skipped). Out: one object per input line,
``{"user": ..., "items": [...], "scores": [...], "fallback": false, "unknown": [...]}``.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from tqdm.auto import tqdm

from catrec.errors import DataError
from catrec.serve.recommender import Recommender
from catrec.utils import DuplicateKeyError, atomic_open, no_duplicate_keys


def _parse(line: bytes, where: str) -> tuple[Any, list[str | int]]:
    try:
        obj = json.loads(line, object_pairs_hook=no_duplicate_keys)
    except DuplicateKeyError as exc:
        raise DataError(f"{where}: key {exc.args[0]!r} given twice") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    extra = set(obj) - {"user", "history"}
    if extra:
        raise DataError(f"{where}: unknown keys {sorted(extra)} (expected 'user' and 'history')")
    history = obj.get("history")
    if not isinstance(history, list):
        raise DataError(
            f"{where}: 'history' must be a list of item ids, got {type(history).__name__}"
        )
    for item in history:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise DataError(
                f"{where}: item ids are strings (or integers), got {type(item).__name__} {item!r}"
            )
    return obj.get("user"), history


def read_histories(path: Path, fh: BinaryIO, bar: tqdm) -> Iterator[tuple[str, Any, list]]:
    """``(where, user, history)`` per non-blank line; ``where`` is ``"FILE, line N"``.

    Raises:
        DataError: a line that is not a JSON object with a list ``history`` of str / int ids.
    """
    for n, line in enumerate(fh, start=1):
        bar.update(len(line))
        if line.strip():
            where = f"{path}, line {n}"
            yield (where, *_parse(line, where))


def recommend_file(
    recommender: Recommender,
    input_path: str | Path,
    output_path: str | Path | None,
    k: int = 10,
    *,
    exclude_history: bool = True,
    strict: bool = False,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, int]:
    """Stream ``input_path`` through ``recommender`` into ``output_path`` (stdout if None).

    The output file is written atomically (it appears complete or not at all).

    Returns:
        counts: ``{"histories", "fallback", "unknown_ids"}``.

    Raises:
        DataError: a malformed line, or (``strict``) an unknown item id; the message names the
            file and line number.
        FileNotFoundError: no input file.
    """
    input_path = Path(input_path)
    if not input_path.is_file():
        raise DataError(f"{input_path}: no such file (the --input JSON Lines of histories)")
    if output_path is not None and Path(output_path).resolve() == input_path.resolve():
        raise DataError(f"{output_path}: --output is the --input file; write to another file")
    counts = {"histories": 0, "fallback": 0, "unknown_ids": 0}
    first_unknown: list[str] = []

    def flush(batch: list[tuple[str, Any, list]], out: BinaryIO) -> None:
        recs = recommender.recommend_batch(
            [h for _, _, h in batch], k, exclude_history=exclude_history, warn=False
        )
        lines = []
        for (where, user, _), r in zip(batch, recs, strict=True):
            if r.unknown and strict:
                raise DataError(f"{where}: unknown item ids {r.unknown[:10]}")
            counts["unknown_ids"] += len(r.unknown)
            first_unknown.extend(r.unknown[: 10 - len(first_unknown)])
            counts["fallback"] += r.fallback
            row = {"user": user, **r.to_dict()}
            lines.append(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        out.write("".join(lines).encode("utf-8"))
        counts["histories"] += len(batch)

    def run(out: BinaryIO) -> None:
        size = os.path.getsize(input_path)
        with (
            open(input_path, "rb") as fh,
            tqdm(
                total=size,
                unit="B",
                unit_scale=True,
                desc="recommend",
                disable=not progress,
                mininterval=0.5,
            ) as bar,
        ):
            batch: list[tuple[str, Any, list]] = []
            for record in read_histories(input_path, fh, bar):
                batch.append(record)
                if len(batch) == batch_size:
                    flush(batch, out)
                    batch = []
            if batch:
                flush(batch, out)

    if output_path is None:
        run(sys.stdout.buffer)
        sys.stdout.flush()
    else:
        with atomic_open(output_path) as out:
            run(out)
    if counts["unknown_ids"]:
        warnings.warn(
            f"{input_path}: dropped {counts['unknown_ids']} unknown item ids (not items of this "
            f"run), e.g. {first_unknown}",
            stacklevel=2,
        )
    return counts
