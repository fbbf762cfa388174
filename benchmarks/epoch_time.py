"""Epoch wall time of each model and training mode on a real dataset (prints a table).

Not a test: run it by hand, on an otherwise idle machine if you can; on a shared machine, compare
only the ratios within one run (and say the machine was shared).

    python benchmarks/epoch_time.py --dataset beauty --models sasrec --modes standard,adv,cat \
        --precisions fp32,bf16 --adv-objectives exact,fused

Each (model, mode) trains for ``--epochs`` epochs with the adversarial terms on from the first
epoch (``adv_warmup_epochs = 0``) and reports the mean training time per epoch (optimisation
only) and the mean full epoch time (training + validation full ranking), from the run's log.
``--precisions`` adds a row per precision and ``--adv-objectives`` a row per adversarial objective
for ``cat`` (for ``adv``, level 1 only, fused is the exact objective). "x standard" divides by the
standard row of the same model and precision.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from catrec.config import make_config
from catrec.train.loop import train
from catrec.utils import atomic_write_json, git_commit


def run_one(args, model: str, mode: str, precision: str, adv_objective: str) -> dict:
    """Train one setting for ``args.epochs`` epochs; its mean times per epoch."""
    cfg = make_config(
        {
            "dataset": args.dataset,
            "model": model,
            "mode": mode,
            "epochs": args.epochs,
            "adv_warmup_epochs": 0,
            "patience": args.epochs + 1,
            "precision": precision,
            "adv_objective": adv_objective,
            "device": args.device,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(cfg, Path(tmp) / "run", progress=False)
        total = time.perf_counter() - t0
        log = json.loads((Path(tmp) / "run" / "log.json").read_text())
    row = {
        "model": model,
        "mode": mode,
        "precision": precision,
        "adv_objective": adv_objective if mode != "standard" else "-",
        "train_s": sum(r["train_time_s"] for r in log) / len(log),
        "epoch_s": sum(r["epoch_time_s"] for r in log) / len(log),
        "run_s": total,
        "valid_ndcg10": [r["valid"]["NDCG@10"] for r in log],
    }
    print(
        f"  {model} {mode} {precision} {row['adv_objective']}: train {row['train_s']:.1f} s/epoch, "
        f"epoch {row['epoch_s']:.1f} s",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--models", default="sasrec", help="comma-separated")
    parser.add_argument("--modes", default="standard,adv,cat", help="comma-separated")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16")
    parser.add_argument("--adv-objectives", default="exact", help="comma-separated: exact, fused")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    rows = []
    for model in args.models.split(","):
        for precision in args.precisions.split(","):
            for mode in args.modes.split(","):
                objectives = args.adv_objectives.split(",") if mode == "cat" else ["exact"]
                for adv_objective in objectives:
                    rows.append(run_one(args, model, mode, precision, adv_objective))
    print(
        f"\n{args.dataset}, {args.epochs} epochs each, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(
        f"{'model':<9} {'mode':<9} {'prec':<5} {'adv obj':<8} {'train s/epoch':>14} "
        f"{'x standard':>11} {'epoch s':>9} {'x standard':>11}"
    )
    for r in rows:
        base = next(
            (
                b
                for b in rows
                if b["model"] == r["model"]
                and b["mode"] == "standard"
                and b["precision"] == r["precision"]
            ),
            None,
        )
        rt = f"{r['train_s'] / base['train_s']:.2f}" if base else "-"
        re_ = f"{r['epoch_s'] / base['epoch_s']:.2f}" if base else "-"
        print(
            f"{r['model']:<9} {r['mode']:<9} {r['precision']:<5} {r['adv_objective']:<8} "
            f"{r['train_s']:>14.2f} {rt:>11} "
            f"{r['epoch_s']:>9.2f} {re_:>11}"
        )
    if args.json:
        atomic_write_json(
            args.json,
            {
                "dataset": args.dataset,
                "epochs": args.epochs,
                "git_commit": git_commit(),
                "date": time.strftime("%Y-%m-%d"),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "device": args.device,
                "command": " ".join(sys.argv),
                "load_average_end": os.getloadavg(),
                "rows": rows,
            },
        )


if __name__ == "__main__":
    main()
