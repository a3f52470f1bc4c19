"""Training and evaluation loops, the loss, the learning-rate schedule and checkpoints."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

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


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss, 1 - 2|P.G| / (|P| + |G|) per sample, averaged over the batch.

    Not in the paper. BCE summed over pixels is dominated by the background (a RefShapes target
    covers 1-4 % of the mask), so on a short training budget the model under-segments; the Dice
    term weighs each expression's mask as a whole, which is what mIoU scores.
    """
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    return (1.0 - (2.0 * inter + 1.0) / (p.sum(1) + t.sum(1) + 1.0)).mean()


def conv_weight_decay(model: nn.Module) -> torch.Tensor:
    """Sum of squared conv kernels (the original's L2 regulariser on conv kernels)."""
    total = torch.zeros(())
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            total = total + m.weight.float().pow(2).sum()
    return total


def lr_at(progress: float, *, base_lr: float, warmup: float, final_ratio: float, decay: float = 1.0) -> float:
    """Learning rate at training progress in [0, 1]:
    1) linear warm-up over the first ``warmup`` fraction;
    2) base_lr held until the last ``decay`` fraction (warmup-stable-decay; decay 1: none held);
    3) cosine decay from base_lr to base_lr * final_ratio over that last fraction.

    With ``decay`` < 1 a run that is resumed many times can have its length (``--steps``) raised
    while it is still in the stable phase, without a jump in the learning rate."""
    if progress < warmup:
        return base_lr * max(progress / warmup, 0.01)
    start = max(warmup, 1.0 - decay)
    if progress < start:
        return base_lr
    t = min(1.0, (progress - start) / max(1e-8, 1.0 - start))
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


def collate(
    samples, *, tokenizer: Tokenizer, image_size: int, mask_size: int, share_images: bool = False
) -> Dict[str, torch.Tensor]:
    """RefShapes samples (image H x W x 3 uint8, mask H x W 0/1, expression) -> a training batch.

    With ``share_images`` the expressions of one scene (consecutive samples holding the same image
    array) share one row of ``image``, and ``image_index`` (B,) maps every expression to its row, so
    that a training step runs the backbone once per image (``train_one_step``).
    """
    from PIL import Image

    images, targets, tokens, index = [], [], [], []
    rows: Dict[int, Tuple[int, Any]] = {}  # id(image array) -> (row, letterbox box)
    for s in samples:
        key = id(s["image"]) if share_images else len(index)
        if key not in rows:
            x, box = letterbox_image(Image.fromarray(s["image"]), image_size)
            rows[key] = (len(images), box)
            images.append(x)
        row, box = rows[key]
        index.append(row)
        targets.append(letterbox_mask(s["mask"], box, mask_size))
        tokens.append(tokenizer.encode(s["expression"]))
    batch = {
        "image": torch.from_numpy(np.stack(images)),
        "target": torch.from_numpy(np.stack(targets))[:, None],
        "tokens": torch.tensor(tokens, dtype=torch.int64),
    }
    if share_images:
        batch["image_index"] = torch.tensor(index, dtype=torch.int64)
    return batch


def forward_batch(model: VLT, image: torch.Tensor, batch: Dict[str, torch.Tensor]):
    """The model's outputs for a collated batch; with ``image_index`` the backbone runs once per
    distinct image and its features are gathered per expression."""
    if "image_index" not in batch:
        return model(image, batch["tokens"])
    fv0, fv1, fv2 = (f.index_select(0, batch["image_index"]) for f in model.encode_image(image))
    return model.decode(fv0, fv1, fv2, batch["tokens"])


def train_one_step(
    model: VLT,
    batch: Dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    weight_decay: float,
    bf16: bool,
    channels_last: bool,
    dice_weight: float = 0.0,
    aux: Optional[nn.Module] = None,
    aux_weight: float = 0.0,
) -> Dict[str, float]:
    """One optimiser step. With ``batch["image_index"]`` (``collate(share_images=True)``) the
    backbone runs once per distinct image and its features are gathered per expression. The
    outputs equal those of running every expression's own copy of the image, except that the
    backbone's BatchNorm batch statistics count each image once instead of once per expression.

    Loss: the paper's summed BCE, plus ``dice_weight`` x (mask pixels) x mean Dice loss, so that a
    weight of 1 is "mean BCE + Dice" up to the overall scale the paper's BCE sets for weight decay.
    ``aux`` (a training aid such as ``training_aids.EncoderMaskHead``, trained by the same
    optimiser) adds ``aux_weight`` x (mask pixels) x its own loss on the same scale.
    """
    model.train()
    image = batch["image"]
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits, confidence, _ = forward_batch(model, image, batch)
    loss_bce = referring_loss(logits, batch["target"])
    loss = loss_bce
    loss_dice = dice_loss(logits, batch["target"]) if dice_weight else None
    if loss_dice is not None:
        loss = loss + dice_weight * logits[0].numel() * loss_dice
    loss_aux = aux.loss(batch["target"]) if aux is not None else None
    if loss_aux is not None:
        loss = loss + aux_weight * logits[0].numel() * loss_aux
    if weight_decay:
        loss = loss + weight_decay * conv_weight_decay(model)
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
    stats = {"loss": loss_bce.item(), "pixel_bce": loss_bce.item() / logits[0].numel(),
             "train_miou": (inter / union).mean().item()}
    if loss_dice is not None:
        stats["dice"] = loss_dice.item()
    if loss_aux is not None:
        stats["aux"] = loss_aux.item()
    return stats


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
