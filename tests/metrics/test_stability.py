"""RBO@K and Jaccard@K against hand-computed lists and the ``rbo`` package (CAT.md §4).

Which ``rbo`` package (0.1.3, ``RankingSimilarity``) variant matches CAT.md's finite normalised
RBO@K = (1-p)/(1-p^K) * sum_{d=1..K} p^(d-1) |A_d ∩ B_d| / d?  None does as it stands (CAT.md
is right), verified below: ``rbo(k=K, p=p)`` is the un-normalised truncated sum (identical
top-10 lists give 1 - 0.9^10 = 0.6513, not 1); dividing it by (1 - p^K) gives RBO@K exactly.
``rbo(k, p, ext=True)`` and ``rbo_ext(p)`` (extrapolated) give 1 and 0 at the extremes but other
values for partial overlaps; the package has no "min" variant; its default p = 1.0 is average
overlap, which is RBO@K's p -> 1 limit only.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rbo import RankingSimilarity

from catrec.metrics.stability import (
    bootstrap_means,
    jaccard_at_k,
    overlap_at_depths,
    percentile_interval,
    rbo_at_k,
)


def rbo_by_definition(a, b, p, k):
    """CAT.md §4 written out as a plain loop (a third, independent reading of the formula)."""
    total = sum(p ** (d - 1) * len(set(a[:d]) & set(b[:d])) / d for d in range(1, k + 1))
    return (1 - p) / (1 - p**k) * total


# (a, b, p, K, RBO@K by hand, Jaccard@K by hand)
HAND_CASES = [
    # A_d = 1, 1/2, 1 -> (0.1 / 0.271) * (1 + 0.9 * 0.5 + 0.81 * 1) = 0.226 / 0.271
    ([1, 2, 3], [1, 3, 2], 0.9, 3, 0.226 / 0.271, 1.0),
    # A_d = 0, 1/2, 2/3, 1/2 -> (0.1 / 0.3439) * (0.45 + 0.54 + 0.3645) = 0.13545 / 0.3439
    ([1, 2, 3, 4], [2, 5, 1, 6], 0.9, 4, 0.13545 / 0.3439, 2 / 6),
    # A_d = 0, 1 -> (0.5 / 0.75) * (0 + 0.5 * 1) = 1/3; same sets, so Jaccard 1
    ([1, 2], [2, 1], 0.5, 2, 1 / 3, 1.0),
]


@pytest.mark.parametrize("p", [0.5, 0.9, 0.98, 1.0])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_identical_lists_give_one_and_disjoint_give_zero(p, k):
    a = np.arange(1, k + 1)
    assert rbo_at_k(a, a, p, k) == pytest.approx([1.0], abs=1e-12)
    assert jaccard_at_k(a, a, k) == pytest.approx([1.0])
    assert rbo_at_k(a, a + 100, p, k) == pytest.approx([0.0])
    assert jaccard_at_k(a, a + 100, k) == pytest.approx([0.0])


@pytest.mark.parametrize(("a", "b", "p", "k", "rbo_hand", "jac_hand"), HAND_CASES)
def test_partial_overlaps_by_hand(a, b, p, k, rbo_hand, jac_hand):
    assert rbo_at_k(a, b, p, k)[0] == pytest.approx(rbo_hand, abs=1e-12)
    assert rbo_by_definition(a, b, p, k) == pytest.approx(rbo_hand, abs=1e-12)
    assert jaccard_at_k(a, b, k)[0] == pytest.approx(jac_hand)
    # RBO is symmetric
    assert rbo_at_k(b, a, p, k)[0] == pytest.approx(rbo_hand, abs=1e-12)


def test_hand_numbers():
    """The hand values above, as decimals (so a wrong fraction would show)."""
    assert HAND_CASES[0][4] == pytest.approx(0.8339483, abs=1e-7)
    assert HAND_CASES[1][4] == pytest.approx(0.3938645, abs=1e-7)


@pytest.mark.parametrize(("a", "b", "p", "k", "rbo_hand", "jac_hand"), HAND_CASES)
def test_rbo_package_variants(a, b, p, k, rbo_hand, jac_hand):
    sim = RankingSimilarity(a, b)
    truncated = sim.rbo(k=k, p=p)
    # The package's truncated RBO lacks the 1/(1-p^K) normalisation; with it, it equals RBO@K.
    assert truncated / (1 - p**k) == pytest.approx(rbo_hand, abs=1e-12)
    assert truncated != pytest.approx(rbo_hand, abs=1e-6)
    # Extrapolated variants differ from the finite normalised RBO on partial overlaps.
    assert sim.rbo(k=k, p=p, ext=True) != pytest.approx(rbo_hand, abs=1e-6)
    assert RankingSimilarity(a, b).rbo_ext(p=p) != pytest.approx(rbo_hand, abs=1e-6)
    # The package default p = 1 is average overlap = our explicit p = 1 (the limit), not p = 0.9.
    avg_overlap = RankingSimilarity(a, b).rbo(k=k)
    assert rbo_at_k(a, b, 1.0, k)[0] == pytest.approx(avg_overlap)
    assert not hasattr(sim, "rbo_min")


def test_rbo_package_numbers_for_top10():
    """The numbers quoted in stability.py's docstring (p = 0.9, K = 10)."""
    a = list(range(10))
    assert RankingSimilarity(a, a).rbo(k=10, p=0.9) == pytest.approx(1 - 0.9**10)
    assert 1 - 0.9**10 == pytest.approx(0.6513, abs=1e-4)
    assert rbo_at_k(a, a, 0.9, 10)[0] == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(
    perm=st.permutations(list(range(1, 16))),
    k=st.integers(1, 10),
    shift=st.integers(0, 5),
    p=st.sampled_from([0.5, 0.8, 0.9, 0.95]),
)
def test_matches_normalised_rbo_package_on_random_lists(perm, k, shift, p):
    a = list(range(1, k + 1))
    b = list(perm[shift : shift + k])
    ours = rbo_at_k(a, b, p, k)[0]
    ref = RankingSimilarity(a, b).rbo(k=k, p=p) / (1 - p**k)
    assert ours == pytest.approx(ref, abs=1e-12)
    assert ours == pytest.approx(rbo_by_definition(a, b, p, k), abs=1e-12)
    assert 0.0 <= ours <= 1.0 + 1e-12
    inter = len(set(a) & set(b))
    assert jaccard_at_k(a, b, k)[0] == pytest.approx(inter / (2 * k - inter))


