"""catrec.load: raw ids in and out, the evaluator's ranking, unknown ids, fallback, truncation."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import pytest
import torch
from serve_testutil import MAX_LEN, raw_test_histories

import catrec
from catrec.errors import RunError
from catrec.evaluate import score_users
from catrec.metrics.ranking import NumericalError
from catrec.serve import Recommendations, UnknownItemError
from catrec.train.loop import load_model


def _metrics_from_lists(lists: list[Recommendations], targets: list[str]) -> dict[str, float]:
    hr = ndcg = 0.0
    for rec, target in zip(lists, targets, strict=True):
        if target in rec.items[:10]:
            rank = rec.items.index(target) + 1
            hr += 1
            ndcg += 1 / math.log2(rank + 1)
    return {"HR@10": hr / len(targets), "NDCG@10": ndcg / len(targets)}


@pytest.mark.parametrize("model", ["sasrec", "bert4rec", "gru4rec"])
def test_top10_is_the_evaluators_ranking(model, tiny_run, tiny_runs, tiny_data):
    run = tiny_run if model == "sasrec" else tiny_runs[model]
    rec = catrec.load(run)
    _, histories, targets = raw_test_histories(tiny_data)
    lists = rec.recommend_batch(histories, k=10)
    # the evaluator's scores for the same users (its inputs: the last L items before the target)
    config, split, net = load_model(run)
    scores = score_users(net.eval(), torch.as_tensor(split.test_inputs))  # [U, n_items + 1]
    for u, r in enumerate(lists):
        want = torch.sort(scores[u], descending=True, stable=True).indices[:10]
        assert r.items == [rec.item_tokens[i] for i in want.tolist()]
        assert r.scores == pytest.approx(scores[u, want].tolist(), abs=1e-5)
        # pessimistic ranks (ties against the model) of the listed items are 1..10
        above = (scores[u][None, :] >= scores[u, want][:, None]).sum(dim=1)
        assert above.tolist() == list(range(1, 11))
    # and so HR@10 / NDCG@10 from the lists are exactly catrec evaluate's numbers
    stored = json.loads((run / "metrics.json").read_text())["test"]
    got = _metrics_from_lists(lists, targets)
    assert got["HR@10"] == pytest.approx(stored["HR@10"], abs=1e-12)
    assert got["NDCG@10"] == pytest.approx(stored["NDCG@10"], abs=1e-12)


def test_single_equals_batch_and_scores_are_finite(tiny_run, tiny_data):
    rec = catrec.load(tiny_run)
    _, histories, _ = raw_test_histories(tiny_data)
    batch = rec.recommend_batch(histories[:6], k=10)
    for h, b in zip(histories[:6], batch, strict=True):
        single = rec.recommend(h, k=10)
        assert single.items == b.items and single.scores == pytest.approx(b.scores, abs=1e-6)
        assert all(math.isfinite(s) for s in single.scores)
        assert not set(single.items) & set(h[-MAX_LEN:])  # history excluded by default
    with_history = rec.recommend(histories[0], k=50, exclude_history=False)
    assert len(with_history) == 50 and set(with_history.items) & set(histories[0])


def test_unknown_ids_are_dropped_with_a_warning_or_rejected(tiny_run):
    rec = catrec.load(tiny_run)
    with pytest.warns(UserWarning, match=r"'nope'.*'zz'"):
        r = rec.recommend(["i1", "nope", "i3", "zz"], k=5)
    assert r.unknown == ["nope", "zz"] and not r.fallback and r.n_used == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert r.items == rec.recommend(["i1", "i3"], k=5).items
    with pytest.raises(UnknownItemError, match="'nope'"):
        rec.recommend(["i1", "nope"], strict=True)
    assert isinstance(UnknownItemError("x"), catrec.CatrecError)  # CLI exit status 2


@pytest.mark.parametrize("history", [[], ["unknown-1", "unknown-2"]])
def test_empty_history_falls_back_to_popular_items(tiny_run, history):
    rec = catrec.load(tiny_run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = rec.recommend(history, k=5)
    counts = json.loads((tiny_run / "popularity.json").read_text())
    top = sorted(range(1, len(counts)), key=lambda i: (-counts[i], i))[:5]
    assert r.fallback and r.items == [rec.item_tokens[i] for i in top]
    assert r.scores == [float(counts[i]) for i in top]


def test_long_history_keeps_the_most_recent_max_len_items(tiny_run):
    rec = catrec.load(tiny_run)
    recent = [f"i{i}" for i in range(11, 11 + MAX_LEN)]
    old = ["i1", "i2", "i3", "i4", "i5"]
    long = rec.recommend(old + recent, k=10)
    assert long.n_used == MAX_LEN
    assert long.items == rec.recommend(recent, k=10).items
    assert long.scores == pytest.approx(rec.recommend(recent, k=10).scores, abs=1e-6)


def test_ints_are_raw_ids_and_bad_types_are_rejected(tiny_run, tmp_path):
    rec = catrec.load(tiny_run)
    with pytest.raises(TypeError, match="list of raw item ids"):
        rec.recommend("i1 i2")
    with pytest.raises(TypeError, match="float"):
        rec.recommend(["i1", 2.5])
    with pytest.raises(ValueError, match="k must be"):
        rec.recommend(["i1"], k=0)


def test_nan_scores_raise(tiny_run):
    rec = catrec.load(tiny_run)
    with torch.no_grad():
        rec.model.item_embedding.weight[3] = float("nan")
    with pytest.raises(NumericalError):
        rec.recommend(["i1", "i2"])


def test_serves_without_the_dataset_and_old_runs_need_it_once(tiny_run, tiny_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = tmp_path / "moved.txt"
    shutil.copy(tiny_data, data)
    cfg = (run / "config.yaml").read_text().replace(str(tiny_data), str(data))
    (run / "config.yaml").write_text(cfg)
    want = catrec.load(run).recommend([], k=3).items
    data.unlink()  # no dataset: a run with popularity.json still loads
    assert catrec.load(run).recommend(["i1"], k=3)
    (run / "popularity.json").unlink()  # an older run: needs the dataset, says so
    with pytest.raises(RunError, match="popularity.json.*CATREC_DATA_DIR"):
        catrec.load(run)
    shutil.copy(tiny_data, data)  # available again: computed and stored
    assert catrec.load(run).recommend([], k=3).items == want
    assert (run / "popularity.json").is_file()
    with pytest.raises(ValueError, match="checkpoint"):
        catrec.load(run, checkpoint="worst")
    assert catrec.load(run, checkpoint="last").recommend(["i1"], k=3)
