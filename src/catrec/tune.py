"""Hyper-parameter search on the validation split (Optuna), for ``adv`` and ``cat``.

The search the study issue asks for (CAT.md §3: "until a measured search on the validation split
replaces them"): Optuna's TPE sampler, a median pruner on validation NDCG@10 per adversarial
epoch, and a SQLite study file, so an interrupted search resumes where it stopped (a trial cut
off by SIGINT / SIGTERM continues from its checkpoint: :func:`interrupted_trials`). Every trial is
an ordinary ``catrec train`` run (one training loop, :func:`catrec.train.loop.train`) that starts
from the standard warm-up kept by one standard run of the same seed (``keep_states``) instead of
retraining those epochs. Nothing here reads the test split: a trial's score is the validation
NDCG@10 of the model it reports (its best adversarial epoch).

Layout of ``OUT``::

    study.db                      Optuna storage (SQLite): all trials of every mode
    standard-seed{S}/             the standard run that keeps the warm-up states
    trials/{mode}-{number:03d}/   one run folder per trial
    tune.json                     every trial (params, state, value, best epoch) and the best
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from catrec.config import make_config
from catrec.errors import ConfigError
from catrec.utils import atomic_write_json, git_commit

#: Warm-up lengths searched; the standard run keeps its state after each (issue 11 §1).
WARMUPS = (0, 5, 10, 20)
#: Early-stopping patience searched (adversarial runs improve more slowly and noisily).
PATIENCES = (5, 10)
SELECT_METRIC = "NDCG@10"
#: User attribute of a trial that continues an interrupted one (its number).
RESUMES = "resumes_trial"
#: A trial may be pruned only after its adversarial terms have run this many epochs (the smaller
#: patience). The median pruner's own ``n_warmup_steps`` counts epochs from 1, so a trial with 20
#: warm-up epochs could be pruned after its first adversarial epoch, when switching the terms on
#: has just lowered validation NDCG@10: the Beauty search pruned 11 of its 31 adv trials after
#: their first adversarial epoch, 13 before their fifth (``docs/results/study/README.md``).
PRUNE_AFTER_ADV_EPOCHS = 5


#: Config keys a trial's parameters or its mode set: not among a study's fixed settings (nor
#: options of ``catrec tune``).
SEARCHED = (
    "eps",
    "eps_item",
    "lambda_1",
    "lambda_2",
    "adv_warmup_epochs",
    "scaling",
    "shared_dropout",
    "patience",
)


def fixed_settings(base: dict[str, Any], mode: str) -> dict[str, Any]:
    """The resolved settings every trial of ``mode``'s study shares: all but :data:`SEARCHED`,
    the mode, the movable keys (data path, device) and ``eval_batch_size``."""
    from catrec.run import MOVABLE_KEYS  # the data path and the device may move

    cfg = make_config(base | {"mode": mode}).model_dump()
    free = (*SEARCHED, *MOVABLE_KEYS, "mode", "eval_batch_size")  # the last: speed only
    return {k: v for k, v in cfg.items() if k not in free}


def check_settings(study: Any, base: dict[str, Any], mode: str, out: Path) -> None:
    """Record the study's fixed settings on first use; later, refuse other ones (a search must not
    mix trials of different models or data).

    Raises:
        ConfigError: ``base`` differs from the settings the study was started with; the message
            names each key.
    """
    fixed = fixed_settings(base, mode)
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", fixed)
        return
    changes = [
        f"{k}: {stored[k]!r} -> {v!r}"
        for k, v in sorted(fixed.items())
        if k in stored and stored[k] != v
    ]
    if changes:
        raise ConfigError(
            f"{out / 'study.db'}: the {study.study_name} search was started with other settings "
            f"({'; '.join(changes)}); continue it with the same settings, or use another --out"
        )


#: User attribute of a trial that re-runs one pruned before :data:`PRUNE_AFTER_ADV_EPOCHS`.
RERUNS = "reruns_trial"


def pruned_early(trial: Any) -> bool:
    """Whether ``trial`` (an Optuna ``FrozenTrial``) was pruned before its adversarial terms had
    run :data:`PRUNE_AFTER_ADV_EPOCHS` epochs (by the pruning rule before that constant existed).
    Such a trial does not count towards a search's trials: :func:`run_trials` runs its
    parameters again."""
    import optuna

    if trial.state != optuna.trial.TrialState.PRUNED or not trial.intermediate_values:
        return False
    warmup = trial.params.get("adv_warmup_epochs", 0)
    return max(trial.intermediate_values) - warmup < PRUNE_AFTER_ADV_EPOCHS


def counted_trials(study: Any) -> list[Any]:
    """The trials that count towards ``n_trials``: completed ones, and pruned ones that ran at
    least :data:`PRUNE_AFTER_ADV_EPOCHS` adversarial epochs."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False, states=states) if not pruned_early(t)]


