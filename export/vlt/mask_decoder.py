"""Mask decoder: each balanced query response becomes an H x W map through one shared
Linear(D -> HW) + ReLU; the Nq maps are stacked as Nq channels (no sum over queries) and decoded by
six 3x3 CBLs with three nearest 2x upsamplings and a final 3x3 conv to one logit channel at stride 2
(the 'responses -> map' and 'mask decoder' rows of docs/vlt.md §1). Three optional additions, not in
VLT and off in every preset, are described at VLTConfig.decoder_skip, VLTConfig.decoder_skip_gate and
VLTConfig.memory_maps."""

from __future__ import annotations

from typing import Optional

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
        skip_channels: int = 0,
        skip_gate: bool = False,
        memory_maps: bool = False,
    ) -> None:
        super().__init__()
        kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        # optional, not in VLT: Fv2 (stride 8) projected and added after the first upsampling
        self.skip = CBL(skip_channels, width, 1, **kw) if skip_channels else None
        # optional, not in VLT: gate that skip by the query path, sigmoid(G x) with G's bias at -2
        self.skip_gate = nn.Conv2d(width, width, 1) if skip_channels and skip_gate else None
        if self.skip_gate is not None:
            nn.init.constant_(self.skip_gate.bias, -2.0)
        self.feature_size = feature_size
        self.response_to_map = nn.Linear(dim, feature_size * feature_size)
        # optional, not in VLT: + <W_r r, W_m m_hw> / sqrt(D) for each query response r and encoder cell m_hw
        self.memory_query = nn.Linear(dim, dim) if memory_maps else None
        self.memory_key = nn.Linear(dim, dim) if memory_maps else None
        self.convs = nn.Sequential(
            CBL(num_queries, width, 3, **kw), CBL(width, width, 3, **kw), CBL(width, width, 3, **kw)
        )
        self.up_convs = nn.ModuleList([CBL(width, width, 3, **kw) for _ in range(3)])
        self.out = nn.Conv2d(width, 1, 3, padding=1, bias=True)

    def forward(
        self, responses: torch.Tensor, fv2: Optional[torch.Tensor] = None, memory: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """
        Arguments:
          responses (torch.Tensor): R', B x Nq x D.
          fv2 (torch.Tensor, optional): B x C3 x 2H x 2W, used only when built with skip_channels.
          memory (torch.Tensor, optional): the encoder output B x HW x D, used only with memory_maps.
        Returns:
          torch.Tensor: mask logits B x 1 x 8H x 8W (stride 2 of the input).
        """
        b, nq, d = responses.shape
        s = self.feature_size
        maps = self.response_to_map(responses)  # B x Nq x HW
        if self.memory_query is not None:
            assert memory is not None, "a decoder built with memory_maps needs the encoder memory"
            q, k = self.memory_query(responses), self.memory_key(memory)  # B x Nq x D, B x HW x D
            maps = maps + torch.bmm(q, k.transpose(1, 2)) * d ** -0.5
        x = self.convs(F.relu(maps).view(b, nq, s, s))  # B x Nq x H x W
        for i, conv in enumerate(self.up_convs):
            x = up2(x)
            if i == 0 and self.skip is not None:
                assert fv2 is not None, "a decoder built with skip_channels needs Fv2"
                detail = self.skip(fv2)
                x = x + (torch.sigmoid(self.skip_gate(x)) * detail if self.skip_gate is not None else detail)
            x = conv(x)
        return self.out(x)


def build_mask_decoder(cfg: VLTConfig) -> MaskDecoder:
    return MaskDecoder(
        dim=cfg.d_model,
        num_queries=cfg.num_queries,
        feature_size=cfg.feature_size,
        width=cfg.decoder_width,
        bn_eps=cfg.bn_eps,
        bn_momentum=cfg.bn_momentum,
        skip_channels=cfg.c3 if cfg.decoder_skip else 0,
        skip_gate=cfg.decoder_skip_gate,
        memory_maps=cfg.memory_maps,
    )
