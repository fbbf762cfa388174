"""Profile training steps of one mode on a real dataset (prints torch.profiler's top operators).

Not a test. Example:

    python benchmarks/profile_step.py --dataset beauty --mode cat --steps 20

Builds the run's model, cascade weights and the first ``--steps`` batches of epoch 0 exactly as
the loop does, warms up on 3 steps, then profiles ``--steps`` steps (objective, backward and Adam)
and prints the operators by self CPU time, plus the mean wall time per step.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from catrec.config import make_config
from catrec.models import build_model
from catrec.train.loop import (
    autocast,
    build_objective,
    epoch_batches,
    load_split,
    make_batch,
    training_set,
)
from catrec.utils import seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--model", default="sasrec")
    parser.add_argument("--mode", default="cat")
    parser.add_argument("--adv-objective", default="exact")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rows", type=int, default=25, help="operators to print")
    parser.add_argument("--no-profiler", action="store_true", help="wall time only")
    args = parser.parse_args()

    cfg = make_config(
        {
            "dataset": args.dataset,
            "model": args.model,
            "mode": args.mode,
            "adv_warmup_epochs": 0,
            "adv_objective": args.adv_objective,
            "precision": args.precision,
        }
    )
    split = load_split(cfg)
    seed_everything(cfg.seed)
    model = build_model(cfg, split.n_items)
    tset = training_set(split, model, cfg)
    objective = build_objective(cfg, tset, torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    lengths = (tset.window > 0).sum(axis=1)
    batches = epoch_batches(lengths, cfg.batch_size, np.random.default_rng([0, 0]), True)
    cpu = torch.device("cpu")
    batches = [make_batch(model, tset.window[r], tset.weights[r], cfg, cpu) for r in batches]
    model.train()

    def step(b) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(cfg.precision, torch.device("cpu")):
            loss, _ = objective(model, b)
        loss.backward()
        optimizer.step()

    for b in batches[:3]:
        step(b)
    todo = batches[3 : 3 + args.steps]
    if args.no_profiler:
        t0 = time.perf_counter()
        for b in todo:
            step(b)
        print(f"{(time.perf_counter() - t0) / len(todo) * 1e3:.1f} ms/step")
        return
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for b in todo:
            step(b)
        wall = time.perf_counter() - t0
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    print(f"{wall / len(todo) * 1e3:.1f} ms/step under the profiler ({len(todo)} steps)")


if __name__ == "__main__":
    main()
