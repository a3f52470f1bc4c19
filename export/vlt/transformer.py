"""Vision-language transformer (VLT paper §3.4): a post-norm encoder over the fused visual tokens and
a decoder in which the generated queries ask the encoded image for their responses.

Like the Keras transformer the released graph is built from: ReLU after every attention projection,
FFN width from the config (256 in the paper), dropout on each sub-layer's output before the residual
add, LayerNorm after it (post-norm), sine position encodings added once, and a causal mask in the
decoder's self-attention (query n sees queries <= n) — a leftover of that library that is part of
the trained model (docs/vlt.md §4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import ReLUMultiheadAttention, sine_position_encoding
from .config import VLTConfig


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.relu(self.linear1(x)))


class TransformerEncoderLayer(nn.Module):
    """Post-norm: x = LN(x + drop(MHA(x))); x = LN(x + drop(FFN(x)))."""

    def __init__(self, *, dim: int, nheads: int, ffn_dim: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.self_attn = ReLUMultiheadAttention(dim, nheads)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.ffn = FeedForward(dim, ffn_dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (torch.Tensor): B x HW x D -> B x HW x D."""
        x = self.norm1(x + self.dropout(self.self_attn(x, x, x)[0]))
        return self.norm2(x + self.dropout(self.ffn(x)))


class TransformerDecoderLayer(nn.Module):
    """Post-norm: causal self-attention, cross-attention to the encoder output, FFN."""

    def __init__(self, *, dim: int, nheads: int, ffn_dim: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.self_attn = ReLUMultiheadAttention(dim, nheads)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = ReLUMultiheadAttention(dim, nheads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.ffn = FeedForward(dim, ffn_dim)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, y: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """
        Arguments:
          y (torch.Tensor): B x Nq x D queries.
          memory (torch.Tensor): B x HW x D encoder output.
        Returns:
          torch.Tensor: B x Nq x D.
        """
        y = self.norm1(y + self.dropout(self.self_attn(y, y, y, causal=True)[0]))
        y = self.norm2(y + self.dropout(self.cross_attn(y, memory, memory)[0]))
        return self.norm3(y + self.dropout(self.ffn(y)))


class Transformer(nn.Module):
    """
    Arguments:
      dim (int): D. nheads (int): heads. ffn_dim (int): FFN width.
      enc_layers, dec_layers (int): depth of encoder and decoder (2 and 2 in the paper).
    """

    def __init__(
        self,
        *,
        dim: int,
        nheads: int,
        ffn_dim: int,
        enc_layers: int,
        dec_layers: int,
        dropout: float,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        kw = dict(dim=dim, nheads=nheads, ffn_dim=ffn_dim, dropout=dropout, eps=eps)
        self.encoder = nn.ModuleList([TransformerEncoderLayer(**kw) for _ in range(enc_layers)])
        self.decoder = nn.ModuleList([TransformerDecoderLayer(**kw) for _ in range(dec_layers)])

    def forward(
        self, f_tf: torch.Tensor, queries: torch.Tensor
    ) -> torch.Tensor:
        """
        Arguments:
          f_tf (torch.Tensor): B x D x H x W fused visual map.
          queries (torch.Tensor): B x Nq x D, the QGM's output Fq.
        Returns:
          torch.Tensor: responses R, B x Nq x D.
        """
        x = f_tf.flatten(2).transpose(1, 2)  # B x D x H x W -> B x HW x D
        x = x + sine_position_encoding(x.shape[1], x.shape[2], x)
        for layer in self.encoder:
            x = layer(x)
        y = queries + sine_position_encoding(queries.shape[1], queries.shape[2], queries)
        for layer in self.decoder:
            y = layer(y, x)
        return y


def build_transformer(cfg: VLTConfig) -> Transformer:
    return Transformer(
        dim=cfg.d_model,
        nheads=cfg.nheads,
        ffn_dim=cfg.ffn_dim,
        enc_layers=cfg.enc_layers,
        dec_layers=cfg.dec_layers,
        dropout=cfg.dropout,
        eps=cfg.layer_norm_eps,
    )
