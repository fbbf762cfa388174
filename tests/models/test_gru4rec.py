"""GRU4Rec specifics: left padding handled by moving real items to the front (see the module)."""

from __future__ import annotations

import torch
from tiny_models import HIDDEN, N_ITEMS, tiny_model

from catrec.models.gru4rec import GRU4Rec


def test_real_states_equal_an_unpadded_gru_run():
    model = tiny_model("gru4rec", randomize=True).eval()
    rows = [[5, 9, 2], [7, 1, 33, 4, 18, 6], [12]]
    ids = torch.zeros(len(rows), 8, dtype=torch.long)
    for r, items in enumerate(rows):
        ids[r, 8 - len(items) :] = torch.tensor(items)
    h = model.forward(ids)
    for r, items in enumerate(rows):
        x = model.item_embedding(torch.tensor([items]))  # [1, n, d], no padding at all
        ref = model.proj(model.gru(x)[0])[0]
        torch.testing.assert_close(h[r, 8 - len(items) :], ref, atol=1e-6, rtol=0)


def test_batch_without_padding_takes_the_short_path():
    model = tiny_model("gru4rec", randomize=True).eval()
    ids = torch.randint(1, N_ITEMS + 1, (2, 6))
    x = model.item_embedding(ids)
    torch.testing.assert_close(model.forward(ids), model.proj(model.gru(x)[0]), atol=1e-6, rtol=0)


def test_layers_and_sizes_from_config():
    model = tiny_model("gru4rec")
    assert model.gru.num_layers == 1  # the config's default for GRU4Rec
    deep = tiny_model("gru4rec", n_layers=2)
    assert isinstance(deep, GRU4Rec) and deep.gru.num_layers == 2
    assert deep.gru.hidden_size == HIDDEN and deep.item_table().shape == (N_ITEMS + 1, HIDDEN)
    assert torch.all(model.item_table()[0] == 0)  # padding row starts at zero
