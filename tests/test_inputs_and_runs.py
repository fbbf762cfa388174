"""Inputs and run folders that never surprise (issue 10): YAML numbers, named columns, edited
configs on resume and in compare, final run status, a second Ctrl-C, evaluate options,
repeated positions, and BERT4Rec robustness counted on what the model reads."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch

from catrec.cli import main
from catrec.compare import prepare_run, run_config
from catrec.config import make_config
from catrec.data import SequenceData, leave_one_out
from catrec.errors import ConfigError, RunError
from catrec.models import build_model
from catrec.robustness import ReplacementPlan, evaluate_robustness, settings_grid
from catrec.train import loop
from catrec.train.loop import Interrupted, load_split, train

FAST = ["--hidden-size", "8", "--max-len", "8", "--epochs", "2", "--batch-size", "8", "--quiet"]


@pytest.fixture
def tiny_file(tmp_path):
    lines = []
    for u in range(1, 21):
        start, n = (u * 7) % 30, 5 + u % 6
        lines.append(" ".join(map(str, [u, *[(start + 2 * i) % 30 + 1 for i in range(n)]])))
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def amazon_csv(tmp_path, tiny_file):
    """The tiny data as an Amazon-style table whose column names no default matches."""
    rows = ["reviewerID,asin,overall,unixReviewTime"]
    for line in tiny_file.read_text().splitlines():
        user, *items = line.split()
        rows += [f"u{user},i{item},5,{1000 + t}" for t, item in enumerate(items)]
    path = tmp_path / "amazon.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_yaml_lr_in_exponent_notation_trains(tiny_file, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"dataset: {tiny_file}\nmode: standard\nlr: 1e-3\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), *FAST, "--out", str(out)]) == 0
    assert "lr: 0.001\n" in (out / "config.yaml").read_text()


COLS = ["--user-col", "reviewerID", "--item-col", "asin", "--time-col", "unixReviewTime"]


def test_column_names_on_every_command_that_reads_a_dataset(amazon_csv, tmp_path, capsys):
    assert main(["data", "stats", str(amazon_csv), "--json"]) == 2
    assert "missing user column" in capsys.readouterr().err
    assert main(["data", "stats", str(amazon_csv), "--json", *COLS]) == 0
    assert json.loads(capsys.readouterr().out)["users"] == 20
    out = tmp_path / "run"
    args = ["train", "--dataset", str(amazon_csv), "--mode", "standard", *FAST, *COLS]
    assert main([*args, "--out", str(out)]) == 0
    assert main(["evaluate", str(out)]) == 0  # the run's config names the columns
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"dataset: {amazon_csv}\nuser_col: reviewerID\nitem_col: asin\n"
                   "time_col: unixReviewTime\ntime_format: null\n")  # fmt: skip
    assert main(["train", "--config", str(cfg), "--mode", "standard", *FAST,
                 "--out", str(tmp_path / "run2")]) == 0  # fmt: skip
    capsys.readouterr()
    compare = ["compare", "--dataset", str(amazon_csv), "--modes", "standard", "--seeds", "0",
               "--out", str(tmp_path / "cmp"), "--bootstrap", "10", "--positions", "last",
               "--depth", "5", *FAST, *COLS]  # fmt: skip
    assert main(compare) == 0


def test_table_options_for_a_sequence_file_are_a_config_error(tiny_file):
    with pytest.raises(ConfigError, match="--user-col: only for interaction tables"):
        load_split(make_config({"dataset": str(tiny_file), "user_col": "u"}))


def _interrupted_run(tiny_file, run_dir):
    cfg = make_config({"dataset": str(tiny_file), "mode": "standard", "hidden_size": 8,
                       "max_len": 8, "epochs": 2, "batch_size": 4})  # fmt: skip
    with pytest.raises(Interrupted):
        train(cfg, run_dir, progress=False, stop_after_steps=2)
    return cfg


def test_resume_refuses_an_edited_config_naming_the_keys(tiny_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    _interrupted_run(tiny_file, run_dir)
    path = run_dir / "config.yaml"
    text = path.read_text()
    path.write_text(text.replace("seed: 0\n", "seed: 7\n").replace("lr: 0.001\n", "lr: 0.05\n"))
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "config.yaml was changed" in err and "lr: 0.001 -> 0.05" in err
    assert "seed: 0 -> 7" in err
    path.write_text(text)  # restored: the resume goes ahead
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


def test_compare_refuses_a_mismatched_finished_run(tiny_file, tmp_path):
    base = {"dataset": str(tiny_file), "hidden_size": 8, "max_len": 8, "epochs": 1,
            "batch_size": 8}  # fmt: skip
    run_dir = tmp_path / "runs" / "standard-seed0"
    cfg = run_config(base, "standard", 0)
    split = load_split(cfg)
    assert prepare_run(run_dir, cfg, split, progress=False)[0] == "trained"
    assert prepare_run(run_dir, cfg, split, progress=False)[0] == "reused"
    other = run_config({**base, "lr": 0.05}, "standard", 0)
    with pytest.raises(
        RunError, match=r"lr: 0\.001 \(run\) vs 0\.05 \(asked\).*--reuse-mismatched"
    ):
        prepare_run(run_dir, other, split, progress=False)
    with pytest.warns(UserWarning, match="config differs"):
        status, used = prepare_run(run_dir, other, split, progress=False, reuse_mismatched=True)
    assert status == "reused" and used == cfg


def test_a_failed_run_records_failed_and_can_be_rerun(tmp_path, capsys):
    data = tmp_path / "three.txt"
    data.write_text("1 1 2 3\n2 2 3 4\n3 3 4 5\n4 4 5 1\n")  # no training pairs: a data error
    out = tmp_path / "r"
    args = ["train", "--dataset", str(data), "--mode", "standard", *FAST, "--out", str(out)]
    assert main(args) == 2
    # found before anything is written: no run.json, no lock (a later error marks it failed,
    # as test_an_unexpected_error_records_failed shows)
    assert not (out / "run.json").exists() and not (out / ".lock").exists()
    data.write_text("1 1 2 3 4 5\n2 2 3 4 5 6\n3 3 4 5 6 7\n4 4 5 1 2 3\n")  # fixed
    capsys.readouterr()
    assert main(args) == 0, capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_an_unexpected_error_records_failed(tiny_file, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(loop, "evaluate_ranking", boom)
    cfg = make_config({"dataset": str(tiny_file), "mode": "standard", "hidden_size": 8,
                       "max_len": 8, "epochs": 1})  # fmt: skip
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg, tmp_path / "r", progress=False)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["status"] == "failed"
    assert not (tmp_path / "r" / ".lock").exists()


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler (KeyboardInterrupt), whatever the test process inherited: a
    shell starts background jobs with SIGINT ignored, and the guard restores what it found."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_second_sigint_stops_at_once(python_sigint):
    with loop._SignalGuard() as guard:
        os.kill(os.getpid(), signal.SIGINT)  # first: a flag, training finishes its step
        assert guard.received == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # second: default handler, stops now
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_second_ctrl_c_during_training_marks_the_run_interrupted(
    tiny_file, tmp_path, monkeypatch, python_sigint
):
    from catrec.train import objectives

    calls = {"n": 0}
    real = objectives.Objective.__call__

    def twice(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *a, **k)

    monkeypatch.setattr(objectives.Objective, "__call__", twice)
    cfg = make_config({"dataset": str(tiny_file), "mode": "standard", "hidden_size": 8,
                       "max_len": 8, "epochs": 1, "batch_size": 2})  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "r", progress=False)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["status"] == "interrupted"
    assert not (tmp_path / "r" / ".lock").exists()


def test_evaluate_options(tiny_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(tiny_file), "--mode", "standard", *FAST,
                 "--out", str(out)]) == 0  # fmt: skip
    stored = (out / "metrics.json").read_text()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--split", "test", "--checkpoint", "last",
                 "--no-mask-history"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "test " in printed and "valid " not in printed
    assert (out / "metrics.json").read_text() == stored  # only the run's own evaluation is kept
    assert main(["evaluate", str(out), "--split", "bogus"]) == 2


def test_repeated_positions_are_refused(capsys):
    with pytest.raises(ConfigError, match="position 'first' given more than once"):
        settings_grid(["first", "first"], ["random"])
    assert main(["robustness", "nowhere", "--positions", "first,first"]) == 2
    assert "given more than once" in capsys.readouterr().err


def test_bert4rec_first_item_it_drops_changes_nothing():
    """max_len 4, every test input full: BERT4Rec drops the oldest item for its mask token, so
    replacing it leaves the scores bit-identical, and the lists too (the mask used to differ)."""
    rng = np.random.default_rng(0)
    n_users, n_items = 30, 40
    seqs = [rng.choice(np.arange(1, n_items + 1), size=8, replace=False) for _ in range(n_users)]
    data = SequenceData(
        name="full",
        user_tokens=np.array([str(u) for u in range(n_users)]),
        item_tokens=np.array(["<pad>"] + [str(i) for i in range(1, n_items + 1)]),
        offsets=np.arange(0, 8 * n_users + 1, 8, dtype=np.int64),
        items=np.concatenate(seqs).astype(np.int64),
    )
    split = leave_one_out(data, 4)
    assert (split.test_inputs > 0).all()
    cfg = make_config({"dataset": "full", "model": "bert4rec", "max_len": 4, "hidden_size": 8,
                       "dropout": 0.0})  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg, split.n_items).eval()
    plan = ReplacementPlan.empty(split, seed=0)
    settings = settings_grid(["first"], ["random"])
    plan.ensure(split, settings)
    cols, items = plan.columns[("first", 1)], plan.items[("first", 1, "random")]
    pert = split.test_inputs.copy()
    np.put_along_axis(pert, cols, items, axis=1)
    assert torch.equal(
        model.predict(torch.as_tensor(split.test_inputs)), model.predict(torch.as_tensor(pert))
    )
    res = evaluate_robustness(model, split, plan, settings, depth=10, n_bootstrap=10,
                              progress=False)  # fmt: skip
    rec = res.records[0]
    assert rec["n_users"] == n_users and rec["RBO@10"] == 1.0 and rec["Jaccard@10"] == 1.0
