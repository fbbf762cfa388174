"""Data-parallel training on PyTorch's own engine: ``torchrun`` and DistributedDataParallel.

``catrec train`` runs unchanged under ``torchrun --nproc_per_node N`` (and multi-node rendezvous):
:func:`setup` reads torchrun's ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``, picks
``cuda:LOCAL_RANK`` with NCCL when CUDA is present, else the CPU with Gloo, and returns a
:class:`DistContext`; a plain process (no ``WORLD_SIZE``, or ``WORLD_SIZE=1``) gets ``None`` and the
loop runs exactly as it always did (same numbers, bit for bit).

What a step is under DDP (design):

* ``batch_size`` is the *global* batch. Every rank draws the same epoch permutation from
  ``(seed, epoch)`` and the same batches; rank r trains on rows ``batch[r::world]`` of each batch
  (strided, so length-bucketed batches stay balanced). One DDP step is therefore one
  single-process step on the union batch, with the same learning rate, and a run gives the same
  model (up to float rounding) at any world size.
* The single process averages the loss over all target positions of the union batch, so rank r
  weighs its own mean loss by ``share = N_r / N`` (``N`` summed over ranks each step), and the
  parameter gradients are **summed** across ranks, not averaged: :func:`wrap` registers a sum
  comm hook on DDP. Sum of ``share_r * grad(mean_r)`` = grad of the union's mean.
* DDP sees the whole objective as one ``forward``: :class:`StepModule` wraps
  ``objective(model, batch)`` (clean, level-1 and level-2 passes) and the loop calls
  ``loss.backward()`` once, so each parameter's gradient (the sum of the three passes'
  contributions, accumulated by autograd before the parameter's hook fires) is all-reduced
  exactly once per optimiser step. The objective's clean gradients are taken with
  ``torch.autograd.grad``, which never runs the parameters' gradient accumulators, so DDP's
  hooks do not see it (no double reduction, no "marked ready twice"), and every parameter is
  used by every pass (no unused-parameter errors). Chosen over ``no_sync()`` plus a hand-made
  all-reduce because DDP then overlaps the reduction with the backward, in buckets, as designed.
* Batch-level quantities of the objective are reduced inside the forward through
  :meth:`DistContext.sum_`: level 1's relative scale (mean input-embedding norm over the union
  batch's real positions) and level 2's item-table gradient ``G`` (``sum_r share_r * G_r``, the
  union's ``G``; its row-wise normalisation then matches the single process). Level 1's
  direction needs no reduction: each sequence's gradient rows depend on that sequence alone and
  the loss's scale (local vs union mean) is removed by the L2 normalisation.
* Cascade weights are deterministic numpy on the full training set: every rank computes the same.
* Evaluation is sharded by evaluation *batch* (the single process's own batches, round-robin over
  ranks) and the per-user ranks are summed across ranks, so the metrics equal the single
  process's exactly, whatever the number of users (see :func:`catrec.evaluate.evaluate_ranking`).
* Rank 0 alone takes the run lock and writes checkpoints, logs and ``run.json``; the run folder
  must be on a file system every node sees (``--resume`` and the final evaluation read it).
* Collectives time out after ``CATREC_DIST_TIMEOUT`` seconds (default 600): a rank that dies or
  stalls ends the job with :class:`DistributedError` on every rank instead of a hang.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import signal
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from catrec.errors import CatrecError, ConfigError

TIMEOUT_ENV = "CATREC_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
T = TypeVar("T")


class DistributedError(RuntimeError):
    """Another rank died or stopped answering; the job cannot continue (resume it)."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in a ``torchrun`` job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    timeout_s: float

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------ collectives
    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Turn a failed collective inside the block into :class:`DistributedError`."""
        try:
            yield
        except DistributedError:
            raise
        except (RuntimeError, ValueError) as exc:
            if not is_comm_error(exc):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: lost the other ranks during {what} (a "
                f"rank died, or did not answer within {self.timeout_s:g} s, see "
                f"{TIMEOUT_ENV}): {first}"
            ) from exc

    def sum_(self, tensor: Tensor, what: str = "a reduction") -> Tensor:
        """All-reduce ``tensor`` in place (sum over ranks) and return it."""
        with self.errors(what):
            dist.all_reduce(tensor)
        return tensor

    def any(self, flag: bool, what: str = "a stop check") -> bool:
        """Whether ``flag`` is true on any rank."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.sum_(t, what).item() > 0)

    def gather_objects(self, obj: Any, what: str = "a gather") -> list[Any]:
        """``obj`` of every rank, in rank order, on every rank (pickled)."""
        out: list[Any] = [None] * self.world_size
        with self.errors(what):
            dist.all_gather_object(out, obj)
        return out

    def barrier(self, what: str = "a barrier") -> None:
        with self.errors(what):
            dist.barrier()

    def on_main(self, fn: Callable[[], T], what: str = "a rank-0 step") -> T | None:
        """Run ``fn`` on rank 0 only; if it raises, every rank raises the same error.

        Returns ``fn()``'s result on rank 0 and ``None`` elsewhere. A :class:`CatrecError` is
        re-raised with its own class on every rank (the CLI's exit status 2 and one line).
        """
        failure: Any = None
        result = None
        if self.is_main:
            try:
                result = fn()
            except Exception as exc:
                failure = exc
        payload = [_portable(failure)]
        with self.errors(what):
            dist.broadcast_object_list(payload, src=0)
        if failure is not None:
            raise failure
        if payload[0] is not None:
            cls, msg = payload[0]
            raise cls(msg)
        return result

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This rank's rows of a (global) batch: ``rows[rank::world]``; may be empty."""
        return rows[self.rank :: self.world_size]


