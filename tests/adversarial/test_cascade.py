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
