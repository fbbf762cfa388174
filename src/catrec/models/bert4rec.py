"""BERT4Rec: bidirectional transformer trained as a cloze task (Sun et al., CIKM 2019).

Item + learnable position embeddings, LayerNorm and dropout, post-LayerNorm bidirectional
transformer blocks (as in BERT and the original BERT4Rec), and BERT's masked-item head (dense, GELU,
LayerNorm) before scoring against the shared item table.

The embedding table has ``n_items + 2`` rows: padding (0), the items (1..n_items) and the mask
token (``n_items + 1``, :attr:`BERT4Rec.mask_token`), which is never scored (the contract's
``score`` reads rows ``0..n_items`` only). The original's output bias is left out: every catrec
model scores by the plain dot product with the (possibly perturbed) table, which the losses rely
on.

Training (``catrec.train.loop.make_batch``): each real item of a training window is replaced by the
mask token with probability ``mask_prob`` and is the target there; a window whose draw masked
nothing has its most recent item masked instead, which gives the original's "mask only the last
item" training examples (Sun et al., §3.6). Prediction (``predict``): the mask token is appended to
the history and read at the last position; a history already ``max_len`` long loses its oldest
item, as in the original, whose input length counts the mask token.

Positions are counted from the most recent slot, so padding never changes a real position's
embedding and the appended mask token always takes the last one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from catrec.models.base import Dropout, SequentialRecommender


class BertBlock(nn.Module):
    """Post-LN transformer block (BERT): ``LN(x + MHA(x))`` then ``LN(x + FFN(x))``, FFN 4d."""

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d, eps=1e-12)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.ln2 = nn.LayerNorm(d, eps=1e-12)
        self.dropout = Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        """``x [B, L, d]``; ``attn_mask [B, 1, L, L]`` bool, True where attention is allowed."""
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, d // self.n_heads).unbind(2)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=attn_mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )  # [B, h, L, d/h]
        x = self.ln1(x + self.dropout(self.proj(out.transpose(1, 2).reshape(B, L, d))))
        return self.ln2(x + self.dropout(self.ff(x)))


class BERT4Rec(SequentialRecommender):
    """BERT4Rec encoder (Sun et al., CIKM 2019).

    Args:
        n_items: number of items; the table has ``n_items + 2`` rows (padding, items, mask token).
        hidden_size: d.
        max_len: L, the longest input, the appended mask token included.
        n_layers, n_heads, dropout: transformer settings.
    """

    causal = False

    def __init__(
        self,
        n_items: int,
        hidden_size: int = 64,
        max_len: int = 50,
        n_layers: int = 2,
        n_heads: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(n_items, hidden_size, max_len)
        if max_len < 2:
            raise ValueError(f"BERT4Rec needs max_len >= 2 (history + mask token), got {max_len}")
        self.mask_token = n_items + 1
        self.item_embedding = nn.Embedding(n_items + 2, hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden_size)
        self.emb_ln = nn.LayerNorm(hidden_size, eps=1e-12)
        self.emb_dropout = Dropout(dropout)
        self.blocks = nn.ModuleList(
            BertBlock(hidden_size, n_heads, dropout) for _ in range(n_layers)
        )
        # BERT's masked-LM transform, applied at every position (scores are read where needed).
        self.head = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.LayerNorm(hidden_size, eps=1e-12)
        )
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        # BERT's initialisation: N(0, 0.02) weights (truncated at 2 std), zero biases.
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
            elif module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def encode(self, inputs_embeds: Tensor, padding_mask: Tensor) -> Tensor:
        B, L, d = inputs_embeds.shape
        pos = self.positions(L, inputs_embeds.device)
        x = self.emb_dropout(self.emb_ln(inputs_embeds + self.position_embedding(pos)))
        # Bidirectional attention to real keys only; every position may see itself, so that fully
        # padded rows stay finite (their outputs are never read).
        eye = torch.eye(L, dtype=torch.bool, device=x.device)
        attn_mask = (padding_mask[:, None, :] | eye).unsqueeze(1)  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.head(x)
