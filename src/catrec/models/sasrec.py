"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

Learnable positional embeddings, causal self-attention blocks (pre-LayerNorm, as in the reference
SASRec.pytorch), shared item embedding table for input and output.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from catrec.models.base import Dropout, SequentialRecommender


class TransformerBlock(nn.Module):
    """Pre-LN self-attention block: ``x + MHA(LN(x))`` then ``x + FFN(LN(x))``."""

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d, eps=1e-8)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d, eps=1e-8)
        self.ff = nn.Sequential(nn.Linear(d, d), nn.GELU(), Dropout(dropout), nn.Linear(d, d))
        self.dropout = Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        """``x [B, L, d]``; ``attn_mask [B, 1, L, L]`` bool, True where attention is allowed."""
        B, L, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.n_heads, d // self.n_heads).unbind(2)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=attn_mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )  # [B, h, L, d/h]
        x = x + self.dropout(self.proj(out.transpose(1, 2).reshape(B, L, d)))
        return x + self.dropout(self.ff(self.ln2(x)))


class SASRec(SequentialRecommender):
    """SASRec encoder (Kang & McAuley, ICDM 2018).

    Args:
        n_items: number of items; the table has ``n_items + 1`` rows (row 0 = padding).
        hidden_size: d.
        max_len: L, the longest input; positions are counted from the most recent item, so a
            shorter (or less padded) input gets the same positional embeddings at its end.
        n_layers, n_heads, dropout: transformer settings.
    """

    causal = True

    def __init__(
        self,
        n_items: int,
        hidden_size: int = 64,
        max_len: int = 50,
        n_layers: int = 2,
        n_heads: int = 2,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(n_items, hidden_size, max_len)
        self.item_embedding = nn.Embedding(n_items + 1, hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden_size)
        self.emb_dropout = Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, n_heads, dropout) for _ in range(n_layers)
        )
        self.final_ln = nn.LayerNorm(hidden_size, eps=1e-8)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def encode(self, inputs_embeds: Tensor, padding_mask: Tensor) -> Tensor:
        B, L, d = inputs_embeds.shape
        pos = self.positions(L, inputs_embeds.device)
        x = inputs_embeds * math.sqrt(d) + self.position_embedding(pos)  # [B, L, d]
        x = self.emb_dropout(x) * padding_mask.unsqueeze(-1)
        # Causal attention to real keys only; every position may see itself, so that fully padded
        # rows stay finite (their outputs are never read).
        causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        eye = torch.eye(L, dtype=torch.bool, device=x.device)
        attn_mask = (causal & padding_mask[:, None, :]) | eye  # [B, L, L]
        attn_mask = attn_mask.unsqueeze(1)  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, attn_mask) * padding_mask.unsqueeze(-1)
        return self.final_ln(x)
