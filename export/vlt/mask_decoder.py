"""Mask decoder: each balanced query response becomes an H x W map through one shared
Linear(D -> HW) + ReLU; the Nq maps are stacked as Nq channels (no sum over queries) and decoded by
six 3x3 CBLs with three nearest 2x upsamplings and a final 3x3 conv to one logit channel at stride 2
(the 'responses -> map' and 'mask decoder' rows of docs/vlt.md §1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import CBL, up2
from .config import VLTConfig


class MaskDecoder(nn.Module):
    """
    Arguments:
      dim (int): D.
      num_queries (int): Nq, the input channels of the first conv.
      feature_size (int): side of the response maps (26 at 416 input).
      width (int): channels of the six CBLs (256 in the paper).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_queries: int,
        feature_size: int,
        width: int,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.feature_size = feature_size
        self.response_to_map = nn.Linear(dim, feature_size * feature_size)
        self.convs = nn.Sequential(
            CBL(num_queries, width, 3, **kw), CBL(width, width, 3, **kw), CBL(width, width, 3, **kw)
        )
        self.up_convs = nn.ModuleList([CBL(width, width, 3, **kw) for _ in range(3)])
        self.out = nn.Conv2d(width, 1, 3, padding=1, bias=True)

    def forward(self, responses: torch.Tensor) -> torch.Tensor:
        """
        Arguments:
          responses (torch.Tensor): R', B x Nq x D.
        Returns:
          torch.Tensor: mask logits B x 1 x 8H x 8W (stride 2 of the input).
        """
        b, nq, d = responses.shape
        s = self.feature_size
        maps = self.response_to_map(responses)  # B x Nq x HW
        x = self.convs(F.relu(maps).view(b, nq, s, s))  # B x Nq x H x W
        for conv in self.up_convs:
            x = conv(up2(x))
        return self.out(x)


def build_mask_decoder(cfg: VLTConfig) -> MaskDecoder:
    return MaskDecoder(
        dim=cfg.d_model,
        num_queries=cfg.num_queries,
        feature_size=cfg.feature_size,
        width=cfg.decoder_width,
        bn_eps=cfg.bn_eps,
        bn_momentum=cfg.bn_momentum,
    )
