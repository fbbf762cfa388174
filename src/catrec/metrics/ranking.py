"""Full-ranking accuracy metrics (CAT.md §4).

Rank of the target = 1 + (items scoring strictly higher) + (other items scoring exactly the
same): ties count against the model, so constant scores give the worst rank. A target whose
score is ``-inf`` (masked, e.g. because it occurs in the history) is a miss with rank ``inf``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_KS = (5, 10, 20)


class NumericalError(FloatingPointError):
    """A model produced NaN scores or losses; it is an error, never a metric."""


def ranks_from_scores(scores: Tensor, targets: Tensor) -> Tensor:
    """Pessimistic 1-based rank of each target.

    Args:
        scores: ``[B, V]`` scores of every candidate (masked candidates ``-inf``).
        targets: ``[B]`` column of the true item.

    Returns:
        ``[B]`` float64 ranks; ``inf`` where the target's score is ``-inf``.

    Raises:
        NumericalError: any score is NaN.
    """
    if torch.isnan(scores).any():
        raise NumericalError("model produced NaN scores")
    t = scores.gather(1, targets.view(-1, 1))  # [B, 1]
    higher = (scores > t).sum(dim=1)
    ties = (scores == t).sum(dim=1) - 1  # the target itself is not a tie
    ranks = (1 + higher + ties).to(torch.float64)
    return torch.where(t.view(-1) == float("-inf"), torch.full_like(ranks, math.inf), ranks)


def hit_rate(ranks: Tensor, k: int) -> Tensor:
    """HR@K per user: 1 if rank <= K else 0, ``[B]``."""
    return (ranks <= k).to(torch.float64)


def ndcg(ranks: Tensor, k: int) -> Tensor:
    """NDCG@K per user with one relevant item: ``1 / log2(rank + 1)`` if rank <= K else 0."""
    return torch.where(ranks <= k, 1.0 / torch.log2(ranks.clamp(max=1e12) + 1.0), 0.0)


def mrr(ranks: Tensor) -> Tensor:
    """Reciprocal rank per user (full list, not truncated); 0 for a masked target."""
    return 1.0 / ranks


class RankingAccumulator:
    """Collects ranks over batches and reports HR@K, NDCG@K and MRR averaged over users."""

    def __init__(self, ks: tuple[int, ...] = DEFAULT_KS) -> None:
        self.ks = ks
        self._ranks: list[Tensor] = []

    def add(self, ranks: Tensor) -> None:
        self._ranks.append(ranks.detach().to("cpu", torch.float64))

    @property
    def ranks(self) -> Tensor:
        return torch.cat(self._ranks) if self._ranks else torch.zeros(0, dtype=torch.float64)

    def compute(self) -> dict[str, float]:
        """``{"HR@K", "NDCG@K", "MRR"}`` means over all users added so far."""
        r = self.ranks
        if r.numel() == 0:
            raise ValueError("no ranks to average")
        out: dict[str, float] = {}
        for k in self.ks:
            out[f"HR@{k}"] = float(hit_rate(r, k).mean())
            out[f"NDCG@{k}"] = float(ndcg(r, k).mean())
        out["MRR"] = float(mrr(r).mean())
        return out
