"""A model folder's graphs in ONNX Runtime, behind one ``run(names, feeds)``.

A folder lists ``onnx`` (model.onnx, the whole network), ``split`` (image_encoder.onnx + head.onnx,
the same network cut at the backbone), or both (docs/vlt.md §3). ``ModelSession`` runs what the
service runs: the split pair when listed (the encoder, then the head on its features), else
model.onnx. Every Python reader of a model folder (evaluation, calibration, the tools, the Python
baseline) goes through it, so a folder that ships only the split graphs works everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from export.vlt.onnx_model import FEATURE_NAMES, OUTPUT_NAMES


def read_manifest(folder: Path) -> Dict:
    return json.loads((Path(folder) / "model.json").read_text())


def graph_entries(manifest: Dict) -> Dict[str, Dict]:
    """The graphs model.json lists, by role: ``model`` (model.onnx), ``image_encoder``, ``head``."""
    out = {"model": manifest["onnx"]} if "onnx" in manifest else {}
    out.update(manifest.get("split", {}))
    if not out:
        raise ValueError("model.json lists neither onnx (model.onnx) nor split (image_encoder.onnx + head.onnx)")
    return out


def open_session(path: Path, *, threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class SplitPair:
    """image_encoder then head, as one network: ``run(names, {"image", "tokens"})``."""

    def __init__(self, encoder, head, feature_names: Sequence[str] = FEATURE_NAMES) -> None:
        self.encoder, self.head, self.feature_names = encoder, head, list(feature_names)

    def run(self, names: Optional[List[str]], feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        features = self.encoder.run(self.feature_names, {"image": feeds["image"]})
        return self.head.run(names or OUTPUT_NAMES, {**dict(zip(self.feature_names, features)), "tokens": feeds["tokens"]})


class ModelSession:
    """The network of a model folder. ``layout``: ``"split"`` or ``"model"`` to insist on one
    (an error when the folder lacks it), ``None`` for what the service loads."""

    def __init__(self, folder: Path, manifest: Optional[Dict] = None, *, threads: int = 0,
                 layout: Optional[str] = None) -> None:
        folder = Path(folder)
        self.manifest = manifest if manifest is not None else read_manifest(folder)
        entries = graph_entries(self.manifest)
        self.layout = layout or ("split" if "head" in entries else "model")
        if self.layout == "split":
            if "head" not in entries or "image_encoder" not in entries:
                raise ValueError(f"{folder}/model.json lists no split graphs")
            enc = entries["image_encoder"]
            self._run = SplitPair(open_session(folder / enc["file"], threads=threads),
                                  open_session(folder / entries["head"]["file"], threads=threads),
                                  enc.get("outputs", FEATURE_NAMES)).run
        else:
            if "model" not in entries:
                raise ValueError(f"{folder}/model.json lists no model.onnx (onnx)")
            self._run = open_session(folder / entries["model"]["file"], threads=threads).run

    def run(self, names: Optional[List[str]], feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        return self._run(names or OUTPUT_NAMES, feeds)
