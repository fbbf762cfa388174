"""End-to-end training on a slice of the real Beauty file, in every mode (issue: CAT pipeline)."""

import json
import math

import numpy as np
import pytest

from catrec.config import TUNED_DEFAULTS, load_yaml, make_config
from catrec.train.loop import epoch_batches, evaluate_run, should_stop, train

TINY = {"hidden_size": 32, "max_len": 20, "epochs": 1, "batch_size": 64, "dropout": 0.2, "lr": 1e-2}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["standard", "adv", "cat"])
def test_one_epoch_each_mode_beats_random(beauty_slice, tmp_path, mode):
    cfg = make_config({"dataset": str(beauty_slice), "mode": mode, "adv_warmup_epochs": 0, **TINY})
    metrics = train(cfg, tmp_path / "run", progress=False)
    n_items = json.loads((tmp_path / "run" / "run.json").read_text())["n_items"]
    random_hr10 = 10 / n_items
    for split in ("valid", "test"):
        m = metrics[split]
        assert all(math.isfinite(v) for v in m.values())
        assert m["HR@10"] > 3 * random_hr10, (split, m["HR@10"], random_hr10)
        assert 0 < m["NDCG@10"] <= m["HR@10"]
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert len(log) == 1 and log[0]["adversarial"] == (mode != "standard")
    if mode != "standard":
        assert log[0]["loss_1"] > 0 and ("loss_2" in log[0]) == (mode == "cat")
        cascade = np.load(tmp_path / "run" / "cascade.npz")
        real = cascade["position"] > 0
        if mode == "adv":  # generic: weight 1 at every real position
            assert np.all(cascade["position"][real] == 1.0)
        else:  # mean-normalised over input positions
            assert cascade["position"][real].mean() == pytest.approx(1.0, abs=0.05)
    saved = load_yaml(tmp_path / "run" / "config.yaml")
    assert saved["mode"] == mode and saved["scaling"] == (
        "none" if mode == "adv" else "proportional"
    )
    assert saved["lambda_2"] == TUNED_DEFAULTS[mode]["lambda_2"]  # 0 for adv
    # evaluate reproduces the stored metrics exactly
    stored = json.loads((tmp_path / "run" / "metrics.json").read_text())
    again = evaluate_run(tmp_path / "run")
    assert again["test"] == stored["test"] and again["valid"] == stored["valid"]
    # per-user ranks (for paired tests) give the stored metrics back
    import torch

    from catrec.metrics.ranking import hit_rate, ndcg

    ranks = np.load(tmp_path / "run" / "ranks.npz")
    for split in ("valid", "test"):
        r = torch.as_tensor(ranks[split], dtype=torch.float64)
        assert len(r) == stored[split]["n_users"] == 2000
        assert float(ndcg(r, 10).mean()) == pytest.approx(stored[split]["NDCG@10"], abs=1e-12)
        assert float(hit_rate(r, 10).mean()) == stored[split]["HR@10"]


def test_warmup_runs_standard_epochs_first_and_early_stopping_waits(beauty_tiny, tmp_path):
    cfg = make_config(
        {
            "dataset": str(beauty_tiny),
            "mode": "cat",
            "adv_warmup_epochs": 2,
            "patience": 1,
            "lr": 1e-9,  # nothing improves after epoch 1: only the adversarial rule keeps it going
            **{**TINY, "epochs": 4},
        }
    )
    train(cfg, tmp_path / "run", progress=False)
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert [r["adversarial"] for r in log][:3] == [False, False, True]
    # patience 1 and (almost) no learning: the run may not stop before the adversarial terms ran
    assert len(log) >= 3


def test_should_stop_rule():
    std = make_config({"dataset": "x", "mode": "standard", "patience": 3})
    assert not should_stop(2, 5, std) and should_stop(3, 4, std)
    cat = make_config({"dataset": "x", "mode": "cat", "patience": 3, "adv_warmup_epochs": 10})
    assert not should_stop(5, 12, cat)  # only 2 adversarial epochs so far
    assert should_stop(3, 13, cat)
    assert not should_stop(2, 30, cat)


