"""Pretrained Darknet-53 from a darknet-format ``.weights`` file into ``export.vlt.backbone.Backbone``.

The VLT paper starts from a Darknet-53 pretrained on COCO (YOLOv3) and keeps it frozen, together
with the first four of the six YOLOv3 head convs (docs/vlt.md §1, 'Training in the original').

The darknet format (pjreddie/darknet, src/parser.c ``load_weights``):
  header: int32 major, minor, revision; then ``seen`` as int64 if major * 10 + minor >= 2, else int32;
  then, for each convolutional layer of the cfg in order, float32:
    with batch norm:    bn bias (beta), bn scale (gamma), running mean, running variance
                        (out_channels each), then the conv weights (out, in, k, k);
    without batch norm: conv bias (out_channels), then the conv weights.

Which convs are loaded (all of them conv + batch norm, in ``Backbone`` module order):
  * the 52 convs of Darknet-53 = yolov3.cfg's first 52 convolutional layers (stem, then per stage
    the stride-2 conv and each residual block's 1x1 and 3x3 conv) -> ``stem``, ``stages``;
    always loaded (``darknet53.conv.74`` holds exactly these);
  * the next 6 convs of yolov3.cfg (1x1-512, 3x3-1024, three times: the first YOLOv3 head, before
    its 1x1-255 detection conv) -> ``head``; loaded when the file holds them (a full
    ``yolov3.weights``), or as ``head`` says. Everything after them in the file (the detection
    convs, the two other scales) is not part of VLT and is left unread.
A file that is too short for the convs asked for is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np
import torch
from torch import nn

from export.vlt.backbone import Backbone, ResidualBlock
from export.vlt.common import CBL


def backbone_convs(backbone: Backbone) -> Tuple[List[Tuple[str, CBL]], List[Tuple[str, CBL]]]:
    """The CBLs of a Backbone in darknet cfg order: (Darknet-53 body, the six head convs)."""
    body: List[Tuple[str, CBL]] = [("stem", backbone.stem)]
    for k, stage in enumerate(backbone.stages):
        for j, block in enumerate(stage):
            if isinstance(block, ResidualBlock):
                body += [(f"stages.{k}.{j}.conv1", block.conv1), (f"stages.{k}.{j}.conv2", block.conv2)]
            else:
                body.append((f"stages.{k}.{j}", block))
    head = [(f"head.{i}", m) for i, m in enumerate(backbone.head)]
    return body, head


def read_darknet(path: Union[str, Path]) -> Tuple[Dict[str, int], np.ndarray]:
    """Header fields and the float32 payload of a darknet ``.weights`` file."""
    raw = Path(path).read_bytes()
    if len(raw) < 16:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for a darknet weights header")
    major, minor, revision = (int(v) for v in np.frombuffer(raw, dtype="<i4", count=3))
    if major * 10 + minor >= 2 and major < 1000 and minor < 1000:
        seen, offset = int(np.frombuffer(raw, dtype="<i8", count=1, offset=12)[0]), 20
    else:
        seen, offset = int(np.frombuffer(raw, dtype="<i4", count=1, offset=12)[0]), 16
    if (len(raw) - offset) % 4:
        raise ValueError(f"{path}: payload of {len(raw) - offset} bytes is not a whole number of float32")
    header = {"major": major, "minor": minor, "revision": revision, "seen": seen, "header_bytes": offset}
    return header, np.frombuffer(raw, dtype="<f4", offset=offset)


def _conv_floats(cbl: CBL) -> int:
    conv, bn = cbl[0], cbl[1]
    return conv.weight.numel() + 4 * bn.num_features


def _load_cbl(cbl: CBL, data: np.ndarray, pos: int, name: str) -> int:
    conv, bn = cbl[0], cbl[1]
    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d), f"{name} is not conv + batch norm"
    n = conv.out_channels
    need = 4 * n + conv.weight.numel()
    if pos + need > data.size:
        raise ValueError(f"darknet file ends inside {name}: it needs {need} floats at offset {pos}, "
                         f"{data.size - pos} are left")
    with torch.no_grad():
        for t in (bn.bias, bn.weight, bn.running_mean, bn.running_var):
            t.copy_(torch.from_numpy(data[pos : pos + n].copy()))
            pos += n
        w = data[pos : pos + conv.weight.numel()].reshape(tuple(conv.weight.shape))  # out x in x k x k
        conv.weight.copy_(torch.from_numpy(w.copy()))
        pos += conv.weight.numel()
    return pos


def load_darknet_weights(backbone: Backbone, path: Union[str, Path], *, head: str = "auto") -> Dict[str, object]:
    """Load a darknet ``.weights`` file into ``backbone`` (see the module docstring for the layout).

    Arguments:
      backbone (Backbone): the paper preset's Darknet-53 (other widths load files of their size).
      path (str | Path): ``darknet53.conv.74``, ``yolov3.weights`` or any file of that layout.
      head (str): 'auto' (load the six head convs when the file holds enough floats for them),
        'yes' (required) or 'no'.
    Returns:
      dict: header, the module names loaded, and how many floats were used and left over.
    """
    if head not in ("auto", "yes", "no"):
        raise ValueError(f"head must be 'auto', 'yes' or 'no', got {head!r}")
    header, data = read_darknet(path)
    body, head_convs = backbone_convs(backbone)
    pos = 0
    loaded: List[str] = []
    for name, cbl in body:
        pos = _load_cbl(cbl, data, pos, name)
        loaded.append(name)
    want_head = head == "yes" or (head == "auto" and data.size - pos >= sum(_conv_floats(c) for _, c in head_convs))
    if want_head:
        for name, cbl in head_convs:
            pos = _load_cbl(cbl, data, pos, name)
            loaded.append(name)
    return {"header": header, "loaded": loaded, "body_convs": len(body), "head_convs": len(head_convs) if want_head else 0,
            "floats_used": pos, "floats_left": int(data.size - pos)}


def darknet_float_count(backbone: Backbone, *, with_head: bool = False) -> int:
    """Floats a darknet file needs for this backbone's body (and head) convs."""
    body, head_convs = backbone_convs(backbone)
    return sum(_conv_floats(c) for _, c in body + (head_convs if with_head else []))


def freeze_pretrained(backbone: Backbone, *, head_convs: int = 4) -> List[nn.Module]:
    """Freeze the Darknet-53 body and the first ``head_convs`` head convs, as the paper did.

    Their parameters stop requiring gradients; the returned modules must be kept in eval mode
    during training (``m.eval()`` after every ``model.train()``) so their BatchNorm statistics stay
    the pretrained ones.
    """
    frozen: List[nn.Module] = [backbone.stem, backbone.stages, *list(backbone.head)[:head_convs]]
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    return frozen
