"""The tokenizer shared by training, export and the service (docs/vlt.md §3).

Rules, identical in Python (here) and TypeScript (src/model/tokenizer.ts):
  1. Unicode NFKC normalisation;
  2. lower-case;
  3. every character that is not a letter (general category L*), a decimal digit (Nd) or the
     apostrophe U+0027 becomes a space;
  4. split on whitespace;
  5. map words to ids through vocab.txt (line number = id; 0 <pad>, 1 <unk>; unknown -> 1);
  6. truncate or right-pad with 0 to L.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Union

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


def _keep(ch: str) -> bool:
    return ch == "'" or unicodedata.category(ch)[0] == "L" or unicodedata.category(ch) == "Nd"


def split_words(text: str) -> List[str]:
    """Rules 1-4: text -> words (before vocabulary lookup and truncation)."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch if _keep(ch) else " " for ch in text).split()


class Tokenizer:
    """
    Arguments:
      words (Sequence[str]): the vocabulary in id order; words[0] must be '<pad>', words[1] '<unk>'.
      max_words (int): L.
    """

    def __init__(self, words: Sequence[str], max_words: int) -> None:
        assert list(words[:2]) == [PAD, UNK], f"vocabulary must start with {PAD}, {UNK}; got {list(words[:2])}"
        self.words = list(words)
        self.index: Dict[str, int] = {w: i for i, w in enumerate(self.words)}
        assert len(self.index) == len(self.words), "vocabulary has duplicate words"
        self.max_words = max_words

    @classmethod
    def from_file(cls, path: Union[str, Path], max_words: int) -> "Tokenizer":
        return cls(Path(path).read_text(encoding="utf-8").split("\n")[:-1], max_words)

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text("".join(w + "\n" for w in self.words), encoding="utf-8")

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> List[int]:
        """text -> L ids (unknown words -> 1, right-padded with 0, truncated to L)."""
        ids = [self.index.get(w, UNK_ID) for w in split_words(text)][: self.max_words]
        return ids + [PAD_ID] * (self.max_words - len(ids))

    def encode_batch(self, texts: Iterable[str]) -> List[List[int]]:
        return [self.encode(t) for t in texts]
