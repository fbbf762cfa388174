"""GRU4Rec: session-based recommendation with recurrent networks (Hidasi et al., ICLR 2016).

The all-position next-item form used by RecBole and S3-Rec / ICLRec: item embedding, dropout, GRU
layer(s), a linear projection back to d, and the shared item table for scoring. The hidden state
at position t predicts item t + 1.

Padding: catrec inputs are left-padded, but a recurrent network run from the first column would
carry the padding prefix into the state it starts the real items from (a GRU fed zero inputs does
not stay at a zero state: its biases move it). :meth:`GRU4Rec.encode` therefore moves each row's
real positions to the front (a stable sort on the padding mask, so item order is kept), runs the
GRU from a zero state, and moves the outputs back. Padding then only ever follows the real items,
where a unidirectional GRU cannot reach them, so real hidden states are exactly those of the
unpadded sequence, without packing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from catrec.models.base import Dropout, SequentialRecommender


class GRU4Rec(SequentialRecommender):
    """GRU4Rec encoder (Hidasi et al., ICLR 2016).

    Args:
        n_items: number of items; the table has ``n_items + 1`` rows (row 0 = padding).
        hidden_size: d, the size of the embeddings, the GRU state and the output.
        max_len: L, the longest input (the GRU itself has no length limit; kept for the contract).
        n_layers: stacked GRU layers.
        dropout: dropout on the input embeddings (RecBole's ``dropout_prob``).
    """

    causal = True

    def __init__(
        self,
        n_items: int,
        hidden_size: int = 64,
        max_len: int = 50,
        n_layers: int = 1,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(n_items, hidden_size, max_len)
        self.item_embedding = nn.Embedding(n_items + 1, hidden_size, padding_idx=0)
        self.emb_dropout = Dropout(dropout)
        self.gru = nn.GRU(hidden_size, hidden_size, num_layers=n_layers, batch_first=True)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self._init()

    def _init(self) -> None:
        # RecBole's GRU4Rec initialisation: Xavier for the embedding and the recurrent weights.
        nn.init.xavier_normal_(self.item_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        for name, p in self.gru.named_parameters():
            if name.startswith("weight"):
                nn.init.xavier_uniform_(p)
            else:
                nn.init.zeros_(p)
        nn.init.xavier_normal_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def encode(self, inputs_embeds: Tensor, padding_mask: Tensor) -> Tensor:
        B, L, d = inputs_embeds.shape
        x = self.emb_dropout(inputs_embeds) * padding_mask.unsqueeze(-1)  # [B, L, d]
        if bool(padding_mask.all()):  # no padding (e.g. a trimmed batch of full rows)
            return self.proj(self.gru(x)[0])
        # order[b] lists row b's real positions first (in their order), then its padding;
        # ``inverse`` undoes it. The keys (padding flag * L + position) are distinct, so any sort
        # gives the stable order, also for masks that are not left padding; and unlike a stable
        # sort, argsort exports to ONNX (TopK).
        pos = torch.arange(L, device=padding_mask.device, dtype=torch.float32)  # keys < 2L, exact
        order = torch.argsort((~padding_mask).to(torch.float32) * L + pos, dim=1)  # [B, L]
        inverse = torch.argsort(order, dim=1)
        x = x.gather(1, order.unsqueeze(-1).expand(B, L, d))  # real items first
        out, _ = self.gru(x)  # [B, L, d], from a zero initial state
        out = out.gather(1, inverse.unsqueeze(-1).expand(B, L, d))  # back to left padding
        return self.proj(out)
