"""Robustness to item replacement in the test inputs (CAT.md §4; Tan et al., SDM 2024, §5).

For each test user, one (or k) item(s) of the left-padded input sequence is replaced, and the
model's clean and perturbed outputs are compared: HR@K / NDCG@K and their relative drop, and the
similarity of the clean and perturbed top-K lists (Jaccard@K and finite RBO@K, see
:mod:`catrec.metrics.stability`), averaged over users with a 95% bootstrap interval.

Which positions (``n`` = number of real items of the input, real index 0 = oldest):

- ``first``: the oldest item of the input window (index 0); users with more than ``max_len``
  interactions have older items that the model never sees.
- ``middle``: index ``n // 2`` (for even ``n`` the later of the two central items).
- ``last``: the most recent item (index ``n - 1``).
- ``random``: an index drawn uniformly from ``0..n-1`` with the plan's seed.

With ``k > 1`` each position names a group of k real items: ``first`` the k oldest, ``last`` the
k most recent (the "k most recent positions"), ``middle`` the k consecutive items starting at
``clip(n // 2 - k // 2, 0, n - k)``, ``random`` k distinct indices drawn uniformly. A user with
``n < k`` real items cannot be perturbed as asked and is *skipped*: counted in ``n_skipped`` and
left out of every metric of that setting (clean and perturbed alike). With ``k = 1`` nobody is
skipped for length (every test input has at least one item); for ``n = 1`` first, middle and last
are the same item, by design.

Which replacement items (never padding, never an item of the user's input sequence, so never the
replaced item itself, and distinct among the k replacements):

- ``random``: uniform over the items not excluded.
- ``popular``: weighted by training popularity (occurrences in the training parts of all users,
  validation and test targets excluded); items never seen in training are never drawn.
- ``adversarial``: white-box, first order. With ``g = dL/de_t``, the gradient of the
  cross-entropy of the true test target (full softmax over all items, as in training) with
  respect to the input embedding at the replaced position, the gain of item ``j`` is
  ``g · (E_j - E_current)``; the item with the largest gain is chosen. For k > 1 the gradients
  of all k positions come from one clean pass and items are picked greedily, position by
  position (oldest first), each distinct from the ones already picked.

The test target itself is excluded too, for all three kinds: with history masking (the default),
inserting the target into the input would make it a forced miss, an artefact of the evaluation's
mask rather than a change of the model's ranking (an adversary could exploit the mask that way).
Users with no admissible replacement item (only on toy catalogues) are skipped as well.

Bidirectional models (BERT4Rec) predict from the history plus an appended mask token, which drops
the oldest item of a history already ``max_len`` long: replacing that item changes nothing, so
``first`` measures RBO 1 for those users (their adversarial gain is 0 everywhere).

The plan (columns and random / popular replacement items) depends only on the test split, the
seed and the settings: each setting draws from its own stream ``(seed, position, k[,
replacement])``, so a plan extended with new settings equals one drawn with all settings at once.
It is saved (``.npz``) next to the results and loaded by every model compared; adversarial items
depend on the model and are saved in the run folder.

Top-K lists come from the masked full-ranking scores (``mask_history`` as in the run's config):
the clean list masks the clean history, the perturbed list the perturbed one, so the inserted
item can never appear in the perturbed list and the removed item may now appear in it.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm.auto import tqdm

from catrec.data import SplitData
from catrec.errors import ConfigError, RunError
from catrec.evaluate import score_users
from catrec.fullrank import SCORE_BUDGET, chunk_bounds, chunked_ranks, plan_chunks, table_absmax
from catrec.metrics.ranking import hit_rate, ndcg, ranks_from_scores
from catrec.metrics.stability import (
    bootstrap_means,
    jaccard_at_k,
    percentile_interval,
    rbo_at_k,
)
from catrec.models.base import SequentialRecommender, trim_padding
from catrec.train.softmax_ce import full_softmax_ce
from catrec.utils import atomic_write_bytes, atomic_write_json, git_commit, sha256_arrays

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
    """Every (position, replacement) pair for one k, in the given order."""
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


def training_popularity(split: SplitData) -> np.ndarray:
    """Occurrences of each item in all users' training parts, ``[n_items + 1]`` (0 for padding).

    The training part of a user is the whole sequence but its last two items (validation and test
    targets), not only the ``max_len + 1`` most recent items kept in ``split.train_seq``.
    """
    data = split.data
    lengths = data.lengths
    pos = np.arange(data.n_interactions) - np.repeat(data.offsets[:-1], lengths)
    keep = pos < np.repeat(lengths - 2, lengths)
    counts = np.bincount(data.items[keep], minlength=split.n_items + 1).astype(np.int64)
    counts[0] = 0
    return counts


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
            with np.load(path, allow_pickle=False) as z:
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


# --------------------------------------------------------------------------- model passes
def _batches(inputs: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row batches in order of sequence length, so that each batch trims most of its padding."""
    order = np.argsort(real_lengths(inputs), kind="stable")
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def _replacement_gradients(
    model: SequentialRecommender, x: Tensor, y: Tensor, columns: Tensor, chunked: bool = False
) -> tuple[Tensor, Tensor]:
    """``g [B, k, d]`` (loss gradient at each replaced column, 0 where the input drops it) and
    ``current [B, k, d]`` (embeddings of the items there); see :func:`replacement_gains`.

    ``chunked`` computes the cross-entropy with :func:`catrec.train.softmax_ce.full_softmax_ce`
    (a few rows of ``[rows, n_items]`` logits at a time) instead of ``[B, n_items]`` logits.
    """
    n_rows = model.n_items + 1
    ids = model.prediction_input(x)  # [B, W']
    kept = ids.shape[1] - (0 if model.mask_token is None else 1)  # x columns kept, at the front
    offset = x.shape[1] - kept  # x column c is ids column c - offset
    table = model.item_table().detach()
    with torch.enable_grad():
        e = model.embed(ids, table).requires_grad_(True)  # [B, W', d]
        h = model.encode(e, ids > 0)[:, -1]  # [B, d]
        if chunked:
            loss = full_softmax_ce(h, table[1:n_rows], y - 1) * len(y)
        else:
            logits = model.score(h, table)[:, 1:n_rows]  # [B, n_items]; padding is no candidate
            loss = F.cross_entropy(logits, y - 1, reduction="sum")
        (grad,) = torch.autograd.grad(loss, e)  # [B, W', d]
    B = x.shape[0]
    arange = torch.arange(B, device=x.device)[:, None]  # [B, 1]
    c_ids = columns - offset  # [B, k]
    reached = c_ids >= 0
    g = grad[arange, c_ids.clamp(min=0)] * reached[..., None]  # [B, k, d]
    current = table[:n_rows][x[arange, columns]]  # [B, k, d] embeddings of the replaced items
    return g, current


