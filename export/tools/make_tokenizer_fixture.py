"""Write test/fixtures/tokenizer_cases.json: tricky tokenizer cases that the Python tokenizer and the
TypeScript one (src/model/tokenizer.ts) are both tested against.

    python -m export.tools.make_tokenizer_fixture [--out test/fixtures/tokenizer_cases.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from export.vlt.tokenizer import PAD, UNK, Tokenizer, split_words

VOCAB = [PAD, UNK, "the", "large", "circle", "on", "left", "don't", "café", "full", "漢字", "red",
         "one", "3rd", "naïve", "fine", "i", "x2", "blue", "ｔｅｓｔ"]
MAX_WORDS = 5
CASES = [
    ("capitals", "The LARGE Circle"),
    ("punctuation", "the large, circle; on-the-left!"),
    ("apostrophe kept", "don't"),
    ("curly apostrophe is not an apostrophe", "don\u2019t"),
    ("digits", "x2 3rd 42"),
    ("accents composed", "Café"),
    ("accents decomposed (NFKC composes)", "Cafe\u0301"),
    ("fullwidth (NFKC folds)", "ＦＵＬＬ ｔｅｓｔ"),
    ("ligature (NFKC splits)", "\ufb01ne"),
    ("dotted capital I lower-cases to i + combining dot", "\u0130stanbul"),
    ("diaeresis", "naïve"),
    ("CJK without spaces is one word", "漢字"),
    ("CJK mixed", "the 漢字 one"),
    ("emoji only", "🔴🟦"),
    ("emoji between words", "red🔴one"),
    ("more than L words", "the large red circle on the left one"),
    ("empty", ""),
    ("whitespace only", " \t\n "),
    ("punctuation only", "?!.,;:"),
    ("tabs and newlines", "red\tone\nleft"),
    ("non-breaking space", "red\u00a0one"),
    ("right-to-left", "\u05e9\u05dc\u05d5\u05dd red"),
    ("underscore and hyphen split", "red_one left-one"),
    ("superscript digit (NFKC folds)", "x\u00b2"),
]


def build() -> dict:
    tok = Tokenizer(VOCAB, MAX_WORDS)
    cases = [{"name": n, "text": t, "words": split_words(t), "ids": tok.encode(t)} for n, t in CASES]
    return {"vocab": VOCAB, "max_words": MAX_WORDS, "cases": cases}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="test/fixtures/tokenizer_cases.json", help="where to write the fixture")
    args = p.parse_args()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(build(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
