"""The one training loop: every model, every objective (nanoGPT-style, explicit).

Per epoch: shuffle training sequences (a permutation drawn from ``(seed, epoch)``), build batches,
take the objective's loss, call ``backward`` and step Adam (the loop is the only place that calls
``backward``); then evaluate validation NDCG@10 by full ranking, keep the best weights, and stop
early after ``patience`` epochs without gain, but never before the adversarial terms have run for
``patience`` epochs (CAT.md §3). Adversarial runs choose their reported model among the epochs
with the adversarial terms on (``select_from = adversarial``), so a run labelled ``cat`` is a CAT
model.

The full training state is checkpointed after every epoch and on SIGINT / SIGTERM (after the
current step), so ``catrec train --resume RUN_DIR`` continues exactly where it stopped.

Under ``torchrun`` the same loop trains data-parallel (:mod:`catrec.train.distributed`); the few
places that differ are marked ``# DDP:``.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from catrec import __version__
from catrec.adversarial.cascade import MEAN_TOL, cascade_effect, cascade_weights
from catrec.adversarial.perturb import draw_replaced
from catrec.config import ADVERSARIAL_KEYS, Config, table_options, to_yaml
from catrec.data import (
    SequenceData,
    SplitData,
    leave_one_out,
    read_dataset,
    resolve_dataset,
    training_popularity,
)
from catrec.errors import ConfigError, DataError, RunError
from catrec.evaluate import evaluate_ranking
from catrec.metrics.ranking import NumericalError
from catrec.models import build_model
from catrec.models.base import SequentialRecommender
from catrec.run import (
    check_compatible,
    check_config,
    checkpoint_header,
    dataset_file,
    load_checkpoint,
    load_run_config,
    load_weights,
    read_json,
)
from catrec.train import distributed
from catrec.train.objectives import Batch, Objective
from catrec.train.progress import epoch_line, startup_line
from catrec.utils import (
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    git_commit,
    seed_everything,
    sha256_arrays,
    sha256_file,
)

SELECT_METRIC = "NDCG@10"
#: Written with ``metrics.json``: ``valid`` and ``test``, each ``[U]`` float32, every user's
#: pessimistic rank of the target (``inf`` when masked), users in the order of the data file.
RANKS_FILE = "ranks.npz"

#: Config keys that do not change the standard warm-up epochs of an adversarial run: runs that
#: differ only in these share their warm-up (:meth:`Trainer.fit`'s ``warmup_from``). The device
#: is among them: the same training on another device, equal up to floating-point differences.
WARMUP_INDEPENDENT = ADVERSARIAL_KEYS | {"mode", "patience", "epochs", "device"}


class Interrupted(Exception):
    """Training stopped on SIGINT / SIGTERM after checkpointing; resume with ``--resume``."""


@dataclass
class TrainingSet:
    """Training sequences in the layout a model needs (see :func:`training_set`).

    Attributes:
        window: ``[R, W]`` item windows (causal: L + 1 columns, inputs ``[:, :-1]``; bidirectional:
            L columns).
        weights: ``[R, L]`` cascade weight of each input position.
        item_weights: ``[n_rows]`` c_item(i) for level 2.
        realised_mean: mean of ``weights`` over the input positions (1 after renormalisation).
        clipped_share: share of input positions clipped at ``c_max``.
    """

    window: np.ndarray
    weights: np.ndarray
    item_weights: np.ndarray
    realised_mean: float = 1.0
    clipped_share: float = 0.0


def training_set(split: SplitData, model: SequentialRecommender, config: Config) -> TrainingSet:
    """Training windows and their cascade weights (CAT.md §1), computed once per run."""
    window = split.train_seq if model.causal else split.train_seq[:, 1:]
    inputs = window[:, :-1] if model.causal else window
    keep = (inputs > 0).any(axis=1)  # causal: a training part of one item has no target
    window, inputs = window[keep], inputs[keep]
    C, is_input = cascade_effect(
        window, split.n_items, config.cascade, config.gamma, causal=model.causal
    )
    try:
        w = cascade_weights(C, is_input, inputs, split.n_items, config.scaling, config.c_max)
    except ValueError as exc:
        raise DataError(f"{split.data.name}: {exc}") from exc
    if config.adversarial and abs(w.realised_mean - 1.0) > MEAN_TOL:
        warnings.warn(
            f"cascade weights: a mean of 1 is out of reach with c_max = {config.c_max} "
            f"({w.clipped_share:.1%} of input positions clipped); realised mean "
            f"{w.realised_mean:.4f}, so cat spends less level-1 budget than adv",
            stacklevel=2,
        )
    n_rows = model.item_table().shape[0]
    item = np.ones(n_rows, dtype=np.float32)
    item[: split.n_items + 1] = w.item
    return TrainingSet(
        window=window,
        weights=w.position,
        item_weights=item,
        realised_mean=w.realised_mean,
        clipped_share=w.clipped_share,
    )


def epoch_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket: bool
) -> list[np.ndarray]:
    """Row indices of each batch of one epoch.

    Without bucketing: a random permutation cut into batches. With bucketing: the permutation is
    cut into pools of 32 batches, each pool is sorted by sequence length (stable) and cut into
    batches, and the batches are shuffled; every row still appears exactly once per epoch.
    """
    perm = rng.permutation(len(lengths))
    if bucket:
        pool = batch_size * 32
        parts = [
            p[np.argsort(lengths[p], kind="stable")]
            for p in np.split(perm, range(pool, len(perm), pool))
        ]
        perm = np.concatenate(parts)
    batches = np.split(perm, range(batch_size, len(perm), batch_size))
    if bucket:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def make_batch(
    model: SequentialRecommender,
    window: np.ndarray,
    weights: np.ndarray,
    config: Config,
    device: torch.device,
    loss_scale: float = 1.0,
) -> Batch:
    """A :class:`Batch` from windows ``[B, W]`` and weights ``[B, L]``.

    Causal models predict the next item at every real position. Bidirectional models use cloze
    training: each real item is replaced by the mask token with probability ``mask_prob`` and
    is the target there (Sun et al., CIKM 2019); a row whose draw masked nothing has its most
    recent item masked instead, so every row has a target (the original masks at least one item)
    and the original's last-item-only examples (Sun et al., §3.6) occur, mostly for short
    sequences. With ``config.replace_prob > 0`` input items are then replaced at random
    (:func:`replace_random_items`; targets unchanged). Leading all-padding columns are trimmed.
    """
    win = torch.as_tensor(window, device=device)
    w = torch.as_tensor(weights, device=device)
    if model.causal:
        inputs = win[:, :-1]
        targets = torch.where(inputs > 0, win[:, 1:], 0)
    else:
        real = win > 0
        masked = (torch.rand(win.shape, device=device) < config.mask_prob) & real
        masked[:, -1] |= real[:, -1] & ~masked.any(dim=1)  # left padding: last column = most recent
        inputs = torch.where(masked, model.mask_token, win)
        targets = torch.where(masked, win, 0)
    if config.replace_prob > 0:
        inputs = replace_random_items(inputs, config.replace_prob, model.n_items)
    real_cols = (inputs > 0).any(dim=0)
    first = int(real_cols.float().argmax()) if bool(real_cols.any()) else inputs.shape[1] - 1
    inputs, targets, w = inputs[:, first:], targets[:, first:], w[:, first:]
    negatives = None
    if config.loss == "bce":
        negatives = sample_negatives(win, targets.shape, model.n_items)
    return Batch(
        inputs=inputs, targets=targets, weights=w, negatives=negatives, loss_scale=loss_scale
    )


def replace_random_items(inputs: Tensor, prob: float, n_items: int) -> Tensor:
    """Training-time augmentation: each real input item (``1..n_items``; not padding, not a mask
    token) is replaced, with probability ``prob``, by an item drawn uniformly from ``1..n_items``.

    The targets are left as they were, so the model learns to predict the true next item from a
    history with replaced items: the defence a user would try first against the replacement
    attacks of the robustness suite (a baseline for CAT; cf. the random "substitute" and "noise"
    augmentations of sequential recommendation). Draws from the torch generator, like the cloze
    masks, so a seed repeats it and a resumed run continues it.

    Args:
        inputs: ``[B, L]`` input item ids.

    Returns:
        a new ``[B, L]`` tensor; ``inputs`` is not modified.
    """
    hit = draw_replaced(inputs, prob, n_items)
    random_items = torch.randint(1, n_items + 1, inputs.shape, device=inputs.device)
    return torch.where(hit, random_items, inputs)


def sample_negatives(window: Tensor, shape: torch.Size, n_items: int) -> Tensor:
    """One negative item per position, uniform over the items not in the row's sequence.

    As in the original SASRec (Kang & McAuley, ICDM 2018), a negative is never the target nor any
    item of the user's sequence (here: the row's training window ``[B, W]``, the most recent
    L + 1 items). Vectorised rejection sampling: redraw the positions that hit the sequence.

    Args:
        window: ``[B, W]`` item ids of each row (0 = padding).
        shape: ``(B, L)`` shape of the result.

    Returns:
        ``[B, L]`` int64 item ids in ``1..n_items``.

    Raises:
        DataError: a row's sequence holds every item, so no negative exists.
    """
    if n_items <= window.shape[1]:  # only then can a row hold every item
        ordered = window.sort(dim=1).values
        distinct = (ordered[:, :1] > 0).sum(1) + (
            (ordered[:, 1:] != ordered[:, :-1]) & (ordered[:, 1:] > 0)
        ).sum(1)
        if bool((distinct >= n_items).any()):
            raise DataError(
                f"bce loss: a training sequence contains all {n_items} items, so there is no "
                "negative item to sample; use --loss ce"
            )

    def in_sequence(neg: Tensor) -> Tensor:  # [B, L] -> [B, L] bool, via [B, L, W] comparisons
        return (neg.unsqueeze(-1) == window.unsqueeze(1)).any(dim=-1)

    neg = torch.randint(1, n_items + 1, shape, device=window.device)
    bad = in_sequence(neg)
    while bool(bad.any()):
        neg[bad] = torch.randint(1, n_items + 1, (int(bad.sum()),), device=window.device)
        bad = in_sequence(neg)
    return neg


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (x86 avx512_bf16 or amx_bf16; Linux only)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward passes' precision: fp32 as is, or bf16 autocast (parameters, optimizer state
    and gradients stay fp32; the full-softmax loss keeps its normalisation in fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def build_objective(config: Config, tset: TrainingSet, device: torch.device) -> Objective:
    """The objective of ``config.mode`` (CAT.md §3): standard, adv (level 1) or cat (both)."""
    if config.mode == "standard":
        return Objective(loss=config.loss)
    return Objective(
        loss=config.loss,
        lambda_1=config.lambda_1,
        lambda_2=config.lambda_2 or 0.0,
        eps=config.eps,
        eps_item=config.eps_item,
        eps_absolute=config.eps_absolute,
        item_weights=torch.as_tensor(tset.item_weights, device=device),
        shared_dropout=config.shared_dropout,
        fused=config.adv_objective == "fused",
        lambda_replace=config.lambda_replace,
        replace_prob=config.replace_adv_prob,
    )


@dataclass
class TrainState:
    """Everything needed to continue a run exactly (saved in ``last.pt``)."""

    epoch: int = 0  # epoch in progress (0-based)
    step: int = 0  # next batch index within the epoch
    best_score: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    done: bool = False


def dataset_sha256(split: SplitData) -> str:
    """Hash of the interactions a run trains and evaluates on (item indices per user)."""
    tokens = "\n".join(map(str, split.data.item_tokens)).encode("utf-8")
    return sha256_arrays(split.data.offsets, split.data.items, extra=tokens)


def check_dataset(meta: dict[str, Any], split: SplitData, run_dir: Path) -> None:
    """Raise :class:`RunError` if the dataset differs from the one the run was trained on."""
    want = meta.get("dataset_sha256")
    if want is not None and want != dataset_sha256(split):
        raise RunError(
            f"{run_dir}: the dataset {split.data.name} differs from the one this run was trained "
            "on (its content hash does not match run.json)"
        )


def pid_alive(pid: Any) -> bool:
    """Whether process ``pid`` (as recorded in run.json) is alive on this machine."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Exclusive lock on a run folder (``RUN_DIR/.lock`` holding the owner's pid).

    A lock left by a process that no longer exists (killed with SIGKILL) is taken over.

    Raises:
        RunError: another live process holds the lock.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / ".lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid != os.getpid() and pid_alive(pid):
                raise RunError(
                    f"{run_dir} is being trained by process {pid}; wait for it or stop it first "
                    f"(if that process is not catrec, delete {lock})"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its owner is gone
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        break
    else:
        raise RunError(f"{run_dir}: cannot take the lock {lock}")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def should_stop(bad_epochs: int, epochs_done: int, config: Config) -> bool:
    """Early stopping: ``patience`` epochs without validation gain, and, for adversarial modes,
    the adversarial terms have run for at least ``patience`` epochs (CAT.md §3)."""
    if bad_epochs < config.patience:
        return False
    if config.adversarial:
        return epochs_done - config.adv_warmup_epochs >= config.patience
    return True


def selects_adversarial(config: Config) -> bool:
    """Whether the reported model is chosen among adversarial epochs only (CAT.md §3).

    True for adversarial modes with ``select_from = adversarial``, unless the run is too short to
    reach its adversarial epochs: then it falls back to all epochs, with a warning.
    """
    if not config.adversarial or config.select_from != "adversarial":
        return False
    if config.epochs <= config.adv_warmup_epochs:
        warnings.warn(
            f"select_from = adversarial, but the run ({config.epochs} epochs) ends before its "
            f"adversarial terms start (after {config.adv_warmup_epochs} warm-up epochs): the "
            "model is chosen among all epochs, so it is a standard model",
            stacklevel=2,
        )
        return False
    return True


def load_split(config: Config, run_dir: str | Path | None = None) -> SplitData:
    """Resolve, read and split the run's dataset (with the config's table options); for an
    existing run folder, the file recorded in its ``run.json`` (see
    :func:`catrec.run.dataset_file`)."""
    return leave_one_out(read_config_dataset(config, run_dir), config.max_len)


def read_config_dataset(config: Config, run_dir: str | Path | None = None) -> SequenceData:
    """Resolve and read the config's dataset with its table options (column names, time format);
    for an existing run folder, the file recorded in its ``run.json``.

    Raises:
        ConfigError: table options given for a sequence file.
    """
    path = dataset_file(Path(run_dir), config) if run_dir else resolve_dataset(config.dataset)
    options = table_options(config)
    if options and path.suffix.lower() not in {".csv", ".tsv", ".inter"}:
        keys = ", ".join(f"--{k.replace('_', '-')}" for k in options)
        raise ConfigError(
            f"{keys}: only for interaction tables (.csv, .tsv, .inter); {path} is a sequence file"
        )
    return read_dataset(path, **options)


class _SignalGuard:
    """Turns the first SIGINT / SIGTERM into a flag checked between steps; the previous handlers
    come back right away, so a second Ctrl-C stops at once (KeyboardInterrupt). All handlers are
    restored on exit. :class:`catrec.train.distributed.DistSignalGuard` makes every rank agree on
    the flag."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _SignalGuard:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum
        for sig, old in self._old.items():
            signal.signal(sig, old)

    @property
    def received(self) -> int | None:
        """The signal received (this process), or None."""
        return self.signal

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run (``RUN_DIR/log.json``, one dict per epoch run so far, in
    order); ``[]`` before the first epoch."""
    path = Path(run_dir) / "log.json"
    return read_json(path, list) if path.exists() else []


class Trainer:
    """Runs (or resumes) one training run in ``run_dir``.

    Args:
        config: resolved run config.
        run_dir: output folder; created if needed.
        progress: show tqdm progress bars.
        stop_after_steps: testing hook: raise :class:`Interrupted` (after checkpointing) once this
            many optimisation steps have run in this process.
        keep_states: after each of these epochs (counted from 1) keep a copy of the full state,
            ``RUN_DIR/state-epoch{k}.pt`` (and the best weights so far, ``...-best.pt``), so that
            adversarial runs of the same seed can start from it (:meth:`fit`'s ``warmup_from``).
        on_epoch_end: called after each epoch's validation with ``(epoch counted from 1,
            validation metrics, adversarial terms on)``; returning True stops the run there
            (status ``stopped``, no test evaluation): the hook a hyper-parameter search prunes by.
        evaluate_test: evaluate the best model on the test split at the end (writing
            ``metrics.json``); False returns only ``{"valid": metrics of the best epoch}`` and
            never reads the test split (model selection, e.g. tuning).
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        *,
        progress: bool = True,
        stop_after_steps: int | None = None,
        split: SplitData | None = None,
        keep_states: Sequence[int] = (),
        on_epoch_end: Callable[[int, dict[str, float], bool], bool] | None = None,
        evaluate_test: bool = True,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.stop_after_steps = stop_after_steps
        self.keep_states = set(keep_states)
        self.on_epoch_end = on_epoch_end
        self.evaluate_test = evaluate_test
        # DDP: under torchrun, join the job; the rank's device is cuda:LOCAL_RANK or the CPU.
        self.dist = distributed.setup(config.device)
        self.device = self.dist.device if self.dist else torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {config.device!r}: this torch build has no CUDA device")
        if self.device.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError(f"device {config.device!r}: MPS is not available here")
        self.split = split if split is not None else load_split(config)
        seed_everything(config.seed)  # before the model's initialisation draws from the RNG
        self.model = build_model(config, self.split.n_items).to(self.device)
        if self.dist is not None:  # DDP: same initial weights, but each rank its own masks
            torch.manual_seed(distributed.rank_seed(config.seed, self.dist.rank))

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder (rank 0, or a plain process)."""
        return self.dist is None or self.dist.is_main

    # ---------------------------------------------------------------- persistence
    def _save_last(self, state: TrainState, optimizer: torch.optim.Optimizer) -> None:
        # DDP: every rank's RNG goes into the checkpoint; rank 0 writes it.
        ranks = self.dist.gather_objects(distributed.rng_states()) if self.dist else None
        if not self.is_main:
            return
        ckpt = checkpoint_header(self.config, self.split.n_items) | {
            "model_state": self.model.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "train_state": {
                "epoch": state.epoch,
                "step": state.step,
                "best_score": state.best_score,
                "best_epoch": state.best_epoch,
                "bad_epochs": state.bad_epochs,
                "elapsed_s": state.elapsed_s,
                "done": state.done,
            },
        }
        if ranks is not None:
            ckpt["rank_rng"] = ranks
        atomic_torch_save(ckpt, self.run_dir / "last.pt")
        self._update_meta({"last.pt": sha256_file(self.run_dir / "last.pt")})

    def _save_best(self) -> None:
        if not self.is_main:  # DDP: rank 0 writes
            return
        ckpt = checkpoint_header(self.config, self.split.n_items) | {
            "model_state": self.model.state_dict()
        }
        atomic_torch_save(ckpt, self.run_dir / "best.pt")
        self._update_meta({"best.pt": sha256_file(self.run_dir / "best.pt")})

    def _update_meta(self, checkpoints: dict[str, str] | None = None, **fields) -> None:
        if not self.is_main:  # DDP: rank 0 writes
            return
        path = self.run_dir / "run.json"
        meta = read_json(path, dict) if path.exists() else {}
        if checkpoints:
            meta.setdefault("checkpoints", {}).update(checkpoints)
        meta.update(fields)
        atomic_write_json(path, meta)

    def _write_start_files(self) -> None:
        if not self.is_main:  # DDP: rank 0 writes
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", to_yaml(self.config))
        atomic_write_json(
            self.run_dir / "items.json", [str(t) for t in self.split.data.item_tokens]
        )
        atomic_write_json(
            self.run_dir / "popularity.json", training_popularity(self.split).tolist()
        )
        self._update_meta(
            catrec_version=__version__,
            torch_version=torch.__version__,
            python_version=platform.python_version(),
            git_commit=git_commit(),
            seed=self.config.seed,
            dataset=self.config.dataset,
            dataset_source=self.split.data.name,
            **self._dataset_file_fields(),
            dataset_sha256=dataset_sha256(self.split),
            n_users=self.split.n_users,
            n_items=self.split.n_items,
            n_dropped_users=self.split.n_dropped,
            status="running",
            host_threads=torch.get_num_threads(),
            pid=os.getpid(),
        )

    def _keep_state(self, epochs_done: int) -> None:
        """Copy ``last.pt`` (and ``best.pt``) to ``state-epoch{k}.pt`` (``...-best.pt``)."""
        if not self.is_main:  # DDP: rank 0 writes
            return
        for src, dst in (
            ("last.pt", f"state-epoch{epochs_done}.pt"),
            ("best.pt", f"state-epoch{epochs_done}-best.pt"),
        ):
            if (self.run_dir / src).exists():
                atomic_write_bytes(self.run_dir / dst, (self.run_dir / src).read_bytes())
                self._update_meta({dst: sha256_file(self.run_dir / dst)})

    def _start_from_warmup(
        self, donor: Path, optimizer: torch.optim.Optimizer, select_adversarial: bool
    ) -> TrainState:
        """The state this run would have after its standard warm-up, taken from a run of the
        same seed that kept it (``keep_states``): the warm-up epochs are standard training,
        identical across modes (same initialisation, batches and dropout draws), so they are
        computed once per seed (issue: the paper's experiment, measured).

        Falls back to training the warm-up here (with a warning) when the donor has no state at
        that epoch (e.g. it stopped early).

        Raises:
            RunError: the donor trained on other data or with settings that change the warm-up.
        """
        cfg, k = self.config, self.config.adv_warmup_epochs
        path = donor / f"state-epoch{k}.pt"
        if k == 0 and (donor / "run.json").exists():  # nothing taken, but the data must match
            check_dataset(read_json(donor / "run.json", dict), self.split, donor)
        if k == 0 or not path.exists():
            if k > 0:
                warnings.warn(
                    f"{donor} kept no state after epoch {k}; training the warm-up here",
                    stacklevel=2,
                )
            return TrainState()
        donor_cfg = load_run_config(donor)
        diff = [
            key
            for key in Config.model_fields
            if key not in WARMUP_INDEPENDENT and getattr(donor_cfg, key) != getattr(cfg, key)
        ]
        if diff:
            raise RunError(
                f"{donor}: its warm-up is not this run's: settings differ ({', '.join(diff)})"
            )
        meta = read_json(donor / "run.json", dict)
        check_dataset(meta, self.split, donor)
        ckpt = load_checkpoint(path, meta.get("checkpoints", {}).get(path.name))
        check_compatible(ckpt, cfg, self.split.n_items, path)
        self.model.load_state_dict(ckpt["model_state"])
        optimizer.load_state_dict(ckpt["optimizer_state"])
        torch.set_rng_state(ckpt["torch_rng"])
        if torch.cuda.is_available() and ckpt.get("cuda_rng"):
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        ts = ckpt["train_state"]
        state = TrainState(epoch=k, elapsed_s=ts["elapsed_s"])
        if not select_adversarial:  # the warm-up epochs compete: take their best as well
            best = donor / f"state-epoch{k}-best.pt"
            best_ckpt = load_checkpoint(best, meta.get("checkpoints", {}).get(best.name))
            self.model.load_state_dict(best_ckpt["model_state"])
            self._save_best()
            self.model.load_state_dict(ckpt["model_state"])
            state.best_score, state.best_epoch = ts["best_score"], ts["best_epoch"]
            state.bad_epochs = ts["bad_epochs"]
        log = read_log(donor)
        if self.is_main:  # DDP: rank 0 writes
            atomic_write_json(self.run_dir / "log.json", [r for r in log if r["epoch"] <= k])
        self._update_meta(
            warmup_from={"run": str(donor), "epochs": k, "git_commit": meta.get("git_commit")}
        )
        return state

    def _dataset_file_fields(self) -> dict[str, str]:
        """The dataset file's absolute path and sha256, so the run finds it from any shell."""
        source = Path(self.split.data.name)
        if not source.is_file():  # a split built in memory
            return {}
        return {
            "dataset_path": str(source.resolve()),
            "dataset_file_sha256": sha256_file(source),
        }

    # ---------------------------------------------------------------- training
    def fit(self, resume: bool = False, warmup_from: str | Path | None = None) -> dict[str, Any]:
        """Train to the end (or resume), then evaluate the best model; returns ``metrics.json``.

        Holds ``RUN_DIR/.lock`` while it runs, so two processes never train into one folder.

        Args:
            resume: continue from ``RUN_DIR/last.pt``.
            warmup_from: a run folder of the same seed and settings that kept its state after
                this run's warm-up epochs (``keep_states``); training starts from there.

        Raises:
            RunError: the folder is locked by a live process, already holds a run (without
                ``resume``), or its checkpoint is missing, corrupted or incompatible.
        """
        with contextlib.ExitStack() as lock:
            # DDP: rank 0 checks the folder and takes the lock; its failure fails every rank.
            distributed.on_main(self.dist, lambda: self._take_folder(resume, lock))
            try:
                return self._fit(resume, Path(warmup_from) if warmup_from else None)
            except distributed.DistributedError as exc:  # DDP: a rank died or stalled
                self._update_meta(status="failed")
                last = self.run_dir / "last.pt"
                raise distributed.DistributedError(
                    f"{exc}. Last checkpoint: {last if last.exists() else 'none yet'}; resume "
                    f"with the same launcher: ... catrec train --resume {self.run_dir}"
                ) from exc
            except Interrupted:
                raise  # status "interrupted" is set where the checkpoint is written
            except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint of this step
                self._final_status("interrupted")
                raise
            except BaseException:
                self._final_status("failed")
                raise

    def _take_folder(self, resume: bool, lock: contextlib.ExitStack) -> None:
        if (
            not resume
            and self.run_dir.exists()
            and ((self.run_dir / "run.json").exists() or (self.run_dir / "last.pt").exists())
            and not self._failed_before_any_checkpoint()
        ):
            raise RunError(
                f"{self.run_dir} already holds a run; use --resume to continue it or choose "
                "another --out"
            )
        if resume and not (self.run_dir / "last.pt").exists():
            raise RunError(
                f"{self.run_dir}: no checkpoint to resume from (last.pt is written after the first "
                "epoch or on Ctrl-C); start the run again with a fresh --out"
            )
        lock.enter_context(run_lock(self.run_dir))
        if not resume and self._failed_before_any_checkpoint():
            for name in ("run.json", "log.json"):  # a fresh start, not a continuation
                (self.run_dir / name).unlink(missing_ok=True)

    def _final_status(self, status: str) -> None:
        """Record how the run ended, unless it never started (no run.json) or already ended."""
        if not self.is_main:  # DDP: rank 0 writes
            return
        path = self.run_dir / "run.json"
        with contextlib.suppress(Exception):  # never hide the error being raised
            if path.exists() and read_json(path, dict).get("status") == "running":
                self._update_meta(status=status)

    def _failed_before_any_checkpoint(self) -> bool:
        """True for a folder whose run failed before writing ``last.pt``: nothing to resume, so
        a new run may start there."""
        path = self.run_dir / "run.json"
        if (self.run_dir / "last.pt").exists() or not path.exists():
            return False
        try:
            return read_json(path, dict).get("status") == "failed"
        except RunError:
            return False

    def _fit(self, resume: bool, warmup_from: Path | None = None) -> dict[str, Any]:
        cfg = self.config
        optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        state = TrainState()
        select_adversarial = selects_adversarial(cfg)
        # Data errors are found before anything is written to the run folder.
        tset = training_set(self.split, self.model, cfg)
        n_rows = len(tset.window)
        if n_rows == 0:
            raise DataError(
                f"{self.split.data.name}: no training sequences: every user has only 3 "
                "interactions, so each training part is one item and has no next-item target"
            )
        if resume:
            state = self._restore(optimizer)
        else:
            self._write_start_files()
            if warmup_from is not None and cfg.adversarial:
                state = self._start_from_warmup(warmup_from, optimizer, select_adversarial)
        if cfg.adversarial and self.is_main:
            buf = io.BytesIO()
            np.savez_compressed(buf, position=tset.weights, item=tset.item_weights)
            atomic_write_bytes(self.run_dir / "cascade.npz", buf.getvalue())
            self._update_meta(
                cascade={
                    "scaling": cfg.scaling,
                    "cascade": cfg.cascade,
                    "c_max": cfg.c_max,
                    "realised_mean": round(tset.realised_mean, 8),
                    "clipped_share": round(tset.clipped_share, 6),
                },
                select_from="adversarial" if select_adversarial else "all",
            )
        objective = build_objective(cfg, tset, self.device)
        # DDP: the whole objective runs as DistributedDataParallel's forward.
        step = (
            objective
            if self.dist is None
            else distributed.DDPObjective(self.model, objective, self.dist)
        )
        if cfg.precision == "bf16" and self.device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn(
                "precision bf16 on a CPU without avx512_bf16 / amx_bf16: bf16 matrix products "
                "are emulated and much slower than fp32 here (13x measured on an AVX2 CPU); "
                "use --precision fp32 on this machine",
                stacklevel=2,
            )
        n_batches = (n_rows + cfg.batch_size - 1) // cfg.batch_size
        lengths = (tset.window > 0).sum(axis=1)
        # Expected positions with a target per batch: the bucketed loss is normalised by it.
        # (bidirectional: mask_prob per item, plus the last item when the draw masked nothing)
        p = cfg.mask_prob
        n_targets = lengths - 1 if self.model.causal else lengths * p + (1 - p) ** lengths
        mean_targets = float(n_targets.sum()) / n_batches
        steps_run = 0
        if self.progress and self.is_main:
            tqdm.write(
                startup_line(cfg, self.split, self.run_dir, epoch=state.epoch, step=state.step)
            )
        with (
            _SignalGuard()
            if self.dist is None
            else distributed.DistSignalGuard(self.dist, _SignalGuard()) as guard
        ):
            while not state.done and state.epoch < cfg.epochs:
                epoch = state.epoch
                adv_on = cfg.adversarial and epoch >= cfg.adv_warmup_epochs
                batches = epoch_batches(
                    lengths,
                    cfg.batch_size,
                    np.random.default_rng([cfg.seed, epoch]),
                    cfg.bucket_batches,
                )
                t0 = time.perf_counter()
                start_step = state.step  # > 0: resumed mid-epoch, so timed only in part
                self.model.train()
                sums: dict[str, float] = {}
                n_steps = 0
                bar = tqdm(
                    range(state.step, n_batches),
                    total=n_batches,
                    initial=state.step,
                    desc=f"epoch {epoch + 1}/{cfg.epochs} [{cfg.mode if adv_on else 'standard'}]",
                    disable=not (self.progress and self.is_main),
                    leave=False,
                    mininterval=0.5,
                    dynamic_ncols=True,
                )
                for b in bar:
                    rows = batches[b]
                    scale = (
                        float(n_targets[rows].sum()) / mean_targets if cfg.bucket_batches else 1.0
                    )
                    share = 1.0
                    if self.dist is not None:  # DDP: this rank's rows of the global batch
                        rows, share = distributed.shard_batch(self.dist, rows, n_targets)
                        scale *= share
                    batch = make_batch(
                        self.model, tset.window[rows], tset.weights[rows], cfg, self.device, scale
                    )
                    batch.share = share
                    optimizer.zero_grad(set_to_none=True)
                    try:
                        with (
                            distributed.step_errors(self.dist),
                            autocast(cfg.precision, self.device),
                        ):
                            loss, diag = step(self.model, batch, adversarial=adv_on)
                        with distributed.step_errors(self.dist):
                            loss.backward()
                    except NumericalError as exc:
                        self._update_meta(status="failed")
                        last = self.run_dir / "last.pt"
                        raise NumericalError(
                            f"{exc} at epoch {epoch + 1}, step {b + 1}/{n_batches} "
                            f"(batch of training rows {rows[:5].tolist()}...); nothing was saved "
                            f"from this step; last good checkpoint: "
                            f"{last if last.exists() else 'none yet'}"
                        ) from exc
                    optimizer.step()
                    steps_run += 1
                    n_steps += 1
                    for k, v in diag.items():
                        sums[k] = sums.get(k, 0.0) + v
                    if b % 10 == 0:
                        bar.set_postfix(loss=f"{diag['loss']:.4f}")
                    state.step = b + 1
                    stop = guard.received is not None or (
                        self.stop_after_steps is not None and steps_run >= self.stop_after_steps
                    )
                    if stop and state.step < n_batches:
                        state.elapsed_s += time.perf_counter() - t0
                        self._save_last(state, optimizer)
                        self._update_meta(status="interrupted")
                        bar.close()
                        raise Interrupted(
                            f"training interrupted at epoch {epoch + 1}, step {state.step}; "
                            f"checkpoint saved. Resume with: catrec train --resume {self.run_dir}"
                        )
                bar.close()
                if self.dist is not None:  # DDP: diagnostics of the union batches
                    sums = distributed.sum_dict(self.dist, sums)
                train_s = time.perf_counter() - t0
                try:
                    valid = evaluate_ranking(
                        self.model,
                        self.split.valid_inputs,
                        self.split.valid_targets,
                        batch_size=cfg.eval_batch_size,
                        mask_history=cfg.mask_history,
                        device=self.device,
                        progress=self.progress and self.is_main,
                        desc=f"epoch {epoch + 1}/{cfg.epochs} validation",
                        dist=self.dist,  # DDP: sharded, same metrics on every rank
                    )
                except NumericalError as exc:
                    self._update_meta(status="failed")
                    raise NumericalError(
                        f"{exc} in the validation after epoch {epoch + 1}; last good checkpoint: "
                        f"{self.run_dir / 'last.pt'}"
                    ) from exc
                score = valid[SELECT_METRIC]
                # select_from = adversarial: warm-up epochs are neither saved nor counted.
                eligible = adv_on or not select_adversarial
                improved = eligible and score > state.best_score
                if improved:
                    state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
                    self._save_best()
                elif eligible:
                    state.bad_epochs += 1
                done_s = time.perf_counter() - t0
                state.elapsed_s += done_s
                record = {
                    "epoch": epoch + 1,
                    "adversarial": adv_on,
                    "train_time_s": round(train_s, 3),
                    "epoch_time_s": round(done_s, 3),
                    **{k: v / max(n_steps, 1) for k, v in sums.items()},
                    "valid": valid,
                }
                if start_step:  # steps before the resume ran (and were timed) in another process
                    record |= {"time_partial": True, "resumed_after_step": start_step}
                log = self._append_log(record)
                if self.progress and self.is_main:
                    tqdm.write(epoch_line(log, cfg, improved, state.best_score, state.best_epoch))
                state.epoch, state.step = epoch + 1, 0
                state.done = should_stop(state.bad_epochs, state.epoch, cfg)
                stopped = self.on_epoch_end is not None and bool(
                    self.on_epoch_end(epoch + 1, valid, adv_on)
                )
                self._save_last(state, optimizer)
                if state.epoch in self.keep_states:
                    self._keep_state(state.epoch)
                if stopped:
                    self._update_meta(status="stopped", epochs_run=state.epoch)
                    return {}
                if guard.received is not None and not state.done and state.epoch < cfg.epochs:
                    self._update_meta(status="interrupted")
                    raise Interrupted(
                        f"training interrupted after epoch {epoch + 1}; checkpoint saved. "
                        f"Resume with: catrec train --resume {self.run_dir}"
                    )
        state.done = True
        self._update_meta(
            status="finished",
            wall_time_s=round(state.elapsed_s, 3),
            best_epoch=state.best_epoch + 1,
            best_epoch_adversarial=cfg.adversarial and state.best_epoch >= cfg.adv_warmup_epochs,
            epochs_run=state.epoch,
        )
        if self.dist is not None:  # DDP: rank 0's best.pt is written before anyone reads it
            self.dist.barrier("the end of training")
        if not self.evaluate_test:
            log = read_log(self.run_dir)
            return {"valid": next(r["valid"] for r in log if r["epoch"] == state.best_epoch + 1)}
        return evaluate_run(self.run_dir, split=self.split, progress=self.progress, dist=self.dist)

    def _append_log(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Add the epoch's record to ``log.json`` (rank 0 writes under DDP); returns the log."""
        log = [r for r in read_log(self.run_dir) if r["epoch"] < record["epoch"]] + [record]
        if self.is_main:
            atomic_write_json(self.run_dir / "log.json", log)
        return log

    def _restore(self, optimizer: torch.optim.Optimizer) -> TrainState:
        meta = read_json(self.run_dir / "run.json", dict)
        check_dataset(meta, self.split, self.run_dir)
        path = self.run_dir / "last.pt"
        ckpt = load_checkpoint(path, meta.get("checkpoints", {}).get("last.pt"))
        check_compatible(ckpt, self.config, self.split.n_items, path)
        check_config(ckpt, self.config, path)
        try:
            self.model.load_state_dict(ckpt["model_state"])
            optimizer.load_state_dict(ckpt["optimizer_state"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise RunError(
                f"{path}: the checkpoint does not fit the run's config.yaml (was it edited?): "
                f"{str(exc).splitlines()[0]}"
            ) from exc
        torch.set_rng_state(ckpt["torch_rng"])
        if torch.cuda.is_available() and ckpt.get("cuda_rng"):
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        if self.dist is not None:  # DDP: each rank continues its own random stream
            distributed.restore_rank_rng(self.dist, ckpt, self.config.seed)
        ts = ckpt["train_state"]
        if ts["done"] or meta.get("status") == "finished":
            warnings.warn(
                f"{self.run_dir}: the run had already finished: nothing to resume; "
                "re-evaluating it",
                stacklevel=2,
            )
            return TrainState(**ts)
        resumes = meta.get("resumed", [])
        # in_epoch is 1-based like the messages; after_step: steps of that epoch already done
        resumes.append(
            {"in_epoch": ts["epoch"] + 1, "after_step": ts["step"], "git_commit": git_commit()}
        )
        self._update_meta(status="running", pid=os.getpid(), resumed=resumes)
        return TrainState(**ts)


def train(
    config: Config,
    run_dir: str | Path,
    *,
    progress: bool = True,
    resume: bool = False,
    warmup_from: str | Path | None = None,
    **kwargs,
) -> dict[str, Any]:
    """Train ``config`` into ``run_dir`` (or resume it) and return its ``metrics.json`` content.

    ``warmup_from``: start after the warm-up kept by a standard run of the same seed (see
    :class:`Trainer`'s ``keep_states``). Other keyword arguments go to :class:`Trainer`.
    """
    if resume and kwargs.get("split") is None:
        kwargs["split"] = load_split(config, run_dir)  # the data file recorded in run.json
    return Trainer(config, run_dir, progress=progress, **kwargs).fit(
        resume=resume, warmup_from=warmup_from
    )


def warn_if_unfinished(run_dir: Path, meta: dict[str, Any], config: Config, ckpt: Path) -> None:
    """Warn that a run has not finished, saying how far it got and which checkpoint is used."""
    status = meta.get("status")
    if not meta or status == "finished":
        return
    log = run_dir / "log.json"
    done = len(read_json(log, list)) if log.is_file() else 0
    if not ckpt.exists():
        warmup = (
            f" (only standard warm-up epochs so far: the reported model is the best of the "
            f"adversarial epochs, which start after epoch {config.adv_warmup_epochs})"
            if meta.get("select_from") == "adversarial" and done <= config.adv_warmup_epochs
            else ""
        )
        raise RunError(
            f"{run_dir}: the run has not finished and has no {ckpt.name} yet{warmup}; "
            f"continue it with: catrec train --resume {run_dir}"
        )
    live = status == "running" and meta.get("pid") != os.getpid() and pid_alive(meta.get("pid"))
    why = f"it is still being trained by process {meta['pid']}" if live else f"status {status!r}"
    then = "" if live else f"; finish it with: catrec train --resume {run_dir}"
    warnings.warn(
        f"{run_dir}: the run has not finished ({why}; {done} of at most {config.epochs} epochs "
        f"done): using {ckpt}, the best checkpoint so far{then}",
        stacklevel=3,
    )


def load_model(
    run_dir: str | Path, split: SplitData | None = None, checkpoint: str = "best"
) -> tuple[Config, SplitData, SequentialRecommender]:
    """Config, split data and best (or, with ``checkpoint="last"``, latest) model of a finished
    (or running) run folder.

    Raises:
        RunError: missing, corrupted or incompatible checkpoint, or a config.yaml edited since.
    """
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    split = split if split is not None else load_split(config, run_dir)
    meta = read_json(run_dir / "run.json", dict) if (run_dir / "run.json").exists() else {}
    check_dataset(meta, split, run_dir)
    path = run_dir / f"{checkpoint}.pt"
    warn_if_unfinished(run_dir, meta, config, path)
    model = load_weights(run_dir, config, split.n_items, meta, path.name)
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"{run_dir}: trained on {config.device}; no CUDA here, using the CPU", stacklevel=2
        )
        device = torch.device("cpu")
    return config, split, model.to(device)


def evaluate_run(
    run_dir: str | Path,
    *,
    split: SplitData | None = None,
    splits: tuple[str, ...] = ("valid", "test"),
    checkpoint: str = "best",
    mask_history: bool | None = None,
    progress: bool = False,
    dist=None,
) -> dict[str, Any]:
    """Evaluate a run's checkpoint; with the defaults, rewrite ``metrics.json`` and the per-user
    ranks ``ranks.npz`` (:data:`RANKS_FILE`).

    The weights are always reloaded from the checkpoint, so that ``catrec evaluate`` reproduces
    the numbers stored at the end of training exactly. Any other choice (``splits``, the ``last``
    checkpoint, ``mask_history`` other than the run's) is returned but not written: metrics.json
    always holds the run's own evaluation. With ``dist`` (a
    :class:`~catrec.train.distributed.DistContext`) the ranks share the evaluation and rank 0
    writes ``metrics.json``; every rank returns the same metrics.
    """
    run_dir = Path(run_dir)
    bad = [s for s in splits if s not in ("valid", "test")]
    if bad or not splits:
        raise ConfigError(f"splits must be 'valid' and/or 'test', got {list(splits)}")
    config, split, model = load_model(run_dir, split, checkpoint)
    if dist is not None:  # DDP
        model = model.to(dist.device)
    mask = config.mask_history if mask_history is None else mask_history
    kw = dict(
        batch_size=config.eval_batch_size,
        mask_history=mask,
        device=next(model.parameters()).device,
        progress=progress,
        dist=dist,
    )
    data = {
        "valid": (split.valid_inputs, split.valid_targets),
        "test": (split.test_inputs, split.test_targets),
    }
    ranks = {s: np.zeros(len(data[s][1]), dtype=np.float64) for s in splits}
    metrics: dict[str, Any] = {
        s: evaluate_ranking(
            model, *data[s], desc=f"{s} ({checkpoint}.pt)", ranks_out=ranks[s], **kw
        )
        for s in splits
    }
    if set(splits) != {"valid", "test"} or checkpoint != "best" or mask != config.mask_history:
        return metrics
    path = run_dir / "metrics.json"
    old = read_json(path, dict) if path.exists() else {}
    meta = read_json(run_dir / "run.json", dict) if (run_dir / "run.json").exists() else {}
    metrics["run"] = {
        "mode": config.mode,
        "model": config.model,
        "dataset": config.dataset,
        "seed": config.seed,
        "git_commit": meta.get("git_commit"),
        "best_epoch": meta.get("best_epoch", old.get("run", {}).get("best_epoch")),
        "best_epoch_adversarial": meta.get("best_epoch_adversarial"),
    }
    if dist is None or dist.is_main:
        # Per-user ranks, for paired tests between runs on the same split (users in file order).
        buf = io.BytesIO()
        np.savez_compressed(buf, **{s: r.astype(np.float32) for s, r in ranks.items()})
        atomic_write_bytes(run_dir / RANKS_FILE, buf.getvalue())
        atomic_write_json(path, metrics)
    return metrics
