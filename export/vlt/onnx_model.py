"""Wrappers used only for ONNX export. They fix the deployable contract (docs/vlt.md §3): named
inputs ``image`` (float32 B x 3 x S x S) and ``tokens`` (int64 B x L) and outputs ``mask_logits``,
``query_confidence`` and ``word_attention``, with no data-dependent Python control flow.

The network is also exported split at the backbone (``VLTImageEncoderOnnx`` and ``VLTHeadOnnx``):
the backbone does not depend on the words, so a server runs it once per image and the head once
per expression. Composing the two gives exactly ``VLTOnnxModel``.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .vlt import VLT

INPUT_NAMES = ["image", "tokens"]
OUTPUT_NAMES = ["mask_logits", "query_confidence", "word_attention"]
FEATURE_NAMES = ["fv0", "fv1", "fv2"]


class VLTOnnxModel(nn.Module):
    """image, tokens -> mask_logits, query_confidence, word_attention (the whole network)."""

    def __init__(self, model: VLT) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return self.model(image, tokens)


class VLTImageEncoderOnnx(nn.Module):
    """image -> fv0, fv1, fv2 (the backbone's three levels)."""

    def __init__(self, model: VLT) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return self.model.encode_image(image)


class VLTHeadOnnx(nn.Module):
    """fv0, fv1, fv2, tokens -> mask_logits, query_confidence, word_attention."""

    def __init__(self, model: VLT) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, fv0: torch.Tensor, fv1: torch.Tensor, fv2: torch.Tensor, tokens: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return self.model.decode(fv0, fv1, fv2, tokens)
