"""Shared fixtures. Real data comes from a slice committed under tests/fixtures/ (see its
README): the tests never read ../shared/data, so a fresh clone with nothing beside it passes."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
BEAUTY_SLICE = FIXTURES / "beauty-first2000.txt"  # the first 2,000 users of Beauty.txt


# Tests use small tensors: one torch thread is as fast and avoids oversubscribing the 2 CI cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No dataset by name unless a test puts one there; a private cache; no network address."""
    monkeypatch.setenv("CATREC_DATA_DIR", str(tmp_path_factory.mktemp("datadir")))
    monkeypatch.setenv("CATREC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("CATREC_DATA_URL", "http://127.0.0.1:9/unreachable")
    os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def beauty_slice() -> Path:
    """The first 2,000 users of the real Beauty file (committed, read-only: never write to it)."""
    return BEAUTY_SLICE


@pytest.fixture(scope="session")
def beauty_tiny(tmp_path_factory) -> Path:
    """The first 300 users of the real Beauty file, for multi-epoch tests."""
    lines = BEAUTY_SLICE.read_text().splitlines()[:300]
    path = tmp_path_factory.mktemp("data") / "beauty_tiny.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def beauty_by_name(tmp_path, monkeypatch) -> Path:
    """``$CATREC_DATA_DIR`` holding the slice as ``Beauty.txt``, so the name ``beauty`` finds it."""
    folder = tmp_path / "named"
    folder.mkdir()
    path = folder / "Beauty.txt"
    path.write_bytes(BEAUTY_SLICE.read_bytes())
    monkeypatch.setenv("CATREC_DATA_DIR", str(folder))
    return path


@pytest.fixture
def load_benchmark():
    """Loader of a script under ``benchmarks/`` (not a package): ``load_benchmark("study")``
    imports ``benchmarks/study.py`` as module ``benchmarks_study`` (registered in
    ``sys.modules``, where its dataclasses look themselves up)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(
            f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load
