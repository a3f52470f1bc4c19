"""INT8 variant of a model folder: static quantization of its ONNX graphs, calibrated on RefShapes.

    python -m export.quantize --model models/vlt-refshapes --out models/vlt-refshapes-int8 \
        --data ../shared/refshapes/val
    python -m export.quantize --model models/vlt-refshapes --out /tmp/q --graphs image_encoder   # backbone only

The new folder ships the split ``image_encoder.onnx`` + ``head.onnx`` the service loads (``--graph-set
split``, the default, as in export/export_onnx.py); ``--graph-set all`` also ships ``model.onnx`` when the
float folder has one. Each graph it ships is quantized with ONNX Runtime's static quantizer: weights per channel as int8,
activations as uint8 with ranges calibrated on scenes of this project's generator (a seed no set
uses), in the QDQ or the operator-oriented (QOperator) format. ``--graphs`` keeps some graphs in
float (for example the head, when it does not quantize well). The new folder has its own
model.json (name ``<name>-int8``, ``quantization`` record, new sha256s) and its own golden case, made
with the quantized graphs, so the service's start-up check holds it to its own outputs. With
``--data`` both models are scored on that set (export/evaluate.py) and model.json records the
INT8 metrics under ``metrics.<name>`` and the paired difference from the float model
(export/tools/compare_models.py) under ``quantization.accuracy``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np

from export.export_onnx import GRAPH_SETS, golden_scene, sha256, write_golden
from export.model_session import ModelSession, graph_entries, open_session
from export.preprocess import letterbox_image
from export.vlt.onnx_model import FEATURE_NAMES
from export.vlt.tokenizer import Tokenizer

CALIBRATION_SEED = 4242  # not a seed of any set the project scores (val, 2, 3, 777, 11)
GRAPHS = ("model", "image_encoder", "head")
# the accuracy bar of an INT8 variant: val mIoU within this many points of the float model's
ACCURACY_BAR = 1.0


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
    enc = open_session(encoder_path)
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


def quantize_folder(model: Path, out: Path, *, graphs: Optional[List[str]] = None, fmt: str = "qdq",
                    samples: int = 128, name_suffix: str = "int8", graph_set: str = "split") -> Dict:
    """Write the INT8 folder; ``graph_set``: ``split`` ships the split pair only, ``all`` every graph
    the float folder lists; ``graphs``: the roles to quantize (default: every graph shipped; the rest
    are copied). The variant is its own model, ``<name>-int8`` at the float model's version: a model
    repository (docs/models.md) serves a folder under its model's name."""
    assert graph_set in GRAPH_SETS, f"graph_set must be one of {GRAPH_SETS}, not {graph_set!r}"
    manifest = json.loads((model / "model.json").read_text())
    if graph_set == "split":
        if "head" not in graph_entries(manifest) or "image_encoder" not in graph_entries(manifest):
            raise ValueError(f"{model}/model.json lists no split graphs (image_encoder + head); use graph_set 'all'")
        manifest.pop("onnx", None)  # model.onnx: the service never loads it when the split pair is there
    entries = graph_entries(manifest)
    graphs = sorted(entries) if graphs is None else sorted(graphs)
    missing = [g for g in graphs if g not in entries]
    if missing:
        raise ValueError(f"{model}/model.json lists no {', '.join(missing)} graph to quantize")
    tokenizer = Tokenizer.from_file(model / manifest["vocab"]["file"], manifest["max_words"])
    feeds = calibration_batches(manifest["input"]["size"], tokenizer, samples)
    out.mkdir(parents=True, exist_ok=True)
    if graph_set == "split" and (out / "model.onnx").exists():
        (out / "model.onnx").unlink()  # a previous run's: model.json no longer lists it
    encoder_path = model / entries["image_encoder"]["file"] if "image_encoder" in entries else None
    for graph, entry in entries.items():
        src, dst = model / entry["file"], out / entry["file"]
        if graph in graphs:
            quantize_graph(src, dst, graph_feeds(graph, feeds, encoder_path), fmt=fmt)
        else:
            shutil.copyfile(src, dst)
        entry["sha256"] = sha256(dst)
    shutil.copyfile(model / manifest["vocab"]["file"], out / manifest["vocab"]["file"])
    source = {"name": manifest["name"], "version": manifest["version"]}
    manifest["name"] = f"{manifest['name']}-{name_suffix}"
    manifest["quantization"] = {"format": fmt, "weights": "int8 per channel", "activations": "uint8 (MinMax)",
                                "ops": ["Conv", "MatMul", "Gemm"], "graphs": graphs,
                                "calibration": f"{samples} RefShapes stream samples, seed {CALIBRATION_SEED}",
                                "from": source}
    manifest["metrics"] = {}
    (out / "model.json").write_text(json.dumps(manifest, indent=1) + "\n")
    # the golden case of the quantized graphs the service runs
    img, expression = golden_scene()
    write_golden(out, session=ModelSession(out, manifest), tokenizer=tokenizer, image_size=manifest["input"]["size"],
                 expression=expression, image=img, threshold=manifest["output"]["threshold"])
    return manifest


