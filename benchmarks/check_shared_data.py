"""Check the full datasets in ../shared/data against their README (counts and sha256).

Not a test (the tests use the committed slice in tests/fixtures/): run it by hand before a
benchmark or a study on the full files.

    python benchmarks/check_shared_data.py [--data-dir ../shared/data]

Prints one row per file and exits with status 1 if any file is missing or differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from catrec.data import read_sequence_file
from catrec.data.registry import DATASETS
from catrec.utils import sha256_file

# users, interactions, items, longest sequence (shared/data/README.md)
EXPECTED = {
    "beauty": (22363, 198502, 12101, 204),
    "sports": (35598, 296337, 18357, 296),
    "toys": (19412, 167597, 11924, 550),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--data-dir", type=Path, default=root / ".." / "shared" / "data")
    args = parser.parse_args()
    ok = True
    print(f"{'file':<26} {'users':>7} {'inter.':>8} {'items':>6} {'longest':>7}  sha256")
    for name, want in EXPECTED.items():
        path = args.data_dir / DATASETS[name].file
        if not path.is_file():
            print(f"{path.name:<26} missing ({path})")
            ok = False
            continue
        data = read_sequence_file(path)
        got = (data.n_users, data.n_interactions, data.n_items, int(data.lengths.max()))
        sha_ok = sha256_file(path) == DATASETS[name].sha256
        # S3-Rec / ICLRec ids are already contiguous: every token maps to itself
        ids_ok = data.item_tokens[1:].tolist() == [str(i) for i in range(1, data.n_items + 1)]
        good = got == want and sha_ok and ids_ok and int(data.lengths.min()) == 5
        ok &= good
        print(
            f"{path.name:<26} {got[0]:>7} {got[1]:>8} {got[2]:>6} {got[3]:>7}  "
            f"{'ok' if sha_ok else 'DIFFERS'}{'' if good else '  <- differs from the README'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
