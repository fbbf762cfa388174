"""Datasets by name: resolve in ``$CATREC_DATA_DIR``, then the user cache, else download.

Downloads come from the ICLRec repository (the address in ``shared/data/README.md``), are
verified against the sha256 below and cached in ``$CATREC_CACHE_DIR`` (default
``~/.cache/catrec``). ``$CATREC_DATA_URL`` overrides the base address (tests use a local server).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from catrec.errors import DataError
from catrec.utils import atomic_write_bytes


@dataclass(frozen=True)
class KnownDataset:
    file: str
    sha256: str


DATASETS: dict[str, KnownDataset] = {
    "beauty": KnownDataset(
        "Beauty.txt", "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8"
    ),
    "sports": KnownDataset(
        "Sports_and_Outdoors.txt",
        "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
    ),
    "toys": KnownDataset(
        "Toys_and_Games.txt", "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f"
    ),
    "yelp": KnownDataset("Yelp.txt", "724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed"),
}

DEFAULT_URL = "https://raw.githubusercontent.com/salesforce/ICLRec/master/data/"


def cache_dir() -> Path:
    """``$CATREC_CACHE_DIR`` or ``~/.cache/catrec``."""
    return Path(os.environ.get("CATREC_CACHE_DIR") or Path.home() / ".cache" / "catrec")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str) -> Path:
    """Download ``url`` (``http(s)://`` or ``file://``) to ``dest``, verifying its sha256.

    The file appears at ``dest`` only when complete and verified (temporary file and rename).

    Raises:
        DataError: the download failed or the checksum does not match.
    """
    import requests
    from tqdm.auto import tqdm

    if url.startswith("file://"):
        try:
            data = Path(url[len("file://") :]).read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {url}: {exc}") from exc
    else:
        try:
            with requests.get(url, stream=True, timeout=60) as resp:
                resp.raise_for_status()
                total = int(resp.headers.get("content-length") or 0) or None
                chunks = []
                with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                    for chunk in resp.iter_content(1 << 16):
                        chunks.append(chunk)
                        bar.update(len(chunk))
                data = b"".join(chunks)
        except requests.RequestException as exc:
            raise DataError(
                f"cannot download {url}: {exc}. Download it by hand and pass its path, "
                "or put it in $CATREC_DATA_DIR"
            ) from exc
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise DataError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}")
    atomic_write_bytes(dest, data)
    return dest


def resolve_dataset(name_or_path: str, *, allow_download: bool = True) -> Path:
    """Turn a dataset name (``beauty``, ``sports``, ``toys``, ``yelp``) or a path into a file path.

    A name is looked up as its file (e.g. ``Beauty.txt``) in ``$CATREC_DATA_DIR``, then in the
    cache; if absent it is downloaded and cached. Anything containing a path separator or an
    existing file is treated as a path.

    Raises:
        DataError: unknown name and no such file, or a failed download.
    """
    p = Path(name_or_path).expanduser()
    key = name_or_path.lower()
    if key in DATASETS and not p.is_file():
        known = DATASETS[key]
        env = os.environ.get("CATREC_DATA_DIR")
        if env and (Path(env) / known.file).is_file():
            return Path(env) / known.file
        cached = cache_dir() / known.file
        if cached.is_file():
            return cached
        if not allow_download:
            raise DataError(f"dataset {name_or_path!r} not found in $CATREC_DATA_DIR or cache")
        base = os.environ.get("CATREC_DATA_URL", DEFAULT_URL)
        return download(base.rstrip("/") + "/" + known.file, cached, known.sha256)
    if p.is_file():
        return p
    raise DataError(
        f"dataset {name_or_path!r}: no such file, and not a known name "
        f"(known: {', '.join(sorted(DATASETS))})"
    )