def test_epoch_batches_cover_every_row_once():
    lengths = np.random.default_rng(0).integers(1, 50, size=1000)
    for bucket in (False, True):
        batches = epoch_batches(lengths, 64, np.random.default_rng([3, 1]), bucket)
        rows = np.concatenate(batches)
        assert sorted(rows.tolist()) == list(range(1000))
        again = epoch_batches(lengths, 64, np.random.default_rng([3, 1]), bucket)
        assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    # bucketing: batches hold similar lengths (spread far below the global spread)
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.5 * np.ptp(lengths)


def test_cascade_budget_is_recorded_in_run_json(beauty_tiny, tmp_path):
    cfg = make_config({"dataset": str(beauty_tiny), "mode": "cat", "adv_warmup_epochs": 0, **TINY})
    train(cfg, tmp_path / "run", progress=False)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["cascade"]["realised_mean"] == pytest.approx(1.0, abs=1e-6)
    assert 0.0 <= meta["cascade"]["clipped_share"] < 0.2
    cascade = np.load(tmp_path / "run" / "cascade.npz")
    real = cascade["position"] > 0
    assert cascade["position"][real].astype(np.float64).mean() == pytest.approx(1.0, abs=1e-5)


def _selection_run(data, out, select_from, epochs=3):
    cfg = make_config(
        {
            "dataset": str(data),
            "mode": "cat",
            "adv_warmup_epochs": 2,
            "eps": 3.0,  # oversized perturbations: the adversarial epoch is worse than the warm-up
            "eps_item": 3.0,
            "select_from": select_from,
            **{**TINY, "epochs": epochs},
        }
    )
    metrics = train(cfg, out, progress=False)
    log = json.loads((out / "log.json").read_text())
    return metrics, log, json.loads((out / "run.json").read_text())


def test_adversarial_runs_report_an_adversarial_epoch(beauty_tiny, tmp_path):
    """select_from = adversarial (default): a cat run whose adversarial epoch never beats its
    warm-up still reports an adversarial model, not the standard warm-up one."""
    _, log, meta = _selection_run(beauty_tiny, tmp_path / "adv", "adversarial")
    scores = [r["valid"]["NDCG@10"] for r in log]
    assert max(scores[:2]) > scores[2]  # the warm-up was better on validation...
    assert meta["best_epoch"] == 3 and meta["best_epoch_adversarial"] is True  # ...yet not chosen
    assert meta["select_from"] == "adversarial"
    _, log_all, meta_all = _selection_run(beauty_tiny, tmp_path / "all", "all")
    assert [r["valid"] for r in log_all] == [r["valid"] for r in log]  # same training
    assert meta_all["best_epoch"] == 1 + int(np.argmax(scores[:2]))
    assert meta_all["best_epoch_adversarial"] is False


def test_selection_falls_back_to_all_epochs_when_no_adversarial_epoch_runs(beauty_tiny, tmp_path):
    with pytest.warns(UserWarning, match="chosen among all epochs"):
        _, _, meta = _selection_run(beauty_tiny, tmp_path / "run", "adversarial", epochs=2)
    assert meta["select_from"] == "all" and meta["best_epoch_adversarial"] is False


def test_bce_negatives_avoid_the_users_sequence():
    """Original SASRec: the negative is never an item of the user's sequence (nor the target).
    5-item catalogue: before, about 21% of negatives hit the row's own items."""
    import torch

    from catrec.train.loop import sample_negatives

    torch.manual_seed(0)
    window = torch.tensor([[0, 0, 1, 2, 3], [1, 2, 3, 4, 4], [0, 0, 0, 5, 1]] * 50)
    neg = sample_negatives(window, (150, 4), n_items=5)
    assert neg.shape == (150, 4) and neg.min() >= 1 and neg.max() <= 5
    for row, negs in zip(window.tolist(), neg.tolist(), strict=True):
        assert not set(negs) & set(row)
    assert set(neg[1::3].unique().tolist()) == {5}  # the only item row 2 lacks
    assert set(neg[0::3].unique().tolist()) == {4, 5}  # both its missing items occur


