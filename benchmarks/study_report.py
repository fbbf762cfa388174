"""The study's report: tables (mean ± std over seeds) and the accuracy-vs-robustness plot.

Reads the run folders that ``benchmarks/study.py`` wrote (``main/<dataset>-<model>/<mode>-seed<S>``
with ``metrics.json`` and ``robustness.json``, and issue 12's ``beyond/`` runs) and writes
``report.md`` and
``ndcg10_vs_last_rbo10.png`` next to them. Cells that have not run yet are listed as missing;
where ``cat`` does not have the best mean, the report says so and by how much. Where ``cat`` and a
baseline share seeds and both runs wrote ``ranks.npz`` (every user's test rank), the report gives
a paired bootstrap over test users of the per-user NDCG@10 difference (averaged over the shared
seeds): mean, 95% interval and a two-sided bootstrap p-value. The ``confirm/`` runs (CAT.md's
defaults on Sports) are set against the tuned seed-0 runs on validation.

    python benchmarks/study_report.py docs/results/study --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

import numpy as np

DATASET_FILES = {"beauty": "Beauty", "sports": "Sports_and_Outdoors", "toys": "Toys_and_Games"}
MODES = ("standard", "adv", "cat")


def dataset_stats(path: Path) -> dict[str, float]:
    users = items_n = 0
    items: set[str] = set()
    for line in path.read_text().splitlines():
        tok = line.split()
        if len(tok) < 2:
            continue
        users += 1
        items_n += len(tok) - 1
        items.update(tok[1:])
    return {
        "users": users,
        "items": len(items),
        "interactions": items_n,
        "density": items_n / (users * len(items)),
        "mean_length": items_n / users,
    }


def shared_means(a: list[dict], b: list[dict]) -> tuple[float, float, list[int]] | None:
    """Mean test NDCG@10 of two cells over the seeds both ran, and those seeds (a gain between
    means over different seeds would be partly seed noise); None when they share no seed."""
    seeds = sorted({r["seed"] for r in a} & {r["seed"] for r in b})
    if not seeds:
        return None

    def mean(runs: list[dict]) -> float:
        return statistics.fmean(r["test"]["NDCG@10"] for r in runs if r["seed"] in seeds)

    return mean(a), mean(b), seeds


def fmt(values: list[float], pct: bool = False) -> str:
    if not values:
        return "–"
    scale = 100.0 if pct else 1.0
    m = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{m:.1f}%" if pct else f"{m:.4f}"
    s = statistics.stdev(values) * scale
    return f"{m:.1f} ± {s:.1f}%" if pct else f"{m:.4f} ± {s:.4f}"


def collect(root: Path) -> dict[tuple[str, str, str], list[dict]]:
    cells: dict[tuple[str, str, str], list[dict]] = {}
    for metrics in sorted(root.glob("main/*/*/metrics.json")):
        run = metrics.parent
        ds, model = run.parent.name.split("-", 1)
        mode, seed = run.name.rsplit("-seed", 1)
        record = {"seed": int(seed), **load_run(run)}
        cells.setdefault((ds, model, mode), []).append(record)
    return cells


def rob(record: dict, position: str, replacement: str, key: str) -> float | None:
    for r in record["robustness"]:
        if r["position"] == position and r["replacement"] == replacement:
            return r[key]
    return None


def user_ndcg10(run: Path) -> np.ndarray | None:
    """``[U]`` per-user test NDCG@10 of a run from its ``ranks.npz`` (None when absent)."""
    path = run / "ranks.npz"
    if not path.exists():
        return None
    import torch

    from catrec.metrics.ranking import ndcg

    return ndcg(torch.as_tensor(np.load(path)["test"], dtype=torch.float64), 10).numpy()


def paired_test(a: list[np.ndarray], b: list[np.ndarray], n_resamples: int = 2000) -> dict:
    """Paired bootstrap over users of ``mean_seeds(a) - mean_seeds(b)`` (per-user NDCG@10)."""
    from catrec.metrics.stability import bootstrap_means, percentile_interval

    diff = np.mean(a, axis=0) - np.mean(b, axis=0)  # [U]
    boot = bootstrap_means(diff, n_resamples=n_resamples, seed=0)[:, 0]
    lo, hi = percentile_interval(boot)
    p = min(1.0, 2.0 * min(float((boot <= 0).mean()), float((boot >= 0).mean())))
    mean = float(diff.mean())
    return {"mean": mean, "lo": float(lo), "hi": float(hi), "p": p, "users": len(diff)}


def paired_cells(pairs: list[tuple[Path, Path]]) -> str | None:
    """The table cells ``| seeds | users | mean difference | 95% interval | p |`` of the paired
    test of the first run of each pair against the second (the pairs where both runs have
    ``ranks.npz``); None when no pair has them."""
    a, b = [], []
    for run_a, run_b in pairs:
        ua, ub = user_ndcg10(run_a), user_ndcg10(run_b)
        if ua is not None and ub is not None:
            a.append(ua)
            b.append(ub)
    if not a:
        return None
    t = paired_test(a, b)
    return (
        f"| {len(a)} | {t['users']:,} | {t['mean']:+.4f} | "
        f"[{t['lo']:+.4f}, {t['hi']:+.4f}] | {t['p']:.3f} |"
    )


def paired_lines(root: Path, cells: dict) -> list[str]:
    lines = [
        "## Paired tests (cat minus baseline, per-user test NDCG@10)",
        "",
        f"Paired bootstrap over test users ({2000} resamples); per-user NDCG@10 averaged over the "
        "seeds both modes ran; p: two-sided bootstrap p-value (the share of resamples on the "
        "other side of 0, doubled).",
        "",
        "| dataset | model | baseline | seeds | users | mean difference | 95% interval | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = 0
    for (ds, model, mode), runs in sorted(cells.items()):
        if mode != "cat":
            continue
        for other in ("standard", "adv"):
            base = {r["seed"]: r for r in cells.get((ds, model, other), [])}
            seeds = sorted(r["seed"] for r in runs if r["seed"] in base)
            cell = root / "main" / f"{ds}-{model}"
            pairs = [(cell / f"cat-seed{s}", cell / f"{other}-seed{s}") for s in seeds]
            if (row := paired_cells(pairs)) is None:
                continue
            rows += 1
            lines.append(f"| {ds} | {model} | {other} {row}")
    if not rows:
        lines.append("| – | – | – | – | – | no pair of runs with ranks.npz yet | – | – |")
    return lines + [""]


#: Issue 12 §3: a defence is chosen on validation as its strongest setting whose validation
#: NDCG@10 is at most this share below its base run's (standard for the augmentation, cat for
#: cat plus adversarial replacement): "without losing accuracy", with a tolerance for noise.
KEEP_ACCURACY = 0.02
LAST_SETTINGS = [("last", "random"), ("last", "adversarial"), ("first", "adversarial")]


def load_run(run: Path) -> dict | None:
    """metrics.json with the robustness records, run.json and config.yaml of a finished run
    folder (None before it has metrics)."""
    if not (run / "metrics.json").exists():
        return None
    rec = json.loads((run / "metrics.json").read_text())
    rob_path = run / "robustness.json"
    rec["robustness"] = json.loads(rob_path.read_text())["records"] if rob_path.exists() else []
    rec["run"] = json.loads((run / "run.json").read_text())
    from catrec.config import load_yaml

    rec["config"] = load_yaml(run / "config.yaml")
    return rec


def run_row(label: str, rec: dict | None, settings: list[tuple[str, str]]) -> str:
    if rec is None:
        return f"| {label} | not run yet |" + " |" * (2 + 2 * len(settings))
    row = (
        f"| {label} | {rec['valid']['NDCG@10']:.4f} | {rec['test']['NDCG@10']:.4f} | "
        f"{rec['test']['HR@10']:.4f} |"
    )
    for pos, rep in settings:
        rbo = rob(rec, pos, rep, "RBO@10")
        drop = rob(rec, pos, rep, "NDCG@10_drop")
        row += f" {fmt([rbo] if rbo is not None else [])} |"
        row += f" {fmt([drop] if drop is not None else [], pct=True)} |"
    return row


def bce_paired_lines(b: Path) -> list[str]:
    """Paired bootstrap of BCE cat against BCE standard and adv (the seeds both ran; per-user
    test NDCG@10 averaged over them), as :func:`paired_lines` does for the main table."""
    lines = ["", "| BCE: cat minus | seeds | users | mean difference | 95% interval | p |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    cats = sorted(b.glob("bce/cat-seed*"))
    for other in ("standard", "adv"):
        pairs = [(c, c.with_name(c.name.replace("cat-", f"{other}-"))) for c in cats]
        row = paired_cells(pairs) or "| – | – | not run yet | – | – |"
        lines.append(f"| {other} {row}")
    return lines


def beyond_lines(root: Path, cells: dict) -> list[str]:
    """Issue 12's tables from ``beyond/<settings>/``: BCE against CE, the ablation and the
    last-position defences (the chosen setting of each family marked, see KEEP_ACCURACY)."""
    roots = [p for p in (root / "beyond" / "tuned", root / "beyond" / "cat-md-defaults")
             if p.exists()]  # fmt: skip
    if not roots:
        return []
    b = roots[0]
    head = "| run | valid NDCG@10 | test NDCG@10 | test HR@10 |"
    sep = "|---|---|---|---|"
    for pos, rep in LAST_SETTINGS:
        head += f" {pos}/{rep}: RBO@10 | NDCG@10 drop |"
        sep += "---|---|"
    lines = [
        "## Beyond the paper (issue 12): Beauty / SASRec",
        "",
        f"Adversarial settings: {'the tuned ones (tune.json)' if b.name == 'tuned' else 'CAT.md defaults (no tuning result yet)'}"  # noqa: E501
        f"; runs under `beyond/{b.name}/`.",
        "",
        "### The paper's setting: sampled BCE (one negative outside the sequence) against CE",
        "",
        "| loss | mode | seeds | test NDCG@10 | test HR@10 | last/random RBO@10 |",
        "|---|---|---|---|---|---|",
    ]
    for loss in ("bce", "ce"):
        for mode in MODES:
            if loss == "bce":
                runs = [r for r in (load_run(p) for p in sorted(b.glob(f"bce/{mode}-seed*"))) if r]
            else:
                runs = cells.get(("beauty", "sasrec", mode), [])
            if not runs:
                lines.append(f"| {loss} | {mode} | – | not run yet | | |")
                continue
            seeds = ",".join(str(r["run"].get("seed", "?")) for r in runs)
            rbo = [v for r in runs if (v := rob(r, "last", "random", "RBO@10")) is not None]
            lines.append(
                f"| {loss} | {mode} | {seeds} | {fmt([r['test']['NDCG@10'] for r in runs])} | "
                f"{fmt([r['test']['HR@10'] for r in runs])} | {fmt(rbo)} |"
            )
    lines += bce_paired_lines(b)
    main_cat = load_run(root / "main" / "beauty-sasrec" / "cat-seed0")
    if b.name != "tuned":  # before tuning the reference cat run is the ablation's own
        main_cat = load_run(b / "ablation" / "reference-seed0")
    main_std = load_run(root / "main" / "beauty-sasrec" / "standard-seed0")
    lines += ["", "### Ablation (seed 0; every row is cat with one choice changed)", "", head, sep]
    lines.append(run_row("cat (reference: both levels, its cascade and scaling)", main_cat,
                         LAST_SETTINGS))  # fmt: skip
    for p in sorted(b.glob("ablation/*-seed0")):
        if p.name == "reference-seed0":
            continue
        lines.append(run_row(p.name.removesuffix("-seed0"), load_run(p), LAST_SETTINGS))
    lines += ["", "### The most recent item: defences (seed 0)", "", head, sep]
    lines.append(run_row("standard (main table)", main_std, LAST_SETTINGS))
    lines.append(run_row("cat (reference)", main_cat, LAST_SETTINGS))
    verdicts = []
    for family, base, pattern, key in (
        ("random replacement (augmentation baseline)", main_std, "last/standard-replace*",
         "replace_prob"),
        ("cat + adversarial replacement (the attempt)", main_cat, "last/cat-advreplace*",
         "lambda_replace"),
    ):  # fmt: skip
        runs = [(p, load_run(p)) for p in sorted(b.glob(pattern))]
        done = [(p, r) for p, r in runs if r is not None]
        chosen = None
        if base is not None and done:
            floor = (1 - KEEP_ACCURACY) * base["valid"]["NDCG@10"]
            ok = [(r["config"][key], p) for p, r in done if r["valid"]["NDCG@10"] >= floor]
            chosen = max(ok)[1] if ok else max(done, key=lambda x: x[1]["valid"]["NDCG@10"])[0]
        for p, r in runs:
            mark = " **(chosen on validation)**" if p == chosen else ""
            lines.append(run_row(f"{family}: {p.name.removesuffix('-seed0')}{mark}", r,
                                 LAST_SETTINGS))  # fmt: skip
        if chosen is not None and base is not None:
            r = dict(done)[chosen]
            verdicts.append(
                f"- {family}: chosen {chosen.name}; test NDCG@10 {r['test']['NDCG@10']:.4f} vs "
                f"{base['test']['NDCG@10']:.4f}; last/random RBO@10 "
                f"{fmt([rob(r, 'last', 'random', 'RBO@10') or 0.0])} vs "
                f"{fmt([rob(base, 'last', 'random', 'RBO@10') or 0.0])}"
            )
    lines += [
        "",
        f"Chosen on validation: the strongest setting whose validation NDCG@10 is at most "
        f"{KEEP_ACCURACY:.0%} below its base run's (else the best validation NDCG@10).",
        "",
        *verdicts,
        "",
    ]
    return lines


ROBUSTNESS_METRICS = [("RBO@10", False), ("Jaccard@10", False), ("NDCG@10_drop", True)]
ALL_SETTINGS = [(p, r) for p in ("first", "last") for r in ("random", "adversarial")]


def robustness_lines(cells: dict, datasets: list[str]) -> list[str]:
    """One table per replacement setting: RBO@10, Jaccard@10 (1 = top-10 unchanged) and the
    relative NDCG@10 drop, mean ± std over the seeds with a robustness record."""
    lines = [
        "## Robustness",
        "",
        "One item per test sequence replaced (the first or the most recent), by a random item or "
        "by the search's most damaging one; top-10 lists compared with the clean ones.",
        "",
    ]
    for pos, rep in ALL_SETTINGS:
        lines += [
            f"### {pos} item, {rep} replacement",
            "",
            "| dataset | model | mode | seeds | RBO@10 | Jaccard@10 | NDCG@10 drop |",
            "|---|---|---|---|---|---|---|",
        ]
        for ds in datasets:
            for model in sorted({k[1] for k in cells if k[0] == ds}):
                for mode in MODES:
                    runs = [
                        r
                        for r in cells.get((ds, model, mode), [])
                        if rob(r, pos, rep, "RBO@10") is not None
                    ]
                    if not runs:
                        continue
                    row = f"| {ds} | {model} | {mode} | {','.join(str(r['seed']) for r in runs)} |"
                    for key, pct in ROBUSTNESS_METRICS:
                        row += f" {fmt([rob(r, pos, rep, key) for r in runs], pct=pct)} |"
                    lines.append(row)
        lines.append("")
    return lines


def gain_lines(cells: dict, datasets: list[str], stats: dict[str, dict]) -> list[str]:
    """cat's relative test NDCG@10 gain over each baseline next to the dataset's density and
    mean sequence length (``stats``: :func:`dataset_stats` by dataset, may be empty; the paper
    reports larger gains on sparser data)."""
    rows = []
    for ds in datasets:
        st = stats.get(ds)
        for model in sorted({k[1] for k in cells if k[0] == ds}):
            cat = cells.get((ds, model, "cat"))
            if not cat:
                continue
            gains = []
            for other in ("standard", "adv"):
                shared = shared_means(cat, cells.get((ds, model, other), []))
                if shared is None:
                    gains.append("–")
                    continue
                c, b, seeds = shared
                gains.append(f"{100 * (c - b) / b:+.1f}% (seeds {','.join(map(str, seeds))})")
            dens = f"{st['density']:.5f} | {st['mean_length']:.2f}" if st else "– | –"
            rows.append(f"| {ds} | {dens} | {model} | {gains[0]} | {gains[1]} |")
    if not rows:
        return []
    return [
        "## Gain against sparsity",
        "",
        "cat's relative test NDCG@10 gain (means over the seeds both modes ran) next to each "
        "dataset's density.",
        "",
        "| dataset | density | mean length | model | cat vs standard | cat vs adv |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def tuning_lines(root: Path) -> list[str]:
    """The search's state from ``tune/*/tune.json``: trials per mode and the best so far."""
    lines: list[str] = []
    for path in sorted(root.glob("tune/*/tune.json")):
        tune = json.loads(path.read_text())
        lines += [
            f"## Tuning ({path.parent.name}, validation only)",
            "",
            f"Metric: {tune['metric']}; `{path.relative_to(root)}` lists every trial. A trial "
            "pruned before five adversarial epochs does not count and runs again "
            "(`catrec.tune.PRUNE_AFTER_ADV_EPOCHS`).",
            "",
            "| mode | complete | pruned | pruned too early (run again) | failed or interrupted | "
            "best valid NDCG@10 | best trial's values |",
            "|---|---|---|---|---|---|---|",
        ]
        for mode, entry in tune["modes"].items():
            failed = sum(t["state"] == "FAIL" for t in entry["trials"])
            best = entry.get("best") or {}
            values = ", ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in best.items()
                if k not in ("number", "value")
            )
            value = f"{best['value']:.4f}" if best else "–"
            lines.append(
                f"| {mode} | {entry['n_complete']} | {entry['n_pruned']} | "
                f"{entry.get('n_pruned_early', 0)} | {failed} | {value} | {values or '–'} |"
            )
        std = tune.get("standard")
        if std:
            lines += [
                "",
                f"Standard baseline's patience: {std['chosen_patience']} ("
                + "; ".join(
                    f"patience {p}: best epoch {v['best_epoch']}, valid {v['valid']:.4f}"
                    for p, v in std["patience"].items()
                )
                + ").",
            ]
        lines.append("")
    return lines


