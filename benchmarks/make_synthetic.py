"""Write a synthetic sequence file: a large catalogue with Zipf-like popularity (not a test).

    python benchmarks/make_synthetic.py --items 1000000 --users 200000 --out /tmp/synthetic-1m.txt

Format as the shared datasets (``user item item ...``, one line per user). Sequence lengths are
5..50 with a long tail (a discretised log-normal, median about 9, as in the Amazon files); items
are drawn with probability proportional to ``1 / rank ** alpha`` over a random permutation of the
ids, and then every item is written once at a random position, so that the catalogue holds
exactly ``--items`` items (needs at least that many interactions).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def synthetic_sequences(
    n_items: int, n_users: int, alpha: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(lengths [U], items [sum(lengths)])``: item ids ``1..n_items``, every id at least once.

    Raises:
        ValueError: fewer interactions than items (the catalogue could not be complete).
    """
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(np.log(9.0), 0.6, n_users)), 5, 50).astype(np.int64)
    total = int(lengths.sum())
    if total < n_items:
        raise ValueError(f"{total} interactions cannot hold {n_items} items; add users")
    weights = 1.0 / np.arange(1, n_items + 1, dtype=np.float64) ** alpha
    cdf = np.cumsum(weights)
    ranks = np.searchsorted(cdf, rng.random(total) * cdf[-1], side="right")  # [total], 0-based
    ids = rng.permutation(n_items) + 1  # popularity rank -> item id
    items = ids[np.minimum(ranks, n_items - 1)]
    items[rng.choice(total, size=n_items, replace=False)] = np.arange(1, n_items + 1)
    return lengths, items


def write_sequences(path: Path, lengths: np.ndarray, items: np.ndarray) -> None:
    """One line per user: ``u<index> item item ...`` in order."""
    ends = np.cumsum(lengths)
    text = items.astype(str)
    with open(path, "w") as f:
        start = 0
        for u, end in enumerate(ends):
            f.write(f"{u + 1} " + " ".join(text[start:end]) + "\n")
            start = end


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--alpha", type=float, default=1.0, help="Zipf exponent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    t0 = time.perf_counter()
    lengths, items = synthetic_sequences(args.items, args.users, args.alpha, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_sequences(args.out, lengths, items)
    print(
        f"{args.out}: {args.users} users, {args.items} items, {len(items)} interactions, "
        f"length median {int(np.median(lengths))} max {lengths.max()}, "
        f"{time.perf_counter() - t0:.1f} s"
    )


if __name__ == "__main__":
    main()
