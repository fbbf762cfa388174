"""The ``catrec`` command line: ``data stats``, ``train``, ``evaluate``, ``robustness``,
``compare``, and ``recommend``, ``serve``, ``export`` to use a trained model.

Exit status: 0 on success, 2 on bad usage or bad input (one clear line on stderr), 1 on other
failures, 130 when training was interrupted and checkpointed.
"""

from __future__ import annotations

import json
import sys
import types
import typing
import warnings
from pathlib import Path
from typing import Any

import click

from catrec.config import ADVERSARIAL_KEYS, TUNED_DEFAULTS, Config, load_yaml, make_config
from catrec.errors import CatrecError
from catrec.tune import SEARCHED


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """(click type, is_flag) for a Config field annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _click_type(args[0])
    if origin is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)]), False
    if annotation is bool:
        return bool, True
    if annotation in (int, float, str):
        return annotation, False
    raise TypeError(f"no CLI type for {annotation!r}")


def config_options(func):
    """Add one ``--key-name`` option per :class:`Config` field (default: unset)."""
    for name, info in reversed(list(Config.model_fields.items())):
        flag = "--" + name.replace("_", "-")
        ctype, is_flag = _click_type(info.annotation)
        default = None if info.is_required() else info.default
        help_text = f"{info.description}" + (
            f" [default: {default}]" if default is not None else ""
        )
        if is_flag:
            decl = f"{flag}/--no-{name.replace('_', '-')}"
            func = click.option(decl, name, default=None, help=help_text)(func)
        else:
            func = click.option(flag, name, type=ctype, default=None, help=help_text)(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="catrec")
def cli() -> None:
    """Cascade-guided adversarial training (CAT) for sequential recommenders.

    Tan et al., "Towards More Robust and Accurate Sequential Recommendation with Cascade-guided
    Adversarial Training", SDM 2024 (arXiv:2304.05492).
    """


def _table_options(func):
    """``--user-col``, ``--item-col``, ``--time-col``, ``--time-format`` (the Config fields)."""
    for name in reversed(("user_col", "item_col", "time_col", "time_format")):
        info = Config.model_fields[name]
        func = click.option("--" + name.replace("_", "-"), name, help=info.description)(func)
    return func


@cli.group()
def data() -> None:
    """Inspect datasets."""


@data.command("stats", short_help="Users, items, interactions and sequence lengths.")
@click.argument("dataset")
@click.option(
    "--max-len", default=50, show_default=True, type=click.IntRange(min=1), help="input length L"
)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@_table_options
def data_stats(dataset: str, max_len: int, as_json: bool, **table: str | None) -> None:
    """Users, items, interactions and sequence lengths of DATASET (a name or a path)."""
    from catrec.data import leave_one_out
    from catrec.data.stats import dataset_stats
    from catrec.train.loop import read_config_dataset

    given = {k: v for k, v in table.items() if v is not None}
    cfg = make_config({"dataset": dataset, "max_len": max_len, **given}, source="command line")
    seqs = read_config_dataset(cfg)
    path = seqs.name
    stats = dataset_stats(leave_one_out(seqs, max_len), raw=seqs)
    stats["path"] = str(path)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    for key, value in stats.items():
        if isinstance(value, dict):
            value = "  ".join(f"{k} {v:g}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.4f}"
        click.echo(f"{key:<34} {value}")


def _default_out(cfg: Config) -> Path:
    from catrec.data.registry import DATASETS

    key = cfg.dataset.lower()
    name = key if key in DATASETS else Path(cfg.dataset).stem.lower()
    return Path("runs") / f"{name}-{cfg.model}-{cfg.mode}-seed{cfg.seed}"


def _warn_if_never_adversarial(mode: str, epochs: int, warmup: int) -> None:
    if epochs <= warmup:
        click.echo(
            f"catrec: warning: --epochs {epochs} <= the adversarial warm-up of {warmup} epochs "
            f"(--adv-warmup-epochs): the adversarial terms of mode {mode!r} never run, so it "
            "trains exactly like 'standard'; lower --adv-warmup-epochs or raise --epochs",
            err=True,
        )


def _warn_if_other_mode(values: dict[str, Any], given: dict[str, Any], path: str | None) -> None:
    """Warn when ``--mode`` changes the mode of a config file that sets per-mode defaults (a run's
    ``config.yaml`` holds its mode's resolved values: another mode would inherit them)."""
    mode, other = given.get("mode"), values.get("mode")
    inherited = sorted(k for k in TUNED_DEFAULTS["cat"] if values.get(k) is not None)
    if mode and other and mode != other and inherited:
        click.echo(
            f"catrec: warning: {path} is a {other!r} config and --mode is {mode!r}: its "
            f"{', '.join(inherited)} are kept, not {mode!r}'s defaults; remove those keys (or "
            "set them to null) to get them",
            err=True,
        )


#: Command-line keys a mode ignores (a positive ``lambda_replace`` on standard and adv's level-2
#: weight and scaling are errors of the config itself, so they are not warned about here).
UNUSED_BY_MODE: dict[str, frozenset[str]] = {
    "standard": ADVERSARIAL_KEYS - {"lambda_replace"},
    "adv": frozenset({"eps_item", "cascade", "c_max", "gamma"}),
}


def _warn_if_unused(given: dict[str, Any], mode: str) -> None:
    """Warn when a command-line option has no effect in ``mode`` (e.g. ``--mode standard --eps
    0.5``): the value is recorded in config.yaml but never used."""
    ignored = UNUSED_BY_MODE.get(mode, frozenset())
    unused = [k for k in Config.model_fields if k in given and k in ignored]
    if unused:
        flags = ", ".join("--" + k.replace("_", "-") for k in unused)
        click.echo(f"catrec: warning: mode {mode!r} does not use {flags}", err=True)


def _absolute_dataset(values: dict[str, Any]) -> None:
    """Store a dataset given as a path as an absolute path, so the run works from any folder."""
    from catrec.data.registry import DATASETS

    ds = values.get("dataset")
    if isinstance(ds, str) and ds.lower() not in DATASETS and Path(ds).expanduser().exists():
        values["dataset"] = str(Path(ds).expanduser().resolve())


@cli.command(short_help="Train a model with standard, adv or cat (cascade-guided) training.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file")
@click.option("--out", type=click.Path(file_okay=False), help="run folder [default: runs/NAME]")
@click.option(
    "--resume",
    type=click.Path(file_okay=False),
    help="continue the interrupted run in this folder (its config is used)",
)
@click.option("--quiet", is_flag=True, help="no progress bars or per-epoch lines")
@config_options
def train(
    config_file: str | None, out: str | None, resume: str | None, quiet: bool, **opts
) -> None:
    """Train a model with standard, adversarial (adv) or cascade-guided (cat) training.

    Options override the YAML config; the resolved config is saved as RUN_DIR/config.yaml.

    \b
    Example:
      catrec train --dataset beauty --model sasrec --mode cat --seed 0
    """
    from catrec.run import load_run_config
    from catrec.train.distributed import env_world
    from catrec.train.loop import train as run_training

    given = {k: v for k, v in opts.items() if v is not None}
    if resume:
        if given or config_file or out:
            raise click.UsageError("--resume takes the run's stored config; give no other options")
        cfg = load_run_config(Path(resume))
        metrics = run_training(cfg, resume, progress=not quiet, resume=True)
        run_dir = Path(resume)
    else:
        values = load_yaml(config_file) if config_file else {}
        _warn_if_other_mode(values, given, config_file)
        values.update(given)
        if "dataset" not in values:
            raise click.UsageError("missing --dataset (a name such as beauty, or a file path)")
        _absolute_dataset(values)
        cfg = make_config(values, source=config_file or "command line")
        _warn_if_unused(given, cfg.mode)
        if cfg.adversarial:
            _warn_if_never_adversarial(cfg.mode, cfg.epochs, cfg.adv_warmup_epochs)
        run_dir = Path(out) if out else _default_out(cfg)
        metrics = run_training(cfg, run_dir, progress=not quiet)
    world = env_world()
    if world is None or world[0] == 0:  # under torchrun, rank 0 reports
        _print_metrics(metrics)
        click.echo(f"run folder: {run_dir}")


def _print_metrics(metrics: dict[str, Any]) -> None:
    keys = ["HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR"]
    click.echo(f"{'split':<6} " + " ".join(f"{k:>8}" for k in keys))
    splits = [s for s in ("valid", "test") if s in metrics]
    for split in splits:
        m = metrics[split]
        click.echo(f"{split:<6} " + " ".join(f"{m[k]:>8.4f}" for k in keys))
    last = metrics[splits[-1]]
    click.echo(
        f"{splits[-1]} users {last['n_users']}; {splits[-1]} target already in input sequence: "
        f"{100 * last['target_in_history']:.2f}%"
    )


@cli.command(short_help="Re-score a run's best checkpoint; rewrite its metrics.json.")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--split",
    "split_name",
    type=click.Choice(["valid", "test", "both"]),
    default="both",
    show_default=True,
    help="which split to evaluate",
)
@click.option(
    "--checkpoint",
    type=click.Choice(["best", "last"]),
    default="best",
    show_default=True,
    help="best.pt (best validation NDCG@10) or last.pt (the latest epoch)",
)
@click.option(
    "--mask-history/--no-mask-history",
    default=None,
    help="exclude input-sequence items from the ranking [default: the run's mask_history]",
)
@click.option("--quiet", is_flag=True, help="no progress bars")
def evaluate(
    run_dir: str, split_name: str, checkpoint: str, mask_history: bool | None, quiet: bool
) -> None:
    """Evaluate RUN_DIR's checkpoint (full ranking).

    With the defaults (both splits, best checkpoint, the run's history masking) the result is
    written to RUN_DIR/metrics.json; any other choice is only printed. On a run that has not
    finished, it warns and uses the best checkpoint so far.
    """
    from catrec.train.loop import evaluate_run

    splits = ("valid", "test") if split_name == "both" else (split_name,)
    metrics = evaluate_run(
        run_dir,
        splits=splits,
        checkpoint=checkpoint,
        mask_history=mask_history,
        progress=not quiet,
    )
    _print_metrics(metrics)


