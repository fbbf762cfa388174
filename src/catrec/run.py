"""Run folders: what a training run writes, and how it is read back.

    RUN_DIR/config.yaml     the full resolved config
    RUN_DIR/items.json      raw item id of each item index (index 0 = padding)
    RUN_DIR/popularity.json training-part count of each item index (the serving fallback)
    RUN_DIR/cascade.npz     cascade weights used by the run (adversarial modes)
    RUN_DIR/best.pt         best model weights (by validation NDCG@10)
    RUN_DIR/last.pt         full training state after the last finished epoch (for --resume)
    RUN_DIR/log.json        one record per epoch
    RUN_DIR/metrics.json    {"valid": {...}, "test": {...}} of the best model
    RUN_DIR/run.json        provenance: seed, git commit, versions, wall time, checkpoint hashes,
                            the dataset file (absolute path and sha256); ``resumed``: one entry
                            per resume, ``in_epoch`` 1-based (as in the messages), ``after_step``
                            the steps of that epoch already done (0: it resumed at its start)

Every file is written atomically (temporary file, fsync, rename). Checkpoints are loaded with
``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from catrec import __version__
from catrec.config import Config, config_changes, config_sha256, load_yaml, make_config
from catrec.data.registry import DATASETS, resolve_dataset
from catrec.errors import DataError, RunError
from catrec.models import build_model
from catrec.models.base import SequentialRecommender
from catrec.utils import sha256_file

CHECKPOINT_FORMAT = 1


def read_json(path: Path, expect: type | None = None) -> Any:
    """Parse a JSON file of a run folder.

    Raises:
        RunError: missing, unreadable, not JSON, or (with ``expect``) not of that type.
    """
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RunError(f"{path}: missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: not a readable JSON file ({exc})") from exc
    if expect is not None and not isinstance(obj, expect):
        raise RunError(f"{path}: expected a JSON {expect.__name__}, got {type(obj).__name__}")
    return obj


def load_run_config(run_dir: Path) -> Config:
    """The resolved config of a run folder.

    Raises:
        RunError: the folder or its ``config.yaml`` is missing.
        ConfigError: the stored config is invalid.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: not a run folder (does not exist)")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a run folder (no config.yaml)")
    return make_config(load_yaml(path), source=str(path))


def load_checkpoint(path: Path, expected_sha256: str | None = None) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check its format.

    Raises:
        RunError: missing, truncated, corrupted (hash mismatch), containing pickled code, or
            from an incompatible catrec checkpoint format.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: checkpoint missing")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise RunError(
            f"{path}: checkpoint is corrupted or was modified (sha256 differs from run.json)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RunError(
            f"{path}: refused to load: the checkpoint contains objects other than tensors and "
            f"plain data (possible code execution); {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise RunError(f"{path}: checkpoint is truncated or corrupted ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RunError(
            f"{path}: not a catrec checkpoint of format {CHECKPOINT_FORMAT} "
            f"(written by catrec {ckpt.get('catrec_version') if isinstance(ckpt, dict) else '?'})"
        )
    return ckpt


def check_compatible(ckpt: dict[str, Any], config: Config, n_items: int, path: Path) -> None:
    """Raise :class:`RunError` unless the checkpoint was written for this model and item count."""
    if ckpt.get("model") != config.model:
        raise RunError(
            f"{path}: checkpoint is for model {ckpt.get('model')!r}, run uses {config.model!r}"
        )
    if ckpt.get("n_items") != n_items:
        raise RunError(f"{path}: checkpoint has {ckpt.get('n_items')} items, dataset has {n_items}")


def checkpoint_header(config: Config, n_items: int) -> dict[str, Any]:
    """What every checkpoint records besides tensors: format, model, item count and the resolved
    config (its values and their hash), so that an edited ``config.yaml`` is noticed."""
    return {
        "format": CHECKPOINT_FORMAT,
        "catrec_version": __version__,
        "model": config.model,
        "n_items": n_items,
        "config": config.model_dump(),
        "config_sha256": config_sha256(config),
    }


