"""Tests of the RefShapes generator against docs/refshapes.md and the public val set."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.data import refshapes as R
from export.data.refshapes import dataset

REPO_ROOT = Path(__file__).resolve().parents[2]


def _val_dir() -> Path | None:
    for cand in (REPO_ROOT / "shared" / "refshapes" / "val", REPO_ROOT.parent / "shared" / "refshapes" / "val"):
        if (cand / "annotations.jsonl").is_file():
            return cand
    return None


VAL = _val_dir()
needs_val = pytest.mark.skipif(VAL is None, reason="refshapes val set not found (shared/refshapes/val)")


def _scenes(seed: int, n: int, config: R.RefShapesConfig | None = None):
    rng = np.random.default_rng(seed)
    it = R.iter_scenes(rng, config or R.RefShapesConfig())
    return [next(it) for _ in range(n)]


@pytest.fixture(scope="module")
def scenes():
    return _scenes(11, 400) + _scenes(12, 150, R.RefShapesConfig.hard())


def test_expressions_unique_and_well_formed(scenes):
    words = set(R.WORDS)
    n = 0
    for sc in scenes:
        objs = [o.to_json() for o in sc.objects]
        targets = [e.target for e in sc.expressions]
        assert 1 <= len(sc.expressions) <= 3
        assert len(set(targets)) == len(targets), "targets within an image must differ"
        for e in sc.expressions:
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", e.text), e.text
            assert len(e.text.split()) <= 15
            assert set(e.text.split()) <= words
            assert e.type in R.TYPES
            assert R.parse_expression(e.text)["type"] == e.type
            assert R.referents(e.text, objs) == [e.target], (e.text, objs)
            n += 1
    assert n > 900


def test_scene_geometry(scenes):
    for sc in scenes:
        objs = sc.objects
        hard = len(objs) >= 8
        assert (8 <= len(objs) <= 10) if hard else (3 <= len(objs) <= 7)
        assert len({o.shape for o in objs}) <= 4 and len({o.color for o in objs}) <= 4
        for i, o in enumerate(objs):
            lo, hi = R.SIZE_RANGES[o.size]
            assert lo <= o.r <= hi
            assert o.cx - o.r >= 2 and o.cy - o.r >= 2 and o.cx + o.r <= 254 and o.cy + o.r <= 254
            tlo, thi = R.THETA_RANGES[o.shape]
            assert tlo <= o.theta <= thi
            assert all(abs(c - k) <= 12 for c, k in zip(o.rgb, R.COLORS[o.color]))
            for p in objs[:i]:
                assert np.hypot(o.cx - p.cx, o.cy - p.cy) >= o.r + p.r + 4


def test_mask_is_target_pixels(scenes):
    cfg = R.RefShapesConfig()
    for sc in scenes[:120]:
        clean, labels = R.render_scene(sc, cfg, noise=False)
        for e in sc.expressions:
            mask = labels == e.target + 1
            tgt = sc.objects[e.target]
            alone = R.render_object_mask(tgt.to_json(), cfg.image_size)
            assert np.array_equal(mask, alone)
            assert mask.sum() > 100
            assert (clean[mask] == np.asarray(tgt.rgb, np.uint8)).all()
    # noise: mean ~0, sigma 5
    rng = np.random.default_rng(0)
    nz = R.gaussian_noise(rng, (256, 256, 3), 5.0)
    assert abs(float(nz.mean())) < 0.05 and abs(float(nz.std()) - 5.0) < 0.05


def test_stream_items_and_type_shares():
    ds = R.RefShapesStream(seed=3)
    it = iter(ds)
    counts = collections.Counter()
    for i in range(2000):
        item = next(it)
        if i < 50:
            assert set(item) == {"image", "mask", "expression", "type"}
            assert item["image"].dtype == np.uint8 and item["image"].shape == (256, 256, 3)
            assert item["mask"].dtype == np.uint8 and item["mask"].shape == (256, 256)
            assert set(np.unique(item["mask"])) <= {0, 1} and item["mask"].sum() > 0
        counts[item["type"]] += 1
    for t, p in R.RefShapesConfig().type_proportions.items():
        assert abs(counts[t] / 2000 - p) <= 0.02, counts


def _take(ds, n):
    it = iter(ds)
    return [next(it) for _ in range(n)]


def test_stream_deterministic_and_worker_aware(monkeypatch):
    a = _take(R.RefShapesStream(seed=5), 12)
    b = _take(R.RefShapesStream(seed=5), 12)
    for x, y in zip(a, b):
        assert x["expression"] == y["expression"] and x["type"] == y["type"]
        assert x["image"].tobytes() == y["image"].tobytes() and x["mask"].tobytes() == y["mask"].tobytes()
    c = _take(R.RefShapesStream(seed=6), 4)
    assert any(x["image"].tobytes() != z["image"].tobytes() for x, z in zip(a, c))

    class Info:
        def __init__(self, i):
            self.id, self.num_workers = i, 2

    monkeypatch.setattr(dataset, "_get_worker_info", lambda: Info(1))
    w1 = _take(R.RefShapesStream(seed=5), 4)
    w1b = _take(R.RefShapesStream(seed=5), 4)
    assert [x["image"].tobytes() for x in w1] == [x["image"].tobytes() for x in w1b]
    assert w1[0]["image"].tobytes() != a[0]["image"].tobytes()


def _write(tmp_path, name, seed, n, config=None):
    out = tmp_path / name
    R.write_set(out, seed=seed, num_expressions=n, config=config or R.RefShapesConfig())
    return out


def test_write_set_deterministic(tmp_path):
    a = _write(tmp_path, "a", 9, 40)
    b = _write(tmp_path, "b", 9, 40)
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert fa == fb
    for p in fa:
        assert (a / p).read_bytes() == (b / p).read_bytes(), p
    c = _write(tmp_path, "c", 10, 40)
    assert (a / "annotations.jsonl").read_bytes() != (c / "annotations.jsonl").read_bytes()


def test_write_set_format(tmp_path):
    out = _write(tmp_path, "s", 1, 60)
    rows = [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]
    assert len(rows) == 60
    keys = ["id", "image", "mask", "expression", "type", "target", "objects"]
    okeys = ["shape", "color", "size", "cx", "cy", "r", "theta"]
    if VAL is not None:
        v = json.loads((VAL / "annotations.jsonl").read_text().splitlines()[0])
        assert list(v) == keys and list(v["objects"][0]) == okeys
    images = []
    for i, r in enumerate(rows):
        assert list(r) == keys
        assert r["id"] == i and r["mask"] == f"masks/{i:06d}.png"
        assert re.fullmatch(r"images/\d{6}\.jpg", r["image"])
        if r["image"] not in images:
            images.append(r["image"])
        assert all(list(o) == okeys for o in r["objects"])
        assert all(o["theta"] == 0.0 for o in r["objects"] if o["shape"] == "circle")
        assert R.referents(r["expression"], r["objects"]) == [r["target"]]
        m = Image.open(out / r["mask"])
        assert m.mode == "L" and m.size == (256, 256) and m.format == "PNG"
        arr = np.asarray(m)
        assert set(np.unique(arr)) == {0, 255}
        # the annotation alone reproduces the mask
        assert np.array_equal(arr > 0, R.render_object_mask(r["objects"][r["target"]]))
    assert images == [f"images/{k:06d}.jpg" for k in range(len(images))]
    per_image = collections.Counter(r["image"] for r in rows)
    assert set(per_image.values()) <= {1, 2, 3}
    for name in images:
        im = Image.open(out / name)
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (256, 256)
    # the set's types follow the exact shares
    cnt = collections.Counter(r["type"] for r in rows)
    assert cnt == {"attr": 15, "location": 15, "size": 12, "relation": 18}


@needs_val
def test_referents_agree_with_val():
    rows = [json.loads(line) for line in (VAL / "annotations.jsonl").read_text().splitlines()]
    assert len(rows) == 1000
    bad = [(r["id"], r["expression"]) for r in rows if R.referents(r["expression"], r["objects"]) != [r["target"]]]
    assert not bad, bad[:10]
    words = {w for r in rows for w in r["expression"].split()}
    assert words <= set(R.WORDS)


def test_referents_detects_ambiguity():
    objs = [
        {"shape": "circle", "color": "red", "size": "small", "cx": 50.0, "cy": 50.0, "r": 12.0, "theta": 0.0},
        {"shape": "circle", "color": "red", "size": "small", "cx": 60.0, "cy": 150.0, "r": 14.0, "theta": 0.0},
        {"shape": "square", "color": "blue", "size": "large", "cx": 180.0, "cy": 100.0, "r": 30.0, "theta": 0.0},
    ]
    assert R.referents("the red circle", objs, strict=False) == [0, 1]
    assert R.referents("the blue one", objs) == [2]
    assert R.referents("the leftmost circle", objs) == [0, 1]  # only 10 px apart
    assert R.referents("the topmost red one", objs) == [0]
    assert R.referents("the bigger circle", objs) == [0, 1]  # factor < 1.4
    assert R.referents("the circle left of the square", objs) == [0, 1]
    with pytest.raises(ValueError):
        R.referents("the blue square", objs)  # not the shortest description
    with pytest.raises(ValueError):
        R.referents("the biggest circle", objs)  # superlative needs >= 3 matches
