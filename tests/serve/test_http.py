"""HTTP serving against a real uvicorn server on a loopback port (never any other address)."""

from __future__ import annotations

import asyncio
import json
import math
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serve_testutil import raw_test_histories, running_server

import catrec
from catrec.serve.http import MicroBatcher, ServerLimits, create_app

LIMITS = ServerLimits(
    max_history=40, max_k=20, max_histories=8, max_body_bytes=4096, batch_wait_ms=5.0
)


@pytest.fixture(scope="module")
def rec(tiny_run):
    return catrec.load(tiny_run)


@pytest.fixture(scope="module")
def server(rec):
    with running_server(create_app(rec, LIMITS)) as url:
        yield url


@pytest.fixture
def client(server):
    # trust_env=False: no proxy from the environment, the request goes to 127.0.0.1 only
    with httpx.Client(base_url=server, trust_env=False, timeout=30) as c:
        yield c
        assert c.get("/health").json() == {"status": "ok"}  # the server is still up


def test_health_info_and_docs(client, rec, tiny_run):
    info = client.get("/info").json()
    meta = json.loads((tiny_run / "run.json").read_text())
    assert info["model"] == "sasrec" and info["n_items"] == rec.n_items
    assert info["dataset_sha256"] == meta["dataset_sha256"]
    assert info["git_commit"] == meta["git_commit"]
    assert info["limits"]["max_k"] == 20
    schema = client.get("/openapi.json").json()
    assert "/recommend" in schema["paths"] and client.get("/docs").status_code == 200


def test_single_and_batch_equal_the_python_api(client, rec, tiny_data):
    _, histories, _ = raw_test_histories(tiny_data)
    want = rec.recommend(histories[0], k=10)
    got = client.post("/recommend", json={"history": histories[0], "k": 10}).json()
    assert got["items"] == want.items and got["scores"] == pytest.approx(want.scores, abs=1e-6)
    assert got["fallback"] is False and got["unknown"] == []
    batch = client.post("/recommend", json={"histories": histories[:5], "k": 3}).json()
    assert [r["items"] for r in batch["results"]] == [
        r.items for r in rec.recommend_batch(histories[:5], k=3)
    ]


def test_concurrent_requests_are_all_answered_correctly(client, rec, tiny_data):
    _, histories, _ = raw_test_histories(tiny_data)
    want = [r.items for r in rec.recommend_batch(histories, k=10)]

    def ask(i: int) -> bool:
        h = histories[i % len(histories)]
        r = client.post("/recommend", json={"history": h, "k": 10})
        return r.status_code == 200 and r.json()["items"] == want[i % len(histories)]

    before = client.get("/info").json()["forward_passes"]
    with ThreadPoolExecutor(16) as pool:
        ok = list(pool.map(ask, range(200)))
    assert all(ok)
    passes = client.get("/info").json()["forward_passes"] - before
    assert 1 <= passes <= 200


def test_micro_batcher_scores_concurrent_requests_in_one_pass(rec):
    async def go():
        batcher = MicroBatcher(rec, max_batch=64, wait_ms=20)
        await batcher.start()
        try:
            jobs = [
                batcher.submit([[f"i{i + 1}", f"i{i + 2}"]], 2 + i % 3, True) for i in range(10)
            ]
            out = await asyncio.gather(*jobs)
        finally:
            await batcher.stop()
        return out, batcher.batches

    out, passes = asyncio.run(go())
    assert passes == 1
    for i, (r,) in enumerate(out):
        assert r.items == rec.recommend([f"i{i + 1}", f"i{i + 2}"], k=2 + i % 3).items


def test_malformed_json_is_400(client):
    r = client.post(
        "/recommend", content=b'{"history": ["i1",', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]


def test_a_key_given_twice_is_400_not_the_last_value(client):
    body = b'{"history": ["i1"], "k": 2, "k": 3}'
    r = client.post("/recommend", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["detail"] == "malformed JSON body: key 'k' given twice"
    other = b'{"histories": [["i1"]], "k": 2, "exclude_history": true, "exclude_history": false}'
    r = client.post("/recommend", content=other, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "'exclude_history' given twice" in r.json()["detail"]
    ok = client.post("/recommend", json={"history": ["i1"], "k": 3})
    assert ok.status_code == 200 and len(ok.json()["items"]) == 3


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"history": "i1 i2"}, "history"),
        ({"history": ["i1", 2.5]}, "history"),
        ({"history": ["i1"], "k": "10"}, "k"),
        ({"history": ["i1"], "k": 0}, "k"),
        ({"history": ["i1"], "k": 21}, "max_k 20"),
        ({"history": ["i1"] * 41}, "at most 40"),
        ({"histories": [["i1"]] * 9}, "max_histories 8"),
        ({"history": ["i1"], "histories": [["i1"]]}, "exactly one"),
        ({}, "exactly one"),
        ({"history": ["i1"], "K": 3}, "K"),
        ([1, 2], "body"),
    ],
)
def test_invalid_requests_are_422(client, body, needle):
    r = client.post("/recommend", json=body)
    assert r.status_code == 422, r.text
    assert needle in json.dumps(r.json())


def test_unknown_ids_dropped_or_rejected(client, rec):
    r = client.post("/recommend", json={"history": ["i1", "nope", 7], "k": 5}).json()
    assert r["unknown"] == ["nope", "7"] and r["items"] == rec.recommend(["i1"], k=5).items
    r = client.post("/recommend", json={"history": ["i1", "nope"], "strict": True})
    assert r.status_code == 422 and "'nope'" in r.json()["detail"]


def test_empty_history_is_the_popularity_fallback(client, rec):
    r = client.post("/recommend", json={"history": [], "k": 4}).json()
    want = rec.recommend([], k=4)
    assert r["fallback"] is True and r["items"] == want.items
    assert all(math.isfinite(s) for s in r["scores"])


def test_oversized_body_is_413(client):
    body = json.dumps({"history": ["i1"] * 3000}).encode()  # > 4096 bytes
    r = client.post("/recommend", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "4096" in r.json()["detail"]

    def chunks():  # no Content-Length: chunked transfer
        yield b'{"history": ['
        for _ in range(1000):
            yield b'"i1",'
        yield b'"i1"]}'

    r = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
