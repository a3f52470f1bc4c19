"""INT8 variant of a model folder: static quantization of its ONNX graphs, calibrated on RefShapes.

    python -m export.quantize --model models/vlt-refshapes --out models/vlt-refshapes-int8
    python -m export.quantize --model models/vlt-refshapes --out /tmp/q --graphs image_encoder   # backbone only

Each graph the folder holds (``model.onnx`` and the split ``image_encoder.onnx`` + ``head.onnx``) is
quantized with ONNX Runtime's static quantizer: weights per channel as int8, activations as uint8
with ranges calibrated on scenes of this project's generator (a seed no set uses), in the QDQ or
the operator-oriented (QOperator) format. ``--graphs`` keeps some graphs in float (for example the
head, when it does not quantize well). The new folder has its own model.json (name, version,
``quantization`` record, new sha256s) and its own golden case, made with the quantized graphs, so
the service's start-up check holds it to its own outputs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np

from export.export_onnx import golden_scene, sha256, write_golden
from export.preprocess import letterbox_image
from export.vlt.onnx_model import FEATURE_NAMES
from export.vlt.tokenizer import Tokenizer

CALIBRATION_SEED = 4242  # not a seed of any set the project scores (val, 2, 3, 777, 11)


def calibration_batches(size: int, tokenizer: Tokenizer, n: int, seed: int = CALIBRATION_SEED) -> List[Dict[str, np.ndarray]]:
    """``n`` (image, tokens) pairs from the RefShapes stream, one sample per feed."""
    from PIL import Image

    from export.data.refshapes import RefShapesStream

    feeds = []
    for sample in RefShapesStream(seed=seed):
        x, _ = letterbox_image(Image.fromarray(sample["image"]), size)
        feeds.append({"image": x[None], "tokens": np.asarray([tokenizer.encode(sample["expression"])], dtype=np.int64)})
        if len(feeds) == n:
            return feeds
    raise AssertionError("the stream is endless")


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of input dicts."""

    def __init__(self, feeds: List[Dict[str, np.ndarray]]) -> None:
        self._it: Iterator[Dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return next(self._it, None)


def graph_feeds(graph: str, feeds: List[Dict[str, np.ndarray]], encoder_path: Path) -> List[Dict[str, np.ndarray]]:
    """The calibration inputs of one graph: the head reads the float backbone's features."""
    if graph == "model":
        return feeds
    if graph == "image_encoder":
        return [{"image": f["image"]} for f in feeds]
    import onnxruntime as ort

    enc = ort.InferenceSession(str(encoder_path), providers=["CPUExecutionProvider"])
    return [{**dict(zip(FEATURE_NAMES, enc.run(FEATURE_NAMES, {"image": f["image"]}))), "tokens": f["tokens"]} for f in feeds]


def quantize_graph(src: Path, dst: Path, feeds: List[Dict[str, np.ndarray]], *, fmt: str) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(dst), _Reader(feeds),
            quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # Gather reads the word table: an int8 table would blur the words the model tells apart
            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )


def quantize_folder(model: Path, out: Path, *, graphs: List[str], fmt: str = "qdq", samples: int = 128,
                    version_suffix: str = "int8") -> Dict:
    import onnxruntime as ort

    manifest = json.loads((model / "model.json").read_text())
    tokenizer = Tokenizer.from_file(model / manifest["vocab"]["file"], manifest["max_words"])
    feeds = calibration_batches(manifest["input"]["size"], tokenizer, samples)
    out.mkdir(parents=True, exist_ok=True)
    entries = {"model": manifest.get("onnx")}
    entries.update(manifest.get("split", {}))
    encoder_path = model / manifest["split"]["image_encoder"]["file"] if "split" in manifest else None
    for graph, entry in entries.items():
        if entry is None or not (model / entry["file"]).exists():
            continue
        src, dst = model / entry["file"], out / entry["file"]
        if graph in graphs:
            quantize_graph(src, dst, graph_feeds(graph, feeds, encoder_path), fmt=fmt)
        else:
            shutil.copyfile(src, dst)
        entry["sha256"] = sha256(dst)
    for f in (manifest["vocab"]["file"],):
        shutil.copyfile(model / f, out / f)
    manifest["version"] = f"{manifest['version']}-{version_suffix}"
    manifest["quantization"] = {"format": fmt, "weights": "int8 per channel", "activations": "uint8 (MinMax)",
                                "ops": ["Conv", "MatMul", "Gemm"], "graphs": sorted(graphs),
                                "calibration": f"{samples} RefShapes stream samples, seed {CALIBRATION_SEED}",
                                "from": {"name": manifest["name"], "version": manifest["version"].rsplit("-", 1)[0]}}
    manifest["metrics"] = {}
    (out / "model.json").write_text(json.dumps(manifest, indent=1) + "\n")
    # the golden case of the quantized graphs the service runs: the split pair when the folder has one
    img, expression = golden_scene()
    write_golden(out, session=SplitSession(out, manifest) if "split" in manifest else
                 ort.InferenceSession(str(out / manifest["onnx"]["file"]), providers=["CPUExecutionProvider"]),
                 tokenizer=tokenizer, image_size=manifest["input"]["size"], expression=expression, image=img)
    return manifest


class SplitSession:
    """image_encoder.onnx then head.onnx, behind an InferenceSession's ``run(names, feeds)``."""

    def __init__(self, folder: Path, manifest: Dict) -> None:
        import onnxruntime as ort

        split = manifest["split"]
        self.encoder = ort.InferenceSession(str(folder / split["image_encoder"]["file"]), providers=["CPUExecutionProvider"])
        self.head = ort.InferenceSession(str(folder / split["head"]["file"]), providers=["CPUExecutionProvider"])

    def run(self, names: List[str], feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        features = self.encoder.run(FEATURE_NAMES, {"image": feeds["image"]})
        return self.head.run(names, {**dict(zip(FEATURE_NAMES, features)), "tokens": feeds["tokens"]})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="float model folder")
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--graphs", nargs="+", default=["model", "image_encoder", "head"],
                   choices=["model", "image_encoder", "head"], help="graphs to quantize (the rest are copied)")
    p.add_argument("--format", default="qdq", choices=["qdq", "qoperator"])
    p.add_argument("--samples", type=int, default=128, help="calibration samples")
    args = p.parse_args()
    manifest = quantize_folder(args.model, args.out, graphs=args.graphs, fmt=args.format, samples=args.samples)
    print(f"wrote {args.out} ({manifest['version']})")


if __name__ == "__main__":
    main()
