"""Config validation: unknown keys, wrong types and out-of-range values name the key."""

import pytest
from pydantic import ValidationError

from catrec.config import Config, load_yaml, make_config, to_yaml
from catrec.errors import ConfigError


def test_defaults_resolve_by_mode_and_model():
    cat = make_config({"dataset": "beauty"})
    assert (cat.mode, cat.scaling, cat.lambda_2, cat.n_layers) == ("cat", "proportional", 1.0, 2)
    adv = make_config({"dataset": "beauty", "mode": "adv"})
    assert (adv.scaling, adv.lambda_2) == ("none", 0.0)
    assert make_config({"dataset": "beauty", "model": "gru4rec"}).n_layers == 1
    # CAT.md §3 starting defaults
    assert (cat.eps, cat.eps_item, cat.lambda_1, cat.adv_warmup_epochs) == (0.3, 0.3, 1.0, 10)
    assert (cat.c_max, cat.gamma, cat.cascade, cat.loss, cat.max_len) == (
        5.0,
        1.0,
        "two_hop",
        "ce",
        50,
    )


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"eps": -0.1}, "'eps'"),
        ({"max_len": 0}, "'max_len'"),
        ({"model": "caser"}, "'model'"),
        ({"mode": "fgsm"}, "'mode'"),
        ({"epochs": "ten"}, "'epochs'"),
        ({"dropout": 1.0}, "'dropout'"),
        ({"epz": 0.1}, "unknown key 'epz'"),
        ({"cascade": "three_hop"}, "'cascade'"),
        ({"lr": float("inf")}, "'lr'"),
        ({"eps": float("nan")}, "'eps'"),
        ({"max_len": True}, "'max_len'"),  # strict: no silent bool -> int
        ({"eps_absolute": "yes"}, "'eps_absolute'"),
        ({"seed": 2**64}, "'seed'"),
        ({"device": "cudafoo"}, "device must be"),
        ({"model": "bert4rec", "max_len": 1}, "max_len >= 2"),
        ({"precision": "fp16"}, "'precision'"),
        ({"adv_objective": "approx"}, "'adv_objective'"),
    ],
)
def test_rejections_name_the_key(values, key):
    with pytest.raises(ConfigError) as info:
        make_config({"dataset": "beauty", **values}, source="my.yaml")
    assert key in str(info.value) and "my.yaml" in str(info.value)


def test_missing_dataset():
    with pytest.raises(ConfigError, match="missing required key 'dataset'"):
        make_config({})


def test_frozen_and_yaml_roundtrip(tmp_path):
    cfg = make_config({"dataset": "beauty", "eps": 0.1, "scaling": "inverse"})
    with pytest.raises(ValidationError, match="frozen"):
        cfg.eps = 0.5  # type: ignore[misc]
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg))
    assert make_config(load_yaml(path)) == cfg
    assert set(load_yaml(path)) == set(Config.model_fields)


def test_bad_yaml_files(tmp_path):
    (tmp_path / "a.yaml").write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(tmp_path / "b.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "c.yaml").write_bytes(b"dataset: g\xe9od.txt\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_yaml(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"a\.yaml, line \d+ column \d+: invalid YAML") as info:
        load_yaml(tmp_path / "a.yaml")
    assert "\n" not in str(info.value)
