"""Building blocks shared by the components: the CBL unit of Darknet/YOLOv3, coordinate maps and the
ReLU'd multi-head attention of the original Keras graph (keras-multi-head with ``activation='relu'``)."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class CBL(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> LeakyReLU(0.1), the unit every Darknet/YOLOv3 conv is built of.

    Arguments:
      in_channels (int): input channels C_in.
      out_channels (int): output channels C_out.
      kernel_size (int): 1 or 3; padding keeps the size ('same'), except for stride 2.
      stride (int): 1, or 2 for Darknet's downsampling convs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        stride: int = 1,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum),
            nn.LeakyReLU(0.1),
        )


def up2(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling (Keras UpSampling2D)."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def coord_channels(batch: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """The QGM's 6 coordinate channels [x, x, x, y, y, y], x and y in [-1, 1].

    Returns:
      torch.Tensor: B x 6 x H x W, same dtype and device as ``like``.
    """
    xs = torch.linspace(-1.0, 1.0, width, dtype=like.dtype, device=like.device)
    ys = torch.linspace(-1.0, 1.0, height, dtype=like.dtype, device=like.device)
    gx = xs.view(1, 1, 1, width).expand(batch, 3, height, width)
    gy = ys.view(1, 1, height, 1).expand(batch, 3, height, width)
    return torch.cat([gx, gy], dim=1)


def sine_position_encoding(length: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """1-D sine/cosine position encoding (Vaswani et al.) over ``length`` positions.

    Returns:
      torch.Tensor: length x dim; even channels sin, odd channels cos.
    """
    position = torch.arange(length, dtype=torch.float32, device=like.device).unsqueeze(1)
    div = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32, device=like.device) * (-math.log(10000.0) / dim)
    )
    pe = torch.zeros(length, dim, dtype=torch.float32, device=like.device)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe.to(like.dtype)


class ReLUMultiheadAttention(nn.Module):
    """Multi-head attention with a ReLU after each of the Q, K, V and output projections.

    This is the attention of the released Keras graph (keras-multi-head ``MultiHeadAttention`` with
    ``activation='relu'``, weights ``_Wq/_bq, _Wk/_bk, _Wv/_bv, _Wo/_bo``), not torch's
    ``nn.MultiheadAttention`` (which has no activations). Scale 1/sqrt(D/heads).

    Arguments:
      dim (int): D, the model width of queries, keys and values.
      nheads (int): number of heads; D must be divisible by it.
    """

    def __init__(self, dim: int, nheads: int) -> None:
        super().__init__()
        assert dim % nheads == 0, f"dim {dim} not divisible by nheads {nheads}"
        self.nheads = nheads
        self.head_dim = dim // nheads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        key_padding_mask: Optional[torch.Tensor] = None,
        causal: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Arguments:
          query (torch.Tensor): B x Nq x D.
          key (torch.Tensor): B x Nk x D.
          value (torch.Tensor): B x Nk x D.
          key_padding_mask (torch.Tensor | None): B x Nk bool, True where the key is padding.
          causal (bool): query n attends to keys <= n only (needs Nq == Nk).
        Returns:
          (torch.Tensor, torch.Tensor): output B x Nq x D and attention weights B x heads x Nq x Nk.
        """
        b, nq, d = query.shape
        nk = key.shape[1]
        h, hd = self.nheads, self.head_dim
        # B x N x D -> B x heads x N x D/heads
        q = F.relu(self.q_proj(query)).view(b, nq, h, hd).transpose(1, 2)
        k = F.relu(self.k_proj(key)).view(b, nk, h, hd).transpose(1, 2)
        v = F.relu(self.v_proj(value)).view(b, nk, h, hd).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))  # B x h x Nq x Nk
        if causal:
            allowed = torch.ones(nq, nk, dtype=torch.bool, device=query.device).tril()
            scores = scores.masked_fill(~allowed, float("-inf"))
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        # A padding mask over every key would give NaN rows; such rows attend to nothing instead.
        attn = torch.nan_to_num(attn, nan=0.0)
        out = torch.matmul(attn, v)  # B x h x Nq x D/h
        out = out.transpose(1, 2).reshape(b, nq, d)  # B x Nq x D
        return F.relu(self.out_proj(out)), attn
