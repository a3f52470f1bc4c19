"""Visual backbone: Darknet-53 (YOLOv3, Redmon & Farhadi 2018) plus the six YOLOv3 head convs.

Implements the 'backbone' row of the VLT paper's pipeline (docs/vlt.md §1). Widths and depths are
scaled by the config; the paper preset is exactly Darknet-53 (stem 32; stages 64x1, 128x2, 256x8,
512x8, 1024x4) followed by 1x1-512, 3x3-1024 (three times). Returns three levels:
Fv0 (stride 32, after the head convs), Fv1 (stride 16, end of the fourth stage) and Fv2 (stride 8,
end of the third stage).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

from .common import CBL
from .config import VLTConfig


class ResidualBlock(nn.Module):
    """Darknet residual block: x + CBL3x3-C(CBL1x1-C/2(x))."""

    def __init__(self, channels: int, *, bn_eps: float, bn_momentum: float) -> None:
        super().__init__()
        kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.conv1 = CBL(channels, channels // 2, 1, **kw)
        self.conv2 = CBL(channels // 2, channels, 3, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class Backbone(nn.Module):
    """Darknet-53 with the six YOLOv3 head convs.

    Arguments:
      width (int): stem channels (32 in Darknet-53); stage k has width * 2**k channels.
      depths (Sequence[int]): residual blocks per stage ((1, 2, 8, 8, 4) in Darknet-53).
    """

    def __init__(
        self,
        *,
        width: int = 32,
        depths: Sequence[int] = (1, 2, 8, 8, 4),
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.stem = CBL(3, width, 3, **kw)
        stages = []
        c_in = width
        for k, depth in enumerate(depths):
            c = width * 2 ** (k + 1)
            blocks = [CBL(c_in, c, 3, stride=2, **kw)]
            blocks += [ResidualBlock(c, **kw) for _ in range(depth)]
            stages.append(nn.Sequential(*blocks))
            c_in = c
        self.stages = nn.ModuleList(stages)
        c5 = c_in
        # The six YOLOv3 head convs on the last level: (1x1-C5/2, 3x3-C5) x 3.
        head = []
        for _ in range(3):
            head += [CBL(c5, c5 // 2, 1, **kw), CBL(c5 // 2, c5, 3, **kw)]
        self.head = nn.Sequential(*head)
        self.out_channels = (c5, c5 // 2, c5 // 4)

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Arguments:
          image (torch.Tensor): B x 3 x S x S, RGB in [0, 1], letterboxed.
        Returns:
          (Fv0, Fv1, Fv2): B x C5 x S/32 x S/32, B x C4 x S/16 x S/16, B x C3 x S/8 x S/8.
        """
        assert image.dim() == 4 and image.shape[1] == 3, f"expected B x 3 x S x S, got {image.shape}"
        x = self.stem(image)
        x = self.stages[0](x)  # stride 2
        x = self.stages[1](x)  # stride 4
        fv2 = self.stages[2](x)  # stride 8
        fv1 = self.stages[3](fv2)  # stride 16
        x = self.stages[4](fv1)  # stride 32
        fv0 = self.head(x)
        return fv0, fv1, fv2


def build_backbone(cfg: VLTConfig) -> Backbone:
    return Backbone(
        width=cfg.backbone_width,
        depths=cfg.backbone_depths,
        bn_eps=cfg.bn_eps,
        bn_momentum=cfg.bn_momentum,
    )
