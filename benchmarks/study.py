"""The study of issue 11 (and the fidelity measurement of issue 8) as one resumable job graph.

Runs every training, tuning and robustness job of the study side by side, one subprocess per job
(``--workers`` at a time, one torch thread each), in priority order and as dependencies allow:

1. ``fidelity``: Beauty / SASRec / seed 0 with CAT.md's defaults: ``cat``, ``adv`` and ``cat
   --no-shared-dropout`` on this code, and ``cat`` and ``adv`` on the code before the fidelity
   fixes (``--legacy-src``, a copy of that commit's ``src``), to separate what each fix moved.
2. ``main`` standard runs: every dataset x (SASRec seeds, GRU4Rec seed 0), patience 10, keeping
   their state after 5, 10 and 20 epochs so that adversarial runs of the same seed start there.
3. ``tune``: ``catrec tune``'s trials for ``adv`` and ``cat`` on Beauty / SASRec / seed 0
   (validation only), starting from the Beauty standard run's kept warm-up.
4. ``main`` adversarial runs with the tuned values (the best validation trial of each mode), and
   ``confirm`` runs with CAT.md's defaults on Sports (the winner checked against them there),
   after the main table's seed 1-2 runs.
5. ``robustness``: first and last position, random and adversarial replacement, one shared plan
   per dataset; each run's robustness starts as soon as that run finishes, before the next
   training job of its level.
6. ``beyond`` (issue 12, not in the default stages): Beauty / SASRec with the sampled-BCE loss
   (standard, adv, cat; seeds 0-2), the ablation of every CAT choice (seed 0), and for the last
   position the random-replacement augmentation baseline and cat plus adversarial item
   replacement (:func:`beyond_jobs`).

Finished jobs are skipped when the script runs again (every run resumes), so the study can be
spread over several sittings and machines. With ``--budget-s`` the script stops starting jobs
near the deadline, interrupts the running ones (they checkpoint) and exits; ``--tar`` keeps a
compressed copy of the results (no checkpoints) up to date while it runs.

    python benchmarks/study.py --data-dir ../shared/data --out study --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"beauty": "Beauty", "sports": "Sports_and_Outdoors", "toys": "Toys_and_Games"}
WARMUP_STATES = [5, 10, 20]
STANDARD_PATIENCE = 10
SETTINGS = {"positions": ["first", "last"], "replacements": ["random", "adversarial"], "k": 1}


@dataclass
class Job:
    name: str
    kind: str  # train | tune | robustness | legacy
    spec: dict[str, Any]
    priority: float  # lower starts first
    deps: list[str] = field(default_factory=list)
    legacy: bool = False
    after: list[str] = field(default_factory=list)  # order only: waits for those planned


# ------------------------------------------------------------------ job bodies (in subprocesses)
def _finished(run_dir: Path) -> bool:
    meta = run_dir / "run.json"
    return meta.exists() and json.loads(meta.read_text()).get("status") in ("finished", "stopped")


def planned_changes(run: Path, values: dict[str, Any]) -> list[str]:
    """The keys ``values`` sets (the plan's) whose resolved value differs from ``run``'s saved
    config, as ``"key: run -> plan"``; the movable keys (dataset path, device) do not count."""
    from catrec.config import make_config
    from catrec.run import MOVABLE_KEYS, load_run_config

    have = load_run_config(run).model_dump()
    want = make_config(values).model_dump()
    return [
        f"{k}: {have[k]!r} -> {want[k]!r}"
        for k in sorted(values)
        if k not in MOVABLE_KEYS and have[k] != want[k]
    ]


def job_train(spec: dict[str, Any]) -> None:
    from catrec.config import make_config
    from catrec.errors import RunError
    from catrec.run import resume_config
    from catrec.train.loop import Trainer

    run = Path(spec["run_dir"])
    finished, resume = _finished(run), (run / "last.pt").exists()
    # a finished or interrupted run is kept only if it is the planned one (the tuned values move)
    if (finished or resume) and (changes := planned_changes(run, spec["config"])):
        raise RunError(
            f"{run} {'finished' if finished else 'was interrupted'} with other settings than the "
            f"plan's ({'; '.join(changes)}); move the folder away to train it again"
        )
    if finished:
        return
    # a resumed run keeps its own values where the plan sets none (defaults may have changed)
    cfg = resume_config(run, spec["config"]) if resume else make_config(spec["config"])
    trainer = Trainer(cfg, run, progress=False, keep_states=spec.get("keep_states", []))
    warmup = spec.get("warmup_from")
    if not resume and run.exists():  # a start that died before its first checkpoint
        for f in run.iterdir():
            f.unlink()
    trainer.fit(resume=resume, warmup_from=warmup if warmup and not resume else None)


def job_tune(spec: dict[str, Any]) -> None:
    from catrec.tune import run_trials

    run_trials(
        spec["out"],
        spec["base"],
        spec["mode"],
        spec["n_trials"],
        sampler_seed=spec.get("sampler_seed", 0),
        donor=spec["donor"],
    )


def job_robustness(spec: dict[str, Any]) -> None:
    from catrec.robustness import run_robustness, settings_grid

    settings = settings_grid(SETTINGS["positions"], SETTINGS["replacements"], SETTINGS["k"])
    run = Path(spec["run_dir"])
    done = run / "robustness.json"
    if not (run / "best.pt").exists() and done.exists():
        # a committed cell copied onto a new machine: its checkpoint stayed on the old one
        have = {
            (r["position"], r["replacement"], r["k"])
            for r in json.loads(done.read_text())["records"]
        }
        if all(s.key in have for s in settings):
            print(f"{done}: complete; the run's checkpoint is not here, so it is kept as it is")
            return
    run_robustness(run, settings, plan_path=spec["plan"], reuse=True, progress=False)


def job_legacy(spec: dict[str, Any]) -> None:
    run = Path(spec["run_dir"])
    if _finished(run):
        return
    cmd = [sys.executable, "-m", "catrec.cli", "train", "--quiet"]
    if (run / "last.pt").exists():
        cmd += ["--resume", str(run)]
    else:
        cmd += ["--out", str(run)]
        for k, v in spec["config"].items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    subprocess.run(cmd, check=True)


# ------------------------------------------------------------------ the job graph
def plan_jobs(
    args: argparse.Namespace, out: Path, tuned: dict[str, dict[str, Any]] | None
) -> list[Job]:
    from catrec.config import CAT_MD_DEFAULTS
    from catrec.tune import sampler_seed

    dev = {"device": args.device, **json.loads(args.override)}
    jobs: list[Job] = []
    datasets = args.datasets.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]

    def runs_of(ds: str) -> list[tuple[str, int]]:
        return [("sasrec", s) for s in seeds] + [("gru4rec", 0)]

    # 1. fidelity (issue 8): CAT.md defaults, Beauty / SASRec / seed 0
    fid = {"dataset": "beauty", "model": "sasrec", "seed": 0, **dev}
    if "fidelity" in args.stages:
        for name, extra in [
            ("cat", {"mode": "cat"}),
            ("adv", {"mode": "adv"}),
            ("cat-fresh-dropout", {"mode": "cat", "shared_dropout": False}),
        ]:
            jobs.append(
                Job(
                    f"fidelity/{name}",
                    "train",
                    {
                        "run_dir": str(out / "fidelity" / f"{name}-seed0"),
                        "config": fid | CAT_MD_DEFAULTS[extra["mode"]] | extra,
                    },
                    0,
                )
            )
        if args.legacy_src:
            for mode in ("cat", "adv"):
                jobs.append(
                    Job(
                        f"fidelity/legacy-{mode}",
                        "legacy",
                        {
                            "run_dir": str(out / "fidelity" / f"legacy-{mode}-seed0"),
                            "config": fid | {"mode": mode},  # the old code: its own defaults
                        },
                        0,
                        legacy=True,
                    )
                )
    # 2. standard runs (also the warm-up donors)
    if "main" in args.stages:
        for ds in datasets:
            for model, seed in runs_of(ds):
                prio = (
                    0 if (ds, model, seed) == ("beauty", "sasrec", 0) else (2 if seed == 0 else 5)
                )
                jobs.append(
                    Job(
                        f"main/{ds}-{model}/standard-seed{seed}",
                        "train",
                        {
                            "run_dir": str(out / "main" / f"{ds}-{model}" / f"standard-seed{seed}"),
                            "config": {
                                "dataset": ds,
                                "model": model,
                                "seed": seed,
                                "mode": "standard",
                                "epochs": args.max_epochs,
                                "patience": STANDARD_PATIENCE,
                                **dev,
                            },
                            "keep_states": WARMUP_STATES,
                        },
                        prio,
                        # later seeds wait for the donor, so that tuning gets the free workers
                        after=[] if seed == 0 else ["main/beauty-sasrec/standard-seed0"],
                    )
                )
    # 3. tuning (validation only), from the Beauty standard run's kept warm-up
    donor = "main/beauty-sasrec/standard-seed0"
    if "tune" in args.stages:
        base = {"dataset": "beauty", "model": "sasrec", "seed": 0, "epochs": args.max_epochs, **dev}
        for i in range(args.tune_workers):
            mode = ("cat", "adv")[i % 2]
            jobs.append(
                Job(
                    f"tune/{mode}-worker{i}",
                    "tune",
                    {
                        "out": str(out / "tune" / "beauty-sasrec-seed0"),
                        "base": base,
                        "mode": mode,
                        "n_trials": args.trials,
                        "donor": str(out / donor),
                        "sampler_seed": sampler_seed(mode, i),
                    },
                    1,
                    deps=[donor],
                )
            )
    # 4. adversarial runs with the tuned values; Sports confirmation with CAT.md's defaults
    if "main" in args.stages and tuned:
        tune_jobs = [j.name for j in jobs if j.kind == "tune"]
        for ds in datasets:
            for model, seed in runs_of(ds):
                std = f"main/{ds}-{model}/standard-seed{seed}"
                for mode in ("cat", "adv"):
                    values = tuned.get(mode)
                    if values is None:
                        continue
                    jobs.append(
                        Job(
                            f"main/{ds}-{model}/{mode}-seed{seed}",
                            "train",
                            {
                                "run_dir": str(
                                    out / "main" / f"{ds}-{model}" / f"{mode}-seed{seed}"
                                ),
                                "config": {
                                    "dataset": ds,
                                    "model": model,
                                    "seed": seed,
                                    "mode": mode,
                                    "epochs": args.max_epochs,
                                    **values,
                                    **dev,
                                },
                                "warmup_from": str(out / std),
                            },
                            3 if seed == 0 else 6,
                            deps=[std, *tune_jobs],
                        )
                    )
        if "sports" in datasets:
            std = "main/sports-sasrec/standard-seed0"
            for mode in ("cat", "adv"):
                jobs.append(
                    Job(
                        f"confirm/sports-sasrec/{mode}-default-seed0",
                        "train",
                        {
                            "run_dir": str(
                                out / "confirm" / "sports-sasrec" / f"{mode}-default-seed0"
                            ),
                            "config": {
                                "dataset": "sports",
                                "model": "sasrec",
                                "seed": 0,
                                "mode": mode,
                                "epochs": args.max_epochs,
                                **CAT_MD_DEFAULTS[mode],
                                **dev,
                            },
                            "warmup_from": str(out / std),
                        },
                        # after the main table's seeds: the done-when needs every seed
                        # of the table; the confirmation only checks the tuned defaults
                        6.5,
                        deps=[std],
                    )
                )
    # 6. issue 12, Beauty / SASRec: the paper's BCE setting, the ablation, the last position
    if "beyond" in args.stages:
        tune_jobs = [j.name for j in jobs if j.kind == "tune"]
        jobs += beyond_jobs(args, out, tuned or {}, dev, tune_jobs)
    # 5. robustness of every finished main / fidelity / beyond run
    if "robustness" in args.stages:
        for j in list(jobs):
            if j.kind in ("train", "legacy") and not j.name.startswith("confirm/"):
                ds = j.spec["config"]["dataset"]
                jobs.append(
                    Job(
                        f"robustness/{j.name}",
                        "robustness",
                        {"run_dir": j.spec["run_dir"], "plan": str(out / "plans" / f"{ds}.npz")},
                        # under a minute: ahead of every training job of its run's level, so
                        # a session that ends early leaves no finished run without robustness
                        j.priority - 0.5,
                        deps=[j.name],
                    )
                )
    return resolve_deps(jobs, out)


def resolve_deps(jobs: list[Job], out: Path) -> list[Job]:
    """Drop the dependencies that are outside this call's job graph and already met (a run
    finished under ``OUT`` by an earlier call, e.g. the Beauty donor when ``--datasets`` leaves
    Beauty out) and the ordering-only ``after`` names that are not planned; a job would
    otherwise wait forever.

    Raises:
        SystemExit: a dependency outside the graph that is not a finished run; the message names
            the job and what to add.
    """
    names = {j.name for j in jobs}
    for j in jobs:
        j.after = [a for a in j.after if a in names]
        j.deps = [d for d in j.deps if d in names or not _finished(out / d)]
        missing = [d for d in j.deps if d not in names]
        if missing:
            raise SystemExit(
                f"study.py: {j.name} needs {', '.join(missing)}, which this call does not run "
                f"and {out} does not hold finished: add its dataset / stage / seed"
            )
    return jobs


#: Issue 12 §2: each ablation variant's changes to the cat configuration (tuned or CAT.md's).
ABLATION = {
    "level1-only": {"lambda_2": 0.0},
    "level2-only": {"lambda_1": 0.0},
    "scaling-proportional": {"scaling": "proportional"},
    "scaling-inverse": {"scaling": "inverse"},
    "scaling-none": {"scaling": "none"},
    "cascade-two_hop": {"cascade": "two_hop"},
    "cascade-first_order": {"cascade": "first_order"},
    "shared-dropout": {"shared_dropout": True},
    "fresh-dropout": {"shared_dropout": False},
}
#: Issue 12 §3: the augmentation baseline (standard training on inputs whose items are replaced
#: at random with this probability; the reported one is chosen on validation, see the report).
REPLACE_PROBS = [0.1, 0.2, 0.3]
#: Issue 12 §3, the attempt: cat plus the adversarial item-replacement term (``lambda_replace``;
#: 20% of the input items replaced by their largest first-order loss gain), chosen on validation.
REPLACE_LAMBDAS = [0.5, 1.0]
BEYOND_SEEDS = [0, 1, 2]


def beyond_jobs(
    args: argparse.Namespace,
    out: Path,
    tuned: dict[str, dict[str, Any]],
    dev: dict[str, Any],
    tune_jobs: list[str],
) -> list[Job]:
    """Issue 12's runs on Beauty / SASRec under ``OUT/beyond/SETTINGS/``: ``bce/`` (standard, adv
    and cat with the sampled-BCE loss, seeds 0-2; the adversarial runs start from the standard BCE
    run of their seed), ``ablation/`` (seed 0: cat with one choice changed, from the main table's
    standard run; a variant equal to the cat configuration is not run again: it is
    ``main/beauty-sasrec/cat-seed0``, or ``ablation/reference-seed0`` before tuning) and
    ``last/`` (the random-replacement augmentation baseline, and the attempt: cat plus the
    adversarial item-replacement term). ``SETTINGS`` is
    ``tuned`` (the adversarial values of a finished search) or ``cat-md-defaults`` while the search
    is not over; while tuning jobs run in this call, the adversarial runs wait for them."""
    from catrec.config import CAT_MD_DEFAULTS

    jobs: list[Job] = []
    root = out / "beyond" / ("tuned" if tuned else "cat-md-defaults")
    base = {"dataset": "beauty", "model": "sasrec", "epochs": args.max_epochs, **dev}

    def train_job(name: str, cfg: dict, donor: str | None = None, keep: bool = False) -> Job:
        """``donor``: the standard run whose kept warm-up the run starts from, a main-table job
        name (``main/...``) or a run of this stage (``bce/...``)."""
        spec: dict[str, Any] = {"run_dir": str(root / name), "config": cfg}
        deps = tune_jobs if cfg["mode"] != "standard" else []
        if donor:
            own = not donor.startswith("main/")
            spec["warmup_from"] = str(root / donor if own else out / donor)
            deps = [f"beyond/{donor}" if own else donor, *deps]
        if keep:
            spec["keep_states"] = WARMUP_STATES
        return Job(f"beyond/{name}", "train", spec, 7, deps=deps)

    std = {"mode": "standard", "patience": STANDARD_PATIENCE}
    for seed in BEYOND_SEEDS:
        bce = base | {"loss": "bce", "seed": seed}
        donor = f"bce/standard-seed{seed}"
        jobs.append(train_job(donor, bce | std, keep=True))
        for mode in ("adv", "cat"):
            cfg = bce | {"mode": mode, **tuned.get(mode, CAT_MD_DEFAULTS[mode])}
            jobs.append(train_job(f"bce/{mode}-seed{seed}", cfg, donor))
    cat = base | {"seed": 0, "mode": "cat", **tuned.get("cat", CAT_MD_DEFAULTS["cat"])}
    reference = make_config_dict(cat)
    donor = "main/beauty-sasrec/standard-seed0"
    if not tuned:  # no main-table cat run yet: the reference runs here, with CAT.md's values
        jobs.append(train_job("ablation/reference-seed0", cat, donor))
    for name, change in ABLATION.items():
        if make_config_dict(cat | change) == reference:
            continue  # the reference (main table's cat, or ablation/reference) is this variant
        jobs.append(train_job(f"ablation/{name}-seed0", cat | change, donor))
    for p in REPLACE_PROBS:
        cfg = base | std | {"seed": 0, "replace_prob": p}
        jobs.append(train_job(f"last/standard-replace{p}-seed0", cfg))
    for lam in REPLACE_LAMBDAS:
        cfg = cat | {"lambda_replace": lam}
        jobs.append(train_job(f"last/cat-advreplace{lam}-seed0", cfg, donor))
    return jobs


def make_config_dict(values: dict[str, Any]) -> dict[str, Any]:
    """The resolved configuration of ``values`` (defaults filled in), to compare two runs."""
    from catrec.config import make_config

    return make_config({k: v for k, v in values.items() if k != "device"}).model_dump()


def tuned_values(out: Path, n_trials: int) -> dict[str, dict[str, Any]]:
    """Each mode's best trial (validation NDCG@10), as config values, from ``tune.json``; only
    for a mode whose search is over (``n_trials`` completed or pruned trials): a search stopped
    part-way (its ``tune.json`` is written anyway) chooses nothing yet."""
    path = out / "tune" / "beauty-sasrec-seed0" / "tune.json"
    if not path.exists():
        return {}
    doc = json.loads(path.read_text())
    values = {}
    for mode, entry in doc["modes"].items():
        if "best" in entry and entry["n_complete"] + entry["n_pruned"] >= n_trials:
            values[mode] = {k: v for k, v in entry["best"].items() if k not in ("number", "value")}
    return values


def draw_plans(out: Path, datasets: list[str], max_len: int = 50) -> None:
    from catrec.config import make_config
    from catrec.robustness import load_or_draw_plan, settings_grid
    from catrec.train.loop import load_split

    settings = settings_grid(SETTINGS["positions"], SETTINGS["replacements"], SETTINGS["k"])
    for ds in datasets:
        path = out / "plans" / f"{ds}.npz"
        if not path.exists():
            split = load_split(make_config({"dataset": ds, "max_len": max_len}))
            load_or_draw_plan(path, split, 0, settings)


# ------------------------------------------------------------------ scheduler
def tar_results(out: Path, dest: Path) -> None:
    """``dest``: the results without checkpoints or caches, written atomically."""
    tmp = dest.with_suffix(".tmp")
    skip = (".pt", ".lock", ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(out.rglob("*")):
            if path.is_file() and not path.name.endswith(skip) and path.name != "cascade.npz":
                if path.name.startswith("adversarial-seed"):
                    continue
                tar.add(path, arcname=str(path.relative_to(out.parent)))
    os.replace(tmp, dest)


def summarise_tuning(out: Path, base: dict[str, Any], log: Any) -> None:
    """Write the search's ``tune.json`` (every trial, each mode's best so far)."""
    from catrec.tune import summarise

    try:
        summarise(
            out / "tune" / "beauty-sasrec-seed0",
            base,
            ["adv", "cat"],
            donor=out / "main" / "beauty-sasrec" / "standard-seed0",
        )
    except Exception as exc:  # noqa: BLE001 - the other stages go on without tuning
        log(f"tuning could not be summarised: {exc!r}")


def run_all(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    deadline = t0 + args.budget_s if args.budget_s else None
    os.environ["CATREC_DATA_DIR"] = str(Path(args.data_dir).resolve())
    events = open(out / "events.log", "a", buffering=1)

    def log(msg: str) -> None:
        line = f"[{time.time() - t0:7.1f}s] {msg}"
        print(line, flush=True)
        events.write(line + "\n")

    if "robustness" in args.stages:
        draw_plans(out, args.datasets.split(","), json.loads(args.override).get("max_len", 50))
    done: set[str] = set()
    failed: set[str] = set()
    running: dict[str, tuple[subprocess.Popen, Job, float]] = {}
    # SIGINT / SIGTERM to this process (not its group): stop like a spent budget, so that the
    # running jobs checkpoint instead of running on orphaned
    stop_signal: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stop_signal.append(signum))
    stop_tar = threading.Event()
    if args.tar:

        def tar_loop() -> None:
            while not stop_tar.wait(args.tar_every_s):
                try:
                    tar_results(out, Path(args.tar))
                except Exception as exc:  # noqa: BLE001 - a snapshot must never stop the study
                    log(f"tar failed: {exc}")

        threading.Thread(target=tar_loop, daemon=True).start()

    def env_for(job: Job) -> dict[str, str]:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        src = args.legacy_src if job.legacy else str(ROOT / "src")
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return env

    def start(job: Job) -> None:
        logf = out / "logs" / (job.name.replace("/", "__") + ".log")
        logf.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "job", job.kind, json.dumps(job.spec)]
        proc = subprocess.Popen(
            cmd, stdout=open(logf, "a"), stderr=subprocess.STDOUT, env=env_for(job), cwd=str(ROOT)
        )
        running[job.name] = (proc, job, time.time())
        log(f"start {job.name}")

    summarised = False
    while True:
        for name, (proc, _, started) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[name]
            (done if code == 0 else failed).add(name)
            status = "done" if code == 0 else f"FAILED ({code})"
            log(f"{status} {name} in {time.time() - started:.0f}s")
        tuned = tuned_values(out, args.trials)
        jobs = plan_jobs(args, out, tuned)
        by_name = {j.name: j for j in jobs}
        tune_names = [j.name for j in jobs if j.kind == "tune"]
        if tune_names and not summarised and all(n in done | failed for n in tune_names):
            summarised = True
            summarise_tuning(out, by_name[tune_names[0]].spec["base"], log)
            log(f"tuned: {json.dumps(tuned_values(out, args.trials))}")
            continue
        near_end = bool(stop_signal) or (
            deadline is not None and time.time() > deadline - args.stop_starting_s
        )
        pending = [j for j in jobs if j.name not in done | failed | set(running)]
        ready = sorted(
            (j for j in pending if all(d in done for d in j.deps + j.after)),
            key=lambda j: j.priority,
        )
        while ready and len(running) < args.workers and not near_end:
            start(ready.pop(0))
        blocked = [j for j in pending if any(d in failed for d in j.deps)]
        for j in blocked:
            failed.add(j.name)
            log(f"skipped {j.name}: a dependency failed")
        if not running and (not ready or near_end):
            break
        if stop_signal or (deadline is not None and time.time() > deadline):
            why = f"signal {stop_signal[0]}" if stop_signal else "budget spent"
            log(f"{why}: interrupting running jobs (they checkpoint)")
            for proc, _, _ in running.values():
                proc.send_signal(signal.SIGINT)
            for proc, _, _ in running.values():
                try:
                    proc.wait(timeout=args.grace_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
            break
        time.sleep(1.0)
    stop_tar.set()
    if tune_names and not summarised:  # stopped mid-search: tune.json shows where it stands
        summarise_tuning(out, by_name[tune_names[0]].spec["base"], log)
    planned = plan_jobs(args, out, tuned_values(out, args.trials))
    log(
        f"finished: {len(done)} done, {len(failed)} failed, "
        f"{len([j for j in planned if j.name not in done])} not done"
    )
    events.close()
    if args.tar:
        tar_results(out, Path(args.tar))
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "job":
        import torch

        torch.set_num_threads(1)
        kind, spec = sys.argv[2], json.loads(sys.argv[3])
        {"train": job_train, "tune": job_tune, "robustness": job_robustness, "legacy": job_legacy}[
            kind
        ](spec)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="folder with Beauty.txt, ...")
    ap.add_argument("--out", default="study", help="results folder")
    ap.add_argument("--workers", type=int, default=2, help="jobs at a time")
    ap.add_argument("--device", default="cpu", help="torch device of every run (cpu, cuda)")
    ap.add_argument("--stages", default="fidelity,main,tune,robustness")
    ap.add_argument("--datasets", default="beauty,sports,toys")
    ap.add_argument("--seeds", default="0,1,2", help="SASRec seeds (GRU4Rec: seed 0)")
    ap.add_argument("--trials", type=int, default=20, help="tuning trials per mode")
    ap.add_argument("--tune-workers", type=int, default=2, help="tuning processes (both modes)")
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--legacy-src", default="", help="src folder of the pre-fix code (fidelity)")
    ap.add_argument("--budget-s", type=float, default=0.0, help="wall-clock budget (0: none)")
    ap.add_argument("--stop-starting-s", type=float, default=60.0)
    ap.add_argument(
        "--grace-s", type=float, default=90.0, help="seconds a job has to checkpoint when stopped"
    )
    ap.add_argument("--tar", default="", help="keep a .tar.gz of the results here")
    ap.add_argument("--tar-every-s", type=float, default=60.0)
    ap.add_argument(
        "--override",
        default="{}",
        help="JSON config values for every run, e.g. '{\"hidden_size\": 16}' for a smoke test",
    )
    args = ap.parse_args()
    if "beyond" in args.stages and "main" not in args.stages:
        ap.error("--stages beyond needs main too: the ablation starts from the main standard run")
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
