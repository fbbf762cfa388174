"""Reliability: exact resume, atomic checkpoints, safe loading, numerical guards (issue 5)."""

import json
import os
import pickle
import signal

import pytest
import torch

from catrec.config import make_config
from catrec.errors import RunError
from catrec.metrics.ranking import NumericalError
from catrec.run import load_checkpoint
from catrec.train import loop
from catrec.train.loop import Interrupted, evaluate_run, load_model, train
from catrec.train.objectives import Objective

CFG = {"hidden_size": 16, "max_len": 10, "epochs": 3, "batch_size": 32, "dropout": 0.3, "lr": 5e-3}


def _config(path, mode="cat"):
    return make_config({"dataset": str(path), "mode": mode, "adv_warmup_epochs": 1, **CFG})


def _weights(run_dir):
    return load_model(run_dir)[2].state_dict()


@pytest.mark.parametrize("stop_after", [4, 13])
def test_interrupt_and_resume_is_bit_identical(beauty_tiny, tmp_path, stop_after):
    cfg = _config(beauty_tiny)
    ref = train(cfg, tmp_path / "ref", progress=False)
    with pytest.raises(Interrupted, match="--resume"):
        train(cfg, tmp_path / "cut", progress=False, stop_after_steps=stop_after)
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "interrupted"
    resumed = train(cfg, tmp_path / "cut", progress=False, resume=True)
    assert resumed["test"] == ref["test"] and resumed["valid"] == ref["valid"]
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    last_a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)["model_state"]
    last_b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["model_state"]
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)


def test_sigterm_checkpoints_after_the_current_step(beauty_tiny, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = Objective.__call__

    def step_then_signal(self, model, batch, adversarial=True):
        out = original(self, model, batch, adversarial)
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(Objective, "__call__", step_then_signal)
    with pytest.raises(Interrupted):
        train(_config(beauty_tiny), tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["train_state"]
    assert (state["epoch"], state["step"]) == (0, 3)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


def test_crash_during_checkpoint_write_keeps_previous(beauty_tiny, tmp_path, monkeypatch):
    cfg = _config(beauty_tiny, "standard")
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "run", progress=False, stop_after_steps=3)
    before = (tmp_path / "run" / "last.pt").read_bytes()

    real_save = torch.save

    def crashing_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError):
        train(cfg, tmp_path / "run", progress=False, resume=True, stop_after_steps=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    assert not [p for p in os.listdir(tmp_path / "run") if p.endswith(".tmp")]
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert load_checkpoint(tmp_path / "run" / "last.pt", meta["checkpoints"]["last.pt"])


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"format": 1, "payload": _Exploit()}, fh)
    with pytest.raises(RunError, match="refused"):
        load_checkpoint(path)
    torch.save({"format": 1, "payload": _Exploit()}, path)
    with pytest.raises(RunError, match="refused"):
        load_checkpoint(path)


def test_corrupted_truncated_and_incompatible_checkpoints(beauty_tiny, tmp_path):
    cfg = _config(beauty_tiny, "standard")
    train(cfg, tmp_path / "run", progress=False)
    best = tmp_path / "run" / "best.pt"
    data = best.read_bytes()
    best.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match="corrupted"):
        evaluate_run(tmp_path / "run")  # sha256 in run.json no longer matches
    with pytest.raises(RunError, match="truncated or corrupted"):
        load_checkpoint(best)  # without a recorded hash the zip reader notices
    best.write_bytes(data)
    ckpt = torch.load(best, weights_only=True)
    meta_path = tmp_path / "run" / "run.json"
    meta = json.loads(meta_path.read_text())
    meta["checkpoints"].pop("best.pt")
    meta_path.write_text(json.dumps(meta))
    torch.save({**ckpt, "n_items": ckpt["n_items"] + 1}, best)
    with pytest.raises(RunError, match="items"):
        evaluate_run(tmp_path / "run")
    torch.save({**ckpt, "format": 99, "catrec_version": "9.9"}, best)
    with pytest.raises(RunError, match="format"):
        evaluate_run(tmp_path / "run")


