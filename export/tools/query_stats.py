"""How differently the 16 queries of a model read a set: the QBM confidences and the QGM word attention.

    python -m export.tools.query_stats --model models/vlt-refshapes --data ../shared/refshapes/val --json q.json

Per expression:
- ``confidence_range``: max - min of the Nq QBM confidences (0 when the balance module weighs every
  query the same), and ``confidence_std``, their standard deviation;
- ``attention_tv``: the mean over query pairs of the total-variation distance between their word
  attentions, 1/2 sum_l |a_i(l) - a_j(l)| over the sentence's own words (0: every query reads the
  sentence the same way; 1: the pairs attend to disjoint words);
- ``top_word_agreement``: the share of query pairs whose most-attended word is the same.
The figures are the means over the set, with the 10th and 90th percentiles of the first three.
"""

from __future__ import annotations

import argparse
import json
from itertools import combinations
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from export.evaluate import read_set
from export.preprocess import letterbox_image, load_rgb
from export.vlt.tokenizer import Tokenizer


def expression_stats(confidence: np.ndarray, attention: np.ndarray, n_words: int) -> Dict[str, float]:
    """confidence (Nq,), attention (Nq, L) of one expression whose first ``n_words`` tokens are words."""
    a = attention[:, : max(n_words, 1)].astype(np.float64)
    a = a / np.clip(a.sum(1, keepdims=True), 1e-12, None)
    pairs = list(combinations(range(a.shape[0]), 2))
    tv = float(np.mean([0.5 * np.abs(a[i] - a[j]).sum() for i, j in pairs]))
    top = a.argmax(1)
    agree = float(np.mean([top[i] == top[j] for i, j in pairs]))
    return {"confidence_range": float(confidence.max() - confidence.min()), "confidence_std": float(confidence.std()),
            "attention_tv": tv, "top_word_agreement": agree}


def summarise(rows: List[Dict[str, float]]) -> Dict[str, float]:
    out: Dict[str, float] = {"n": len(rows)}
    for key in rows[0]:
        values = np.array([r[key] for r in rows])
        out[key] = float(values.mean())
        if key != "top_word_agreement":
            out[f"{key}_p10"], out[f"{key}_p90"] = (float(v) for v in np.percentile(values, [10, 90]))
    return out


def query_stats(model_dir: Path, data: Path, *, limit: Optional[int] = None, batch_size: int = 16) -> Dict[str, float]:
    from export.model_session import ModelSession

    sess = ModelSession(model_dir)
    manifest = sess.manifest
    tokenizer = Tokenizer.from_file(model_dir / manifest["vocab"]["file"], manifest["max_words"])
    size, pad = manifest["input"]["size"], manifest["vocab"]["pad_id"]
    rows = read_set(data, limit)
    stats: List[Dict[str, float]] = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        images = np.stack([letterbox_image(load_rgb(data / r["image"]), size)[0] for r in batch])
        tokens = np.asarray(tokenizer.encode_batch([r["expression"] for r in batch]), dtype=np.int64)
        conf, attn = sess.run(["query_confidence", "word_attention"], {"image": images, "tokens": tokens})
        for c, a, t in zip(conf, attn, tokens):
            stats.append(expression_stats(c, a, int((t != pad).sum())))
    return summarise(stats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model folder")
    p.add_argument("--data", type=Path, required=True, help="a set in the RefShapes format")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args()
    out = query_stats(args.model, args.data, limit=args.limit)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
