"""The client against a running service (VLT_URL), and each format read by an independent reader.

Run by test/client/live.test.ts, which starts the service with the default model and sets
VLT_URL, VLT_VAL_DIR (RefShapes validation images) and VLT_REQUIRE_LIVE=1. Without VLT_URL these
tests are skipped, unless VLT_REQUIRE_LIVE is set.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from vlt_segmentation_client import Client, SegmentationError, decode_png

URL = os.environ.get("VLT_URL")
if not URL:
    if os.environ.get("VLT_REQUIRE_LIVE"):
        raise RuntimeError("VLT_REQUIRE_LIVE is set but VLT_URL is not")
    pytest.skip("no service (VLT_URL unset)", allow_module_level=True)

mask_utils = pytest.importorskip("pycocotools.mask")
VAL = Path(os.environ.get("VLT_VAL_DIR", Path(__file__).resolve().parents[3] / "../shared/refshapes/val"))
N = int(os.environ.get("VLT_LIVE_CASES", "8"))


def cases():
    with open(VAL / "annotations.jsonl") as f:
        for line, _ in zip(f, range(N)):
            a = json.loads(line)
            yield VAL / a["image"], a["expression"]


def iou(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else np.logical_and(a, b).sum() / u


def pycocotools_polygons(parts, h, w):
    """Outer rings minus their holes, each ring rasterised by pycocotools."""
    out = np.zeros((h, w), bool)
    for p in parts:
        outer = mask_utils.decode(mask_utils.frPyObjects([p["outer"]], h, w))[:, :, 0] > 0
        holes = np.zeros((h, w), bool)
        for ring in p["holes"]:
            holes |= mask_utils.decode(mask_utils.frPyObjects([ring], h, w))[:, :, 0] > 0
        out |= outer & ~holes
    return out


@pytest.fixture(scope="module")
def client():
    return Client(URL, timeout=60)


@pytest.mark.parametrize("image,expression", list(cases()))
def test_each_format_carries_the_png_mask(client, image, expression):
    answers = {f: client.segment_json(image, expression, format=f) for f in ("png", "coco_rle", "polygon")}
    h, w = answers["png"]["image"]["height"], answers["png"]["image"]["width"]
    png = decode_png(answers["png"]["results"][0]["mask"]["png"])
    assert png.shape == (h, w)
    for f, a in answers.items():
        assert a["format"] == f and a["results"][0]["bbox_format"] == "xywh"
        assert a["results"][0]["bbox"] == answers["png"]["results"][0]["bbox"]

    rle = answers["coco_rle"]["results"][0]["mask"]["coco_rle"]
    assert rle["size"] == [h, w]
    by_pycocotools = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}) > 0
    assert (by_pycocotools == png).all(), "RLE decoded by pycocotools is the PNG mask"

    parts = answers["polygon"]["results"][0]["mask"]["polygon"]
    assert iou(pycocotools_polygons(parts, h, w), png) >= 0.98, "polygons rasterised by pycocotools"

    # The client's own decoders give the same masks.
    for f in ("png", "coco_rle", "polygon"):
        mask = client.segment(image, expression, format=f)[0].mask
        if f == "polygon":
            assert iou(mask, png) >= 0.98
        else:
            assert (mask == png).all()


def test_several_expressions_in_order(client):
    (image, e1), (_, e2) = list(cases())[:2]
    results = client.segment(image, [e1, "the small star"], format="coco_rle")
    assert [r.expression for r in results] == [e1, "the small star"]


def test_service_errors_carry_the_code(client, tmp_path):
    bad = tmp_path / "not-an-image.jpg"
    bad.write_bytes(b"this is text")
    with pytest.raises(SegmentationError) as e:
        client.segment(bad, "the red circle")
    assert (e.value.status, e.value.code) == (415, "SEG_ERR_NOT_AN_IMAGE")
    image, _ = next(cases())
    with pytest.raises(SegmentationError) as e:
        client.segment(image, "qwertyuiop zxcvbnm")
    assert (e.value.status, e.value.code) == (422, "SEG_ERR_NO_KNOWN_WORDS")
