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


def _clean_pass_and_perturbations(model, batch, item_w, eps, eps_item):
    """Reference, step by step and independently of Objective: ``L_rec`` (graph kept), the
    level-1 perturbation ``delta [B, L, d]`` and the perturbed table ``E + Delta [V, d]``."""
    table = model.item_table()
    e = model.embed(batch.inputs)
    pad = batch.inputs > 0
    l_rec = rec_loss(model, model.encode(e, pad), batch.targets, table)
    g, G = torch.autograd.grad(l_rec, [e, table], retain_graph=True)
    delta = interaction_perturbation(g, e.detach(), pad, batch.weights, eps)
    n_scored = model.n_items + 1
    t2 = table + item_perturbation(G, table.detach(), item_w, eps_item, n_scored=n_scored)
    return l_rec, delta, t2


def test_cat_objective_gradient_equals_explicit_sum():
    """grad of L_rec + l1*L_1 + l2*L_2 with perturbations built from the clean gradients."""
    model, batch = _model_and_batch()
    item_w = torch.linspace(0.5, 2.0, 21)
    obj = Objective(lambda_1=0.7, lambda_2=0.4, eps=0.3, eps_item=0.2, item_weights=item_w)
    loss, diag = obj(model, batch)
    assert all(p.grad is None for p in model.parameters())  # the objective runs no backward
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    # Reference computed step by step, independently of Objective.
    model.zero_grad()
    l_rec, delta, t2 = _clean_pass_and_perturbations(model, batch, item_w, 0.3, 0.2)
    table, pad = model.item_table(), batch.inputs > 0
    l1 = rec_loss(model, model.encode(model.embed(batch.inputs) + delta, pad), batch.targets, table)
    l2 = rec_loss(model, model.encode(model.embed(batch.inputs, t2), pad), batch.targets, t2)
    total = l_rec + 0.7 * l1 + 0.4 * l2
    total.backward()
    assert diag["loss"] == pytest.approx(total.item(), rel=1e-5)
    assert diag["loss_1"] > diag["loss_rec"] and diag["loss_2"] > diag["loss_rec"]
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_standard_objective_has_no_adversarial_terms():
    model, batch = _model_and_batch()
    loss, diag = Objective()(model, batch)
    assert set(diag) == {"loss", "loss_rec"}
    assert diag["loss"] == diag["loss_rec"] == pytest.approx(loss.item(), rel=1e-6)


def test_objective_respects_warmup_switch():
    model, batch = _model_and_batch()
    _, diag = Objective(lambda_1=1.0, lambda_2=1.0)(model, batch, adversarial=False)
    assert "loss_1" not in diag


def test_objective_keeps_gradients_already_accumulated():
    """The loop owns backward: a gradient accumulated before the step (e.g. gradient
    accumulation over micro-batches) survives on every parameter, the item table included."""
    model, batch = _model_and_batch()
    obj = Objective(lambda_1=1.0, lambda_2=1.0, eps=0.2, eps_item=0.2)
    loss, _ = obj(model, batch)
    loss.backward()
    once = {n: p.grad.clone() for n, p in model.named_parameters()}
    loss, _ = obj(model, batch)  # same batch, no dropout: the same gradient again
    loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * once[n], rtol=1e-5, atol=1e-7, msg=n)


def _old_objective_grads(model, batch, lambda_1, lambda_2, eps, eps_item, item_w):
    """The objective as it was before it returned its loss: backward of the clean loss first
    (reading ``e.grad`` and ``table.grad``), then the adversarial passes and a second backward."""
    pad = batch.inputs > 0
    table = model.item_table()
    e = model.embed(batch.inputs)
    e.retain_grad()
    l_rec = rec_loss(model, model.encode(e, pad), batch.targets, table)
    (l_rec * batch.loss_scale).backward()
    delta = interaction_perturbation(e.grad, e.detach(), pad, batch.weights, eps)
    G = table.grad.detach().clone()
    h1 = model.encode(model.embed(batch.inputs) + delta, pad)
    adv = lambda_1 * rec_loss(model, h1, batch.targets, table)
    Delta = item_perturbation(G, table.detach(), item_w, eps_item, n_scored=model.n_items + 1)
    t2 = table + Delta
    adv = adv + lambda_2 * rec_loss(
        model, model.encode(model.embed(batch.inputs, t2), pad), batch.targets, t2
    )
    (adv * batch.loss_scale).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_same_gradients_as_the_old_objective_with_fresh_dropout_masks():
    """With shared_dropout off, returning the loss changes no number (1e-6): same dropout draws
    in the same order, same perturbations, same parameter gradients."""
    torch.manual_seed(0)
    model = SASRec(n_items=20, hidden_size=8, max_len=5, n_layers=1, n_heads=2, dropout=0.3)
    _, batch = _model_and_batch()
    batch.loss_scale = 1.7
    item_w = torch.linspace(0.5, 2.0, 21)
    torch.manual_seed(5)
    old = _old_objective_grads(model, batch, 0.7, 0.4, 0.3, 0.2, item_w)
    model.zero_grad(set_to_none=True)
    obj = Objective(
        lambda_1=0.7,
        lambda_2=0.4,
        eps=0.3,
        eps_item=0.2,
        item_weights=item_w,
        shared_dropout=False,
    )
    torch.manual_seed(5)
    loss, _ = obj(model, batch)
    loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, old[n], rtol=1e-6, atol=1e-7, msg=n)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "bert4rec"])
