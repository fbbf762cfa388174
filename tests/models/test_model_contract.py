"""The model contract, run for every registered model with a tiny config.

Shapes, padding invariance, the causality declaration, one optimisation step, and the CAT step's
perturbations (CAT.md §2) as the trainer's objective actually builds them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import HIDDEN, MAX_LEN, MODELS, N_ITEMS, tiny_config, tiny_model, tiny_split

from catrec.models import REGISTRY
from catrec.train import objectives
from catrec.train.loop import build_objective, make_batch, training_set
from catrec.train.objectives import Objective, rec_loss


def _ids(rows: list[list[int]], width: int) -> torch.Tensor:
    """Left-pad item lists to ``[len(rows), width]``."""
    out = torch.zeros(len(rows), width, dtype=torch.long)
    for r, items in enumerate(rows):
        if items:
            out[r, width - len(items) :] = torch.tensor(items)
    return out


def test_registry_covers_every_configurable_model():
    from catrec.config import MODELS as CONFIG_MODELS

    assert sorted(REGISTRY) == sorted(CONFIG_MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_build_model_gives_registered_class(name):
    model = tiny_model(name)
    assert type(model) is REGISTRY[name]
    assert isinstance(model.causal, bool)
    assert model.max_len == MAX_LEN and model.hidden_size == HIDDEN and model.n_items == N_ITEMS


@pytest.mark.parametrize("name", MODELS)
def test_shapes(name):
    model = tiny_model(name).eval()
    table = model.item_table()
    assert table.shape[0] >= N_ITEMS + 1 and table.shape[1] == HIDDEN
    if model.causal:
        assert model.mask_token is None
    else:
        # The mask token is a row of the table beyond the items: never scored, never an item.
        assert N_ITEMS < model.mask_token < table.shape[0]
    ids = _ids([[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11], []], 8)
    e = model.embed(ids)
    assert e.shape == (3, 8, HIDDEN)
    assert torch.equal(model.embed(ids, table * 2), e * 2)  # the given table is the one used
    h = model.encode(e, ids > 0)
    assert h.shape == (3, 8, HIDDEN)
    assert model.score(h).shape == (3, 8, N_ITEMS + 1)
    assert torch.equal(model.forward(ids), h)
    p = model.predict(ids)
    assert p.shape == (3, N_ITEMS + 1)
    assert torch.isfinite(p).all()  # an empty history still gives finite scores


@pytest.mark.parametrize("name", MODELS)
def test_padding_invariance(name):
    """Left padding (and the padding row's content) changes no real hidden state and no score."""
    model = tiny_model(name, randomize=True).eval()
    seq = [3, 17, 5, 29, 8]
    alone = _ids([seq], len(seq))
    padded = _ids([seq], MAX_LEN - 1)
    # In a batch with a full-length row, so that the batch is not trimmed around this row.
    batch = _ids([list(range(11, 11 + MAX_LEN)), seq], MAX_LEN)
    p_alone = model.predict(alone)[0]
    torch.testing.assert_close(model.predict(padded)[0], p_alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.predict(batch)[1], p_alone, atol=1e-5, rtol=0)
    assert p_alone.std() > 1e-3  # non-constant scores, so the comparison means something

    h_alone = model.forward(alone)[0]
    h_padded = model.forward(padded)[0, -len(seq) :]
    torch.testing.assert_close(h_padded, h_alone, atol=1e-5, rtol=0)

    # A perturbed table may carry anything in the padding row: real positions must not see it.
    table = model.item_table().detach().clone()
    table[0] = torch.randn(HIDDEN) * 10
    h_noise = model.encode(model.embed(padded, table), padded > 0)[0, -len(seq) :]
    torch.testing.assert_close(h_noise, h_alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_causality_declaration(name):
    """Causal: changing item t leaves positions < t unchanged. Bidirectional: it changes them."""
    model = tiny_model(name, randomize=True).eval()
    ids = _ids([[3, 17, 5, 29, 8, 12, 1]], MAX_LEN)
    t = MAX_LEN - 3
    changed = ids.clone()
    changed[0, t] = 33
    h, h2 = model.forward(ids)[0], model.forward(changed)[0]
    real = ids[0] > 0
    before = real.clone()
    before[t:] = False
    assert not torch.allclose(h[t:], h2[t:], atol=1e-6)  # the change does reach position t
    if model.causal:
        torch.testing.assert_close(h2[before], h[before], atol=1e-6, rtol=0)
    else:
        assert not torch.allclose(h2[before], h[before], atol=1e-6)


def _fixed_batch(model, config, rows: int = 12, seed: int = 0):
    split = tiny_split()
    tset = training_set(split, model, config)
    torch.manual_seed(seed)
    batch = make_batch(model, tset.window[:rows], tset.weights[:rows], config, torch.device("cpu"))
    return split, tset, batch


def _clean_loss(model, batch) -> float:
    with torch.no_grad():
        h = model.encode(model.embed(batch.inputs), batch.inputs > 0)
        return float(rec_loss(model, h, batch.targets, model.item_table()))


@pytest.mark.parametrize("mode", ["standard", "cat"])
@pytest.mark.parametrize("name", MODELS)
def test_one_step_reduces_loss(name, mode):
    config = tiny_config(name, mode=mode)
    model = tiny_model(name, mode=mode)
    _, tset, batch = _fixed_batch(model, config)
    objective = build_objective(config, tset, torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = _clean_loss(model, batch)
    optimizer.zero_grad()
    loss, diag = objective(model, batch, adversarial=True)
    loss.backward()
    assert diag["loss_rec"] == pytest.approx(before, rel=1e-5)  # dropout 0: same clean pass
    if mode == "cat":
        assert {"loss_1", "loss_2"} <= diag.keys()
    optimizer.step()
    assert _clean_loss(model, batch) < before


class _Recorder:
    """Wraps a perturbation function, keeping each call's result."""

    def __init__(self, fn):
        self.fn = fn
        self.outputs: list[torch.Tensor] = []

    def __call__(self, *args, **kwargs):
        out = self.fn(*args, **kwargs)
        self.outputs.append(out.detach().clone())
        return out


@pytest.mark.parametrize("mode", ["adv", "cat"])
@pytest.mark.parametrize("name", MODELS)
def test_cat_step_perturbations(name, mode, monkeypatch):
    """Level 1 only at real interactions, norm eps * s * c(u, t); level 2 on item rows only, norm
    eps_item * s_table * c_item(i); both along the clean loss gradient (CAT.md §2)."""
    eps, eps_item = 0.3, 0.2
    config = tiny_config(name, mode=mode, eps=eps, eps_item=eps_item)
    model = tiny_model(name, mode=mode)
    _, tset, batch = _fixed_batch(model, config)
    inputs = batch.inputs
    real = (inputs > 0) & (inputs <= N_ITEMS)
    assert (inputs == 0).any()  # the batch has padding ...
    if not model.causal:
        assert (inputs == model.mask_token).any()  # ... and, for cloze models, masked positions

    # Expected values, computed independently of the objective (no dropout: same clean pass).
    table = model.item_table().detach().clone().requires_grad_(True)
    e = model.embed(inputs, table)
    e.retain_grad()
    loss = rec_loss(model, model.encode(e, inputs > 0), batch.targets, table)
    loss.backward()
    g, G = e.grad.detach(), table.grad.detach()
    s = e.detach().norm(dim=-1)[real].mean()
    c = batch.weights
    if mode == "cat":
        assert c[real].std() > 0.05  # cascade weights differ, so wrong scaling would be caught
    else:
        assert torch.all(c[real] == 1.0)
    s_table = table.detach()[1 : N_ITEMS + 1].norm(dim=-1).mean()

    rec1 = _Recorder(objectives.interaction_perturbation)
    rec2 = _Recorder(objectives.item_perturbation)
    monkeypatch.setattr(objectives, "interaction_perturbation", rec1)
    monkeypatch.setattr(objectives, "item_perturbation", rec2)
    model.zero_grad()
    objective = build_objective(config, tset, torch.device("cpu"))
    assert isinstance(objective, Objective)
    _, diag = objective(model, batch, adversarial=True)
    assert np.isfinite(diag["loss"])

    # Level 1.
    assert len(rec1.outputs) == 1
    delta = rec1.outputs[0]
    assert delta.shape == e.shape
    assert torch.all(delta[~real] == 0)  # padding and mask tokens: nothing
    norms = delta.norm(dim=-1)
    torch.testing.assert_close(norms[real], eps * s * c[real], rtol=1e-4, atol=1e-7)
    cos = torch.nn.functional.cosine_similarity(delta[real], g[real], dim=-1)
    torch.testing.assert_close(cos, torch.ones_like(cos), rtol=0, atol=1e-4)

    # Level 2: cat only (adv is level 1 with lambda_2 = 0).
    if mode == "adv":
        assert rec2.outputs == [] and "loss_2" not in diag
        return
    assert len(rec2.outputs) == 1
    # The objective zeroes rows past the items after the call; read the rows it really used.
    Delta = rec2.outputs[0]
    Delta[N_ITEMS + 1 :] = 0.0
    assert torch.all(Delta[0] == 0)
    c_item = torch.as_tensor(tset.item_weights)[1 : N_ITEMS + 1]
    assert c_item.std() > 0.05
    items = Delta[1 : N_ITEMS + 1]
    has_grad = G[1 : N_ITEMS + 1].norm(dim=-1) > 0
    assert has_grad.all()  # full softmax: every item row gets a gradient
    expected = eps_item * s_table * c_item
    torch.testing.assert_close(items.norm(dim=-1), expected, rtol=1e-4, atol=1e-7)
    cos = torch.nn.functional.cosine_similarity(items, G[1 : N_ITEMS + 1], dim=-1)
    torch.testing.assert_close(cos, torch.ones_like(cos), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", [n for n in MODELS if not REGISTRY[n].causal])
def test_level2_leaves_mask_token_row_alone(name, monkeypatch):
    """The mask token is no item: the level-2 table the objective uses keeps its row unchanged."""
    config = tiny_config(name, mode="cat")
    model = tiny_model(name, mode="cat")
    _, tset, batch = _fixed_batch(model, config)
    seen: list[torch.Tensor] = []

    def spy_embed(item_ids, table=None):
        if table is not None:
            seen.append(table.detach().clone())
        used = model.item_table() if table is None else table
        return torch.nn.functional.embedding(item_ids, used)

    monkeypatch.setattr(model, "embed", spy_embed)
    build_objective(config, tset, torch.device("cpu"))(model, batch, adversarial=True)
    assert len(seen) == 1  # the level-2 pass
    E = model.item_table().detach()
    assert torch.equal(seen[0][model.mask_token :], E[model.mask_token :])
    assert not torch.equal(seen[0][1 : N_ITEMS + 1], E[1 : N_ITEMS + 1])


@pytest.mark.parametrize("name", MODELS)
def test_evaluation_does_not_depend_on_batch_composition(name):
    """Full-ranking metrics are the same whatever users share an evaluation batch."""
    from catrec.evaluate import evaluate_ranking

    split = tiny_split(n_users=40)
    model = tiny_model(name, randomize=True)
    small = evaluate_ranking(model, split.valid_inputs, split.valid_targets, batch_size=3)
    whole = evaluate_ranking(model, split.valid_inputs, split.valid_targets, batch_size=1000)
    assert small == pytest.approx(whole, abs=1e-9)
