"""ONNX export + onnxruntime parity on a small model, and the training entry point (incl. resume)."""

import argparse
import json

import numpy as np
import pytest
import torch

from export.engine import save_checkpoint
from export.tests.conftest import micro_config
from export.vlt import build_vlt
from export.vlt.tokenizer import PAD, UNK

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


def export_micro(tmp, graphs="split", threshold=0.35, **config):
    """Export a random micro model (checkpoint -> model folder, parity-checked by the export)."""
    from export.data.refshapes import WORDS
    from export.export_onnx import run_export

    vocab = [PAD, UNK] + list(WORDS)
    cfg = micro_config(vocab_size=len(vocab), max_words=15, image_size=96, **config)
    torch.manual_seed(0)
    model = build_vlt(cfg)
    model.language_encoder.embedding.load_vectors(torch.randn(len(vocab), cfg.word_dim))
    save_checkpoint(tmp / "ckpt.pt", model=model.state_dict(), model_ema=None, config=cfg.to_dict(), vocab=vocab,
                    vocab_info={"source": "random (test)"}, step=0, args={"preset": "micro"})
    out = tmp / "model"
    manifest = run_export(checkpoint=tmp / "ckpt.pt", out=out, name="test-model", version="0.0.0", graphs=graphs,
                          threshold=threshold)
    return out, manifest, model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """--graphs all: model.onnx and the split pair."""
    return export_micro(tmp_path_factory.mktemp("export"), graphs="all")


@pytest.fixture(scope="module")
def exported_split(tmp_path_factory):
    """The default: only the split pair the service loads."""
    return export_micro(tmp_path_factory.mktemp("export-split"))


def test_split_only_export_lists_and_writes_no_model_onnx(exported_split):
    out, manifest, model = exported_split
    from export.export_onnx import check_parity, sha256
    from export.model_session import ModelSession

    assert not (out / "model.onnx").exists()
    m = json.loads((out / "model.json").read_text())
    assert "onnx" not in m
    for entry in m["split"].values():
        assert entry["sha256"] == sha256(out / entry["file"])
    report = check_parity(model.eval(), out, batch_sizes=(2,), seed=3)
    assert set(report) == {f"split_{n}@b2" for n in ("mask_logits", "query_confidence", "word_attention")}
    golden = json.loads((out / "golden.json").read_text())
    x = np.fromfile(out / golden["input"]["file"], dtype="<f4").reshape(golden["input"]["shape"])
    logits, *_ = ModelSession(out).run(None, {"image": x, "tokens": np.asarray([golden["tokens"]], dtype=np.int64)})
    ref = np.fromfile(out / golden["outputs"]["mask_logits"]["file"], dtype="<f4").reshape(logits.shape)
    assert np.abs(logits - ref).max() < 1e-4
    with pytest.raises(ValueError, match="lists no model.onnx"):
        ModelSession(out, layout="model")


def test_split_only_reexport_removes_a_previous_model_onnx(tmp_path):
    out, _, _ = export_micro(tmp_path, graphs="all")
    assert (out / "model.onnx").exists()
    out, manifest, _ = export_micro(tmp_path)
    assert not (out / "model.onnx").exists() and "onnx" not in manifest


