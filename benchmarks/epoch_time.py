"""Epoch wall time of each model and training mode on a real dataset (prints a table).

Not a test: run it by hand on an otherwise idle machine.

    python benchmarks/epoch_time.py --dataset beauty --models sasrec --modes standard,adv,cat

Each (model, mode) trains for ``--epochs`` epochs with the adversarial terms on from the first
epoch (``adv_warmup_epochs = 0``) and reports the mean training time per epoch (optimisation
only) and the mean full epoch time (training + validation full ranking), from the run's log.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from catrec.config import make_config
from catrec.train.loop import train
from catrec.utils import atomic_write_json, git_commit


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--models", default="sasrec", help="comma-separated")
    parser.add_argument("--modes", default="standard,adv,cat", help="comma-separated")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    rows = []
    for model in args.models.split(","):
        for mode in args.modes.split(","):
            cfg = make_config(
                {
                    "dataset": args.dataset,
                    "model": model,
                    "mode": mode,
                    "epochs": args.epochs,
                    "adv_warmup_epochs": 0,
                    "patience": args.epochs + 1,
                }
            )
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                train(cfg, Path(tmp) / "run", progress=False)
                total = time.perf_counter() - t0
                log = json.loads((Path(tmp) / "run" / "log.json").read_text())
            train_s = sum(r["train_time_s"] for r in log) / len(log)
            epoch_s = sum(r["epoch_time_s"] for r in log) / len(log)
            rows.append(
                {
                    "model": model,
                    "mode": mode,
                    "train_s": train_s,
                    "epoch_s": epoch_s,
                    "run_s": total,
                }
            )
            print(
                f"  {model} {mode}: train {train_s:.1f} s/epoch, epoch {epoch_s:.1f} s", flush=True
            )

    print(
        f"\n{args.dataset}, {args.epochs} epochs each, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(
        f"{'model':<9} {'mode':<9} {'train s/epoch':>14} {'x standard':>11} "
        f"{'epoch s':>9} {'x standard':>11}"
    )
    for r in rows:
        base = next((b for b in rows if b["model"] == r["model"] and b["mode"] == "standard"), None)
        rt = f"{r['train_s'] / base['train_s']:.2f}" if base else "-"
        re_ = f"{r['epoch_s'] / base['epoch_s']:.2f}" if base else "-"
        print(
            f"{r['model']:<9} {r['mode']:<9} {r['train_s']:>14.2f} {rt:>11} "
            f"{r['epoch_s']:>9.2f} {re_:>11}"
        )
    if args.json:
        atomic_write_json(
            args.json,
            {
                "dataset": args.dataset,
                "epochs": args.epochs,
                "git_commit": git_commit(),
                "rows": rows,
            },
        )


if __name__ == "__main__":
    main()
