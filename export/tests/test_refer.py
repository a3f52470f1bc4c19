"""REFER-format loading (RefCOCO / RefCOCO+ / G-Ref), the per-split evaluation and the RefCOCO
training script, on a tiny fixture written in the REFER + COCO on-disk format by
``write_refer_fixture`` (generated images, polygons and sentences; no real data needed)."""

import argparse
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from export.data.refer import ReferDataset, max_words_for, polygons_to_mask, split_counts
from export.evaluate_refer import evaluate_refer
from export.preprocess import letterbox_image, letterbox_mask

# image id -> (size, [(ann id, colour, polygon, split, sentences)])
_SCENES = {
    11: ((80, 60), [(101, (220, 40, 40), [6, 8, 30, 8, 30, 40, 6, 40], "train", ["the red box on the left", "red thing"]),
                    (102, (40, 80, 220), [50, 10, 74, 30, 50, 50], "train", ["blue triangle right"])]),
    12: ((64, 64), [(201, (40, 170, 60), [10, 10, 54, 10, 54, 30, 10, 30], "val", ["the green bar", "top green one"]),
                    (202, (235, 210, 40), [20, 40, 44, 40, 32, 60], "val", ["yellow triangle at the bottom"])]),
    13: ((48, 72), [(301, (150, 60, 200), [4, 4, 40, 4, 40, 30], "testA", ["purple man on the left"]),
                    (302, (245, 140, 30), [8, 40, 40, 40, 40, 68, 8, 68], "testB", ["orange thing", "orange box"])]),
}


