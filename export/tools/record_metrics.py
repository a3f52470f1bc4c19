"""Record evaluation results and the training recipe in a model folder's model.json (the ONNX files
and their sha256 are left as they are).

    python -m export.tools.record_metrics models/vlt-refshapes --metrics val=runs/tiny/val.json \
        --metrics seed2=runs/tiny/seed2.json --training runs/tiny/training.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="model folder")
    p.add_argument("--metrics", action="append", default=[], help="NAME=metrics.json (from export.evaluate --json)")
    p.add_argument("--training", type=Path, default=None, help="JSON describing the training run")
    args = p.parse_args()
    path = args.model / "model.json"
    manifest = json.loads(path.read_text())
    for item in args.metrics:
        name, _, file = item.partition("=")
        manifest.setdefault("metrics", {})[name] = json.loads(Path(file).read_text())
    if args.training:
        manifest["training"] = json.loads(args.training.read_text())
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"updated {path}")


if __name__ == "__main__":
    main()