def test_nan_loss_stops_with_step_and_checkpoint_named(beauty_tiny, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = loop.make_batch

    def poisoned(model, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 12:  # in the second epoch: the weights blow up
            with torch.no_grad():
                model.item_embedding.weight[1:] = float("nan")
        return original(model, *args, **kwargs)

    monkeypatch.setattr(loop, "make_batch", poisoned)
    with pytest.raises(
        NumericalError, match=r"epoch 2, step \d+/\d+.*last good checkpoint: .*last\.pt"
    ):
        train(_config(beauty_tiny, "standard"), tmp_path / "run", progress=False)
    with pytest.warns(UserWarning, match="status 'failed'.*the best checkpoint so far"):
        _, _, model = load_model(tmp_path / "run")  # the best model so far is intact
    assert torch.isfinite(model.item_embedding.weight).all()


def test_resume_refuses_a_run_that_is_still_training(beauty_tiny, tmp_path):
    cfg = _config(beauty_tiny, "standard")
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "run", progress=False, stop_after_steps=2)
    assert not (tmp_path / "run" / ".lock").exists()  # released on interruption
    (tmp_path / "run" / ".lock").write_text(str(os.getppid()))  # a live process that is not us
    with pytest.raises(RunError, match="being trained by process"):
        train(cfg, tmp_path / "run", progress=False, resume=True)
    with pytest.raises(RunError, match="already holds a run"):
        train(cfg, tmp_path / "run", progress=False)
    (tmp_path / "run" / ".lock").write_text("999999999")  # stale: its owner is gone
    assert train(cfg, tmp_path / "run", progress=False, resume=True)["test"]["n_users"] == 300


def test_resuming_a_finished_run_changes_nothing(beauty_tiny, tmp_path):
    """--resume on a finished run: nothing to resume; run.json's resume record is not touched."""
    import json

    from catrec.config import make_config
    from catrec.train.loop import train

    cfg = make_config(
        {
            "dataset": str(beauty_tiny),
            "mode": "standard",
            "epochs": 1,
            "hidden_size": 16,
            "max_len": 10,
            "batch_size": 64,
        }  # fmt: skip
    )
    first = train(cfg, tmp_path / "run", progress=False)
    before = json.loads((tmp_path / "run" / "run.json").read_text())
    with pytest.warns(UserWarning, match="nothing to resume"):
        again = train(cfg, tmp_path / "run", progress=False, resume=True)
    after = json.loads((tmp_path / "run" / "run.json").read_text())
    assert again["test"] == first["test"]
    assert after.get("resumed") == before.get("resumed") and after["status"] == "finished"


def test_evaluating_a_run_stopped_in_its_warmup_says_why_there_is_no_model(beauty_tiny, tmp_path):
    from catrec.config import make_config
    from catrec.errors import RunError
    from catrec.train.loop import Interrupted, Trainer, evaluate_run

    cfg = make_config(
        {
            "dataset": str(beauty_tiny),
            "mode": "cat",
            "epochs": 4,
            "adv_warmup_epochs": 2,
            "hidden_size": 16,
            "max_len": 10,
            "batch_size": 64,
        }  # fmt: skip
    )
    n_steps = 5  # 300 users / 64: the first epoch, then a step into the second
    with pytest.raises(Interrupted):
        Trainer(cfg, tmp_path / "run", progress=False, stop_after_steps=n_steps + 1).fit()
    with pytest.raises(RunError, match="no best.pt yet.*warm-up.*catrec train --resume"):
        evaluate_run(tmp_path / "run")


def test_a_default_changed_since_the_run_started_does_not_block_its_resume(
    beauty_tiny, tmp_path, monkeypatch
):
    # The tuned defaults replaced CAT.md's while study runs were interrupted: a resumed run keeps
    # its own values where the request sets none, and still refuses a value the request changes.
    from catrec.config import TUNED_DEFAULTS
    from catrec.run import resume_config

    values = {"dataset": str(beauty_tiny), "mode": "cat", "adv_warmup_epochs": 1, **CFG}
    ref = train(make_config(values), tmp_path / "ref", progress=False)
    with pytest.raises(Interrupted):
        train(make_config(values), tmp_path / "run", progress=False, stop_after_steps=4)
    monkeypatch.setitem(TUNED_DEFAULTS, "cat", TUNED_DEFAULTS["cat"] | {"eps": 0.9})
    with pytest.raises(RunError, match=r"eps: 0\.20\d* -> 0\.9"):
        train(make_config(values), tmp_path / "run", progress=False, resume=True)
    cfg = resume_config(tmp_path / "run", values)
    assert cfg.eps == pytest.approx(0.2028519425405633)
    assert resume_config(tmp_path / "run", values | {"eps": None}) == cfg  # None: unset
    with pytest.raises(RunError, match=r"lambda_1: 0\.43\d* -> 2\.0"):
        changed = resume_config(tmp_path / "run", values | {"lambda_1": 2.0})
        train(changed, tmp_path / "run", progress=False, resume=True)
    assert train(cfg, tmp_path / "run", progress=False, resume=True)["test"] == ref["test"]
