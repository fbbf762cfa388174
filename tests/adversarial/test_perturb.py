"""Perturbation sizes and placement (CAT.md §2)."""

import torch

from catrec.adversarial.perturb import interaction_perturbation, item_perturbation


def test_level1_norms_direction_and_padding():
    torch.manual_seed(0)
    grad = torch.randn(2, 4, 3)
    grad[1, 2] = 0.0  # a real position that received no gradient
    embeds = torch.full((2, 4, 3), 2.0)  # every real embedding has norm 2*sqrt(3)
    real = torch.tensor([[False, True, True, True], [False, False, True, True]])
    weights = torch.tensor([[0.0, 1.0, 2.0, 0.5], [0.0, 0.0, 3.0, 1.0]])
    delta = interaction_perturbation(grad, embeds, real, weights, eps=0.1)
    s = 2.0 * 3**0.5
    norms = delta.norm(dim=-1)
    expected = 0.1 * s * weights * real
    expected[1, 2] = 0.0  # zero gradient -> zero perturbation, not NaN
    torch.testing.assert_close(norms, expected)
    assert not torch.isnan(delta).any()
    # direction is the gradient's (ascent)
    cos = torch.nn.functional.cosine_similarity(delta[0, 1], grad[0, 1], dim=0)
    assert cos.item() > 0.9999


def test_level1_absolute():
    grad = torch.ones(1, 2, 4)
    real = torch.tensor([[True, True]])
    delta = interaction_perturbation(
        grad, torch.ones(1, 2, 4) * 100, real, torch.ones(1, 2), 0.5, True
    )
    torch.testing.assert_close(delta.norm(dim=-1), torch.tensor([[0.5, 0.5]]))


def test_level2_rows():
    table = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 5.0], [5.0, 0.0]])  # item rows norm 5
    grad = torch.tensor([[1.0, 1.0], [0.0, 2.0], [0.0, 0.0], [-3.0, 4.0]])
    weights = torch.tensor([1.0, 2.0, 1.0, 0.5])
    delta = item_perturbation(grad, table, weights, eps=0.2, n_scored=4)
    torch.testing.assert_close(delta.norm(dim=-1), torch.tensor([0.0, 2.0, 0.0, 0.5]))
    torch.testing.assert_close(delta[3], torch.tensor([-0.3, 0.4]))
