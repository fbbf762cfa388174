"""The ``catrec`` command line: ``data stats``, ``train``, ``evaluate``.

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

from catrec.config import Config, load_yaml, make_config
from catrec.errors import CatrecError


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
        help_text = f"{info.description}" + (f" [default: {default}]" if default is not None else "")
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


@cli.group()
def data() -> None:
    """Inspect datasets."""


@data.command("stats")
@click.argument("dataset")
@click.option("--max-len", default=50, show_default=True, help="input length L for the split")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def data_stats(dataset: str, max_len: int, as_json: bool) -> None:
    """Users, items, interactions and sequence lengths of DATASET (a name or a path)."""
    from catrec.data import leave_one_out, read_dataset, resolve_dataset
    from catrec.data.stats import dataset_stats

    path = resolve_dataset(dataset)
    seqs = read_dataset(path)
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
    name = Path(cfg.dataset).stem.lower() if "/" in cfg.dataset else cfg.dataset.lower()
    return Path("runs") / f"{name}-{cfg.model}-{cfg.mode}-seed{cfg.seed}"


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file")
@click.option("--out", type=click.Path(file_okay=False), help="run folder [default: runs/NAME]")
@click.option(
    "--resume",
    type=click.Path(file_okay=False),
    help="continue the interrupted run in this folder (its config is used)",
)
@click.option("--quiet", is_flag=True, help="no progress bars or per-epoch lines")
@config_options
def train(config_file: str | None, out: str | None, resume: str | None, quiet: bool, **opts) -> None:
    """Train a model with standard, adversarial (adv) or cascade-guided (cat) training.

    Options override the YAML config; the resolved config is saved as RUN_DIR/config.yaml.
    Example: catrec train --dataset beauty --model sasrec --mode cat --seed 0
    """
    from catrec.run import load_run_config
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
        values.update(given)
        if "dataset" not in values:
            raise click.UsageError("missing --dataset (a name such as beauty, or a file path)")
        cfg = make_config(values, source=config_file or "command line")
        run_dir = Path(out) if out else _default_out(cfg)
        metrics = run_training(cfg, run_dir, progress=not quiet)
    _print_metrics(metrics)
    click.echo(f"run folder: {run_dir}")


def _print_metrics(metrics: dict[str, Any]) -> None:
    keys = ["HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR"]
    click.echo(f"{'split':<6} " + " ".join(f"{k:>8}" for k in keys))
    for split in ("valid", "test"):
        m = metrics[split]
        click.echo(f"{split:<6} " + " ".join(f"{m[k]:>8.4f}" for k in keys))
    t = metrics["test"]
    click.echo(
        f"test users {t['n_users']}; test target already in input sequence: "
        f"{100 * t['target_in_history']:.2f}%"
    )


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def evaluate(run_dir: str) -> None:
    """Evaluate RUN_DIR's best checkpoint (full ranking); rewrite RUN_DIR/metrics.json."""
    from catrec.train.loop import evaluate_run

    _print_metrics(evaluate_run(run_dir))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``catrec`` console script; returns the exit status."""
    from catrec.train.loop import Interrupted

    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"catrec: warning: {msg}\n"
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
