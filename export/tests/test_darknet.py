"""The darknet .weights loader on generated files of the darknet layout, and the frozen backbone in
RefCOCO training."""

import json

import numpy as np
import pytest
import torch

from export.darknet import backbone_convs, darknet_float_count, freeze_pretrained, load_darknet_weights, read_darknet
from export.tests.conftest import micro_config
from export.vlt import get_config
from export.vlt.backbone import Backbone, build_backbone


def _conv_shapes(cfg):
    """(out, in, k) of yolov3.cfg's convs for this width: the Darknet-53 body, then the six head
    convs; written from the cfg (stem 3x3; per stage a stride-2 3x3, then per residual block a
    1x1 to half the channels and a 3x3 back)."""
    w = cfg.backbone_width
    body, c = [(w, 3, 3)], w
    for k, depth in enumerate(cfg.backbone_depths):
        nf = w * 2 ** (k + 1)
        body.append((nf, c, 3))
        for _ in range(depth):
            body += [(nf // 2, nf, 1), (nf, nf // 2, 3)]
        c = nf
    head = [(c // 2, c, 1), (c, c // 2, 3)] * 3
    return body, head


def write_darknet(path, convs, *, major=0, minor=2, extra_floats=0, seed=0):
    """Header (int32 major, minor, revision; int64 seen when major*10+minor >= 2, else int32), then
    per conv with batch norm: beta, gamma, mean, var, weights (out x in x k x k). Returns the values
    per conv as a dict of arrays."""
    rng = np.random.default_rng(seed)
    parts, values = [], []
    for out_c, in_c, k in convs:
        v = {"beta": rng.standard_normal(out_c), "gamma": rng.standard_normal(out_c),
             "mean": rng.standard_normal(out_c), "var": rng.uniform(0.5, 2.0, out_c),
             "weight": rng.standard_normal((out_c, in_c, k, k))}
        values.append(v)
        parts += [v["beta"], v["gamma"], v["mean"], v["var"], v["weight"].ravel()]
    parts.append(rng.standard_normal(extra_floats))
    header = np.array([major, minor, 5], "<i4").tobytes()
    header += np.array([32013312], "<i8" if major * 10 + minor >= 2 else "<i4").tobytes()
    path.write_bytes(header + np.concatenate(parts).astype("<f4").tobytes())
    return values


def _check(cbl, v):
    conv, bn = cbl[0], cbl[1]
    np.testing.assert_allclose(conv.weight.detach().numpy(), v["weight"].astype(np.float32))
    np.testing.assert_allclose(bn.bias.detach().numpy(), v["beta"].astype(np.float32))
    np.testing.assert_allclose(bn.weight.detach().numpy(), v["gamma"].astype(np.float32))
    np.testing.assert_allclose(bn.running_mean.numpy(), v["mean"].astype(np.float32))
    np.testing.assert_allclose(bn.running_var.numpy(), v["var"].astype(np.float32))


def test_paper_backbone_matches_the_published_darknet53_file_size():
    """darknet53.conv.74 (the first 52 convs of yolov3.cfg) is 162,482,580 bytes: a 20-byte header
    and 40,620,640 floats, exactly what the paper backbone's body takes."""
    backbone = Backbone()  # the paper preset's widths
    body, head = backbone_convs(backbone)
    assert len(body) == 52 and len(head) == 6
    assert darknet_float_count(backbone) * 4 + 20 == 162_482_580


def test_yolov3_layout_loads_body_and_head_in_order(tmp_path):
    cfg = micro_config()
    body_shapes, head_shapes = _conv_shapes(cfg)
    values = write_darknet(tmp_path / "yolov3.weights", body_shapes + head_shapes, extra_floats=1000)
    backbone = build_backbone(cfg)
    report = load_darknet_weights(backbone, tmp_path / "yolov3.weights")
    assert report["header"]["seen"] == 32013312 and report["header"]["header_bytes"] == 20
    assert (report["body_convs"], report["head_convs"], report["floats_left"]) == (len(body_shapes), 6, 1000)
    body, head = backbone_convs(backbone)
    for (_, cbl), v in zip(body + head, values):
        _check(cbl, v)
    assert report["loaded"][0] == "stem" and report["loaded"][-1] == "head.5"


def test_body_only_file_and_old_header(tmp_path):
    cfg = micro_config()
    body_shapes, _ = _conv_shapes(cfg)
    values = write_darknet(tmp_path / "darknet53.conv.74", body_shapes, major=0, minor=1)
    assert read_darknet(tmp_path / "darknet53.conv.74")[0]["header_bytes"] == 16  # int32 seen
    backbone = build_backbone(cfg)
    head_before = backbone.head[0][0].weight.detach().clone()
    report = load_darknet_weights(backbone, tmp_path / "darknet53.conv.74")
    assert report["head_convs"] == 0 and report["floats_left"] == 0
    for (_, cbl), v in zip(backbone_convs(backbone)[0], values):
        _check(cbl, v)
    assert torch.equal(backbone.head[0][0].weight, head_before)
    with pytest.raises(ValueError, match="ends inside head.0"):
        load_darknet_weights(backbone, tmp_path / "darknet53.conv.74", head="yes")
    (tmp_path / "short.weights").write_bytes((tmp_path / "darknet53.conv.74").read_bytes()[:-40])
    with pytest.raises(ValueError, match="ends inside stages.4"):
        load_darknet_weights(backbone, tmp_path / "short.weights")


def test_freeze_keeps_body_and_first_four_head_convs():
    backbone = build_backbone(micro_config())
    frozen = freeze_pretrained(backbone, head_convs=4)
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(not p.requires_grad for p in backbone.stem.parameters())
    assert [all(not p.requires_grad for p in m.parameters()) for m in backbone.head] == [True] * 4 + [False] * 2


def test_train_refer_with_darknet_keeps_the_pretrained_weights(tmp_path):
    from export.tests.test_refer import _train_args, write_glove, write_refer_fixture
    from export.train_refer import main

    threads = torch.get_num_threads()
    root = write_refer_fixture(tmp_path / "refer")
    cfg = get_config("tiny", image_size=64)
    body_shapes, head_shapes = _conv_shapes(cfg)
    values = write_darknet(tmp_path / "yolov3.weights", body_shapes + head_shapes, extra_floats=255 * 1025)
    try:
        path = main(_train_args(root, tmp_path / "run", write_glove(tmp_path / "glove.txt"),
                                "--darknet", str(tmp_path / "yolov3.weights"), "--max-steps", "2",
                                "--eval-split", ""))
    finally:
        torch.set_num_threads(threads)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt["model"]
    assert ckpt["darknet"]["body_convs"] == len(body_shapes) and ckpt["darknet"]["head_convs"] == 6
    stem, last_body = values[0], values[len(body_shapes) - 1]
    np.testing.assert_allclose(state["backbone.stem.0.weight"].numpy(), stem["weight"].astype(np.float32))
    # frozen BatchNorm statistics stay the pretrained ones (eval mode while training)
    np.testing.assert_allclose(state["backbone.stem.1.running_mean"].numpy(), stem["mean"].astype(np.float32))
    np.testing.assert_allclose(state["backbone.stages.4.1.conv2.1.running_var"].numpy(),
                               last_body["var"].astype(np.float32))
    head3, head4 = values[len(body_shapes) + 3], values[len(body_shapes) + 4]
    np.testing.assert_allclose(state["backbone.head.3.0.weight"].numpy(), head3["weight"].astype(np.float32))
    assert not np.allclose(state["backbone.head.4.0.weight"].numpy(), head4["weight"].astype(np.float32)), \
        "the fifth head conv is trained"
    assert json.dumps(ckpt["darknet"])  # recorded in the checkpoint
