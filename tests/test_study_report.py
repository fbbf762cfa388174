"""``benchmarks/study_report.py``: the confirmation of the tuned defaults on Sports."""

import json
from pathlib import Path


def _run(folder: Path, valid_ndcg: float, best_epoch: int) -> None:
    folder.mkdir(parents=True)
    metrics = {"valid": {"NDCG@10": valid_ndcg, "HR@10": 2 * valid_ndcg}, "test": {}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "run.json").write_text(json.dumps({"best_epoch": best_epoch, "wall_time_s": 99.6}))
    (folder / "config.yaml").write_text("mode: cat\n")


def test_the_confirmation_sets_the_tuned_runs_against_cat_md_defaults_on_validation(
    tmp_path, load_benchmark
):
    report = load_benchmark("study_report")
    cell = "sports-sasrec"
    _run(tmp_path / "main" / cell / "standard-seed0", 0.0400, 17)
    _run(tmp_path / "main" / cell / "cat-seed0", 0.0405, 24)
    _run(tmp_path / "main" / cell / "adv-seed0", 0.0410, 33)
    _run(tmp_path / "confirm" / cell / "cat-default-seed0", 0.0360, 11)
    lines = report.confirm_lines(tmp_path)
    assert (
        lines[0] == "## Confirmation of the tuned defaults (sports-sasrec, seed 0, validation only)"
    )
    assert "| cat | tuned | 0.0405 | 0.0810 | 24 | 100 |" in lines
    assert "| cat | CAT.md defaults | 0.0360 | 0.0720 | 11 | 100 |" in lines
    assert "| adv | CAT.md defaults | not run yet | | | |" in lines
    # (0.0405 - 0.0360) / 0.0360 = +12.5%; adv's pair is incomplete, so no verdict for it
    assert "On validation: cat: tuned (+12.5% tuned vs defaults)." in lines
    _run(tmp_path / "confirm" / cell / "adv-default-seed0", 0.0420, 40)
    verdict = [x for x in report.confirm_lines(tmp_path) if x.startswith("On validation")]
    assert verdict == [
        "On validation: adv: CAT.md defaults (-2.4% tuned vs defaults); "
        "cat: tuned (+12.5% tuned vs defaults)."
    ]