def _split_list(value: str, option: str) -> list[str]:
    """Comma-separated option value -> list of non-empty names."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise click.UsageError(f"{option} needs at least one value")
    return items


def _robustness_options(func):
    """Options shared by ``robustness`` and ``compare`` (replacement plan and metrics)."""
    opts = [
        click.option(
            "--positions",
            default="first,middle,last,random",
            show_default=True,
            help="replaced positions, comma-separated: first, middle, last, random",
        ),
        click.option(
            "--k",
            "k",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="items replaced per user (with position last: the k most recent)",
        ),
        click.option(
            "--depth",
            type=click.IntRange(min=1),
            default=10,
            show_default=True,
            help="K of the top-K lists and of HR@K / NDCG@K",
        ),
        click.option(
            "--p",
            "p",
            type=click.FloatRange(0.0, 1.0, min_open=True),
            default=0.9,
            show_default=True,
            help="RBO persistence p (finite, normalised RBO@K; CAT.md §4)",
        ),
        click.option(
            "--bootstrap",
            type=click.IntRange(min=1),
            default=1000,
            show_default=True,
            help="bootstrap resamples for the 95% intervals",
        ),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


@cli.command(short_help="Robustness of a run's best model to item replacement.")
@click.argument("run_dir", type=click.Path(file_okay=False))
@_robustness_options
@click.option(
    "--replacement",
    default="random",
    show_default=True,
    help="replacement items: random, popular or adversarial (comma-separated for several)",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="plan seed")
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(dir_okay=False),
    help="plan file to read (or draw into); share one across runs "
    "[default: RUN_DIR/plan-seedS.npz]",
)
@click.option("--quiet", is_flag=True, help="no progress bar")
def robustness(
    run_dir: str,
    positions: str,
    k: int,
    depth: int,
    p: float,
    bootstrap: int,
    replacement: str,
    seed: int,
    plan_path: str | None,
    quiet: bool,
) -> None:
    """Robustness of RUN_DIR's best model to item replacement in the test inputs.

    Prints a table and merges one record per setting into RUN_DIR/robustness.json. On a run
    that has not finished, it warns and uses the best checkpoint so far.

    \b
    Example:
      catrec robustness runs/beauty-sasrec-cat-seed0 --replacement adversarial
    """
    from catrec.robustness import format_table, run_robustness, select_records, settings_grid

    settings = settings_grid(
        _split_list(positions, "--positions"), _split_list(replacement, "--replacement"), k
    )
    doc = run_robustness(
        run_dir,
        settings,
        seed=seed,
        plan_path=plan_path,
        depth=depth,
        p=p,
        n_bootstrap=bootstrap,
        progress=not quiet,
    )
    clean = doc["clean"]
    click.echo(
        f"clean test: users {clean['n_users']}  HR@{depth} {clean[f'HR@{depth}']:.4f}  "
        f"NDCG@{depth} {clean[f'NDCG@{depth}']:.4f}"
    )
    click.echo(format_table(select_records(doc, settings, seed, depth, p), depth))
    click.echo(f"written: {Path(run_dir) / 'robustness.json'}")


def _config_options_except(*names: str):
    """:func:`config_options` without the options for the Config fields ``names``."""

    def decorate(func):
        func = config_options(func)
        func.__click_params__ = [o for o in func.__click_params__ if o.name not in names]
        return func

    return decorate


@cli.command(short_help="Train each mode x seed; compare accuracy and robustness.")
@click.option("--modes", default="standard,adv,cat", show_default=True, help="training modes")
@click.option("--seeds", default="0,1,2", show_default=True, help="training seeds")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="output folder; runs go to OUT/runs/<mode>-seed<seed> [default: compare/DATASET-MODEL]",
)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file")
@_robustness_options
@click.option(
    "--replacement",
    default="random",
    show_default=True,
    help="replacement items: random, popular, adversarial (comma-separated for several)",
)
@click.option(
    "--plan-seed", type=click.IntRange(min=0), default=0, show_default=True, help="plan seed"
)
@click.option(
    "--reuse-mismatched",
    is_flag=True,
    help="reuse finished or interrupted runs in OUT/runs even if their config differs from this "
    "command's (default: refuse, listing the differences)",
)
@click.option(
    "--parallel-runs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="train up to N runs at once, each in its own process (with several GPUs and "
    "--device cuda: cuda:0, cuda:1, ... round-robin)",
)
@click.option("--quiet", is_flag=True, help="no progress bars")
@_config_options_except("mode", "seed")
def compare(
    modes: str,
    seeds: str,
    out: str | None,
    config_file: str | None,
    positions: str,
    k: int,
    depth: int,
    p: float,
    bootstrap: int,
    replacement: str,
    plan_seed: int,
    reuse_mismatched: bool,
    parallel_runs: int,
    quiet: bool,
    **opts,
) -> None:
    """Train (or reuse) each mode x seed and compare accuracy and robustness side by side.

    Every run is evaluated on the same replacement plan. Writes OUT/compare.json, OUT/compare.md
    and PNG plots; finished runs in OUT/runs are reused and an interrupted compare resumes.
    Training options (e.g. --epochs, --adv-warmup-epochs, --max-len) apply to every run.

    \b
    Example:
      catrec compare --dataset beauty --model sasrec --modes standard,adv,cat --seeds 0,1,2
    """
    from catrec.compare import run_compare

    base = load_yaml(config_file) if config_file else {}
    base.update({key: v for key, v in opts.items() if v is not None})
    for key in ("mode", "seed"):
        if key in base:
            raise click.UsageError(f"the config sets {key!r}; compare takes --modes and --seeds")
    if "dataset" not in base:
        raise click.UsageError("missing --dataset (a name such as beauty, or a file path)")
    _absolute_dataset(base)
    for mode in _split_list(modes, "--modes"):
        if mode in ("adv", "cat"):
            epochs = base.get("epochs")  # absent or null: the default
            warmup = base.get("adv_warmup_epochs")
            _warn_if_never_adversarial(
                mode,
                Config.model_fields["epochs"].default if epochs is None else epochs,
                TUNED_DEFAULTS[mode]["adv_warmup_epochs"] if warmup is None else warmup,
            )
    try:
        seed_list = [int(s) for s in _split_list(seeds, "--seeds")]
    except ValueError:
        raise click.UsageError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    if out is None:
        name = Path(base["dataset"]).stem.lower()
        out = str(Path("compare") / f"{name}-{base.get('model', 'sasrec')}")
    result = run_compare(
        out,
        base,
        _split_list(modes, "--modes"),
        seed_list,
        positions=_split_list(positions, "--positions"),
        replacements=_split_list(replacement, "--replacement"),
        k=k,
        plan_seed=plan_seed,
        depth=depth,
        p=p,
        n_bootstrap=bootstrap,
        progress=not quiet,
        reuse_mismatched=reuse_mismatched,
        parallel_runs=parallel_runs,
    )
    click.echo((Path(out) / "compare.md").read_text(encoding="utf-8"))
    written = [str(Path(out) / "compare.json"), str(Path(out) / "compare.md"), *result["plots"]]
    click.echo("written: " + ", ".join(written))


@cli.command(short_help="Search adv and cat settings on the validation split (Optuna).")
@click.option("--modes", default="adv,cat", show_default=True, help="adversarial modes to tune")
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="completed or pruned trials per mode",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="processes running trials side by side (they share OUT/study.db)",
)
@click.option(
    "--devices",
    default="",
    help="comma-separated devices given to the workers in turn, e.g. cuda:0,cuda:1",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="output folder [default: tune/DATASET-MODEL-seedSEED]",
)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file")
@click.option("--quiet", is_flag=True, help="no progress bars")
@_config_options_except("mode", *SEARCHED)
def tune(
    modes: str,
    trials: int,
    workers: int,
    devices: str,
    out: str | None,
    config_file: str | None,
    quiet: bool,
    **opts,
) -> None:
    """Search adv and cat hyper-parameters on the validation split (Optuna TPE, median pruner).

    \b
    Searched: eps, eps_item (0.01-1, log), lambda_1, lambda_2 (0.1-3), warm-up (0, 5, 10, 20),
    scaling (proportional, inverse), shared dropout (on, off), patience (5, 10).
    A standard run of the same seed trains first and keeps its state after each warm-up length,
    and every trial starts from there. OUT/study.db holds the study, so an interrupted search
    resumes; OUT/tune.json lists every trial and each mode's best. The test split is never read.
    Example: catrec tune --dataset beauty --model sasrec --trials 20
    """
    from catrec.tune import tune as run_tune

    base = load_yaml(config_file) if config_file else {}
    base = {key: v for key, v in base.items() if v is not None}  # null: the default
    base.update({key: v for key, v in opts.items() if v is not None})
    for key in ("mode", *SEARCHED):
        if key in base:
            raise click.UsageError(f"the config sets {key!r}, which tune searches or sets")
    if "dataset" not in base:
        raise click.UsageError("missing --dataset (a name such as beauty, or a file path)")
    _absolute_dataset(base)
    mode_list = _split_list(modes, "--modes")
    for mode in mode_list:
        if mode not in ("adv", "cat"):
            raise click.UsageError(f"--modes: tune searches adv and cat, not {mode!r}")
    if out is None:
        name = Path(base["dataset"]).stem.lower()
        out = str(Path("tune") / f"{name}-{base.get('model', 'sasrec')}-seed{base.get('seed', 0)}")
    device_list = _split_list(devices, "--devices") if devices else []
    from catrec.train.loop import Interrupted

    try:
        run_tune(
            out, base, mode_list, trials, workers=workers, devices=device_list, progress=not quiet
        )
    except Interrupted:
        raise Interrupted(
            f"tuning interrupted; its state is saved in {out} (study.db and the runs' "
            "checkpoints): run the same catrec tune command again to continue it (the "
            "interrupted trial resumes)"
        ) from None
    click.echo(f"written: {Path(out) / 'tune.json'}, {Path(out) / 'study.db'}")


_CHECKPOINT = click.option(
    "--checkpoint",
    type=click.Choice(["best", "last"]),
    default="best",
    show_default=True,
    help="weights to use",
)


@cli.command(short_help="Top-K items for a history of raw item ids, or a JSONL file of them.")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--history", help='raw item ids, oldest first, space-separated: "i1 i2 i3"')
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False),
    help='JSON Lines file of {"user": ..., "history": [...]} objects',
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(dir_okay=False),
    help="JSON Lines output for --input [default: stdout]",
)
@click.option("--k", "k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--include-history",
    is_flag=True,
    help="allow items of the history in the list (default: excluded, as in evaluation)",
)
@click.option("--strict", is_flag=True, help="reject unknown item ids instead of dropping them")
@click.option("--json", "as_json", is_flag=True, help="--history: print JSON instead of a table")
@click.option("--quiet", is_flag=True, help="no progress bar")
@_CHECKPOINT
def recommend(
    run_dir: str,
    history: str | None,
    input_path: str | None,
    output_path: str | None,
    k: int,
    include_history: bool,
    strict: bool,
    as_json: bool,
    quiet: bool,
    checkpoint: str,
) -> None:
    """Top-K items for a history of raw item ids (--history) or a JSONL file of them (--input).

    Needs only RUN_DIR (no dataset file). Unknown ids are dropped with a warning (--strict:
    rejected); a history without known items gets the most popular training items (fallback).
    Example: catrec recommend runs/beauty-sasrec-cat-seed0 --history "12 845 77" --k 10
    """
    from catrec.serve import load
    from catrec.serve.jsonl import recommend_file

    if (history is None) == (input_path is None):
        raise click.UsageError("give exactly one of --history and --input")
    if output_path is not None and input_path is None:
        raise click.UsageError("--output goes with --input")
    rec = load(run_dir, checkpoint)
    if input_path is not None:
        counts = recommend_file(
            rec,
            input_path,
            output_path,
            k,
            exclude_history=not include_history,
            strict=strict,
            progress=not quiet,
        )
        if output_path is not None:
            click.echo(
                f"{counts['histories']} histories ({counts['fallback']} fallback) written to "
                f"{output_path}",
                err=True,
            )
        return
    result = rec.recommend(history.split(), k, not include_history, strict=strict)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    if result.fallback:
        click.echo("no known item in the history: the most popular training items", err=True)
    click.echo(f"{'rank':>4}  {'item':<20} {'count' if result.fallback else 'score':>10}")
    for rank, (item, score) in enumerate(result, start=1):
        click.echo(f"{rank:>4}  {item:<20} {score:>10.4f}")


@cli.command(short_help="Serve a trained run over HTTP (FastAPI + uvicorn).")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@_CHECKPOINT
@click.option("--max-history", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--max-k", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option(
    "--max-histories",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="most histories in one batch request",
)
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=1 << 20, show_default=True)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="most histories scored in one forward pass (micro-batching)",
)
@click.option(
    "--batch-wait-ms",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="how long to collect concurrent requests into one forward pass",
)
@click.option("--threads", type=click.IntRange(min=1), help="torch threads [default: torch's]")
@click.option(
    "--root-path", default="", help="path prefix the app is mounted at behind a proxy (/recs)"
)
@click.option(
    "--proxy-headers",
    is_flag=True,
    help="trust X-Forwarded-For / -Proto from --forwarded-allow-ips",
)
@click.option(
    "--forwarded-allow-ips", default=None, help="proxy addresses trusted for --proxy-headers"
)
@click.option("--no-access-log", is_flag=True, help="do not log every request")
def serve(
    run_dir: str,
    host: str,
    port: int,
    checkpoint: str,
    max_history: int,
    max_k: int,
    max_histories: int,
    max_body_bytes: int,
    max_batch: int,
    batch_wait_ms: float,
    threads: int | None,
    root_path: str,
    proxy_headers: bool,
    forwarded_allow_ips: str | None,
    no_access_log: bool,
) -> None:
    """Serve RUN_DIR over HTTP: POST /recommend, GET /health, GET /info, docs at /docs.

    Binds to loopback (127.0.0.1) unless --host says otherwise; put a reverse proxy in front to
    expose it (see the README). Example: catrec serve runs/beauty-sasrec-cat-seed0 --port 8000
    """
    import torch

    from catrec.serve import load
    from catrec.serve.http import ServerLimits
    from catrec.serve.http import serve as run_server

    if threads is not None:
        torch.set_num_threads(threads)
    limits = ServerLimits(
        max_history=max_history,
        max_k=max_k,
        max_histories=max_histories,
        max_body_bytes=max_body_bytes,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
    )
    rec = load(run_dir, checkpoint)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"catrec: note: listening on {host}, not only on loopback", err=True)
    run_server(
        rec,
        host=host,
        port=port,
        limits=limits,
        root_path=root_path,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        access_log=not no_access_log,
    )


@cli.command("export", short_help="Export a run's model as TorchScript or ONNX.")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(["torchscript", "onnx"]), required=True, help="format"
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="output folder [default: RUN_DIR/export]"
)
@click.option("--include-history", is_flag=True, help="do not mask the history items in the scores")
@_CHECKPOINT
def export_cmd(
    run_dir: str, fmt: str, out: str | None, include_history: bool, checkpoint: str
) -> None:
    """Export RUN_DIR's model for serving outside Python (TorchScript or ONNX).

    Writes the model (int64 item_ids [B, max_len], left-padded -> float32 scores
    [B, n_items + 1], masked with -inf), items.json and export.json (the conventions).
    """
    from catrec.serve.export import export_model

    path = export_model(
        run_dir, fmt, out, checkpoint=checkpoint, exclude_history=not include_history
    )
    click.echo(f"written: {path} (with items.json and export.json)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``catrec`` console script; returns the exit status (130: interrupted).

    Ctrl-C before a command has started (while torch imports) ends with one line, not a
    traceback; a command's own Ctrl-C handling (a training run checkpoints) is unchanged.
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:
        click.echo("catrec: interrupted", err=True)
        return 130


def _main(argv: list[str] | None) -> int:
    from catrec.train.distributed import DistributedError, env_world, shutdown
    from catrec.train.loop import Interrupted

    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"catrec: warning: {msg}\n"
    from catrec.metrics.ranking import NumericalError

    try:
        world = env_world()
    except CatrecError as exc:
        click.echo(f"catrec: error: {exc}", err=True)
        return 2
    if world is not None:  # under torchrun: every line says which rank wrote it
        warnings.formatwarning = lambda msg, cat, *a, **k: (
            f"catrec: rank {world[0]}: warning: {msg}\n"
        )
    try:
        cli.main(args=argv, prog_name="catrec", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("catrec: aborted", err=True)
        return 130
    except CatrecError as exc:
        click.echo(f"catrec: error: {exc}", err=True)
        return 2
    except Interrupted as exc:
        click.echo(f"catrec: {exc}", err=True)
        return 130
    except NumericalError as exc:
        click.echo(f"catrec: training failed: {exc}", err=True)
        return 1
    except DistributedError as exc:
        click.echo(f"catrec: error: {exc}", err=True)
        return 1
    except OSError as exc:  # a folder that cannot be written, a full disk, ...
        name = f" {exc.filename}" if exc.filename else ""
        click.echo(f"catrec: error:{name}: {exc.strerror or exc}", err=True)
        return 1
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
