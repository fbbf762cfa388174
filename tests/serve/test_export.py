"""``catrec export``: TorchScript and ONNX scorers rank exactly like catrec."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from serve_testutil import raw_test_histories

import catrec
from catrec.cli import main
from catrec.errors import RunError
from catrec.fullrank import top_k
from catrec.serve.export import export_model


def _inputs(rec, tiny_data) -> tuple[np.ndarray, list]:
    _, histories, _ = raw_test_histories(tiny_data)
    windows, _ = rec.encode(histories)  # [U, L], left-padded (as the exported graph expects)
    return windows, rec.recommend_batch(histories, k=10)


def _check_top10(scores: torch.Tensor, rec, want: list) -> None:
    ids, _ = top_k(scores, 10)
    assert [[rec.item_tokens[i] for i in row] for row in ids.tolist()] == [w.items for w in want]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("model", ["sasrec", "bert4rec", "gru4rec"])
def test_torchscript_top10_equals_catrec(model, tiny_run, tiny_runs, tiny_data, tmp_path):
    run = tiny_run if model == "sasrec" else tiny_runs[model]
    path = export_model(run, "torchscript", tmp_path)
    rec = catrec.load(run)
    windows, want = _inputs(rec, tiny_data)
    scores = torch.jit.load(str(path))(torch.as_tensor(windows))
    assert scores.shape == (len(windows), rec.n_items + 1)
    _check_top10(scores, rec, want)
    meta = json.loads((tmp_path / "export.json").read_text())
    assert meta["input"]["shape"] == ["batch", rec.max_len] and meta["model"] == model
    assert json.loads((tmp_path / "items.json").read_text()) == rec.item_tokens


@pytest.mark.parametrize("model", ["sasrec", "bert4rec", "gru4rec"])
def test_onnx_top10_equals_catrec(model, tiny_run, tiny_runs, tiny_data, tmp_path):
    import onnx  # test extras: onnx, onnxruntime
    import onnxruntime as ort

    run = tiny_run if model == "sasrec" else tiny_runs[model]
    path = export_model(run, "onnx", tmp_path)
    onnx.checker.check_model(onnx.load(str(path)))
    rec = catrec.load(run)
    windows, want = _inputs(rec, tiny_data)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores = session.run(["scores"], {"item_ids": windows})[0]
    _check_top10(torch.as_tensor(scores), rec, want)


def test_onnx_exporter_failure_is_a_clear_error(tiny_runs, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise torch.onnx.errors.OnnxExporterError("Unsupported: ONNX export of operator X\nGraph")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(RunError, match=r"^ONNX export of GRU4Rec failed: Unsupported: .* X; use"):
        export_model(tiny_runs["gru4rec"], "onnx", tmp_path)
    assert not (tmp_path / "model.onnx").exists()


def test_cli_export(tiny_run, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["export", str(tiny_run), "--format", "torchscript", "--out", str(out)]) == 0
    assert (out / "model.pt").is_file() and str(out / "model.pt") in capsys.readouterr().out
    assert main(["export", str(tiny_run), "--format", "pickle"]) == 2
