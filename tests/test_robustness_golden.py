"""The robustness numbers of a fixed tiny model must not change when the code is reorganised.

``tests/golden/robustness_tiny.json`` was written by :func:`golden_doc` before
``catrec.robustness`` became a package; any change in plans, adversarial items, top-K lists or
metrics shows up here. Floats are rounded to 10 decimals (exact on one machine, tolerant of
BLAS differences across machines). Regenerate only for an intended change:
``python tests/test_robustness_golden.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from catrec.config import make_config
from catrec.data import SequenceData, leave_one_out
from catrec.models import build_model
from catrec.robustness import ReplacementPlan, evaluate_robustness, settings_grid
from catrec.utils import sha256_arrays

GOLDEN = Path(__file__).parent / "golden" / "robustness_tiny.json"


def _split(max_len: int):
    rng = np.random.default_rng(3)
    n_users, n_items = 50, 30
    seqs = [rng.choice(np.arange(1, n_items + 1), size=rng.integers(3, 14), replace=False)
            for _ in range(n_users)]  # fmt: skip
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum([len(s) for s in seqs], out=offsets[1:])
    data = SequenceData(
        name="golden",
        user_tokens=np.array([str(u) for u in range(n_users)]),
        item_tokens=np.array(["<pad>"] + [str(i) for i in range(1, n_items + 1)]),
        offsets=offsets,
        items=np.concatenate(seqs).astype(np.int64),
    )
    return leave_one_out(data, max_len)


def _rounded(obj):
    if isinstance(obj, float):
        return round(obj, 10)
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_rounded(v) for v in obj]
    return obj


def golden_doc() -> dict:
    """Robustness of untrained tiny SASRec / GRU4Rec / BERT4Rec models (BERT4Rec with max_len
    above every input length) under every position and replacement, k = 1 and 2."""
    settings = settings_grid(
        ("first", "middle", "last", "random"), ("random", "popular", "adversarial"), 1
    ) + settings_grid(("first", "last", "random"), ("random", "adversarial"), 2)
    out = {}
    for model, max_len in (("sasrec", 8), ("gru4rec", 8), ("bert4rec", 16)):
        split = _split(max_len)
        cfg = make_config(
            {
                "dataset": "golden",
                "model": model,
                "max_len": max_len,
                "hidden_size": 8,
                "dropout": 0.0,
            }  # fmt: skip
        )
        torch.manual_seed(0)
        net = build_model(cfg, split.n_items)
        plan = ReplacementPlan.empty(split, seed=5)
        res = evaluate_robustness(
            net, split, plan, settings, depth=5, p=0.9, n_bootstrap=50, progress=False
        )
        records = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in res.records]
        out[model] = {
            "clean": res.clean,
            "records": records,
            # each record's plan_sha256 already covers the plan's columns and items
            "adversarial_items_sha256": {
                f"{pos}/{k}": sha256_arrays(a)
                for (pos, k), a in sorted(res.adversarial_items.items())
            },
        }
    return _rounded(out)


def test_robustness_numbers_are_unchanged():
    assert golden_doc() == json.loads(GOLDEN.read_text(encoding="utf-8"))


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(golden_doc(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
