"""Bounded loopback load test of ``catrec serve`` (prints a table, writes JSON).

Not a test: run it by hand. It starts ``catrec serve RUN_DIR`` as a subprocess on a free
127.0.0.1 port, sends a fixed number of requests from ``--threads`` client threads for each
scenario (one history per request from one thread, then from all threads, then ``--batch``
histories per request from all threads), and reports requests
and histories per second and the p50 / p99 request latency. Nothing leaves the machine.

    python benchmarks/serve_load.py /tmp/serve-beauty-run --threads 16 --requests 2000 --batch 32

Histories are drawn (seeded) from the run's own items, with lengths uniform in 1..max_len, so no
dataset file is needed. The server is always stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from catrec.utils import atomic_write_json, git_commit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _histories(run_dir: Path, n: int, seed: int) -> list[list[str]]:
    items = json.loads((run_dir / "items.json").read_text())[1:]
    max_len = int(
        next(
            line.split(":")[1]
            for line in (run_dir / "config.yaml").read_text().splitlines()
            if line.startswith("max_len:")
        )
    )
    rng = random.Random(seed)
    return [rng.sample(items, rng.randint(1, max_len)) for _ in range(n)]


def _wait_ready(client: httpx.Client, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"catrec serve exited with status {proc.returncode}")
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("catrec serve did not answer /health in time")


def _scenario(
    url: str, bodies: list[dict], threads: int, name: str, per_request: int
) -> dict[str, float | int | str]:
    local = threading.local()

    def send(body: dict) -> float:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, trust_env=False, timeout=60)
        t0 = time.perf_counter()
        r = local.client.post("/recommend", json=body)
        dt = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"{name}: status {r.status_code}: {r.text[:200]}")
        return dt

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        latencies = np.array(list(pool.map(send, bodies)))
    wall = time.perf_counter() - t0
    return {
        "scenario": name,
        "requests": len(bodies),
        "histories_per_request": per_request,
        "client_threads": threads,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(bodies) / wall, 1),
        "histories_per_s": round(len(bodies) * per_request / wall, 1),
        "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 2),
        "max_ms": round(1000 * float(latencies.max()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--threads", type=int, default=16, help="client threads")
    parser.add_argument("--requests", type=int, default=2000, help="requests per scenario")
    parser.add_argument("--batch", type=int, default=32, help="histories per batched request")
    parser.add_argument("--batch-requests", type=int, default=200, help="batched requests")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--server-threads",
        type=int,
        default=1,
        help="torch threads of the server (0: torch default)",
    )
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("docs/benchmarks/serve.json"))
    args = parser.parse_args()

    histories = _histories(args.run_dir, max(args.requests, 1000), args.seed)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "catrec.cli", "serve", str(args.run_dir), "--port", str(port)]
    cmd += ["--no-access-log", "--batch-wait-ms", str(args.batch_wait_ms)]
    if args.server_threads:
        cmd += ["--threads", str(args.server_threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    rows = []
    try:
        with httpx.Client(base_url=url, trust_env=False, timeout=60) as client:
            _wait_ready(client, proc)
            info = client.get("/info").json()
            for h in histories[:50]:  # warm-up
                client.post("/recommend", json={"history": h, "k": args.k})
        n = args.requests
        single = [{"history": histories[i % len(histories)], "k": args.k} for i in range(n)]
        rows.append(_scenario(url, single[: args.requests // 10], 1, "single, 1 thread", 1))
        rows.append(_scenario(url, single, args.threads, "single", 1))
        n_batched = args.batch_requests
        batched = [
            {
                "histories": [
                    histories[(i * args.batch + j) % len(histories)] for j in range(args.batch)
                ],
                "k": args.k,
            }
            for i in range(n_batched)
        ]
        rows.append(_scenario(url, batched, args.threads, f"batch of {args.batch}", args.batch))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    cols = ["scenario", "client_threads", "requests", "requests_per_s", "histories_per_s"]
    cols += ["p50_ms", "p99_ms"]
    print(" | ".join(f"{c:>16}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]!s:>16}" for c in cols))
    load = os.getloadavg()
    atomic_write_json(
        args.json,
        {
            "command": " ".join(["python", *sys.argv]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "git_commit": git_commit(),
            "run": {k: info.get(k) for k in ("model", "mode", "n_items", "max_len", "dataset")},
            "host": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "loadavg_1_5_15_at_end": [round(x, 2) for x in load],
            },
            "k": args.k,
            "batch_wait_ms": args.batch_wait_ms,
            "server_threads": args.server_threads or "torch default",
            "results": rows,
        },
    )
    print(f"written: {args.json}  (1-min load average at the end: {load[0]:.2f})")


if __name__ == "__main__":
    main()
