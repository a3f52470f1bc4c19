"""The shared tokenizer rules (against the fixture the TypeScript side tests too) and the GloVe source."""

import json

import numpy as np
import pytest

from export.tests.conftest import REPO
from export.tools.make_tokenizer_fixture import build
from export.vlt.tokenizer import PAD, UNK, Tokenizer, split_words

FIXTURE = REPO / "test" / "fixtures" / "tokenizer_cases.json"


def test_fixture_is_what_the_python_tokenizer_produces():
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert fixture == build(), "fixture is stale: python -m export.tools.make_tokenizer_fixture"
    tok = Tokenizer(fixture["vocab"], fixture["max_words"])
    for case in fixture["cases"]:
        assert split_words(case["text"]) == case["words"], case["name"]
        assert tok.encode(case["text"]) == case["ids"], case["name"]
        assert len(case["ids"]) == fixture["max_words"]


@pytest.mark.parametrize(
    "text, words",
    [
        ("The LARGE circle, on the left!", ["the", "large", "circle", "on", "the", "left"]),
        ("don't", ["don't"]),
        ("Ｒｅｄ", ["red"]),
        ("漢字 🔴", ["漢字"]),
        ("", []),
    ],
)
def test_rules(text, words):
    assert split_words(text) == words


def test_ids_pad_truncate_and_unknown(tmp_path):
    tok = Tokenizer([PAD, UNK, "red", "one"], 3)
    assert tok.encode("red one") == [2, 3, 0]
    assert tok.encode("red zebra one one") == [2, 1, 3]
    tok.save(tmp_path / "vocab.txt")
    assert Tokenizer.from_file(tmp_path / "vocab.txt", 3).words == tok.words


def test_bundled_glove_is_real_glove():
    from export.vlt.glove import load_glove

    words, vectors = load_glove(limit=50000)
    assert vectors.shape == (50000, 50) and words[0] == "the"
    index = {w: i for i, w in enumerate(words)}
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    nearest = [words[i] for i in np.argsort(-(unit @ unit[index["red"]]))[1:8]]
    assert len({"blue", "yellow", "green", "black", "white"} & set(nearest)) >= 3, nearest


def test_vocabulary_covers_the_refshapes_words():
    from export.data.refshapes import WORDS
    from export.vlt.glove import build_vocabulary

    vocab, table, info = build_vocabulary(WORDS, top_n=1000)
    assert vocab[:2] == [PAD, UNK] and len(vocab) == len(set(vocab)) == table.shape[0]
    assert not table[0].any(), "row 0 (padding) must be zeros"
    assert set(WORDS) <= set(vocab)
    assert info["data_words"] == len(set(WORDS))
    assert info["data_words_in_glove"] >= len(set(WORDS)) - 2
