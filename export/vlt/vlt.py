"""VLT: Vision-Language Transformer and Query Generation for Referring Segmentation (ICCV 2021).

The top-level model receives its built components and wires them in the order of the paper's
pipeline: backbone -> language encoder -> fusion -> QGM -> transformer -> QBM -> mask decoder.
``encode_image`` and ``decode`` split it at the backbone, which does not depend on the words, so a
server can run the backbone once for many expressions about one image.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import nn

from .backbone import Backbone, build_backbone
from .config import VLTConfig, get_config
from .fusion import Fusion, build_fusion
from .language import LanguageEncoder, build_language_encoder
from .mask_decoder import MaskDecoder, build_mask_decoder
from .qbm import QueryBalanceModule, build_qbm
from .qgm import QueryGenerationModule, build_qgm
from .transformer import Transformer, build_transformer

Outputs = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class VLT(nn.Module):
    """
    Arguments:
      backbone (Backbone): image -> (Fv0, Fv1, Fv2).
      language_encoder (LanguageEncoder): token ids -> word features, sentence vector, padding mask.
      fusion (Fusion): levels x sentence -> (Fmq, F_tf).
      qgm (QueryGenerationModule): (Fmq, words) -> queries Fq, word attention.
      transformer (Transformer): (F_tf, Fq) -> responses R.
      qbm (QueryBalanceModule): (R, Fq) -> (R', confidences).
      mask_decoder (MaskDecoder): R' -> mask logits.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        language_encoder: LanguageEncoder,
        fusion: Fusion,
        qgm: QueryGenerationModule,
        transformer: Transformer,
        qbm: QueryBalanceModule,
        mask_decoder: MaskDecoder,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.language_encoder = language_encoder
        self.fusion = fusion
        self.qgm = qgm
        self.transformer = transformer
        self.qbm = qbm
        self.mask_decoder = mask_decoder

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> Outputs:
        """
        Arguments:
          image (torch.Tensor): B x 3 x S x S letterboxed RGB in [0, 1].
          tokens (torch.Tensor): word ids, shape B x L, right-padded with 0.
        Returns:
          (mask_logits, query_confidence, word_attention): B x 1 x S/2 x S/2, B x Nq, B x Nq x L.
        """
        fv0, fv1, fv2 = self.encode_image(image)
        return self.decode(fv0, fv1, fv2, tokens)

    def encode_image(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the backbone: B x 3 x S x S -> (Fv0, Fv1, Fv2)."""
        return self.backbone(image)

    def decode(self, fv0: torch.Tensor, fv1: torch.Tensor, fv2: torch.Tensor, tokens: torch.Tensor) -> Outputs:
        """Everything after the backbone; see ``forward``."""
        assert tokens.shape[0] == fv0.shape[0], f"batch mismatch: tokens {tokens.shape}, Fv0 {fv0.shape}"
        words, sentence, pad = self.language_encoder(tokens)  # B x L x U, B x U
        fmq, f_tf = self.fusion(fv0, fv1, fv2, sentence)  # B x C4 x H x W, B x D x H x W
        queries, attn = self.qgm(fmq, words, pad)  # B x Nq x D, B x heads x Nq x L
        responses = self.transformer(f_tf, queries)  # B x Nq x D
        balanced, confidence = self.qbm(responses, queries)  # B x Nq x D, B x Nq
        mask_logits = self.mask_decoder(balanced)  # B x 1 x S/2 x S/2
        return mask_logits, confidence, attn.mean(dim=1)  # heads averaged: B x Nq x L


def _build_vlt(cfg: VLTConfig) -> VLT:
    return VLT(
        backbone=build_backbone(cfg),
        language_encoder=build_language_encoder(cfg),
        fusion=build_fusion(cfg),
        qgm=build_qgm(cfg),
        transformer=build_transformer(cfg),
        qbm=build_qbm(cfg),
        mask_decoder=build_mask_decoder(cfg),
    )


def build_vlt(cfg: VLTConfig) -> VLT:
    """Build an untrained VLT from a config (the word table is zeros until vectors are loaded)."""
    return _build_vlt(cfg)


def build_vlt_preset(preset: str, **overrides: Any) -> VLT:
    return _build_vlt(get_config(preset, **overrides))


vlt_registry: Dict[str, Any] = {
    "paper": lambda **kw: build_vlt_preset("paper", **kw),
    "tiny": lambda **kw: build_vlt_preset("tiny", **kw),
    "small": lambda **kw: build_vlt_preset("small", **kw),
}


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
