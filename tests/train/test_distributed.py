"""Data-parallel training under a torchrun-like environment (issue 14), on CPUs with Gloo.

One module-scoped job does the expensive part once: two ranks train ``cat`` (dropout off) through
the real CLI, rank 1 is SIGKILLed mid-epoch 2, and the job is resumed with ``--resume`` by two
fresh ranks. The tests then check, against a single-process run on the same data: the weights
after every step (identical on both ranks, equal to the single process's to 1e-5, whose batch is
the union of the ranks' batches), the sharded evaluation (exactly the single-process metrics,
41 users in 11 evaluation batches, not divisible by the world), the clear error on the surviving
rank, and the finished resumed run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from catrec.config import make_config
from catrec.evaluate import evaluate_ranking
from catrec.models import build_model
from catrec.train import distributed
from catrec.train.loop import evaluate_run, load_split, train, training_set

WORKER = Path(__file__).with_name("ddp_worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"
N_USERS = 41  # odd: neither the training rows nor the evaluation users split evenly
TIMEOUT_S = 8  # CATREC_DIST_TIMEOUT of the job: a hang would show as a slow test
pytestmark = pytest.mark.slow  # the module's job launches ranks through the CLI (about 15 s)


def _write_sequences(path: Path) -> int:
    """Synthetic sequence file; returns the number of training rows (users with >= 4 items)."""
    rng = np.random.default_rng(0)
    rows = 0
    with path.open("w") as fh:
        for u in range(N_USERS):
            n = int(rng.integers(3, 13))
            rows += n >= 4
            items = rng.choice(np.arange(1, 31), n, replace=False)
            fh.write(" ".join(map(str, [u + 1, *items])) + "\n")
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, tag: str, cli_args: list[str], kill_at: int | None = None) -> list[dict]:
    """Run a 2-rank job like torchrun would; always reaps both processes."""
    port = _free_port()
    procs = []
    try:
        for rank in range(2):
            env = os.environ | {
                "WORLD_SIZE": "2",
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "CATREC_DIST_TIMEOUT": str(TIMEOUT_S),
                "CUDA_VISIBLE_DEVICES": "",
                "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(SRC),
            }
            extra = [str(kill_at)] if kill_at is not None else []
            cmd = [sys.executable, str(WORKER), str(out / tag), *extra, "--", *cli_args]
            procs.append(
                subprocess.Popen(
                    cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
            )
        results = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=240)
            results.append({"rc": p.returncode, "stdout": stdout, "stderr": stderr})
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    data = root / "seq.txt"
    n_rows = _write_sequences(data)
    # A last batch of one row: one rank has nothing to train on (weight 0) in that step.
    batch = next(b for b in range(5, 16) if n_rows % b == 1)
    steps = -(-n_rows // batch)  # per epoch
    kill_at = steps + 2  # rank 1 dies mid-epoch 2
    options = {"dataset": str(data), "mode": "cat", "adv_warmup_epochs": 0, "dropout": 0.0,
               "hidden_size": 16, "max_len": 8, "batch_size": batch, "epochs": 2,
               "eval_batch_size": 4}  # fmt: skip
    args = ["train", "--out", str(root / "ddp"), "--quiet"]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]

    # The single process, in this process, recording its weights after each step.
    ref: list[torch.Tensor] = []
    original = torch.optim.Adam.step

    def record(self, *a, **k):
        out = original(self, *a, **k)
        ref.append(torch.cat([p.detach().reshape(-1) for g in self.param_groups
                              for p in g["params"]]).clone())  # fmt: skip
        return out

    torch.optim.Adam.step = record
    try:
        ref_metrics = train(make_config(options), root / "single", progress=False)
    finally:
        torch.optim.Adam.step = original

    t0 = time.perf_counter()
    killed = _launch(root, "cut", args, kill_at=kill_at)
    killed_s = time.perf_counter() - t0
    resumed = _launch(root, "resumed", ["train", "--resume", str(root / "ddp"), "--quiet"])
    return {
        "root": root,
        "config": make_config(options),
        "steps": steps,
        "kill_at": kill_at,
        "ref": torch.stack(ref),
        "ref_metrics": ref_metrics,
        "killed": killed,
        "killed_s": killed_s,
        "resumed": resumed,
        "cut": [torch.load(root / f"cut-rank{r}.pt") for r in range(2)],
        "res": [torch.load(root / f"resumed-rank{r}.pt") for r in range(2)],
    }


def test_ddp_steps_equal_the_single_process_on_the_union_batch(job):
    ref, cut, res, steps, kill_at = (job[k] for k in ("ref", "cut", "res", "steps", "kill_at"))
    assert len(ref) == 2 * steps and len(cut[0]) == len(cut[1]) == kill_at
    assert all(torch.equal(a, b) for a, b in zip(cut[0], cut[1], strict=True))  # rank 0 == 1
    assert all(torch.equal(a, b) for a, b in zip(res[0], res[1], strict=True))
    torch.testing.assert_close(cut[0], ref[:kill_at], rtol=0, atol=1e-5)
    # The resumed job replays epoch 2 from the checkpoint written after epoch 1.
    torch.testing.assert_close(res[0], ref[steps:], rtol=0, atol=1e-5)
    torch.testing.assert_close(res[0][:2], cut[0][steps:], rtol=0, atol=0)  # bit-exact resume
    assert not torch.equal(ref[0], ref[1])  # the steps did move the weights


def test_killed_rank_ends_the_job_with_a_clear_error_and_resume_finishes(job):
    rank0, rank1 = job["killed"]
    assert rank1["rc"] == -signal.SIGKILL
    assert rank0["rc"] == 1, rank0["stderr"][-2000:]
    err = rank0["stderr"].strip().splitlines()[-1]
    assert err.startswith("catrec: error: rank 0 of 2: lost the other ranks")
    assert "--resume" in err and "last.pt" in err
    assert job["killed_s"] < 120  # no hang until a default 30-minute timeout
    for r in job["resumed"]:
        assert r["rc"] == 0, r["stderr"][-2000:]
    run = job["root"] / "ddp"
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "finished" and meta["epochs_run"] == 2
    assert [r["epoch"] for r in json.loads((run / "log.json").read_text())] == [1, 2]
    assert "run folder:" in job["resumed"][0]["stdout"]  # rank 0 reports ...
    assert job["resumed"][1]["stdout"] == ""  # ... the others stay quiet


def test_sharded_evaluation_equals_single_process_evaluation(job):
    run = job["root"] / "ddp"
    sharded = json.loads((run / "metrics.json").read_text())  # written by the 2-rank job
    single = evaluate_run(run)  # the same best.pt, one process
    assert sharded["valid"] == single["valid"] and sharded["test"] == single["test"]
    assert single["test"]["n_users"] == N_USERS
    for split in ("valid", "test"):  # and the model is the single process's, to rounding
        for key, value in job["ref_metrics"][split].items():
            assert value == pytest.approx(single[split][key], abs=0.03), (split, key)


def test_cascade_weights_are_identical_in_every_process(job):
    """Every rank computes them itself: deterministic numpy, bit for bit across processes."""
    config = job["config"]
    split = load_split(config)
    tset = training_set(split, build_model(config, split.n_items), config)
    for run in ("ddp", "single"):
        saved = np.load(job["root"] / run / "cascade.npz")
        assert np.array_equal(saved["position"], tset.weights)
        assert np.array_equal(saved["item"], tset.item_weights)


class _ThreadRank:
    """A rank of an in-process world of threads: ``sum_`` adds the ranks' tensors."""

    def __init__(self, rank: int, world: int, slots: list, barrier: threading.Barrier) -> None:
        self.rank, self.world_size, self.device = rank, world, torch.device("cpu")
        self.slots, self.barrier = slots, barrier

    def sum_(self, tensor, what=""):
        self.slots[self.rank] = tensor.clone()
        self.barrier.wait()
        total = torch.stack(self.slots).sum(0)
        self.barrier.wait()
        tensor.copy_(total)
        return tensor


