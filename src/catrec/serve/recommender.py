"""Recommendations from a trained run folder, with raw item ids in and out.

A :class:`Recommender` needs only the run folder: ``config.yaml``, ``items.json`` (raw id of each
item index), ``popularity.json`` (training counts, for the fallback), ``run.json`` and the
checkpoint. Histories are turned into the left-padded ``[B, L]`` windows the evaluator uses and
scored by :func:`catrec.evaluate.score_users` (the model contract plus the evaluator's padding and
history masks), then ranked by :func:`catrec.fullrank.top_k`; so a test user's input history gets
exactly the ranking ``catrec evaluate`` scores.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from catrec import __version__
from catrec.config import Config
from catrec.errors import CatrecError, DataError, RunError
from catrec.evaluate import score_users
from catrec.fullrank import top_k
from catrec.models.base import SequentialRecommender
from catrec.run import load_run_config, load_weights, read_json
from catrec.utils import atomic_write_json

CHECKPOINTS = ("best", "last")
_NAMED = 10  # unknown ids named in one warning or error


class UnknownItemError(CatrecError):
    """A history holds raw item ids that are not items of the run (with ``strict=True``)."""


class Recommendations(list):
    """``[(item_id, score), ...]``, best first, plus how the list was made.

    Attributes:
        fallback: True when no history item was known, so the list holds the most popular
            training items and the scores are their training counts, not model scores.
        unknown: raw ids of the history that are not items of the run (they were dropped).
        n_used: history items the model saw (the most recent ``max_len`` known ones).
    """

    def __init__(
        self,
        pairs: Iterable[tuple[str, float]] = (),
        *,
        fallback: bool = False,
        unknown: Sequence[str] = (),
        n_used: int = 0,
    ) -> None:
        super().__init__(pairs)
        self.fallback = fallback
        self.unknown = list(unknown)
        self.n_used = n_used

    @property
    def items(self) -> list[str]:
        """The raw item ids, best first."""
        return [item for item, _ in self]

    @property
    def scores(self) -> list[float]:
        """The scores, in the order of :attr:`items`."""
        return [score for _, score in self]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"items", "scores", "fallback", "unknown"}``."""
        return {
            "items": self.items,
            "scores": self.scores,
            "fallback": self.fallback,
            "unknown": self.unknown,
        }


def _named(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_NAMED])
    return shown + (f" (and {len(ids) - _NAMED} more)" if len(ids) > _NAMED else "")


