"""Ranking metrics against hand-computed ranks (CAT.md §4)."""

import math

import pytest
import torch

from catrec.evaluate import mask_scores
from catrec.metrics.ranking import NumericalError, RankingAccumulator, ndcg, ranks_from_scores


def test_ranks_strict_and_ties_are_pessimistic():
    scores = torch.tensor(
        [
            [0.0, 0.9, 0.5, 0.1, 0.3],  # target 2 (0.5): only 0.9 above -> rank 2
            [0.0, 0.2, 0.2, 0.2, 0.1],  # target 1 ties with 2 and 3 -> rank 1 + 0 + 2 = 3
            [0.0, -1.0, -2.0, -3.0, -0.5],  # negative scores; target 4 (-0.5): padding 0.0 above
        ]
    )
    ranks = ranks_from_scores(scores, torch.tensor([2, 1, 4]))
    assert ranks.tolist() == [2.0, 3.0, 2.0]


def test_constant_scores_give_worst_rank():
    scores = torch.zeros(2, 101)
    scores[:, 0] = float("-inf")  # padding masked
    ranks = ranks_from_scores(scores, torch.tensor([5, 100]))
    assert ranks.tolist() == [100.0, 100.0]  # 100 real items, all tied: the worst rank


def test_masked_history_and_target_in_history():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    history = torch.tensor([[0, 1, 2], [0, 1, 3]])
    masked = mask_scores(scores.clone(), history)
    assert masked[0].tolist() == [-math.inf, -math.inf, -math.inf, 2.0, 1.0]
    ranks = ranks_from_scores(masked, torch.tensor([4, 3]))
    # user 0: items 1, 2 and padding masked, target 4 (1.0) below item 3 -> rank 2
    # user 1: the target 3 is in the history -> masked -> a miss
    assert ranks.tolist() == [2.0, math.inf]
    # without history masking, only padding is removed
    unmasked = mask_scores(scores.clone(), history, mask_history=False)
    assert ranks_from_scores(unmasked, torch.tensor([4, 3])).tolist() == [4.0, 3.0]


def test_metric_values_by_hand():
    acc = RankingAccumulator(ks=(1, 5, 10))
    acc.add(torch.tensor([1.0, 3.0, 7.0, 12.0]))
    acc.add(torch.tensor([math.inf]))
    m = acc.compute()
    assert m["HR@1"] == pytest.approx(1 / 5)
    assert m["HR@5"] == pytest.approx(2 / 5)
    assert m["HR@10"] == pytest.approx(3 / 5)
    assert m["NDCG@5"] == pytest.approx((1.0 + 1 / math.log2(4)) / 5)
    assert m["NDCG@10"] == pytest.approx((1.0 + 0.5 + 1 / math.log2(8)) / 5)
    assert m["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 7 + 1 / 12 + 0) / 5)
    assert ndcg(torch.tensor([math.inf]), 10).item() == 0.0


def test_nan_scores_are_an_error():
    with pytest.raises(NumericalError):
        ranks_from_scores(torch.tensor([[0.0, float("nan"), 1.0]]), torch.tensor([2]))
