"""Helpers of the serving tests (imported as ``serve_testutil``): tiny data and runs."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from catrec.config import make_config
from catrec.train.loop import Trainer

N_USERS, N_ITEMS, MAX_LEN = 40, 50, 8


def write_tiny_dataset(path: Path) -> Path:
    """40 users over 50 items with raw ids ``i1..i50``: each user walks forward through items,
    so one epoch learns something; users 1..5 have histories longer than ``MAX_LEN``."""
    lines = []
    for u in range(1, N_USERS + 1):
        start = (u * 7) % N_ITEMS
        n = 5 + u % 7 + (MAX_LEN + 4 if u <= 5 else 0)
        items = [f"i{(start + 2 * i) % N_ITEMS + 1}" for i in range(n)]
        lines.append(" ".join([f"u{u}", *items]))
    path.write_text("\n".join(lines) + "\n")
    return path


def train_tiny_run(run_dir: Path, data: Path, model: str = "sasrec") -> Path:
    """Train ``model`` for one epoch on ``data`` into ``run_dir`` (about a second)."""
    cfg = make_config(
        {
            "dataset": str(data),
            "model": model,
            "mode": "standard",
            "max_len": MAX_LEN,
            "hidden_size": 16,
            "n_heads": 2,
            "epochs": 1,
            "batch_size": 16,
        }
    )
    Trainer(cfg, run_dir, progress=False).fit()
    return run_dir


def raw_test_histories(data: Path) -> tuple[list[str], list[list[str]], list[str]]:
    """Users, their histories before the test target (raw ids) and the test targets."""
    users, histories, targets = [], [], []
    for line in data.read_text().splitlines():
        user, *items = line.split()
        users.append(user)
        histories.append(items[:-1])
        targets.append(items[-1])
    return users, histories, targets


@contextlib.contextmanager
def running_server(app) -> Iterator[str]:
    """Run ``app`` with a real uvicorn server on a free loopback port; yield its base URL.

    The socket is bound here (port 0: the OS picks a free port) and handed to uvicorn, so there
    is no race for the port; the server is always shut down on exit.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
