"""Side-by-side comparison of training modes: accuracy and robustness over seeds (CAT.md §5).

``catrec compare --dataset beauty --model sasrec --modes standard,adv,cat --seeds 0,1,2 --out DIR``

    DIR/runs/<mode>-seed<seed>/   one training run each (reused when finished, resumed when
                                  interrupted, trained otherwise)
    DIR/plan.npz                  the replacement plan shared by every model
    DIR/compare.json              every run's numbers and the mean / std over seeds
    DIR/compare.md                the same as Markdown tables, with where cat does not win
    DIR/<metric>_by_position_<replacement>.png
                                  RBO@10 and NDCG@10 drop against the replaced position, one line
                                  per mode, error bars = one standard deviation over seeds

``--parallel-runs N`` trains up to N runs at once, each in its own process (a study is many small
runs more often than one big one); with several GPUs and ``--device cuda`` the runs are dealt
round-robin to ``cuda:0``, ``cuda:1``, ... Robustness evaluation then runs in this process.

Everything is resumable: finished runs and robustness records already in a run's
``robustness.json`` (same checkpoint, plan and settings) are not recomputed, so an interrupted
compare continues where it stopped when the same command is run again.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from catrec.config import Config, make_config
from catrec.data import SplitData
from catrec.errors import ConfigError, RunError
from catrec.robustness import (
    Setting,
    data_fingerprint,
    load_or_draw_plan,
    run_robustness,
    select_records,
    settings_grid,
)
from catrec.utils import atomic_write_bytes, atomic_write_json, atomic_write_text, git_commit

MODES = ("standard", "adv", "cat")
# (metric key template, higher is better) of the robustness summary.
ROBUSTNESS_METRICS = (
    ("RBO@{K}", True),
    ("Jaccard@{K}", True),
    ("NDCG@{K}", True),
    ("NDCG@{K}_clean", True),
    ("NDCG@{K}_drop", False),
    ("HR@{K}", True),
    ("HR@{K}_drop", False),
)
ACCURACY_METRICS = ("NDCG@10", "HR@10", "NDCG@20", "HR@20", "MRR")


def run_name(mode: str, seed: int) -> str:
    """Folder name of one run under ``DIR/runs`` (a fixed layout: runs there are reused)."""
    return f"{mode}-seed{seed}"


def run_config(base: dict[str, Any], mode: str, seed: int, source: str = "compare") -> Config:
    """The config of one run: ``base`` values with ``mode`` and ``seed``.

    ``scaling`` and ``lambda_2`` are CAT options that generic adversarial training (``adv``)
    fixes, so they are dropped for ``adv`` instead of failing validation.
    """
    values = dict(base)
    if mode == "adv":
        values.pop("scaling", None)
        values.pop("lambda_2", None)
    values.update(mode=mode, seed=seed)
    return make_config(values, source=source)


def _config_diff(stored: Config, wanted: Config) -> list[str]:
    a, b = stored.model_dump(), wanted.model_dump()
    # The device is where a run was trained, not what it is (parallel runs get cuda:i).
    return [
        f"{k}: {a[k]!r} (run) vs {b[k]!r} (asked)" for k in a if a[k] != b.get(k) and k != "device"
    ]


def run_devices(configs: Sequence[Config]) -> list[Config]:
    """Deal runs asking for ``cuda`` round-robin to the visible GPUs (``cuda:0``, ``cuda:1``, ...)
    when there are several; other devices are left as they are."""
    import torch

    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_gpus < 2:
        return list(configs)
    return [
        c.model_copy(update={"device": f"cuda:{i % n_gpus}"}) if c.device == "cuda" else c
        for i, c in enumerate(configs)
    ]


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def train_parallel(
    jobs: Sequence[tuple[Path, Config]], split: SplitData, n_parallel: int
) -> list[tuple[str, Config]]:
    """:func:`prepare_run` for every ``(run_dir, config)``, up to ``n_parallel`` at once, each in
    a fresh (spawned) process with ``cpu_count // n_parallel`` torch threads; results in order.

    The first failure cancels the runs not yet started and is raised once the running ones end
    (an interrupted run has checkpointed: the same compare command resumes it).
    """
    configs = run_devices([c for _, c in jobs])
    threads = max(1, (os.cpu_count() or 1) // n_parallel)
    pool = ProcessPoolExecutor(
        max_workers=n_parallel,
        mp_context=multiprocessing.get_context("spawn"),  # no forked torch / CUDA state
        initializer=_init_worker,
        initargs=(threads,),
    )
    try:
        futures = [
            pool.submit(prepare_run, run_dir, cfg, split, progress=False)
            for (run_dir, _), cfg in zip(jobs, configs, strict=True)
        ]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f.done() and f.exception() is not None]
        if failed:
            pool.shutdown(wait=True, cancel_futures=True)
            raise failed[0].exception()
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _check_reuse(run_dir: Path, stored: Config, config: Config, what: str, allow: bool) -> None:
    """Refuse (or, with ``allow``, warn about) reusing a run whose config differs from the
    requested one; the message lists every differing key."""
    diff = _config_diff(stored, config)
    if not diff:
        return
    msg = f"{run_dir}: {what} whose config differs from this compare's: {'; '.join(diff)}"
    if not allow:
        raise RunError(
            f"{msg}. Use another --out, delete the run, or pass --reuse-mismatched to use it as "
            "it is"
        )
    warnings.warn(msg, stacklevel=3)


def prepare_run(
    run_dir: Path,
    config: Config,
    split: SplitData,
    *,
    progress: bool = True,
    reuse_mismatched: bool = False,
    keep_states: Sequence[int] = (),
    warmup_from: Path | None = None,
) -> tuple[str, Config]:
    """Make sure ``run_dir`` holds a finished run; returns (what was done, the run's config).

    A run trained here keeps its state after the epochs ``keep_states`` and, if adversarial,
    starts after its warm-up from the state that ``warmup_from`` (the standard run of the same
    seed) kept (:meth:`catrec.train.loop.Trainer.fit`).

    A finished run (``run.json`` status ``finished``) is reused as it is and a run with
    ``last.pt`` is resumed with its stored config, both only if that config equals ``config``
    (or with ``reuse_mismatched``, with a warning listing the differences); anything else is
    trained from scratch.

    Raises:
        RunError: the run is being trained right now by another live process, or its stored
            config differs from ``config`` (without ``reuse_mismatched``).
    """
    from catrec.run import load_run_config, read_json
    from catrec.train.loop import evaluate_run, pid_alive, train

    meta = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    status = meta.get("status")
    if status == "finished" and (run_dir / "best.pt").is_file():
        stored = load_run_config(run_dir)
        _check_reuse(run_dir, stored, config, "a finished run", reuse_mismatched)
        if not (run_dir / "metrics.json").is_file():
            evaluate_run(run_dir, split=split)
        return "reused", stored
    if status == "running" and meta.get("pid") != os.getpid() and pid_alive(meta.get("pid")):
        raise RunError(
            f"{run_dir} is being trained by process {meta['pid']}; wait for it to finish (it will "
            "then be reused) or stop it, then run compare again"
        )
    if (run_dir / "last.pt").is_file():
        stored = load_run_config(run_dir)
        _check_reuse(run_dir, stored, config, "an interrupted run", reuse_mismatched)
        train(stored, run_dir, progress=progress, resume=True, split=split)
        return "resumed", stored
    train(
        config,
        run_dir,
        progress=progress,
        split=split,
        keep_states=keep_states,
        warmup_from=warmup_from if config.adversarial else None,
    )
    return "trained", config


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "n", "values"}`` over seeds; std is the sample std (None for one seed)."""
    vals = [float(v) for v in values if v is not None]
    out: dict[str, Any] = {"values": list(values), "n": len(vals)}
    out["mean"] = float(np.mean(vals)) if vals else None
    out["std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return out


def run_compare(
    out: str | Path,
    base: dict[str, Any],
    modes: Sequence[str],
    seeds: Sequence[int],
    *,
    positions: Sequence[str] = ("first", "middle", "last", "random"),
    replacements: Sequence[str] = ("random",),
    k: int = 1,
    plan_seed: int = 0,
    depth: int = 10,
    p: float = 0.9,
    n_bootstrap: int = 1000,
    progress: bool = True,
    reuse_mismatched: bool = False,
    parallel_runs: int = 1,
) -> dict[str, Any]:
    """Train (or reuse) every mode x seed, evaluate accuracy and robustness on one shared plan,
    and write ``compare.json``, ``compare.md`` and the plots into ``out``; returns compare.json.

    Args:
        base: config values shared by every run (YAML plus command-line options); must name
            the dataset. ``mode`` and ``seed`` come from ``modes`` and ``seeds``.
        parallel_runs: train up to this many runs at once, each in its own process (see
            :func:`train_parallel`); 1 trains them one after the other in this process.

    Raises:
        ConfigError: bad modes, seeds or options.
        RunError: runs that cannot share one plan (different test data), or a run in use.
    """
    from catrec.run import read_json
    from catrec.train.loop import Interrupted, load_split

    t0 = time.perf_counter()
    out = Path(out)
    if not modes:
        raise ConfigError("no modes to compare")
    for m in modes:
        if m not in MODES:
            raise ConfigError(f"unknown mode {m!r} (choose from {', '.join(MODES)})")
    if len(set(modes)) != len(modes) or len(set(seeds)) != len(seeds):
        raise ConfigError("modes and seeds must not repeat")
    if "dataset" not in base:
        raise ConfigError("compare needs a dataset (--dataset or 'dataset' in the YAML config)")
    settings = settings_grid(positions, replacements, k)
    configs = {(m, s): run_config(base, m, s) for m in modes for s in seeds}
    first = next(iter(configs.values()))
    split = load_split(first)
    splits: dict[tuple[str, int], SplitData] = {(first.dataset, first.max_len): split}
    plan_path = out / "plan.npz"
    plan = load_or_draw_plan(plan_path, split, plan_seed, settings)

    runs: list[dict[str, Any]] = []
    tasks = list(configs.items())
    prepared: dict[tuple[str, int], tuple[str, Config]] = {}
    if parallel_runs < 1:
        raise ConfigError(f"parallel_runs must be >= 1, got {parallel_runs}")
    if parallel_runs > 1:
        jobs = [(out / "runs" / run_name(m, s), cfg) for (m, s), cfg in tasks]
        done = train_parallel(jobs, split, min(parallel_runs, len(jobs)))
        prepared = {key: result for (key, _), result in zip(tasks, done, strict=True)}
    share_warmup = parallel_runs == 1 and "standard" in modes
    if share_warmup:
        # The standard run of each seed first, keeping its state after every warm-up length the
        # adversarial runs of that seed use: their warm-up epochs are this run's, bit for bit.
        for seed in seeds:
            warmups = {configs[(m, seed)].adv_warmup_epochs for m in modes if m != "standard"}
            run_dir = out / "runs" / run_name("standard", seed)
            try:
                prepared[("standard", seed)] = prepare_run(
                    run_dir,
                    configs[("standard", seed)],
                    split,
                    progress=progress,
                    reuse_mismatched=reuse_mismatched,
                    keep_states=sorted(warmups - {0}),
                )
            except Interrupted as exc:
                raise Interrupted(
                    f"{exc}. To resume the comparison, run the same catrec compare command again."
                ) from exc
    bar = tqdm(tasks, desc="compare", disable=not progress, dynamic_ncols=True)
    try:
        for (mode, seed), cfg in bar:
            bar.set_description(f"compare {run_name(mode, seed)}")
            run_dir = out / "runs" / run_name(mode, seed)
            t_run = time.perf_counter()
            try:
                if (mode, seed) in prepared:
                    status, used = prepared[(mode, seed)]
                else:
                    donor = out / "runs" / run_name("standard", seed) if share_warmup else None
                    status, used = prepare_run(
                        run_dir,
                        cfg,
                        split,
                        progress=progress,
                        reuse_mismatched=reuse_mismatched,
                        warmup_from=donor,
                    )
            except Interrupted as exc:
                raise Interrupted(
                    f"{exc}. To resume the comparison, run the same catrec compare command again."
                ) from exc
            key = (used.dataset, used.max_len)
            if key not in splits:  # a reused run with another max_len: its own split
                splits[key] = load_split(used)
            run_split = splits[key]
            fp = data_fingerprint(run_split.test_inputs, run_split.test_targets, run_split.n_items)
            if fp != plan.fingerprint:
                raise RunError(
                    f"{run_dir}: its test inputs differ from the other runs' (dataset "
                    f"{used.dataset!r}, max_len {used.max_len}); one plan cannot be shared"
                )
            doc = run_robustness(
                run_dir,
                settings,
                seed=plan_seed,
                plan_path=plan_path,
                depth=depth,
                p=p,
                n_bootstrap=n_bootstrap,
                split=run_split,
                reuse=True,
                progress=progress,
            )
            metrics = read_json(run_dir / "metrics.json")
            meta = read_json(run_dir / "run.json")
            runs.append(
                {
                    "mode": mode,
                    "seed": seed,
                    "run_dir": str(run_dir),
                    "status": status,
                    "git_commit": meta.get("git_commit"),
                    "train_wall_time_s": meta.get("wall_time_s"),
                    "best_epoch": meta.get("best_epoch"),
                    "best_epoch_adversarial": meta.get("best_epoch_adversarial"),
                    "epochs_run": meta.get("epochs_run"),
                    "compare_wall_time_s": round(time.perf_counter() - t_run, 3),
                    "test": metrics["test"],
                    "valid": metrics["valid"],
                    "robustness": select_records(doc, settings, plan_seed, depth, p),
                    "robustness_clean": doc.get("clean"),
                }
            )
    finally:
        bar.close()

    summary = summarise(runs, modes, settings, depth)
    result = {
        "dataset": first.dataset,
        "model": first.model,
        "modes": list(modes),
        "seeds": list(seeds),
        "base_config": {k_: v for k_, v in base.items()},
        "settings": {
            "positions": list(positions),
            "replacements": list(replacements),
            "k": k,
            "depth": depth,
            "p": p,
            "n_bootstrap": n_bootstrap,
        },
        "plan": {"path": str(plan_path), "seed": plan_seed, "fingerprint": plan.fingerprint},
        "git_commit": git_commit(),
        "wall_time_s": round(time.perf_counter() - t0, 3),
        "runs": runs,
        "summary": summary,
    }
    plots = write_plots(out, summary, modes, positions, replacements, k, depth, len(seeds))
    result["plots"] = [str(p_) for p_ in plots]
    atomic_write_json(out / "compare.json", result)
    atomic_write_text(out / "compare.md", to_markdown(result))
    return result


# --------------------------------------------------------------------------- summary
def summarise(
    runs: Sequence[dict[str, Any]], modes: Sequence[str], settings: Sequence[Setting], depth: int
) -> dict[str, Any]:
    """Mean / std over seeds per mode (accuracy) and per mode x setting (robustness), and the
    list of metrics on which ``cat`` does not have the best mean."""
    accuracy: dict[str, Any] = {}
    for mode in modes:
        mine = [r for r in runs if r["mode"] == mode]
        accuracy[mode] = {m: mean_std([r["test"].get(m) for r in mine]) for m in ACCURACY_METRICS}
    robustness: list[dict[str, Any]] = []
    for s in settings:
        for mode in modes:
            recs = []
            for r in runs:
                if r["mode"] != mode:
                    continue
                recs += [
                    x for x in r["robustness"] if (x["position"], x["replacement"], x["k"]) == s.key
                ]
            row: dict[str, Any] = {
                "mode": mode,
                "position": s.position,
                "replacement": s.replacement,
                "k": s.k,
                "n_users": [x["n_users"] for x in recs],
                "n_skipped": [x["n_skipped"] for x in recs],
            }
            for tmpl, _ in ROBUSTNESS_METRICS:
                name = tmpl.format(K=depth)
                row[name] = mean_std([x.get(name) for x in recs])
            robustness.append(row)
    return {
        "accuracy": accuracy,
        "robustness": robustness,
        "cat_does_not_win": cat_losses(accuracy, robustness, modes, depth),
    }


# Metrics on which cat is judged (CAT.md §5): test accuracy, and per robustness setting the
# rank-list similarity and the relative NDCG drop (lower is better).
JUDGED_ROBUSTNESS = (("RBO@{K}", True), ("Jaccard@{K}", True), ("NDCG@{K}_drop", False))


def cat_losses(
    accuracy: dict[str, Any],
    robustness: Sequence[dict[str, Any]],
    modes: Sequence[str],
    depth: int,
) -> dict[str, Any]:
    """Where ``cat``'s mean is not strictly the best of all modes.

    Judged: test NDCG@10 and HR@10, and RBO@K, Jaccard@K and NDCG@K drop of every robustness
    setting. Returns ``{"n_judged", "losses"}``; each loss names the best other mode, whether it
    is a tie, and whether the gap is within one standard deviation (None with one seed).
    Empty when ``cat`` is not compared.
    """
    losses: list[dict[str, Any]] = []
    n_judged = 0
    if "cat" not in modes or len(modes) < 2:
        return {"n_judged": 0, "losses": losses}

    def check(what: str, metric: str, higher: bool, values: dict[str, dict[str, Any]]) -> None:
        nonlocal n_judged
        cat = values["cat"]
        others = {m: v for m, v in values.items() if m != "cat" and v["mean"] is not None}
        if cat["mean"] is None or not others:
            return
        n_judged += 1
        best_mode = (max if higher else min)(others, key=lambda m: others[m]["mean"])
        best = others[best_mode]
        if (cat["mean"] > best["mean"]) if higher else (cat["mean"] < best["mean"]):
            return
        gap = abs(cat["mean"] - best["mean"])
        no_spread = cat["std"] is None and best["std"] is None
        losses.append(
            {
                "setting": what,
                "metric": metric,
                "higher_is_better": higher,
                "cat": cat["mean"],
                "best_mode": best_mode,
                "best": best["mean"],
                "gap": gap,
                "tie": gap == 0.0,
                "within_one_std": None
                if no_spread
                else gap <= max(cat["std"] or 0.0, best["std"] or 0.0),
            }
        )

    for metric in ("NDCG@10", "HR@10"):
        check("test accuracy", metric, True, {m: accuracy[m][metric] for m in modes})
    by_setting: dict[tuple[str, str, int], dict[str, dict[str, Any]]] = {}
    for row in robustness:
        key = (row["position"], row["replacement"], row["k"])
        by_setting.setdefault(key, {})[row["mode"]] = row
    for (pos, rep, k), rows in by_setting.items():
        what = f"{rep} item at {pos}" + (f" (k={k})" if k > 1 else "")
        for tmpl, higher in JUDGED_ROBUSTNESS:
            name = tmpl.format(K=depth)
            check(what, name, higher, {m: rows[m][name] for m in rows})
    return {"n_judged": n_judged, "losses": losses}


# --------------------------------------------------------------------------- outputs
def _fmt(v: dict[str, Any], pct: bool = False) -> str:
    if v["mean"] is None:
        return "n/a"
    scale, unit = (100.0, "%") if pct else (1.0, "")
    mean = f"{scale * v['mean']:.2f}{unit}" if pct else f"{v['mean']:.4f}"
    if v["std"] is None:
        return mean
    std = f"{scale * v['std']:.2f}{unit}" if pct else f"{v['std']:.4f}"
    return f"{mean} ± {std}"


def _best_epoch(run: dict[str, Any]) -> str:
    """``best epoch 26/31 (adversarial)``: which epoch the reported model is from, and its kind."""
    best, total = run.get("best_epoch"), run.get("epochs_run")
    if best is None:
        return "best epoch unknown"
    adv = run.get("best_epoch_adversarial")
    kind = "" if adv is None else (" (adversarial)" if adv else " (standard)")
    return f"best epoch {best}/{total}{kind}"


def to_markdown(result: dict[str, Any]) -> str:
    """``compare.md``: accuracy and robustness tables, and where cat does not win."""
    s = result["settings"]
    K = s["depth"]
    n_seeds = len(result["seeds"])
    spread = "mean ± sample std over seeds" if n_seeds > 1 else "one seed: no spread"
    lines = [
        f"# catrec compare: {result['dataset']} / {result['model']}",
        "",
        f"Modes {', '.join(result['modes'])}; seeds {', '.join(map(str, result['seeds']))} "
        f"({spread}). Replacement plan seed {result['plan']['seed']} "
        f"(`{result['plan']['path']}`), shared by every model. Full ranking over all items; "
        f"RBO@{K} with p = {s['p']} (finite, normalised; CAT.md §4). git commit "
        f"`{result['git_commit']}`; wall time {result['wall_time_s']:.0f} s.",
        "",
        "## Test accuracy",
        "",
        "| mode | NDCG@10 | HR@10 | NDCG@20 | HR@20 | runs |",
        "|---|---|---|---|---|---|",
    ]
    acc = result["summary"]["accuracy"]
    for mode in result["modes"]:
        a = acc[mode]
        status = ", ".join(
            f"seed {r['seed']}: {r['status']}, {_best_epoch(r)}"
            for r in result["runs"]
            if r["mode"] == mode
        )
        lines.append(
            f"| {mode} | {_fmt(a['NDCG@10'])} | {_fmt(a['HR@10'])} | {_fmt(a['NDCG@20'])} | "
            f"{_fmt(a['HR@20'])} | {status} |"
        )
    rows = result["summary"]["robustness"]
    for rep in s["replacements"]:
        lines += [
            "",
            f"## Robustness: `{rep}` replacement, k = {s['k']}",
            "",
            "Drops are relative (1 - perturbed / clean). Users too short for the setting are "
            "skipped and counted.",
            "",
            f"| position | mode | RBO@{K} | Jaccard@{K} | NDCG@{K} clean | NDCG@{K} perturbed | "
            f"NDCG@{K} drop | HR@{K} drop | users (skipped) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for pos in s["positions"]:
            for row in rows:
                if row["position"] != pos or row["replacement"] != rep:
                    continue
                users = ", ".join(
                    f"{u} ({sk})" for u, sk in zip(row["n_users"], row["n_skipped"], strict=True)
                )
                lines.append(
                    f"| {pos} | {row['mode']} | {_fmt(row[f'RBO@{K}'])} | "
                    f"{_fmt(row[f'Jaccard@{K}'])} | {_fmt(row[f'NDCG@{K}_clean'])} | "
                    f"{_fmt(row[f'NDCG@{K}'])} | {_fmt(row[f'NDCG@{K}_drop'], pct=True)} | "
                    f"{_fmt(row[f'HR@{K}_drop'], pct=True)} | {users} |"
                )
    lines += ["", "## Where cat does not win", ""]
    judged = result["summary"]["cat_does_not_win"]
    losses = judged["losses"]
    if "cat" not in result["modes"] or len(result["modes"]) < 2:
        lines.append("cat is not compared with another mode here.")
    elif not losses:
        lines.append(
            f"cat has the best mean on all {judged['n_judged']} judged metrics (test NDCG@10, "
            f"HR@10; RBO@{K}, Jaccard@{K}, NDCG@{K} drop per setting)"
            + ("; one seed, so no spread to judge the gaps against." if n_seeds < 2 else ".")
        )
    else:
        lines.append(
            f"cat does not have the best mean on {len(losses)} of {judged['n_judged']} judged "
            f"metrics (test NDCG@10, HR@10; RBO@{K}, Jaccard@{K} and NDCG@{K} drop per setting; "
            "lower is better for drops):"
        )
        lines.append("")
        for x in losses:
            pct = x["metric"].endswith("_drop")

            def num(v: float, pct: bool = pct) -> str:
                return f"{100 * v:.2f}%" if pct else f"{v:.4f}"

            if x["tie"]:
                verdict = "tie"
            else:
                verdict = {
                    True: "gap within one std",
                    False: "gap larger than one std",
                    None: "one seed",
                }[x["within_one_std"]]
            metric = x["metric"].replace("_drop", " drop")
            lines.append(
                f"- {x['setting']}, {metric}: cat {num(x['cat'])} vs {x['best_mode']} "
                f"{num(x['best'])} ({verdict})"
            )
    plots = result.get("plots", [])
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def write_plots(
    out: Path,
    summary: dict[str, Any],
    modes: Sequence[str],
    positions: Sequence[str],
    replacements: Sequence[str],
    k: int,
    depth: int,
    n_seeds: int,
) -> list[Path]:
    """One PNG per (metric, replacement): metric against replaced position, a line per mode,
    error bars = sample std over seeds (none for a single seed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    paths: list[Path] = []
    metrics = (
        (f"RBO@{depth}", f"rbo{depth}", 1.0),
        (f"NDCG@{depth}_drop", f"ndcg{depth}_drop", 100.0),
    )
    x = np.arange(len(positions))
    for rep in replacements:
        for metric, stem, scale in metrics:
            fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
            for i, mode in enumerate(modes):
                means, errs = [], []
                for pos in positions:
                    row = next(
                        r
                        for r in summary["robustness"]
                        if r["mode"] == mode and r["position"] == pos and r["replacement"] == rep
                    )
                    v = row[metric]
                    means.append(np.nan if v["mean"] is None else scale * v["mean"])
                    errs.append(0.0 if v["std"] is None else scale * v["std"])
                offset = (i - (len(modes) - 1) / 2) * 0.04  # keep error bars apart
                ax.errorbar(x + offset, means, yerr=errs, marker="o", capsize=4, label=mode)
            ax.set_xticks(x, list(positions))
            ax.set_xlabel(f"replaced position ({rep} item" + (f", k={k})" if k > 1 else ")"))
            label = metric.replace("_drop", " drop (relative, %)")
            ax.set_ylabel(label)
            bars = f"± 1 std over {n_seeds} seeds" if n_seeds > 1 else "1 seed, no error bars"
            ax.set_title(
                f"{metric.replace('_drop', ' drop')} by replaced position ({bars})", fontsize=10
            )
            ax.grid(alpha=0.3)
            ax.legend()
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            plt.close(fig)
            path = out / f"{stem}_by_position_{rep}.png"
            atomic_write_bytes(path, buf.getvalue())
            paths.append(path)
    return paths
