"""Robustness of a run folder: load its best model, evaluate, and merge the records into
``RUN_DIR/robustness.json`` (adversarial items into ``RUN_DIR/adversarial-seedS.npz``).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from catrec.data import SplitData
from catrec.errors import ConfigError
from catrec.robustness.plan import Setting, load_or_draw_plan
from catrec.robustness.report import evaluate_robustness
from catrec.utils import atomic_write_bytes, atomic_write_json, git_commit


def run_robustness(
    run_dir: str | Path,
    settings: Sequence[Setting],
    *,
    seed: int = 0,
    plan_path: str | Path | None = None,
    depth: int = 10,
    p: float = 0.9,
    n_bootstrap: int = 1000,
    batch_size: int | None = None,
    split: SplitData | None = None,
    reuse: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a run's best model under ``settings`` and merge the records into
    ``RUN_DIR/robustness.json``; returns that file's content.

    The plan is read from (or drawn into) ``plan_path``, default ``RUN_DIR/plan-seed{seed}.npz``.
    Adversarial items are saved in ``RUN_DIR/adversarial-seed{seed}.npz``. With ``reuse``,
    settings already in ``robustness.json`` for the same checkpoint, plan, depth, p and bootstrap
    size are not recomputed (``catrec compare`` resumes this way).
    """
    from catrec.run import read_json
    from catrec.train.loop import load_model

    if not 0.0 < p <= 1.0:
        raise ConfigError(f"RBO persistence p must be in (0, 1], got {p}")
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    config, split, model = load_model(run_dir, split)
    meta = read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
    ckpt_sha = meta.get("checkpoints", {}).get("best.pt")
    plan_path = Path(plan_path) if plan_path is not None else run_dir / f"plan-seed{seed}.npz"
    plan = load_or_draw_plan(plan_path, split, seed, settings)

    path = run_dir / "robustness.json"
    old = read_json(path) if path.exists() else {}
    old_records = old.get("records", []) if old.get("checkpoint_sha256") == ckpt_sha else []

    def same(r: dict[str, Any], s: Setting) -> bool:
        return (
            (r["position"], r["replacement"], r["k"]) == s.key
            and r.get("plan_seed") == seed
            and r.get("depth") == depth
            and r.get("p") == p
        )

    todo = [
        s
        for s in settings
        if not (
            reuse
            and any(
                same(r, s)
                and r.get("plan_sha256") == plan.setting_sha256(s)
                and r.get("n_bootstrap") == n_bootstrap
                and (
                    s.replacement != "adversarial"
                    or (run_dir / f"adversarial-seed{seed}.npz").exists()
                )
                for r in old_records
            )
        )
    ]
    clean = old.get("clean") if old_records else None
    if not todo and clean is not None and clean.get(f"NDCG@{depth}") is not None:
        return old | {"computed": []}  # everything asked is already there: nothing to rewrite
    res = evaluate_robustness(
        model,
        split,
        plan,
        todo,
        depth=depth,
        p=p,
        mask_history=config.mask_history,
        batch_size=batch_size or config.eval_batch_size,
        device=next(model.parameters()).device,
        n_bootstrap=n_bootstrap,
        progress=progress,
    )
    clean, new_records = res.clean, res.records
    if res.adversarial_items:
        _save_adversarial(run_dir / f"adversarial-seed{seed}.npz", res.adversarial_items, ckpt_sha)
    for r in new_records:
        r["plan_file"] = str(plan_path)
    keep = [r for r in old_records if not any(same(r, s) for s in todo)]
    doc = {
        "run_dir": str(run_dir),
        "checkpoint_sha256": ckpt_sha,
        "mode": config.mode,
        "model": config.model,
        "dataset": config.dataset,
        "seed": config.seed,
        "git_commit": git_commit(),
        "clean": clean,
        "records": keep + new_records,
        "wall_time_s": round(time.perf_counter() - t0, 3),
    }
    atomic_write_json(path, doc)
    doc["computed"] = [s.key for s in todo]
    return doc


def _save_adversarial(
    path: Path, adv: dict[tuple[str, int], np.ndarray], ckpt_sha: str | None
) -> None:
    """Merge the adversarial items of this model into ``path`` (``.npz``, atomic)."""
    arrays: dict[str, np.ndarray] = {}
    if path.exists():
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:  # closed on errors too
            meta = json.loads(str(z["meta"]))
            if meta.get("checkpoint_sha256") == ckpt_sha:
                arrays = {n: z[n] for n in z.files if n != "meta"}
    for (pos, k), items in adv.items():
        arrays[f"items__{pos}__{k}__adversarial"] = items
    arrays["meta"] = np.array(json.dumps({"checkpoint_sha256": ckpt_sha}))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
