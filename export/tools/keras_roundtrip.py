"""Keras -> .h5 -> export/convert_keras.py -> ONNX, compared with Keras' own forward pass.

    pip install -r export/requirements-keras.txt
    python -m export.tools.keras_roundtrip --width reduced             # what the test suite runs
    python -m export.tools.keras_roundtrip --width paper --out runs/keras-roundtrip

Steps: build the released graph in Keras (export/tools/keras_vlt.py) at the ``paper`` widths or at
reduced widths that keep every layer, give every weight a random value, ``save_weights`` to .h5;
convert the file with ``run_convert`` (GloVe table from a small random vector file) and export it
with ``run_export`` (which checks ONNX against PyTorch itself); then feed the same images and the
same word vectors to Keras and to the exported graphs, at each batch size, and for each sentence
length L (the Keras graph is rebuilt at that L and loads the .h5; the converter gets ``--max-words L``).

Compared, per component: backbone maps (ONNX image encoder), mask logits, QBM confidences and word
attention (ONNX whole model), and the intermediate tensors of the converted PyTorch model (fusion,
queries, transformer memory and responses, ...). The measure is the max relative difference
max|x - x_keras| / max|x_keras| over the whole tensor (relative to its largest magnitude, so that
values near zero do not divide by ~0); every component must be <= ``TOLERANCE``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from export.vlt import VLT, VLTConfig, get_config

TOLERANCE = 1e-4

# 'reduced': Darknet-53's depths, 2 + 2 transformer layers, 8 heads and Nq 16 as in the paper, all
# widths divided by 8 (a BiGRU of 32 units, D 32) and a 96 x 96 input (6 x 6 transformer tokens).
WIDTHS: Dict[str, Dict[str, Any]] = {
    "paper": {},
    "reduced": dict(image_size=96, backbone_width=4, word_dim=24, rnn_hidden=32, d_model=32, ffn_dim=32,
                    decoder_width=32),
}

# Components in pipeline order: name -> (Keras probe, how to bring the Keras array to the PyTorch layout).
_NCHW = "nchw"


def keras_config(width: str, max_words: int) -> VLTConfig:
    return get_config("paper", max_words=max_words, **WIDTHS[width])


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    scale = float(np.abs(want).max())
    return float(np.abs(got.astype(np.float64) - want).max()) / (scale if scale > 0 else 1.0)


def _write_glove(path: Path, words: Sequence[str], dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.write_text("".join(w + " " + " ".join(f"{v:.6f}" for v in rng.standard_normal(dim)) + "\n" for w in words))


def _tokens(batch: int, length: int, vocab: int, rng: np.random.Generator) -> np.ndarray:
    """Sentences of different lengths: the first row fills L, the others stop early (0-padded)."""
    tokens = np.zeros((batch, length), np.int64)
    for i in range(batch):
        n = length if i == 0 else int(rng.integers(1, length))
        tokens[i, :n] = rng.integers(2, vocab, n)
    return tokens


def torch_components(model: VLT, image: torch.Tensor, tokens: torch.Tensor) -> Dict[str, np.ndarray]:
    """The converted model's intermediate tensors, read with forward hooks during one forward pass."""
    got: Dict[str, Any] = {}
    hooks = []

    def keep(name: str, fn: Callable[[Any], Any] = lambda o: o) -> Callable:
        def hook(_m, _inp, out):
            got[name] = fn(out)
        return hook

    def keep_inputs(_m, args, kwargs):
        got["attention_q"], got["attention_k"], got["attention_v"] = args[:3]

    m = model
    hooks += [m.backbone.register_forward_hook(keep("backbone")),
              m.language_encoder.register_forward_hook(keep("language")),
              m.fusion.fuse_bn.register_forward_hook(keep("fm", lambda o: F.leaky_relu(o, 0.1))),
              m.fusion.register_forward_hook(keep("fusion")),
              m.qgm.map_to_vector.register_forward_hook(keep("visual_queries", F.relu)),
              m.qgm.attention.register_forward_pre_hook(keep_inputs, with_kwargs=True),
              m.qgm.register_forward_hook(keep("qgm")),
              m.transformer.encoder[-1].register_forward_hook(keep("memory")),
              m.transformer.decoder[-1].register_forward_hook(keep("responses")),
              m.qbm.register_forward_hook(keep("qbm")),
              m.mask_decoder.response_to_map.register_forward_hook(keep("maps", F.relu))]
    try:
        with torch.no_grad():
            logits, confidence, attention = model(image, tokens)
    finally:
        for h in hooks:
            h.remove()
    out = {"fv0": got["backbone"][0], "fv1": got["backbone"][1], "fv2": got["backbone"][2],
           "words": got["language"][0], "sentence": got["language"][1], "fm": got["fm"],
           "fmq": got["fusion"][0], "f_tf": got["fusion"][1], "visual_queries": got["visual_queries"],
           "attention_q": got["attention_q"], "attention_k": got["attention_k"], "attention_v": got["attention_v"],
           "queries": got["qgm"][0], "memory": got["memory"], "responses": got["responses"],
           "confidence": got["qbm"][1], "balanced": got["qbm"][0], "maps": got["maps"],
           "mask_logits": logits, "word_attention": attention}
    return {k: v.detach().float().numpy() for k, v in out.items()}


