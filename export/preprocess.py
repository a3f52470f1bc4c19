"""Pre- and post-processing of the deployable contract (docs/vlt.md §1 'image in' and 'eval').

The TypeScript service mirrors these functions line for line (src/image/preprocess.ts and
src/image/postprocess.ts); the golden case in every model folder ties the two together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

PAD_VALUE = 0.5  # letterbox canvas fill, in [0, 1] units (model.json input.pad_value)
THRESHOLD = 0.35  # mask threshold of the VLT evaluation protocol (model.json output.threshold)


@dataclass(frozen=True)
class Letterbox:
    """Where the image sits on the S x S canvas: scale, resized size (nw, nh) and offset (dx, dy)."""

    size: int
    width: int
    height: int
    scale: float
    nw: int
    nh: int
    dx: int
    dy: int

    @classmethod
    def fit(cls, width: int, height: int, size: int) -> "Letterbox":
        scale = min(size / width, size / height)
        nw, nh = max(1, int(width * scale)), max(1, int(height * scale))
        return cls(size, width, height, scale, nw, nh, (size - nw) // 2, (size - nh) // 2)


def load_rgb(path_or_image) -> Image.Image:
    """Decode, apply the EXIF orientation, drop alpha the way Pillow's convert('RGB') does."""
    img = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


def letterbox_image(img: Image.Image, size: int) -> Tuple[np.ndarray, Letterbox]:
    """RGB image -> float32 3 x S x S in [0, 1] on a 0.5 canvas, and its geometry."""
    box = Letterbox.fit(img.width, img.height, size)
    if (box.nw, box.nh) != (img.width, img.height):
        img = img.resize((box.nw, box.nh), Image.BICUBIC)
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.float32)
    canvas[box.dy : box.dy + box.nh, box.dx : box.dx + box.nw] = np.asarray(img, dtype=np.float32) / 255.0
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)), box  # H x W x 3 -> 3 x H x W


def letterbox_mask(mask: np.ndarray, box: Letterbox, out_size: int) -> np.ndarray:
    """Training target: a 0/1 mask at image size -> letterboxed and resized to the logit size
    (box-filtered, so the target keeps sub-pixel coverage as soft values in [0, 1])."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    m = F.interpolate(m, size=(box.nh, box.nw), mode="bilinear", align_corners=False) if (box.nw, box.nh) != (
        box.width,
        box.height,
    ) else m
    canvas = torch.zeros(1, 1, box.size, box.size)
    canvas[..., box.dy : box.dy + box.nh, box.dx : box.dx + box.nw] = m
    return F.adaptive_avg_pool2d(canvas, out_size)[0, 0].numpy()


def mask_probabilities(logits: np.ndarray, box: Letterbox) -> np.ndarray:
    """Mask logits m x m -> probabilities at the image's own size (H x W), VLT protocol:
    sigmoid -> bilinear to S x S -> crop the letterbox -> bilinear to the image size."""
    p = torch.sigmoid(torch.as_tensor(logits, dtype=torch.float32).reshape(1, 1, *logits.shape[-2:]))
    p = F.interpolate(p, size=(box.size, box.size), mode="bilinear", align_corners=False)
    p = p[..., box.dy : box.dy + box.nh, box.dx : box.dx + box.nw]
    p = F.interpolate(p, size=(box.height, box.width), mode="bilinear", align_corners=False)
    return p[0, 0].numpy()


def binary_mask(logits: np.ndarray, box: Letterbox, threshold: float = THRESHOLD) -> np.ndarray:
    """Mask logits -> bool H x W mask at the image's size (probability > threshold)."""
    return mask_probabilities(logits, box) > threshold
