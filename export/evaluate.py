"""Score a model on a set in the RefShapes on-disk format (docs/refshapes.md, 'Files of a set').

VLT evaluation protocol: letterbox -> model -> sigmoid -> bilinear to S x S -> crop the letterbox ->
bilinear to the image's own size -> > threshold (0.35, from model.json); then mIoU, oIoU and
Prec@0.5..0.9, overall and per expression type.

    python -m export.evaluate --model models/vlt-refshapes --data ../shared/refshapes/val
    python -m export.evaluate --checkpoint runs/tiny/checkpoint.pt --data ../shared/refshapes/val
    python -m export.evaluate --model models/vlt-refshapes --data ../shared/refshapes/val --breakdown
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from export.preprocess import THRESHOLD, Letterbox, binary_mask, letterbox_image, load_rgb
from export.vlt.tokenizer import Tokenizer

PREC_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
# images B x 3 x S x S float32, tokens B x L int64 -> mask logits B x 1 x m x m
Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


def read_set(root: Path, limit: Optional[int] = None) -> List[dict]:
    rows = [json.loads(line) for line in (root / "annotations.jsonl").read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def iou(pred: np.ndarray, gt: np.ndarray) -> Tuple[int, int]:
    """Intersection and union pixel counts of two bool masks."""
    return int(np.logical_and(pred, gt).sum()), int(np.logical_or(pred, gt).sum())


def iou_ratio(inter: int, union: int) -> float:
    """One expression's IoU; an empty prediction of an empty target counts as a perfect match."""
    return inter / union if union else 1.0


def summarise(records: Sequence[Tuple[str, int, int]]) -> Dict[str, Dict[str, float]]:
    """records: (type, intersection, union) per expression -> metrics overall and per type (in %)."""
    groups: Dict[str, List[Tuple[int, int]]] = defaultdict(list)
    for kind, i, u in records:
        groups["overall"].append((i, u))
        groups[kind].append((i, u))
    out: Dict[str, Dict[str, float]] = {}
    for name, rows in groups.items():
        inter = np.array([r[0] for r in rows], dtype=np.float64)
        union = np.array([r[1] for r in rows], dtype=np.float64)
        ious = np.array([iou_ratio(i, u) for i, u in rows])
        m = {"n": len(rows), "mIoU": 100 * float(ious.mean()), "oIoU": 100 * float(inter.sum() / max(union.sum(), 1))}
        for t in PREC_THRESHOLDS:
            m[f"Prec@{t}"] = 100 * float((ious >= t).mean())
        out[name] = m
    return out


def predict_set(
    predict: Predictor, *, data: Path, tokenizer: Tokenizer, image_size: int, batch_size: int = 16,
    limit: Optional[int] = None,
) -> Iterator[Tuple[dict, Letterbox, np.ndarray]]:
    """Run ``predict`` over every expression of the set at ``data``: (annotation row, its image's
    letterbox, mask logits 1 x m x m) per expression, in the set's order."""
    rows = read_set(data, limit)
    cache: Dict[str, Tuple[np.ndarray, Letterbox]] = {}
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        images, boxes = [], []
        for r in batch:
            if r["image"] not in cache:
                cache.clear() if len(cache) > 64 else None
                cache[r["image"]] = letterbox_image(load_rgb(data / r["image"]), image_size)
            x, box = cache[r["image"]]
            images.append(x)
            boxes.append(box)
        tokens = np.asarray(tokenizer.encode_batch([r["expression"] for r in batch]), dtype=np.int64)
        yield from zip(batch, boxes, predict(np.stack(images), tokens))


def evaluate_set(
    predict: Predictor,
    *,
    data: Path,
    tokenizer: Tokenizer,
    image_size: int,
    threshold: float = THRESHOLD,
    batch_size: int = 16,
    limit: Optional[int] = None,
    breakdown: bool = False,
    per_expression: Optional[List[dict]] = None,
) -> Dict[str, Dict[str, float]]:
    """Run ``predict`` over every expression of the set at ``data`` and score it (``predict_set``,
    then ``score_predictions``; their docstrings say what ``breakdown`` and ``per_expression`` add)."""
    predictions = predict_set(predict, data=data, tokenizer=tokenizer, image_size=image_size, batch_size=batch_size,
                              limit=limit)
    return score_predictions(predictions, data=data, threshold=threshold, breakdown=breakdown,
                             per_expression=per_expression)


