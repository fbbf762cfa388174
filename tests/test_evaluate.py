"""catrec.fullrank.top_k: the ranking of a stable full sort, ties by item index."""

import pytest
import torch

from catrec.fullrank import top_k
from catrec.metrics.ranking import NumericalError, ranks_from_scores


@pytest.mark.parametrize("seed", range(5))
def test_top_k_equals_a_stable_full_sort_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (32, 40), generator=g).float()  # many ties
    scores[:4, 10:] = float("-inf")  # rows with fewer than k unmasked columns
    scores[4] = torch.randn(40, generator=g)  # a row without ties
    for k in (1, 5, 10, 40, 100):
        ids, values = top_k(scores, k)
        want_values, want_ids = torch.sort(scores, dim=1, descending=True, stable=True)
        assert torch.equal(ids, want_ids[:, :k]) and torch.equal(values, want_values[:, :k])


def test_top_k_positions_are_the_evaluators_ranks_without_ties():
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    ids, _ = top_k(scores, 10)
    for j in range(10):
        assert ranks_from_scores(scores, ids[:, j]).tolist() == [j + 1] * 3


def test_top_k_rejects_nan():
    with pytest.raises(NumericalError):
        top_k(torch.tensor([[0.0, float("nan")]]), 1)