def confirm_lines(root: Path) -> list[str]:
    """Issue 11 section 1's check of the tuned defaults on another dataset: validation NDCG@10 of
    ``main/<cell>/<mode>-seed0`` (tuned on Beauty) against ``confirm/<cell>/<mode>-default-seed0``
    (CAT.md's starting defaults), with the cell's standard run for reference."""
    lines: list[str] = []
    for cell in sorted(p.name for p in root.glob("confirm/*") if p.is_dir()):
        lines += [
            f"## Confirmation of the tuned defaults ({cell}, seed 0, validation only)",
            "",
            "| mode | settings | valid NDCG@10 | valid HR@10 | best epoch | wall time (s) |",
            "|---|---|---|---|---|---|",
        ]
        verdicts = []
        for mode in MODES:
            tuned = load_run(root / "main" / cell / f"{mode}-seed0")
            runs = [("tuned" if mode != "standard" else "–", tuned)]
            if mode != "standard":
                runs.append(
                    ("CAT.md defaults", load_run(root / "confirm" / cell / f"{mode}-default-seed0"))
                )
            for label, rec in runs:
                if rec is None:
                    lines.append(f"| {mode} | {label} | not run yet | | | |")
                    continue
                lines.append(
                    f"| {mode} | {label} | {rec['valid']['NDCG@10']:.4f} | "
                    f"{rec['valid']['HR@10']:.4f} | {rec['run'].get('best_epoch')} | "
                    f"{round(rec['run'].get('wall_time_s', 0))} |"
                )
            if mode != "standard" and all(rec is not None for _, rec in runs):
                a, b = (rec["valid"]["NDCG@10"] for _, rec in runs)
                winner = "tuned" if a > b else "CAT.md defaults"
                verdicts.append(f"{mode}: {winner} ({100 * (a - b) / b:+.1f}% tuned vs defaults)")
        lines += ["", "On validation: " + ("; ".join(verdicts) or "not decided yet") + ".", ""]
    return lines