def keras_components(built, image_nhwc: np.ndarray, vectors: np.ndarray) -> Dict[str, np.ndarray]:
    """The Keras graph's tensors, in the PyTorch layout (NCHW maps, B x Nq confidences, B x Nq x HW maps)."""
    from export.tools.keras_vlt import qgm_word_attention

    values = built.probe([image_nhwc, vectors], training=False)
    out = {name: np.asarray(v) for name, v in zip(built.probe_names, values)}
    for name, v in out.items():
        if v.ndim == 4:
            out[name] = v.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    out["maps"] = out["maps"].reshape(*out["maps"].shape[:2], -1)  # B x Nq x H x W -> B x Nq x HW
    out["confidence"] = out["confidence"][..., 0]
    attended, out["word_attention"] = qgm_word_attention(built, out["attention_q"], out["attention_k"],
                                                         out["attention_v"])
    # the eager call of the attention layer must reproduce the graph's own value of it
    assert np.allclose(attended + out["visual_queries"], out["queries"], rtol=1e-5, atol=1e-5)
    return out


def run_roundtrip(*, width: str, out: Path, batch_sizes: Sequence[int] = (1, 3), lengths: Sequence[int] = (15, 20),
                  seed: int = 0, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Build, save, convert, export and compare; returns {'rows': [...], 'worst': {component: max}}."""
    from export.convert_keras import run_convert
    from export.export_onnx import run_export
    from export.model_session import open_session
    from export.tools.keras_vlt import K, build_keras_vlt, randomize_weights

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def stamp(what: str) -> None:
        log(f"[{time.perf_counter() - t0:6.1f} s] {what}")

    h5 = out / "keras_weights.h5"
    cfg0 = keras_config(width, lengths[0])
    K.clear_session()  # the original numbers layers from a fresh session too
    built = build_keras_vlt(cfg0)
    randomize_weights(built.model, seed=seed)
    built.model.save_weights(str(h5))  # HDF5, weights only, as the released best_map.h5
    glove = out / "glove.txt"
    words = [f"w{i}" for i in range(40)]
    _write_glove(glove, words, cfg0.word_dim, seed + 1)
    stamp(f"Keras graph built and saved: {h5}")

    rng = np.random.default_rng(seed + 2)
    rows: List[Dict[str, Any]] = []
    for length in lengths:
        if length != lengths[0]:
            K.clear_session()
            built = build_keras_vlt(keras_config(width, length))
            built.model.load_weights(str(h5))
            stamp(f"Keras graph rebuilt at L {length}, weights loaded from the .h5")
        folder = out / f"L{length}"
        model, report = run_convert(h5=h5, out=folder / "checkpoint.pt", glove=str(glove), max_words=length,
                                    data_words=words, vocab_top_n=0)
        assert report["keras_tensors_mapped"] == report["keras_tensors"]
        # Keras counts BatchNormalization's moving statistics among its parameters
        params = sum(p.numel() for p in model.parameters()) + sum(
            t.numel() for n, t in model.named_buffers() if n.endswith(("running_mean", "running_var")))
        if params != built.model.count_params():
            raise AssertionError(f"Keras has {built.model.count_params()} parameters, the converted model {params}")
        stamp(f"converted: {report['keras_tensors_mapped']}/{report['keras_tensors']} tensors, {params} parameters")
        run_export(checkpoint=folder / "checkpoint.pt", out=folder / "model", name=f"keras-roundtrip-{width}",
                   version="0.0.0", ema=False, graphs="all")
        stamp("exported to ONNX")
        full, encoder = open_session(folder / "model" / "model.onnx"), open_session(folder / "model" / "image_encoder.onnx")
        table = model.language_encoder.embedding.table.numpy()
        s = model.mask_decoder.feature_size * 16
        for b in batch_sizes:
            image = rng.random((b, 3, s, s), dtype=np.float32)
            tokens = _tokens(b, length, table.shape[0], rng)
            want = keras_components(built, image.transpose(0, 2, 3, 1), table[tokens])
            np.savez(folder / f"keras_b{b}.npz", image=image, tokens=tokens, **want)  # the reference, for later checks
            got = torch_components(model, torch.from_numpy(image), torch.from_numpy(tokens))
            onnx = dict(zip(["fv0", "fv1", "fv2"], encoder.run(None, {"image": image})))
            logits, confidence, attention = full.run(None, {"image": image, "tokens": tokens})
            onnx.update(mask_logits=logits, confidence=confidence, word_attention=attention)
            for name, ref in want.items():
                if name in onnx:
                    rows.append(dict(L=length, batch=b, component=name, source="onnx", rel=_rel(onnx[name], ref)))
                rows.append(dict(L=length, batch=b, component=name, source="torch", rel=_rel(got[name], ref)))
            worst_here = max(r["rel"] for r in rows if r["L"] == length and r["batch"] == b)
            stamp(f"L {length} batch {b}: worst max relative difference {worst_here:.2e}")
    worst: Dict[str, float] = {}
    for r in rows:
        key = f"{r['component']} ({r['source']})"
        worst[key] = max(worst.get(key, 0.0), r["rel"])
    result = {"width": width, "tolerance": TOLERANCE, "parameters": params, "measure": "max|x - x_keras| / max|x_keras|",
              "batch_sizes": list(batch_sizes), "lengths": list(lengths), "rows": rows, "worst": worst}
    (out / "roundtrip.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def format_table(result: Dict[str, Any]) -> str:
    """One line per component and source: the max relative difference at each (L, batch)."""
    keys: List[Tuple[int, int]] = sorted({(r["L"], r["batch"]) for r in result["rows"]})
    head = "component (compared from)".ljust(30) + "".join(f"L{n}/B{b}".rjust(10) for n, b in keys)
    lines = [head]
    seen: List[Tuple[str, str]] = []
    for r in result["rows"]:
        if (r["component"], r["source"]) not in seen:
            seen.append((r["component"], r["source"]))
    for comp, src in seen:
        vals = {(r["L"], r["batch"]): r["rel"] for r in result["rows"] if r["component"] == comp and r["source"] == src}
        lines.append(f"{comp} ({src})".ljust(30) + "".join(f"{vals[k]:10.1e}" for k in keys))
    return "\n".join(lines)


def write_gru_reference(path: Path, seed: int = 0) -> None:
    """Keras' GRU as the released graph has it (keras 2.3.1: reset_after=False, sigmoid gates), eight
    steps from a random non-zero initial state, forwards and with go_backwards: inputs, weights and
    outputs to an .npz, for export/tests/test_keras_roundtrip.py to compare KerasGRUCell with."""
    from export.tools.keras_vlt import keras

    rng = np.random.default_rng(seed)
    b, t, e, u = 3, 8, 5, 6
    arrays = {"x": rng.standard_normal((b, t, e)).astype(np.float32), "h0": rng.standard_normal((b, u)).astype(np.float32)}
    for name, backwards in (("forward", False), ("backward", True)):
        gru = keras.layers.GRU(u, return_sequences=True, reset_after=False, recurrent_activation="sigmoid",
                               go_backwards=backwards)
        inp, state = keras.Input((t, e)), keras.Input((u,))
        net = keras.Model([inp, state], gru(inp, initial_state=state))
        weights = [(0.5 * rng.standard_normal(w.shape)).astype(np.float32) for w in gru.get_weights()]
        gru.set_weights(weights)
        for leaf, w in zip(("kernel", "recurrent_kernel", "bias"), weights):
            arrays[f"{name}_{leaf}"] = w
        arrays[f"{name}_out"] = net.predict([arrays["x"], arrays["h0"]], verbose=0)  # backwards: step i reads word t-1-i
    np.savez(path, **arrays)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", choices=sorted(WIDTHS), default="reduced")
    p.add_argument("--out", type=Path, default=Path("runs/keras-roundtrip"))
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 3])
    p.add_argument("--lengths", type=int, nargs="+", default=[15, 20])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gru-reference", type=Path, default=None,
                   help="only write Keras GRU outputs from a non-zero state to this .npz (for the tests)")
    args = p.parse_args(argv)
    if args.gru_reference is not None:
        write_gru_reference(args.gru_reference, seed=args.seed)
        return 0
    result = run_roundtrip(width=args.width, out=args.out / args.width, batch_sizes=args.batch_sizes,
                           lengths=args.lengths, seed=args.seed)
    print(f"max relative difference per component ({result['measure']}), {args.width} widths:")
    print(format_table(result))
    worst = max(result["worst"].values())
    ok = worst <= TOLERANCE
    print(f"worst {worst:.2e}: {'within' if ok else 'OVER'} the tolerance {TOLERANCE:g}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