def score_predictions(
    predictions: Iterable[Tuple[dict, Letterbox, np.ndarray]],
    *,
    data: Path,
    threshold: float = THRESHOLD,
    breakdown: bool = False,
    per_expression: Optional[List[dict]] = None,
) -> Dict[str, Dict[str, float]]:
    """Score ``predict_set``'s output at ``threshold`` against the set's ground-truth masks.

    With ``breakdown`` the metrics are also grouped by the target's size class and shape and by the
    scene's object count (``size=small``, ``shape=star``, ``objects=7``), from the annotation's
    ``objects``; these groups are extra keys beside the expression types. Every group then also has
    ``picked`` (% of expressions whose mask covers the target more than any other object) and
    ``mIoU|picked`` (the mIoU of those). A ``per_expression`` list receives one
    ``{"id", "type", "iou"}`` row per expression (for paired comparisons, ``tools/compare_models``)."""
    records: List[Tuple[str, int, int]] = []
    extra: List[Tuple[str, int, int]] = []
    picked: Dict[str, List[Optional[float]]] = defaultdict(list)  # group -> IoU of a right pick, None for a wrong one
    for r, box, lg in predictions:
        pred = binary_mask(lg[0], box, threshold)
        gt = np.asarray(Image.open(data / r["mask"]).convert("L")) > 127
        inter_union = iou(pred, gt)
        records.append((r.get("type", "all"), *inter_union))
        value = iou_ratio(*inter_union)
        if per_expression is not None:
            per_expression.append({"id": r.get("id", len(per_expression)), "type": r.get("type", "all"),
                                   "iou": value})
        if breakdown:
            groups = breakdown_groups(r)
            extra.extend((group, *inter_union) for group in groups)
            if groups and pred.shape[0] == pred.shape[1]:
                hit = picked_object(pred, r["objects"]) == r["target"]
                for g in ["overall", r.get("type", "all"), *groups]:
                    picked[g].append(value if hit else None)
    metrics = summarise(records)
    if extra:
        metrics.update({k: v for k, v in summarise(extra).items() if k != "overall"})
    for group, values in picked.items():
        hits = [v for v in values if v is not None]
        metrics[group]["picked"] = 100 * len(hits) / len(values)
        metrics[group]["mIoU|picked"] = 100 * float(np.mean(hits)) if hits else 0.0
    return metrics


def picked_object(pred: np.ndarray, objects: Sequence[dict]) -> Optional[int]:
    """The object a predicted mask covers most pixels of (None when it covers none): with the
    target's index it splits the errors into picking the wrong object and drawing a poor mask."""
    from export.data.refshapes import render_object_mask

    cover = [int(np.logical_and(pred, render_object_mask(o, pred.shape[0])).sum()) for o in objects]
    best = int(np.argmax(cover))
    return best if cover[best] > 0 else None


def breakdown_groups(row: dict) -> List[str]:
    """The groups of one annotation row for ``evaluate_set(breakdown=True)``."""
    objects = row.get("objects") or []
    if not objects or "target" not in row:
        return []
    target = objects[row["target"]]
    return [f"size={target['size']}", f"shape={target['shape']}", f"objects={len(objects)}"]


