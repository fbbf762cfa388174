"""Objectives: the fused full-softmax loss and the gradients CAT's objective leaves behind."""

import pytest
import torch
from torch.nn import functional as F

from catrec.adversarial.perturb import interaction_perturbation, item_perturbation
from catrec.models.sasrec import SASRec
from catrec.train.objectives import Batch, Objective, rec_loss
from catrec.train.softmax_ce import full_softmax_ce


def test_fused_softmax_ce_equals_cross_entropy():
    torch.manual_seed(0)
    h = torch.randn(37, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 50, (37,))
    loss = full_softmax_ce(h, w, y, chunk=10)
    gh, gw = torch.autograd.grad(3.0 * loss, [h, w])
    ref = F.cross_entropy(h @ w.T, y)
    rh, rw = torch.autograd.grad(3.0 * ref, [h, w])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(gh, rh)
    torch.testing.assert_close(gw, rw)


def _model_and_batch():
    torch.manual_seed(0)
    model = SASRec(n_items=20, hidden_size=8, max_len=5, n_layers=1, n_heads=2, dropout=0.0)
    inputs = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 6]])
    targets = torch.tensor([[0, 0, 4, 5, 7], [2, 3, 4, 6, 8]])
    weights = torch.tensor([[0, 0, 1.5, 1.0, 0.5], [2.0, 1.0, 1.0, 0.5, 0.25]])
    return model, Batch(inputs=inputs, targets=targets, weights=weights)


def test_rec_loss_ignores_padding_and_matches_reference():
    model, batch = _model_and_batch()
    h = model(batch.inputs)
    loss = rec_loss(model, h, batch.targets, model.item_table())
    logits = model.score(h[batch.targets > 0])[:, 1:]
    ref = F.cross_entropy(logits, batch.targets[batch.targets > 0] - 1)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


def test_cat_objective_gradient_equals_explicit_sum():
    """grad of L_rec + l1*L_1 + l2*L_2 with perturbations built from the clean gradients."""
    model, batch = _model_and_batch()
    item_w = torch.linspace(0.5, 2.0, 21)
    obj = Objective(lambda_1=0.7, lambda_2=0.4, eps=0.3, eps_item=0.2, item_weights=item_w)
    diag = obj(model, batch)
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    # Reference computed step by step, independently of Objective.
    model.zero_grad()
    table = model.item_table()
    e = model.embed(batch.inputs)
    pad = batch.inputs > 0
    l_rec = rec_loss(model, model.encode(e, pad), batch.targets, table)
    g, G = torch.autograd.grad(l_rec, [e, table], retain_graph=True)
    delta = interaction_perturbation(g, e.detach(), pad, batch.weights, 0.3)
    Delta = item_perturbation(G, table.detach(), item_w, 0.2, n_scored=21)
    l1 = rec_loss(model, model.encode(model.embed(batch.inputs) + delta, pad), batch.targets, table)
    t2 = table + Delta
    l2 = rec_loss(model, model.encode(model.embed(batch.inputs, t2), pad), batch.targets, t2)
    total = l_rec + 0.7 * l1 + 0.4 * l2
    total.backward()
    assert diag["loss"] == pytest.approx(total.item(), rel=1e-5)
    assert diag["loss_1"] > diag["loss_rec"] and diag["loss_2"] > diag["loss_rec"]
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_standard_objective_has_no_adversarial_terms():
    model, batch = _model_and_batch()
    diag = Objective()(model, batch)
    assert set(diag) == {"loss", "loss_rec"}
    assert diag["loss"] == diag["loss_rec"]


def test_objective_respects_warmup_switch():
    model, batch = _model_and_batch()
    diag = Objective(lambda_1=1.0, lambda_2=1.0)(model, batch, adversarial=False)
    assert "loss_1" not in diag
