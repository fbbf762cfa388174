"""Model registry: one file per model, all following :class:`SequentialRecommender`."""

from __future__ import annotations

import inspect

from catrec.config import Config
from catrec.models.base import SequentialRecommender
from catrec.models.bert4rec import BERT4Rec
from catrec.models.gru4rec import GRU4Rec
from catrec.models.sasrec import SASRec

REGISTRY: dict[str, type[SequentialRecommender]] = {
    "sasrec": SASRec,
    "gru4rec": GRU4Rec,
    "bert4rec": BERT4Rec,
}


def build_model(config: Config, n_items: int) -> SequentialRecommender:
    """Build the model named by ``config.model``: the one place a config becomes constructor args.

    Each constructor argument (other than ``n_items``) is taken from the config field of the same
    name, so a new model is one file plus its line in :data:`REGISTRY`.

    Raises:
        ValueError: unknown model name, or a constructor argument with no config field.
    """
    try:
        cls = REGISTRY[config.model]
    except KeyError:
        raise ValueError(
            f"model {config.model!r} is not available (registered: {sorted(REGISTRY)})"
        ) from None
    kwargs = {}
    for name in inspect.signature(cls.__init__).parameters:
        if name in ("self", "n_items"):
            continue
        if name not in Config.model_fields:
            raise ValueError(f"{cls.__name__} argument {name!r} has no config field")
        kwargs[name] = getattr(config, name)
    return cls(n_items, **kwargs)


__all__ = ["BERT4Rec", "GRU4Rec", "REGISTRY", "SASRec", "SequentialRecommender", "build_model"]