def replacement_gains(
    model: SequentialRecommender, x: Tensor, y: Tensor, columns: Tensor
) -> Tensor:
    """First-order loss gains ``[B, k, n_items + 1]`` of putting item j at each replaced column.

    ``gain[b, i, j] = g · (E_j - E_{x[b, c]})`` with ``c = columns[b, i]`` and
    ``g = d CE(score(h_last), y[b]) / d e_c`` on the clean input ``x [B, W]`` (left-padded; the
    cross-entropy is the full softmax over items 1..n_items, as in training). Rows are independent
    (the loss is summed, so each row's gradient is its own). The model should be in eval mode.

    Bidirectional models predict from ``model.prediction_input(x)``: the ``x`` columns it keeps
    followed by one mask token. A column that input drops (the oldest item of a history already
    ``max_len`` long) cannot change the prediction: its gradient and gains are 0.
    """
    g, current = _replacement_gradients(model, x, y, columns)
    items_table = model.item_table().detach()[: model.n_items + 1]  # [n_items + 1, d]
    return g @ items_table.T - (g * current).sum(-1, keepdim=True)  # [B, k, n_items + 1]


def _best_items_chunked(
    model: SequentialRecommender, g: Tensor, current: Tensor, banned_ids: Tensor, width: int
) -> Tensor:
    """Greedy adversarial picks ``[B, k]`` (0 where nothing is admissible), ``width`` items at a
    time: for each column in turn, the first item of largest gain (as ``argmax``) among those not
    in ``banned_ids [B, F]`` (padding, history, target) and not picked for an earlier column."""
    B, k, _ = g.shape
    rows = torch.arange(B, device=g.device)
    flat_rows = rows.repeat_interleave(banned_ids.shape[1])
    picked = torch.zeros(B, k, dtype=torch.int64, device=g.device)
    for j in range(k):
        ban_items = torch.cat([banned_ids, picked[:, :j]], 1).reshape(-1)
        ban_rows = torch.cat([flat_rows, rows.repeat_interleave(j)])
        best_v = torch.full((B,), float("-inf"), device=g.device)
        best_i = torch.zeros(B, dtype=torch.int64, device=g.device)
        base = (g[:, j] * current[:, j]).sum(-1, keepdim=True)  # [B, 1]
        for lo, new, hi in chunk_bounds(model.n_items + 1, width):
            gain = model.score_items(g[:, j], lo, hi) - base  # [B, hi - lo]
            inside = (ban_items >= lo) & (ban_items < hi)
            gain[ban_rows[inside], ban_items[inside] - lo] = float("-inf")
            if lo == 0:
                gain[:, 0] = float("-inf")
            v, i = gain[:, new - lo :].max(dim=1)  # first maximum within the chunk
            better = v > best_v  # strictly: an earlier item keeps a tie
            best_v = torch.where(better, v, best_v)
            best_i = torch.where(better, i + new, best_i)
        picked[:, j] = torch.where(torch.isinf(best_v), 0, best_i)
    return picked


