"""Does bf16 pay on this CPU? Times the three products of the fused cross-entropy for one chunk
(256 positions x 12,101 items x d = 64, Beauty's size) in fp32 and bf16, interleaved, and prints
the medians and their ratio. Not a test.

    python benchmarks/bf16_matmul.py

bf16 is fast on CPUs with avx512_bf16 or AMX and on GPUs; on others it is emulated.
"""

from __future__ import annotations

import statistics
import time

import torch

from catrec.train.loop import cpu_has_native_bf16


def main(reps: int = 15) -> None:
    torch.manual_seed(0)
    h, w = torch.randn(256, 64), torch.randn(12101, 64)
    args = {"fp32": (h, w), "bf16": (h.bfloat16(), w.bfloat16())}
    times: dict[str, list[float]] = {k: [] for k in args}
    for _ in range(reps):
        for k, (a, b) in args.items():
            t0 = time.perf_counter()
            p = a @ b.T  # [256, V] logits
            p @ b  # grad of the hidden states
            p.T @ a  # grad of the table
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"native bf16 instructions: {cpu_has_native_bf16()}, {torch.get_num_threads()} threads")
    for k, v in med.items():
        print(f"{k}: {v * 1e3:.1f} ms (median of {reps})")
    print(f"bf16 / fp32: {med['bf16'] / med['fp32']:.2f}")


if __name__ == "__main__":
    main()
