"""Training-only aids: they change how the network learns, never the graph that is exported.

Each aid wraps or adjusts a built VLT from the outside (as DETR adds its segmentation head around
a built DETR) instead of adding a flag to the network:

- ``train_word_table``: turns the frozen word table into a trainable parameter. The state-dict key
  and the exported constant are the same, so a checkpoint trained this way loads into a plain VLT.
  Not in the paper (frozen GloVe); used for the CPU default model only, whose 50-d GloVe rows for
  the words it must tell apart are near-identical (models/vlt-refshapes/README.md, "Words").
- ``EncoderMaskHead``: deep supervision of the transformer encoder. A linear layer reads each cell
  of the encoder's output and predicts the share of that cell the target covers; its loss is added
  to the referring loss. The head is not part of the VLT and is dropped at export.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from export.vlt import VLT


def train_word_table(model: VLT) -> None:
    """Make ``model``'s word table a trainable parameter (it is a frozen buffer in the VLT)."""
    embedding = model.language_encoder.embedding
    table = embedding.table
    del embedding.table
    embedding.table = nn.Parameter(table.detach().clone())


def soft_mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean BCE + soft Dice per sample, averaged: the "mean BCE + Dice" scale of the main loss."""
    logits, target = logits.float().flatten(1), target.float().flatten(1)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = 1.0 - (2.0 * (p * target).sum(1) + 1.0) / (p.sum(1) + target.sum(1) + 1.0)
    return bce + dice.mean()


class EncoderMaskHead(nn.Module):
    """Predicts the target at the encoder's H x W resolution from the transformer encoder's output.

    A forward hook on the last encoder layer keeps its output during the model's own forward pass,
    so the VLT runs unchanged; ``loss`` then scores that output against the target pooled to H x W.

    Arguments:
      model (VLT): the built network; its last encoder layer is hooked.
      dim (int): D.
      feature_size (int): H = W of the encoder's token grid.
    """

    def __init__(self, model: VLT, *, dim: int, feature_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 1)
        self.feature_size = feature_size
        self._memory: Optional[torch.Tensor] = None
        model.transformer.encoder[-1].register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self._memory = output

    def loss(self, target: torch.Tensor) -> torch.Tensor:
        """target (torch.Tensor): B x 1 x m x m in [0, 1], the referring target at mask size."""
        assert self._memory is not None, "run the model's forward pass before EncoderMaskHead.loss"
        memory, self._memory = self._memory, None
        s = self.feature_size
        logits = self.proj(memory.float()).view(memory.shape[0], 1, s, s)
        return soft_mask_loss(logits, F.adaptive_avg_pool2d(target.float(), s))