def adversarial_items(
    model: SequentialRecommender,
    inputs: np.ndarray,
    targets: np.ndarray,
    columns: np.ndarray,
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    on_batch: Callable[[], None] | None = None,
    max_scores: int = SCORE_BUDGET,
) -> np.ndarray:
    """First-order adversarial replacement items ``[U, k]`` (0 for skipped rows).

    For each row and replaced column the item with the largest :func:`replacement_gains` among
    real items that are not in the input, not the target and not already picked for this row
    (columns are filled in order, oldest first).

    Args:
        inputs: ``[U, L]`` left-padded test inputs; targets: ``[U]``.
        columns: ``[U, k]`` columns to replace (``-1`` rows are skipped).
        max_scores: most gains (users x items) held at once: beyond ``batch_size x k x
            (n_items + 1)`` the catalogue is searched in chunks (the cross-entropy gradient too),
            with the same picks up to floating-point summation order.
    """
    was_training = model.training
    model.eval()
    U, k = columns.shape
    out = np.zeros((U, k), dtype=np.int64)
    n_rows = model.n_items + 1
    plan = plan_chunks(batch_size, n_rows * k, max_scores)
    chunked = plan.width < n_rows * k
    if chunked:
        plan = plan_chunks(batch_size, n_rows, max_scores)
    try:
        valid = np.flatnonzero(columns[:, 0] >= 0)
        for rows in _batches(inputs[valid], plan.users):
            rows = valid[rows]
            x = trim_padding(torch.as_tensor(inputs[rows], device=device))  # [B, W]
            first = inputs.shape[1] - x.shape[1]  # columns trimmed away (padding everywhere)
            y = torch.as_tensor(targets[rows], device=device)
            cols = torch.as_tensor(columns[rows], device=device) - first  # [B, k]
            if chunked:
                g, current = _replacement_gradients(model, x, y, cols, chunked=True)
                banned = torch.cat([x, y[:, None]], 1)  # [B, W + 1]
                out[rows] = _best_items_chunked(model, g, current, banned, plan.width).cpu().numpy()
                if on_batch is not None:
                    on_batch()
                continue
            gains = replacement_gains(model, x, y, cols)  # [B, k, n_items + 1]
            B = len(rows)
            banned = torch.zeros(B, n_rows, dtype=torch.bool, device=gains.device)
            banned[:, 0] = True
            banned.scatter_(1, x, True)
            banned.scatter_(1, y[:, None], True)
            arange = torch.arange(B, device=gains.device)
            for j in range(k):
                gain = gains[:, j].masked_fill(banned, float("-inf"))  # [B, n_items + 1]
                best = gain.argmax(dim=1)
                best = torch.where(torch.isinf(gain[arange, best]), 0, best)
                banned[arange, best] = True
                out[rows, j] = best.cpu().numpy()
            if on_batch is not None:
                on_batch()
    finally:
        model.train(was_training)
    out[(out == 0).any(axis=1)] = 0
    return out


