"""Query Generation Module (QGM, VLT paper §3.3): Nq visual query vectors from the fused map, each
re-weighted by attention over the words, so that different queries read the sentence differently.
Follows the released graph (docs/vlt.md §1 'QGM' rows): 6 coordinate channels, three 3x3 CBLs,
a 1x1 conv with bias to Nq maps, a per-map Linear(HW -> D) + ReLU, and full multi-head attention with
ReLU'd projections and a residual to the visual vector. With ``input_proj`` (the paper preset) the
queries, keys and values first pass through their own Linear(D -> D) + ReLU, as the three Dense
layers in front of the attention in the released graph (model/transfromer_model.py, lang_tf_enc)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .common import CBL, ReLUMultiheadAttention, coord_channels, sine_position_encoding
from .config import VLTConfig


class QueryGenerationModule(nn.Module):
    """
    Arguments:
      in_channels (int): channels of Fmq (512 in the paper); +6 coordinate channels inside.
      lang_dim (int): channels of the word features H (GRU units).
      feature_size (int): side of the Fmq map (26 at 416 input), so HW = feature_size**2.
      num_queries (int): Nq.
      dim (int): D.
      nheads (int): attention heads.
      mask_padding (bool): padded words get no attention.
      input_proj (bool): Linear + ReLU on the queries, keys and values before the attention (the
        released graph's q_inp/k_inp/v_inp Dense layers); absent when False.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        lang_dim: int,
        feature_size: int,
        num_queries: int,
        dim: int,
        nheads: int,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
        input_proj: bool = False,
    ) -> None:
        super().__init__()
        c = in_channels + 6
        kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.convs = nn.Sequential(CBL(c, c, 3, **kw), CBL(c, c, 3, **kw), CBL(c, c, 3, **kw))
        self.query_maps = nn.Conv2d(c, num_queries, 1, bias=True)
        self.map_to_vector = nn.Linear(feature_size * feature_size, dim)
        self.lang_proj = nn.Linear(lang_dim, dim)
        # Only created when on, so that state_dicts of configs without them keep their keys.
        self.input_proj = input_proj
        if input_proj:
            self.q_in = nn.Linear(dim, dim)
            self.k_in = nn.Linear(dim, dim)
            self.v_in = nn.Linear(dim, dim)
        self.attention = ReLUMultiheadAttention(dim, nheads)
        self.num_queries = num_queries
        self.feature_size = feature_size

    def forward(
        self, fmq: torch.Tensor, words: torch.Tensor, pad: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Arguments:
          fmq (torch.Tensor): B x C x H x W fused visual map.
          words (torch.Tensor): B x L x U word features H.
          pad (torch.Tensor | None): B x L bool, True on padded words (None: attend to all words).
        Returns:
          (Fq, word_attention): queries B x Nq x D and attention B x heads x Nq x L.
        """
        b, _, h, w = fmq.shape
        assert h == self.feature_size and w == self.feature_size, f"expected {self.feature_size}^2 map, got {fmq.shape}"
        vq = self._visual_queries(fmq)  # B x Nq x D
        lang = F.relu(self.lang_proj(words))  # B x L x D
        lang = lang + sine_position_encoding(lang.shape[1], lang.shape[2], lang)
        vq_pos = vq + sine_position_encoding(self.num_queries, vq.shape[2], vq)
        q, k, v = vq_pos, lang, lang
        if self.input_proj:
            q, k, v = F.relu(self.q_in(q)), F.relu(self.k_in(k)), F.relu(self.v_in(v))
        attended, attn = self.attention(q, k, v, key_padding_mask=pad)
        return attended + vq, attn  # residual to the visual vector, without position encoding

    def _visual_queries(self, fmq: torch.Tensor) -> torch.Tensor:
        b, _, h, w = fmq.shape
        x = torch.cat([fmq, coord_channels(b, h, w, fmq)], dim=1)  # B x (C+6) x H x W
        maps = self.query_maps(self.convs(x))  # B x Nq x H x W
        return F.relu(self.map_to_vector(maps.flatten(2)))  # B x Nq x HW -> B x Nq x D


def build_qgm(cfg: VLTConfig) -> QueryGenerationModule:
    return QueryGenerationModule(
        in_channels=cfg.c4,
        lang_dim=cfg.rnn_hidden,
        feature_size=cfg.feature_size,
        num_queries=cfg.num_queries,
        dim=cfg.d_model,
        nheads=cfg.nheads,
        bn_eps=cfg.bn_eps,
        bn_momentum=cfg.bn_momentum,
        input_proj=cfg.qgm_input_proj,
    )
