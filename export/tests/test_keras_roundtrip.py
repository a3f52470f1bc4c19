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

import numpy as np
import pytest
import torch

_MISSING = [m for m in ("tensorflow", "tf_keras", "keras_transformer") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"Keras reference not installed ({', '.join(_MISSING)}): "
                                                        "pip install -r export/requirements-keras.txt")

COMPONENTS = ["fv0", "fv1", "fv2", "words", "sentence", "fm", "fmq", "f_tf", "visual_queries", "attention_q",
              "attention_k", "attention_v", "queries", "memory", "responses", "confidence", "balanced", "maps",
              "mask_logits", "word_attention"]
FROM_ONNX = ["fv0", "fv1", "fv2", "mask_logits", "confidence", "word_attention"]


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory):
    from export.tools.keras_roundtrip import run_roundtrip

    out = tmp_path_factory.mktemp("keras-roundtrip")
    result = run_roundtrip(width="reduced", out=out, batch_sizes=(1, 3), lengths=(15, 20), log=lambda _: None)
    return out, result


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


def test_gru_over_many_steps_from_a_nonzero_state_matches_keras():
    """Keras' GRU as the released graph has it (keras 2.3.1: reset_after=False, sigmoid gates), eight
    steps from a random initial state, against KerasGRUCell with the same weights; PyTorch's own
    nn.GRU (reset gate after the recurrent matmul) with those weights does not match it."""
    from export.tools.keras_vlt import keras
    from export.vlt.language import KerasGRUCell

    rng = np.random.default_rng(0)
    b, t, e, u = 3, 8, 5, 6
    x = rng.standard_normal((b, t, e)).astype(np.float32)
    h0 = rng.standard_normal((b, u)).astype(np.float32)
    for go_backwards in (False, True):
        gru = keras.layers.GRU(u, return_sequences=True, reset_after=False, recurrent_activation="sigmoid",
                               go_backwards=go_backwards)
        inp, state = keras.Input((t, e)), keras.Input((u,))
        net = keras.Model([inp, state], gru(inp, initial_state=state))
        kernel, recurrent, bias = (0.5 * rng.standard_normal(w.shape).astype(np.float32) for w in gru.get_weights())
        gru.set_weights([kernel, recurrent, bias])
        want = net.predict([x, h0], verbose=0)  # go_backwards: step i is word t-1-i

        cell = KerasGRUCell(e, u, recurrent_activation="sigmoid")
        with torch.no_grad():
            for p, v in zip((cell.kernel, cell.recurrent_kernel, cell.bias), (kernel, recurrent, bias)):
                p.copy_(torch.from_numpy(v))
            got = cell(torch.from_numpy(x), reverse=go_backwards, h0=torch.from_numpy(h0)).numpy()
        if go_backwards:
            got = got[:, ::-1]
        assert np.abs(got - want).max() < 1e-5, f"go_backwards={go_backwards}"
        assert np.abs(want[:, -1] - h0).max() > 0.1  # the state moved away from h0

    # nn.GRU: gates r, z, n; n = tanh(W_n x + b_n + r * (U_n h)), i.e. the reset gate after the matmul
    ref = torch.nn.GRU(e, u, batch_first=True)
    kz, kr, kh = np.split(kernel, 3, axis=1)
    uz, ur, uh = np.split(recurrent, 3, axis=1)
    bz, br, bh = np.split(bias, 3)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(torch.from_numpy(np.concatenate([kr, kz, kh], 1).T))
        ref.weight_hh_l0.copy_(torch.from_numpy(np.concatenate([ur, uz, uh], 1).T))
        ref.bias_ih_l0.copy_(torch.from_numpy(np.concatenate([br, bz, bh])))
        ref.bias_hh_l0.zero_()
        torch_gru, _ = ref(torch.from_numpy(x[:, ::-1].copy()), torch.from_numpy(h0)[None])
    assert np.abs(torch_gru.numpy() - want).max() > 1e-2
