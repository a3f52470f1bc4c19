"""Letterbox geometry, the VLT evaluation protocol and the metrics."""

import numpy as np
import pytest
from PIL import Image

from export.data.refshapes import render_object_mask
from export.evaluate import evaluate_set, format_table, iou, picked_object, summarise
from export.preprocess import Letterbox, binary_mask, letterbox_image, letterbox_mask, mask_probabilities


def test_letterbox_geometry_matches_the_spec():
    box = Letterbox.fit(320, 256, 224)  # scale = min(224/320, 224/256) = 0.7
    assert (box.nw, box.nh, box.dx, box.dy) == (224, 179, 0, 22)
    x, box2 = letterbox_image(Image.new("RGB", (320, 256), (255, 0, 0)), 224)
    assert x.shape == (3, 224, 224) and box2 == box
    assert np.allclose(x[:, :22], 0.5) and np.allclose(x[:, 22 + 179 :], 0.5)  # the pad value
    assert np.allclose(x[0, 22 : 22 + 179], 1.0) and np.allclose(x[1, 22 : 22 + 179], 0.0)


def test_mask_round_trip_through_the_protocol():
    mask = np.zeros((256, 320), np.uint8)
    mask[100:180, 60:200] = 1
    box = Letterbox.fit(320, 256, 224)
    target = letterbox_mask(mask, box, 112)
    assert target.shape == (112, 112) and 0 <= target.min() and target.max() <= 1
    logits = np.where(target > 0.5, 10.0, -10.0).astype(np.float32)
    pred = binary_mask(logits, box)
    assert pred.shape == mask.shape
    i, u = iou(pred, mask.astype(bool))
    assert i / u > 0.95
    probs = mask_probabilities(logits, box)
    assert probs.shape == (256, 320) and probs.max() <= 1


def test_metrics():
    records = [("attr", 50, 100), ("attr", 90, 100), ("relation", 0, 100), ("relation", 0, 0)]
    m = summarise(records)
    assert m["overall"]["n"] == 4
    assert m["overall"]["mIoU"] == pytest.approx(100 * (0.5 + 0.9 + 0 + 1) / 4)
    assert m["overall"]["oIoU"] == pytest.approx(100 * 140 / 300)
    assert m["attr"]["Prec@0.5"] == 100 and m["attr"]["Prec@0.9"] == 50
    assert m["relation"]["mIoU"] == pytest.approx(50)


def test_evaluate_set_scores_a_perfect_predictor(tmp_path):
    from export.data.refshapes import write_set
    from export.vlt.tokenizer import PAD, UNK, Tokenizer
    import json

    write_set(tmp_path, seed=3, num_expressions=6)
    rows = [json.loads(r) for r in (tmp_path / "annotations.jsonl").read_text().splitlines()]
    masks = {r["expression"]: np.asarray(Image.open(tmp_path / r["mask"])) > 127 for r in rows}
    words = sorted({w for r in rows for w in r["expression"].split()})
    tok = Tokenizer([PAD, UNK] + words, 15)
    by_tokens = {tuple(tok.encode(e)): m for e, m in masks.items()}

    def oracle(images, tokens):  # returns logits of the true mask, letterboxed like the model's
        box = Letterbox.fit(256, 256, 128)
        return np.stack([np.where(letterbox_mask(by_tokens[tuple(t)].astype(np.uint8), box, 64) > 0.5, 20.0, -20.0)[None]
                         for t in tokens.tolist()]).astype(np.float32)

    m = evaluate_set(oracle, data=tmp_path, tokenizer=tok, image_size=128, batch_size=4)
    assert m["overall"]["n"] == 6
    assert m["overall"]["mIoU"] > 85  # limited only by the 64 x 64 logit grid
    assert not any("=" in k for k in m)

    # --breakdown: the same metrics plus groups by target size, target shape and object count
    b = evaluate_set(oracle, data=tmp_path, tokenizer=tok, image_size=128, batch_size=4, breakdown=True)
    assert {k: {c: b[k][c] for c in m[k]} for k in m} == m
    # the oracle's masks always cover their own target most; a mask shifted onto nothing picks none
    assert all(v["picked"] == 100 and v["mIoU|picked"] == pytest.approx(v["mIoU"]) for v in b.values())
    objects = rows[0]["objects"]
    target = render_object_mask(objects[rows[0]["target"]])
    assert picked_object(target, objects) == rows[0]["target"]
    assert picked_object(np.zeros_like(target), objects) is None
    for key in ("size", "shape", "objects"):
        groups = {k: v for k, v in b.items() if k.startswith(key + "=")}
        assert sum(v["n"] for v in groups.values()) == 6, key
    want = {f"objects={len(r['objects'])}" for r in rows} | {f"shape={r['objects'][r['target']]['shape']}" for r in rows}
    assert want <= set(b)
    assert ("size=small" in format_table(b) or "size=large" in format_table(b)) and "mIoU|picked" in format_table(b)

    # per_expression: one row per expression, whose mean is the set's mIoU
    per: list = []
    again = evaluate_set(oracle, data=tmp_path, tokenizer=tok, image_size=128, batch_size=4, per_expression=per)
    assert again == m
    assert [r["id"] for r in per] == [r["id"] for r in rows] and [r["type"] for r in per] == [r["type"] for r in rows]
    assert 100 * np.mean([r["iou"] for r in per]) == pytest.approx(m["overall"]["mIoU"])