def warmup_median_pruner(n_startup_trials: int = 3) -> Any:
    """A median pruner that compares a trial only with completed trials of the same warm-up
    (``adv_warmup_epochs``), at the same epoch, from its :data:`PRUNE_AFTER_ADV_EPOCHS`-th
    adversarial epoch on: prune when the trial's best validation NDCG@10 so far is below the
    median of theirs at this epoch (Optuna's ``MedianPruner`` rule within the stratum), and never
    while fewer than ``n_startup_trials`` of them exist.

    Optuna's own ``MedianPruner`` compares all completed trials at one epoch: at epoch 25 a trial
    with 20 warm-up epochs has run 5 adversarial epochs and trials with 5 warm-up epochs 20, and
    switching the terms on lowers validation NDCG@10 for a few epochs. On Beauty it pruned
    warm-up-20 trials standing level with the eventual winner at that epoch (adv 38: 0.0690 at
    epoch 25, the winner adv 12: 0.0689; ``docs/results/study/README.md``).
    """
    import math
    import statistics

    import optuna

    class WarmupMedianPruner(optuna.pruners.BasePruner):
        def prune(self, study: Any, trial: Any) -> bool:
            step = trial.last_step
            if step is None:
                return False
            warmup = trial.params.get("adv_warmup_epochs", 0)
            if step - warmup < PRUNE_AFTER_ADV_EPOCHS:
                return False
            complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            peers = [
                t.intermediate_values[step]
                for t in complete
                if t.params.get("adv_warmup_epochs", 0) == warmup and step in t.intermediate_values
            ]
            peers = [v for v in peers if not math.isnan(v)]
            if len(peers) < n_startup_trials:
                return False
            own = [v for v in trial.intermediate_values.values() if not math.isnan(v)]
            return not own or max(own) < statistics.median(peers)  # all NaN: pruned

    return WarmupMedianPruner()


def report_epoch(trial: Any, epoch: int, value: float, adv_epochs: int) -> bool:
    """Report one adversarial epoch's validation ``value`` to ``trial`` (step ``epoch``, counted
    from 1) and return whether to prune it: never before ``adv_epochs`` (the adversarial epochs
    run so far, this one included) reaches :data:`PRUNE_AFTER_ADV_EPOCHS`, then the median
    pruner's verdict."""
    trial.report(value, epoch)
    return adv_epochs >= PRUNE_AFTER_ADV_EPOCHS and trial.should_prune()


