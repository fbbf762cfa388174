"""A run finds its dataset again from a new shell (issue 9): ``run.json`` records the file's
absolute path and sha256; ``--resume``, ``evaluate`` and ``robustness`` use it while it exists
with that hash, and otherwise name the file and the hash they need."""

import json

import pytest

from catrec.cli import main
from catrec.config import make_config
from catrec.train.loop import Interrupted, train
from catrec.utils import sha256_file

TINY = {"hidden_size": 8, "max_len": 10, "epochs": 2, "batch_size": 64, "mode": "standard"}


@pytest.fixture
def named_run(beauty_tiny, tmp_path, monkeypatch):
    """A run of the dataset *named* ``beauty``, found in $CATREC_DATA_DIR, interrupted after
    three steps; then $CATREC_DATA_DIR points to an empty folder (a new shell)."""
    folder = tmp_path / "data"
    folder.mkdir()
    data = folder / "Beauty.txt"
    data.write_bytes(beauty_tiny.read_bytes())
    monkeypatch.setenv("CATREC_DATA_DIR", str(folder))
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted, match="at epoch 1, step 3;"):
        train(
            make_config({"dataset": "beauty", **TINY}), run_dir, progress=False, stop_after_steps=3
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("CATREC_DATA_DIR", str(empty))  # and no download (conftest)
    return run_dir, data


def test_run_json_records_the_dataset_file(named_run):
    run_dir, data = named_run
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["dataset"] == "beauty"
    assert meta["dataset_path"] == str(data.resolve())
    assert meta["dataset_file_sha256"] == sha256_file(data)


def test_resume_evaluate_and_robustness_use_the_recorded_file(named_run, capsys):
    run_dir, _ = named_run
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "finished"
    # counted like the message "interrupted at epoch 1, step 3": 1-based epoch, steps done
    assert [(r["in_epoch"], r["after_step"]) for r in meta["resumed"]] == [(1, 3)]
    log = json.loads((run_dir / "log.json").read_text())
    assert log[0]["time_partial"] is True and log[0]["resumed_after_step"] == 3
    assert "time_partial" not in log[1] and "resumed_after_step" not in log[1]
    assert main(["evaluate", str(run_dir)]) == 0
    args = ["robustness", str(run_dir), "--positions", "last", "--bootstrap", "10", "--quiet"]
    assert main(args) == 0
    assert "error" not in capsys.readouterr().err


def test_a_missing_or_changed_file_is_named_with_its_hash(named_run, tmp_path, monkeypatch, capsys):
    run_dir, data = named_run
    want = sha256_file(data)
    moved = tmp_path / "elsewhere" / "Beauty.txt"
    moved.parent.mkdir()
    data.rename(moved)
    assert main(["evaluate", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{data.resolve()} with sha256 {want}, which no longer exists" in err
    assert "$CATREC_DATA_DIR" in err and "Traceback" not in err
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 2
    assert want in capsys.readouterr().err
    # the same file found where $CATREC_DATA_DIR now points is used
    monkeypatch.setenv("CATREC_DATA_DIR", str(moved.parent))
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    # a file that changed is refused, with both hashes
    moved.write_text(moved.read_text().replace("\n", " 1\n", 1))
    assert main(["evaluate", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert want in err and sha256_file(moved) in err