def dataset_file(run_dir: Path, config: Config) -> Path:
    """The dataset file a run was trained on, found again from any shell.

    ``run.json`` records the file's absolute path and sha256 when the run starts. That file is
    used while it exists with that hash, whatever ``$CATREC_DATA_DIR`` says now; otherwise the
    run's ``dataset`` is resolved as for training (``$CATREC_DATA_DIR``, the cache, a download)
    and must have the recorded hash. Runs that recorded no file hash (catrec before 0.1.1)
    (started before the hash was recorded) resolve ``dataset``, falling back to the
    recorded source file.

    Raises:
        DataError: no file with the recorded hash was found; the message names the file and hash.
    """
    run_dir = Path(run_dir)
    meta_path = run_dir / "run.json"
    meta = read_json(meta_path, dict) if meta_path.is_file() else {}
    recorded, want = meta.get("dataset_path"), meta.get("dataset_file_sha256")
    if not recorded or not want:
        try:
            return resolve_dataset(config.dataset)
        except DataError:
            source = meta.get("dataset_source")
            if source and Path(source).is_file():
                return Path(source)
            raise
    recorded = Path(recorded)
    now = sha256_file(recorded) if recorded.is_file() else None
    if now == want:
        return recorded
    try:
        found: Path | None = resolve_dataset(config.dataset)
    except DataError:
        found = None
    if found is not None and found.resolve() != recorded and sha256_file(found) == want:
        return found
    state = "no longer exists" if now is None else f"has changed (its sha256 is now {now})"
    hint = "put that file back at that path"
    if config.dataset.lower() in DATASETS:
        hint += f", or set $CATREC_DATA_DIR to a folder holding {recorded.name} with that sha256"
    if found is not None and found.resolve() != recorded:
        other = sha256_file(found)
        hint += f" (the file found for {config.dataset!r}, {found}, has sha256 {other})"
    raise DataError(
        f"{run_dir} was trained on the dataset file {recorded} with sha256 {want}, which {state}; "
        f"{hint}"
    )


#: Config keys a run may change after a checkpoint: where its data lives (the content is checked
#: by its sha256 separately) and the device it runs on.
MOVABLE_KEYS = frozenset({"dataset", "device"})


def resume_config(run_dir: Path, values: dict[str, Any]) -> Config:
    """The config to resume ``run_dir`` with: its saved ``config.yaml``, with the keys that
    ``values`` sets on top.

    A key ``values`` leaves unset keeps the run's value, so a default changed since the run
    started (e.g. :data:`catrec.config.TUNED_DEFAULTS`) does not change a resumed run; a key set
    to another value than the run's is then refused by :func:`check_config` (unless it is one of
    :data:`MOVABLE_KEYS`).

    Raises:
        RunError: the folder or its ``config.yaml`` is missing.
        ConfigError: the merged values are invalid.
    """
    given = {k: v for k, v in values.items() if v is not None}  # None: unset
    return make_config(load_run_config(run_dir).model_dump() | given, source=str(run_dir))


def check_config(ckpt: dict[str, Any], config: Config, path: Path) -> None:
    """Raise :class:`RunError` if ``config`` differs from the config the checkpoint was written
    with (checkpoints from before catrec recorded it are not checked).

    The message names every changed key with its stored and current value; the keys of
    :data:`MOVABLE_KEYS` may change.
    """
    stored = ckpt.get("config")
    if not isinstance(stored, dict) or ckpt.get("config_sha256") == config_sha256(config):
        return
    changes = [c for c in config_changes(stored, config) if c.split(":")[0] not in MOVABLE_KEYS]
    if changes:
        raise RunError(
            f"{path}: the run's config.yaml was changed after this checkpoint was written "
            f"({'; '.join(changes)}); restore those values, or start a new run with --config "
            "and another --out"
        )


def load_weights(
    run_dir: Path, config: Config, n_items: int, meta: dict[str, Any], name: str = "best.pt"
) -> SequentialRecommender:
    """The model of ``config`` with the weights of ``RUN_DIR/name`` loaded, on the CPU.

    ``meta`` is the run's ``run.json``; the checkpoint's sha256 recorded there is verified.

    Raises:
        RunError: missing, corrupted or incompatible checkpoint, or a config.yaml edited since.
    """
    path = Path(run_dir) / name
    ckpt = load_checkpoint(path, meta.get("checkpoints", {}).get(name))
    check_compatible(ckpt, config, n_items, path)
    check_config(ckpt, config, path)
    model = build_model(config, n_items)
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as exc:
        raise RunError(f"{path}: weights do not fit the configured model: {exc}") from exc
    return model