def search_space(trial: Any, mode: str, epochs: int | None = None) -> dict[str, Any]:
    """Config values of one trial (issue 11 §1): eps and eps_item in [0.01, 1] (log), lambda_1
    and lambda_2 in [0.1, 3], warm-up in {0, 5, 10, 20}, scaling in {proportional, inverse} (cat),
    shared dropout masks on or off, patience in {5, 10}. ``adv`` is level 1 with no scaling, so
    it searches eps, lambda_1, warm-up, shared dropout and patience. Warm-ups that would leave no
    adversarial epoch within ``epochs`` are not offered (a trial must be an adversarial model).

    Raises:
        ConfigError: ``mode`` is not ``adv`` or ``cat``.
    """
    if mode not in ("adv", "cat"):
        raise ConfigError(f"tune searches the adversarial modes adv and cat, not {mode!r}")
    values: dict[str, Any] = {
        "eps": trial.suggest_float("eps", 0.01, 1.0, log=True),
        "lambda_1": trial.suggest_float("lambda_1", 0.1, 3.0),
        "adv_warmup_epochs": trial.suggest_categorical(
            "adv_warmup_epochs", [w for w in WARMUPS if epochs is None or w < epochs]
        ),
        "shared_dropout": trial.suggest_categorical("shared_dropout", [True, False]),
        "patience": trial.suggest_categorical("patience", list(PATIENCES)),
    }
    if mode == "cat":
        values["eps_item"] = trial.suggest_float("eps_item", 0.01, 1.0, log=True)
        values["lambda_2"] = trial.suggest_float("lambda_2", 0.1, 3.0)
        values["scaling"] = trial.suggest_categorical("scaling", ["proportional", "inverse"])
    return values


def sampler_seed(mode: str, worker: int) -> int:
    """The TPE sampler's seed of one worker of one mode: distinct per mode and worker, so that the
    adv and cat searches (and parallel workers) do not draw the same random trials."""
    return 1000 * ("adv", "cat").index(mode) + worker


def standard_patience(log: Sequence[dict[str, Any]], patience: int) -> tuple[int, float]:
    """(best epoch, best validation NDCG@10) a standard run would report with ``patience``.

    Derived from a longer run's ``log.json``: until it stops, a run with a shorter patience
    trains exactly the same epochs, so its choice can be read off the log instead of retrained.
    """
    best, best_epoch, bad = -1.0, 0, 0
    for record in log:
        score = record["valid"][SELECT_METRIC]
        if score > best:
            best, best_epoch, bad = score, record["epoch"], 0
        else:
            bad += 1
            if bad >= patience:
                break
    return best_epoch, best


def _storage(out: Path) -> Any:
    import optuna

    # A generous lock timeout: several worker processes may share one SQLite file.
    out.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(
        f"sqlite:///{out.resolve() / 'study.db'}",
        engine_kwargs={"connect_args": {"timeout": 120}},
    )


def _study(out: Path, name: str, seed: int) -> Any:
    """Open (or create) study ``name`` in ``OUT/study.db`` with a TPE sampler and a median pruner.

    The sampler's seed is ``seed`` mixed with the number of trials the study already holds: a
    search continued by a later call (another session, machine or worker) must not replay the
    random start-up draws of an earlier call with the same worker seed. Before, it did: on Beauty
    a continued search re-ran adv trials 0-4 and cat trial 7 with the same parameters
    (``docs/results/study/README.md``). A fresh study keeps the plain ``seed``.
    """
    import numpy as np
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # catrec reports progress and errors
    study = optuna.create_study(
        study_name=name,
        storage=_storage(out),
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=8),
        pruner=warmup_median_pruner(),
    )
    n_before = len(study.get_trials(deepcopy=False))
    if n_before:
        mixed = int(np.random.SeedSequence([seed, n_before]).generate_state(1)[0])
        study.sampler = optuna.samplers.TPESampler(seed=mixed, n_startup_trials=8)
    return study


def study_name(base: dict[str, Any], mode: str) -> str:
    """``{dataset stem}-{model}-{mode}-seed{seed}``: one study per mode in ``study.db``."""
    cfg = make_config(base | {"mode": mode})
    return f"{Path(cfg.dataset).stem.lower()}-{cfg.model}-{mode}-seed{cfg.seed}"


def donor_dir(out: Path, seed: int) -> Path:
    return out / f"standard-seed{seed}"


