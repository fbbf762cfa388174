"""``catrec compare`` on a slice of Beauty: two modes, one seed, tiny models (CAT.md §5)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from catrec.cli import main
from catrec.compare import cat_losses, mean_std, run_compare, run_config
from catrec.config import dump_yaml
from catrec.errors import ConfigError, RunError
from catrec.train.loop import Interrupted, train

PNG = b"\x89PNG\r\n\x1a\n"


def compare_args(data, out, cfg):
    return [
        "compare",
        "--dataset", str(data),
        "--modes", "standard,cat",
        "--seeds", "0",
        "--out", str(out),
        "--config", str(cfg),
        "--epochs", "1",
        "--adv-warmup-epochs", "0",
        "--max-len", "10",
        "--bootstrap", "100",
        "--quiet",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def compared(tmp_path_factory, beauty_slice):
    """One compare run; the cat run was interrupted beforehand and must be resumed."""
    root = tmp_path_factory.mktemp("compare")
    data = root / "beauty_1000.txt"
    data.write_text("\n".join(beauty_slice.read_text().splitlines()[:1000]) + "\n")
    cfg = root / "tiny.yaml"
    cfg.write_text(dump_yaml({"hidden_size": 16, "batch_size": 256}))
    out = root / "cmp"
    base = {"dataset": str(data), "hidden_size": 16, "batch_size": 256, "epochs": 1,
            "adv_warmup_epochs": 0, "max_len": 10}  # fmt: skip
    with pytest.raises(Interrupted):
        train(run_config(base, "cat", 0), out / "runs" / "cat-seed0", progress=False,
              stop_after_steps=1)  # fmt: skip
    assert (out / "runs" / "cat-seed0" / "last.pt").is_file()
    rc = main(compare_args(data, out, cfg))
    assert rc == 0
    return data, cfg, out


@pytest.mark.slow
def test_compare_writes_table_json_and_plots(compared, capsys):
    _, _, out = compared
    result = json.loads((out / "compare.json").read_text())
    assert result["modes"] == ["standard", "cat"] and result["seeds"] == [0]
    assert result["git_commit"] and result["wall_time_s"] > 0
    assert {r["mode"]: r["status"] for r in result["runs"]} == {
        "standard": "trained",
        "cat": "resumed",
    }
    for r in result["runs"]:
        assert r["run_dir"].endswith(f"runs/{r['mode']}-seed0")
        assert len(r["robustness"]) == 4  # first, middle, last, random x random replacement
    # every model was evaluated on the same plan
    shas = [{(x["position"], x["plan_sha256"]) for x in r["robustness"]} for r in result["runs"]]
    assert shas[0] == shas[1]
    assert (out / "plan.npz").is_file()
    summary = result["summary"]
    assert set(summary["accuracy"]) == {"standard", "cat"}
    assert summary["accuracy"]["cat"]["NDCG@10"]["n"] == 1
    rows = summary["robustness"]
    assert len(rows) == 8
    assert {row["position"] for row in rows} == {"first", "middle", "last", "random"}
    for row in rows:
        assert 0.0 <= row["RBO@10"]["mean"] <= 1.0
        assert row["RBO@10"]["std"] is None  # one seed: no spread claimed
    judged = summary["cat_does_not_win"]
    assert judged["n_judged"] == 2 + 4 * 3  # test NDCG/HR; RBO, Jaccard, NDCG drop x 4 positions
    assert "judged metrics" in (out / "compare.md").read_text()
    # the per-run accuracy in compare.json is the run's own metrics.json
    for r in result["runs"]:
        metrics = json.loads((out / "runs" / f"{r['mode']}-seed0" / "metrics.json").read_text())
        assert r["test"]["NDCG@10"] == metrics["test"]["NDCG@10"]
    md = (out / "compare.md").read_text()
    assert "| mode | NDCG@10 | HR@10 |" in md
    assert "## Robustness: `random` replacement" in md
    assert "## Where cat does not win" in md
    assert len(result["plots"]) == 2
    for name in ("rbo10_by_position_random.png", "ndcg10_drop_by_position_random.png"):
        assert (out / name).read_bytes()[:8] == PNG
        assert name in md


@pytest.mark.slow
def test_compare_rerun_reuses_everything(compared, capsys):
    data, cfg, out = compared
    runs = out / "runs"
    stamp = {p: p.stat().st_mtime_ns for p in runs.glob("*/*") if p.suffix in (".pt", ".json")}
    rc = main(compare_args(data, out, cfg))
    assert rc == 0
    result = json.loads((out / "compare.json").read_text())
    assert {r["status"] for r in result["runs"]} == {"reused"}
    # nothing retrained or re-evaluated: checkpoints, metrics and robustness files untouched
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp


def test_compare_refuses_a_run_being_trained(tmp_path, beauty_slice):
    run_dir = tmp_path / "runs" / "standard-seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"status": "running", "pid": os.getppid()}))
    with pytest.raises(RunError, match="being trained by process"):
        run_compare(
            tmp_path, {"dataset": str(beauty_slice), "max_len": 10}, ["standard"], [0],
            progress=False,
        )  # fmt: skip


def test_compare_bad_input(tmp_path, beauty_slice, capsys):
    with pytest.raises(ConfigError, match="unknown mode"):
        run_compare(tmp_path, {"dataset": str(beauty_slice)}, ["standard", "best"], [0])
    rc = main(["compare", "--dataset", str(beauty_slice), "--seeds", "a,b", "--out", str(tmp_path)])
    assert rc == 2 and "--seeds" in capsys.readouterr().err


def test_cat_losses_by_hand():
    acc = {
        "standard": {"NDCG@10": mean_std([0.05, 0.06]), "HR@10": mean_std([0.08, 0.08])},
        "cat": {"NDCG@10": mean_std([0.07, 0.06]), "HR@10": mean_std([0.08, 0.08])},
    }

    def row(mode, rbo, jac, drop):
        return {"mode": mode, "position": "last", "replacement": "random", "k": 1,
                "RBO@10": mean_std(rbo), "Jaccard@10": mean_std(jac),
                "NDCG@10_drop": mean_std(drop)}  # fmt: skip

    rob = [row("standard", [0.5, 0.7], [0.4, 0.4], [0.25, 0.75]),
           row("cat", [0.4, 0.6], [0.5, 0.5], [0.5, 0.5])]  # fmt: skip
    judged = cat_losses(acc, rob, ["standard", "cat"], 10)
    assert judged["n_judged"] == 5
    got = {(x["metric"], x["tie"], x["within_one_std"]) for x in judged["losses"]}
    # NDCG@10: cat wins (0.065 > 0.055); Jaccard: cat wins; HR@10 ties; RBO@10 0.5 < 0.6 with
    # std 0.1414 (within); NDCG drop: 0.5 vs 0.5 is a tie (lower is better, not strictly lower)
    assert got == {("HR@10", True, True), ("RBO@10", False, True), ("NDCG@10_drop", True, True)}
    assert cat_losses(acc, [], ["standard"], 10) == {"n_judged": 0, "losses": []}


def _random_sequences(path: Path, n_users: int, min_len: int, seed: int) -> Path:
    """A sequence file of ``n_users`` users with ``min_len``-8 distinct items of 1..25 each."""
    rng = np.random.default_rng(seed)
    rows = (
        [u, *rng.choice(np.arange(1, 26), rng.integers(min_len, 9), replace=False)]
        for u in range(n_users)
    )
    path.write_text("".join(" ".join(map(str, row)) + "\n" for row in rows))
    return path


@pytest.mark.slow
def test_parallel_runs_train_each_run_in_its_own_process(tmp_path):
    data = _random_sequences(tmp_path / "seq.txt", n_users=30, min_len=3, seed=0)
    base = {"dataset": str(data), "hidden_size": 8, "max_len": 6, "epochs": 1,
            "adv_warmup_epochs": 0, "batch_size": 16}  # fmt: skip
    result = run_compare(tmp_path / "cmp", base, ["standard", "cat"], [0], positions=["last"],
                         n_bootstrap=10, progress=False, parallel_runs=2)  # fmt: skip
    assert [r["status"] for r in result["runs"]] == ["trained", "trained"]
    pids = {json.loads((Path(r["run_dir"]) / "run.json").read_text())["pid"]
            for r in result["runs"]}  # fmt: skip
    assert len(pids) == 2 and os.getpid() not in pids
    ref = train(run_config(base, "standard", 0), tmp_path / "ref", progress=False)
    assert ref["test"] == result["runs"][0]["test"]  # the same run as in this process


def test_compare_shares_the_warmup_of_each_seed(tmp_path):
    """Issue 11: the adversarial runs of a seed start from the standard run's kept warm-up, and
    end exactly where training the warm-up themselves would."""
    data = _random_sequences(tmp_path / "seq.txt", n_users=40, min_len=4, seed=1)
    base = {"dataset": str(data), "hidden_size": 8, "max_len": 6, "epochs": 3, "dropout": 0.2,
            "adv_warmup_epochs": 2, "batch_size": 16}  # fmt: skip
    result = run_compare(tmp_path / "cmp", base, ["cat", "standard"], [0], positions=["last"],
                         n_bootstrap=10, progress=False)  # fmt: skip
    runs = {r["mode"]: r for r in result["runs"]}
    std_dir = tmp_path / "cmp" / "runs" / "standard-seed0"
    assert (std_dir / "state-epoch2.pt").exists()
    meta = json.loads((Path(runs["cat"]["run_dir"]) / "run.json").read_text())
    assert meta["warmup_from"] == {"run": str(std_dir), "epochs": 2,
                                   "git_commit": meta["warmup_from"]["git_commit"]}  # fmt: skip
    alone = train(run_config(base, "cat", 0), tmp_path / "alone", progress=False)
    assert alone["test"] == runs["cat"]["test"]
