"""RecBole 1.2.1's SASRec and catrec's standard SASRec side by side on one dataset (prints a
table, writes JSON). Not a test, never part of CI.

Same hyper-parameters on both sides: d = 64, 2 blocks, 2 heads, inner (FFN) size 64, L = 50,
batch 256, full-softmax cross-entropy, Adam lr 1e-3, dropout 0.5 (hidden and attention), GELU,
LayerNorm eps 1e-8, init std 0.02, leave-one-out split, full ranking, validation NDCG@10 for
model selection with the same patience. The architectures still differ where the two codebases
do (RecBole: post-LN blocks, absolute positions from the left; catrec: pre-LN, positions from
the most recent item), and RecBole trains on every prefix of every sequence as a separate
example while catrec trains every position of a sequence at once. catrec is evaluated twice:
with history kept (``mask_history = False``, as RecBole's full sort ranks the validation and test
inputs) and with its default (history masked).

RecBole 1.2.1 does not import on numpy 2 / pandas 3 / current ray, so its half runs in a
subprocess with its own virtual environment (created once, from the repository root; torch from
the local CPU wheel, and setuptools < 81 because torch 2.13 needs >= 77):

    python -m venv .venv-recbole && .venv-recbole/bin/pip install 'torch==2.13.0+cpu' \\
        recbole==1.2.1 'numpy<2' 'pandas<2.3' 'scipy<1.14' 'setuptools<81'

Without that environment the RecBole half is skipped with a message. The RecBole side is driven
through ``recbole.config``, ``recbole.data`` and ``recbole.trainer`` (``quick_start`` imports ray).

Full run (RecBole capped at 12 epochs: about 46 min on a 2-core machine; run it on an idle
machine):

    python benchmarks/recbole_side_by_side.py --dataset beauty --recbole-max-epochs 12 \\
        --json docs/benchmarks/recbole_side_by_side.json

End-to-end check on a slice (minutes):

    python benchmarks/recbole_side_by_side.py --dataset beauty --users 2000 --max-epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HPARAMS = {
    "hidden_size": 64,
    "n_layers": 2,
    "n_heads": 2,
    "max_len": 50,
    "batch_size": 256,
    "lr": 1e-3,
    "dropout": 0.5,
}
DEFAULT_VENV = Path(__file__).resolve().parent.parent / ".venv-recbole"


def write_slice(src: Path, users: int | None, seq_out: Path, inter_out: Path) -> int:
    """Copy the first ``users`` lines of a sequence file (``user item item ...``) to ``seq_out``
    and write them as a RecBole atomic ``.inter`` file whose timestamp is the position."""
    lines = [ln.split() for ln in src.read_text().splitlines() if ln.strip()]
    if users is not None:
        lines = lines[:users]
    seq_out.write_text("".join(" ".join(p) + "\n" for p in lines))
    inter_out.parent.mkdir(parents=True, exist_ok=True)
    with inter_out.open("w") as fh:
        fh.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, *items in lines:
            for t, item in enumerate(items):
                fh.write(f"{user}\t{item}\t{t}\n")
    return len(lines)


# ------------------------------------------------------------------ RecBole half (its own venv)
def recbole_worker(data_dir: Path, name: str, max_epochs: int, patience: int, out: Path) -> None:
    """Train and evaluate RecBole's SASRec; runs under .venv-recbole's python."""
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender.sasrec import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    config = Config(
        model="SASRec",
        dataset=name,
        config_dict={
            "data_path": str(data_dir),
            "checkpoint_dir": str(data_dir / "saved"),
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "user_inter_num_interval": "[0,inf)",
            "item_inter_num_interval": "[0,inf)",
            "MAX_ITEM_LIST_LENGTH": HPARAMS["max_len"],
            "hidden_size": HPARAMS["hidden_size"],
            "inner_size": HPARAMS["hidden_size"],
            "n_layers": HPARAMS["n_layers"],
            "n_heads": HPARAMS["n_heads"],
            "hidden_dropout_prob": HPARAMS["dropout"],
            "attn_dropout_prob": HPARAMS["dropout"],
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-8,
            "initializer_range": 0.02,
            "loss_type": "CE",
            "train_neg_sample_args": None,
            "train_batch_size": HPARAMS["batch_size"],
            "eval_batch_size": 1024,
            "learning_rate": HPARAMS["lr"],
            "epochs": max_epochs,
            "stopping_step": patience,
            "eval_args": {
                "split": {"LS": "valid_and_test"},
                "order": "TO",
                "group_by": "user",
                "mode": "full",
            },
            "metrics": ["NDCG", "Hit"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "seed": 0,
            "reproducibility": True,
            "device": "cpu",
            "use_gpu": False,
            "show_progress": False,
            "save_dataset": False,
            "save_dataloaders": False,
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    epochs: list[dict] = []
    t0 = time.perf_counter()

    def on_epoch(epoch_idx: int, valid_score: float) -> None:
        epochs.append(
            {
                "epoch": epoch_idx + 1,
                "time_s": time.perf_counter() - t0,
                "valid_ndcg10": float(valid_score),
            }
        )

    best_score, best_valid = trainer.fit(
        train_data, valid_data, saved=True, show_progress=False, callback_fn=on_epoch
    )
    # RecBole's evaluate(load_best_model=True) calls torch.load with the default weights_only,
    # which torch >= 2.6 refuses for its checkpoint (RecBole issue 2212). The file was written a
    # moment ago by this very process, so it is trusted: load it with weights_only=False here.
    ckpt = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["state_dict"])
    model.load_other_parameter(ckpt.get("other_parameter"))
    valid = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    out.write_text(
        json.dumps(
            {
                "epochs": epochs,
                "best_valid_ndcg10": float(best_score),
                "valid": {k: float(v) for k, v in valid.items()},
                "test": {k: float(v) for k, v in test.items()},
            },
            indent=1,
        )
    )


# ------------------------------------------------------------------ catrec half
def run_catrec(dataset: Path, max_epochs: int, patience: int, mask_history: bool) -> dict:
    from catrec.config import make_config
    from catrec.train.loop import train

    cfg = make_config(
        {
            "dataset": str(dataset),
            "model": "sasrec",
            "mode": "standard",
            "epochs": max_epochs,
            "patience": patience,
            "mask_history": mask_history,
            **HPARAMS,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train(cfg, Path(tmp) / "run", progress=False)
        log = json.loads((Path(tmp) / "run" / "log.json").read_text())
    elapsed, epochs = 0.0, []
    for r in log:
        elapsed += r["epoch_time_s"]
        epochs.append(
            {"epoch": r["epoch"], "time_s": elapsed, "valid_ndcg10": r["valid"]["NDCG@10"]}
        )
    return {
        "epochs": epochs,
        "best_valid_ndcg10": max(e["valid_ndcg10"] for e in epochs),
        "valid": {"ndcg@10": metrics["valid"]["NDCG@10"], "hit@10": metrics["valid"]["HR@10"]},
        "test": {"ndcg@10": metrics["test"]["NDCG@10"], "hit@10": metrics["test"]["HR@10"]},
    }


def summarise(name: str, res: dict, target: float | None) -> dict:
    """One table row: time per epoch, time to reach ``target`` validation NDCG@10, metrics."""
    ep = res["epochs"]
    reached = next((e for e in ep if target is not None and e["valid_ndcg10"] >= target), None)
    return {
        "system": name,
        "epochs": len(ep),
        "s_per_epoch": ep[-1]["time_s"] / len(ep),
        "s_to_recbole_best": reached["time_s"] if reached else None,
        "best_valid_ndcg10": res["best_valid_ndcg10"],
        "valid_ndcg10": res["valid"]["ndcg@10"],
        "valid_hr10": res["valid"]["hit@10"],
        "test_ndcg10": res["test"]["ndcg@10"],
        "test_hr10": res["test"]["hit@10"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="beauty", help="catrec dataset name or file")
    parser.add_argument("--users", type=int, help="first N users only (a quick check)")
    parser.add_argument("--max-epochs", type=int, default=200, help="per system")
    parser.add_argument(
        "--recbole-max-epochs",
        type=int,
        help="RecBole's epoch cap when lower than --max-epochs (its epochs take ~4 min on 2 cores: "
        "12 is 46 min); catrec is then timed to RecBole's best within those epochs",
    )
    parser.add_argument("--patience", type=int, default=10, help="RecBole's stopping_step too")
    parser.add_argument("--recbole-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--recbole-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recbole_worker:
        data_dir, name, epochs, out = args.recbole_worker
        recbole_worker(Path(data_dir), name, int(epochs), args.patience, Path(out))
        return

    from catrec.data import resolve_dataset
    from catrec.utils import atomic_write_json, git_commit

    src = resolve_dataset(args.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        name = "catrec_slice"
        n_users = write_slice(src, args.users, tmp / "seq.txt", tmp / name / f"{name}.inter")
        print(f"{src.name}: {n_users} users", flush=True)
        results: dict[str, dict] = {}
        python = args.recbole_venv / "bin" / "python"
        if python.exists():
            out = tmp / "recbole.json"
            cmd = [
                str(python),
                str(Path(__file__).resolve()),
                "--recbole-worker",
                str(tmp),
                name,
                str(args.recbole_max_epochs or args.max_epochs),
                str(out),
                "--patience",
                str(args.patience),
            ]
            print("RecBole SASRec ...", flush=True)
            subprocess.run(cmd, check=True, cwd=tmp)  # RecBole writes log/ folders into cwd
            results["RecBole 1.2.1 SASRec"] = json.loads(out.read_text())
        else:
            print(
                f"RecBole half skipped: no {python} (create it with the command in this "
                "script's docstring)",
                flush=True,
            )
        for mask in (False, True):
            label = f"catrec standard SASRec ({'history masked' if mask else 'history kept'})"
            print(f"{label} ...", flush=True)
            results[label] = run_catrec(tmp / "seq.txt", args.max_epochs, args.patience, mask)

    rb = results.get("RecBole 1.2.1 SASRec")
    target = rb["best_valid_ndcg10"] if rb else None
    rows = [summarise(k, v, target) for k, v in results.items()]
    print(
        f"\n{'system':<44} {'ep':>3} {'s/epoch':>8} {'s to RB best':>12} "
        f"{'val NDCG':>8} {'test NDCG':>9} {'test HR':>8}"
    )
    for r in rows:
        reach = f"{r['s_to_recbole_best']:.0f}" if r["s_to_recbole_best"] is not None else "-"
        print(
            f"{r['system']:<44} {r['epochs']:>3} {r['s_per_epoch']:>8.1f} {reach:>12} "
            f"{r['best_valid_ndcg10']:>8.4f} {r['test_ndcg10']:>9.4f} {r['test_hr10']:>8.4f}"
        )
    if args.json:
        atomic_write_json(
            args.json,
            {
                "dataset": args.dataset,
                "users": n_users,
                "hparams": HPARAMS,
                "git_commit": git_commit(),
                "date": time.strftime("%Y-%m-%d"),
                "command": " ".join(sys.argv),
                "recbole_max_epochs": args.recbole_max_epochs or args.max_epochs,
                "load_average_after": os.getloadavg(),
                "rows": rows,
                "per_epoch": {k: v["epochs"] for k, v in results.items()},
            },
        )


if __name__ == "__main__":
    main()