def _portable(exc: BaseException | None) -> tuple[type, str] | None:
    """``(exception class, message)`` safe to send to other ranks (None when no error)."""
    if exc is None:
        return None
    cls = type(exc) if isinstance(exc, CatrecError | DistributedError) else DistributedError
    msg = str(exc) if cls is type(exc) else f"rank 0 failed: {type(exc).__name__}: {exc}"
    try:
        pickle.dumps(cls)
    except Exception:  # a class defined where other ranks cannot import it
        cls = DistributedError
    return cls, msg


def is_comm_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the communication layer (a dead or silent peer)."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return any(
        word in text
        for word in ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket")
    )


def env_world() -> tuple[int, int, int] | None:
    """``(rank, local_rank, world_size)`` from torchrun's environment, or None when not under
    torchrun or when the world is a single process."""
    if "WORLD_SIZE" not in os.environ:
        return None
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ConfigError(f"torchrun environment: {exc}") from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise ConfigError(f"torchrun environment: RANK={rank} outside 0..WORLD_SIZE-1={world - 1}")
    return rank, local, world


def timeout_s() -> float:
    """Collective timeout in seconds, from ``CATREC_DIST_TIMEOUT`` (default 600)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return value


def setup(device: str = "cpu") -> DistContext | None:
    """Join the torchrun job this process belongs to (idempotent); None for a plain process.

    The device is chosen per rank: ``cuda:LOCAL_RANK`` (NCCL) when CUDA is available, else the CPU
    (Gloo). ``device`` from the config only matters to refuse what cannot work (``mps``, or
    ``cuda`` without CUDA); hide the GPUs (``CUDA_VISIBLE_DEVICES=``) to train on CPUs.
    """
    world = env_world()
    if world is None:
        return None
    rank, local, size = world
    if device == "mps":
        raise ConfigError("device 'mps': distributed training runs on CUDA (NCCL) or CPUs (Gloo)")
    cuda = torch.cuda.is_available()
    if device.startswith("cuda") and not cuda:
        raise ConfigError(f"device {device!r}: this torch build has no CUDA device")
    if cuda:
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK={local} but only {torch.cuda.device_count()} CUDA devices are "
                "visible: use --nproc_per_node <= the number of GPUs"
            )
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    limit = timeout_s()
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            timeout=datetime.timedelta(seconds=limit),
        )
    return DistContext(rank=rank, local_rank=local, world_size=size, device=dev, timeout_s=limit)


def shutdown() -> None:
    """Leave the process group, if one was joined (end of a ``catrec`` command)."""
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s torch generator (dropout, cloze masks, negatives), so that ranks
    do not draw identical masks for different rows."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


# ------------------------------------------------------------------ the DDP step
class StepModule(nn.Module):
    """The whole objective as one ``forward`` (clean, level-1, level-2 passes), for DDP.

    ``forward(batch, adversarial)`` returns the objective's ``(loss, diagnostics)``; the loss is
    already weighted by the rank's share (``batch.loss_scale``), the diagnostics are multiplied by
    ``batch.share`` so that their sum over ranks is the union batch's value.
    """

    def __init__(self, model: nn.Module, objective: Callable) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch, adversarial: bool = True):
        loss, diag = self.objective(self.model, batch, adversarial=adversarial)
        return loss, {k: v * batch.share for k, v in diag.items()}


def _sum_hook(_state, bucket):  # no annotations: DDP checks them, and here they are strings
    """DDP comm hook: sum (not average) the bucket over ranks; see the module docstring."""
    fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


class DDPObjective:
    """Callable with the objective's signature ``(model, batch, adversarial)`` that runs the step
    through DistributedDataParallel (the ``model`` argument is the wrapped one)."""

    def __init__(self, model: nn.Module, objective: Any, ctx: DistContext) -> None:
        objective.dist = ctx
        self.ctx = ctx
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        with ctx.errors("the start of DistributedDataParallel"):
            self.ddp = nn.parallel.DistributedDataParallel(
                StepModule(model, objective), device_ids=ids
            )  # catrec's models hold no buffers: nothing to sync in forward
        self.ddp.register_comm_hook(None, _sum_hook)

    def __call__(self, model: nn.Module, batch, adversarial: bool = True):
        return self.ddp(batch, adversarial)


def shard_batch(
    ctx: DistContext, rows: np.ndarray, n_targets: np.ndarray
) -> tuple[np.ndarray, float]:
    """(this rank's rows, its share of the union batch's target positions).

    A rank left without rows (a last batch smaller than the world) trains on one row of the
    batch with share 0: its loss, gradients and contributions to the reductions are zero, but
    it runs the same collectives as the others. Counts are the expected positions with a target
    (exact for causal models; for cloze training the mask draws make them an expectation).
    """
    mine = ctx.shard(rows)
    total = float(n_targets[rows].sum())
    if len(mine) == 0:
        return rows[:1], 0.0
    return mine, float(n_targets[mine].sum()) / total if total > 0 else 0.0


class DistSignalGuard:
    """A process's signal guard (``local``: the loop's, with ``signal`` and the context-manager
    protocol) whose flag every rank agrees on.

    Each read of :attr:`received` is a collective (any rank signalled means all stop), which the
    loop reads at the same points on every rank, so all ranks stop after the same step and write
    one consistent checkpoint.
    """

    def __init__(self, ctx: DistContext, local: Any) -> None:
        self.ctx = ctx
        self.local = local

    def __enter__(self) -> DistSignalGuard:
        self.local.__enter__()
        return self

    @property
    def received(self) -> int | None:
        mine = self.local.signal
        if self.ctx.any(mine is not None, "the stop check"):
            return mine or int(signal.SIGTERM)
        return None

    def __exit__(self, *exc) -> None:
        self.local.__exit__(*exc)


def rng_states() -> dict[str, Any]:
    """This rank's torch RNG state (CPU and its CUDA device), for a checkpoint."""
    cuda = [torch.cuda.get_rng_state()] if torch.cuda.is_available() else []
    return {"torch_rng": torch.get_rng_state(), "cuda_rng": cuda}


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore :func:`rng_states`."""
    torch.set_rng_state(states["torch_rng"])
    if torch.cuda.is_available() and states.get("cuda_rng"):
        torch.cuda.set_rng_state(states["cuda_rng"][0])


def restore_rank_rng(ctx: DistContext, ckpt: dict[str, Any], seed: int) -> None:
    """Continue this rank's random stream from a checkpoint written by a job of the same size;
    otherwise (another world size, or a single-process checkpoint) start a fresh stream."""
    states = ckpt.get("rank_rng")
    if isinstance(states, list) and len(states) == ctx.world_size:
        set_rng_states(states[ctx.rank])
        return
    if ctx.is_main:
        warnings.warn(
            f"resuming with {ctx.world_size} ranks a checkpoint written by "
            f"{len(states) if isinstance(states, list) else 1}: the ranks' random streams "
            "(dropout, cloze masks, negatives) restart, so the run is not bit-identical to an "
            "uninterrupted one",
            stacklevel=2,
        )
    step = ckpt.get("train_state", {})
    torch.manual_seed(rank_seed(seed + 7919 * (1 + int(step.get("epoch", 0))), ctx.rank))


# ------------------------------------------------------------------ None-tolerant helpers
def on_main(ctx: DistContext | None, fn: Callable[[], T]) -> T | None:
    """``fn()`` in a plain process; rank 0 only under DDP (see :meth:`DistContext.on_main`)."""
    return fn() if ctx is None else ctx.on_main(fn, "the run folder check")


def step_errors(ctx: DistContext | None) -> contextlib.AbstractContextManager:
    """A training step's failed collectives as :class:`DistributedError` (no-op without DDP)."""
    return contextlib.nullcontext() if ctx is None else ctx.errors("a training step")


def sum_dict(ctx: DistContext, values: dict[str, float]) -> dict[str, float]:
    """Sum float values over ranks (every rank holds the same keys in the same order)."""
    if not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=ctx.device)
    ctx.sum_(t, "the epoch's diagnostics")
    return dict(zip(values, t.tolist(), strict=True))
