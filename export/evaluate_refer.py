"""Score a model on RefCOCO / RefCOCO+ / G-Ref splits (REFER format, export/data/refer.py).

VLT evaluation protocol, as ``export.evaluate`` (docs/vlt.md §1 'eval'): letterbox -> model ->
sigmoid -> bilinear to S x S -> crop the letterbox -> bilinear to the image's own size ->
> threshold (0.35); every sentence of every object is one expression. Reports per split oIoU
(sum of intersections / sum of unions, the paper's headline number), mIoU and Prec@0.5..0.9.

    python -m export.evaluate_refer --checkpoint runs/refcoco/checkpoint.pt \\
        --refer-root data --dataset refcoco --splits val testA testB
    python -m export.evaluate_refer --model models/vlt-refcoco --refer-root data --dataset refcocog \\
        --split-by umd --splits val test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from export.data.refer import ReferDataset, default_split_by
from export.evaluate import Predictor, add_model_args, format_table, iou, load_predictor, summarise
from export.preprocess import THRESHOLD, Letterbox, binary_mask, letterbox_image
from export.vlt.tokenizer import Tokenizer


class _Letterboxed(torch.utils.data.Dataset):
    """Wraps a ReferDataset: letterboxes the image in the loader's workers."""

    def __init__(self, data: ReferDataset, tokenizer: Tokenizer, image_size: int, limit: Optional[int]) -> None:
        self.data, self.tokenizer, self.image_size = data, tokenizer, image_size
        self.n = min(len(data), limit) if limit else len(data)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Tuple[np.ndarray, Letterbox, np.ndarray, List[int], str]:
        s = self.data[index]
        x, box = letterbox_image(Image.fromarray(s["image"]), self.image_size)
        return x, box, s["mask"], self.tokenizer.encode(s["expression"]), s["type"]


def _collate(rows):
    return rows


def collect_records(
    predict: Predictor,
    data: ReferDataset,
    *,
    tokenizer: Tokenizer,
    image_size: int,
    threshold: float = THRESHOLD,
    batch_size: int = 16,
    workers: int = 0,
    limit: Optional[int] = None,
) -> List[Tuple[str, int, int]]:
    """Run ``predict`` over every sentence of ``data`` (an evaluation-mode ReferDataset).

    Returns:
      (type, intersection, union) per sentence, the records ``export.evaluate.summarise`` scores.
    """
    assert not data.train, "evaluate every sentence: build the ReferDataset with train=False"
    loader = torch.utils.data.DataLoader(
        _Letterboxed(data, tokenizer, image_size, limit), batch_size=batch_size, num_workers=workers,
        collate_fn=_collate, shuffle=False,
    )
    records: List[Tuple[str, int, int]] = []
    for rows in loader:
        images = np.stack([r[0] for r in rows])
        tokens = np.asarray([r[3] for r in rows], dtype=np.int64)
        logits = predict(images, tokens)
        for (_, box, gt, _, kind), lg in zip(rows, logits):
            pred = binary_mask(lg[0], box, threshold)
            records.append((kind, *iou(pred, gt > 0)))
    return records


def evaluate_refer(predict: Predictor, data: ReferDataset, **kw: Any) -> Dict[str, Dict[str, float]]:
    """Score ``data``: metrics in % for 'overall' and '<dataset>/<split>' (see ``collect_records``)."""
    return summarise(collect_records(predict, data, **kw))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("VLT evaluation on RefCOCO / RefCOCO+ / G-Ref", add_help=False)
    add_model_args(p)  # --model/--checkpoint, --batch-size, --threads, --ema, --json
    # * Data
    p.add_argument("--refer-root", type=Path, required=True, help="folder with <dataset>/refs(<split_by>).p + instances.json")
    p.add_argument("--images", type=Path, default=None, help="COCO train2014 folder (default: looked up under --refer-root)")
    p.add_argument("--dataset", default="refcoco", help="refcoco, refcoco+ or refcocog")
    p.add_argument("--split-by", default=None, help="unc, umd or google (default: unc; umd for refcocog)")
    p.add_argument("--splits", nargs="+", default=["val"], help="splits to score, e.g. val testA testB")
    p.add_argument("--limit", type=int, default=None, help="score only the first N sentences of each split")
    # * Running
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers decoding and letterboxing images")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device of --checkpoint")
    return p


def main(args: argparse.Namespace) -> Dict[str, Any]:
    t0 = time.time()
    predict, tokenizer, size, threshold = load_predictor(
        model=args.model, checkpoint=args.checkpoint, ema=args.ema, threads=args.threads, device=args.device
    )
    split_by = args.split_by or default_split_by(args.dataset)
    records: List[Tuple[str, int, int]] = []
    for split in args.splits:
        data = ReferDataset(args.refer_root, args.dataset, split, split_by=split_by, images=args.images)
        records += collect_records(predict, data, tokenizer=tokenizer, image_size=size, threshold=threshold,
                                   batch_size=args.batch_size, workers=args.workers, limit=args.limit)
    metrics = summarise(records)  # 'overall' pools every split's sentences
    print(format_table(metrics))
    print(f"(dataset {args.dataset}({split_by}), threshold {threshold}, {time.time() - t0:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    main(parser.parse_args())
