"""Model registry: one file per model, all following :class:`SequentialRecommender`."""

from __future__ import annotations

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
    if name == "gru4rec":
        return GRU4Rec(
            n_items,
            hidden_size=config.hidden_size,
            max_len=config.max_len,
            n_layers=config.n_layers or 1,
            dropout=config.dropout,
        )
    if name == "bert4rec":
        return BERT4Rec(
            n_items,
            hidden_size=config.hidden_size,
            max_len=config.max_len,
            n_layers=config.n_layers or 2,
            n_heads=config.n_heads,
            dropout=config.dropout,
        )
    raise ValueError(f"model {name!r} is not available (registered: {sorted(REGISTRY)})")


__all__ = ["BERT4Rec", "GRU4Rec", "REGISTRY", "SASRec", "SequentialRecommender", "build_model"]
