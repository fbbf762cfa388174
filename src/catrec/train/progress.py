"""What a training run prints on screen: one start-up line, then one line per epoch with the
overall ETA (the loop calls these; ``--quiet`` turns them off)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from catrec.config import Config
from catrec.data import SplitData

RECENT_EPOCHS = 3  # the ETA uses the mean time of this many recent whole epochs


def schedule(config: Config) -> str:
    """Which epochs are standard and which adversarial, e.g. ``epochs 1-10 standard warm-up,
    adversarial from 11``."""
    if not config.adversarial:
        return f"up to {config.epochs} epochs"
    w = config.adv_warmup_epochs
    if w == 0:
        return f"up to {config.epochs} epochs, adversarial from epoch 1"
    if config.epochs <= w:
        return f"all {config.epochs} epochs standard (warm-up {w} >= epochs: never adversarial)"
    return f"up to {config.epochs} epochs; epochs 1-{w} standard warm-up, adversarial from {w + 1}"


def startup_line(
    config: Config, split: SplitData, run_dir: Path, *, epoch: int = 0, step: int = 0
) -> str:
    """One line saying what the run is about to do (``epoch``, ``step``: where it resumes)."""
    data = split.data
    dropped = f" ({split.n_dropped:,} dropped: < 3 items)" if split.n_dropped else ""
    where = f"resuming at epoch {epoch + 1}, step {step}" if epoch or step else "training"
    return (
        f"{where}: {config.dataset}: {split.n_users:,} users{dropped}, {split.n_items:,} items, "
        f"{data.n_interactions:,} interactions | {config.model}, mode {config.mode}, seed "
        f"{config.seed} | {schedule(config)} | run folder {run_dir}"
    )


def format_duration(seconds: float) -> str:
    """``42s``, ``31m08s``, ``2h05m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def eta(log: list[dict[str, Any]], config: Config) -> str:
    """Overall time left: epochs left x mean time of the recent whole epochs (epochs timed only
    in part, after a resume, are skipped). An upper bound when early stopping ends the run
    sooner; during the warm-up the adversarial epochs ahead are slower than the recent ones."""
    done = log[-1]["epoch"] if log else 0
    left = config.epochs - done
    times = [r["epoch_time_s"] for r in log if not r.get("time_partial")][-RECENT_EPOCHS:]
    if left <= 0 or not times:
        return ""
    epochs = "epoch" if left == 1 else "epochs"
    text = f"ETA {format_duration(left * sum(times) / len(times))} for {left} {epochs} left"
    if config.adversarial and done <= config.adv_warmup_epochs < config.epochs:
        text += " (+ slower adversarial epochs)"
    return text


def epoch_line(
    log: list[dict[str, Any]], config: Config, improved: bool, best_score: float, best_epoch: int
) -> str:
    """The line of the last epoch in ``log``: loss, validation metrics, ``new best`` (saved as
    best.pt) or the best so far (0-based ``best_epoch``), the epoch time and the ETA."""
    record = log[-1]
    valid = record["valid"]
    loss = record.get("loss_rec", float("nan"))
    if improved:
        best = "new best"
    elif best_epoch < 0:  # select_from = adversarial: warm-up epochs are not candidates
        best = "warm-up (not a candidate: the best adversarial epoch is reported)"
    else:
        best = f"best {best_score:.4f} at epoch {best_epoch + 1}"
    partial = " after resume" if record.get("time_partial") else ""
    line = (
        f"epoch {record['epoch']:3d}/{config.epochs}  L_rec {loss:.4f}  valid NDCG@10 "
        f"{valid['NDCG@10']:.4f}  HR@10 {valid['HR@10']:.4f}  {best}  "
        f"{record['epoch_time_s']:.1f}s{partial}"
    )
    left = eta(log, config)
    return f"{line}  | {left}" if left else line
