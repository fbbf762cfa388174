"""Datasets by name: local lookup, cache, and downloads from a local server (never the network)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from catrec.data import registry
from catrec.data.registry import DATASETS, KnownDataset, resolve_dataset
from catrec.errors import DataError
from catrec.utils import sha256_file

TINY = b"1 1 2 3\n2 2 3 4\n"


class _Server:
    def __init__(self, root: Path):
        requests: list[str] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args):  # keep test output clean; record instead
                requests.append(self.path)

        self.requests = requests
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )


@pytest.fixture
def server(tmp_path, monkeypatch) -> Iterator[tuple[_Server, Path]]:
    """A local HTTP server for ``tmp_path/www``, set as ``$CATREC_DATA_URL``."""
    root = tmp_path / "www"
    (root / "data").mkdir(parents=True)
    srv = _Server(root)
    srv.thread.start()
    for var in ("NO_PROXY", "no_proxy"):  # a proxy from the environment must not intercept
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    monkeypatch.setenv("CATREC_DATA_URL", srv.url)
    try:
        yield srv, root / "data"
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(5)


@pytest.fixture
def empty_data_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "datadir"
    folder.mkdir()
    monkeypatch.setenv("CATREC_DATA_DIR", str(folder))
    return folder


@pytest.fixture
def tiny_known(monkeypatch) -> KnownDataset:
    known = KnownDataset("Tiny.txt", hashlib.sha256(TINY).hexdigest())
    monkeypatch.setitem(DATASETS, "tiny", known)
    return known


def _cache_files() -> list[str]:
    folder = registry.cache_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_known_datasets_and_default_url():
    # sha256 values and address from shared/data/README.md
    assert {k: (v.file, v.sha256) for k, v in DATASETS.items()} == {
        "beauty": (
            "Beauty.txt",
            "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
        ),
        "sports": (
            "Sports_and_Outdoors.txt",
            "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
        ),
        "toys": (
            "Toys_and_Games.txt",
            "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
        ),
        "yelp": ("Yelp.txt", "724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed"),
    }
    assert (
        registry.DEFAULT_URL == "https://raw.githubusercontent.com/salesforce/ICLRec/master/data/"
    )


def test_committed_slice_matches_its_readme(beauty_slice):
    readme = (beauty_slice.parent / "README.md").read_text(encoding="utf-8")
    assert f"`{sha256_file(beauty_slice)}`" in readme
    assert DATASETS["beauty"].sha256 in readme  # names the full file it was cut from


def test_names_resolve_in_the_data_dir_case_insensitively(beauty_by_name):
    assert resolve_dataset("beauty") == beauty_by_name
    assert resolve_dataset("BEAUTY") == resolve_dataset("Beauty") == beauty_by_name


def test_paths_resolve_to_themselves(tmp_path, monkeypatch):
    f = tmp_path / "mine.txt"
    f.write_bytes(TINY)
    assert resolve_dataset(str(f)) == f
    # an existing file named like a known dataset is a path, not the name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toys").write_bytes(TINY)
    assert resolve_dataset("toys") == Path("toys")


def test_unknown_name(tmp_path):
    with pytest.raises(DataError) as info:
        resolve_dataset("movielens")
    assert str(info.value) == (
        "dataset 'movielens': no such file, and not a known name "
        "(known: beauty, sports, toys, yelp)"
    )


def test_cache_is_used_when_the_data_dir_lacks_the_file(empty_data_dir, tiny_known):
    cached = registry.cache_dir() / "Tiny.txt"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(TINY)
    assert resolve_dataset("tiny") == cached  # $CATREC_DATA_URL is unreachable: no download


def test_data_dir_wins_over_the_cache(empty_data_dir, tiny_known):
    (empty_data_dir / "Tiny.txt").write_bytes(TINY)
    registry.cache_dir().mkdir(parents=True, exist_ok=True)
    (registry.cache_dir() / "Tiny.txt").write_bytes(TINY)
    assert resolve_dataset("tiny") == empty_data_dir / "Tiny.txt"


def test_no_download_when_not_allowed(empty_data_dir, tiny_known):
    with pytest.raises(DataError, match=r"dataset 'tiny' not found \(looked for .*Tiny\.txt and"):
        resolve_dataset("tiny", allow_download=False)
    assert _cache_files() == []


def test_download_over_http_then_cached(server, empty_data_dir, tiny_known):
    srv, www = server
    (www / "Tiny.txt").write_bytes(TINY)
    path = resolve_dataset("tiny")
    assert path == registry.cache_dir() / "Tiny.txt"
    assert path.read_bytes() == TINY
    assert _cache_files() == ["Tiny.txt"]  # no temporary file left behind
    assert srv.requests == ["/data/Tiny.txt"]
    (www / "Tiny.txt").unlink()
    assert resolve_dataset("tiny") == path  # from the cache: no second request
    assert srv.requests == ["/data/Tiny.txt"]


def test_checksum_mismatch_leaves_nothing_in_the_cache(server, empty_data_dir, tiny_known):
    _, www = server
    (www / "Tiny.txt").write_bytes(TINY + b"3 9 9\n")
    with pytest.raises(DataError) as info:
        resolve_dataset("tiny")
    msg = str(info.value)
    assert msg.startswith(f"checksum mismatch for {server[0].url}Tiny.txt: expected sha256 ")
    assert tiny_known.sha256 in msg and "the file was not cached" in msg
    assert _cache_files() == []


def test_http_error_leaves_nothing_in_the_cache(server, empty_data_dir, tiny_known):
    with pytest.raises(
        DataError, match=r"cannot download http://127\.0\.0\.1:\d+/data/Tiny\.txt: 404"
    ):
        resolve_dataset("tiny")
    assert _cache_files() == []


def test_yelp_is_downloaded_by_name(server, empty_data_dir):
    # The local file is not the real Yelp.txt, so the checksum check must refuse it.
    _, www = server
    (www / "Yelp.txt").write_bytes(TINY)
    with pytest.raises(DataError, match=r"checksum mismatch for http://127.*/data/Yelp\.txt"):
        resolve_dataset("yelp")
    assert _cache_files() == []


def test_download_from_a_file_url(tmp_path, monkeypatch, empty_data_dir, tiny_known):
    mirror = tmp_path / "a mirror"  # a space, percent-encoded in the URL
    mirror.mkdir()
    (mirror / "Tiny.txt").write_bytes(TINY)
    monkeypatch.setenv("CATREC_DATA_URL", mirror.as_uri())
    assert "%20" in mirror.as_uri()
    path = resolve_dataset("tiny")
    assert path.read_bytes() == TINY and _cache_files() == ["Tiny.txt"]


def test_file_url_to_a_missing_file(tmp_path, monkeypatch, empty_data_dir, tiny_known):
    monkeypatch.setenv("CATREC_DATA_URL", (tmp_path / "nothing").as_uri())
    with pytest.raises(DataError, match=r"cannot read file://.*/nothing/Tiny\.txt: No such file"):
        resolve_dataset("tiny")
    assert _cache_files() == []


def test_unreachable_server(empty_data_dir, tiny_known):
    # conftest points $CATREC_DATA_URL at a closed local port
    with pytest.raises(DataError, match=r"cannot download http://127\.0\.0\.1:9/unreachable/Tiny"):
        resolve_dataset("tiny")
    assert _cache_files() == []


def test_unsupported_scheme(monkeypatch, empty_data_dir, tiny_known):
    monkeypatch.setenv("CATREC_DATA_URL", "ftp://example.org/data")
    with pytest.raises(DataError, match=r"unsupported URL scheme 'ftp'; expected http://"):
        resolve_dataset("tiny")


def test_default_url_when_unset(monkeypatch, empty_data_dir):
    calls = []
    monkeypatch.delenv("CATREC_DATA_URL")
    monkeypatch.setattr(registry, "download", lambda url, dest, sha: calls.append((url, dest, sha)))
    resolve_dataset("sports")
    assert calls == [
        (
            "https://raw.githubusercontent.com/salesforce/ICLRec/master/data/Sports_and_Outdoors.txt",
            registry.cache_dir() / "Sports_and_Outdoors.txt",
            DATASETS["sports"].sha256,
        )
    ]
