"""One rank of a test DDP job: ``python ddp_worker.py OUT_PREFIX [KILL_AT_STEP] -- CLI ARGS``.

Runs ``catrec.cli.main(CLI ARGS)`` under the torchrun-like environment the test sets
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), records the model's
flattened weights after every optimiser step into ``OUT_PREFIX-rank<R>.pt``, and, when
``KILL_AT_STEP`` is given, kills rank 1 with SIGKILL after that many steps (a crashed rank).
"""

from __future__ import annotations

import os
import signal
import sys

import torch

from catrec.cli import main


def run(argv: list[str]) -> int:
    cut = argv.index("--")
    prefix, kill_at = argv[0], int(argv[1]) if cut > 1 else None
    rank = int(os.environ.get("RANK", "0"))
    torch.set_num_threads(1)
    history: list[torch.Tensor] = []
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        params = [p for g in self.param_groups for p in g["params"]]
        history.append(torch.cat([p.detach().reshape(-1) for p in params]).clone())
        if kill_at is not None and rank == 1 and len(history) == kill_at:
            save()
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    def save():
        torch.save(torch.stack(history) if history else torch.zeros(0), f"{prefix}-rank{rank}.pt")

    torch.optim.Adam.step = step
    try:
        return main(argv[cut + 1 :])
    finally:
        save()


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
