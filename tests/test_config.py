"""Config validation: unknown keys, wrong types and out-of-range values name the key."""

import pytest
from pydantic import ValidationError

from catrec.config import Config, load_yaml, make_config, to_yaml
from catrec.errors import ConfigError


def test_defaults_resolve_by_mode_and_model():
    cat = make_config({"dataset": "beauty"})
    assert (cat.mode, cat.scaling, cat.n_layers) == ("cat", "proportional", 2)
    adv = make_config({"dataset": "beauty", "mode": "adv"})
    assert (adv.scaling, adv.lambda_2) == ("none", 0.0)
    assert make_config({"dataset": "beauty", "model": "gru4rec"}).n_layers == 1
    # the tuned defaults (issue 11), per mode
    assert (cat.eps, cat.eps_item, cat.lambda_1, cat.lambda_2) == pytest.approx(
        (0.20285, 0.025952, 0.43352, 2.2532), rel=1e-4
    )
    assert (cat.adv_warmup_epochs, cat.shared_dropout, cat.patience) == (0, False, 10)
    assert (adv.eps, adv.lambda_1) == pytest.approx((0.12636, 2.1536), rel=1e-4)
    assert (adv.adv_warmup_epochs, adv.shared_dropout, adv.patience) == (20, False, 10)
    assert make_config({"dataset": "beauty", "mode": "standard"}).patience == 5
    # an explicit value wins over the mode's default
    own = make_config({"dataset": "beauty", "mode": "adv", "eps": 0.3, "patience": 3})
    assert (own.eps, own.patience, own.adv_warmup_epochs) == (0.3, 3, 20)
    # CAT.md §3's remaining defaults
    assert (cat.c_max, cat.gamma, cat.cascade, cat.loss, cat.max_len) == (
        5.0,
        1.0,
        "two_hop",
        "ce",
        50,
    )


def test_tuned_defaults_are_the_searchs_best_trials():
    # The comment on TUNED_DEFAULTS names this file: the package's defaults are its winners.
    import json
    from pathlib import Path

    from catrec.config import TUNED_DEFAULTS

    path = Path(__file__).parents[1] / "docs/results/study/tune/beauty-sasrec-seed0/tune.json"
    doc = json.loads(path.read_text())
    for mode in ("adv", "cat"):
        entry = doc["modes"][mode]
        best = {k: v for k, v in entry["best"].items() if k not in ("number", "value")}
        assert {k: TUNED_DEFAULTS[mode][k] for k in best} == best
    assert TUNED_DEFAULTS["standard"]["patience"] == doc["standard"]["chosen_patience"]


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


def test_yaml_is_read_by_the_1_2_core_schema(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: on\nlr: 1e-3\neps: .5\nepochs: 010\nseed: 0x10\npatience: 0o7\n")
    cfg = make_config(load_yaml(path))
    # 1.1 rules read 'on' as true and '1e-3' as a string; 1.2: a string and a number
    assert cfg.dataset == "on" and cfg.lr == 0.001 and cfg.eps == 0.5
    assert (cfg.epochs, cfg.seed, cfg.patience) == (10, 16, 7)  # 010 is ten, not octal eight
    path.write_text("a: yes\nb: no\nc: 1_000\nd: 1e3\ne: 2001-12-14\nf: 0b11\ng: True\nh: ~\n")
    assert load_yaml(path) == {
        "a": "yes", "b": "no", "c": "1_000", "d": 1000.0, "e": "2001-12-14", "f": "0b11",
        "g": True, "h": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("epochs: 1_000\n", "'epochs'"),  # a string in YAML 1.2, so not an int
        ("eps_absolute: yes\n", "'eps_absolute'"),  # a string, not a bool
        ("seed: 7.0\n", "'seed'"),
        ("lr: '1e-3'\n", "'lr'"),  # quoted: a string, still rejected
    ],
)
def test_yaml_type_mistakes_are_still_rejected(tmp_path, text, key):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: beauty\n" + text)
    with pytest.raises(ConfigError, match=key):
        make_config(load_yaml(path), source=str(path))


def test_duplicate_yaml_key_names_the_key_and_both_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.01\ndataset: beauty\n\nlr: 0.05\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: key 'lr' given twice, on line 1 and line 4"):
        load_yaml(path)


@pytest.mark.parametrize(
    "dataset", ["on", "010", "1e3", "null", "1_000", "0x10", "2001-12-14", "a: b", " x", "é ü"]
)
@pytest.mark.parametrize("lr", [1e-3, 1e-10, 0.1 + 0.2, 5e-324, 1e16])
def test_written_config_round_trips_exactly(tmp_path, dataset, lr):
    cfg = make_config({"dataset": dataset, "lr": lr, "time_format": "%d.%m.%Y %H:%M"})
    text = to_yaml(cfg)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    again = make_config(load_yaml(path))
    assert again == cfg and to_yaml(again) == text
    assert type(again.lr) is float and again.dataset == dataset


def test_config_changes_name_the_keys():
    from catrec.config import config_changes, config_sha256

    a = make_config({"dataset": "beauty"})
    b = make_config({"dataset": "beauty", "seed": 7, "lr": 0.05})
    assert config_sha256(a) != config_sha256(b) and config_sha256(a) == config_sha256(a)
    assert config_changes(a.model_dump(), b) == ["lr: 0.001 -> 0.05", "seed: 0 -> 7"]
    old = a.model_dump()
    del old["time_format"]  # a key added to catrec after the run: no change
    assert config_changes(old, a) == []
    del old["shared_dropout"]  # likewise for a key whose default is now per mode (None)
    assert config_changes(old, a) == []
    del old["precision"]  # a missing key with a default counts as that default
    bf16 = make_config({"dataset": "beauty", "precision": "bf16"})
    assert config_changes(old, bf16) == ["precision: 'fp32' -> 'bf16'"]


def test_a_bad_value_in_the_file_is_reported_even_when_a_flag_overrides_it(tmp_path):
    """The README's own example (`epochs: "10"`) is rejected whether or not --epochs is given."""
    from catrec.cli import main

    data = tmp_path / "d.txt"
    data.write_text("".join(f"{u} 1 2 3 4 5\n" for u in range(1, 6)))
    for line, key in [('epochs: "10"', "epochs"), ("max_len: 0", "max_len"),
                      ("hidden_size: 16.5", "hidden_size")]:  # fmt: skip
        cfg = tmp_path / "c.yaml"
        cfg.write_text(line + "\n")
        args = ["train", "--config", str(cfg), "--dataset", str(data), "--epochs", "1",
                "--max-len", "4", "--hidden-size", "8", "--out", str(tmp_path / key)]  # fmt: skip
        assert main(args) == 2, line
        assert not (tmp_path / key).exists()
