"""Training objectives: standard, generic adversarial (``adv``) and cascade-guided (``cat``).

CAT.md §3 (Tan et al., SDM 2024, §3):

    L = L_rec + lambda_1 * L_1 + lambda_2 * L_2

``L_1`` is ``L_rec`` on input embeddings perturbed per interaction (level 1), ``L_2`` is ``L_rec``
with the whole item table perturbed (level 2). Perturbations come from the gradients of the clean
pass, taken with ``torch.autograd.grad`` (nothing is written to ``.grad``):
an objective returns the total loss and the training loop alone calls ``backward`` (STYLE.md
rule 1), so gradient accumulation, clipping, mixed precision and DDP live in one place. The clean
graph is traversed once: its parameter gradients travel to the loop's backward through a
zero-valued surrogate (:func:`clean_gradients`).

``adv_objective = fused`` (an option, not the paper's objective) evaluates both perturbations in
one perturbed pass: ``L = L_rec + (lambda_1 + lambda_2) * L_12``, where ``L_12`` is ``L_rec`` with
the inputs looked up in ``E + Delta`` plus ``delta`` and scored against ``E + Delta``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from catrec.adversarial.perturb import (
    interaction_perturbation,
    item_perturbation,
    real_items,
    replacement_items,
)
from catrec.metrics.ranking import NumericalError
from catrec.models.base import SequentialRecommender
from catrec.train.softmax_ce import full_softmax_ce


@dataclass
class Batch:
    """One training batch.

    Attributes:
        inputs: ``[B, L]`` input item ids (0 = padding; a model's mask token may occur).
        targets: ``[B, L]`` item to predict at each position, 0 where there is no loss.
        weights: ``[B, L]`` cascade weight c(u, t) of each input position (0 on padding).
        negatives: ``[B, L]`` sampled negative items for the ``bce`` loss, else None.
        loss_scale: multiplies the per-position mean loss; ``N_batch / mean N`` under length
            bucketing so that each position weighs the same whatever its batch (under DDP, also
            times ``share``).
        share: this rank's share of the union batch's target positions (DDP; 1 in a single
            process, 0 for a rank without rows this step).
    """

    inputs: Tensor
    targets: Tensor
    weights: Tensor
    negatives: Tensor | None = None
    loss_scale: float = 1.0
    share: float = 1.0


def rec_loss(
    model: SequentialRecommender,
    hidden: Tensor,
    targets: Tensor,
    table: Tensor,
    loss: str = "ce",
    negatives: Tensor | None = None,
) -> Tensor:
    """Recommendation loss at the positions where ``targets [B, L] > 0``.

    ``ce``: full-softmax cross-entropy over all items (padding excluded); logits are computed only
    for positions with a target, ``[N, n_items]``, never for padding positions. This assumes the
    model scores by dot product with the table, as the contract's default ``score`` does.
    ``bce``: binary cross-entropy of the target against one sampled negative (Kang & McAuley,
    ICDM 2018).

    Args:
        hidden: ``[B, L, d]`` hidden states; table: ``[V, d]`` item table (possibly perturbed).
    """
    sel = targets > 0
    h = hidden[sel]  # [N, d]
    y = targets[sel]  # [N]
    if loss == "ce":
        # Candidates are the item rows 1..n_items (padding is never a candidate); equivalent to
        # F.cross_entropy(model.score(h, table)[:, 1:], y - 1), fused and chunked for speed.
        return full_softmax_ce(h, table[1 : model.n_items + 1], y - 1)
    if negatives is None:
        raise ValueError("the bce loss needs sampled negatives")
    neg = negatives[sel]
    pos_logit = (h * table[y]).sum(-1)
    neg_logit = (h * table[neg]).sum(-1)
    return -(F.logsigmoid(pos_logit) + F.logsigmoid(-neg_logit)).mean()


@contextlib.contextmanager
def replay_rng(state: tuple[Tensor, list[Tensor]] | None) -> Iterator[None]:
    """Run the block with the torch RNG set to ``state`` (CPU, and CUDA when present), or as is.

    With the same input shapes, a replayed state draws the same dropout masks (catrec's
    :class:`~catrec.models.base.Dropout` and attention dropout both draw from it), so a perturbed
    pass runs the very sub-network the clean pass ran. The generator is left where the clean pass
    left it, so the number of perturbed passes does not shift later draws.
    """
    if state is None:
        yield
        return
    after = rng_state()
    set_rng_state(state)
    try:
        yield
    finally:
        set_rng_state(after)


def rng_state() -> tuple[Tensor, list[Tensor]]:
    """The torch RNG state: CPU generator and every CUDA device's (empty without CUDA)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return torch.get_rng_state(), cuda


def set_rng_state(state: tuple[Tensor, list[Tensor]]) -> None:
    """Restore a state from :func:`rng_state`."""
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


def clean_gradients(
    model: SequentialRecommender, l_rec: Tensor, e: Tensor, table: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of the clean loss in ONE backward traversal of the clean graph, which is then
    freed.

    Returns ``g = dL_rec/de [B, L, d]``, ``G = dL_rec/dE [V, d]`` (through the input lookup and the
    output scores) and ``clean``: a scalar equal to 0 whose gradient w.r.t. every parameter p is
    ``dL_rec/dp`` (the surrogate ``sum_p <p, dL_rec/dp>`` minus its detached value). The objective
    returns ``L_rec.detach() + clean + adversarial terms``: the loop's backward then yields the
    same gradients as a backward through ``L_rec`` itself, without traversing the clean graph a
    second time (as ``autograd.grad(..., retain_graph=True)`` followed by that backward did:
    about one encoder backward per step). Nothing is written to ``.grad`` here.
    """
    params = [p for p in model.parameters() if p.requires_grad and p is not table]
    wrt = [e, table, *params]
    grads = torch.autograd.grad(l_rec, wrt, allow_unused=True)
    surrogate = sum(
        ((p * gp).sum() for p, gp in zip(wrt[1:], grads[1:], strict=True) if gp is not None),
        start=l_rec.new_zeros(()),
    )
    return grads[0], grads[1], surrogate - surrogate.detach()


class Objective:
    """The loss of one training step (CAT.md §3): ``L_rec + lambda_1 * L_1 + lambda_2 * L_2``
    (``+ lambda_replace * L_replace``, an option beyond the paper).

    Args:
        loss: ``ce`` or ``bce`` (see :func:`rec_loss`).
        lambda_1, lambda_2: weights of the level-1 and level-2 adversarial losses (0 disables).
        eps, eps_item: perturbation sizes (relative to embedding norms unless ``eps_absolute``).
        item_weights: ``[n_rows]`` c_item(i) for level 2 (ones for generic training).
        shared_dropout: the perturbed passes reuse the clean pass's dropout masks (CAT.md §2), so
            the FGSM direction perturbs the sub-network it was computed on; otherwise each pass
            draws fresh masks.
        lambda_replace, replace_prob: weight of the adversarial item-replacement loss (issue 12,
            not the paper's: L_rec on inputs whose items are replaced, at rate ``replace_prob``,
            by the item of largest first-order loss gain, :func:`replacement_items`; 0 disables).
        fused: with both levels on, evaluate them in one perturbed pass (``adv_objective =
            fused``): inputs looked up in ``E + Delta`` plus ``delta``, scored against
            ``E + Delta``, loss ``L_rec + (lambda_1 + lambda_2) * L_12``. One full-softmax pass
            less than the exact objective, and not the paper's objective (docs/CAT.md).

    Under DDP (``dist`` set by :class:`catrec.train.distributed.DDPObjective`), the batch-level
    quantities are reduced over ranks so that the step equals the single process's step on the
    union batch: level 1's relative scale and level 2's item-table gradient.
    """

    dist = None  # a catrec.train.distributed.DistContext when training data-parallel

    def __init__(
        self,
        loss: str = "ce",
        lambda_1: float = 0.0,
        lambda_2: float = 0.0,
        eps: float = 0.3,
        eps_item: float = 0.3,
        eps_absolute: bool = False,
        item_weights: Tensor | None = None,
        shared_dropout: bool = True,
        fused: bool = False,
        lambda_replace: float = 0.0,
        replace_prob: float = 0.2,
    ) -> None:
        self.loss = loss
        self.lambda_1 = lambda_1
        self.lambda_2 = lambda_2
        self.eps = eps
        self.eps_item = eps_item
        self.eps_absolute = eps_absolute
        self.item_weights = item_weights
        self.shared_dropout = shared_dropout
        self.fused = fused
        self.lambda_replace = lambda_replace
        self.replace_prob = replace_prob

    def perturbation_mask(self, model: SequentialRecommender, inputs: Tensor) -> Tensor:
        """``[B, L]`` True at real interactions (not padding, not a mask token)."""
        return real_items(inputs, model.n_items)

    def __call__(
        self, model: SequentialRecommender, batch: Batch, adversarial: bool = True
    ) -> tuple[Tensor, dict[str, float]]:
        """The step's loss ``L * batch.loss_scale`` (a scalar to call ``backward`` on) and its
        diagnostics (``loss``, ``loss_rec``, and ``loss_1``, ``loss_2`` (exact) or ``loss_12``
        (fused), ``delta_norm``, ``loss_replace`` when the adversarial terms run; unscaled
        floats).

        Leaves every ``.grad`` untouched: the clean gradients that build the perturbations are
        taken with ``torch.autograd.grad`` (:func:`clean_gradients`).

        Raises:
            NumericalError: the clean or an adversarial loss is NaN or infinite.
        """
        pad = batch.inputs > 0
        table = model.item_table()
        adversarial = adversarial and (
            self.lambda_1 > 0 or self.lambda_2 > 0 or self.lambda_replace > 0
        )
        e = model.embed(batch.inputs)  # [B, L, d]
        masks = rng_state() if adversarial and self.shared_dropout else None
        hidden = model.encode(e, pad)
        l_rec = rec_loss(model, hidden, batch.targets, table, self.loss, batch.negatives)
        if not torch.isfinite(l_rec):
            raise NumericalError(f"recommendation loss is {float(l_rec.detach())}")
        out = {"loss": l_rec.item(), "loss_rec": l_rec.item()}
        if not adversarial:
            return l_rec * batch.loss_scale, out

        g, G, clean = clean_gradients(model, l_rec, e, table)
        if self.dist is not None and self.lambda_2 > 0:
            # DDP: the union's G is the share-weighted sum of the ranks' G (module docstring of
            # catrec.train.distributed); level 1's direction is per row and needs no reduction.
            G = G * batch.share
            self.dist.sum_(G, "the level-2 gradient reduction")
        total = l_rec.detach() + clean
        real = self.perturbation_mask(model, batch.inputs)
        delta = None
        if self.lambda_1 > 0:
            delta = interaction_perturbation(
                g,
                e.detach(),
                real,
                batch.weights,
                self.eps,
                self.eps_absolute,
                scale=self._union_scale(e, real, batch),
            )
            out["delta_norm"] = float(delta.norm(dim=-1)[real].mean()) if real.any() else 0.0
        table2 = None
        if self.lambda_2 > 0:
            weights = self.item_weights
            if weights is None:
                weights = torch.ones(table.shape[0], device=table.device)
            Delta = item_perturbation(
                G, table.detach(), weights, self.eps_item, self.eps_absolute, model.n_items + 1
            )
            Delta[model.n_items + 1 :] = 0.0  # rows past the items (a mask token) are not items
            table2 = table + Delta

        def perturbed_loss(delta: Tensor | None, table2: Tensor | None) -> Tensor:
            """L_rec with ``delta`` added to the inputs and ``table2`` used everywhere."""
            t = table if table2 is None else table2
            emb = model.embed(batch.inputs) if table2 is None else model.embed(batch.inputs, t)
            with replay_rng(masks):
                h = model.encode(emb if delta is None else emb + delta, pad)
            return rec_loss(model, h, batch.targets, t, self.loss, batch.negatives)

        if self.fused and delta is not None and table2 is not None:
            l12 = perturbed_loss(delta, table2)
            total = total + (self.lambda_1 + self.lambda_2) * l12
            out["loss_12"] = l12.item()
        else:  # exact, or only one level on (then fused is the same objective)
            if delta is not None:
                l1 = perturbed_loss(delta, None)
                total = total + self.lambda_1 * l1
                out["loss_1"] = l1.item()
            if table2 is not None:
                l2 = perturbed_loss(None, table2)
                total = total + self.lambda_2 * l2
                out["loss_2"] = l2.item()
        if self.lambda_replace > 0:
            replaced = replacement_items(
                g, batch.inputs, table.detach(), model.n_items, self.replace_prob
            )
            with replay_rng(masks):
                h = model.encode(model.embed(replaced), replaced > 0)
            l_rep = rec_loss(model, h, batch.targets, table, self.loss, batch.negatives)
            total = total + self.lambda_replace * l_rep
            out["loss_replace"] = l_rep.item()
        if not torch.isfinite(total):
            raise NumericalError(f"adversarial loss is {float((total - l_rec).detach())}")
        out["loss"] = total.item()
        return total * batch.loss_scale, out

    def _union_scale(self, e: Tensor, real: Tensor, batch: Batch) -> Tensor | None:
        """DDP: level 1's relative scale over every rank's real positions (None otherwise)."""
        if self.dist is None or self.eps_absolute:
            return None
        norms = e.detach().norm(dim=-1)[real]
        mine = float(batch.share > 0)  # a rank without rows contributes nothing
        stats = torch.stack([norms.sum(), norms.new_tensor(float(norms.numel()))]) * mine
        self.dist.sum_(stats, "the level-1 scale reduction")
        return self.eps * stats[0] / stats[1].clamp_min(1.0)