def test_export_records_a_calibrated_threshold_and_its_golden_mask(tmp_path):
    from PIL import Image

    from export.preprocess import Letterbox, binary_mask

    def golden_of(out):
        golden = json.loads((out / "golden.json").read_text())
        logits = np.fromfile(out / golden["outputs"]["mask_logits"]["file"], dtype="<f4").reshape(
            golden["outputs"]["mask_logits"]["shape"])
        return golden, logits

    # a threshold inside the golden case's own probabilities (a random model's sit in a narrow band),
    # so that the mask at it differs from the mask at 0.35
    for d in ("default", "calibrated"):
        (tmp_path / d).mkdir()
    _, logits = golden_of(export_micro(tmp_path / "default")[0])
    threshold = float(np.median(1 / (1 + np.exp(-logits))))
    out, _, _ = export_micro(tmp_path / "calibrated", threshold=threshold)
    m = json.loads((out / "model.json").read_text())
    golden, logits = golden_of(out)
    assert m["output"]["threshold"] == threshold and golden["mask"]["threshold"] == threshold
    lb = golden["letterbox"]
    box = Letterbox(scale=lb["scale"], nw=lb["nw"], nh=lb["nh"], dx=lb["dx"], dy=lb["dy"],
                    width=golden["mask"]["width"], height=golden["mask"]["height"], size=m["input"]["size"])
    mask = np.asarray(Image.open(out / golden["mask"]["file"])) > 127
    assert (mask == binary_mask(logits[0, 0], box, threshold)).all() and mask.sum() == golden["mask"]["area"]
    assert (mask != binary_mask(logits[0, 0], box, 0.35)).any(), "the case must tell the two thresholds apart"


def test_export_writes_the_contract(exported):
    out, manifest, _ = exported
    for f in ["model.onnx", "image_encoder.onnx", "head.onnx", "model.json", "vocab.txt", "golden.json",
              "golden.png", "golden_input.f32", "golden_mask_logits.f32", "golden_mask.png"]:
        assert (out / f).exists(), f
    m = json.loads((out / "model.json").read_text())
    assert m["onnx"]["inputs"] == ["image", "tokens"]
    assert m["onnx"]["outputs"] == ["mask_logits", "query_confidence", "word_attention"]
    assert m["input"]["size"] == 96 and m["output"]["threshold"] == 0.35 and m["max_words"] == 15
    from export.export_onnx import sha256

    assert m["onnx"]["sha256"] == sha256(out / "model.onnx")
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image", "tokens"]
    assert sess.get_inputs()[1].type == "tensor(int64)"
    assert isinstance(sess.get_inputs()[0].shape[0], str), "batch must be a dynamic axis"


def test_onnxruntime_matches_pytorch_on_two_batch_sizes(exported):
    out, _, model = exported
    from export.export_onnx import check_parity

    report = check_parity(model.eval(), out, batch_sizes=(1, 4), seed=1)
    assert max(report.values()) <= 1e-4, report
    assert "mask_logits@b4" in report and "split_mask_logits@b4" in report, "both layouts checked"


def test_golden_case_reproduces(exported):
    out, _, _ = exported
    golden = json.loads((out / "golden.json").read_text())
    x = np.fromfile(out / golden["input"]["file"], dtype="<f4").reshape(golden["input"]["shape"])
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, conf, attn = sess.run(None, {"image": x, "tokens": np.asarray([golden["tokens"]], dtype=np.int64)})
    ref = np.fromfile(out / golden["outputs"]["mask_logits"]["file"], dtype="<f4").reshape(logits.shape)
    assert np.abs(logits - ref).max() < 1e-4
    assert np.abs(conf - np.asarray(golden["outputs"]["query_confidence"]["data"])).max() < 1e-5


def test_parity_check_fails_loudly_on_a_mismatch(exported):
    out, _, model = exported
    from export.export_onnx import check_parity

    broken = build_vlt(micro_config(vocab_size=model.language_encoder.embedding.table.shape[0], max_words=15,
                                    image_size=96)).eval()
    with pytest.raises(AssertionError, match="ONNX parity failed"):
        check_parity(broken, out)


