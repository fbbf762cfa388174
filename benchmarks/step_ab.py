"""Interleaved A/B timing of training steps (objective + backward, no optimizer step) on real
batches: every variant runs on the same batches, round-robin, so that a shared, noisy machine
slows them alike. Prints the median ms per step and the ratio to standard fp32. Not a test.

    python benchmarks/step_ab.py --dataset beauty --steps 8 --rounds 2

Variants: standard (fp32, bf16), cat exact (fp32, bf16), cat fused, and cat exact with the clean
gradients taken the way the objective took them before (``autograd.grad(retain_graph=True)`` and
then the loop's backward traversing the clean graph a second time).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from catrec.config import make_config
from catrec.models import build_model
from catrec.train import objectives
from catrec.train.loop import (
    autocast,
    build_objective,
    epoch_batches,
    load_split,
    make_batch,
    training_set,
)
from catrec.utils import seed_everything


def retain_graph_clean_gradients(model, l_rec, e, table):
    """The objective's clean gradients as taken before: the graph is kept and the returned loss
    carries ``L_rec`` itself, so the loop's backward traverses the clean graph again."""
    g, G = torch.autograd.grad(l_rec, [e, table], retain_graph=True)
    return g, G, l_rec - l_rec.detach()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--model", default="sasrec")
    parser.add_argument("--steps", type=int, default=8, help="batches per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default="all", help="comma-separated names, or all")
    args = parser.parse_args()

    variants = {
        "standard fp32": ("standard", "exact", "fp32", False),
        "standard bf16": ("standard", "exact", "bf16", False),
        "cat exact fp32": ("cat", "exact", "fp32", False),
        "cat exact fp32 (retain_graph)": ("cat", "exact", "fp32", True),
        "cat fused fp32": ("cat", "fused", "fp32", False),
        "cat exact bf16": ("cat", "exact", "bf16", False),
        "cat fused bf16": ("cat", "fused", "bf16", False),
    }
    if args.variants != "all":
        variants = {k: variants[k] for k in args.variants.split(",")}
    cpu = torch.device("cpu")
    base = make_config({"dataset": args.dataset, "model": args.model, "adv_warmup_epochs": 0})
    split = load_split(base)
    setups = {}
    for name, (mode, adv_objective, precision, old) in variants.items():
        cfg = make_config(
            {
                "dataset": args.dataset,
                "model": args.model,
                "mode": mode,
                "adv_warmup_epochs": 0,
                "adv_objective": adv_objective,
                "precision": precision,
            }
        )
        seed_everything(0)
        model = build_model(cfg, split.n_items)
        model.train()
        tset = training_set(split, model, cfg)
        setups[name] = (cfg, model, tset, build_objective(cfg, tset, cpu), old)
    cfg, model, tset, _, _ = next(iter(setups.values()))
    lengths = (tset.window > 0).sum(axis=1)
    rows = epoch_batches(lengths, cfg.batch_size, np.random.default_rng([0, 0]), True)
    rows = rows[: args.steps + 1]
    times: dict[str, list[float]] = {name: [] for name in setups}
    for r in range(args.rounds):
        for i, idx in enumerate(rows):
            for name, (cfg, model, tset, objective, old) in setups.items():
                batch = make_batch(model, tset.window[idx], tset.weights[idx], cfg, cpu)
                objectives.clean_gradients = (
                    retain_graph_clean_gradients if old else ORIGINAL_CLEAN_GRADIENTS
                )
                model.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                with autocast(cfg.precision, cpu):
                    loss, _ = objective(model, batch)
                loss.backward()
                if r > 0 or i > 0:  # the first batch warms up
                    times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    objectives.clean_gradients = ORIGINAL_CLEAN_GRADIENTS
    ref = statistics.median(next(iter(times.values())))
    print(f"\n{'variant':<32} {'median ms/step':>15} {'x first':>8}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<32} {med * 1e3:>15.1f} {med / ref:>8.2f}")


ORIGINAL_CLEAN_GRADIENTS = objectives.clean_gradients

if __name__ == "__main__":
    main()
