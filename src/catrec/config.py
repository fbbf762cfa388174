"""Run configuration: one frozen, validated object; the resolved config is saved with every run.

Every option of CAT.md is a field here, a ``catrec train`` flag of the same name with dashes and a
key of the same name in the YAML config. Unknown keys, wrong types and out-of-range values are
rejected before any work, with the key named.

YAML files are read by the YAML 1.2 core schema (ruamel.yaml, pure Python): ``1e-3`` is a number,
``on`` / ``yes`` / ``no`` are strings, ``010`` is ten and ``1_000`` is a string (which the strict
type check then rejects for a numeric key). A key given twice in one file is an error naming both
lines. :func:`to_yaml` writes with the same schema, so a written config reads back exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.resolver import VersionedResolver

from catrec.errors import ConfigError

MODELS = ("sasrec", "gru4rec", "bert4rec")

#: The defaults of the adversarial settings, per mode: the best trials of the search on the
#: validation split of Beauty / SASRec / seed 0 (issue 11; Optuna TPE + median pruner, 21 adv and
#: 20 cat completed or pruned trials; best validation NDCG@10 adv 0.0719, cat 0.0717, standard
#: 0.0701): ``docs/results/study/tune/beauty-sasrec-seed0/tune.json``. Exact trial values, so
#: that a default run reproduces the study's cell. ``standard`` uses the cat values (it ignores
#: them) and the standard baseline's patience choice of the same file. Used for every model.
TUNED_DEFAULTS: dict[str, dict[str, Any]] = {
    "cat": {
        "eps": 0.2028519425405633,
        "eps_item": 0.0259516328719906,
        "lambda_1": 0.4335201350607766,
        "lambda_2": 2.253161647388985,
        "adv_warmup_epochs": 0,
        "scaling": "proportional",
        "shared_dropout": False,
        "patience": 10,
    },
    "adv": {
        "eps": 0.12635598137381665,
        "eps_item": 0.3,  # unused by adv (level 1 only); the value its study cells record
        "lambda_1": 2.153628685592504,
        "lambda_2": 0.0,
        "adv_warmup_epochs": 20,
        "scaling": "none",
        "shared_dropout": False,
        "patience": 10,
    },
}
TUNED_DEFAULTS["standard"] = TUNED_DEFAULTS["cat"] | {"patience": 5}

#: CAT.md §3's starting defaults (the defaults before the search; shared dropout masks as in
#: the fidelity issue), for the runs that compare against them (``benchmarks/study.py``).
CAT_MD_DEFAULTS: dict[str, dict[str, Any]] = {
    "cat": {
        "eps": 0.3,
        "eps_item": 0.3,
        "lambda_1": 1.0,
        "lambda_2": 1.0,
        "adv_warmup_epochs": 10,
        "scaling": "proportional",
        "shared_dropout": True,
        "patience": 5,
    },
}
CAT_MD_DEFAULTS["adv"] = CAT_MD_DEFAULTS["cat"] | {"lambda_2": 0.0, "scaling": "none"}


#: The keys only the adversarial modes (``adv``, ``cat``) read: standard training ignores them,
#: so they neither change its epochs (warm-up sharing) nor mean anything on ``--mode standard``.
ADVERSARIAL_KEYS = frozenset(
    {
        "eps",
        "eps_item",
        "eps_absolute",
        "lambda_1",
        "lambda_2",
        "lambda_replace",
        "replace_adv_prob",
        "adv_warmup_epochs",
        "cascade",
        "scaling",
        "c_max",
        "gamma",
        "shared_dropout",
        "select_from",
        "adv_objective",
    }
)


class Config(BaseModel):
    """All settings of a training run. Field descriptions double as CLI help."""

    # strict: "1", true or 1.5 are not silently turned into an int; inf and nan are rejected.
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, strict=True, allow_inf_nan=False
    )

    # data
    dataset: str = Field(description="dataset name (beauty, sports, toys, yelp) or file path")
    max_len: int = Field(50, ge=1, le=4096, description="L: input length (most recent items)")
    user_col: str | None = Field(
        None, description="user column of an interaction table (default: user_id, user, ...)"
    )
    item_col: str | None = Field(
        None, description="item column of an interaction table (default: item_id, item, ...)"
    )
    time_col: str | None = Field(
        None, description="timestamp column of an interaction table (default: timestamp, time, ...)"
    )
    time_format: str | None = Field(
        None,
        description="strptime format of the timestamp column, e.g. '%d.%m.%Y %H:%M' "
        "(default: unix numbers, or a date format inferred once for the whole column)",
    )
    # model
    model: Literal["sasrec", "gru4rec", "bert4rec"] = Field("sasrec", description="encoder")
    hidden_size: int = Field(64, ge=1, le=4096, description="d: embedding and hidden size")
    n_layers: int | None = Field(
        None, ge=1, le=64, description="layers (default: 2 for transformers, 1 for GRU4Rec)"
    )
    n_heads: int = Field(2, ge=1, le=64, description="attention heads (transformers)")
    dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="dropout probability (default: 0.5 SASRec, 0.3 GRU4Rec, 0.2 BERT4Rec)",
    )
    mask_prob: float = Field(0.2, gt=0.0, lt=1.0, description="BERT4Rec cloze mask probability")
    replace_prob: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="augmentation: during training each input item is replaced by a uniformly "
        "random item with this probability (targets unchanged); a baseline for robustness to "
        "replaced items, any mode (0: off)",
    )
    # objective (CAT.md §3)
    mode: Literal["standard", "adv", "cat"] = Field("cat", description="training objective")
    loss: Literal["ce", "bce"] = Field(
        "ce",
        description="ce: full-softmax cross-entropy; bce: one sampled negative per position "
        "(as in the original SASRec), for every model",
    )
    eps: float | None = Field(
        None,
        ge=0.0,
        description="level-1 (interaction) perturbation size (default: tuned, cat 0.203, "
        "adv 0.126)",
    )
    eps_item: float | None = Field(
        None, ge=0.0, description="level-2 (item table) perturbation size (default: tuned, 0.026)"
    )
    eps_absolute: bool = Field(
        False, description="eps in absolute L2 units instead of relative to embedding norms"
    )
    lambda_1: float | None = Field(
        None,
        ge=0.0,
        description="weight of the level-1 adversarial loss (default: tuned, cat 0.434, adv 2.15)",
    )
    lambda_2: float | None = Field(
        None,
        ge=0.0,
        description="weight of the level-2 adversarial loss (default: tuned, cat 2.25; 0 for adv)",
    )
    lambda_replace: float = Field(
        0.0,
        ge=0.0,
        description="weight of the adversarial item-replacement loss (modes adv and cat; 0: off): "
        "input items are replaced, at rate replace_adv_prob, by the item of largest first-order "
        "loss gain, and L_rec on those inputs is added (a defence of the most recent item)",
    )
    replace_adv_prob: float = Field(
        0.2,
        gt=0.0,
        le=1.0,
        description="share of input items the adversarial replacement term replaces",
    )
    adv_warmup_epochs: int | None = Field(
        None,
        ge=0,
        description="standard epochs before the adversarial terms start (default: tuned, cat 0, "
        "adv 20)",
    )
    cascade: Literal["two_hop", "first_order", "none"] = Field(
        "two_hop", description="cascade-effect estimate (CAT.md §1)"
    )
    scaling: Literal["proportional", "inverse", "none"] | None = Field(
        None,
        description="how the cascade scales perturbations (default: tuned, proportional; none "
        "for adv)",
    )
    c_max: float = Field(5.0, gt=0.0, description="clip of the normalised cascade score")
    shared_dropout: bool | None = Field(
        None,
        description="the adversarial passes reuse the clean pass's dropout masks, so the FGSM "
        "direction perturbs the sub-network it was computed on (CAT.md §2; default: tuned, off)",
    )
    select_from: Literal["adversarial", "all"] = Field(
        "adversarial",
        description="epochs the reported model is chosen from (adversarial modes): only those "
        "with the adversarial terms on, so a run labelled cat is a CAT model, or all",
    )
    gamma: float = Field(1.0, ge=0.0, description="weight of the second-order cascade term")
    adv_objective: Literal["exact", "fused"] = Field(
        "exact",
        description="exact: L_rec + lambda_1 L_1 + lambda_2 L_2, one perturbed pass per level; "
        "fused: both perturbations in one perturbed pass, L_rec + (lambda_1 + lambda_2) L_12 "
        "(cheaper, not the paper's objective; docs/CAT.md)",
    )
    # optimisation
    epochs: int = Field(60, ge=1, description="maximum epochs")
    batch_size: int = Field(256, ge=1, description="training sequences per batch")
    bucket_batches: bool = Field(
        True,
        description="batch sequences of similar length (much less padding to encode); the loss is "
        "normalised by the epoch's mean positions per batch so every position weighs the same",
    )
    lr: float = Field(1e-3, gt=0.0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0.0, description="Adam weight decay")
    patience: int | None = Field(
        None,
        ge=1,
        description="epochs without validation NDCG@10 gain before stop (default: tuned, 10 for "
        "adv and cat, 5 for standard)",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed")
    # evaluation
    eval_batch_size: int = Field(1024, ge=1, description="users per evaluation batch")
    mask_history: bool = Field(True, description="exclude input-sequence items from the ranking")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:0, ...")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="bf16: autocast the encoder and the full-softmax products to bfloat16 "
        "(parameters, optimizer, softmax normalisation and loss stay fp32); fastest on GPUs and "
        "on CPUs with native bf16 (avx512_bf16 / AMX)",
    )

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.mode == "adv":
            if self.lambda_2 not in (None, 0.0):
                raise ValueError("mode 'adv' is level 1 only: lambda_2 must be 0 (or unset)")
            if self.scaling not in (None, "none"):
                raise ValueError(
                    "mode 'adv' is generic adversarial training: scaling must be 'none'"
                )
        if self.lambda_replace > 0 and self.mode == "standard":
            raise ValueError(
                "lambda_replace is an adversarial term: use mode adv or cat (adv with lambda_1 0 "
                "trains with the replacement term alone)"
            )
        if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.model == "bert4rec" and self.max_len < 2:
            raise ValueError("bert4rec needs max_len >= 2 (one history item and the mask token)")
        if self.model in ("sasrec", "bert4rec") and self.hidden_size % self.n_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by n_heads ({self.n_heads})"
            )
        return self

    def resolved(self) -> Config:
        """Fill the mode- and model-dependent defaults (``None`` fields) with their values."""
        upd: dict[str, Any] = {}
        if self.n_layers is None:
            upd["n_layers"] = 1 if self.model == "gru4rec" else 2
        if self.dropout is None:
            upd["dropout"] = {"sasrec": 0.5, "gru4rec": 0.3, "bert4rec": 0.2}[self.model]
        for key, value in TUNED_DEFAULTS[self.mode].items():
            if getattr(self, key) is None:
                upd[key] = value
        return self.model_copy(update=upd) if upd else self

    @property
    def adversarial(self) -> bool:
        return self.mode in ("adv", "cat")


def _format_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if not key:  # a rule across keys: its message names them
            lines.append(f"{source}: {err['msg'].removeprefix('Value error, ')}")
        elif err["type"] == "extra_forbidden":
            known = ", ".join(Config.model_fields)
            lines.append(f"{source}: unknown key {key!r} (known keys: {known})")
        elif err["type"] == "missing":
            lines.append(f"{source}: missing required key {key!r}")
        else:
            lines.append(f"{source}: key {key!r}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)


def make_config(values: dict[str, Any], source: str = "config") -> Config:
    """Validate ``values`` into a resolved :class:`Config`.

    Raises:
        ConfigError: unknown key, wrong type or out-of-range value; the message names the key.
    """
    try:
        return Config(**values).resolved()
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


_CORE_TYPES: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {}
for _tag, _regexp, _first in (
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+0123456789."),
    ),
):
    for _ch in _first:
        _CORE_TYPES.setdefault(_ch, []).append((f"tag:yaml.org,2002:{_tag}", re.compile(_regexp)))


class _CoreResolver(VersionedResolver):
    """Implicit types of the YAML 1.2 core schema, exactly (YAML 1.2.2, §10.3.2), whatever
    ``%YAML`` directive a file has.

    ruamel.yaml's own 1.2 rules also read ``1_000``, ``0b11``, ``-0x1`` and ``1:20`` as numbers
    and dates as timestamps; the core schema reads all of those as strings.
    """

    @property
    def processing_version(self) -> Any:
        return (1, 2)

    @property
    def versioned_resolver(self) -> Any:
        return _CORE_TYPES


def _yaml() -> YAML:
    """A YAML 1.2 core-schema reader and writer (duplicate keys are errors; keys in order)."""
    y = YAML(typ="safe", pure=True)
    y.Resolver = _CoreResolver
    y.allow_duplicate_keys = False
    y.default_flow_style = False
    y.sort_base_mapping_type_on_output = False
    return y


def parse_yaml(text: str, source: str = "config") -> Any:
    """Parse YAML text by the 1.2 core schema.

    Raises:
        ConfigError: invalid YAML, or a key repeated in one mapping (both lines named).
    """
    try:
        return _yaml().load(text)
    except MarkedYAMLError as exc:
        problem = (exc.problem or str(exc).splitlines()[0]).strip()
        dup = re.match(r'found duplicate key "(.*)" with value', problem)
        if dup and exc.context_mark is not None and exc.problem_mark is not None:
            raise ConfigError(
                f"{source}: key {dup.group(1)!r} given twice, on line "
                f"{exc.context_mark.line + 1} and line {exc.problem_mark.line + 1}; keep one"
            ) from None
        mark = exc.problem_mark
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}{where}: invalid YAML: {problem}") from None
    except YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {str(exc).splitlines()[0]}") from None


def check_values(values: dict[str, Any], source: str) -> None:
    """Check each known key's value on its own (type and range), so that a bad value in a file
    is reported even when a command-line flag overrides it; unknown keys and rules across keys
    are left to :func:`make_config`.

    Raises:
        ConfigError: a value of the wrong type or out of range; the message names the key.
    """
    errors = []
    for key, value in values.items():
        field = Config.model_fields.get(key)
        if field is None:
            continue
        annotation = (
            Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        )
        try:
            TypeAdapter(annotation, config=_FIELD_CHECK).validate_python(value)
        except ValidationError as exc:
            errors.append(f"{source}: key {key!r}: {exc.errors()[0]['msg']} (got {value!r})")
    if errors:
        raise ConfigError("; ".join(errors))


_FIELD_CHECK = ConfigDict(strict=True, allow_inf_nan=False)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict by the YAML 1.2 core schema; each known key's value is
    checked on its own (:func:`check_values`), the whole config later by :func:`make_config`.

    Raises:
        ConfigError: unreadable file, invalid YAML, a duplicate key, not a mapping at the top
            level, or a value of the wrong type or out of range.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    obj = parse_yaml(text, str(path))
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(obj).__name__}")
    check_values(obj, str(path))
    return obj


def dump_yaml(obj: Any) -> str:
    """``obj`` (plain data) as YAML text that :func:`parse_yaml` reads back exactly."""
    buf = io.StringIO()
    _yaml().dump(obj, buf)
    return buf.getvalue()


def to_yaml(config: Config) -> str:
    """The config as YAML text (all keys, resolved values)."""
    return dump_yaml(config.model_dump())


def config_sha256(config: Config) -> str:
    """Hash of the resolved config's values (stored with checkpoints to detect edits)."""
    text = json.dumps(config.model_dump(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_changes(stored: dict[str, Any], config: Config) -> list[str]:
    """The keys whose values differ between ``stored`` (a resolved config's ``model_dump()``,
    e.g. from a checkpoint) and ``config``, as ``"key: stored -> now"`` strings.

    A key that ``stored`` lacks (a field added to catrec since) counts as its default, or, for a
    field whose default depends on the mode (``None``), as no change.
    """
    now = config.model_dump()
    out = []
    for key in sorted(set(stored) | set(now)):
        default = Config.model_fields[key].default if key in now else None
        if key not in stored and default is None:
            continue
        old, new = stored.get(key, default), now.get(key)
        if old != new:
            out.append(f"{key}: {old!r} -> {new!r}")
    return out


def table_options(config: Config) -> dict[str, str]:
    """The interaction-table reader options the config sets (column names, time format)."""
    keys = ("user_col", "item_col", "time_col", "time_format")
    return {k: getattr(config, k) for k in keys if getattr(config, k) is not None}