def test_training_runs_checkpoints_and_resumes(tmp_path):
    from export.train import get_args_parser, main

    parser = argparse.ArgumentParser(parents=[get_args_parser()])
    common = ["--preset", "tiny", "--image-size", "64", "--out", str(tmp_path), "--batch-size", "2",
              "--steps", "4", "--log-every", "1", "--eval-every", "3", "--monitor-size", "4", "--workers", "0",
              "--vocab-top-n", "100"]
    # --stop-at ends a sitting early without changing the schedule; --set overrides the preset
    main(parser.parse_args(common + ["--warmup", "0", "--stop-at", "2", "--set", "qgm_input_proj=true"]))
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 2 and ckpt["config"]["qgm_input_proj"] is True
    main(parser.parse_args(common + ["--warmup", "0", "--resume", "--max-minutes", "0"]))
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 4 and set(ckpt) >= {"model", "model_ema", "optimizer", "step", "config", "vocab"}
    lrs = [row["lr"] for row in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines()) if "lr" in row]
    assert lrs == sorted(lrs, reverse=True) and len(set(lrs)) == 4  # one cosine over the 4 steps, not restarted at 2
    main(parser.parse_args(common[:-8] + ["--steps", "6", "--resume", "--log-every", "1", "--eval-every", "100",
                                          "--monitor-size", "4", "--workers", "0", "--vocab-top-n", "100"]))
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 6
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert any("monitor" in row for row in log) and log[-1]["step"] == 6


def test_objects_option_sets_the_scene_sizes_of_the_stream():
    from export.data.refshapes import iter_scenes
    from export.train import get_args_parser, training_stream

    parser = argparse.ArgumentParser(parents=[get_args_parser()])
    standard = training_stream(parser.parse_args(["--objects", "3", "7"]))
    mixed = training_stream(parser.parse_args([]))  # the shipped recipe mixes in the hard variant
    assert (standard.config.min_objects, standard.config.max_objects) == (3, 7)
    rng = np.random.default_rng(0)
    counts = [len(scene.objects) for scene, _ in zip(iter_scenes(rng, mixed.config), range(200))]
    assert min(counts) == 3 and max(counts) == 10
    assert 0.25 < np.mean([c >= 8 for c in counts]) < 0.5  # 3 of 8 sizes are the hard variant's


def test_average_checkpoints_is_the_mean_of_both_weight_sets_and_loads(tmp_path):
    from export.engine import load_checkpoint
    from export.tools.average_checkpoints import average_checkpoints

    cfg = micro_config()
    vocab = [PAD, UNK] + [f"w{i}" for i in range(cfg.vocab_size - 2)]
    models, paths = [], []
    for seed, (step, minutes) in enumerate([(100, 30.0), (140, 42.0)]):
        torch.manual_seed(seed)
        m, e = build_vlt(cfg), build_vlt(cfg)
        models.append((m, e))
        paths.append(tmp_path / f"{seed}.pt")
        save_checkpoint(paths[-1], model=m.state_dict(), model_ema=e.state_dict(), step=step, ema_updates=step,
                        elapsed=minutes * 60, config=cfg.to_dict(), vocab=vocab, vocab_info={}, args={"seed": str(seed)})
    soup = average_checkpoints(paths, shared_minutes=20.0)
    for key, which in (("model", 0), ("model_ema", 1)):
        for name, a in models[0][which].state_dict().items():
            b = models[1][which].state_dict()[name]
            if a.is_floating_point():
                assert torch.allclose(soup[key][name], (a + b) / 2), name
            else:
                assert torch.equal(soup[key][name], b), name
    assert soup["step"] == 140 and soup["elapsed"] == (30 + 42 - 20) * 60 and soup["optimizer"] is None
    assert [s["step"] for s in soup["averaged_from"]] == [100, 140]
    save_checkpoint(tmp_path / "soup.pt", **soup)
    for ema in (True, False):
        loaded, _ = load_checkpoint(tmp_path / "soup.pt", ema=ema)
        want = soup["model_ema" if ema else "model"]
        assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())
    # the mean of a checkpoint with itself is that checkpoint
    same = average_checkpoints([paths[0], paths[0]])
    assert all(torch.equal(v, models[0][0].state_dict()[k]) for k, v in same["model"].items())
    # rows of different vocabularies must not be mixed
    torch.save({**torch.load(paths[1], weights_only=False), "vocab": vocab[::-1]}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="vocabulary"):
        average_checkpoints([paths[0], tmp_path / "other.pt"])