@torch.no_grad()
def topk_and_ranks(
    model: SequentialRecommender,
    inputs: np.ndarray,
    targets: np.ndarray,
    depth: int,
    *,
    mask_history: bool = True,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    on_batch: Callable[[], None] | None = None,
    max_scores: int = SCORE_BUDGET,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``depth`` item lists ``[U, depth]`` and pessimistic target ranks ``[U]`` by full
    ranking of the masked scores (as :func:`catrec.evaluate.evaluate_ranking`, also for
    ``max_scores``: large catalogues are ranked in chunks, with the same ranks)."""
    was_training = model.training
    model.eval()
    U = len(targets)
    top = np.zeros((U, depth), dtype=np.int64)
    ranks = np.zeros(U, dtype=np.float64)
    n_cols = model.n_items + 1
    plan = plan_chunks(batch_size, n_cols, max_scores)
    absmax = table_absmax(model) if plan.width < n_cols else None
    try:
        for rows in _batches(inputs, plan.users):
            if plan.width < n_cols:
                x = trim_padding(torch.as_tensor(inputs[rows], device=device))
                y = torch.as_tensor(targets[rows], device=device)
                r, t = chunked_ranks(
                    model, x, y, plan.width, mask_history=mask_history, depth=depth, absmax=absmax
                )
                ranks[rows], top[rows] = r.cpu().numpy(), t.cpu().numpy()
                if on_batch is not None:
                    on_batch()
                continue
            x = torch.as_tensor(inputs[rows], device=device)
            scores = score_users(model, x, mask_history)  # [B, n_items + 1]
            ranks[rows] = (
                ranks_from_scores(scores, torch.as_tensor(targets[rows], device=device))
                .cpu()
                .numpy()
            )
            top[rows] = torch.topk(scores, depth, dim=1).indices.cpu().numpy()
            if on_batch is not None:
                on_batch()
    finally:
        model.train(was_training)
    return top, ranks


def apply_replacements(inputs: np.ndarray, columns: np.ndarray, items: np.ndarray) -> np.ndarray:
    """A copy of ``inputs [R, L]`` with ``items [R, k]`` written at ``columns [R, k]``."""
    out = inputs.copy()
    np.put_along_axis(out, columns, items, axis=1)
    return out


# --------------------------------------------------------------------------- metrics of a setting
def setting_metrics(
    clean_top: np.ndarray,
    clean_ranks: np.ndarray,
    pert_top: np.ndarray,
    pert_ranks: np.ndarray,
    *,
    depth: int,
    p: float,
    n_bootstrap: int = 1000,
    bootstrap_seed: int = 0,
) -> dict[str, Any]:
    """Means over users and paired-bootstrap 95% intervals of one setting's metrics.

    Keys: ``RBO@K``, ``Jaccard@K``, ``HR@K``, ``HR@K_clean``, ``NDCG@K``, ``NDCG@K_clean`` (the
    un-suffixed ones are on perturbed inputs), ``HR@K_drop`` and ``NDCG@K_drop`` (relative:
    ``1 - perturbed / clean``, None when the clean value is 0), and ``ci95`` (metric -> [lo, hi]).
    """
    cr = torch.as_tensor(clean_ranks)
    pr = torch.as_tensor(pert_ranks)
    names = [f"RBO@{depth}", f"Jaccard@{depth}", f"HR@{depth}", f"HR@{depth}_clean",
             f"NDCG@{depth}", f"NDCG@{depth}_clean"]  # fmt: skip
    per_user = np.stack(
        [
            rbo_at_k(clean_top, pert_top, p, depth),
            jaccard_at_k(clean_top, pert_top, depth),
            hit_rate(pr, depth).numpy(),
            hit_rate(cr, depth).numpy(),
            ndcg(pr, depth).numpy(),
            ndcg(cr, depth).numpy(),
        ],
        axis=1,
    )  # [U, 6]
    means = per_user.mean(axis=0)
    samples = bootstrap_means(per_user, n_bootstrap, seed=bootstrap_seed)  # [R, 6]
    out: dict[str, Any] = {n: float(m) for n, m in zip(names, means, strict=True)}
    ci = {
        n: [float(lo), float(hi)]
        for n, (lo, hi) in zip(names, percentile_interval(samples), strict=True)
    }
    for metric, i_pert, i_clean in (("HR", 2, 3), ("NDCG", 4, 5)):
        name = f"{metric}@{depth}_drop"
        clean = means[i_clean]
        out[name] = None if clean == 0 else float(1.0 - means[i_pert] / clean)
        with np.errstate(divide="ignore", invalid="ignore"):
            drops = 1.0 - samples[:, i_pert] / samples[:, i_clean]
        drops = drops[np.isfinite(drops)]
        ci[name] = [float(x) for x in percentile_interval(drops)] if len(drops) else None
    out["ci95"] = ci
    return out


# --------------------------------------------------------------------------- the report
@dataclass
class RobustnessResult:
    """What :func:`evaluate_robustness` measured.

    Attributes:
        clean: ``{"n_users", "HR@K", "NDCG@K"}`` on the clean test inputs of all users.
        records: one dict per setting (see :func:`setting_metrics` for the metric keys).
        adversarial_items: ``(position, k) -> [U, k]`` items chosen for adversarial settings.
    """

    clean: dict[str, Any]
    records: list[dict[str, Any]]
    adversarial_items: dict[tuple[str, int], np.ndarray]


def evaluate_robustness(
    model: SequentialRecommender,
    split: SplitData,
    plan: ReplacementPlan,
    settings: Sequence[Setting],
    *,
    depth: int = 10,
    p: float = 0.9,
    mask_history: bool = True,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    n_bootstrap: int = 1000,
    progress: bool = True,
) -> RobustnessResult:
    """Robustness records (one per setting) of ``model`` on the test split.

    The clean pass runs once; each setting costs one perturbed pass over its users (plus one
    gradient pass for adversarial items). A single progress bar counts batches with an ETA.
    """
    if depth < 1:
        raise ConfigError(f"depth must be >= 1, got {depth}")
    # Every user must have `depth` rankable items, or the top-K lists would hold masked items.
    seen = int((split.test_inputs > 0).sum(axis=1).max(initial=0)) if mask_history else 0
    if depth > split.n_items - seen:
        raise ConfigError(
            f"--depth {depth} exceeds the items left to rank ({split.n_items} items, up to "
            f"{seen} masked per user as history); use a smaller --depth"
        )
    plan.ensure(split, settings)
    inputs, targets = split.test_inputs, split.test_targets
    U = len(targets)

    def n_batches(n: int) -> int:
        return (n + batch_size - 1) // batch_size

    valid = {s.key: plan.columns[(s.position, s.k)][:, 0] >= 0 for s in settings}
    total = n_batches(U) + sum(
        n_batches(int(valid[s.key].sum())) * (2 if s.replacement == "adversarial" else 1)
        for s in settings
    )
    bar = tqdm(
        total=total,
        desc="clean",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    kw = dict(batch_size=batch_size, device=device, on_batch=lambda: bar.update(1))
    try:
        clean_top, clean_ranks = topk_and_ranks(
            model, inputs, targets, depth, mask_history=mask_history, **kw
        )
        records: list[dict[str, Any]] = []
        adv_items: dict[tuple[str, int], np.ndarray] = {}
        for s in settings:
            t0 = time.perf_counter()
            bar.set_description(f"{s.position}/{s.replacement}/k={s.k}")
            cols = plan.columns[(s.position, s.k)]
            if s.replacement == "adversarial":
                items = adversarial_items(model, inputs, targets, cols, **kw)
                adv_items[(s.position, s.k)] = items
            else:
                items = plan.items[(s.position, s.k, s.replacement)]
            ok = (cols[:, 0] >= 0) & (items[:, 0] > 0)
            rows = np.flatnonzero(ok)
            n_short = int((cols[:, 0] < 0).sum())
            rec: dict[str, Any] = {
                "position": s.position,
                "replacement": s.replacement,
                "k": s.k,
                "n_users": int(len(rows)),
                "n_skipped": int(U - len(rows)),
                "skipped": {
                    "fewer_than_k_items": n_short,
                    "no_admissible_item": int(U - len(rows) - n_short),
                },
                "depth": depth,
                "p": p,
                "plan_seed": plan.seed,
                "plan_sha256": plan.setting_sha256(s),
                "n_bootstrap": n_bootstrap,
                "mask_history": mask_history,
            }
            if len(rows) == 0:
                records.append(rec)
                continue
            pert = apply_replacements(inputs[rows], cols[rows], items[rows])
            pert_top, pert_ranks = topk_and_ranks(
                model, pert, targets[rows], depth, mask_history=mask_history, **kw
            )
            rec.update(
                setting_metrics(
                    clean_top[rows],
                    clean_ranks[rows],
                    pert_top,
                    pert_ranks,
                    depth=depth,
                    p=p,
                    n_bootstrap=n_bootstrap,
                )
            )
            rec["wall_time_s"] = round(time.perf_counter() - t0, 3)
            records.append(rec)
    finally:
        bar.close()
    cr = torch.as_tensor(clean_ranks)
    clean = {
        "n_users": U,
        f"HR@{depth}": float(hit_rate(cr, depth).mean()),
        f"NDCG@{depth}": float(ndcg(cr, depth).mean()),
    }
    return RobustnessResult(clean=clean, records=records, adversarial_items=adv_items)


def run_robustness(
    run_dir: str | Path,
    settings: Sequence[Setting],
    *,
    seed: int = 0,
    plan_path: str | Path | None = None,
    depth: int = 10,
    p: float = 0.9,
    n_bootstrap: int = 1000,
    batch_size: int | None = None,
    split: SplitData | None = None,
    reuse: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a run's best model under ``settings`` and merge the records into
    ``RUN_DIR/robustness.json``; returns that file's content.

    The plan is read from (or drawn into) ``plan_path``, default ``RUN_DIR/plan-seed{seed}.npz``.
    Adversarial items are saved in ``RUN_DIR/adversarial-seed{seed}.npz``. With ``reuse``,
    settings already in ``robustness.json`` for the same checkpoint, plan, depth, p and bootstrap
    size are not recomputed (``catrec compare`` resumes this way).
    """
    from catrec.run import read_json
    from catrec.train.loop import load_model

    if not 0.0 < p <= 1.0:
        raise ConfigError(f"RBO persistence p must be in (0, 1], got {p}")
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    config, split, model = load_model(run_dir, split)
    meta = read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
    ckpt_sha = meta.get("checkpoints", {}).get("best.pt")
    plan_path = Path(plan_path) if plan_path is not None else run_dir / f"plan-seed{seed}.npz"
    plan = load_or_draw_plan(plan_path, split, seed, settings)

    path = run_dir / "robustness.json"
    old = read_json(path) if path.exists() else {}
    old_records = old.get("records", []) if old.get("checkpoint_sha256") == ckpt_sha else []

    def same(r: dict[str, Any], s: Setting) -> bool:
        return (
            (r["position"], r["replacement"], r["k"]) == s.key
            and r.get("plan_seed") == seed
            and r.get("depth") == depth
            and r.get("p") == p
        )

    todo = [
        s
        for s in settings
        if not (
            reuse
            and any(
                same(r, s)
                and r.get("plan_sha256") == plan.setting_sha256(s)
                and r.get("n_bootstrap") == n_bootstrap
                and (
                    s.replacement != "adversarial"
                    or (run_dir / f"adversarial-seed{seed}.npz").exists()
                )
                for r in old_records
            )
        )
    ]
    clean = old.get("clean") if old_records else None
    if not todo and clean is not None and clean.get(f"NDCG@{depth}") is not None:
        return old | {"computed": []}  # everything asked is already there: nothing to rewrite
    res = evaluate_robustness(
        model,
        split,
        plan,
        todo,
        depth=depth,
        p=p,
        mask_history=config.mask_history,
        batch_size=batch_size or config.eval_batch_size,
        device=next(model.parameters()).device,
        n_bootstrap=n_bootstrap,
        progress=progress,
    )
    clean, new_records = res.clean, res.records
    if res.adversarial_items:
        _save_adversarial(run_dir / f"adversarial-seed{seed}.npz", res.adversarial_items, ckpt_sha)
    for r in new_records:
        r["plan_file"] = str(plan_path)
    keep = [r for r in old_records if not any(same(r, s) for s in todo)]
    doc = {
        "run_dir": str(run_dir),
        "checkpoint_sha256": ckpt_sha,
        "mode": config.mode,
        "model": config.model,
        "dataset": config.dataset,
        "seed": config.seed,
        "git_commit": git_commit(),
        "clean": clean,
        "records": keep + new_records,
        "wall_time_s": round(time.perf_counter() - t0, 3),
    }
    atomic_write_json(path, doc)
    doc["computed"] = [s.key for s in todo]
    return doc


def _save_adversarial(
    path: Path, adv: dict[tuple[str, int], np.ndarray], ckpt_sha: str | None
) -> None:
    """Merge the adversarial items of this model into ``path`` (``.npz``, atomic)."""
    arrays: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("checkpoint_sha256") == ckpt_sha:
                arrays = {n: z[n] for n in z.files if n != "meta"}
    for (pos, k), items in adv.items():
        arrays[f"items__{pos}__{k}__adversarial"] = items
    arrays["meta"] = np.array(json.dumps({"checkpoint_sha256": ckpt_sha}))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def select_records(
    doc: dict[str, Any], settings: Sequence[Setting], seed: int, depth: int, p: float
) -> list[dict[str, Any]]:
    """The records of ``doc`` (a ``robustness.json``) for ``settings``, in their order."""
    out = []
    for s in settings:
        for r in doc["records"]:
            if (
                (r["position"], r["replacement"], r["k"]) == s.key
                and r.get("plan_seed") == seed
                and r.get("depth") == depth
                and r.get("p") == p
            ):
                out.append(r)
                break
    return out


def format_table(records: Sequence[dict[str, Any]], depth: int = 10) -> str:
    """A plain-text table of robustness records (one line per setting)."""
    K = depth
    head = (
        f"{'position':<8} {'replace':<11} {'k':>2} {'users':>6} {'skip':>5} "
        f"{'HR@' + str(K) + ' clean>pert':>18} {'NDCG@' + str(K) + ' clean>pert':>20} "
        f"{'NDCG drop':>9} {'Jacc@' + str(K):>8} {'RBO@' + str(K):>8} {'RBO 95% CI':>15}"
    )
    lines = [head]
    for r in records:
        if r["n_users"] == 0:
            lines.append(
                f"{r['position']:<8} {r['replacement']:<11} {r['k']:>2} {0:>6} "
                f"{r['n_skipped']:>5}  (every user skipped)"
            )
            continue
        drop = r[f"NDCG@{K}_drop"]
        ci = r["ci95"][f"RBO@{K}"]
        lines.append(
            f"{r['position']:<8} {r['replacement']:<11} {r['k']:>2} {r['n_users']:>6} "
            f"{r['n_skipped']:>5} "
            f"{r[f'HR@{K}_clean']:>8.4f}>{r[f'HR@{K}']:<9.4f} "
            f"{r[f'NDCG@{K}_clean']:>9.4f}>{r[f'NDCG@{K}']:<10.4f} "
            f"{'n/a' if drop is None else f'{100 * drop:.1f}%':>9} "
            f"{r[f'Jaccard@{K}']:>8.4f} {r[f'RBO@{K}']:>8.4f} "
            f"[{ci[0]:.4f},{ci[1]:.4f}]"
        )
    return "\n".join(lines)
