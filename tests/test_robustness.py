"""Item-replacement robustness: plans, adversarial items, the report and its CLI (CAT.md §4)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from catrec.cli import main
from catrec.config import make_config
from catrec.data import SequenceData, leave_one_out
from catrec.errors import ConfigError, RunError
from catrec.metrics.stability import rbo_at_k
from catrec.models import REGISTRY, build_model
from catrec.models.base import SequentialRecommender
from catrec.robustness import (
    ReplacementPlan,
    Setting,
    adversarial_items,
    apply_replacements,
    load_or_draw_plan,
    real_lengths,
    replacement_gains,
    run_robustness,
    select_columns,
    select_records,
    setting_metrics,
    settings_grid,
    training_popularity,
)
from catrec.train.loop import train


def synthetic_split(n_users: int = 60, n_items: int = 40, max_len: int = 8, seed: int = 0):
    """Users with 3..15 interactions (no repeats within a user), so some are truncated to L."""
    rng = np.random.default_rng(seed)
    seqs = [rng.choice(np.arange(1, n_items + 1), size=rng.integers(3, 16), replace=False)
            for _ in range(n_users)]  # fmt: skip
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum([len(s) for s in seqs], out=offsets[1:])
    data = SequenceData(
        name="synthetic",
        user_tokens=np.array([str(u) for u in range(n_users)]),
        item_tokens=np.array(["[pad]"] + [str(i) for i in range(1, n_items + 1)]),
        offsets=offsets,
        items=np.concatenate(seqs).astype(np.int64),
    )
    return leave_one_out(data, max_len)


ALL = settings_grid(
    ("first", "middle", "last", "random"), ("random", "popular"), 1
) + settings_grid(("first", "middle", "last", "random"), ("random", "popular"), 3)


# --------------------------------------------------------------------------- the plan
def test_plan_is_deterministic_for_a_seed_and_independent_of_draw_order():
    split = synthetic_split()
    a = ReplacementPlan.empty(split, seed=7)
    a.ensure(split, ALL)
    b = ReplacementPlan.empty(split, seed=7)
    b.ensure(split, list(reversed(ALL))[:5])  # a subset first, in another order...
    b.ensure(split, ALL)  # ...then the rest
    assert a.columns.keys() == b.columns.keys() and a.items.keys() == b.items.keys()
    for key in a.columns:
        np.testing.assert_array_equal(a.columns[key], b.columns[key])
    for key in a.items:
        np.testing.assert_array_equal(a.items[key], b.items[key])
    c = ReplacementPlan.empty(split, seed=8)
    c.ensure(split, ALL)
    s = Setting("last", "random")
    assert a.setting_sha256(s) == b.setting_sha256(s) != c.setting_sha256(s)
    assert not np.array_equal(a.items[("last", 1, "random")], c.items[("last", 1, "random")])


def test_plan_never_replaces_with_an_item_of_the_sequence_or_the_target():
    split = synthetic_split(n_users=200, n_items=30)  # small catalogue: clashes are frequent
    plan = ReplacementPlan.empty(split, seed=0)
    plan.ensure(split, ALL)
    pop = training_popularity(split)
    x, y = split.test_inputs, split.test_targets
    for (pos, k, rep), items in plan.items.items():
        cols = plan.columns[(pos, k)]
        ok = cols[:, 0] >= 0
        assert (items[ok] > 0).all() and (items[~ok] == 0).all()
        for u in np.flatnonzero(ok):
            seq = set(x[u][x[u] > 0].tolist())
            chosen = items[u].tolist()
            assert not seq & set(chosen), (pos, k, rep, u)  # includes the replaced item itself
            assert y[u] not in chosen
            assert len(set(chosen)) == k  # k distinct replacements
            assert all(1 <= i <= split.n_items for i in chosen)
            if rep == "popular":
                assert all(pop[i] > 0 for i in chosen)
        pert = apply_replacements(x[ok], cols[ok], items[ok])
        changed = (pert != x[ok]).sum(axis=1)
        assert (changed == k).all()  # exactly the k planned columns change


def test_plan_respects_positions_and_skips_short_sequences():
    split = synthetic_split()
    x = split.test_inputs
    L = x.shape[1]
    n = real_lengths(x)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(select_columns(x, "first", 1, rng)[:, 0], L - n)
    np.testing.assert_array_equal(select_columns(x, "last", 1, rng)[:, 0], np.full(len(n), L - 1))
    np.testing.assert_array_equal(select_columns(x, "middle", 1, rng)[:, 0], L - n + n // 2)
    rand = select_columns(x, "random", 1, rng)[:, 0]
    assert ((rand >= L - n) & (rand < L)).all()
    assert len(np.unique(rand - (L - n))) > 3  # not always the same real index
    # the k most recent: last k columns; users with fewer than k items are skipped
    k = 5
    last = select_columns(x, "last", k, rng)
    short = n < k
    assert short.any() and (~short).any()
    assert (last[short] == -1).all()
    np.testing.assert_array_equal(last[~short], np.tile(np.arange(L - k, L), ((~short).sum(), 1)))
    first = select_columns(x, "first", k, rng)
    np.testing.assert_array_equal(first[~short, 0], (L - n)[~short])
    for pos in ("middle", "random"):
        cols = select_columns(x, pos, k, rng)[~short]
        assert (cols >= (L - n)[~short, None]).all() and (cols < L).all()
        assert (np.diff(cols, axis=1) > 0).all()  # distinct, ascending
    # one real item: first = middle = last
    one = np.array([[0, 0, 0, 5]])
    assert {int(select_columns(one, p_, 1, rng)[0, 0]) for p_ in ("first", "middle", "last")} == {3}


def test_plan_file_round_trip_and_mismatches(tmp_path):
    split = synthetic_split()
    path = tmp_path / "plan.npz"
    plan = load_or_draw_plan(path, split, 3, ALL[:4])
    assert path.is_file()
    again = load_or_draw_plan(path, split, 3, ALL)  # extended and re-saved
    for key in plan.items:
        np.testing.assert_array_equal(plan.items[key], again.items[key])
    loaded = ReplacementPlan.load(path)
    assert set(loaded.items) == set(again.items)
    with pytest.raises(RunError, match="seed 3"):
        load_or_draw_plan(path, split, 4, ALL)
    with pytest.raises(RunError, match="other test data"):
        load_or_draw_plan(path, synthetic_split(max_len=5), 3, ALL)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(RunError, match="not a readable"):
        ReplacementPlan.load(tmp_path / "bad.npz")


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="position"):
        Setting("end", "random")
    with pytest.raises(ConfigError, match="replacement"):
        Setting("last", "worst")
    with pytest.raises(ConfigError, match="k"):
        Setting("last", "random", 0)


# --------------------------------------------------------------------------- adversarial items
class SumModel(SequentialRecommender):
    """h_t = sum of the real input embeddings up to t; scores = h · E (hand-computable)."""

    def __init__(self, table: Tensor) -> None:
        super().__init__(n_items=table.shape[0] - 1, hidden_size=table.shape[1], max_len=10)
        self.item_embedding = nn.Embedding.from_pretrained(table, freeze=False, padding_idx=0)

    def encode(self, inputs_embeds: Tensor, padding_mask: Tensor) -> Tensor:
        return (inputs_embeds * padding_mask.unsqueeze(-1)).cumsum(dim=1)


# Items 1..6 in 2-d; their mean is 0 (pairs cancel).
TABLE = torch.tensor(
    [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [2.0, -3.0], [-2.0, 3.0]]
)


def test_adversarial_item_by_hand():
    """Input (1, 3), target 2. h = E1 + E3 = 0, so all logits are 0 and the softmax is uniform:
    dCE/dh = mean_j E_j - E_2 = (0, -1), the same for every input position (h is a sum).
    Replacing item 3 (E3 = (-1, 0)): gain_j = (0, -1) · (E_j - E3) = -E_j[1], so over the
    admissible items 4, 5, 6 (1 and 3 are in the sequence, 2 is the target):
    gain_4 = 1, gain_5 = 3, gain_6 = -3  ->  item 5. The same holds for the first position
    (E1 = (1, 0) is orthogonal to the gradient too). With k = 2 both positions are replaced:
    5 first, then the best remaining item, 4.
    """
    model = SumModel(TABLE)
    x = np.array([[0, 0, 1, 3]])
    y = np.array([2])
    last = adversarial_items(model, x, y, np.array([[3]]))
    first = adversarial_items(model, x, y, np.array([[2]]))
    both = adversarial_items(model, x, y, np.array([[2, 3]]))
    assert last.tolist() == [[5]] and first.tolist() == [[5]] and both.tolist() == [[5, 4]]
    # The gradient the function used, recomputed independently with autograd on the loss:
    e = TABLE[[1, 3]].clone().requires_grad_(True)
    loss = nn.functional.cross_entropy((e.sum(0) @ TABLE[1:].T)[None], torch.tensor([1]))
    loss.backward()
    assert torch.allclose(e.grad, torch.tensor([[0.0, -1.0], [0.0, -1.0]]), atol=1e-6)
    # Skipped rows stay 0; a batch mixing rows works row by row.
    xs = np.array([[0, 0, 1, 3], [0, 0, 0, 4]])
    out = adversarial_items(model, xs, np.array([2, 2]), np.array([[3], [-1]]))
    assert out.tolist() == [[5], [0]]


def test_adversarial_item_increases_the_loss_more_than_the_others():
    """On the hand model, the chosen item is also the best by the *exact* loss change here."""
    model = SumModel(TABLE)
    x = torch.tensor([[1, 3]])

    @torch.no_grad()
    def loss_with(item: int) -> float:
        ids = x.clone()
        ids[0, 1] = item
        h = model.encode(model.embed(ids), ids > 0)[:, -1]
        return float(nn.functional.cross_entropy(model.score(h)[:, 1:], torch.tensor([1])))

    exact = {j: loss_with(j) for j in (4, 5, 6)}
    assert max(exact, key=exact.get) == 5


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_replacement_gains_are_directional_derivatives(name):
    """For every model, gain[j] at column c equals the derivative of the loss along
    ``E_j - E_current`` applied to that input slot only (finite differences in float64). The
    slot is reached by perturbing the current item's *input* table row (items are unique in the
    row, so that row feeds exactly column c) while scoring with the clean table: no knowledge of
    how ``prediction_input`` maps columns is assumed. Covers trimmed-width inputs and, for
    BERT4Rec, a full-length input whose oldest column the prediction drops (gain 0 everywhere).
    """
    L, n_items = 10, 40
    torch.manual_seed(0)
    cfg = make_config(
        {"dataset": "t", "model": name, "max_len": L, "hidden_size": 16, "dropout": 0.0}
    )
    model = build_model(cfg, n_items).double().eval()
    with torch.no_grad():
        for prm in model.parameters():
            prm.add_(torch.randn_like(prm) * 0.1)
    table = model.item_table().detach()
    y = torch.tensor([13])
    for x in (torch.tensor([[3, 7, 9, 11, 2, 5]]), torch.tensor([[4, 3, 7, 9, 11, 2, 5, 6, 8, 1]])):
        cols = torch.arange(x.shape[1])[None, :]  # every column at once: [1, W]
        gains = replacement_gains(model, x, y, cols)[0]  # [W, n_items + 1]
        ids = model.prediction_input(x)

        @torch.no_grad()
        def loss(input_table: Tensor, ids: Tensor = ids) -> float:
            h = model.encode(model.embed(ids, input_table), ids > 0)[:, -1]
            return float(F.cross_entropy(model.score(h, table)[:, 1 : n_items + 1], y - 1))

        for c in range(x.shape[1]):
            for j in (1, 20, 40):
                direction = torch.zeros_like(table)
                direction[x[0, c]] = table[j] - table[x[0, c]]
                eps = 1e-5
                fd = (loss(table + eps * direction) - loss(table - eps * direction)) / (2 * eps)
                assert float(gains[c, j]) == pytest.approx(fd, rel=1e-4, abs=1e-8), (c, j)
        if name == "bert4rec" and x.shape[1] == L:
            assert (gains[0] == 0).all()  # the oldest item of a full history is not seen


# --------------------------------------------------------------------------- the report
def test_setting_metrics_identity_and_by_hand():
    top = np.array([[1, 2, 3], [4, 5, 6]])
    ranks = np.array([1.0, math.inf])
    m = setting_metrics(top, ranks, top, ranks, depth=3, p=0.9, n_bootstrap=50)
    assert m["RBO@3"] == pytest.approx(1.0) and m["Jaccard@3"] == pytest.approx(1.0)
    assert m["NDCG@3_drop"] == pytest.approx(0.0) and m["HR@3_clean"] == pytest.approx(0.5)
    pert = np.array([[1, 3, 2], [7, 8, 9]])
    m = setting_metrics(top, ranks, pert, np.array([2.0, math.inf]), depth=3, p=0.9, n_bootstrap=50)
    assert m["RBO@3"] == pytest.approx((0.226 / 0.271 + 0.0) / 2)
    assert m["Jaccard@3"] == pytest.approx(0.5)
    assert m["NDCG@3"] == pytest.approx(0.5 / math.log2(3))
    assert m["NDCG@3_drop"] == pytest.approx(1 - 1 / math.log2(3))
    assert m["HR@3_drop"] == pytest.approx(0.0)
    lo, hi = m["ci95"]["RBO@3"]
    assert lo <= m["RBO@3"] <= hi


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_evaluate_robustness_runs_for_every_model(name):
    from catrec.robustness import evaluate_robustness

    split = synthetic_split(n_items=40, max_len=8)
    torch.manual_seed(0)
    cfg = make_config({"dataset": "t", "model": name, "max_len": 8, "hidden_size": 16})
    model = build_model(cfg, split.n_items)
    plan = ReplacementPlan.empty(split, seed=0)
    settings = settings_grid(("first", "last"), ("random", "adversarial"), 2)
    res = evaluate_robustness(model, split, plan, settings, n_bootstrap=20, progress=False)
    assert len(res.records) == 4 and set(res.adversarial_items) == {("first", 2), ("last", 2)}
    for rec in res.records:
        assert rec["n_users"] + rec["n_skipped"] == split.n_users
        assert 0.0 <= rec["RBO@10"] <= 1.0
    x = split.test_inputs
    for (_pos, k), items in res.adversarial_items.items():
        ok = items[:, 0] > 0
        for u in np.flatnonzero(ok):
            assert not set(items[u].tolist()) & set(x[u].tolist()) and len(set(items[u])) == k
            assert split.test_targets[u] not in items[u]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, beauty_slice):
    """A 1-epoch SASRec on the first 1,000 Beauty users (d = 16, L = 10)."""
    root = tmp_path_factory.mktemp("robust")
    path = root / "beauty_1000.txt"
    path.write_text("\n".join(beauty_slice.read_text().splitlines()[:1000]) + "\n")
    cfg = make_config(
        {"dataset": str(path), "hidden_size": 16, "max_len": 10, "epochs": 1, "mode": "standard"}
    )
    run_dir = root / "run"
    metrics = train(cfg, run_dir, progress=False)
    return run_dir, metrics


def test_run_robustness_report(tiny_run, tmp_path):
    run_dir, metrics = tiny_run
    settings = settings_grid(("first", "last"), ("random", "adversarial"), 1)
    settings += [Setting("last", "popular", 5)]  # Beauty is 5-core: 4-item test inputs exist
    plan_path = tmp_path / "plan.npz"
    doc = run_robustness(
        run_dir, settings, seed=1, plan_path=plan_path, n_bootstrap=100, progress=False
    )
    assert plan_path.is_file() and (run_dir / "adversarial-seed1.npz").is_file()
    stored = json.loads((run_dir / "robustness.json").read_text())
    assert stored["records"] == doc["records"] and len(doc["records"]) == 5
    n_users = metrics["test"]["n_users"]
    assert doc["clean"]["NDCG@10"] == pytest.approx(metrics["test"]["NDCG@10"])
    keys = {"position", "replacement", "k", "n_users", "n_skipped", "RBO@10", "Jaccard@10",
            "NDCG@10", "NDCG@10_clean", "HR@10", "HR@10_clean", "NDCG@10_drop", "ci95"}  # fmt: skip
    for rec in doc["records"]:
        assert keys <= rec.keys()
        assert rec["n_users"] + rec["n_skipped"] == n_users
        assert 0.0 <= rec["RBO@10"] <= 1.0 and 0.0 <= rec["Jaccard@10"] <= 1.0
        if rec["k"] == 1:
            assert rec["n_skipped"] == 0
            # no skipped users: the clean numbers are the test metrics of the run
            assert rec["NDCG@10_clean"] == pytest.approx(metrics["test"]["NDCG@10"])
    short = int((real_lengths(leave_one_out_test_inputs(run_dir)) < 5).sum())
    k5 = doc["records"][-1]
    assert k5["k"] == 5 and k5["n_skipped"] == short > 0
    assert k5["skipped"]["fewer_than_k_items"] == short
    by = {(r["position"], r["replacement"]): r for r in doc["records"] if r["k"] == 1}
    # replacing the most recent item disturbs the top-10 far more than replacing the oldest
    assert by[("last", "random")]["RBO@10"] < by[("first", "random")]["RBO@10"]
    # and the white-box item hurts the target at least as much as a random one, on average
    assert by[("last", "adversarial")]["NDCG@10"] <= by[("last", "random")]["NDCG@10"] + 1e-9

    # Same seed, same plan file: identical records; a reuse run recomputes nothing.
    again = run_robustness(
        run_dir, settings, seed=1, plan_path=plan_path, n_bootstrap=100, progress=False,
        reuse=True,
    )  # fmt: skip
    assert again["computed"] == []
    fresh = run_robustness(
        run_dir, settings[:2], seed=1, plan_path=tmp_path / "other.npz", n_bootstrap=100,
        progress=False,
    )  # fmt: skip
    assert fresh["computed"] == [s.key for s in settings[:2]]
    new = select_records(fresh, settings[:2], seed=1, depth=10, p=0.9)
    for a, b in zip(new, doc["records"][:2], strict=True):
        assert a["plan_sha256"] == b["plan_sha256"]  # drawn again from the seed: the same plan
        assert a["RBO@10"] == b["RBO@10"] and a["ci95"] == b["ci95"]


def leave_one_out_test_inputs(run_dir):
    from catrec.run import load_run_config
    from catrec.train.loop import load_split

    return load_split(load_run_config(run_dir)).test_inputs


def test_adversarial_rbo_is_computed_from_the_same_lists(tiny_run):
    """RBO of the report equals rbo_at_k on top-10 lists recomputed here (one setting)."""
    from catrec.robustness import topk_and_ranks
    from catrec.train.loop import load_model

    run_dir, _ = tiny_run
    _, split, model = load_model(run_dir)
    plan = ReplacementPlan.empty(split, seed=0)
    s = Setting("middle", "random")
    plan.ensure(split, [s])
    cols, items = plan.columns[("middle", 1)], plan.items[("middle", 1, "random")]
    x, y = split.test_inputs, split.test_targets
    clean, _ = topk_and_ranks(model, x, y, 10)
    pert, _ = topk_and_ranks(model, apply_replacements(x, cols, items), y, 10)
    from catrec.robustness import evaluate_robustness

    res = evaluate_robustness(model, split, plan, [s], n_bootstrap=20, progress=False)
    assert res.records[0]["RBO@10"] == pytest.approx(rbo_at_k(clean, pert, 0.9, 10).mean())


def test_cli_robustness(tiny_run, capsys):
    run_dir, _ = tiny_run
    rc = main(["robustness", str(run_dir), "--positions", "last,first", "--replacement",
               "popular", "--seed", "2", "--bootstrap", "50", "--quiet"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "RBO@10" in out and "popular" in out
    assert (run_dir / "plan-seed2.npz").is_file()
    recs = json.loads((run_dir / "robustness.json").read_text())["records"]
    assert {(r["position"], r["replacement"], r["plan_seed"]) for r in recs} >= {
        ("last", "popular", 2),
        ("first", "popular", 2),
    }
    rc = main(["robustness", str(run_dir), "--positions", "end", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown position 'end'" in err
    rc = main(["robustness", str(run_dir.parent / "missing"), "--quiet"])
    assert rc == 2
