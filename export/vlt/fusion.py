"""Vision-language fusion: the sentence vector multiplies the stride-32 map, then the three backbone
levels are merged MCN-style into Fmq (for the Query Generation Module) and F_tf (for the transformer
encoder). The 'fusion at 13x13' and 'multi-scale' rows of docs/vlt.md §1; the released graph
concatenates levels here where the paper's prose resizes and sums them (§4)."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .common import CBL, up2
from .config import VLTConfig


class Fusion(nn.Module):
    """
    Arguments:
      c3, c4, c5 (int): channels of Fv2, Fv1, Fv0 (256, 512, 1024 in the paper).
      lang_dim (int): size of the sentence vector f (GRU units).
      out_dim (int): channels of F_tf, the transformer's D.
    """

    def __init__(
        self,
        *,
        c3: int,
        c4: int,
        c5: int,
        lang_dim: int,
        out_dim: int,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        # Fv0' = Fv0 + CBL3x3-C5(CBL1x1-C4(Fv0))
        self.refine = nn.Sequential(CBL(c5, c4, 1, **kw), CBL(c4, c5, 3, **kw))
        # f' = LeakyReLU(BN(Linear-C5(f)))
        self.lang_proj = nn.Linear(lang_dim, c5)
        self.lang_bn = nn.BatchNorm1d(c5, eps=bn_eps, momentum=bn_momentum)
        # Fm = LeakyReLU(BN(Fv0' * f'))
        self.fuse_bn = nn.BatchNorm2d(c5, eps=bn_eps, momentum=bn_momentum)
        # Fmq_mid = CBL1x1-C4(cat[up2(Fm), CBL1x1-C4(Fv1)])
        self.fv1_proj = CBL(c4, c4, 1, **kw)
        self.mid = CBL(c5 + c4, c4, 1, **kw)
        # Fmq = CBL1x1-C4(cat[Fmq_mid, CBL1x1-C3(avgpool2(Fv2))])
        self.fv2_proj = CBL(c3, c3, 1, **kw)
        self.fmq = CBL(c4 + c3, c4, 1, **kw)
        # Ftf_mid = cat[CBL3x3-C4(CBL1x1-C3(Fmq)), Fmq_mid]
        self.tf_mid = nn.Sequential(CBL(c4, c3, 1, **kw), CBL(c3, c4, 3, **kw))
        # F_tf = CBL1x1-D(CBL1x1-C3(cat[up2(Fm), CBL1x1-C4(Ftf_mid)]))
        self.tf_mid_proj = CBL(2 * c4, c4, 1, **kw)
        self.tf_out = nn.Sequential(CBL(c5 + c4, c3, 1, **kw), CBL(c3, out_dim, 1, **kw))

    def forward(
        self, fv0: torch.Tensor, fv1: torch.Tensor, fv2: torch.Tensor, sentence: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Arguments:
          fv0 (torch.Tensor): B x C5 x h x w (stride 32).
          fv1 (torch.Tensor): B x C4 x 2h x 2w (stride 16).
          fv2 (torch.Tensor): B x C3 x 4h x 4w (stride 8).
          sentence (torch.Tensor): B x U, the pooled sentence vector f.
        Returns:
          (Fmq, F_tf): B x C4 x 2h x 2w and B x D x 2h x 2w.
        """
        fm = self._multiply_sentence(fv0, sentence)  # B x C5 x h x w
        fm_up = up2(fm)  # B x C5 x 2h x 2w
        fmq_mid = self.mid(torch.cat([fm_up, self.fv1_proj(fv1)], dim=1))  # B x C4 x 2h x 2w
        fv2_down = self.fv2_proj(F.avg_pool2d(fv2, 2))  # B x C3 x 2h x 2w
        fmq = self.fmq(torch.cat([fmq_mid, fv2_down], dim=1))  # B x C4 x 2h x 2w
        ftf_mid = torch.cat([self.tf_mid(fmq), fmq_mid], dim=1)  # B x 2C4 x 2h x 2w
        f_tf = self.tf_out(torch.cat([fm_up, self.tf_mid_proj(ftf_mid)], dim=1))  # B x D x 2h x 2w
        return fmq, f_tf

    def _multiply_sentence(self, fv0: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        fv0 = fv0 + self.refine(fv0)
        lang = F.leaky_relu(self.lang_bn(self.lang_proj(sentence)), 0.1)  # B x C5
        return F.leaky_relu(self.fuse_bn(fv0 * lang[:, :, None, None]), 0.1)  # tiled over h x w


def build_fusion(cfg: VLTConfig) -> Fusion:
    return Fusion(
        c3=cfg.c3,
        c4=cfg.c4,
        c5=cfg.c5,
        lang_dim=cfg.rnn_hidden,
        out_dim=cfg.d_model,
        bn_eps=cfg.bn_eps,
        bn_momentum=cfg.bn_momentum,
    )