def score_against_float(model: Path, out: Path, data: Path, name: str) -> Dict:
    """Score the float and the INT8 folder on ``data`` (the graphs the service runs); record the
    INT8 metrics and the paired difference in out/model.json. Returns the accuracy record."""
    from export.evaluate import evaluate_set, load_predictor
    from export.tools.compare_models import paired

    metrics, rows = {}, {}
    for which, folder in (("float", model), ("int8", out)):
        predict, tokenizer, size, threshold = load_predictor(model=folder)
        per: List[dict] = []
        metrics[which] = evaluate_set(predict, data=data, tokenizer=tokenizer, image_size=size, threshold=threshold,
                                      per_expression=per)
        rows[which] = {r["id"]: r for r in per}
    diff = paired(rows["float"], rows["int8"])["overall"]
    accuracy = {"set": name, "n": diff["n"], "mIoU float": diff["mIoU A"], "mIoU int8": diff["mIoU B"],
                "delta": diff["delta"], "SE": diff["SE"], "bar": f"within {ACCURACY_BAR} mIoU of float",
                "meets_bar": bool(abs(diff["delta"]) <= ACCURACY_BAR)}
    path = out / "model.json"
    manifest = json.loads(path.read_text())
    manifest["metrics"][name] = metrics["int8"]
    manifest["quantization"]["accuracy"] = accuracy
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="float model folder")
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--graphs", nargs="+", default=None, choices=GRAPHS,
                   help="graphs to quantize (default: every graph the new folder ships; the rest are copied)")
    p.add_argument("--graph-set", default="split", choices=GRAPH_SETS,
                   help="graphs the new folder ships: the split pair (default) or also model.onnx (all)")
    p.add_argument("--format", default="qdq", choices=["qdq", "qoperator"])
    p.add_argument("--samples", type=int, default=128, help="calibration samples")
    p.add_argument("--data", type=Path, default=None, help="score both models on this set and record the result")
    p.add_argument("--data-name", default=None, help="the metrics key of --data in model.json (default: its folder name)")
    args = p.parse_args()
    manifest = quantize_folder(args.model, args.out, graphs=args.graphs, fmt=args.format, samples=args.samples,
                               graph_set=args.graph_set)
    print(f"wrote {args.out} ({manifest['name']}@{manifest['version']})")
    if args.data is not None:
        acc = score_against_float(args.model, args.out, args.data, args.data_name or args.data.name)
        print(f"{acc['set']}: mIoU float {acc['mIoU float']:.2f}, int8 {acc['mIoU int8']:.2f}, "
              f"paired delta {acc['delta']:+.2f} +- {acc['SE']:.2f} (n {acc['n']}); "
              f"{'meets' if acc['meets_bar'] else 'MISSES'} the bar ({acc['bar']})")


if __name__ == "__main__":
    main()
