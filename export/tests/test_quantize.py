"""export/quantize.py on a micro export: the INT8 folder of either layout (split only, or with
model.onnx), its own verified golden case, graphs kept in float on request, and the recorded
paired comparison with the float model on a small generated set."""

import json

import numpy as np
import pytest

from export.tests.test_export_train import export_micro

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
onnx = pytest.importorskip("onnx", reason="onnx is not installed")


def quantized_ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node} & {"QuantizeLinear", "DequantizeLinear", "QLinearConv",
                                                                   "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def golden_reproduces(folder):
    from export.model_session import ModelSession

    golden = json.loads((folder / "golden.json").read_text())
    x = np.fromfile(folder / golden["input"]["file"], dtype="<f4").reshape(golden["input"]["shape"])
    logits, *_ = ModelSession(folder).run(None, {"image": x, "tokens": np.asarray([golden["tokens"]], dtype=np.int64)})
    ref = np.fromfile(folder / golden["outputs"]["mask_logits"]["file"], dtype="<f4").reshape(logits.shape)
    return float(np.abs(logits - ref).max())


@pytest.fixture(scope="module")
def split_model(tmp_path_factory):
    return export_micro(tmp_path_factory.mktemp("q-split"))[0]


def test_split_only_folder_quantizes_both_graphs_and_scores_against_float(split_model, tmp_path):
    from export.data.refshapes import write_set
    from export.export_onnx import sha256
    from export.quantize import quantize_folder, score_against_float

    out = tmp_path / "int8"
    manifest = quantize_folder(split_model, out, samples=4)
    assert "onnx" not in manifest and not (out / "model.onnx").exists()
    assert manifest["name"] == "test-model-int8" and manifest["version"] == "0.0.0" and manifest["quantization"]["graphs"] == ["head", "image_encoder"]
    assert manifest["quantization"]["from"] == {"name": "test-model", "version": "0.0.0"}
    for entry in manifest["split"].values():
        assert entry["sha256"] == sha256(out / entry["file"])
        assert "QuantizeLinear" in quantized_ops(out / entry["file"]), entry["file"]
    assert golden_reproduces(out) < 1e-4

    data = tmp_path / "set"
    write_set(data, seed=5, num_expressions=6)
    acc = score_against_float(split_model, out, data, "tiny-set")
    written = json.loads((out / "model.json").read_text())
    assert written["quantization"]["accuracy"] == acc
    assert acc["n"] == 6 and acc["set"] == "tiny-set"
    assert acc["delta"] == pytest.approx(acc["mIoU int8"] - acc["mIoU float"])
    assert written["metrics"]["tiny-set"]["overall"]["mIoU"] == pytest.approx(acc["mIoU int8"])


def test_backbone_only_keeps_the_head_in_float_and_a_missing_graph_is_refused(split_model, tmp_path):
    from export.quantize import quantize_folder

    out = tmp_path / "int8-backbone"
    manifest = quantize_folder(split_model, out, graphs=["image_encoder"], samples=4)
    assert manifest["quantization"]["graphs"] == ["image_encoder"]
    assert (out / "head.onnx").read_bytes() == (split_model / "head.onnx").read_bytes()
    assert quantized_ops(out / "image_encoder.onnx")
    with pytest.raises(ValueError, match="lists no model graph"):
        quantize_folder(split_model, tmp_path / "none", graphs=["model"], samples=2)


def test_folder_with_model_onnx_ships_the_split_pair_unless_all_is_asked(tmp_path):
    from export.quantize import quantize_folder

    folder = export_micro(tmp_path, graphs="all")[0]
    split = tmp_path / "int8-split"
    (split).mkdir()
    (split / "model.onnx").write_bytes(b"a previous run's")
    manifest = quantize_folder(folder, split, samples=4)
    assert "onnx" not in manifest and not (split / "model.onnx").exists()
    assert manifest["quantization"]["graphs"] == ["head", "image_encoder"]
    assert golden_reproduces(split) < 1e-4
    with pytest.raises(ValueError, match="lists no model graph"):
        quantize_folder(folder, tmp_path / "none", graphs=["model"], samples=2)

    manifest = quantize_folder(folder, tmp_path / "int8", fmt="qoperator", samples=4, graph_set="all")
    assert manifest["quantization"]["graphs"] == ["head", "image_encoder", "model"]
    assert quantized_ops(tmp_path / "int8" / "model.onnx") - {"QuantizeLinear", "DequantizeLinear"}, "operator-oriented ops"
    assert golden_reproduces(tmp_path / "int8") < 1e-4
