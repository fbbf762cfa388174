"""Helpers for the data tests: tiny files written to a temp folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def write(tmp_path) -> Callable[[str, str | bytes], Path]:
    """``write(name, content)`` puts ``content`` (text as-is, no newline translation) in a file."""

    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return _write
