"""The CAT.md §1 worked test vector, exactly, and the normalisation rules."""

import numpy as np
import pytest

from catrec.adversarial.cascade import cascade_effect, cascade_weights, item_frequency
from catrec.data.split import windows

# Training parts s1 = (1, 2, 3), s2 = (2, 3), s3 = (3, 1, 2), left-padded to width 3.
SEQ = np.array([[1, 2, 3], [0, 2, 3], [3, 1, 2]])


def test_item_frequency():
    assert item_frequency(SEQ, 3).tolist() == [0, 2, 3, 3]


def test_two_hop_test_vector():
    C, is_input = cascade_effect(SEQ, 3, "two_hop", gamma=1.0)
    # input columns are the first two; the last position is a target only
    assert is_input.tolist() == [[True, True], [False, True], [True, True]]
    assert C.tolist() == [[8.0, 4.0], [0.0, 4.0], [7.0, 4.0]]
    w = cascade_weights(C, is_input, SEQ[:, :-1], 3, "proportional", c_max=5.0)
    expected = np.array([[8, 4], [0, 4], [7, 4]]) / 5.4
    np.testing.assert_allclose(w.position, expected, rtol=1e-6)
    assert w.position[0, 0] == pytest.approx(1.4815, abs=1e-4)
    assert w.position[0, 1] == pytest.approx(0.7407, abs=1e-4)
    assert w.position[2, 0] == pytest.approx(1.2963, abs=1e-4)


def test_first_order_test_vector():
    C, is_input = cascade_effect(SEQ, 3, "first_order")
    assert C[is_input].tolist() == [2.0, 1.0, 1.0, 2.0, 1.0]
    assert C[is_input].mean() == pytest.approx(1.4)


def test_none_is_generic():
    C, is_input = cascade_effect(SEQ, 3, "none")
    w = cascade_weights(C, is_input, SEQ[:, :-1], 3, "proportional")
    assert w.position[is_input].tolist() == [1.0] * 5
    assert w.position[~is_input].tolist() == [0.0]


def test_item_weights_are_means_over_input_interactions():
    C, is_input = cascade_effect(SEQ, 3, "two_hop")
    w = cascade_weights(C, is_input, SEQ[:, :-1], 3, "proportional")
    # item 1 is an input at (s1,1): 8/5.4 and (s3,2): 4/5.4; item 2 at (s1,2) and (s2,1): 4/5.4;
    # item 3 at (s3,1): 7/5.4; padding row is 1.
    np.testing.assert_allclose(w.item, [1.0, 6 / 5.4, 4 / 5.4, 7 / 5.4], rtol=1e-6)


def test_inverse_and_clip():
    C, is_input = cascade_effect(SEQ, 3, "two_hop")
    w = cascade_weights(C, is_input, SEQ[:, :-1], 3, "inverse")
    inv = np.array([1 / 8, 1 / 4, 1 / 4, 1 / 7, 1 / 4])
    np.testing.assert_allclose(w.position[is_input], inv / inv.mean(), rtol=1e-6)
    clipped = cascade_weights(C, is_input, SEQ[:, :-1], 3, "proportional", c_max=1.0)
    assert clipped.position.max() == pytest.approx(1.0)


def test_clipped_weights_are_renormalised_to_mean_one():
    """CAT.md §1: after clipping at c_max the mean is restored to 1 (the budget of adv).

    C = 1, 1, 1, 1, 20 with c_max = 2: C / mean(C) = 0.208 (x4), 4.17 -> clipped mean 0.57.
    Renormalised: 4a + 2 = 5, so a = 0.75 and c = 0.75 (x4), 2.0 (the clipped one)."""
    C = np.array([[1.0, 1.0, 1.0, 1.0, 20.0]])
    is_input = np.ones_like(C, dtype=bool)
    w = cascade_weights(C, is_input, np.array([[1, 2, 3, 4, 5]]), 5, "proportional", c_max=2.0)
    np.testing.assert_allclose(w.position, [[0.75, 0.75, 0.75, 0.75, 2.0]], rtol=1e-6)
    assert w.realised_mean == pytest.approx(1.0, abs=1e-6)
    assert w.clipped_share == pytest.approx(0.2)