def test_compare_models_pairs_expressions_by_id(tmp_path):
    import json

    from export.tools.compare_models import format_table, paired, read_rows

    a = [{"id": i, "type": t, "iou": v} for i, (t, v) in enumerate([("attr", 0.2), ("attr", 0.6), ("size", 0.9), ("size", 0.4)])]
    b = [{"id": i, "type": t, "iou": v} for i, (t, v) in enumerate([("attr", 0.5), ("attr", 0.7), ("size", 0.9), ("size", 0.2)])]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in a))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversed(b)))  # order does not matter
    r = paired(read_rows(tmp_path / "a.jsonl"), read_rows(tmp_path / "b.jsonl"))
    # differences +0.3, +0.1, 0, -0.2: mean 0.05, sample sd sqrt(0.13 / 3), SE = sd / 2
    assert r["overall"]["delta"] == pytest.approx(5.0)
    assert r["overall"]["SE"] == pytest.approx(100 * np.sqrt(0.13 / 3) / 2)
    assert r["attr"]["delta"] == pytest.approx(20.0) and r["size"]["delta"] == pytest.approx(-10.0)
    assert r["overall"]["Prec@0.5 A"] == 50 and r["overall"]["Prec@0.5 B"] == 75
    assert "| overall | 4 | 52.50 | 57.50 | +5.00 |" in format_table(r)
    with pytest.raises(ValueError, match="different expressions"):
        paired(read_rows(tmp_path / "a.jsonl"), read_rows(tmp_path / "a.jsonl") | {9: {"id": 9, "type": "attr", "iou": 1.0}})


def test_every_page_example_names_exactly_one_object_of_its_regenerated_scene():
    from export.tools.score_examples import ground_truth

    rows = ground_truth()
    assert len(rows) == 23
    for r in rows:
        assert 0 < r["mask"].sum() < r["mask"].size / 4, r["expression"]  # one object's mask, not empty or the scene


def test_calibrate_threshold_finds_the_band_that_separates_target_from_halo(tmp_path):
    """A predictor whose target pixels have probability 0.62 and a 3-cell halo around them 0.42:
    thresholds below 0.42 take the halo in, thresholds above 0.62 lose the target, so the best
    threshold lies between, and the sweep must say so from one pass of the model."""
    import json

    from export.data.refshapes import write_set
    from export.tools.calibrate_threshold import best, sweep
    from export.vlt.tokenizer import PAD, UNK, Tokenizer

    write_set(tmp_path, seed=5, num_expressions=6)
    rows = [json.loads(r) for r in (tmp_path / "annotations.jsonl").read_text().splitlines()]
    words = sorted({w for r in rows for w in r["expression"].split()})
    tok = Tokenizer([PAD, UNK] + words, 15)
    box = Letterbox.fit(256, 256, 128)
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    grids = {}
    for r in rows:
        core = letterbox_mask((np.asarray(Image.open(tmp_path / r["mask"])) > 127).astype(np.uint8), box, 64) > 0.5
        halo = core.copy()
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                halo |= np.roll(np.roll(core, dy, 0), dx, 1)
        grids[tuple(tok.encode(r["expression"]))] = np.where(core, logit(0.62), np.where(halo, logit(0.42), -20.0))
    calls = []

    def model(images, tokens):
        calls.append(len(tokens))
        return np.stack([grids[tuple(t)][None] for t in tokens.tolist()]).astype(np.float32)

    table = sweep(model, thresholds=(0.3, 0.4, 0.5, 0.6, 0.7), data=tmp_path, tokenizer=tok, image_size=128,
                  batch_size=4)
    assert sum(calls) == 6  # one pass, reused for every threshold
    by_t = {r["threshold"]: r["mIoU"] for r in table}
    assert best(table)["threshold"] in (0.5, 0.6)
    assert by_t[0.5] > by_t[0.4] + 10 and by_t[0.5] > 85 and by_t[0.7] == 0.0
    assert by_t[0.3] < by_t[0.4]  # a lower threshold takes more of the halo's blurred edge
    assert best([{"threshold": 0.4, "mIoU": 80.0}, {"threshold": 0.5, "mIoU": 80.0}])["threshold"] == 0.4
