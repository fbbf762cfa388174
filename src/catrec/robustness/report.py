"""The robustness report: per-setting metrics (with bootstrap intervals) over one plan, and the
plain-text table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from catrec.data import SplitData
from catrec.errors import ConfigError
from catrec.metrics.ranking import hit_rate, ndcg
from catrec.metrics.stability import (
    bootstrap_means,
    jaccard_at_k,
    percentile_interval,
    rbo_at_k,
)
from catrec.models.base import SequentialRecommender
from catrec.robustness.attack import adversarial_items, apply_replacements, topk_and_ranks
from catrec.robustness.plan import ReplacementPlan, Setting


def setting_metrics(
    clean_top: np.ndarray,
    clean_ranks: np.ndarray,
    pert_top: np.ndarray,
    pert_ranks: np.ndarray,
    *,
    depth: int,
    p: float,
    n_bootstrap: int = 1000,
    bootstrap_seed: int = 0,
) -> dict[str, Any]:
    """Means over users and paired-bootstrap 95% intervals of one setting's metrics.

    Keys: ``RBO@K``, ``Jaccard@K``, ``HR@K``, ``HR@K_clean``, ``NDCG@K``, ``NDCG@K_clean`` (the
    un-suffixed ones are on perturbed inputs), ``HR@K_drop`` and ``NDCG@K_drop`` (relative:
    ``1 - perturbed / clean``, None when the clean value is 0), and ``ci95`` (metric -> [lo, hi]).
    """
    cr = torch.as_tensor(clean_ranks)
    pr = torch.as_tensor(pert_ranks)
    names = [f"RBO@{depth}", f"Jaccard@{depth}", f"HR@{depth}", f"HR@{depth}_clean",
             f"NDCG@{depth}", f"NDCG@{depth}_clean"]  # fmt: skip
    per_user = np.stack(
        [
            rbo_at_k(clean_top, pert_top, p, depth),
            jaccard_at_k(clean_top, pert_top, depth),
            hit_rate(pr, depth).numpy(),
            hit_rate(cr, depth).numpy(),
            ndcg(pr, depth).numpy(),
            ndcg(cr, depth).numpy(),
        ],
        axis=1,
    )  # [U, 6]
    means = per_user.mean(axis=0)
    samples = bootstrap_means(per_user, n_bootstrap, seed=bootstrap_seed)  # [R, 6]
    out: dict[str, Any] = {n: float(m) for n, m in zip(names, means, strict=True)}
    ci = {
        n: [float(lo), float(hi)]
        for n, (lo, hi) in zip(names, percentile_interval(samples), strict=True)
    }
    for metric, i_pert, i_clean in (("HR", 2, 3), ("NDCG", 4, 5)):
        name = f"{metric}@{depth}_drop"
        clean = means[i_clean]
        out[name] = None if clean == 0 else float(1.0 - means[i_pert] / clean)
        with np.errstate(divide="ignore", invalid="ignore"):
            drops = 1.0 - samples[:, i_pert] / samples[:, i_clean]
        drops = drops[np.isfinite(drops)]
        ci[name] = [float(x) for x in percentile_interval(drops)] if len(drops) else None
    out["ci95"] = ci
    return out


@dataclass
class RobustnessResult:
    """What :func:`evaluate_robustness` measured.

    Attributes:
        clean: ``{"n_users", "HR@K", "NDCG@K"}`` on the clean test inputs of all users.
        records: one dict per setting (see :func:`setting_metrics` for the metric keys).
        adversarial_items: ``(position, k) -> [U, k]`` items chosen for adversarial settings.
    """

    clean: dict[str, Any]
    records: list[dict[str, Any]]
    adversarial_items: dict[tuple[str, int], np.ndarray]


def evaluate_robustness(
    model: SequentialRecommender,
    split: SplitData,
    plan: ReplacementPlan,
    settings: Sequence[Setting],
    *,
    depth: int = 10,
    p: float = 0.9,
    mask_history: bool = True,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    n_bootstrap: int = 1000,
    progress: bool = True,
) -> RobustnessResult:
    """Robustness records (one per setting) of ``model`` on the test split.

    The clean pass runs once; each setting costs one perturbed pass over its users (plus one
    gradient pass for adversarial items). A single progress bar counts batches with an ETA.
    """
    if depth < 1:
        raise ConfigError(f"depth must be >= 1, got {depth}")
    # Every user must have `depth` rankable items, or the top-K lists would hold masked items.
    seen = int((split.test_inputs > 0).sum(axis=1).max(initial=0)) if mask_history else 0
    if depth > split.n_items - seen:
        raise ConfigError(
            f"--depth {depth} exceeds the items left to rank ({split.n_items} items, up to "
            f"{seen} masked per user as history); use a smaller --depth"
        )
    plan.ensure(split, settings)
    inputs, targets = split.test_inputs, split.test_targets
    U = len(targets)

    def n_batches(n: int) -> int:
        return (n + batch_size - 1) // batch_size

    valid = {s.key: plan.columns[(s.position, s.k)][:, 0] >= 0 for s in settings}
    total = n_batches(U) + sum(
        n_batches(int(valid[s.key].sum())) * (2 if s.replacement == "adversarial" else 1)
        for s in settings
    )
    bar = tqdm(
        total=total,
        desc="clean",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    kw = dict(batch_size=batch_size, device=device, on_batch=lambda: bar.update(1))
    try:
        clean_top, clean_ranks = topk_and_ranks(
            model, inputs, targets, depth, mask_history=mask_history, **kw
        )
        records: list[dict[str, Any]] = []
        adv_items: dict[tuple[str, int], np.ndarray] = {}
        for s in settings:
            t0 = time.perf_counter()
            bar.set_description(f"{s.position}/{s.replacement}/k={s.k}")
            cols = plan.columns[(s.position, s.k)]
            if s.replacement == "adversarial":
                items = adversarial_items(model, inputs, targets, cols, **kw)
                adv_items[(s.position, s.k)] = items
            else:
                items = plan.items[(s.position, s.k, s.replacement)]
            ok = (cols[:, 0] >= 0) & (items[:, 0] > 0)
            rows = np.flatnonzero(ok)
            n_short = int((cols[:, 0] < 0).sum())
            rec: dict[str, Any] = {
                "position": s.position,
                "replacement": s.replacement,
                "k": s.k,
                "n_users": int(len(rows)),
                "n_skipped": int(U - len(rows)),
                "skipped": {
                    "fewer_than_k_items": n_short,
                    "no_admissible_item": int(U - len(rows) - n_short),
                },
                "depth": depth,
                "p": p,
                "plan_seed": plan.seed,
                "plan_sha256": plan.setting_sha256(s),
                "n_bootstrap": n_bootstrap,
                "mask_history": mask_history,
            }
            if len(rows) == 0:
                records.append(rec)
                continue
            pert = apply_replacements(inputs[rows], cols[rows], items[rows])
            pert_top, pert_ranks = topk_and_ranks(
                model, pert, targets[rows], depth, mask_history=mask_history, **kw
            )
            rec.update(
                setting_metrics(
                    clean_top[rows],
                    clean_ranks[rows],
                    pert_top,
                    pert_ranks,
                    depth=depth,
                    p=p,
                    n_bootstrap=n_bootstrap,
                )
            )
            rec["wall_time_s"] = round(time.perf_counter() - t0, 3)
            records.append(rec)
    finally:
        bar.close()
    cr = torch.as_tensor(clean_ranks)
    clean = {
        "n_users": U,
        f"HR@{depth}": float(hit_rate(cr, depth).mean()),
        f"NDCG@{depth}": float(ndcg(cr, depth).mean()),
    }
    return RobustnessResult(clean=clean, records=records, adversarial_items=adv_items)


def select_records(
    doc: dict[str, Any], settings: Sequence[Setting], seed: int, depth: int, p: float
) -> list[dict[str, Any]]:
    """The records of ``doc`` (a ``robustness.json``) for ``settings``, in their order."""
    out = []
    for s in settings:
        for r in doc["records"]:
            if (
                (r["position"], r["replacement"], r["k"]) == s.key
                and r.get("plan_seed") == seed
                and r.get("depth") == depth
                and r.get("p") == p
            ):
                out.append(r)
                break
    return out


def format_table(records: Sequence[dict[str, Any]], depth: int = 10) -> str:
    """A plain-text table of robustness records (one line per setting)."""
    K = depth
    head = (
        f"{'position':<8} {'replace':<11} {'k':>2} {'users':>6} {'skip':>5} "
        f"{'HR@' + str(K) + ' clean>pert':>18} {'NDCG@' + str(K) + ' clean>pert':>20} "
        f"{'NDCG drop':>9} {'Jacc@' + str(K):>8} {'RBO@' + str(K):>8} {'RBO 95% CI':>15}"
    )
    lines = [head]
    for r in records:
        if r["n_users"] == 0:
            lines.append(
                f"{r['position']:<8} {r['replacement']:<11} {r['k']:>2} {0:>6} "
                f"{r['n_skipped']:>5}  (every user skipped)"
            )
            continue
        drop = r[f"NDCG@{K}_drop"]
        ci = r["ci95"][f"RBO@{K}"]
        lines.append(
            f"{r['position']:<8} {r['replacement']:<11} {r['k']:>2} {r['n_users']:>6} "
            f"{r['n_skipped']:>5} "
            f"{r[f'HR@{K}_clean']:>8.4f}>{r[f'HR@{K}']:<9.4f} "
            f"{r[f'NDCG@{K}_clean']:>9.4f}>{r[f'NDCG@{K}']:<10.4f} "
            f"{'n/a' if drop is None else f'{100 * drop:.1f}%':>9} "
            f"{r[f'Jaccard@{K}']:>8.4f} {r[f'RBO@{K}']:>8.4f} "
            f"[{ci[0]:.4f},{ci[1]:.4f}]"
        )
    return "\n".join(lines)
