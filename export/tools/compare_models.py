"""Paired comparison of two models on the same set, from the evaluator's per-expression IoUs.

Two mIoUs on 1,000 expressions each carry a standard error of about 1.3 points, but both models
see the same expressions, so the difference has a much smaller one: the standard error of the mean
of the per-expression differences. This prints, overall and per expression type, both models'
mIoU and Prec@0.5, the difference B - A and its standard error.

    python -m export.evaluate --model models/vlt-refshapes --data ../shared/refshapes/val --per-expression a.jsonl
    python -m export.evaluate --model runs/tiny/model --data ../shared/refshapes/val --per-expression b.jsonl
    python -m export.tools.compare_models a.jsonl b.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Dict, List


def read_rows(path: Path) -> Dict[object, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["id"]: r for r in rows}


def paired(a: Dict[object, dict], b: Dict[object, dict]) -> Dict[str, Dict[str, float]]:
    """Group -> n, mIoU and Prec@0.5 of A and B, delta (B - A) and the standard error of delta."""
    if set(a) != set(b):
        raise ValueError(f"the two files score different expressions ({len(a)} vs {len(b)} ids, "
                         f"{len(set(a) ^ set(b))} not in both)")
    groups: Dict[str, List[object]] = {"overall": sorted(a, key=str)}
    for key in groups["overall"]:
        groups.setdefault(a[key]["type"], []).append(key)
    out: Dict[str, Dict[str, float]] = {}
    for name, keys in groups.items():
        n = len(keys)
        diffs = [b[k]["iou"] - a[k]["iou"] for k in keys]
        mean = sum(diffs) / n
        var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
        out[name] = {
            "n": n,
            "mIoU A": 100 * sum(a[k]["iou"] for k in keys) / n,
            "mIoU B": 100 * sum(b[k]["iou"] for k in keys) / n,
            "delta": 100 * mean,
            "SE": 100 * math.sqrt(var / n),
            "Prec@0.5 A": 100 * sum(a[k]["iou"] >= 0.5 for k in keys) / n,
            "Prec@0.5 B": 100 * sum(b[k]["iou"] >= 0.5 for k in keys) / n,
        }
    return out


def format_table(result: Dict[str, Dict[str, float]]) -> str:
    cols = ["n", "mIoU A", "mIoU B", "delta", "SE", "Prec@0.5 A", "Prec@0.5 B"]
    lines = ["| group | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name in ["overall"] + sorted(k for k in result if k != "overall"):
        r = result[name]
        lines.append(f"| {name} | {r['n']} | " + " | ".join(f"{r[c]:+.2f}" if c == "delta" else f"{r[c]:.2f}"
                                                          for c in cols[1:]) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="per-expression JSON lines of model A (evaluate --per-expression)")
    p.add_argument("b", type=Path, help="the same for model B, on the same set")
    args = p.parse_args()
    print(format_table(paired(read_rows(args.a), read_rows(args.b))))


if __name__ == "__main__":
    main()
