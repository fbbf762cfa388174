"""BERT4Rec specifics: cloze batches, the prediction input, cascade weights of all positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import MAX_LEN, N_ITEMS, tiny_config, tiny_model, tiny_split

from catrec.adversarial.cascade import item_frequency
from catrec.train.loop import make_batch, training_set

CPU = torch.device("cpu")


def test_table_has_a_mask_row_that_is_never_scored():
    model = tiny_model("bert4rec")
    assert model.mask_token == N_ITEMS + 1
    assert model.item_table().shape[0] == N_ITEMS + 2
    h = torch.randn(4, model.hidden_size)
    assert model.score(h).shape == (4, N_ITEMS + 1)


def test_prediction_input_appends_the_mask_and_drops_only_overflow():
    model = tiny_model("bert4rec")
    m = model.mask_token
    short = torch.tensor([[0, 0, 4, 5]])
    assert model.prediction_input(short).tolist() == [[0, 0, 4, 5, m]]
    full = torch.arange(1, MAX_LEN + 1).unsqueeze(0)  # a history of exactly max_len items
    out = model.prediction_input(full)
    assert out.shape == (1, MAX_LEN)
    assert out.tolist() == [list(range(2, MAX_LEN + 1)) + [m]]  # the oldest item goes


def test_full_history_predicts_like_its_most_recent_items():
    """max_len history items predict exactly as their last max_len - 1 (the window trained on)."""
    model = tiny_model("bert4rec", randomize=True).eval()
    full = torch.randint(1, N_ITEMS + 1, (1, MAX_LEN))
    torch.testing.assert_close(model.predict(full), model.predict(full[:, 1:]), atol=1e-5, rtol=0)
    assert not torch.allclose(model.predict(full), model.predict(full[:, 2:]), atol=1e-5)


@pytest.fixture(scope="module")
def cloze():
    config = tiny_config("bert4rec", mask_prob=0.2)
    model = tiny_model("bert4rec")
    tset = training_set(tiny_split(n_users=60), model, config)
    return config, model, tset


def test_training_windows_and_cascade_weights(cloze):
    """Windows are the last max_len training items; every real position (the most recent
    included) is an input with cascade (n - 1) + gamma * sum_{k != t} f(v_k), CAT.md §1."""
    config, model, tset = cloze
    assert tset.window.shape[1] == MAX_LEN
    real = tset.window > 0
    n = real.sum(axis=1, keepdims=True)
    # Only a one-item window has nothing else to reach (its item is always the target anyway).
    assert np.all(tset.weights[real & (n > 1)] > 0) and np.all(tset.weights[~real] == 0)
    f = item_frequency(tset.window, N_ITEMS)
    F = f[tset.window]
    C = np.where(real, (n - 1) + config.gamma * (F.sum(axis=1, keepdims=True) - F), 0.0)
    expected = np.clip(C / C[real].mean(), 0.0, config.c_max)
    np.testing.assert_allclose(tset.weights, expected, rtol=1e-5)
    assert tset.item_weights.shape == (N_ITEMS + 2,) and tset.item_weights[-1] == 1.0


def test_cloze_batch(cloze):
    config, model, tset = cloze
    torch.manual_seed(0)
    batch = make_batch(model, tset.window, tset.weights, config, CPU)
    win = torch.as_tensor(tset.window)[:, -batch.inputs.shape[1] :]
    masked = batch.inputs == model.mask_token
    assert torch.equal(batch.targets > 0, masked)  # a target exactly where the mask token is
    assert torch.equal(batch.targets[masked], win[masked])
    assert torch.equal(batch.inputs[~masked], win[~masked])  # everything else untouched
    assert torch.all(masked.any(dim=1))  # every row has a target


def test_mask_rate_and_last_item_only_rows():
    """Each item is masked with probability mask_prob; a row with no draw gets its last item."""
    p, n, rows = 0.2, 3, 20000
    config = tiny_config("bert4rec", mask_prob=p)
    model = tiny_model("bert4rec")
    window = np.zeros((rows, MAX_LEN), dtype=np.int64)
    window[:, -n:] = np.arange(1, n + 1)
    torch.manual_seed(0)
    batch = make_batch(model, window, np.ones_like(window, dtype=np.float32), config, CPU)
    masked = (batch.inputs == model.mask_token).numpy()
    last_only = masked[:, -1] & (masked.sum(axis=1) == 1)
    # P(last only) = P(no draw) + P(only the last drawn) = (1 - p)^n + p (1 - p)^(n - 1)
    assert last_only.mean() == pytest.approx((1 - p) ** n + p * (1 - p) ** (n - 1), abs=0.015)
    assert masked[:, 0].mean() == pytest.approx(p, abs=0.015)  # older positions: plain rate
    one = make_batch(model, window[:5, -1:], np.ones((5, 1), dtype=np.float32), config, CPU)
    assert torch.all(one.inputs == model.mask_token)  # a single item is always the target