def test_shared_dropout_masks_make_a_zero_perturbation_reproduce_the_clean_loss(name):
    """CAT.md §2 shared_dropout: the perturbed passes run the clean pass's sub-network, so with
    eps = eps_item = 0 both adversarial losses equal L_rec exactly; with fresh masks they do not."""
    from catrec.models import REGISTRY

    torch.manual_seed(0)
    cls = REGISTRY[name]
    kwargs = {"n_layers": 1, "dropout": 0.5}
    if name != "gru4rec":
        kwargs["n_heads"] = 2
    model = cls(n_items=20, hidden_size=8, max_len=6, **kwargs)
    model.train()
    _, batch = _model_and_batch()
    if name == "bert4rec":  # cloze inputs: one masked position per row is the target
        inputs = batch.inputs.clone()
        inputs[:, -1] = model.mask_token
        batch = Batch(
            inputs=inputs,
            targets=torch.where(inputs == model.mask_token, batch.targets, 0),
            weights=batch.weights,
        )
    for shared in (True, False):
        obj = Objective(lambda_1=1.0, lambda_2=1.0, eps=0.0, eps_item=0.0, shared_dropout=shared)
        torch.manual_seed(1)
        _, diag = obj(model, batch)
        if shared:
            assert diag["loss_1"] == diag["loss_rec"] and diag["loss_2"] == diag["loss_rec"]
        else:
            assert diag["loss_1"] != diag["loss_rec"] and diag["loss_2"] != diag["loss_rec"]


def test_shared_dropout_leaves_the_generator_after_the_clean_pass():
    """Shared masks: the adversarial passes do not advance the RNG, so the next draw equals the
    one after a clean pass alone (a standard step)."""
    torch.manual_seed(0)
    model = SASRec(n_items=20, hidden_size=8, max_len=5, n_layers=1, n_heads=2, dropout=0.5)
    _, batch = _model_and_batch()
    torch.manual_seed(3)
    Objective(lambda_1=1.0, lambda_2=1.0, eps=0.1, eps_item=0.1)(model, batch)
    after_cat = torch.rand(4)
    torch.manual_seed(3)
    Objective()(model, batch)
    assert torch.equal(after_cat, torch.rand(4))


def test_fused_adv_objective_equals_hand_built_reference():
    """adv_objective = fused: one perturbed pass, inputs looked up in E + Delta plus delta and
    scored against E + Delta; L = L_rec + (lambda_1 + lambda_2) * L_12 (docs/CAT.md)."""
    model, batch = _model_and_batch()
    item_w = torch.linspace(0.5, 2.0, 21)
    obj = Objective(
        lambda_1=0.7, lambda_2=0.4, eps=0.3, eps_item=0.2, item_weights=item_w, fused=True
    )
    loss, diag = obj(model, batch)
    assert set(diag) == {"loss", "loss_rec", "loss_12", "delta_norm"}
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    l_rec, delta, t2 = _clean_pass_and_perturbations(model, batch, item_w, 0.3, 0.2)
    h12 = model.encode(model.embed(batch.inputs, t2) + delta, batch.inputs > 0)
    l12 = rec_loss(model, h12, batch.targets, t2)
    total = l_rec + (0.7 + 0.4) * l12
    total.backward()
    assert diag["loss"] == pytest.approx(total.item(), rel=1e-5)
    assert diag["loss_12"] == pytest.approx(l12.item(), rel=1e-5)
    assert diag["loss_12"] > diag["loss_rec"]
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize(("lambda_1", "lambda_2"), [(1.0, 0.0), (0.0, 0.5)])
def test_fused_equals_exact_with_one_level(lambda_1, lambda_2):
    """With one level on (mode adv: level 1 only) the fused objective is the exact one."""
    grads, diags = [], []
    for fused in (False, True):
        model, batch = _model_and_batch()
        obj = Objective(lambda_1=lambda_1, lambda_2=lambda_2, eps=0.2, eps_item=0.2, fused=fused)
        loss, diag = obj(model, batch)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        diags.append(diag)
    assert diags[0] == diags[1]
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=0, atol=0, msg=n)