@pytest.mark.parametrize(("n_users", "world", "batch"), [(7, 3, 2), (10, 4, 3), (5, 2, 8)])
def test_sharded_evaluation_counts_every_user_once(n_users, world, batch):
    torch.manual_seed(0)
    config = make_config({"dataset": "x", "hidden_size": 8, "max_len": 6, "dropout": 0.0})
    model = build_model(config, 20)
    rng = np.random.default_rng(1)
    inputs = np.zeros((n_users, 6), dtype=np.int64)
    for u in range(n_users):
        n = rng.integers(1, 7)
        inputs[u, 6 - n :] = rng.choice(np.arange(1, 21), n, replace=False)
    targets = rng.integers(1, 21, n_users)
    single = evaluate_ranking(model, inputs, targets, batch_size=batch)
    slots, barrier, results = [None] * world, threading.Barrier(world), [None] * world

    def rank(r):
        ctx = _ThreadRank(r, world, slots, barrier)
        results[r] = evaluate_ranking(model, inputs, targets, batch_size=batch, dist=ctx)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(r == single for r in results)


def test_shards_cover_a_batch_once_and_their_shares_add_up():
    n_targets = np.array([3, 1, 4, 1, 5, 9, 2], dtype=float)
    rows = np.array([6, 0, 3, 5, 2])
    for world in (1, 2, 3, 7):
        parts = []
        for r in range(world):
            ctx = distributed.DistContext(r, r, world, torch.device("cpu"), 1.0)
            parts.append(distributed.shard_batch(ctx, rows, n_targets))
        real = [(m, s) for m, s in parts if s > 0]
        assert sorted(np.concatenate([m for m, _ in real]).tolist()) == sorted(rows.tolist())
        assert sum(s for _, s in parts) == pytest.approx(1.0)
        assert all(len(m) == 1 for m, s in parts if s == 0)  # an idle rank trains with weight 0


def test_a_plain_process_is_not_distributed(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.env_world() is None and distributed.setup() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.setup() is None  # torchrun --nproc_per_node 1: as a plain process
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(distributed.ConfigError, match="RANK=2"):
        distributed.env_world()
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(distributed.ConfigError, match="CATREC_DIST_TIMEOUT"):
        distributed.timeout_s()
