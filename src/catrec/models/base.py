"""The one model contract every catrec encoder follows.

A model splits next-item prediction into three steps so that CAT (Tan et al., SDM 2024, §3) can
perturb between them without hooks:

    embed(item_ids, table)            -> input embeddings e     [B, L, d]
    encode(e, padding_mask)           -> hidden states h        [B, L, d]
    score(h, table)                   -> logits over items      [..., n_items + 1]

``table`` is the item embedding matrix (``item_table()``, possibly perturbed), shared by input and
output. Models never compute losses and never branch on ``self.training`` for what they return;
dropout is the only train/eval difference.

Conventions (fixed for all models): item 0 is padding, sequences are left-padded, the
prediction for the next item is read at the last position.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn


class SequentialRecommender(nn.Module, ABC):
    """Abstract base of catrec's encoders (SASRec, GRU4Rec, BERT4Rec).

    Subclasses set :attr:`causal` and define ``item_embedding`` (an ``nn.Embedding`` whose first
    ``n_items + 1`` rows are padding and items; extra rows, such as a mask token, may follow) and
    :meth:`encode`.
    """

    #: True when the hidden state at position t depends only on inputs at positions <= t.
    causal: bool = True
    #: Row of the embedding table used as the cloze mask token, or None (causal models).
    mask_token: int | None = None

    def __init__(self, n_items: int, hidden_size: int, max_len: int) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        self.n_items = n_items
        self.hidden_size = hidden_size
        self.max_len = max_len

    item_embedding: nn.Embedding

    def item_table(self) -> Tensor:
        """The item embedding matrix, ``[n_rows, d]`` (row 0 = padding)."""
        return self.item_embedding.weight

    def embed(self, item_ids: Tensor, table: Tensor | None = None) -> Tensor:
        """Look up input embeddings ``[B, L, d]`` for ``item_ids [B, L]`` in ``table``."""
        return nn.functional.embedding(item_ids, self.item_table() if table is None else table)

    @abstractmethod
    def encode(self, inputs_embeds: Tensor, padding_mask: Tensor) -> Tensor:
        """Hidden states ``[B, L, d]`` from input embeddings ``[B, L, d]``.

        ``padding_mask [B, L]`` is True at real (non-padding) positions. Padding positions must not
        influence real ones; their own hidden states are unspecified.
        """

    def positions(self, length: int, device: torch.device) -> Tensor:
        """Position ids ``[length]`` counted from the most recent item (the last column).

        A shorter or less padded input thus gets the same positional embeddings at its end.

        Raises:
            ValueError: ``length > max_len``.
        """
        if length > self.max_len:
            raise ValueError(f"input length {length} exceeds max_len {self.max_len}")
        return torch.arange(self.max_len - length, self.max_len, device=device)

    def score(self, hidden: Tensor, table: Tensor | None = None) -> Tensor:
        """Logits ``[..., n_items + 1]`` of every item (column 0 = padding), ``hidden [..., d]``."""
        table = self.item_table() if table is None else table
        return hidden @ table[: self.n_items + 1].T

    def score_items(self, hidden: Tensor, lo: int, hi: int, out: Tensor | None = None) -> Tensor:
        """Logits ``[B, hi - lo]`` of items ``lo..hi-1`` (0 = padding) for ``hidden [B, d]``.

        Columns ``lo:hi`` of :meth:`score`, computed without the other columns, so that full
        ranking over a large catalogue can hold one chunk of items at a time; ``out`` (``[B, hi -
        lo]``, contiguous) is reused instead of a new tensor per chunk.
        """
        if not 0 <= lo <= hi <= self.n_items + 1:
            raise ValueError(f"item range {lo}:{hi} outside 0:{self.n_items + 1}")
        return torch.matmul(hidden, self.item_table()[lo:hi].T, out=out)

    def forward(self, item_ids: Tensor) -> Tensor:
        """Hidden states ``[B, L, d]`` for ``item_ids [B, L]`` (embed, then encode)."""
        return self.encode(self.embed(item_ids), item_ids > 0)

    @torch.no_grad()
    def predict(self, item_ids: Tensor) -> Tensor:
        """Next-item logits ``[B, n_items + 1]`` read at the last position of ``item_ids [B, L]``.

        Bidirectional models get a mask token appended (see :meth:`prediction_input`) so that the
        prediction slot sees the whole history.
        """
        return self.score(self.predict_hidden(item_ids))

    @torch.no_grad()
    def predict_hidden(self, item_ids: Tensor) -> Tensor:
        """Hidden state ``[B, d]`` that :meth:`predict` scores, for ``item_ids [B, L]``."""
        ids = self.prediction_input(item_ids)
        return self.encode(self.embed(ids), ids > 0)[:, -1]

    def prediction_input(self, item_ids: Tensor) -> Tensor:
        """Input ids for next-item prediction; causal models use the sequence itself.

        Bidirectional models: ``item_ids [B, W]`` with the mask token appended, ``[B, W + 1]``;
        when that would exceed ``max_len``, the oldest columns are dropped, so a row keeps its most
        recent ``max_len - 1`` items whatever else is in the batch (as in the original BERT4Rec,
        whose input length counts the mask token; training windows are ``max_len`` long too).
        """
        if self.mask_token is None:
            return item_ids
        mask = torch.full_like(item_ids[:, :1], self.mask_token)
        keep = item_ids[:, max(item_ids.shape[1] + 1 - self.max_len, 0) :]
        return torch.cat([keep, mask], dim=1)


class Dropout(nn.Module):
    """Inverted dropout drawn with ``torch.rand`` (about 3x faster on CPU than ``nn.Dropout``,
    whose ``bernoulli_`` dominated SASRec's training step). Same semantics: identity in eval mode.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand_like(x) >= self.p
        return x * keep * (1.0 / (1.0 - self.p))


def items_read(model: SequentialRecommender, ids: Tensor) -> Tensor:
    """The items the model reads for ``ids [B, W]``, ``[B, W']`` (0 = none): its
    ``prediction_input`` with the mask token removed; this is the history a ranking masks (for
    BERT4Rec without the oldest item of a full-length input, which the model never sees)."""
    read = model.prediction_input(ids)  # [B, W']
    return torch.where(read > model.n_items, 0, read)


def trim_padding(item_ids: Tensor) -> Tensor:
    """Drop leading columns that are padding in every row of ``item_ids [B, L]`` (speed only)."""
    real = (item_ids > 0).any(dim=0)
    if not bool(real.any()):
        return item_ids[:, -1:]
    first = int(real.float().argmax())
    return item_ids[:, first:]