def onnx_predictor(model_dir: Path, threads: int = 0) -> Tuple[Predictor, dict]:
    """The graphs the service runs (the split pair when model.json lists it, else model.onnx)."""
    from export.model_session import ModelSession

    sess = ModelSession(model_dir, threads=threads)

    def predict(images: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        return sess.run(["mask_logits"], {"image": images.astype(np.float32), "tokens": tokens})[0]

    return predict, sess.manifest


def torch_predictor(model, device: str = "cpu") -> Predictor:
    import torch

    model.eval()

    def predict(images: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(torch.from_numpy(images).to(device), torch.from_numpy(tokens).to(device))[0]
        return out.float().cpu().numpy()

    return predict


def _natural(value: str) -> Tuple[int, object]:
    return (0, int(value)) if value.isdigit() else (1, value)


def format_table(metrics: Dict[str, Dict[str, float]]) -> str:
    cols = ["n", "mIoU", "oIoU"] + [f"Prec@{t}" for t in PREC_THRESHOLDS]
    cols += [c for c in ("picked", "mIoU|picked") if all(c in m for m in metrics.values())]
    groups = sorted((k for k in metrics if "=" in k), key=lambda k: (k.split("=")[0], _natural(k.split("=")[1])))
    order = ["overall"] + sorted(k for k in metrics if k != "overall" and "=" not in k) + groups
    lines = ["| split | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for k in order:
        m = metrics[k]
        lines.append(f"| {k} | {m['n']} | " + " | ".join(f"{m[c]:.2f}" for c in cols[1:]) + " |")
    return "\n".join(lines)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The options every evaluator shares: which model (folder or checkpoint) and how to run it."""
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--model", type=Path, help="a model folder (model.json, its graphs, vocab.txt), run in onnxruntime")
    g.add_argument("--checkpoint", type=Path, help="a training checkpoint, run in PyTorch")
    p.add_argument("--batch-size", type=int, default=16, help="expressions per forward pass")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: library default)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True, help="use the checkpoint's EMA weights")
    p.add_argument("--json", type=Path, default=None, help="also write the metrics here as JSON")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("VLT evaluation on a RefShapes-format set", add_help=False)
    add_model_args(p)
    p.add_argument("--data", type=Path, required=True, help="a set folder with annotations.jsonl, images/, masks/")
    p.add_argument("--limit", type=int, default=None, help="score only the first N expressions")
    p.add_argument("--threshold", type=float, default=None,
                   help="mask threshold (default: the model's, model.json output.threshold; 0.35 for a checkpoint)")
    p.add_argument("--breakdown", action="store_true",
                   help="also score by the target's size and shape and by the number of objects in the scene")
    p.add_argument("--per-expression", type=Path, default=None,
                   help="also write each expression's IoU here as JSON lines (id, type, iou)")
    return p


def load_predictor(
    *, model: Optional[Path] = None, checkpoint: Optional[Path] = None, ema: bool = True, threads: int = 0,
    device: str = "cpu",
) -> Tuple[Predictor, Tokenizer, int, float]:
    """A model folder (onnxruntime) or a training checkpoint (PyTorch) -> (predict, tokenizer,
    input size S, mask threshold)."""
    if model is not None:
        predict, manifest = onnx_predictor(model, threads)
        tokenizer = Tokenizer.from_file(model / manifest["vocab"]["file"], manifest["max_words"])
        return predict, tokenizer, manifest["input"]["size"], manifest["output"]["threshold"]
    import torch

    from export.engine import load_checkpoint

    assert checkpoint is not None, "give a model folder or a checkpoint"
    if threads:
        torch.set_num_threads(threads)
    net, ckpt = load_checkpoint(checkpoint, ema=ema)
    tokenizer = Tokenizer(ckpt["vocab"], int(ckpt["config"]["max_words"]))
    return torch_predictor(net.to(device), device=device), tokenizer, ckpt["config"]["image_size"], THRESHOLD


def main(args: argparse.Namespace) -> Dict[str, Dict[str, float]]:
    t0 = time.time()
    predict, tokenizer, size, threshold = load_predictor(
        model=args.model, checkpoint=args.checkpoint, ema=args.ema, threads=args.threads
    )
    rows: Optional[List[dict]] = [] if args.per_expression else None
    metrics = evaluate_set(
        predict, data=args.data, tokenizer=tokenizer, image_size=size,
        threshold=threshold if args.threshold is None else args.threshold,
        batch_size=args.batch_size, limit=args.limit, breakdown=args.breakdown, per_expression=rows,
    )
    print(format_table(metrics))
    print(f"({time.time() - t0:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=1) + "\n")
    if args.per_expression:
        args.per_expression.write_text("".join(json.dumps(r) + "\n" for r in rows or []))
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    main(parser.parse_args())
