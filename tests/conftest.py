"""Shared fixtures: the real datasets live in ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()
BEAUTY = SHARED_DATA / "Beauty.txt"


# Tests use small tensors: one torch thread is as fast and avoids oversubscribing the 2 CI cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """Datasets by name come from ../shared/data; the cache is private; no network address."""
    monkeypatch.setenv("CATREC_DATA_DIR", str(SHARED_DATA))
    monkeypatch.setenv("CATREC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("CATREC_DATA_URL", "http://127.0.0.1:9/unreachable")
    os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def beauty_slice(tmp_path_factory) -> Path:
    """The first 2,000 users of the real Beauty file (a slice, written to a temp folder)."""
    if not BEAUTY.is_file():
        pytest.fail(f"real dataset missing: {BEAUTY} (tests read ../shared/data)")
    lines = BEAUTY.read_text().splitlines()[:2000]
    path = tmp_path_factory.mktemp("data") / "beauty_slice.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def beauty_tiny(tmp_path_factory) -> Path:
    """The first 300 users of the real Beauty file, for multi-epoch tests."""
    lines = BEAUTY.read_text().splitlines()[:300]
    path = tmp_path_factory.mktemp("data") / "beauty_tiny.txt"
    path.write_text("\n".join(lines) + "\n")
    return path
