"""The job graph of ``benchmarks/study.py`` (issue 11's resumable study)."""

import argparse
import json
from pathlib import Path

import pytest


def _args(**kw) -> argparse.Namespace:
    base = dict(device="cpu", override="{}", datasets="toys", seeds="0,1,2", stages="main",
                max_epochs=200, trials=20, tune_workers=2, legacy_src="")  # fmt: skip
    return argparse.Namespace(**(base | kw))


def _finished_donor(out: Path) -> None:
    """A finished Beauty SASRec standard seed-0 run under ``out`` (the beyond runs' donor)."""
    donor = out / "main" / "beauty-sasrec" / "standard-seed0"
    donor.mkdir(parents=True)
    (donor / "run.json").write_text(json.dumps({"status": "finished"}))


def test_a_dependency_outside_the_call_does_not_leave_jobs_waiting(tmp_path, load_benchmark):
    # --datasets toys: seeds 1-2 waited for the Beauty donor, which that call never runs, so
    # their workers idled until the study ended.
    study = load_benchmark("study")
    jobs = {j.name: j for j in study.plan_jobs(_args(), tmp_path, None)}
    seed1 = jobs["main/toys-sasrec/standard-seed1"]
    assert seed1.deps == [] and seed1.after == []
    jobs = {j.name: j for j in study.plan_jobs(_args(datasets="beauty,toys"), tmp_path, None)}
    assert jobs["main/toys-sasrec/standard-seed1"].after == ["main/beauty-sasrec/standard-seed0"]
    # a real dependency outside the call: refused, unless an earlier call finished it
    tuned = {"cat": {"eps": 0.2}, "adv": {"eps": 0.1}}
    with pytest.raises(SystemExit, match="beyond/ablation/level1-only-seed0 needs main/beauty"):
        study.plan_jobs(_args(stages="main,beyond"), tmp_path, tuned)
    _finished_donor(tmp_path)
    jobs = {j.name: j for j in study.plan_jobs(_args(stages="main,beyond"), tmp_path, tuned)}
    assert jobs["beyond/ablation/level1-only-seed0"].deps == []


def test_a_committed_robustness_file_is_kept_without_its_checkpoint(
    tmp_path, capsys, load_benchmark
):
    # a finished cell copied from docs/results onto a new machine has robustness.json but no
    # best.pt: the robustness job keeps it instead of failing on the missing checkpoint
    from catrec.errors import RunError
    from catrec.robustness import settings_grid

    study = load_benchmark("study")
    run = tmp_path / "standard-seed0"
    run.mkdir()
    grid = settings_grid(
        study.SETTINGS["positions"], study.SETTINGS["replacements"], study.SETTINGS["k"]
    )
    records = [{"position": s.key[0], "replacement": s.key[1], "k": s.key[2]} for s in grid]
    (run / "robustness.json").write_text(json.dumps({"records": records}))
    study.job_robustness({"run_dir": str(run), "plan": str(tmp_path / "plan.npz")})
    assert "is kept as it is" in capsys.readouterr().out
    # one setting missing: it must be computed, which needs the checkpoint
    (run / "robustness.json").write_text(json.dumps({"records": records[1:]}))
    with pytest.raises(RunError, match="run.json|best.pt|config"):
        study.job_robustness({"run_dir": str(run), "plan": str(tmp_path / "plan.npz")})


def test_a_finished_run_gets_its_robustness_before_the_next_training_job(tmp_path, load_benchmark):
    # robustness once waited behind every beyond training job (priority +0.5), so a session that
    # ended early left finished runs without robustness.json
    study = load_benchmark("study")
    _finished_donor(tmp_path)
    tuned = {"cat": {"eps": 0.2}, "adv": {"eps": 0.1}}
    args = _args(stages="main,beyond,robustness", datasets="beauty")
    jobs = {j.name: j for j in study.plan_jobs(args, tmp_path, tuned)}
    rob = jobs["robustness/beyond/ablation/level1-only-seed0"]
    assert rob.deps == ["beyond/ablation/level1-only-seed0"]
    training = [j for j in jobs.values() if j.kind in ("train", "legacy")]
    same_level = [j for j in training if j.priority == jobs[rob.deps[0]].priority]
    assert len(same_level) > 1
    assert all(rob.priority < j.priority for j in same_level)


def test_the_main_tables_seeds_run_before_the_sports_confirmation(tmp_path, load_benchmark):
    # the confirmation (CAT.md's defaults on Sports) once ran ahead of SASRec seeds 1-2, so a
    # session ending early left the table, which the issue requires, without its seeds
    study = load_benchmark("study")
    tuned = {"cat": {"eps": 0.2}, "adv": {"eps": 0.1}}
    jobs = {j.name: j for j in study.plan_jobs(_args(datasets="sports"), tmp_path, tuned)}
    confirm = [j for name, j in jobs.items() if name.startswith("confirm/")]
    table = [j for name, j in jobs.items() if name.startswith("main/")]
    assert len(confirm) == 2 and any(j.name.endswith("seed2") for j in table)
    assert max(j.priority for j in table) < min(j.priority for j in confirm)
