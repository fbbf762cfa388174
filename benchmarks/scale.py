"""Scale benchmark: a million-item catalogue in bounded memory, and epoch time against data size.

Not a test (never run by CI). Every measurement runs in its own subprocess, so its peak resident
set size (``ru_maxrss``, the whole process: data, model and the step measured) is its own.

    python benchmarks/scale.py --synthetic /tmp/catrec-scale/synthetic-1m.txt \\
        --out docs/benchmarks/scale.json

(a) On the synthetic set (``benchmarks/make_synthetic.py``; written there if missing):
    ``eval``: full-ranking evaluation of ``--eval-users`` test users against a random SASRec;
    ``check``: chunked ranks against the plain whole-catalogue path for one batch of users;
    ``train``: ``--train-steps`` optimisation steps of standard SASRec (full softmax over a
    million items is ~1e12 flops per step: an epoch does not fit in the time here);
    ``robust``: adversarial replacement search (last position) plus clean and perturbed top-10
    lists for ``--robust-users`` users.
(b) Scaling series on Sports: 25%, 50%, 100% of its users and every sequence duplicated 4x under
    new user ids (``--series``: ``F`` = share of users, ``FxN`` = then each sequence N times,
    ``dup4`` = ``1.0x4``); one epoch of standard SASRec each (training part and whole epoch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SPORTS = HERE.parent.parent / "shared" / "data" / "Sports_and_Outdoors.txt"


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_sasrec(n_items: int, seed: int = 0):
    from catrec.models.sasrec import SASRec

    torch.manual_seed(seed)
    model = SASRec(n_items, hidden_size=64, max_len=50, n_layers=2, n_heads=2, dropout=0.5)
    return model.eval()


def load_split(path: Path):
    from catrec.data import leave_one_out, read_dataset

    return leave_one_out(read_dataset(path), 50)


# --------------------------------------------------------------------------- workers
def work_eval(args: argparse.Namespace) -> dict:
    from catrec.evaluate import evaluate_ranking

    t0 = time.perf_counter()
    split = load_split(args.synthetic)
    model = random_sasrec(split.n_items)
    load_s, rss_before = time.perf_counter() - t0, peak_rss_mib()
    U = args.eval_users
    t0 = time.perf_counter()
    metrics = evaluate_ranking(
        model, split.test_inputs[:U], split.test_targets[:U], batch_size=1024
    )
    return {
        "n_items": split.n_items,
        "n_users_data": split.n_users,
        "n_users_evaluated": U,
        "batch_size": 1024,
        "load_s": load_s,
        "eval_s": time.perf_counter() - t0,
        "peak_rss_before_eval_mib": rss_before,
        "NDCG@10": metrics["NDCG@10"],
        "MRR": metrics["MRR"],
    }


def work_check(args: argparse.Namespace) -> dict:
    from catrec.evaluate import score_users
    from catrec.fullrank import chunked_ranks, plan_chunks
    from catrec.metrics.ranking import ranks_from_scores
    from catrec.models.base import trim_padding

    split = load_split(args.synthetic)
    model = random_sasrec(split.n_items)
    B = args.check_users
    x = torch.as_tensor(split.test_inputs[:B])
    y = torch.as_tensor(split.test_targets[:B])
    plan = plan_chunks(B, split.n_items + 1)
    t0 = time.perf_counter()
    chunked, _ = chunked_ranks(model, trim_padding(x), y, plan.width)
    chunked_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = ranks_from_scores(score_users(model, x), y)
    plain_s = time.perf_counter() - t0
    return {
        "n_users": B,
        "chunk_width": plan.width,
        "identical": bool(torch.equal(plain, chunked)),
        "n_different": int((plain != chunked).sum()),
        "chunked_s": chunked_s,
        "plain_s": plain_s,
        "note": "peak RSS here is the plain path's [B, n_items + 1] scores",
    }


def work_train(args: argparse.Namespace) -> dict:
    from catrec.config import make_config
    from catrec.train.loop import build_objective, make_batch, training_set

    split = load_split(args.synthetic)
    cfg = make_config({"dataset": str(args.synthetic), "model": "sasrec", "mode": "standard"})
    model = random_sasrec(split.n_items).train()
    tset = training_set(split, model, cfg)
    objective = build_objective(cfg, tset, torch.device("cpu"))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(tset.window))
    rss_before = peak_rss_mib()
    times = []
    for step in range(args.train_steps):
        idx = rows[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        batch = make_batch(model, tset.window[idx], tset.weights[idx], cfg, torch.device("cpu"))
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        objective(model, batch)
        opt.step()
        times.append(time.perf_counter() - t0)
    n_batches = -(-len(tset.window) // cfg.batch_size)
    return {
        "n_items": split.n_items,
        "batch_size": cfg.batch_size,
        "steps": args.train_steps,
        "step_s": times,
        "mean_step_s_after_first": float(np.mean(times[1:] if len(times) > 1 else times)),
        "batches_per_epoch": n_batches,
        "peak_rss_before_training_mib": rss_before,
    }


def work_robust(args: argparse.Namespace) -> dict:
    from catrec.robustness import (
        adversarial_items,
        apply_replacements,
        select_columns,
        topk_and_ranks,
    )

    split = load_split(args.synthetic)
    model = random_sasrec(split.n_items)
    U = args.robust_users
    x, y = split.test_inputs[:U], split.test_targets[:U]
    cols = select_columns(x, "last", 1, np.random.default_rng(0))
    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    items = adversarial_items(model, x, y, cols, batch_size=1024)
    search_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    clean_top, _ = topk_and_ranks(model, x, y, 10, batch_size=1024)
    pert_top, _ = topk_and_ranks(model, apply_replacements(x, cols, items), y, 10, batch_size=1024)
    return {
        "n_users": U,
        "search_s": search_s,
        "topk_clean_and_perturbed_s": time.perf_counter() - t0,
        "n_replaced": int((items > 0).all(axis=1).sum()),
        "top10_changed_share": float((clean_top != pert_top).any(axis=1).mean()),
        "peak_rss_before_search_mib": rss_before,
    }


def work_epoch(args: argparse.Namespace) -> dict:
    from catrec.config import make_config
    from catrec.data import read_dataset
    from catrec.data.readers import SequenceData, write_sequence_file
    from catrec.train.loop import train

    data = read_dataset(SPORTS)
    seqs = [data.items[data.offsets[u] : data.offsets[u + 1]] for u in range(data.n_users)]
    # "F" keeps a random share F of the users (seed 0); "FxN" then repeats every sequence N
    # times under new user ids; "dup4" is "1.0x4".
    frac, _, times = ("1.0x4" if args.variant == "dup4" else args.variant).partition("x")
    rng = np.random.default_rng(0)
    pick = np.sort(rng.permutation(data.n_users)[: int(round(float(frac) * data.n_users))])
    keep = [seqs[u] for u in pick for _ in range(int(times or 1))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"sports-{args.variant}.txt"
        lens = np.array([len(s) for s in keep])
        sub = SequenceData(
            name=f"sports-{args.variant}",
            user_tokens=np.array([str(i + 1) for i in range(len(keep))]),
            item_tokens=data.item_tokens,
            offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
            items=np.concatenate(keep),
        )
        write_sequence_file(sub, path)
        del data, seqs, keep, sub
        cfg = make_config(
            {"dataset": str(path), "model": "sasrec", "mode": "standard", "epochs": 1}
        )
        t0 = time.perf_counter()
        train(cfg, Path(tmp) / "run", progress=False)
        total = time.perf_counter() - t0
        log = json.loads((Path(tmp) / "run" / "log.json").read_text())
        split = load_split(path)
    return {
        "variant": args.variant,
        "n_users": split.n_users,
        "n_items": split.n_items,
        "n_train_windows": int((split.train_seq[:, :-1] > 0).any(axis=1).sum()),
        "train_s": log[0]["train_time_s"],
        "epoch_s": log[0]["epoch_time_s"],
        "run_s": total,
    }


WORKERS = {
    "eval": work_eval,
    "check": work_check,
    "train": work_train,
    "robust": work_robust,
    "epoch": work_epoch,
}


def run_worker(task: str, args: argparse.Namespace, extra: list[str] | None = None) -> dict:
    """Run one task in a fresh (niced) subprocess; its JSON result plus wall time and peak RSS."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", task]
    cmd += ["--synthetic", str(args.synthetic), "--eval-users", str(args.eval_users)]
    cmd += ["--check-users", str(args.check_users), "--train-steps", str(args.train_steps)]
    cmd += ["--robust-users", str(args.robust_users)] + (extra or [])
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=lambda: os.nice(10))
    if out.returncode != 0:
        raise RuntimeError(f"{task} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["task"] = task
    res["wall_s"] = time.perf_counter() - t0
    return res


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--synthetic", type=Path, default=Path("/tmp/catrec-scale/synthetic-1m.txt")
    )
    parser.add_argument("--parts", default="eval,check,robust,train,series")
    parser.add_argument("--eval-users", type=int, default=20_000)
    parser.add_argument("--check-users", type=int, default=512)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--robust-users", type=int, default=300)
    parser.add_argument("--series", default="0.25,0.5,1.0,dup4")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--machine-shared",
        choices=["yes", "no"],
        default="yes",
        help="whether other jobs ran on the machine meanwhile (recorded with the results)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        res = WORKERS[args.worker](args)
        res["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(res))
        return

    from catrec.utils import atomic_write_json, git_commit

    parts = args.parts.split(",")
    if not args.synthetic.exists() and set(parts) & {"eval", "check", "train", "robust"}:
        subprocess.run(
            [sys.executable, str(HERE / "make_synthetic.py"), "--out", str(args.synthetic)],
            check=True,
        )
    doc: dict = {
        "command": "python " + " ".join(sys.argv),
        "git_commit": git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "machine_shared_with_other_jobs": args.machine_shared,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_avg_start": load_avg(),
        "synthetic": str(args.synthetic),
        "results": [],
        "series": [],
    }
    for task in ("eval", "check", "robust", "train"):
        if task in parts:
            r = run_worker(task, args)
            r["load_avg_after"] = load_avg()
            doc["results"].append(r)
            print(json.dumps(r), flush=True)
    if "series" in parts:
        for v in args.series.split(","):
            r = run_worker("epoch", args, ["--variant", v])
            r["load_avg_after"] = load_avg()
            doc["series"].append(r)
            print(json.dumps(r), flush=True)
    doc["load_avg_end"] = load_avg()
    print(format_tables(doc))
    if args.out:
        atomic_write_json(args.out, doc)
        header = (
            f"# {args.out.stem}\n\n`{doc['command']}`\n\ngit commit {doc['git_commit']}, "
            f"{doc['date']}, {doc['machine']}, torch {doc['torch']} ({doc['threads']} threads); "
            f"machine shared with other jobs: {doc['machine_shared_with_other_jobs']} "
            f"(load average {doc['load_avg_start']} at the start, {doc['load_avg_end']} at the "
            "end)\n"
        )
        args.out.with_suffix(".md").write_text(header + "\n```" + format_tables(doc) + "\n```\n")


def format_tables(doc: dict) -> str:
    lines = []
    if doc["results"]:
        lines += [f"\n{'task':<7} {'time s':>9} {'peak RSS MiB':>13}  detail"]
        for r in doc["results"]:
            t = {
                "eval": r.get("eval_s"),
                "check": r.get("chunked_s"),
                "train": r.get("mean_step_s_after_first"),
                "robust": r.get("search_s"),
            }[r["task"]]
            detail = {
                "eval": f"{r.get('n_users_evaluated')} users x {r.get('n_items')} items",
                "check": f"identical={r.get('identical')} ({r.get('n_users')} users; "
                f"plain path {r.get('plain_s', 0):.1f} s)",
                "train": f"s/step, {r.get('steps')} steps of {r.get('batch_size')} sequences",
                "robust": f"adversarial search, {r.get('n_users')} users",
            }[r["task"]]
            lines.append(f"{r['task']:<7} {t:>9.1f} {r['peak_rss_mib']:>13.0f}  {detail}")
    if doc["series"]:
        base = doc["series"][0]
        lines += [
            f"\n{'variant':<8} {'users':>7} {'items':>6} {'train s':>8} {'epoch s':>8} "
            f"{'RSS MiB':>8} {'users x':>8} {'train x':>8} {'RSS x':>6}"
        ]
        for r in doc["series"]:
            lines.append(
                f"{r['variant']:<8} {r['n_users']:>7} {r['n_items']:>6} {r['train_s']:>8.1f} "
                f"{r['epoch_s']:>8.1f} {r['peak_rss_mib']:>8.0f} "
                f"{r['n_users'] / base['n_users']:>8.2f} {r['train_s'] / base['train_s']:>8.2f} "
                f"{r['peak_rss_mib'] / base['peak_rss_mib']:>6.2f}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
