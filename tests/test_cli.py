"""CLI smoke tests on a ~20-user fixture: exit codes, messages, run-folder contents."""

import json
import subprocess
import sys

import pytest

from catrec.cli import main
from catrec.config import load_yaml


@pytest.fixture
def tiny_file(tmp_path):
    """20 users over 30 items with a learnable pattern (each user walks forward through items)."""
    lines = []
    for u in range(1, 21):
        start = (u * 7) % 30
        n = 5 + u % 6
        items = [(start + 2 * i) % 30 + 1 for i in range(n)]
        lines.append(" ".join(map(str, [u, *items])))
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


FAST = ["--hidden-size", "8", "--max-len", "8", "--epochs", "2", "--batch-size", "8", "--quiet"]


def test_train_and_evaluate_roundtrip(tiny_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--dataset", str(tiny_file), "--mode", "cat", "--adv-warmup-epochs", "1"]
    assert main([*args, *FAST, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "NDCG@10" in stdout and f"run folder: {out}" in stdout
    for name in (
        "config.yaml",
        "items.json",
        "best.pt",
        "last.pt",
        "log.json",
        "metrics.json",
        "run.json",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"valid", "test"}
    assert {"NDCG@10", "HR@10", "MRR", "HR@5", "NDCG@20"} <= set(metrics["test"])
    config = load_yaml(out / "config.yaml")
    assert (
        config["adv_warmup_epochs"] == 1 and config["hidden_size"] == 8 and config["mode"] == "cat"
    )
    items = json.loads((out / "items.json").read_text())
    assert items[0] == "<pad>" and items[1:] == [str(i) for i in range(1, 31)]
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and meta["seed"] == 0 and meta["wall_time_s"] > 0
    assert main(["evaluate", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["test"] == metrics["test"]
    # the same out folder is never silently overwritten
    assert main([*args, *FAST, "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_yaml_config_and_override(tiny_file, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"dataset: {tiny_file}\nmode: standard\nhidden_size: 8\nepochs: 1\nmax_len: 8\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    saved = load_yaml(out / "config.yaml")
    assert saved["epochs"] == 2 and saved["hidden_size"] == 8 and saved["mode"] == "standard"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eps", "-1"], "'eps'"),
        (["--max-len", "0"], "'max_len'"),
        (["--mode", "adv", "--lambda-2", "1"], "lambda_2"),
        (["--mode", "adv", "--scaling", "proportional"], "scaling"),
        (["--hidden-size", "7", "--n-heads", "2"], "divisible"),
    ],
)
def test_bad_values_exit_2_naming_the_key(tiny_file, tmp_path, capsys, args, message):
    code = main(["train", "--dataset", str(tiny_file), *args, "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # rejected before any work


def test_bad_usage_and_input(tiny_file, tmp_path, capsys):
    assert main(["train", "--dataset", str(tiny_file), "--mode", "bogus"]) == 2
    assert main(["train", "--dataset", str(tiny_file), "--no-such-flag"]) == 2
    assert main(["train", "--epochs", "1"]) == 2  # no dataset
    capsys.readouterr()
    assert main(["train", "--dataset", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"dataset: {tiny_file}\nepss: 0.1\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "unknown key 'epss'" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["data", "stats", "no-such-dataset"]) == 2


def test_data_stats_by_name(beauty_by_name, capsys):
    assert main(["data", "stats", "beauty", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    # the committed slice, counted independently (tests/fixtures/README.md)
    assert stats["users"] == 2000 and stats["items"] == 8017 and stats["interactions"] == 24226
    assert stats["path"] == str(beauty_by_name)


@pytest.mark.slow
def test_console_script_exit_status(tiny_file):
    proc = subprocess.run(
        [sys.executable, "-m", "catrec.cli", "train", "--dataset", str(tiny_file), "--eps", "-3"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("catrec: error:") and "eps" in proc.stderr
    assert main(["--version"]) == 0


def test_warmup_longer_than_training_warns(tiny_file, tmp_path, capsys):
    args = [
        "train",
        "--dataset",
        str(tiny_file),
        "--mode",
        "adv",
        *FAST,
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(args) == 0  # epochs 2 <= adv's default warm-up 20
    assert "adversarial terms of mode 'adv' never run" in capsys.readouterr().err


def test_cuda_on_cpu_build_is_a_clear_error(tiny_file, tmp_path, capsys):
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "--dataset", str(tiny_file), "--device", "cuda", *FAST]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_default_run_folder_and_portable_paths(tiny_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", tiny_file.name, "--mode", "standard", *FAST]) == 0
    run = tmp_path / "runs" / "tiny-sasrec-standard-seed0"
    assert run.is_dir()
    # the dataset path is stored absolute: the run evaluates from any folder
    assert load_yaml(run / "config.yaml")["dataset"] == str(tiny_file)
    monkeypatch.chdir("/")
    assert main(["evaluate", str(run)]) == 0
    mode = (run / "metrics.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~_umask()  # shared results, not 0600


def _umask():
    import os

    old = os.umask(0)
    os.umask(old)
    return old


def test_changed_dataset_is_detected(tiny_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["train", "--dataset", str(tiny_file), "--mode", "standard", *FAST, "--out", str(out)])
        == 0
    )
    lines = tiny_file.read_text().splitlines()
    first = lines[0].split()
    lines[0] = " ".join([first[0], *first[1:-2], first[-1], first[-2]])  # swap the last two items
    tiny_file.write_text("\n".join(lines) + "\n")
    assert main(["evaluate", str(out)]) == 2
    # run.json records the file's sha256: the change is caught before the content hash check
    err = capsys.readouterr().err
    assert f"{tiny_file} with sha256" in err and "which has changed (its sha256 is now" in err


def test_dataset_with_no_training_pairs_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "three.txt"
    path.write_text("1 1 2 3\n2 2 3 4\n3 3 4 5\n4 4 5 1\n")
    assert main(["train", "--dataset", str(path), *FAST, "--out", str(tmp_path / "r")]) == 2
    assert "no training sequences" in capsys.readouterr().err


def test_corrupted_plan_is_a_clear_error(tiny_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["train", "--dataset", str(tiny_file), "--mode", "standard", *FAST, "--out", str(out)])
        == 0
    )
    plan = tmp_path / "plan.npz"
    plan.write_bytes(b"PK\x03\x04 truncated")
    assert (
        main(["robustness", str(out), "--plan", str(plan), "--bootstrap", "10", "--depth", "5"])
        == 2
    )
    assert "not a readable catrec replacement plan" in capsys.readouterr().err
    assert main(["robustness", str(out), "--depth", "25", "--bootstrap", "10"]) == 2
    assert "exceeds the items left to rank" in capsys.readouterr().err


# --- what a newcomer sees (issue 9) ---------------------------------------------------------


def test_training_says_what_it_is_doing(tiny_file, tmp_path):
    from click.testing import CliRunner

    from catrec.cli import cli

    out = tmp_path / "run"
    args = ["train", "--dataset", str(tiny_file), "--mode", "cat", "--adv-warmup-epochs", "2"]
    args += ["--hidden-size", "8", "--max-len", "8", "--epochs", "3", "--batch-size", "8"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    n_interactions = sum(5 + u % 6 for u in range(1, 21))  # how tiny_file is built
    start = lines[0]
    assert start.startswith(f"training: {tiny_file}: 20 users, 30 items, {n_interactions} interac")
    assert "sasrec, mode cat, seed 0" in start and f"run folder {out}" in start
    assert "epochs 1-2 standard warm-up, adversarial from 3" in start
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [e.split()[1] for e in epochs] == ["1/3", "2/3", "3/3"]
    # select_from = adversarial: the warm-up epochs are not candidates for the reported model
    assert all("warm-up (not a candidate" in e for e in epochs[:2]) and "*" not in result.stdout
    assert "new best" in epochs[2]
    assert "ETA" in epochs[0] and "for 2 epochs left" in epochs[0] and "ETA" not in epochs[2]


def test_help_is_complete_and_examples_copy_paste(tmp_path):
    from click.testing import CliRunner

    from catrec.cli import cli

    runner = CliRunner()
    top = runner.invoke(cli, ["--help"], terminal_width=80).output
    commands = top.split("Commands:")[1]
    assert "..." not in commands and "…" not in commands  # no short help cut off
    for name in ("compare", "data", "evaluate", "robustness", "train"):
        assert f"  {name} " in top
    assert "Robustness of a run's best model to item replacement." in top
    for command, example in [
        ("robustness", "catrec robustness runs/beauty-sasrec-cat-seed0 --replacement adversarial"),
        ("train", "catrec train --dataset beauty --model sasrec --mode cat --seed 0"),
        (
            "compare",
            "catrec compare --dataset beauty --model sasrec --modes standard,adv,cat --seeds 0,1,2",
        ),
    ]:
        text = runner.invoke(cli, [command, "-h"], terminal_width=80).output
        assert example in [line.strip() for line in text.splitlines()], command


@pytest.mark.slow
def test_evaluate_an_unfinished_run_warns_and_names_the_checkpoint(tiny_file, tmp_path):
    from catrec.config import make_config
    from catrec.train.loop import Interrupted, train

    run_dir = tmp_path / "run"
    cfg = make_config(
        {"dataset": str(tiny_file), "hidden_size": 8, "max_len": 8, "epochs": 3, "batch_size": 8}
    )
    with pytest.raises(Interrupted):  # 20 users, batches of 8: 3 steps per epoch
        train(cfg, run_dir, progress=False, stop_after_steps=4)
    proc = subprocess.run(
        [sys.executable, "-m", "catrec.cli", "evaluate", str(run_dir)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "catrec: warning:" in proc.stderr and "has not finished" in proc.stderr
    assert f"using {run_dir / 'best.pt'}, the best checkpoint so far" in proc.stderr
    assert "1 of at most 3 epochs done" in proc.stderr
    assert f"catrec train --resume {run_dir}" in proc.stderr
    args = ["robustness", str(run_dir), "--positions", "last", "--bootstrap", "10", "--quiet"]
    with pytest.warns(UserWarning, match=r"has not finished.*best\.pt, the best checkpoint"):
        assert main(args) == 0


def test_null_and_other_mode_in_a_config_file(tiny_file, tmp_path, capsys):
    # null is the mode's default (compare crashed on it); a run's config.yaml reused with another
    # --mode keeps its mode's resolved values, which is said.
    from catrec.cli import _warn_if_other_mode

    nulls = tmp_path / "n.yaml"
    nulls.write_text("adv_warmup_epochs: null\neps: null\n")
    args = ["compare", "--config", str(nulls), "--dataset", str(tiny_file), "--modes", "adv"]
    args += ["--seeds", "0", *FAST, "--epochs", "1", "--out", str(tmp_path / "c")]
    assert main(args) == 0
    assert "warm-up of 20 epochs" in capsys.readouterr().err  # adv's default, not a crash
    _warn_if_other_mode({"mode": "adv", "eps": 0.12, "lambda_2": 0.0}, {"mode": "cat"}, "a.yaml")
    err = capsys.readouterr().err
    assert "a.yaml is a 'adv' config and --mode is 'cat': its eps, lambda_2 are kept" in err
    _warn_if_other_mode({"mode": "adv", "eps": 0.12}, {"mode": "adv"}, "a.yaml")
    _warn_if_other_mode({"mode": "adv", "seed": 1}, {"mode": "cat"}, "a.yaml")
    assert capsys.readouterr().err == ""


def test_an_interrupted_tune_says_to_run_tune_again(tiny_file, tmp_path, capsys, monkeypatch):
    # Not "catrec train --resume TRIAL": that would evaluate the test split tune never reads.
    from catrec.train.loop import Interrupted

    def stopped(*a, **k):
        raise Interrupted("interrupted; resume with catrec train --resume X")

    monkeypatch.setattr("catrec.tune.tune", stopped)
    out = tmp_path / "t"
    assert main(["tune", "--dataset", str(tiny_file), "--out", str(out), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert f"saved in {out}" in err and "run the same catrec tune command again" in err
    assert "train --resume" not in err


def test_ctrl_c_before_a_command_starts_is_one_line(capsys, monkeypatch):
    # Ctrl-C while torch imports (before click runs the command) printed a long traceback
    import catrec.cli

    def ctrl_c(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(catrec.cli, "_main", ctrl_c)
    assert main(["data", "stats", "beauty"]) == 130
    assert capsys.readouterr().err == "catrec: interrupted\n"


def test_options_a_mode_does_not_use_are_warned_about(tiny_file, tmp_path, capsys):
    # --mode standard with adversarial options trained silently and recorded them in config.yaml.
    from catrec.cli import _warn_if_unused

    args = ["train", "--dataset", str(tiny_file), "--mode", "standard", "--eps", "0.5"]
    args += ["--lambda-2", "5", "--scaling", "inverse", "--seed", "3"]
    args += [*FAST, "--epochs", "1", "--out", str(tmp_path / "r")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "catrec: warning: mode 'standard' does not use --eps, --lambda-2, --scaling" in err
    _warn_if_unused({"eps_item": 0.1, "gamma": 2.0, "eps": 0.1}, "adv")
    err = capsys.readouterr().err
    assert err == "catrec: warning: mode 'adv' does not use --eps-item, --gamma\n"
    _warn_if_unused({"eps_item": 0.1, "cascade": "none", "seed": 1}, "cat")
    _warn_if_unused({"seed": 1, "lr": 0.01}, "standard")
    assert capsys.readouterr().err == ""
