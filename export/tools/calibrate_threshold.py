"""Choose the mask threshold of a model on a set: run the model once, score every threshold.

The VLT protocol thresholds the mask probabilities at 0.35 (`export/preprocess.py`), the paper's
value for the paper's loss. A model trained with another loss (this project's default adds a Dice
term) can be calibrated differently: this scores the same predictions at each threshold of a grid
and names the one with the highest mIoU. Choose it on a set of the project's own generator, never
on the set the model is judged on.

    python -m export.tools.calibrate_threshold --checkpoint runs/tiny/checkpoint.pt --no-ema --data runs/tiny/calibration
    python -m export.tools.calibrate_threshold --model models/vlt-refshapes --data DIR --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Sequence

from export.evaluate import Predictor, add_model_args, load_predictor, predict_set, score_predictions

GRID = tuple(round(0.2 + 0.05 * i, 2) for i in range(11))  # 0.20 ... 0.70


def sweep(predict: Predictor, *, data: Path, thresholds: Sequence[float] = GRID, **predict_kwargs) -> List[dict]:
    """One row per threshold: the threshold and the set's overall metrics at it, from one pass of
    the model (``predict_kwargs``: ``predict_set``'s tokenizer, image_size, batch_size, limit)."""
    predictions = list(predict_set(predict, data=data, **predict_kwargs))
    return [{"threshold": t, **score_predictions(predictions, data=data, threshold=t)["overall"]} for t in thresholds]


def best(rows: Sequence[dict]) -> dict:
    """The row with the highest mIoU (the lowest threshold among equals)."""
    return max(rows, key=lambda r: (r["mIoU"], -r["threshold"]))


def main(args: argparse.Namespace) -> dict:
    predict, tokenizer, size, current = load_predictor(model=args.model, checkpoint=args.checkpoint, ema=args.ema,
                                                       threads=args.threads)
    thresholds = [float(t) for t in args.thresholds.split(",")] if args.thresholds else GRID
    rows = sweep(predict, thresholds=thresholds, data=args.data, tokenizer=tokenizer, image_size=size,
                 batch_size=args.batch_size, limit=args.limit)
    print("| threshold | mIoU | oIoU | Prec@0.5 | Prec@0.9 |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['threshold']:.2f} | {r['mIoU']:.2f} | {r['oIoU']:.2f} | {r['Prec@0.5']:.2f} | {r['Prec@0.9']:.2f} |")
    choice = best(rows)
    print(f"best: {choice['threshold']:.2f} (mIoU {choice['mIoU']:.2f}; the model's current threshold is {current})")
    result = {"data": str(args.data), "current": current, "best": choice["threshold"], "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    add_model_args(p)  # --model/--checkpoint, --batch-size, --threads, --ema, --json (the rows and the choice)
    p.add_argument("--data", type=Path, required=True, help="a set of the project's own generator")
    p.add_argument("--thresholds", default="", help="comma-separated thresholds (default 0.20, 0.25, ... 0.70)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N expressions")
    return p

if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    main(parser.parse_args())
