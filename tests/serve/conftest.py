"""Fixtures of the serving tests: tiny runs trained for one epoch through the real Trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_testutil import train_tiny_run, write_tiny_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("serve-data") / "tiny.txt")


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """A finished SASRec run folder on :func:`tiny_data`."""
    return train_tiny_run(tmp_path_factory.mktemp("serve-runs") / "sasrec", tiny_data)


@pytest.fixture(scope="session")
def tiny_runs(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """One finished run folder per model on :func:`tiny_data` (SASRec is :func:`tiny_run`)."""
    root = tmp_path_factory.mktemp("serve-runs-all")
    return {m: train_tiny_run(root / m, tiny_data, m) for m in ("bert4rec", "gru4rec")}
