"""Score a model on the example phrases the web page ships (src/public/examples/examples.json).

    python -m export.tools.score_examples --model models/vlt-refshapes

The examples are scenes of this project's generator: ``examples.json`` names the command that wrote
them (``"source"``). The tool regenerates that set, finds each example image in it by its bytes,
resolves every phrase to its object with the independent checker (``refshapes.referents``, without
the shortest-form rules the sets follow; a phrase must name exactly one object), renders that object's mask and scores the model's mask against it.
A phrase is right when its IoU is at least 0.5. Prints one row per phrase and the count right.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

from export.data.refshapes import referents, render_object_mask, write_set
from export.evaluate import iou, iou_ratio, load_predictor
from export.preprocess import binary_mask, letterbox_image, load_rgb

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "public" / "examples"


def source_args(source: str) -> Dict[str, int]:
    """``python -m export.data.refshapes --out DIR --seed N --expressions M`` -> {seed, expressions}."""
    words = shlex.split(source)
    assert "export.data.refshapes" in words and "--hard" not in words, f"not a standard set command: {source!r}"
    return {"seed": int(words[words.index("--seed") + 1]), "expressions": int(words[words.index("--expressions") + 1])}


def ground_truth(examples_dir: Path = EXAMPLES) -> List[dict]:
    """Every example phrase with its image path and its target's mask (bool, the image's size)."""
    spec = json.loads((examples_dir / "examples.json").read_text())
    args = source_args(spec["source"])
    with tempfile.TemporaryDirectory() as tmp:
        write_set(tmp, seed=args["seed"], num_expressions=args["expressions"])
        scenes: Dict[bytes, List[dict]] = {}
        for line in (Path(tmp) / "annotations.jsonl").read_text().splitlines():
            row = json.loads(line)
            scenes.setdefault((Path(tmp) / row["image"]).read_bytes(), row["objects"])
    out = []
    for ex in spec["examples"]:
        image = examples_dir / ex["file"]
        objects = scenes.get(image.read_bytes())
        assert objects is not None, f"{ex['file']} is not an image of {spec['source']!r}"
        size = Image.open(image).size[0]
        for phrase in ex["expressions"]:
            hits = referents(phrase, objects, strict=False)  # the page's phrases need not be the shortest
            assert len(hits) == 1, f"{phrase!r} on {ex['file']} names objects {hits}, not exactly one"
            out.append({"file": ex["file"], "image": image, "expression": phrase, "target": hits[0],
                        "mask": render_object_mask(objects[hits[0]], size) > 0})
    return out


def score(model: Path, examples_dir: Path = EXAMPLES) -> List[dict]:
    predict, tokenizer, size, threshold = load_predictor(model=model)
    rows = []
    for gt in ground_truth(examples_dir):
        x, box = letterbox_image(load_rgb(io.BytesIO(gt["image"].read_bytes())), size)
        tokens = np.asarray([tokenizer.encode(gt["expression"])], dtype=np.int64)
        pred = binary_mask(predict(x[None], tokens)[0, 0], box, threshold)
        rows.append({"file": gt["file"], "expression": gt["expression"], "iou": iou_ratio(*iou(pred, gt["mask"]))})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model folder")
    p.add_argument("--json", type=Path, default=None, help="also write {right, total, rule, rows} here")
    args = p.parse_args()
    rows = score(args.model)
    print("| image | expression | IoU | right |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['file']} | {r['expression']} | {r['iou']:.3f} | {'yes' if r['iou'] >= 0.5 else 'no'} |")
    right = sum(r["iou"] >= 0.5 for r in rows)
    print(f"\n{right} of {len(rows)} right (IoU >= 0.5)")
    if args.json:
        args.json.write_text(json.dumps({"right": right, "total": len(rows), "rule": "IoU >= 0.5",
                                         "rows": [{**r, "iou": round(r["iou"], 4)} for r in rows]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
