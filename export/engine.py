"""Training and evaluation loops, the loss, the learning-rate schedule and checkpoints."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export.preprocess import letterbox_image, letterbox_mask
from export.vlt import VLT, VLTConfig, build_vlt
from export.vlt.tokenizer import Tokenizer


def referring_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's loss: BCE with logits summed over pixels, divided by the batch size.

    Arguments:
      logits (torch.Tensor): B x 1 x m x m. target (torch.Tensor): B x 1 x m x m in [0, 1].
    """
    return F.binary_cross_entropy_with_logits(logits.float(), target, reduction="sum") / logits.shape[0]


def conv_weight_decay(model: nn.Module) -> torch.Tensor:
    """Sum of squared conv kernels (the original's L2 regulariser on conv kernels)."""
    total = torch.zeros(())
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            total = total + m.weight.float().pow(2).sum()
    return total


def lr_at(progress: float, *, base_lr: float, warmup: float, final_ratio: float) -> float:
    """Learning rate at training progress in [0, 1]:
    1) linear warm-up over the first ``warmup`` fraction;
    2) cosine decay from base_lr to base_lr * final_ratio over the rest."""
    if progress < warmup:
        return base_lr * max(progress / warmup, 0.01)
    t = min(1.0, (progress - warmup) / max(1e-8, 1.0 - warmup))
    return base_lr * (final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * t)))


class ModelEma:
    """Exponential moving average of parameters and buffers (BatchNorm statistics copied).

    The decay warms up as min(decay, (1 + n) / (10 + n)) over the first updates n, so the average
    does not keep a large share of the random initial weights for thousands of steps (without the
    warm-up, after 1500 steps at 0.999 the initial weights still weigh 0.999**1500 = 22 %)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        self.updates = 0
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for e, m in zip(self.module.parameters(), model.parameters()):
            e.mul_(decay).add_(m.detach(), alpha=1.0 - decay)
        for e, m in zip(self.module.buffers(), model.buffers()):
            e.copy_(m)


def collate(samples, *, tokenizer: Tokenizer, image_size: int, mask_size: int) -> Dict[str, torch.Tensor]:
    """RefShapes samples (image H x W x 3 uint8, mask H x W 0/1, expression) -> a training batch."""
    from PIL import Image

    images, targets, tokens = [], [], []
    for s in samples:
        x, box = letterbox_image(Image.fromarray(s["image"]), image_size)
        images.append(x)
        targets.append(letterbox_mask(s["mask"], box, mask_size))
        tokens.append(tokenizer.encode(s["expression"]))
    return {
        "image": torch.from_numpy(np.stack(images)),
        "target": torch.from_numpy(np.stack(targets))[:, None],
        "tokens": torch.tensor(tokens, dtype=torch.int64),
    }


def train_one_step(
    model: VLT,
    batch: Dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    weight_decay: float,
    bf16: bool,
    channels_last: bool,
) -> Dict[str, float]:
    model.train()
    image = batch["image"]
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits, confidence, _ = model(image, batch["tokens"])
    loss_bce = referring_loss(logits, batch["target"])
    loss = loss_bce + weight_decay * conv_weight_decay(model) if weight_decay else loss_bce
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"non-finite loss: {{'bce': {loss_bce.item()}, 'total': {loss.item()}}}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        pred = logits.float() > 0
        tgt = batch["target"] > 0.5
        inter = (pred & tgt).flatten(1).sum(1).float()
        union = (pred | tgt).flatten(1).sum(1).float().clamp(min=1)
    return {"loss": loss_bce.item(), "pixel_bce": loss_bce.item() / logits[0].numel(),
            "train_miou": (inter / union).mean().item()}


def save_checkpoint(path: Path, **state: Any) -> None:
    """Write atomically, so a kill during the write never leaves a broken checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, *, ema: bool = True) -> Tuple[VLT, Dict[str, Any]]:
    """Rebuild the model from the config saved in the checkpoint (never from flags)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    cfg = VLTConfig.from_dict(ckpt["config"])
    model = build_vlt(cfg)
    key = "model_ema" if ema and ckpt.get("model_ema") is not None else "model"
    model.load_state_dict(ckpt[key])
    model.eval()
    return model, ckpt