def test_vectorised_over_users_and_torch_inputs():
    a = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [7, 8, 9, 10]])
    b = np.array([[2, 5, 1, 6], [1, 2, 3, 4], [1, 2, 3, 4]])
    expected = [HAND_CASES[1][4], 1.0, 0.0]
    assert rbo_at_k(a, b, 0.9, 4) == pytest.approx(expected, abs=1e-12)
    assert rbo_at_k(torch.as_tensor(a), torch.as_tensor(b), 0.9, 4) == pytest.approx(expected)
    assert jaccard_at_k(a, b, 4) == pytest.approx([1 / 3, 1.0, 0.0])
    assert overlap_at_depths(a, b, 4)[0].tolist() == [0, 1, 2, 2]


def test_depth_uses_the_prefix():
    a, b = [1, 2, 3, 4], [1, 2, 4, 3]
    assert rbo_at_k(a, b, 0.9, 2)[0] == pytest.approx(1.0)
    assert jaccard_at_k(a, b, 2)[0] == pytest.approx(1.0)
    assert rbo_at_k(a, b, 0.9, 3)[0] < 1.0


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5, math.nan])
def test_bad_p_is_rejected(p):
    with pytest.raises(ValueError, match="p must be"):
        rbo_at_k([1, 2], [1, 2], p, 2)


def test_bad_lists_are_rejected():
    with pytest.raises(ValueError, match="repeats"):
        rbo_at_k([1, 1, 2], [1, 2, 3], 0.9, 3)
    with pytest.raises(ValueError, match="exceeds"):
        jaccard_at_k([1, 2], [1, 2], 3)
    with pytest.raises(ValueError, match="users"):
        jaccard_at_k(np.ones((2, 3)), np.ones((3, 3)), 3)


def test_bootstrap_is_seeded_and_covers_the_mean():
    rng = np.random.default_rng(0)
    values = np.stack([rng.random(500), rng.integers(0, 2, 500)], axis=1)
    s1 = bootstrap_means(values, 300, seed=0)
    s2 = bootstrap_means(values, 300, seed=0)
    assert s1.shape == (300, 2)
    np.testing.assert_array_equal(s1, s2)
    ci = percentile_interval(s1)
    for j in range(2):
        assert ci[j, 0] < values[:, j].mean() < ci[j, 1]
        # about 2 standard errors each side
        se = values[:, j].std() / math.sqrt(500)
        assert ci[j, 1] - ci[j, 0] == pytest.approx(2 * 1.96 * se, rel=0.25)
    const = bootstrap_means(np.full(50, 0.25), 100)
    assert np.allclose(const, 0.25)