def test_fused_softmax_ce_under_bf16_autocast():
    """bf16: the products run in bf16, the normalisation and loss in fp32; loss and gradients
    stay close to fp32 (bf16 keeps ~3 significant digits) and keep the inputs' dtypes."""
    torch.manual_seed(0)
    h = torch.randn(300, 16, requires_grad=True)
    w = (0.3 * torch.randn(500, 16)).requires_grad_()
    y = torch.randint(0, 500, (300,))
    ref = F.cross_entropy(h @ w.T, y)
    rh, rw = torch.autograd.grad(ref, [h, w])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = full_softmax_ce(h, w, y, chunk=128)
    assert loss.dtype == torch.float32
    gh, gw = torch.autograd.grad(loss, [h, w])
    assert gh.dtype == gw.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=1e-2)
    torch.testing.assert_close(gh, rh, rtol=0.05, atol=2e-4)
    torch.testing.assert_close(gw, rw, rtol=0.05, atol=2e-4)


def test_cat_objective_under_bf16_autocast_is_close_to_fp32():
    """precision = bf16 (the loop's autocast): same losses and gradients to bf16 accuracy, fp32
    gradients on fp32 parameters."""
    results = []
    for bf16 in (False, True):
        model, batch = _model_and_batch()
        obj = Objective(lambda_1=1.0, lambda_2=1.0, eps=0.2, eps_item=0.2)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, diag = obj(model, batch)
        loss.backward()
        results.append((diag, {n: p.grad for n, p in model.named_parameters()}))
    (d32, g32), (d16, g16) = results
    for k in ("loss_rec", "loss_1", "loss_2"):
        assert d16[k] == pytest.approx(d32[k], rel=2e-2)
    for n in g32:
        assert g16[n].dtype == torch.float32
        cos = F.cosine_similarity(g16[n].flatten(), g32[n].flatten(), dim=0)
        assert cos > 0.99, n


def test_replacement_items_pick_the_largest_first_order_gain():
    """g · E_j over the items, the current item excluded; padding and mask tokens kept."""
    from catrec.adversarial import perturb

    table = torch.tensor(
        [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.5, 0.5], [9.0, 9.0]]
    )  # rows 0 (padding), items 1..4, row 5 a mask token
    inputs = torch.tensor([[0, 1, 2, 5], [3, 4, 1, 2]])
    grad = torch.zeros(2, 4, 2)
    grad[0, 1] = torch.tensor([1.0, 0.0])  # item 1 holds: best other is 4 (0.5); 1 itself banned
    grad[0, 2] = torch.tensor([0.0, -1.0])  # item 2: all others score 0 or less -> first max: 1
    grad[1, 0] = torch.tensor([-1.0, 0.0])  # item 3 holds, itself the best: banned -> 2 (gain 0)
    grad[1, 1] = torch.tensor([1.0, 1.0])  # item 4: 1 and 2 tie at 1 (argmax: first) -> 1
    grad[1, 2] = torch.tensor([0.0, 1.0])  # item 1: 2 (gain 1)
    grad[1, 3] = torch.tensor([1.0, 0.0])  # item 2: 1
    out = perturb.replacement_items(grad, inputs, table, n_items=4, prob=1.0)
    assert out.tolist() == [[0, 4, 1, 5], [2, 1, 2, 1]]
    assert inputs.tolist() == [[0, 1, 2, 5], [3, 4, 1, 2]]  # not modified
    torch.manual_seed(3)
    big = torch.randn(6, 40, 2)
    ids = torch.randint(1, 5, (6, 40))
    whole = perturb.replacement_items(big, ids, table, 4, 1.0)
    old = perturb._GAIN_BLOCK
    perturb._GAIN_BLOCK = 8  # two rows per block
    try:
        assert torch.equal(perturb.replacement_items(big, ids, table, 4, 1.0), whole)
    finally:
        perturb._GAIN_BLOCK = old
    torch.manual_seed(0)
    some = perturb.replacement_items(big, ids, table, 4, 0.25)
    assert 0.15 < float((some != ids).float().mean()) < 0.35


def test_replacement_term_equals_hand_built_reference():
    """L = L_rec + lambda_replace * L_rec(adversarially replaced inputs), gradients included."""
    from catrec.adversarial.perturb import replacement_items

    model, batch = _model_and_batch()
    obj = Objective(lambda_1=0.0, lambda_replace=0.8, replace_prob=1.0)
    loss, diag = obj(model, batch)
    assert set(diag) == {"loss", "loss_rec", "loss_replace"}
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    table = model.item_table()
    e = model.embed(batch.inputs)
    l_rec = rec_loss(model, model.encode(e, batch.inputs > 0), batch.targets, table)
    (g,) = torch.autograd.grad(l_rec, [e], retain_graph=True)
    replaced = replacement_items(g, batch.inputs, table.detach(), model.n_items, 1.0)
    assert torch.equal(replaced == 0, batch.inputs == 0)
    assert not bool((replaced == batch.inputs)[batch.inputs > 0].any())
    l_rep = rec_loss(model, model(replaced), batch.targets, table)
    total = l_rec + 0.8 * l_rep
    total.backward()
    assert diag["loss_replace"] == pytest.approx(l_rep.item(), rel=1e-5)
    assert diag["loss"] == pytest.approx(total.item(), rel=1e-5)
    assert diag["loss_replace"] > diag["loss_rec"]  # the first-order step raises the loss
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)