def report(root: Path, data_dir: Path | None) -> str:
    cells = collect(root)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "# Study report (generated by `benchmarks/study_report.py`)",
        "",
        f"Generated at git commit `{commit}` from the run folders under `main/`. Test metrics by "
        "full ranking over all items; robustness on one shared plan per dataset (`plans/`); "
        "mean ± sample std over the seeds present.",
        "",
    ]
    datasets = sorted({k[0] for k in cells})
    stats = (
        {ds: dataset_stats(data_dir / f"{DATASET_FILES[ds]}.txt") for ds in datasets}
        if data_dir is not None
        else {}
    )
    if stats:
        lines += [
            "## Datasets",
            "",
            "| dataset | users | items | interactions | density | mean length |",
            "|---|---|---|---|---|---|",
        ]
        for ds in datasets:
            st = stats[ds]
            lines.append(
                f"| {ds} | {st['users']:,} | {st['items']:,} | {st['interactions']:,} | "
                f"{st['density']:.5f} | {st['mean_length']:.2f} |"
            )
        lines.append("")
    lines += [
        "## Main table",
        "",
        "| dataset | model | mode | seeds | test NDCG@10 | test HR@10 | best epoch | wall time "
        "(s) | device |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    missing = []
    for ds in datasets:
        for model in sorted({k[1] for k in cells if k[0] == ds}):
            for mode in MODES:
                runs = cells.get((ds, model, mode), [])
                if not runs:
                    missing.append(f"{ds}/{model}/{mode}")
                    continue
                devices = sorted({str(r["config"].get("device", "cpu")) for r in runs})
                lines.append(
                    f"| {ds} | {model} | {mode} | {','.join(str(r['seed']) for r in runs)} | "
                    f"{fmt([r['test']['NDCG@10'] for r in runs])} | "
                    f"{fmt([r['test']['HR@10'] for r in runs])} | "
                    f"{', '.join(str(r['run'].get('best_epoch')) for r in runs)} | "
                    f"{', '.join(str(round(r['run'].get('wall_time_s', 0))) for r in runs)} | "
                    f"{', '.join(devices)} |"
                )
    lines.append("")
    if missing:
        lines += ["## Not run yet", "", ", ".join(missing), ""]
    lines += robustness_lines(cells, datasets)
    lines += gain_lines(cells, datasets, stats)
    lines += tuning_lines(root)
    lines += confirm_lines(root)
    lines += ["## Where cat does not win", ""]
    verdicts = []
    for (ds, model, mode), runs in sorted(cells.items()):
        if mode != "cat":
            continue
        for other in ("standard", "adv"):
            shared = shared_means(runs, cells.get((ds, model, other), []))
            if shared is None:
                continue
            cat, b, seeds = shared
            if cat <= b:
                verdicts.append(
                    f"- {ds}/{model}: cat test NDCG@10 {cat:.4f} vs {other} {b:.4f} "
                    f"({100 * (cat - b) / b:+.1f}%; seeds {','.join(map(str, seeds))})"
                )
    lines += verdicts or [
        "No cat cell has been run yet."
        if not any(k[2] == "cat" for k in cells)
        else "cat has the best mean test NDCG@10 in every cell."
    ]
    lines.append("")
    lines += paired_lines(root, cells)
    plot(cells, root / "ndcg10_vs_last_rbo10.png")
    lines += ["![test NDCG@10 against last-position RBO@10](ndcg10_vs_last_rbo10.png)", ""]
    lines += beyond_lines(root, cells)
    return "\n".join(lines)


def plot(cells: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    markers = {"standard": "o", "adv": "s", "cat": "^"}
    for (ds, model, mode), runs in sorted(cells.items()):
        xs = [v for r in runs if (v := rob(r, "last", "random", "RBO@10")) is not None]
        ys = [r["test"]["NDCG@10"] for r in runs]
        if xs:
            ax.scatter(
                statistics.fmean(xs),
                statistics.fmean(ys),
                marker=markers[mode],
                label=f"{ds}/{model}/{mode}",
            )
    ax.set_xlabel("RBO@10, most recent item replaced by a random one (1 = unchanged)")
    ax.set_ylabel("test NDCG@10")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    from catrec.utils import atomic_open

    with atomic_open(path) as fh:
        fig.savefig(fh, dpi=120, format="png")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="the study folder (with main/)")
    ap.add_argument("--data-dir", type=Path, help="folder with Beauty.txt, ... (dataset stats)")
    args = ap.parse_args()
    text = report(args.root, args.data_dir)
    from catrec.utils import atomic_write_text

    atomic_write_text(args.root / "report.md", text)
    print(text)


if __name__ == "__main__":
    main()
