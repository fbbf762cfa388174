"""Fixtures of the model tests; helpers live in ``tiny_models``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def beauty_1k(beauty_slice: Path, tmp_path_factory) -> Path:
    """The first 1,000 users of the Beauty slice (enough to beat a random ranker in one epoch)."""
    lines = beauty_slice.read_text().splitlines()[:1000]
    path = tmp_path_factory.mktemp("data1k") / "beauty_1k.txt"
    path.write_text("\n".join(lines) + "\n")
    return path
