"""Print the learning curve of a training run (log.jsonl) as a markdown table.

    python -m export.tools.learning_curve runs/tiny/log.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curve(log: Path) -> str:
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "monitor" in r]
    lines = ["| step | minutes | samples/s | lr | pixel BCE | monitor mIoU | attr | location | size | relation |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in evals:
        near = min(train, key=lambda r: abs(r["step"] - e["step"])) if train else {}
        m = e["monitor"]
        lines.append(
            f"| {e['step']} | {e['minutes']:.1f} | {near.get('samples_per_s', float('nan')):.1f} | {near.get('lr', 0):.2e} "
            f"| {near.get('pixel_bce', float('nan')):.4f} | {m['overall']['mIoU']:.1f} | "
            + " | ".join(f"{m.get(k, {}).get('mIoU', float('nan')):.1f}" for k in ("attr", "location", "size", "relation"))
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", type=Path, help="log.jsonl of a training run")
    print(curve(p.parse_args().log))


if __name__ == "__main__":
    main()