def prepare_donor(out: Path, base: dict[str, Any], *, progress: bool = True) -> Path:
    """Train (or reuse, or resume) the standard run whose kept states start every trial.

    It runs with the largest patience searched, so that it also gives the standard baseline's
    patience choice (:func:`standard_patience`).
    """
    from catrec.run import read_json
    from catrec.train.loop import Trainer

    values = base | {"mode": "standard", "patience": max(PATIENCES)}
    cfg = make_config(values)
    run = donor_dir(out, cfg.seed)
    if (run / "config.yaml").exists():  # reused or resumed: only with this search's settings
        from catrec.config import config_changes
        from catrec.run import MOVABLE_KEYS, load_run_config

        changes = [
            c
            for c in config_changes(load_run_config(run).model_dump(), cfg)
            if c.split(":")[0] not in (*MOVABLE_KEYS, *SEARCHED, "mode")
        ]
        if changes:
            raise ConfigError(
                f"{run}: the search's standard run was trained with other settings "
                f"({'; '.join(changes)}); continue with the same settings, or use another --out"
            )
    meta = read_json(run / "run.json", dict) if (run / "run.json").exists() else {}
    if meta.get("status") == "finished":
        return run
    resume = (run / "last.pt").exists()
    if resume:  # its own values where the search sets none (defaults may have changed since)
        from catrec.run import resume_config

        cfg = resume_config(run, values | {"device": cfg.device})
    trainer = Trainer(
        cfg, run, progress=progress, keep_states=[w for w in WARMUPS if w > 0], evaluate_test=False
    )
    trainer.fit(resume=resume)
    return run


def run_trials(
    out: str | Path,
    base: dict[str, Any],
    mode: str,
    n_trials: int,
    *,
    sampler_seed: int = 0,
    progress: bool = False,
    donor: str | Path | None = None,
) -> None:
    """Run trials of ``mode``'s study until it holds ``n_trials`` completed or pruned ones
    (:func:`counted_trials`). Interrupted trials are continued and trials pruned too early
    (:func:`pruned_early`) run again with their parameters before new ones are drawn.

    Several processes may call this on the same ``out`` at once (each takes the next trial from
    the shared SQLite study). Trials start from the warm-up states kept by ``donor`` (default: the
    standard run of :func:`prepare_donor`, which must exist first).
    """
    import optuna

    from catrec.train.loop import Trainer, read_log

    out = Path(out)
    donor = Path(donor) if donor else donor_dir(out, make_config(base | {"mode": mode}).seed)
    study = _study(out, study_name(base, mode), sampler_seed)
    check_settings(study, base, mode, out)

    def objective(trial: optuna.Trial) -> float:
        epochs = make_config(base | {"mode": mode}).epochs
        values = base | {"mode": mode} | search_space(trial, mode, epochs)
        cfg = make_config(values, source=f"trial {trial.number}")
        resumes = trial.user_attrs.get(RESUMES)
        if resumes is None:
            run = out / "trials" / f"{mode}-{trial.number:03d}"
            trial.set_user_attr("run_dir", str(run.relative_to(out)))
        else:  # the interrupted trial's folder: its epochs so far count again for the pruner
            run = out / trial.user_attrs["run_dir"]
            from catrec.run import resume_config

            # unsearched keys keep the trial's own values; the device is this call's
            cfg = resume_config(run, values | {"device": cfg.device})
            for record in read_log(run):
                if record["adversarial"]:
                    trial.report(record["valid"][SELECT_METRIC], record["epoch"])

        def report(epoch: int, valid: dict[str, float], adv_on: bool) -> bool:
            if not adv_on:
                return False
            return report_epoch(trial, epoch, valid[SELECT_METRIC], epoch - cfg.adv_warmup_epochs)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = Trainer(cfg, run, progress=progress, on_epoch_end=report, evaluate_test=False)
            if resumes is None:
                metrics = trainer.fit(warmup_from=donor)
            else:
                metrics = trainer.fit(resume=True)
        if not metrics:
            raise optuna.TrialPruned()
        from catrec.run import read_json

        meta = read_json(run / "run.json", dict)
        trial.set_user_attr("best_epoch", meta.get("best_epoch"))
        trial.set_user_attr("epochs_run", meta.get("epochs_run"))
        return float(metrics["valid"][SELECT_METRIC])

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    while True:
        if len(counted_trials(study)) >= n_trials:
            return
        # one queued trial at a time (optimize takes the oldest waiting one): an interrupted
        # trial first, then one pruned too early; none while one waits (another worker's)
        if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            resumable = interrupted_trials(study, out)
            trials = study.get_trials(deepcopy=False)
            taken = {t.user_attrs.get(RERUNS) for t in trials}
            early = [t for t in trials if pruned_early(t) and t.number not in taken]
            if resumable:
                t = resumable[0]
                study.enqueue_trial(
                    t.params, user_attrs={RESUMES: t.number, "run_dir": t.user_attrs["run_dir"]}
                )
            elif early:
                study.enqueue_trial(early[0].params, user_attrs={RERUNS: early[0].number})
        study.optimize(objective, n_trials=1, catch=())


