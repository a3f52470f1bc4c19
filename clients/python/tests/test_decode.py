"""The client's decoders against pycocotools (an independent reader and writer of the same formats)."""
import numpy as np
import pytest

from vlt_segmentation_client import decode_coco_rle, rasterise_polygons

mask_utils = pytest.importorskip("pycocotools.mask")


def random_masks(n, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        h, w = rng.integers(1, 60, size=2)
        yield rng.random((h, w)) < rng.random()


def test_rle_decoder_reads_what_pycocotools_writes():
    for m in random_masks(200):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        rle = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        assert (decode_coco_rle(rle) == m).all()


def test_rle_decoder_takes_uncompressed_runs():
    # 3 wide, 2 high; column-major runs: 2 off, 1 on, 1 off, 2 on.
    m = decode_coco_rle({"size": [2, 3], "counts": [2, 1, 1, 2]})
    assert m.tolist() == [[False, True, True], [False, False, True]]


def test_rle_decoder_rejects_wrong_size():
    with pytest.raises(ValueError):
        decode_coco_rle({"size": [2, 3], "counts": [2, 1]})


def test_polygon_rasteriser_agrees_with_pycocotools_on_pixel_corner_rings():
    rng = np.random.default_rng(1)
    for _ in range(100):
        h, w = rng.integers(4, 50, size=2)
        x0, x1 = sorted(rng.integers(0, w + 1, size=2))
        y0, y1 = sorted(rng.integers(0, h + 1, size=2))
        if x0 == x1 or y0 == y1:
            continue
        # An L-shaped ring: the rectangle minus its bottom-right quarter.
        xm, ym = (x0 + x1 + 1) // 2, (y0 + y1 + 1) // 2
        ring = [x0, y0, x1, y0, x1, ym, xm, ym, xm, y1, x0, y1]
        ref = mask_utils.decode(mask_utils.frPyObjects([ring], int(h), int(w)))[:, :, 0] > 0
        assert (rasterise_polygons([{"outer": ring, "holes": []}], h, w) == ref).all()


def test_polygon_hole_and_island():
    parts = [
        {"outer": [0, 0, 6, 0, 6, 6, 0, 6], "holes": [[1, 1, 1, 5, 5, 5, 5, 1]]},
        {"outer": [2, 2, 4, 2, 4, 4, 2, 4], "holes": []},
    ]
    m = rasterise_polygons(parts, 6, 6)
    want = np.ones((6, 6), bool)
    want[1:5, 1:5] = False
    want[2:4, 2:4] = True
    assert (m == want).all()