def test_renormalisation_reaches_mean_one_on_a_real_slice(beauty_slice):
    from catrec.data import leave_one_out, read_sequence_file

    split = leave_one_out(read_sequence_file(beauty_slice), max_len=50)
    seq = split.train_seq
    C, is_input = cascade_effect(seq, split.n_items, "two_hop")
    for scaling in ("proportional", "inverse"):
        w = cascade_weights(C, is_input, seq[:, :-1], split.n_items, scaling, c_max=5.0)
        assert w.position[is_input].astype(np.float64).mean() == pytest.approx(1.0, abs=1e-6)
        assert abs(w.realised_mean - 1.0) <= 1e-6
        assert 0.0 < w.clipped_share < 0.2
        assert w.position.max() == pytest.approx(5.0)


def test_mean_out_of_reach_is_reported():
    """c_max = 1 with a zero effect: a mean of 1 cannot be reached; all positive weights are
    clipped and the realised mean says so."""
    C = np.array([[0.0, 2.0, 4.0]])
    w = cascade_weights(C, np.ones_like(C, dtype=bool), np.array([[1, 2, 3]]), 3, c_max=1.0)
    np.testing.assert_allclose(w.position, [[0.0, 1.0, 1.0]])
    assert w.realised_mean == pytest.approx(2 / 3)


def test_inverse_scaling_leaves_zero_effects_out():
    """One-item bidirectional windows have C = 0: no cascade to invert. They get weight 0 and stay
    out of the inverse mean (before: 1/tiny made the mean explode and every weight 0)."""
    seq = np.array([[0, 0, 1], [0, 0, 2], [0, 0, 3], [0, 0, 4], [1, 1, 2]])
    C, is_input = cascade_effect(seq, 4, "two_hop", causal=False)
    # f(1) = 3, f(2) = 2: row 5 has C = 2 + 3 + 2 = 7, 7 and 2 + 3 + 3 = 8; the others 0.
    assert C[4].tolist() == [7.0, 7.0, 8.0] and C[:4].sum() == 0
    w = cascade_weights(C, is_input, seq, 4, "inverse")
    # 1/7, 1/7, 1/8 over their mean 23/168: 24/23, 24/23, 21/23.
    np.testing.assert_allclose(w.position[4], [24 / 23, 24 / 23, 21 / 23], rtol=1e-6)
    assert np.all(w.position[:4] == 0.0)


def test_non_finite_effects_are_an_error():
    C = np.array([[1.0, np.inf]])
    with pytest.raises(ValueError, match="not finite|non-finite"):
        cascade_weights(C, np.ones_like(C, dtype=bool), np.array([[1, 2]]), 2)


def test_bidirectional_first_and_second_order():
    C, is_input = cascade_effect(SEQ, 3, "two_hop", causal=False)
    # s1 = (1, 2, 3): n - 1 = 2, plus f of the other positions: f(2) + f(3) = 6 at t=1
    assert C[0].tolist() == [2 + 3 + 3, 2 + 2 + 3, 2 + 2 + 3]
    assert C[1].tolist() == [0.0, 1 + 3, 1 + 3]
    assert is_input.sum() == 8


def test_matches_loop_on_real_slice(beauty_slice):
    from catrec.data import leave_one_out, read_sequence_file

    split = leave_one_out(read_sequence_file(beauty_slice), max_len=10)
    seq = split.train_seq
    C, is_input = cascade_effect(seq, split.n_items, "two_hop", gamma=0.5)
    f = item_frequency(seq, split.n_items)
    for u in range(0, len(seq), 97):
        row = seq[u][seq[u] > 0]
        n = len(row)
        for t in range(n - 1):
            expect = (n - 1 - t) + 0.5 * sum(f[v] for v in row[t + 1 :])
            assert C[u, seq.shape[1] - n + t] == pytest.approx(expect)
    assert windows is not None
