"""Replacement plans: which columns of each test input are replaced, and with which drawn item.

What each position and replacement kind means is in :mod:`catrec.robustness`. A plan depends only
on the test split, the seed and the settings (each setting draws from its own stream), and is saved
as ``.npz`` so that every model compared is attacked the same way.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catrec.data import SplitData, training_popularity
from catrec.errors import ConfigError, RunError
from catrec.utils import atomic_write_bytes, sha256_arrays

POSITIONS = ("first", "middle", "last", "random")
REPLACEMENTS = ("random", "popular", "adversarial")
# Stable codes that seed each setting's random stream (never reorder).
_POSITION_CODE = {"first": 1, "middle": 2, "last": 3, "random": 4}
_REPLACEMENT_CODE = {"random": 1, "popular": 2, "adversarial": 3}
PLAN_FORMAT = 1


@dataclass(frozen=True)
class Setting:
    """One robustness setting: which position(s), how many (k), and which replacement items."""

    position: str
    replacement: str
    k: int = 1

    def __post_init__(self) -> None:
        if self.position not in POSITIONS:
            raise ConfigError(
                f"unknown position {self.position!r} (choose from {', '.join(POSITIONS)})"
            )
        if self.replacement not in REPLACEMENTS:
            raise ConfigError(
                f"unknown replacement {self.replacement!r} (choose from {', '.join(REPLACEMENTS)})"
            )
        if not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(
                f"k (number of replaced items) must be an integer >= 1, got {self.k!r}"
            )

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.position, self.replacement, self.k)


def settings_grid(
    positions: Iterable[str], replacements: Iterable[str], k: int = 1
) -> list[Setting]:
    """Every (position, replacement) pair for one k, in the given order.

    Raises:
        ConfigError: a position or replacement given twice (it would be computed twice).
    """
    positions, replacements = list(positions), list(replacements)
    for what, names in (("position", positions), ("replacement", replacements)):
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(
                f"{what} {', '.join(map(repr, twice))} given more than once; give each once"
            )
    return [Setting(pos, rep, k) for rep in replacements for pos in positions]


# --------------------------------------------------------------------------- positions and items
def real_lengths(inputs: np.ndarray) -> np.ndarray:
    """Number of real (non-padding) items of each left-padded row of ``inputs [U, L]``: ``[U]``."""
    return (inputs > 0).sum(axis=1)


def select_columns(
    inputs: np.ndarray, position: str, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Columns of ``inputs [U, L]`` to replace: ``[U, k]`` int64 ascending, ``-1`` for skipped rows.

    See the module docstring for what each position means; rows with fewer than ``k`` real items
    are skipped. ``rng`` is only used by ``random``.
    """
    U, L = inputs.shape
    n = real_lengths(inputs)  # [U]
    start = L - n  # column of the oldest real item
    if position == "first":
        offset = np.zeros(U, dtype=np.int64)
    elif position == "last":
        offset = n - k
    elif position == "middle":
        offset = np.clip(n // 2 - k // 2, 0, np.maximum(n - k, 0))
    elif position == "random":
        # k distinct real columns, uniformly: the k smallest of uniform keys over real columns.
        keys = rng.random((U, L))
        keys[inputs <= 0] = np.inf
        cols = np.sort(np.argsort(keys, axis=1, kind="stable")[:, :k], axis=1)
        return np.where((n >= k)[:, None], cols, -1).astype(np.int64)
    else:
        raise ConfigError(f"unknown position {position!r} (choose from {', '.join(POSITIONS)})")
    cols = (start + offset)[:, None] + np.arange(k)[None, :]  # [U, k]
    return np.where((n >= k)[:, None], cols, -1).astype(np.int64)


def _sample_excluding(
    rng: np.random.Generator,
    forbid: np.ndarray,
    k: int,
    n_items: int,
    weights: np.ndarray | None,
    max_rounds: int = 100,
) -> np.ndarray:
    """k distinct items per row, none in ``forbid [R, F]``: ``[R, k]`` (0 where none is left).

    Uniform over ``1..n_items`` when ``weights`` is None, else proportional to ``weights
    [n_items + 1]`` (zero-weight items are never drawn). Vectorised rejection sampling (clashes
    are rare: a row forbids at most ``max_len + 1 + k`` items), then an exact per-row draw for the
    few rows still clashing.
    """
    R = forbid.shape[0]
    if weights is None:
        prob = None

        def draw(m: int) -> np.ndarray:
            return rng.integers(1, n_items + 1, size=m)
    else:
        prob = weights[1:].astype(np.float64) / weights[1:].sum()

        def draw(m: int) -> np.ndarray:
            return rng.choice(n_items, size=m, p=prob) + 1

    out = np.zeros((R, k), dtype=np.int64)
    for j in range(k):
        ban = np.concatenate([forbid, out[:, :j]], axis=1)  # [R, F + j]
        item = draw(R)
        bad = (item[:, None] == ban).any(axis=1)
        for _ in range(max_rounds):
            if not bad.any():
                break
            idx = np.flatnonzero(bad)
            item[idx] = draw(len(idx))
            bad[idx] = (item[idx, None] == ban[idx]).any(axis=1)
        for i in np.flatnonzero(bad):  # exact fallback: rows whose admissible set is tiny
            allowed = np.setdiff1d(np.arange(1, n_items + 1), ban[i])
            if prob is not None:
                allowed = allowed[weights[allowed] > 0]
            if len(allowed) == 0:
                item[i] = 0
                continue
            w = None if prob is None else weights[allowed] / weights[allowed].sum()
            item[i] = rng.choice(allowed, p=w)
        out[:, j] = item
    out[(out == 0).any(axis=1)] = 0  # a row without k admissible items is skipped as a whole
    return out


def draw_replacements(
    inputs: np.ndarray,
    targets: np.ndarray,
    columns: np.ndarray,
    n_items: int,
    replacement: str,
    rng: np.random.Generator,
    popularity: np.ndarray | None = None,
) -> np.ndarray:
    """Replacement items ``[U, k]`` for ``random`` or ``popular`` (0 in skipped rows).

    Excluded for each user: padding, every item of its input sequence, its test target, and the
    replacements already drawn for it.
    """
    if replacement not in ("random", "popular"):
        raise ValueError(f"{replacement!r} items are not drawn from a seed (see adversarial_items)")
    if replacement == "popular" and popularity is None:
        raise ValueError("popular replacement needs item popularity")
    U, k = columns.shape
    out = np.zeros((U, k), dtype=np.int64)
    rows = np.flatnonzero(columns[:, 0] >= 0)
    forbid = np.concatenate([inputs[rows], targets[rows, None]], axis=1)
    weights = popularity if replacement == "popular" else None
    out[rows] = _sample_excluding(rng, forbid, k, n_items, weights)
    return out


def data_fingerprint(inputs: np.ndarray, targets: np.ndarray, n_items: int) -> str:
    """Short hash of the test inputs, targets and item count: a plan only fits the data it was
    drawn for."""
    return sha256_arrays(inputs, targets, extra=str(n_items).encode())[:16]


@dataclass
class ReplacementPlan:
    """Which columns each test user gets replaced, and with which item, per setting.

    Attributes:
        seed: the plan seed.
        fingerprint: :func:`data_fingerprint` of the test split it was drawn for.
        n_items: catalogue size.
        columns: ``(position, k) -> [U, k]`` columns, ``-1`` for skipped users.
        items: ``(position, k, replacement) -> [U, k]`` items for ``random`` / ``popular``, 0 for
            skipped users (adversarial items depend on the model and are not part of the plan).
    """

    seed: int
    fingerprint: str
    n_items: int
    columns: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    items: dict[tuple[str, int, str], np.ndarray] = field(default_factory=dict)

    @classmethod
    def empty(cls, split: SplitData, seed: int) -> ReplacementPlan:
        fp = data_fingerprint(split.test_inputs, split.test_targets, split.n_items)
        return cls(seed=seed, fingerprint=fp, n_items=split.n_items)

    def check_fits(self, split: SplitData, source: str = "plan") -> None:
        """Raise :class:`RunError` unless the plan was drawn for this test data and is intact."""
        fp = data_fingerprint(split.test_inputs, split.test_targets, split.n_items)
        if fp != self.fingerprint or self.n_items != split.n_items:
            raise RunError(
                f"{source} was drawn for other test data (fingerprint {self.fingerprint}, this "
                f"run's data {fp}): a different dataset or max_len; use another plan file "
                "(robustness: --plan; compare: another --out)"
            )
        n_users, width = split.test_inputs.shape
        for key, a in self.columns.items():
            if (
                a.ndim != 2
                or len(a) != n_users
                or a.shape[1] != key[1]
                or a.max(initial=-1) >= width
            ):
                raise RunError(f"{source}: columns for {key} do not fit the test inputs")
        for key, a in self.items.items():
            if (
                a.ndim != 2
                or len(a) != n_users
                or a.min(initial=0) < 0
                or a.max(initial=0) > self.n_items
            ):
                raise RunError(f"{source}: replacement items for {key} are out of range")

    def ensure(
        self,
        split: SplitData,
        settings: Iterable[Setting],
        popularity: np.ndarray | None = None,
    ) -> bool:
        """Draw whatever ``settings`` need and the plan lacks; returns True if anything was added.

        Each setting has its own stream ``(seed, position, k[, replacement])``, so the result does
        not depend on which settings were drawn before.
        """
        self.check_fits(split)
        added = False
        for s in settings:
            ck = (s.position, s.k)
            if ck not in self.columns:
                rng = np.random.default_rng([self.seed, _POSITION_CODE[s.position], s.k])
                self.columns[ck] = select_columns(split.test_inputs, s.position, s.k, rng)
                added = True
            ik = (s.position, s.k, s.replacement)
            if s.replacement != "adversarial" and ik not in self.items:
                if s.replacement == "popular" and popularity is None:
                    popularity = training_popularity(split)
                rng = np.random.default_rng(
                    [self.seed, _POSITION_CODE[s.position], s.k, _REPLACEMENT_CODE[s.replacement]]
                )
                self.items[ik] = draw_replacements(
                    split.test_inputs,
                    split.test_targets,
                    self.columns[ck],
                    split.n_items,
                    s.replacement,
                    rng,
                    popularity,
                )
                added = True
        return added

    def setting_sha256(self, s: Setting) -> str:
        """Hash of what the plan fixes for ``s`` (columns, and items unless adversarial)."""
        cols = self.columns[(s.position, s.k)]
        if s.replacement == "adversarial":
            return sha256_arrays(cols)[:16]
        return sha256_arrays(cols, self.items[(s.position, s.k, s.replacement)])[:16]

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Write the plan as ``.npz`` (atomically)."""
        arrays: dict[str, np.ndarray] = {}
        for (pos, k), cols in self.columns.items():
            arrays[f"columns__{pos}__{k}"] = cols
        for (pos, k, rep), items in self.items.items():
            arrays[f"items__{pos}__{k}__{rep}"] = items
        meta = {
            "format": PLAN_FORMAT,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
            "n_items": self.n_items,
        }
        arrays["meta"] = np.array(json.dumps(meta))
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> ReplacementPlan:
        """Read a plan written by :meth:`save`.

        Raises:
            RunError: missing, unreadable or not a catrec plan.
        """
        path = Path(path)
        try:
            # our own handle: np.load leaves its file open when the zip is unreadable
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {name: z[name] for name in z.files if name != "meta"}
            if not isinstance(meta, dict) or meta.get("format") != PLAN_FORMAT:
                raise RunError(f"{path}: not a catrec replacement plan of format {PLAN_FORMAT}")
            plan = cls(
                seed=int(meta["seed"]),
                fingerprint=str(meta["fingerprint"]),
                n_items=int(meta["n_items"]),
            )
            for name, a in arrays.items():
                parts = name.split("__")
                if parts[0] == "columns":
                    plan.columns[(parts[1], int(parts[2]))] = a.astype(np.int64)
                elif parts[0] == "items":
                    plan.items[(parts[1], int(parts[2]), parts[3])] = a.astype(np.int64)
                else:
                    raise ValueError(f"unexpected array {name!r}")
        except FileNotFoundError as exc:
            raise RunError(f"{path}: plan file missing") from exc
        except RunError:
            raise
        except Exception as exc:  # any corruption: truncated zip, wrong keys, types, names
            raise RunError(f"{path}: not a readable catrec replacement plan ({exc})") from exc
        return plan


def load_or_draw_plan(
    path: str | Path, split: SplitData, seed: int, settings: Sequence[Setting]
) -> ReplacementPlan:
    """The plan in ``path`` (extended with missing settings and re-saved), or a new one.

    Raises:
        RunError: the file holds a plan for another seed or other test data.
    """
    path = Path(path)
    if path.exists():
        plan = ReplacementPlan.load(path)
        if plan.seed != seed:
            raise RunError(
                f"{path}: plan was drawn with seed {plan.seed}, not {seed}; use --seed "
                f"{plan.seed} or another plan file"
            )
        plan.check_fits(split, str(path))
    else:
        plan = ReplacementPlan.empty(split, seed)
    if plan.ensure(split, settings) or not path.exists():
        plan.save(path)
    return plan
