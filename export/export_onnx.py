"""Export a trained VLT checkpoint to a model folder the service reads (docs/vlt.md §3).

    python -m export.export_onnx --checkpoint runs/tiny/checkpoint.pt --out models/vlt-refshapes
    python -m export.export_onnx --checkpoint runs/tiny/checkpoint.pt --out /tmp/m --graphs all

Writes image_encoder.onnx + head.onnx (the network split at the backbone: what the service loads),
model.json (the manifest), vocab.txt and golden.json with its image and tensors; with
``--graphs all`` also model.onnx (the whole network in one graph, for tools that want one file).
The model is rebuilt from the config saved in the checkpoint, never from flags. After writing,
every graph is run in onnxruntime and compared with PyTorch on two batch sizes (the split pair
composed: encoder, then head); the export fails loudly when max |delta| of the logits exceeds 1e-4.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from export.engine import load_checkpoint
from export.preprocess import PAD_VALUE, THRESHOLD, binary_mask, letterbox_image, load_rgb
from export.vlt import VLT, VLTConfig
from export.model_session import ModelSession
from export.vlt.onnx_model import FEATURE_NAMES, INPUT_NAMES, OUTPUT_NAMES, VLTHeadOnnx, VLTImageEncoderOnnx, VLTOnnxModel
from export.vlt.tokenizer import Tokenizer

OPSET = 17
# ONNX Runtime and PyTorch sum in different orders, so float32 results differ by a few ulps of
# their magnitude: a check scaled like np.allclose (|onnx - torch| <= atol + rtol * |torch|) holds
# for logits of any size; rtol 1e-5 is about 80 float32 ulps.
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-5
FORMAT = "vlt-model/1"
# which graphs an export writes: the split pair the service loads, or that and model.onnx
GRAPH_SETS = ("split", "all")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export(module: torch.nn.Module, args: tuple, path: Path, input_names: List[str], output_names: List[str]) -> None:
    dynamic_axes = {n: {0: "batch"} for n in input_names + output_names}
    torch.onnx.export(
        module, args, str(path), input_names=input_names, output_names=output_names,
        dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True, dynamo=False,
    )


def check_parity(model: VLT, out: Path, *, batch_sizes: Sequence[int] = (1, 3), seed: int = 0) -> Dict[str, float]:
    """Run every graph model.json lists in onnxruntime against PyTorch; raise if they disagree.
    Report keys: ``{output}@b{B}`` for model.onnx, ``split_{output}@b{B}`` for the split pair."""
    cfg_s, vocab = model.mask_decoder.feature_size * 16, model.language_encoder.embedding.table.shape[0]
    manifest = json.loads((out / "model.json").read_text())
    length = manifest["max_words"]
    g = torch.Generator().manual_seed(seed)
    runs = {"split_": ModelSession(out, manifest, layout="split")}
    if "onnx" in manifest:
        runs[""] = ModelSession(out, manifest, layout="model")
    report: Dict[str, float] = {}
    failed: List[str] = []
    for b in batch_sizes:
        image = torch.rand(b, 3, cfg_s, cfg_s, generator=g)
        tokens = torch.randint(2, vocab, (b, length), generator=g)
        tokens[:, length // 2 :] = 0  # padded tail, as real sentences have
        with torch.no_grad():
            ref = [t.numpy() for t in model(image, tokens)]
        for prefix, sess in runs.items():
            got = sess.run(OUTPUT_NAMES, {"image": image.numpy(), "tokens": tokens.numpy()})
            for name, r, o in zip(OUTPUT_NAMES, ref, got):
                assert o.shape == r.shape, f"{prefix}{name}: onnx shape {o.shape} != torch {r.shape}"
                key = f"{prefix}{name}@b{b}"
                report[key] = float(np.abs(o - r).max())
                if not np.allclose(o, r, rtol=PARITY_RTOL, atol=PARITY_ATOL):
                    failed.append(key)
    if failed:
        raise AssertionError(f"ONNX parity failed (atol {PARITY_ATOL}, rtol {PARITY_RTOL}): "
                             f"{ {k: report[k] for k in failed} }")
    return report


def write_golden(out: Path, *, session, tokenizer: Tokenizer, image_size: int, expression: str,
                 image: Image.Image, threshold: float = THRESHOLD) -> Dict[str, Any]:
    """A cross-language parity case: an image, a sentence, the Python input tensor and the outputs
    (the mask at the model's threshold)."""
    image.save(out / "golden.png")
    x, box = letterbox_image(load_rgb(out / "golden.png"), image_size)
    tokens = np.asarray([tokenizer.encode(expression)], dtype=np.int64)
    logits, conf, attn = session.run(OUTPUT_NAMES, {"image": x[None], "tokens": tokens})
    x[None].astype("<f4").tofile(out / "golden_input.f32")
    logits.astype("<f4").tofile(out / "golden_mask_logits.f32")
    mask = binary_mask(logits[0, 0], box, threshold)
    Image.fromarray((mask * 255).astype(np.uint8), mode="L").save(out / "golden_mask.png")
    golden = {
        "image": "golden.png",
        "expression": expression,
        "tokens": tokens[0].tolist(),
        "input": {"file": "golden_input.f32", "shape": list(x[None].shape), "dtype": "float32"},
        "letterbox": {"scale": box.scale, "nw": box.nw, "nh": box.nh, "dx": box.dx, "dy": box.dy},
        "outputs": {
            "mask_logits": {"file": "golden_mask_logits.f32", "shape": list(logits.shape), "dtype": "float32"},
            "query_confidence": {"shape": list(conf.shape), "data": conf.round(7).tolist()},
            "word_attention": {"shape": list(attn.shape), "data": attn.round(7).tolist()},
        },
        "mask": {"file": "golden_mask.png", "width": box.width, "height": box.height, "threshold": threshold,
                 "area": int(mask.sum())},
        "tolerance": {"atol": 1e-3},
    }
    (out / "golden.json").write_text(json.dumps(golden) + "\n")
    return golden


def golden_scene(seed: int = 4) -> tuple:
    """A generated RefShapes scene on a wider canvas (320 x 256), so the golden case also
    exercises the letterbox padding; returns (PIL image, expression)."""
    from export.data.refshapes import write_set

    with tempfile.TemporaryDirectory() as tmp:
        write_set(tmp, seed=seed, num_expressions=3)
        row = json.loads((Path(tmp) / "annotations.jsonl").read_text().splitlines()[0])
        img = Image.open(Path(tmp) / row["image"]).convert("RGB")
        img.load()
    canvas = Image.new("RGB", (320, 256), (128, 128, 128))
    canvas.paste(img, (32, 0))
    return canvas, row["expression"]


def run_export(*, checkpoint: Path, out: Path, name: str, version: str, ema: bool = True,
               metrics: Optional[Dict[str, Any]] = None, training: Optional[Dict[str, Any]] = None,
               graphs: str = "split", threshold: float = THRESHOLD) -> Dict[str, Any]:
    assert graphs in GRAPH_SETS, f"graphs must be one of {GRAPH_SETS}, not {graphs!r}"
    model, ckpt = load_checkpoint(checkpoint, ema=ema)
    model = model.float().eval().to(memory_format=torch.contiguous_format)
    cfg = ckpt["config"]
    s, length = cfg["image_size"], cfg["max_words"]
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(ckpt["vocab"], length)
    tokenizer.save(out / "vocab.txt")

    image = torch.rand(2, 3, s, s)
    tokens = torch.randint(2, len(tokenizer), (2, length))
    with torch.no_grad():
        feats = model.encode_image(image)
    if graphs == "all":
        _export(VLTOnnxModel(model).eval(), (image, tokens), out / "model.onnx", INPUT_NAMES, OUTPUT_NAMES)
    elif (out / "model.onnx").exists():
        (out / "model.onnx").unlink()  # a previous export's: model.json no longer lists it
        print(f"removed {out / 'model.onnx'} (not written without --graphs all)")
    _export(VLTImageEncoderOnnx(model).eval(), (image,), out / "image_encoder.onnx", ["image"], FEATURE_NAMES)
    _export(VLTHeadOnnx(model).eval(), (*feats, tokens), out / "head.onnx", FEATURE_NAMES + ["tokens"], OUTPUT_NAMES)
    model.eval()  # the exporter restores each wrapper's training flag on the way out

    previous = json.loads((out / "model.json").read_text()) if (out / "model.json").exists() else {}
    manifest: Dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "preset": ckpt.get("args", {}).get("preset", "custom"),
        "config": cfg,
        "input": {"size": s, "channels": "RGB", "resize": "bicubic", "letterbox": "centre", "pad_value": PAD_VALUE,
                  "scale": 1.0 / 255.0, "mean": None, "std": None},
        "output": {"stride": VLTConfig.from_dict(cfg).output_stride, "mask_size": VLTConfig.from_dict(cfg).mask_size, "threshold": threshold},
        "max_words": length,
        "num_queries": cfg["num_queries"],
        "split": {
            "image_encoder": {"file": "image_encoder.onnx", "sha256": sha256(out / "image_encoder.onnx"),
                              "inputs": ["image"], "outputs": FEATURE_NAMES},
            "head": {"file": "head.onnx", "sha256": sha256(out / "head.onnx"),
                     "inputs": FEATURE_NAMES + ["tokens"], "outputs": OUTPUT_NAMES},
        },
        "vocab": {"file": "vocab.txt", "size": len(tokenizer), "pad_id": 0, "unk_id": 1,
                  "embedding": ckpt.get("vocab_info", {})},
        "tokenizer": {"normalization": "NFKC", "lowercase": True, "keep": ["L", "Nd", "'"], "split": "whitespace",
                      "max_words": length, "pad_id": 0, "unk_id": 1},
        "golden": "golden.json",
        "training": training if training is not None else previous.get("training", {"checkpoint_step": ckpt.get("step")}),
        "metrics": metrics if metrics is not None else previous.get("metrics", {}),
    }
    if graphs == "all":
        manifest["onnx"] = {"file": "model.onnx", "sha256": sha256(out / "model.onnx"), "opset": OPSET,
                            "inputs": INPUT_NAMES, "outputs": OUTPUT_NAMES}
    (out / "model.json").write_text(json.dumps(manifest, indent=1) + "\n")

    parity = check_parity(model, out)
    img, expression = golden_scene()
    write_golden(out, session=ModelSession(out, manifest), tokenizer=tokenizer, image_size=s,
                 expression=expression, image=img, threshold=threshold)
    worst = max(parity.values())
    files = [e["file"] for e in [manifest.get("onnx"), *manifest["split"].values()] if e is not None]
    print(f"wrote {out} ({', '.join(f'{f} {(out / f).stat().st_size / 1e6:.1f} MB' for f in files)}); "
          f"ONNX parity max |delta| {worst:.2e} (within atol {PARITY_ATOL} + rtol {PARITY_RTOL} x |torch|)")
    return manifest


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("VLT ONNX export", add_help=False)
    p.add_argument("--checkpoint", type=Path, required=True, help="training checkpoint (holds config and vocabulary)")
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--name", default="vlt-refshapes", help="model name in model.json")
    p.add_argument("--version", default="0.1.0", help="model version in model.json")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True, help="export the EMA weights")
    p.add_argument("--metrics", type=Path, default=None, help="JSON file of evaluation metrics to record")
    p.add_argument("--training", type=Path, default=None, help="JSON file describing the training run")
    p.add_argument("--graphs", choices=GRAPH_SETS, default="split",
                   help="split: image_encoder.onnx + head.onnx, what the service loads (default); all: model.onnx too")
    p.add_argument("--threshold", type=float, default=THRESHOLD,
                   help="mask threshold recorded in model.json and used for the golden mask (default: the VLT "
                        "protocol's 0.35; tools/calibrate_threshold chooses one)")
    return p


def main(args: argparse.Namespace) -> None:
    metrics = json.loads(args.metrics.read_text()) if args.metrics else None
    training = json.loads(args.training.read_text()) if args.training else None
    try:
        run_export(checkpoint=args.checkpoint, out=args.out, name=args.name, version=args.version, ema=args.ema,
                   metrics=metrics, training=training, graphs=args.graphs, threshold=args.threshold)
    except AssertionError as e:
        print(f"EXPORT FAILED: {e}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    main(parser.parse_args())
