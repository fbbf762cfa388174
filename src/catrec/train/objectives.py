"""Training objectives: standard, generic adversarial (``adv``) and cascade-guided (``cat``).

CAT.md §3 (Tan et al., SDM 2024, §3):

    L = L_rec + lambda_1 * L_1 + lambda_2 * L_2

``L_1`` is ``L_rec`` on input embeddings perturbed per interaction (level 1), ``L_2`` is ``L_rec``
with the whole item table perturbed (level 2). Perturbations come from the gradients of the clean
pass, so an objective runs its own backward passes: calling it leaves the gradient of ``L`` in the
parameters' ``.grad`` and returns diagnostics. The training loop only zeroes gradients and steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from catrec.adversarial.perturb import interaction_perturbation, item_perturbation
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
            bucketing so that each position weighs the same whatever its batch.
    """

    inputs: Tensor
    targets: Tensor
    weights: Tensor
    negatives: Tensor | None = None
    loss_scale: float = 1.0


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


class Objective:
    """The loss of one training step, with its backward passes.

    Args:
        loss: ``ce`` or ``bce`` (see :func:`rec_loss`).
        lambda_1, lambda_2: weights of the level-1 and level-2 adversarial losses (0 disables).
        eps, eps_item: perturbation sizes (relative to embedding norms unless ``eps_absolute``).
        item_weights: ``[n_rows]`` c_item(i) for level 2 (ones for generic training).
    """

    def __init__(
        self,
        loss: str = "ce",
        lambda_1: float = 0.0,
        lambda_2: float = 0.0,
        eps: float = 0.3,
        eps_item: float = 0.3,
        eps_absolute: bool = False,
        item_weights: Tensor | None = None,
    ) -> None:
        self.loss = loss
        self.lambda_1 = lambda_1
        self.lambda_2 = lambda_2
        self.eps = eps
        self.eps_item = eps_item
        self.eps_absolute = eps_absolute
        self.item_weights = item_weights

    def perturbation_mask(self, model: SequentialRecommender, inputs: Tensor) -> Tensor:
        """``[B, L]`` True at real interactions (not padding, not a mask token)."""
        return (inputs > 0) & (inputs <= model.n_items)

    def __call__(
        self, model: SequentialRecommender, batch: Batch, adversarial: bool = True
    ) -> dict[str, float]:
        """Accumulate ``dL/dθ`` into the parameters' ``.grad`` and return loss diagnostics.

        Raises:
            NumericalError: the clean or an adversarial loss is NaN or infinite.
        """
        pad = batch.inputs > 0
        table = model.item_table()
        adversarial = adversarial and (self.lambda_1 > 0 or self.lambda_2 > 0)
        e = model.embed(batch.inputs)  # [B, L, d]
        if adversarial:
            e.retain_grad()
        hidden = model.encode(e, pad)
        l_rec = rec_loss(model, hidden, batch.targets, table, self.loss, batch.negatives)
        if not torch.isfinite(l_rec):
            raise NumericalError(f"recommendation loss is {float(l_rec.detach())}")
        if table.grad is not None:
            table.grad = None  # G below must be dL_rec/dE of this batch alone
        (l_rec * batch.loss_scale).backward()
        out = {"loss": l_rec.item(), "loss_rec": l_rec.item()}
        if not adversarial:
            return out

        adv = torch.zeros((), device=e.device)
        if self.lambda_1 > 0:
            real = self.perturbation_mask(model, batch.inputs)
            delta = interaction_perturbation(
                e.grad, e.detach(), real, batch.weights, self.eps, self.eps_absolute
            )
            h1 = model.encode(model.embed(batch.inputs) + delta, pad)
            l1 = rec_loss(model, h1, batch.targets, table, self.loss, batch.negatives)
            adv = adv + self.lambda_1 * l1
            out["loss_1"] = l1.item()
            out["delta_norm"] = float(delta.norm(dim=-1)[real].mean()) if real.any() else 0.0
        if self.lambda_2 > 0:
            G = table.grad.detach().clone()
            weights = self.item_weights
            if weights is None:
                weights = torch.ones(table.shape[0], device=table.device)
            Delta = item_perturbation(
                G, table.detach(), weights, self.eps_item, self.eps_absolute, model.n_items + 1
            )
            Delta[model.n_items + 1 :] = 0.0  # rows past the items (a mask token) are not items
            table2 = table + Delta
            h2 = model.encode(model.embed(batch.inputs, table2), pad)
            l2 = rec_loss(model, h2, batch.targets, table2, self.loss, batch.negatives)
            adv = adv + self.lambda_2 * l2
            out["loss_2"] = l2.item()
        if not torch.isfinite(adv):
            raise NumericalError(f"adversarial loss is {float(adv.detach())}")
        (adv * batch.loss_scale).backward()
        out["loss"] = out["loss_rec"] + adv.item()
        return out
