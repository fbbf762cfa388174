"""GRU4Rec and BERT4Rec train through the unchanged loop in every mode on a slice of Beauty."""

from __future__ import annotations

import json
import math

import pytest

from catrec.config import make_config
from catrec.train.loop import train


@pytest.mark.parametrize("mode", ["standard", "adv", "cat"])
@pytest.mark.parametrize("model", ["gru4rec", "bert4rec"])
def test_one_epoch_beats_a_random_ranker(model, mode, beauty_1k, tmp_path):
    config = make_config(
        {
            "dataset": str(beauty_1k),
            "model": model,
            "mode": mode,
            "max_len": 20,
            "hidden_size": 32,
            "epochs": 1,
            "batch_size": 64,
            "lr": 1e-2,
            "adv_warmup_epochs": 0,
            "seed": 0,
        }
    )
    metrics = train(config, tmp_path / "run", progress=False)
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert len(log) == 1 and log[0]["adversarial"] is (mode != "standard")
    if mode != "standard":
        assert math.isfinite(log[0]["loss_1"])  # the adversarial terms really ran
        assert ("loss_2" in log[0]) is (mode == "cat")
    n_items = json.loads((tmp_path / "run" / "run.json").read_text())["n_items"]
    random_hr10 = 10 / n_items
    for split in ("valid", "test"):
        assert all(math.isfinite(v) for v in metrics[split].values())
    assert metrics["valid"]["HR@10"] > 3 * random_hr10
    assert metrics["test"]["HR@10"] > random_hr10
