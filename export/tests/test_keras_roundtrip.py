"""export/convert_keras.py proven against Keras itself (needs export/requirements-keras.txt; skipped
without it).

A Keras 2 build of the released VLT graph (export/tools/keras_vlt.py) at reduced widths that keep
every layer gets random weights and is saved with ``save_weights``; the .h5 is converted, exported
to ONNX, and every component is compared with Keras' own forward pass at batch sizes 1 and 3 and
sentence lengths L = 15 and 20 (export/tools/keras_roundtrip.py; the ``paper`` widths are the
documented command ``python -m export.tools.keras_roundtrip --width paper``).
"""

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

_MISSING = [m for m in ("tensorflow", "tf_keras", "keras_transformer") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"Keras reference not installed ({', '.join(_MISSING)}): "
                                                        "pip install -r export/requirements-keras.txt")
REPO = Path(__file__).resolve().parents[2]


def _keras_tool(*args: str) -> subprocess.CompletedProcess:
    """TensorFlow runs in its own process: loaded into the test process, it makes the later import
    of triton (by torch.optim) abort the whole suite."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "export.tools.keras_roundtrip", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)


COMPONENTS = ["fv0", "fv1", "fv2", "words", "sentence", "fm", "fmq", "f_tf", "visual_queries", "attention_q",
              "attention_k", "attention_v", "queries", "memory", "responses", "confidence", "balanced", "maps",
              "mask_logits", "word_attention"]
FROM_ONNX = ["fv0", "fv1", "fv2", "mask_logits", "confidence", "word_attention"]


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory):
    out = tmp_path_factory.mktemp("keras-roundtrip")
    run = _keras_tool("--width", "reduced", "--out", str(out), "--batch-sizes", "1", "3", "--lengths", "15", "20")
    result_file = out / "reduced" / "roundtrip.json"
    assert result_file.exists(), f"the round trip did not finish (exit {run.returncode}):\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
    return out / "reduced", json.loads(result_file.read_text())


def test_converted_and_exported_model_matches_keras_at_every_component(roundtrip):
    from export.tools.keras_roundtrip import TOLERANCE, format_table

    _, result = roundtrip
    rows = result["rows"]
    cases = {(r["L"], r["batch"]) for r in rows}
    assert cases == {(15, 1), (15, 3), (20, 1), (20, 3)}
    for case in cases:
        here = [r for r in rows if (r["L"], r["batch"]) == case]
        assert sorted({r["component"] for r in here if r["source"] == "torch"}) == sorted(COMPONENTS)
        assert sorted({r["component"] for r in here if r["source"] == "onnx"}) == sorted(FROM_ONNX)
    over = [r for r in rows if not r["rel"] <= TOLERANCE]
    assert not over, f"over {TOLERANCE} (max |x - x_keras| / max |x_keras|):\n{format_table(result)}"


def test_parameter_count_equals_keras_count_params(roundtrip):
    """run_roundtrip raises on a mismatch; the count is also Darknet-53-deep, so not a small model."""
    _, result = roundtrip
    assert result["parameters"] > 1_000_000


def _worst(model, reference) -> dict:
    from export.tools.keras_roundtrip import _rel, torch_components

    got = torch_components(model, torch.from_numpy(reference["image"]), torch.from_numpy(reference["tokens"]))
    return {k: _rel(got[k], reference[k]) for k in got}


def test_the_comparison_catches_wrong_semantics(roundtrip):
    """The same comparison on deliberately wrong variants of the converted model fails: Keras <= 2.2's
    hard_sigmoid GRU gates, an unreversed backward GRU, swapped QBM inputs, a non-causal decoder."""
    from export.engine import load_checkpoint
    from export.tools.keras_roundtrip import TOLERANCE

    out, _ = roundtrip
    model, _ = load_checkpoint(out / "L15" / "checkpoint.pt", ema=False)
    reference = dict(np.load(out / "L15" / "keras_b3.npz"))
    assert max(_worst(model, reference).values()) <= TOLERANCE

    hard = copy.deepcopy(model)
    for cell in (hard.language_encoder.forward_gru, hard.language_encoder.backward_gru):
        cell.recurrent_activation = "hard_sigmoid"
    assert _worst(hard, reference)["words"] > 100 * TOLERANCE

    unreversed = copy.deepcopy(model)
    cell = unreversed.language_encoder.backward_gru
    cell.forward = lambda x, reverse=False, h0=None: type(cell).forward(cell, x, reverse=False, h0=h0)
    assert _worst(unreversed, reference)["words"] > 100 * TOLERANCE

    swapped = copy.deepcopy(model)
    swapped.qbm.query_proj, swapped.qbm.response_proj = swapped.qbm.response_proj, swapped.qbm.query_proj
    assert _worst(swapped, reference)["confidence"] > 100 * TOLERANCE

    open_decoder = copy.deepcopy(model)
    for layer in open_decoder.transformer.decoder:
        attn = layer.self_attn
        attn.forward = (lambda a: lambda q, k, v, **kw: type(a).forward(a, q, k, v, **{**kw, "causal": False}))(attn)
    assert _worst(open_decoder, reference)["responses"] > 100 * TOLERANCE


def test_gru_over_many_steps_from_a_nonzero_state_matches_keras(tmp_path):
    """Keras' GRU as the released graph has it (keras 2.3.1: reset_after=False, sigmoid gates), eight
    steps from a random initial state, forwards and backwards, against KerasGRUCell with the same
    weights; PyTorch's own nn.GRU (reset gate after the recurrent matmul) with those weights differs."""
    from export.vlt.language import KerasGRUCell

    run = _keras_tool("--gru-reference", str(tmp_path / "gru.npz"))
    assert run.returncode == 0, run.stderr[-3000:]
    ref = dict(np.load(tmp_path / "gru.npz"))
    x, h0 = ref["x"], ref["h0"]
    e, u = x.shape[2], h0.shape[1]
    for name, backwards in (("forward", False), ("backward", True)):
        kernel, recurrent, bias = ref[f"{name}_kernel"], ref[f"{name}_recurrent_kernel"], ref[f"{name}_bias"]
        want = ref[f"{name}_out"]
        cell = KerasGRUCell(e, u, recurrent_activation="sigmoid")
        with torch.no_grad():
            for p, v in zip((cell.kernel, cell.recurrent_kernel, cell.bias), (kernel, recurrent, bias)):
                p.copy_(torch.from_numpy(v))
            got = cell(torch.from_numpy(x), reverse=backwards, h0=torch.from_numpy(h0)).numpy()
        if backwards:
            got = got[:, ::-1]  # Keras returns go_backwards outputs in reading order
        assert np.abs(got - want).max() < 1e-5, name

        # nn.GRU: gates r, z, n; n = tanh(W_n x + b_n + r * (U_n h)), the reset gate after the matmul
        other = torch.nn.GRU(e, u, batch_first=True)
        kz, kr, kh = np.split(kernel, 3, axis=1)
        uz, ur, uh = np.split(recurrent, 3, axis=1)
        bz, br, bh = np.split(bias, 3)
        with torch.no_grad():
            other.weight_ih_l0.copy_(torch.from_numpy(np.concatenate([kr, kz, kh], 1).T))
            other.weight_hh_l0.copy_(torch.from_numpy(np.concatenate([ur, uz, uh], 1).T))
            other.bias_ih_l0.copy_(torch.from_numpy(np.concatenate([br, bz, bh])))
            other.bias_hh_l0.zero_()
            steps = x[:, ::-1].copy() if backwards else x
            torch_gru, _ = other(torch.from_numpy(steps), torch.from_numpy(h0)[None])
        assert np.abs(torch_gru.numpy() - want).max() > 1e-2, name
