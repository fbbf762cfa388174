"""Datasets by name: resolve in ``$CATREC_DATA_DIR``, then the user cache, else download.

Downloads come from the ICLRec repository (the address in ``shared/data/README.md``), are
verified against the sha256 below and cached in ``$CATREC_CACHE_DIR`` (default
``~/.cache/catrec``). ``$CATREC_DATA_URL`` overrides the base address (tests use a local server).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from catrec.errors import DataError


@dataclass(frozen=True)
class KnownDataset:
    """A dataset known by name: its file name (also the name under the download URL), sha256."""

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
    "yelp": KnownDataset(
        "Yelp.txt", "724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed"
    ),
}

DEFAULT_URL = "https://raw.githubusercontent.com/salesforce/ICLRec/master/data/"


def cache_dir() -> Path:
    """``$CATREC_CACHE_DIR`` or ``~/.cache/catrec``."""
    return Path(os.environ.get("CATREC_CACHE_DIR") or Path.home() / ".cache" / "catrec")


def _file_url_path(url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise DataError(f"{url}: file:// URLs must name a local file (file:///path/to/file)")
    return Path(urllib.request.url2pathname(parts.path))


def _chunks(url: str, dest: Path) -> Iterator[bytes]:
    """The bytes at ``url`` in blocks, with a progress bar for downloads (hide: TQDM_DISABLE=1)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "file":
        try:
            with open(_file_url_path(url), "rb") as fh:
                yield from iter(lambda: fh.read(1 << 20), b"")
        except OSError as exc:
            raise DataError(f"cannot read {url}: {exc.strerror or exc}") from exc
        return
    if scheme not in ("http", "https"):
        raise DataError(
            f"cannot download {url}: unsupported URL scheme {scheme!r}; expected http://, "
            "https:// or file:// (check $CATREC_DATA_URL)"
        )
    import requests
    from tqdm.auto import tqdm

    try:
        with requests.get(url, stream=True, timeout=60) as resp:
            resp.raise_for_status()
            total = int(resp.headers.get("content-length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                for chunk in resp.iter_content(1 << 16):
                    bar.update(len(chunk))
                    yield chunk
    except requests.RequestException as exc:
        raise DataError(
            f"cannot download {url}: {exc}. Download it by hand and pass its path, "
            "or put it in $CATREC_DATA_DIR"
        ) from exc


def download(url: str, dest: Path, sha256: str) -> Path:
    """Download ``url`` (``http(s)://`` or ``file://``) to ``dest``, verifying its sha256.

    The data streams into a temporary file next to ``dest``, which is renamed to ``dest`` only
    when complete and verified: ``dest`` is never partial, and nothing is left on failure.

    Raises:
        DataError: the download failed, the checksum does not match, or ``dest`` cannot be
            written.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise DataError(
            f"cannot write to the cache folder {dest.parent}: {exc.strerror or exc}; "
            "set $CATREC_CACHE_DIR to a writable folder"
        ) from exc
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as fh:
            for chunk in _chunks(url, dest):
                h.update(chunk)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        got = h.hexdigest()
        if got != sha256:
            raise DataError(
                f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}; "
                "the file was not cached"
            )
        os.replace(tmp, dest)
    except OSError as exc:
        raise DataError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def resolve_dataset(name_or_path: str, *, allow_download: bool = True) -> Path:
    """Turn a dataset name (``beauty``, ``sports``, ``toys``, ``yelp``) or a path into a file path.

    A name (any case) is looked up as its file (e.g. ``Beauty.txt``) in ``$CATREC_DATA_DIR``,
    then in the cache (:func:`cache_dir`); if absent it is downloaded from
    ``$CATREC_DATA_URL`` (default :data:`DEFAULT_URL`), verified and cached. An existing file
    of the same name as a known dataset wins: it is a path.

    Raises:
        DataError: unknown name and no such file, a name not found locally with
            ``allow_download=False``, or a failed download.
    """
    p = Path(name_or_path).expanduser()
    key = name_or_path.lower()
    if key in DATASETS and not p.is_file():
        known = DATASETS[key]
        searched = []
        env = os.environ.get("CATREC_DATA_DIR")
        if env:
            local = Path(env).expanduser() / known.file
            if local.is_file():
                return local
            searched.append(str(local))
        cached = cache_dir() / known.file
        if cached.is_file():
            return cached
        searched.append(str(cached))
        if not allow_download:
            raise DataError(
                f"dataset {name_or_path!r} not found (looked for {' and '.join(searched)}); "
                "allow the download, or put the file in $CATREC_DATA_DIR"
            )
        base = os.environ.get("CATREC_DATA_URL") or DEFAULT_URL
        return download(base.rstrip("/") + "/" + known.file, cached, known.sha256)
    if p.is_file():
        return p
    raise DataError(
        f"dataset {name_or_path!r}: no such file, and not a known name "
        f"(known: {', '.join(sorted(DATASETS))})"
    )