def write_refer_fixture(root: Path, dataset: str = "refcoco", split_by: str = "unc") -> Path:
    """Write ``<root>/<dataset>/refs(<split_by>).p``, ``instances.json`` and the COCO-style images."""
    images_dir = root / "images" / "mscoco" / "images" / "train2014"
    images_dir.mkdir(parents=True, exist_ok=True)
    (root / dataset).mkdir(parents=True, exist_ok=True)
    images, annotations, refs = [], [], []
    sent_id = 0
    for image_id, ((w, h), objects) in _SCENES.items():
        file_name = f"COCO_train2014_{image_id:012d}.jpg"
        img = Image.new("RGB", (w, h), (128, 128, 128))
        draw = ImageDraw.Draw(img)
        for ann_id, colour, poly, split, sents in objects:
            draw.polygon(list(zip(poly[::2], poly[1::2])), fill=colour)
            xs, ys = poly[::2], poly[1::2]
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                "segmentation": [[float(v) for v in poly]], "area": 0.0,
                                "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]})
            sentences = []
            for s in sents:
                sentences.append({"sent": s, "tokens": s.split(), "raw": s.upper() + ".", "sent_id": sent_id})
                sent_id += 1
            refs.append({"ref_id": len(refs), "ann_id": ann_id, "image_id": image_id, "split": split,
                         "sentences": sentences, "sent_ids": [x["sent_id"] for x in sentences], "category_id": 1,
                         # the REFER files name the image with the annotation id appended
                         "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg"})
        img.save(images_dir / file_name, quality=95)
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
    with open(root / dataset / f"refs({split_by}).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    instances = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
    (root / dataset / "instances.json").write_text(json.dumps(instances))
    return root


def write_glove(path: Path, dim: int = 8) -> Path:
    rng = np.random.default_rng(0)
    words = ["the", "red", "box", "on", "left", "blue", "green", "man", "of", "a"]
    path.write_text("".join(w + " " + " ".join(f"{v:.3f}" for v in rng.standard_normal(dim)) + "\n" for w in words))
    return path


@pytest.fixture(scope="module")
def refer_root(tmp_path_factory):
    return write_refer_fixture(tmp_path_factory.mktemp("refer"))


def _polygon_mask(poly, w, h):
    m = Image.new("L", (w, h), 0)
    ImageDraw.Draw(m).polygon(list(zip(poly[::2], poly[1::2])), fill=1)
    return np.asarray(m) > 0


def test_standard_splits_and_one_item_per_sentence(refer_root):
    counts = split_counts(refer_root, "refcoco")
    assert counts == {"train": {"refs": 2, "sentences": 3, "images": 1}, "val": {"refs": 2, "sentences": 3, "images": 1},
                      "testA": {"refs": 1, "sentences": 1, "images": 1}, "testB": {"refs": 1, "sentences": 2, "images": 1}}
    val = ReferDataset(refer_root, "refcoco", "val")
    assert len(val) == 3
    s = val[0]
    assert set(s) >= {"image", "mask", "expression", "type"}
    assert s["image"].dtype == np.uint8 and s["image"].shape == (64, 64, 3)
    assert s["mask"].dtype == np.uint8 and s["mask"].shape == (64, 64) and set(np.unique(s["mask"])) <= {0, 1}
    assert s["expression"] == "the green bar" and s["type"] == "refcoco/val"
    assert [val[i]["expression"] for i in range(3)] == ["the green bar", "top green one", "yellow triangle at the bottom"]
    with pytest.raises(ValueError, match="no split 'test'"):
        ReferDataset(refer_root, "refcoco", "test")
    with pytest.raises(ValueError, match="no split_by"):
        ReferDataset(refer_root, "refcoco+", "val", split_by="umd")
    assert (max_words_for("refcoco"), max_words_for("refcoco+"), max_words_for("refcocog")) == (15, 15, 20)


def test_mask_is_the_referred_polygon(refer_root):
    test_b = ReferDataset(refer_root, "refcoco", "testB")
    s = test_b[1]
    assert s["expression"] == "orange box" and s["image"].shape == (72, 48, 3)
    want = _polygon_mask([8, 40, 40, 40, 40, 68, 8, 68], 48, 72)
    inter, union = np.logical_and(s["mask"] > 0, want).sum(), np.logical_or(s["mask"] > 0, want).sum()
    assert inter / union > 0.9  # Pillow also fills the pixels the edges pass through; pycocotools does not
    # the masked pixels are the object's colour in the image
    colour = s["image"][s["mask"] > 0].mean(axis=0)
    assert np.abs(colour - np.array([245, 140, 30])).max() < 25


def test_pillow_rasteriser_matches_pycocotools(monkeypatch):
    pytest.importorskip("pycocotools", reason="pycocotools is not installed")
    seg = [[3.5, 2.0, 40.2, 5.1, 30.0, 33.3, 6.0, 25.0], [45, 36, 62, 36, 62, 58]]
    coco = polygons_to_mask(seg, 60, 64) > 0
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # import now fails -> Pillow
    pil = polygons_to_mask(seg, 60, 64) > 0
    assert coco.shape == pil.shape == (60, 64)
    # the same interior; they differ on pixels along the edges (Pillow fills more of them), which
    # is a few per cent of a small object's area
    assert np.logical_and(coco, pil).sum() / np.logical_or(coco, pil).sum() > 0.9
    edge = np.logical_xor(coco, pil)
    assert edge.sum() < 0.15 * coco.sum()


def test_training_mode_draws_one_sentence_per_object_per_epoch(refer_root):
    train = ReferDataset(refer_root, "refcoco", "train", train=True, seed=3)
    assert len(train) == 2  # objects, not sentences
    drawn = set()
    for epoch in range(12):
        train.set_epoch(epoch)
        first = train[0]["expression"]
        assert first == train[0]["expression"], "the draw is fixed within an epoch"
        drawn.add(first)
    assert drawn == {"the red box on the left", "red thing"}
    assert train.words() == sorted({"the", "red", "box", "on", "left", "thing", "blue", "triangle", "right"})


def test_evaluation_unletterboxes_and_pools_by_split(refer_root):
    val = ReferDataset(refer_root, "refcoco", "val")
    tok = _tokenizer()

    def everything(images, tokens):  # mask = the whole image
        return np.full((len(images), 1, 32, 32), 10.0, np.float32)

    m = evaluate_refer(everything, val, tokenizer=tok, image_size=64, batch_size=2)["refcoco/val"]
    areas = [int(val[i]["mask"].sum()) for i in range(len(val))]
    assert m["n"] == 3
    assert m["oIoU"] == pytest.approx(100 * sum(areas) / (3 * 64 * 64), abs=1e-6)
    assert m["mIoU"] == pytest.approx(100 * np.mean([a / (64 * 64) for a in areas]), abs=1e-6)

    rows = [val[i] for i in range(len(val))]
    calls = {"i": 0}

    def oracle(images, tokens):  # the letterboxed ground truth as logits
        out = []
        for _ in images:
            r = rows[calls["i"]]
            calls["i"] += 1
            _, box = letterbox_image(Image.fromarray(r["image"]), 64)
            out.append(letterbox_mask(r["mask"], box, 32)[None] * 20 - 10)
        return np.stack(out)

    m = evaluate_refer(oracle, val, tokenizer=tok, image_size=64, batch_size=2)["refcoco/val"]
    assert m["oIoU"] > 85 and m["Prec@0.5"] == 100.0


def _tokenizer():
    from export.vlt.tokenizer import PAD, UNK, Tokenizer

    return Tokenizer([PAD, UNK, "the", "green"], 15)


def _train_args(refer_root: Path, out: Path, glove: Path, *extra: str) -> argparse.Namespace:
    from export.train_refer import get_args_parser

    return get_args_parser().parse_args([
        "--refer-root", str(refer_root), "--dataset", "refcoco", "--preset", "tiny", "--image-size", "64",
        "--glove", str(glove), "--vocab-top-n", "5", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--threads", "1",
        "--eval-limit", "2", "--log-every", "1", "--out", str(out), *extra,
    ])


@pytest.fixture
def restore_threads():
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # the scripts under test set it to 1 (--threads 1)


def test_train_refer_steps_resumes_and_evaluates(refer_root, tmp_path, restore_threads):
    import torch

    from export import evaluate_refer
    from export.train_refer import lr_for_epoch, main

    assert [lr_for_epoch(e, base_lr=1e-3, steps=[40, 45, 50]) for e in (0, 39, 40, 44, 45, 49)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])
    glove = write_glove(tmp_path / "glove.txt")
    torch.manual_seed(0)
    ckpt_path = main(_train_args(refer_root, tmp_path / "run", glove, "--max-steps", "1"))
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    assert ckpt["step"] == 1 and ckpt["epoch"] == 0 and ckpt["batches_done"] == 1
    assert ckpt["config"]["max_words"] == 15 and ckpt["config"]["image_size"] == 64
    assert {"the", "triangle"} <= set(ckpt["vocab"])  # training words are in the vocabulary
    before = ckpt["model"]["qbm.confidence.weight"].clone()
    # resume: the second epoch-less step, then the end of epoch 0 (1 batch of 2 objects) + evaluation
    main(_train_args(refer_root, tmp_path / "run", glove, "--resume", "--epochs", "2", "--max-steps", "2"))
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    assert ckpt["step"] == 2 and ckpt["epoch"] == 1
    assert not torch.equal(before, ckpt["model"]["qbm.confidence.weight"])
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("eval" in row and "refcoco/val" in row["eval"] for row in log)
    # the evaluation CLI on the checkpoint, every standard split
    parser = argparse.ArgumentParser(parents=[evaluate_refer.get_args_parser()])
    metrics = evaluate_refer.main(parser.parse_args([
        "--checkpoint", str(ckpt_path), "--refer-root", str(refer_root), "--dataset", "refcoco",
        "--splits", "val", "testA", "testB", "--device", "cpu", "--threads", "1", "--json", str(tmp_path / "m.json")]))
    assert {"overall", "refcoco/val", "refcoco/testA", "refcoco/testB"} == set(metrics)
    assert metrics["overall"]["n"] == 6
    assert json.loads((tmp_path / "m.json").read_text())["refcoco/testB"]["n"] == 2