class Recommender:
    """A trained model that ranks all items for histories of raw item ids.

    Args:
        model: the trained model (put in eval mode here).
        item_tokens: ``[n_items + 1]`` raw id of each item index; index 0 is padding.
        popularity: ``[n_items + 1]`` training count of each item index (the fallback ranking).
        info: provenance shown by ``GET /info`` (model, dataset, hashes, commit).
        batch_size: histories per forward pass in :meth:`recommend_batch`.
    """

    def __init__(
        self,
        model: SequentialRecommender,
        item_tokens: Sequence[str],
        popularity: np.ndarray,
        *,
        info: dict[str, Any] | None = None,
        batch_size: int = 256,
    ) -> None:
        if len(item_tokens) != model.n_items + 1 or len(popularity) != model.n_items + 1:
            raise ValueError(
                f"{len(item_tokens)} item ids and {len(popularity)} counts for a model of "
                f"{model.n_items} items (+1 padding)"
            )
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.item_tokens = [str(t) for t in item_tokens]
        self.index = {t: i for i, t in enumerate(self.item_tokens) if i > 0}
        self.popularity = np.asarray(popularity, dtype=np.int64)
        # most popular first, ties by item index (padding never listed)
        self._popular = np.argsort(-self.popularity[1:], kind="stable") + 1
        self.info = dict(info or {})
        self.batch_size = batch_size

    @property
    def n_items(self) -> int:
        """The number of items the model ranks (padding excluded)."""
        return self.model.n_items

    @property
    def max_len(self) -> int:
        """L: a history keeps its most recent L known items."""
        return self.model.max_len

    def encode(
        self,
        histories: Sequence[Sequence[str | int]],
        *,
        strict: bool = False,
        warn: bool = True,
        stacklevel: int = 2,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Left-padded item windows ``[B, L]`` (int64) and each history's unknown raw ids.

        Raw ids may be given as ``str`` or ``int`` (``int`` is read as its decimal text). Unknown
        ids are dropped (with a warning naming them when ``warn``); each row keeps the most recent
        ``L`` known items, the most recent in the last column (as the evaluator's inputs).

        Raises:
            UnknownItemError: ``strict`` and some id is not an item of the run.
            TypeError: a history is a string or holds something other than ``str`` / ``int``.
        """
        L = self.max_len
        out = np.zeros((len(histories), L), dtype=np.int64)
        unknown: list[list[str]] = []
        for row, history in enumerate(histories):
            if isinstance(history, str | bytes) or not isinstance(history, Sequence):
                raise TypeError(
                    f"history {row}: expected a list of raw item ids, got {type(history).__name__}"
                )
            ids, missing = [], []
            for item in history:
                if isinstance(item, bool) or not isinstance(item, str | int):
                    raise TypeError(
                        f"history {row}: item ids are strings (or integers), got "
                        f"{type(item).__name__} {item!r}"
                    )
                token = str(item)
                index = self.index.get(token)
                if index is None:
                    missing.append(token)
                else:
                    ids.append(index)
            ids = ids[-L:]
            if ids:
                out[row, L - len(ids) :] = ids
            unknown.append(missing)
        bad = [t for m in unknown for t in m]
        if bad and strict:
            raise UnknownItemError(f"unknown item ids (not items of this run): {_named(bad)}")
        if bad and warn:
            warnings.warn(
                f"dropped {len(bad)} unknown item ids (not items of this run): {_named(bad)}",
                stacklevel=stacklevel,
            )
        return out, unknown

    def unknown_ids(self, history: Iterable[str | int]) -> list[str]:
        """The raw ids of ``history`` that are not items of the run, in order."""
        return [str(t) for t in history if str(t) not in self.index]

    @torch.no_grad()
    def score(self, windows: np.ndarray, exclude_history: bool = True) -> torch.Tensor:
        """Masked next-item scores ``[B, n_items + 1]`` (CPU) for windows ``[B, L]``.

        Exactly the evaluator's scores (:func:`catrec.evaluate.score_users`): padding (column 0)
        and, with ``exclude_history``, the window's items are ``-inf``.

        Raises:
            catrec.metrics.ranking.NumericalError: the model produced NaN scores (at ranking).
        """
        x = torch.as_tensor(windows, device=self.device)
        return score_users(self.model, x, exclude_history).cpu()

    def recommend_batch(
        self,
        histories: Sequence[Sequence[str | int]],
        k: int = 10,
        *,
        exclude_history: bool = True,
        strict: bool = False,
        warn: bool = True,
        stacklevel: int = 2,
    ) -> list[Recommendations]:
        """Top-``k`` raw item ids with their scores for each history (chronological raw ids).

        Histories are scored ``batch_size`` at a time, shortest first (as the evaluator does).
        ``warn`` and ``stacklevel`` control the warning that names dropped unknown ids.
        A history with no known item gets the ``k`` most popular training items, flagged as
        ``fallback``. A list is shorter than ``k`` only when fewer items are left unmasked.

        Raises:
            ValueError: ``k < 1``.
            UnknownItemError: ``strict`` and some id is not an item of the run.
            TypeError: a history is not a list of ``str`` / ``int`` ids.
            catrec.metrics.ranking.NumericalError: the model produced NaN scores.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        windows, unknown = self.encode(
            histories, strict=strict, warn=warn, stacklevel=stacklevel + 1
        )
        lengths = (windows > 0).sum(axis=1)
        out: list[Recommendations | None] = [None] * len(histories)
        for row in np.flatnonzero(lengths == 0):
            top = self._popular[:k]
            counts = self.popularity[top].astype(float).tolist()
            pairs = zip((self.item_tokens[i] for i in top), counts, strict=True)
            out[row] = Recommendations(pairs, fallback=True, unknown=unknown[row])
        rows = np.flatnonzero(lengths > 0)
        rows = rows[np.argsort(lengths[rows], kind="stable")]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            ids, values = top_k(self.score(windows[chunk], exclude_history), k)
            for r, row_ids, row_values in zip(chunk, ids.tolist(), values.tolist(), strict=True):
                pairs = [
                    (self.item_tokens[i], v)
                    for i, v in zip(row_ids, row_values, strict=True)
                    if v != float("-inf")
                ]
                out[r] = Recommendations(pairs, unknown=unknown[r], n_used=int(lengths[r]))
        return out  # type: ignore[return-value]

    def recommend(
        self,
        history: Sequence[str | int],
        k: int = 10,
        exclude_history: bool = True,
        *,
        strict: bool = False,
    ) -> Recommendations:
        """Top-``k`` ``[(item_id, score), ...]`` for one chronological history of raw ids.

        See :meth:`recommend_batch` for fallback, truncation and errors.
        """
        return self.recommend_batch(
            [history], k, exclude_history=exclude_history, strict=strict, stacklevel=3
        )[0]


def _popularity(run_dir: Path, config: Config, n_items: int, meta: dict[str, Any]) -> np.ndarray:
    """``RUN_DIR/popularity.json``; for older runs computed from the dataset and stored.

    Raises:
        RunError: the file is missing and the dataset cannot be read, or the file is malformed.
    """
    path = run_dir / "popularity.json"
    if path.exists():
        counts = read_json(path, list)
        if len(counts) != n_items + 1 or not all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts
        ):
            raise RunError(f"{path}: expected {n_items + 1} non-negative integer counts")
        return np.asarray(counts, dtype=np.int64)
    from catrec.data import leave_one_out, read_dataset, resolve_dataset, training_popularity
    from catrec.train.loop import check_dataset

    try:
        split = leave_one_out(
            read_dataset(resolve_dataset(config.dataset, allow_download=False)), config.max_len
        )
    except DataError as exc:
        raise RunError(
            f"{run_dir}: no popularity.json (runs of catrec before serving existed lack it) and "
            f"the run's dataset cannot be read to compute it: {exc}. Make the dataset available "
            "once (e.g. set CATREC_DATA_DIR) and load the run again: the counts are then saved "
            "in the run folder"
        ) from exc
    check_dataset(meta, split, run_dir)
    if split.n_items != n_items:
        raise RunError(f"{run_dir}: the dataset has {split.n_items} items, the run {n_items}")
    counts = training_popularity(split)
    try:
        atomic_write_json(path, counts.tolist())
    except OSError as exc:  # a read-only run folder still serves
        warnings.warn(f"{path}: could not save the computed counts ({exc})", stacklevel=3)
    return counts


def load(
    run_dir: str | Path,
    checkpoint: str = "best",
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
) -> Recommender:
    """A :class:`Recommender` for the run folder ``run_dir`` (its ``best.pt`` or ``last.pt``).

    Needs no dataset file, except once for runs written before ``popularity.json`` existed.

    Raises:
        ValueError: ``checkpoint`` is not ``"best"`` or ``"last"``.
        RunError: not a run folder, or a missing, corrupted or incompatible file in it.
        ConfigError: the stored config is invalid.
    """
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    meta = read_json(run_dir / "run.json", dict) if (run_dir / "run.json").exists() else {}
    tokens = read_json(run_dir / "items.json", list)
    if len(tokens) < 2:
        raise RunError(f"{run_dir / 'items.json'}: no items")
    n_items = len(tokens) - 1
    model = load_weights(run_dir, config, n_items, meta, f"{checkpoint}.pt")
    info = {
        "run_dir": str(run_dir.resolve()),
        "checkpoint": f"{checkpoint}.pt",
        "model": config.model,
        "mode": config.mode,
        "seed": config.seed,
        "dataset": config.dataset,
        "dataset_sha256": meta.get("dataset_sha256"),
        "git_commit": meta.get("git_commit"),
        "best_epoch": meta.get("best_epoch"),
        "n_items": n_items,
        "max_len": config.max_len,
        "mask_history": config.mask_history,
        "catrec_version": __version__,
    }
    return Recommender(
        model.to(device),
        tokens,
        _popularity(run_dir, config, n_items, meta),
        info=info,
        batch_size=batch_size,
    )
