"""``catrec recommend`` and ``catrec serve``: the same top-10 as the Python API."""

from __future__ import annotations

import json

import httpx
import pytest
from serve_testutil import raw_test_histories, running_server

import catrec
from catrec.cli import main


def test_api_cli_and_http_give_the_same_top10(tiny_run, tiny_data, capsys, monkeypatch):
    _, histories, _ = raw_test_histories(tiny_data)
    history = histories[3]
    api = catrec.load(tiny_run).recommend(history, k=10)
    assert main(["recommend", str(tiny_run), "--history", " ".join(history), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    # `catrec serve` builds the app from its options and hands it to uvicorn.run: catch it there
    # and run it on a free loopback port (a subprocess would spend ~10 s importing torch)
    started = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: started.update(app=app, **kw))
    assert main(["serve", str(tiny_run), "--max-k", "50", "--root-path", "/recs"]) == 0
    assert started["host"] == "127.0.0.1" and started["root_path"] == "/recs"
    with (
        running_server(started["app"]) as url,
        httpx.Client(base_url=url, trust_env=False) as c,
    ):
        http = c.post("/recommend", json={"history": history, "k": 10}).json()
        assert c.get("/info").json()["limits"]["max_k"] == 50
    assert http["items"] == api.items == cli["items"]
    assert http["scores"] == pytest.approx(api.scores, abs=1e-6)


def test_history_table_and_fallback_note(tiny_run, capsys):
    assert main(["recommend", str(tiny_run), "--history", "", "--k", "3"]) == 0
    out = capsys.readouterr()
    assert "most popular" in out.err and len(out.out.strip().splitlines()) == 4
    assert main(["recommend", str(tiny_run), "--history", "i1 nope", "--strict"]) == 2
    assert "'nope'" in capsys.readouterr().err


def test_jsonl_in_and_out(tiny_run, tiny_data, tmp_path, capsys):
    users, histories, _ = raw_test_histories(tiny_data)
    src = tmp_path / "histories.jsonl"
    lines = [json.dumps({"user": u, "history": h}) for u, h in zip(users, histories, strict=True)]
    lines.insert(2, "")  # blank lines are skipped
    lines.append(json.dumps({"history": ["gone"]}))
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "recs.jsonl"
    args = ["recommend", str(tiny_run), "--input", str(src), "--output", str(out), "--k", "10"]
    with pytest.warns(UserWarning, match=r"1 unknown item ids.*'gone'"):
        assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    want = catrec.load(tiny_run).recommend_batch(histories, k=10)
    assert [r["user"] for r in rows] == [*users, None]
    assert [r["items"] for r in rows[:-1]] == [w.items for w in want]
    assert rows[-1]["fallback"] is True and rows[-1]["unknown"] == ["gone"]
    assert all(len(r["scores"]) == len(r["items"]) == 10 for r in rows)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"user": 1, "history": ["i1",', "not valid JSON"),
        ('["i1"]', "expected a JSON object"),
        ('{"user": 1, "history": "i1 i2"}', "'history' must be a list"),
        ('{"user": 1, "history": [1.5]}', "float"),
        ('{"user": 1, "items": []}', "unknown keys"),
        ('{"user": 1, "history": ["i1"], "history": ["i2"]}', "key 'history' given twice"),
    ],
)
def test_bad_lines_name_file_and_line(tiny_run, tmp_path, capsys, line, message):
    src = tmp_path / "h.jsonl"
    src.write_text('{"user": 0, "history": ["i1"]}\n' + line + "\n")
    out = tmp_path / "recs.jsonl"
    assert main(["recommend", str(tiny_run), "--input", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{src}, line 2" in err and message in err
    assert not out.exists() and not list(tmp_path.glob(".recs.jsonl.*"))  # atomic: nothing left


def test_usage_errors(tiny_run, tmp_path, capsys):
    assert main(["recommend", str(tiny_run)]) == 2
    assert main(["recommend", str(tiny_run), "--history", "i1", "--output", "x.jsonl"]) == 2
    assert main(["recommend", str(tmp_path / "nope"), "--history", "i1"]) == 2
    assert "not a run folder" in capsys.readouterr().err
    missing = ["recommend", str(tiny_run), "--input", str(tmp_path / "none.jsonl")]
    assert main([*missing, "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "none.jsonl: no such file" in capsys.readouterr().err
    same = tmp_path / "h.jsonl"
    same.write_text('{"user": "u", "history": ["i1"]}\n')
    assert main(["recommend", str(tiny_run), "--input", str(same), "--output", str(same)]) == 2
    assert "is the --input file" in capsys.readouterr().err
    assert same.read_text() == '{"user": "u", "history": ["i1"]}\n'  # left as it was


def test_serve_refuses_a_port_in_use(tiny_run):
    import socket

    import catrec
    from catrec.errors import ConfigError
    from catrec.serve.http import serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(catrec.load(tiny_run), host="127.0.0.1", port=port)