#: Exit status of a tuning worker stopped by SIGINT / SIGTERM after checkpointing.
INTERRUPTED_EXIT = 130


def _worker(out: Path, base: dict[str, Any], mode: str, n_trials: int, **kwargs: Any) -> None:
    """:func:`run_trials` in a worker process: an interruption exits with
    :data:`INTERRUPTED_EXIT`, so that the parent says "interrupted", not "failed". That includes
    a Ctrl-C that arrives before the trainer handles it (while torch and optuna import): the
    worker exits quietly instead of printing a traceback. (Not during multiprocessing's own
    start-up, about half a second: it imports ``catrec.cli`` before this runs.)"""
    import sys

    try:
        from catrec.train.loop import Interrupted

        try:
            run_trials(out, base, mode, n_trials, **kwargs)
        except Interrupted:
            sys.exit(INTERRUPTED_EXIT)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED_EXIT)


def interrupted_trials(study: Any, out: Path) -> list[Any]:
    """Failed trials of ``study`` that were interrupted with a checkpoint (run status
    ``interrupted``, ``last.pt`` present) and that no other trial continues yet.

    :func:`run_trials` enqueues each with its parameters and folder, so the next trial resumes
    that run instead of drawing new parameters: a search stopped at a session's end (SIGINT /
    SIGTERM) loses no epoch. A trial that failed with an error (status ``failed``) is not retried.
    """
    import optuna

    from catrec.run import read_json

    trials = study.get_trials(deepcopy=False)
    taken = {t.user_attrs.get(RESUMES) for t in trials}
    found = []
    for t in trials:
        run_dir = t.user_attrs.get("run_dir")
        if t.state != optuna.trial.TrialState.FAIL or t.number in taken or run_dir is None:
            continue
        run = out / run_dir
        if not (run / "last.pt").exists() or not (run / "run.json").exists():
            continue
        if read_json(run / "run.json", dict).get("status") == "interrupted":
            found.append(t)
    return found


