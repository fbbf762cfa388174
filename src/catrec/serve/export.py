"""Export a run's model as a TorchScript or ONNX scorer, for serving outside Python.

The exported graph maps left-padded item windows to masked scores, exactly the evaluator's scores
(:func:`catrec.evaluate.score_users`, without the padding trim, which the model contract makes a
no-op)::

    item_ids  int64 [B, L]          L = max_len, 0 = padding on the left, most recent item last
    scores    float32 [B, n_items + 1]  column 0 (padding) and, by default, the window's items
                                        are -inf; rank by descending score, ties by lower index

Raw ids map to indices through ``items.json`` (written next to the model, with ``export.json``
describing these conventions). BERT4Rec's mask token is appended inside the graph.
"""

from __future__ import annotations

import io
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from catrec.errors import CatrecError, RunError
from catrec.evaluate import mask_scores
from catrec.models.base import SequentialRecommender, items_read
from catrec.serve.recommender import load
from catrec.utils import atomic_write_bytes, atomic_write_json

FORMATS = {"torchscript": "model.pt", "onnx": "model.onnx"}
ONNX_OPSET = 17


class ScoringModule(nn.Module):
    """Traceable scorer: ``item_ids [B, L]`` -> masked next-item scores ``[B, n_items + 1]``."""

    def __init__(self, model: SequentialRecommender, exclude_history: bool = True) -> None:
        super().__init__()
        self.model = model.eval()
        self.exclude_history = exclude_history

    def forward(self, item_ids: Tensor) -> Tensor:
        scores = self.model.predict(item_ids)  # [B, n_items + 1]
        return mask_scores(scores, items_read(self.model, item_ids), self.exclude_history)


def example_input(model: SequentialRecommender) -> Tensor:
    """``[2, L]`` windows used for tracing: one left-padded row, one full row.

    A padded row makes GRU4Rec's trace take its general path (the one for padded batches, which
    is also exact for full rows); the traced graph then serves any mix of rows.
    """
    L = model.max_len
    x = torch.arange(1, L + 1, dtype=torch.long).remainder(model.n_items).add(1).repeat(2, 1)
    x[0, : L // 2] = 0
    return x


def _torchscript_bytes(module: ScoringModule, example: Tensor) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # expected: shape-dependent Python values become constants (L is fixed), and
        # torch.jit.trace is deprecated in favour of torch.export, which cannot yet export
        # GRU4Rec's data-dependent branch
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(module, example, check_trace=False), buf)
    return buf.getvalue()


def _fix_bool_eyelike(model: Any) -> None:
    """Compute boolean ``EyeLike`` nodes (``torch.eye(dtype=bool)``; ONNX Runtime has no kernel
    for them) in float: ``Cast(float) -> EyeLike(float) -> Cast(bool)``."""
    import onnx
    from onnx import TensorProto, helper

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    }
    out = []
    for n, node in enumerate(model.graph.node):
        if node.op_type != "EyeLike" or types.get(node.output[0]) != TensorProto.BOOL:
            out.append(node)
            continue
        src, dst = node.input[0], node.output[0]
        as_float = helper.make_node("Cast", [src], [f"{src}_f{n}"], to=TensorProto.FLOAT)
        eye = helper.make_node("EyeLike", [f"{src}_f{n}"], [f"{dst}_f{n}"], dtype=TensorProto.FLOAT)
        back = helper.make_node("Cast", [f"{dst}_f{n}"], [dst], to=TensorProto.BOOL)
        out += [as_float, eye, back]
    del model.graph.node[:]
    model.graph.node.extend(out)
    onnx.checker.check_model(model)


def _onnx_bytes(module: ScoringModule, example: Tensor) -> bytes:
    try:
        import onnx
    except ImportError as exc:
        raise CatrecError(
            "ONNX export needs the onnx package: pip install 'catrec[export]'"
        ) from exc

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        try:
            torch.onnx.export(
                module,
                (example,),
                buf,
                dynamo=False,  # the torch.export path cannot trace GRU4Rec's data-dependent branch
                input_names=["item_ids"],
                output_names=["scores"],
                dynamic_axes={"item_ids": {0: "batch"}, "scores": {0: "batch"}},
                opset_version=ONNX_OPSET,
            )
        except torch.onnx.errors.OnnxExporterError as exc:
            raise RunError(
                f"ONNX export of {type(module.model).__name__} failed: {str(exc).splitlines()[0]}"
                "; use --format torchscript"
            ) from exc
    model = onnx.load_from_string(buf.getvalue())
    _fix_bool_eyelike(model)
    return model.SerializeToString()


def export_model(
    run_dir: str | Path,
    fmt: str,
    out_dir: str | Path | None = None,
    *,
    checkpoint: str = "best",
    exclude_history: bool = True,
) -> Path:
    """Write ``model.pt`` (TorchScript) or ``model.onnx``, ``items.json`` and ``export.json``.

    Args:
        run_dir: a finished run folder.
        fmt: ``"torchscript"`` or ``"onnx"``.
        out_dir: destination folder [default: ``RUN_DIR/export``].
        exclude_history: bake the history mask into the graph (as ``catrec evaluate``).

    Returns:
        the path of the written model file.

    Raises:
        ValueError: unknown format.
        CatrecError: ONNX export without the onnx package.
        RunError: unreadable run folder, or a model the ONNX exporter cannot handle (an
            operator it does not support; the message names it and suggests TorchScript).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "export"
    rec = load(run_dir, checkpoint)
    module = ScoringModule(rec.model, exclude_history)
    example = example_input(rec.model)
    if fmt == "torchscript":
        data = _torchscript_bytes(module, example)
    else:
        data = _onnx_bytes(module, example)
    path = out_dir / FORMATS[fmt]
    atomic_write_bytes(path, data)
    shutil.copyfile(run_dir / "items.json", out_dir / "items.json")
    atomic_write_json(
        out_dir / "export.json",
        {
            "format": fmt,
            "file": path.name,
            "input": {"name": "item_ids", "dtype": "int64", "shape": ["batch", rec.max_len]},
            "output": {"name": "scores", "dtype": "float32", "shape": ["batch", rec.n_items + 1]},
            "padding": "id 0, on the left; the most recent item in the last column",
            "exclude_history": exclude_history,
            "ranking": "descending score, ties by lower item index; -inf columns are masked",
            "items": "items.json: raw id of each item index (index 0 = padding)",
            **{k: v for k, v in rec.info.items() if k != "run_dir"},
        },
    )
    return path
