"""Model registry: one file per model, all following :class:`SequentialRecommender`."""

from __future__ import annotations

from catrec.config import Config
from catrec.models.base import SequentialRecommender
from catrec.models.sasrec import SASRec

REGISTRY: dict[str, type[SequentialRecommender]] = {"sasrec": SASRec}


def build_model(config: Config, n_items: int) -> SequentialRecommender:
    """Build the model named by ``config.model`` (the one place config becomes constructor args)."""
    name = config.model
    if name == "sasrec":
        return SASRec(
            n_items,
            hidden_size=config.hidden_size,
            max_len=config.max_len,
            n_layers=config.n_layers or 2,
            n_heads=config.n_heads,
            dropout=config.dropout,
        )
    raise ValueError(f"model {name!r} is not available (registered: {sorted(REGISTRY)})")


__all__ = ["REGISTRY", "SASRec", "SequentialRecommender", "build_model"]