def test_bce_without_any_negative_is_a_clear_error():
    import torch

    from catrec.errors import DataError
    from catrec.train.loop import sample_negatives

    with pytest.raises(DataError, match="contains all 3 items"):
        sample_negatives(torch.tensor([[1, 2, 3, 1]]), (1, 3), n_items=3)


@pytest.mark.parametrize("select_from", ["adversarial", "all"])
def test_adversarial_run_from_a_kept_warmup_equals_training_it(beauty_tiny, tmp_path, select_from):
    """Warm-up sharing: a cat run started from a standard run's state after its 2 warm-up epochs
    ends with exactly the log, weights and metrics of a cat run that trained them itself."""
    import torch

    base = {"dataset": str(beauty_tiny), **{**TINY, "epochs": 3}}
    std = make_config(base | {"mode": "standard"})
    train(std, tmp_path / "std", progress=False, keep_states=[2])
    assert (tmp_path / "std" / "state-epoch2.pt").exists()
    cat = make_config(
        base | {"mode": "cat", "adv_warmup_epochs": 2, "select_from": select_from, "patience": 1}
    )
    full = train(cat, tmp_path / "full", progress=False)
    forked = train(cat, tmp_path / "forked", progress=False, warmup_from=tmp_path / "std")
    assert forked["test"] == full["test"] and forked["valid"] == full["valid"]
    logs = [json.loads((tmp_path / r / "log.json").read_text()) for r in ("full", "forked")]
    strip = [[{k: v for k, v in r.items() if "time" not in k} for r in log] for log in logs]
    assert strip[0] == strip[1] and len(strip[0]) == 3
    a = torch.load(tmp_path / "full" / "best.pt", weights_only=True)["model_state"]
    b = torch.load(tmp_path / "forked" / "best.pt", weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((tmp_path / "forked" / "run.json").read_text())
    assert meta["warmup_from"]["epochs"] == 2


def test_warmup_from_a_run_with_other_settings_is_refused(beauty_tiny, tmp_path):
    from catrec.errors import RunError

    base = {"dataset": str(beauty_tiny), **{**TINY, "epochs": 2}}
    train(
        make_config(base | {"mode": "standard"}), tmp_path / "std", progress=False, keep_states=[1]
    )
    cat = make_config(base | {"mode": "cat", "adv_warmup_epochs": 1, "lr": 5e-3})
    with pytest.raises(RunError, match="settings differ \\(lr\\)"):
        train(cat, tmp_path / "cat", progress=False, warmup_from=tmp_path / "std")


def test_a_run_without_warmup_still_checks_the_donors_data(beauty_tiny, tmp_path):
    # a search's warm-up-0 trials took nothing from the donor and never compared its data
    from catrec.errors import RunError

    base = {**TINY, "epochs": 1}
    train(make_config(base | {"dataset": str(beauty_tiny), "mode": "standard"}), tmp_path / "std",
          progress=False)  # fmt: skip
    other = tmp_path / "other.txt"
    other.write_text("".join(beauty_tiny.read_text().splitlines(keepends=True)[:-1]))
    cat = make_config(base | {"dataset": str(other), "mode": "cat", "adv_warmup_epochs": 0})
    with pytest.raises(RunError, match=r"std: the dataset \S+other.txt differs from"):
        train(cat, tmp_path / "cat", progress=False, warmup_from=tmp_path / "std")
    same = make_config(base | {"dataset": str(beauty_tiny), "mode": "cat", "adv_warmup_epochs": 0})
    assert train(same, tmp_path / "cat2", progress=False, warmup_from=tmp_path / "std")["test"]


def test_on_epoch_end_can_stop_a_run(beauty_tiny, tmp_path):
    seen = []

    def hook(epoch, valid, adv_on):
        seen.append((epoch, adv_on, round(valid["NDCG@10"], 6)))
        return epoch == 2

    cfg = make_config(
        {
            "dataset": str(beauty_tiny),
            "mode": "cat",
            "adv_warmup_epochs": 1,
            **{**TINY, "epochs": 4},
        }
    )
    from catrec.train.loop import Trainer

    assert Trainer(cfg, tmp_path / "run", progress=False, on_epoch_end=hook).fit() == {}
    assert [s[:2] for s in seen] == [(1, False), (2, True)]
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["status"] == "stopped" and meta["epochs_run"] == 2


def test_random_replacement_keeps_padding_mask_tokens_and_targets():
    """Augmentation baseline (issue 12): only real items are replaced, at the asked rate, by
    items of the catalogue; the targets of a causal batch are the unreplaced next items."""
    import torch

    from catrec.models import build_model
    from catrec.train.loop import make_batch, replace_random_items

    torch.manual_seed(0)
    n_items = 50
    inputs = torch.randint(1, n_items + 1, (400, 30))
    inputs[:, :10] = 0  # left padding
    inputs[:, 20] = n_items + 1  # a mask token
    out = replace_random_items(inputs, 0.25, n_items)
    assert torch.equal(out[:, :10], inputs[:, :10]) and torch.equal(out[:, 20], inputs[:, 20])
    changed = (out != inputs).float()
    # a redraw equals the old item with probability 1/50: expected share 0.25 * 49/50 = 0.245
    assert abs(float(changed[:, 10:].sum()) / (400 * 19) - 0.245) < 0.015
    assert int(out[:, 10:20].min()) >= 1 and int(out[:, 10:20].max()) <= n_items
    assert torch.equal(replace_random_items(inputs, 0.0, n_items), inputs)

    cfg = make_config({"dataset": "x", "model": "sasrec", "replace_prob": 0.5})
    model = build_model(cfg, n_items)
    window = np.array([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]] * 20)
    torch.manual_seed(1)
    batch = make_batch(model, window, np.ones((40, 5)), cfg, torch.device("cpu"))
    w = torch.as_tensor(window)
    assert torch.equal(batch.targets, torch.where(w[:, :-1] > 0, w[:, 1:], 0))
    assert bool((batch.inputs != w[:, :-1]).any())
    assert torch.equal(batch.inputs == 0, w[:, :-1] == 0)