def summarise(
    out: str | Path, base: dict[str, Any], modes: Sequence[str], donor: str | Path | None = None
) -> dict[str, Any]:
    """Write ``OUT/tune.json``: every trial (a trial that continues an interrupted one names it in
    ``resumes_trial``), each mode's best trial, and the standard baseline's
    patience choice (read off ``donor``'s log, default the tune's own standard run); returns it."""
    import optuna

    from catrec.train.loop import read_log

    out = Path(out)
    cfg = make_config(base | {"mode": "standard"})
    result: dict[str, Any] = {
        "base": base,
        "metric": f"valid {SELECT_METRIC} (best adversarial epoch)",
        "git_commit": git_commit(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "modes": {},
    }
    donor = Path(donor) if donor else donor_dir(out, cfg.seed)
    log = read_log(donor)
    if log:
        choices = {p: standard_patience(log, p) for p in PATIENCES}
        best_p = max(PATIENCES, key=lambda p: (choices[p][1], -p))
        result["standard"] = {
            "run_dir": os.path.relpath(donor, out),  # like the trials' run_dir: relative to OUT
            "patience": {str(p): {"best_epoch": e, "valid": v} for p, (e, v) in choices.items()},
            "chosen_patience": best_p,
        }
    for mode in modes:
        try:
            study = optuna.load_study(study_name=study_name(base, mode), storage=_storage(out))
        except KeyError:
            continue
        trials = [
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": t.params,
                "best_epoch": t.user_attrs.get("best_epoch"),
                "epochs_run": t.user_attrs.get("epochs_run"),
                "last_epoch_reported": max(t.intermediate_values, default=None),
                "run_dir": t.user_attrs.get("run_dir"),
                "resumes_trial": t.user_attrs.get(RESUMES),
                "reruns_trial": t.user_attrs.get(RERUNS),
                "duration_s": t.duration.total_seconds() if t.duration else None,
                "pruned_early": pruned_early(t),
            }
            for t in study.get_trials(deepcopy=False)
        ]
        complete = [t for t in trials if t["state"] == "COMPLETE"]
        n_early = sum(t["pruned_early"] for t in trials)
        entry: dict[str, Any] = {
            "n_complete": len(complete),
            # counted: pruned after at least PRUNE_AFTER_ADV_EPOCHS adversarial epochs
            "n_pruned": sum(t["state"] == "PRUNED" for t in trials) - n_early,
            "n_pruned_early": n_early,
            "trials": trials,
        }
        if complete:
            best = max(complete, key=lambda t: t["value"])
            entry["best"] = {"number": best["number"], "value": best["value"], **best["params"]}
        result["modes"][mode] = entry
    atomic_write_json(out / "tune.json", result)
    return result


def tune(
    out: str | Path,
    base: dict[str, Any],
    modes: Sequence[str] = ("adv", "cat"),
    n_trials: int = 20,
    *,
    workers: int = 1,
    devices: Sequence[str] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """The whole search: the standard run first, then ``n_trials`` trials per mode, run by
    ``workers`` processes in all, shared out among the modes in turn (each on
    ``devices[i % len(devices)]`` when given); resumable.

    Returns the content of ``OUT/tune.json``.
    """
    import multiprocessing as mp

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prepare_donor(out, base, progress=progress)
    if workers <= 1:
        for mode in modes:
            run_trials(
                out, base, mode, n_trials, sampler_seed=sampler_seed(mode, 0), progress=progress
            )
    else:
        # The SQLite schema and each mode's study are created here, once: worker processes
        # creating them at the same moment collide (optuna's first write, "UNIQUE constraint
        # failed: alembic_version"), and a search started with other settings is refused before
        # any worker starts. (One process needs none of this: run_trials opens and checks.)
        for mode in modes:
            check_settings(_study(out, study_name(base, mode), 0), base, mode, out)
        ctx = mp.get_context("spawn")  # CUDA cannot be forked
        procs = []
        for j in range(workers):
            mode = modes[j % len(modes)]
            values = dict(base)
            if devices:
                values["device"] = devices[j % len(devices)]
            # each worker its own sampler seed: equal seeds would draw the same random trials
            p = ctx.Process(
                target=_worker,
                args=(out, values, mode, n_trials),
                kwargs={"sampler_seed": sampler_seed(mode, j)},
            )
            p.start()
            procs.append(p)
        interrupted = False
        for p in procs:
            while True:
                try:
                    p.join()
                    break
                except KeyboardInterrupt:  # Ctrl-C reached the workers too: they checkpoint
                    interrupted = True
        failed = [p.exitcode for p in procs if p.exitcode]
        if interrupted or (failed and all(code == INTERRUPTED_EXIT for code in failed)):
            from catrec.train.loop import Interrupted

            raise Interrupted(f"tuning interrupted ({len(failed)} worker(s) checkpointed)")
        if failed:
            raise RuntimeError(f"{len(failed)} tuning worker(s) failed (exit codes {failed})")
    result = summarise(out, base, modes)
    print(json.dumps({m: r.get("best") for m, r in result["modes"].items()}, indent=2))
    return result
