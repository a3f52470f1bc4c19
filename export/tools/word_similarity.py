"""How alike the rows of the word table are for the words a RefShapes model must tell apart.

    python -m export.tools.word_similarity --checkpoint runs/v3/checkpoint.pt [--no-ema] [--json out.json]

Prints, per group of words (colours, shapes, size words, left/right, above/below, top/bottom), the
mean pairwise cosine similarity of their rows in the table the run started from (rebuilt with
``build_vocabulary`` from the run's own GloVe source and vocabulary size) and in the checkpoint's table (the same rows when the table was frozen; moved apart or together when
it was trained with ``--train-words``). A cosine near 1 means the network receives near-identical
inputs for the two words and must tell them apart from context alone.
"""

from __future__ import annotations

import argparse
import json
from itertools import combinations
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import numpy as np
import torch

from export.data.refshapes.spec import COLOR_NAMES, SHAPES, WORDS
from export.vlt.glove import build_vocabulary

TABLE_KEY = "language_encoder.embedding.table"

#: The word groups whose members select different objects.
GROUPS: Dict[str, Sequence[str]] = {
    "colours": COLOR_NAMES,
    "shapes": SHAPES,
    "small/large": ("small", "large"),
    "smaller/larger": ("smaller", "larger"),
    "left/right": ("left", "right"),
    "above/below": ("above", "below"),
    "top/bottom": ("top", "bottom"),
}


def mean_cosine(table: np.ndarray, index: Mapping[str, int], words: Sequence[str]) -> float:
    """Mean cosine similarity over the pairs of ``words`` (rows of ``table`` looked up in ``index``)."""
    rows = np.stack([table[index[w]] for w in words]).astype(np.float64)
    rows /= np.clip(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12, None)
    return float(np.mean([rows[i] @ rows[j] for i, j in combinations(range(len(words)), 2)]))


def group_similarity(tables: Mapping[str, np.ndarray], vocab: List[str]) -> Dict[str, Dict[str, float]]:
    """Group -> table name -> mean pairwise cosine; groups with a word outside ``vocab`` are left out."""
    index = {w: i for i, w in enumerate(vocab)}
    return {group: {name: mean_cosine(t, index, words) for name, t in tables.items()}
            for group, words in GROUPS.items() if all(w in index for w in words)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--no-ema", action="store_true", help="the raw weights instead of the EMA's")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    key = "model" if args.no_ema or ckpt.get("model_ema") is None else "model_ema"
    vocab = list(ckpt["vocab"])
    # the table train.py started from: the same call with the run's own arguments
    start_vocab, start, _ = build_vocabulary(WORDS, source=ckpt["args"]["glove"], top_n=int(ckpt["args"]["vocab_top_n"]))
    assert start_vocab == vocab, "the checkpoint's vocabulary is not the one build_vocabulary makes for its run"
    trained = ckpt[key][TABLE_KEY].float().numpy()
    result = group_similarity({"glove": start, "model": trained}, vocab)
    print(f"{'group':<16} {'GloVe':>7} {'model':>7}   (mean pairwise cosine, {key} weights)")
    for group, cos in result.items():
        print(f"{group:<16} {cos['glove']:>7.3f} {cos['model']:>7.3f}")
    if args.json:
        args.json.write_text(json.dumps({"weights": key, "groups": result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