def test_random_replacement_is_seeded_and_changes_training(beauty_tiny, tmp_path):
    base = {"dataset": str(beauty_tiny), **{**TINY, "epochs": 1}, "mode": "standard"}
    a = train(make_config(base | {"replace_prob": 0.2}), tmp_path / "a", progress=False)
    b = train(make_config(base | {"replace_prob": 0.2}), tmp_path / "b", progress=False)
    c = train(make_config(base), tmp_path / "c", progress=False)
    assert a["valid"] == b["valid"] and a["test"] == b["test"]
    assert a["valid"] != c["valid"]


def test_replacement_term_trains_and_is_logged(beauty_tiny, tmp_path):
    """mode adv with lambda_1 = 0 trains with the adversarial replacement term alone; the term
    is refused in mode standard (it needs the clean pass's gradients)."""
    from catrec.errors import ConfigError

    base = {"dataset": str(beauty_tiny), **TINY, "adv_warmup_epochs": 0}
    cfg = make_config(base | {"mode": "adv", "lambda_1": 0.0, "lambda_replace": 1.0})
    metrics = train(cfg, tmp_path / "rep", progress=False)
    log = json.loads((tmp_path / "rep" / "log.json").read_text())
    assert log[0]["adversarial"] and log[0]["loss_replace"] > log[0]["loss_rec"] > 0
    assert "loss_1" not in log[0] and metrics["test"]["n_users"] == 300
    with pytest.raises(ConfigError, match="lambda_replace is an adversarial term"):
        make_config(base | {"mode": "standard", "lambda_replace": 1.0})
