"""The repository is self-contained: a fresh clone runs its tests with nothing beside it, and
the README, CI and the committed test data agree (issue 9)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_real_data_for_tests_is_committed_inside_the_repository(beauty_slice):
    assert beauty_slice.is_file()
    assert beauty_slice.resolve().is_relative_to(ROOT / "tests" / "fixtures")
    assert (beauty_slice.parent / "README.md").is_file()  # source, licence, cut, sha256


def test_no_test_reads_the_shared_data_folder():
    # ../shared/data is for benchmarks and studies; a fresh clone does not have it
    pattern = re.compile(r"""["']shared["']|["'][^"'\n]*\.\./shared|SHARED_DATA""")
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("*.py")
        if p.name != "test_repository.py" and pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = re.search(r"Tests \(what CI runs\): `([^`]+)`", readme).group(1)
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert command == "python -m pytest -q" and ci[-1] == command
    assert "real-data tests read ../shared/data" not in readme
    assert "tests/fixtures" in readme


def test_readme_run_folder_table_says_when_files_appear():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = {
        m.group(1): m.group(2) for m in re.finditer(r"^\| `([\w.]+)` \| (.*) \|$", readme, re.M)
    }
    assert "when the run ends" in rows["metrics.json"] and "catrec evaluate" in rows["metrics.json"]
    assert "time_partial" in rows["log.json"]
    assert "`in_epoch` 1-based" in rows["run.json"] and "dataset_path" in rows["run.json"]


def test_git_commit_is_the_checkout_s_unless_the_environment_names_it(monkeypatch):
    """A working tree copied to another machine (with a stale .git) is told its commit."""
    import subprocess

    from catrec.utils import GIT_COMMIT_ENV, git_commit

    monkeypatch.delenv(GIT_COMMIT_ENV, raising=False)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    assert git_commit() == (head or None)
    monkeypatch.setenv(GIT_COMMIT_ENV, " 0123abc ")
    assert git_commit() == "0123abc"
