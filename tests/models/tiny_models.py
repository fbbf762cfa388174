"""Tiny models and data shared by the model tests (imported as ``tiny_models``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from catrec.config import Config, make_config
from catrec.data import SequenceData, SplitData, leave_one_out
from catrec.models import REGISTRY, build_model
from catrec.models.base import SequentialRecommender

N_ITEMS = 40
MAX_LEN = 10
HIDDEN = 16


def tiny_config(model: str, **overrides: Any) -> Config:
    """A resolved config for a tiny model (no dropout unless asked: deterministic passes)."""
    values: dict[str, Any] = {
        "dataset": "tiny",
        "model": model,
        "max_len": MAX_LEN,
        "hidden_size": HIDDEN,
        "n_heads": 2,
        "dropout": 0.0,
        "adv_warmup_epochs": 0,
    }
    return make_config(values | overrides)


def tiny_model(
    model: str, seed: int = 0, randomize: bool = False, **overrides: Any
) -> SequentialRecommender:
    """A tiny model built through ``build_model``.

    ``randomize`` adds noise to every parameter (biases and the padding row included), as training
    would: an initialisation's zeros can hide a padding leak (a GRU with zero biases stays at a
    zero state over zero inputs).
    """
    import torch

    torch.manual_seed(seed)
    net = build_model(tiny_config(model, **overrides), N_ITEMS)
    if randomize:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    return net


def tiny_split(n_users: int = 24, seed: int = 0, max_len: int = MAX_LEN) -> SplitData:
    """Random sequences of 3..16 items over N_ITEMS items (some longer than max_len + 3)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 17, size=n_users)
    lengths[0] = max_len + 6  # at least one training part longer than the window
    items = rng.integers(1, N_ITEMS + 1, size=int(lengths.sum())).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    data = SequenceData(
        name="tiny",
        user_tokens=np.array([str(u) for u in range(n_users)]),
        item_tokens=np.array([""] + [str(i) for i in range(1, N_ITEMS + 1)]),
        offsets=offsets,
        items=items,
    )
    return leave_one_out(data, max_len)


MODELS = sorted(REGISTRY)
