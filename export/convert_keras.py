"""Convert the authors' released Keras checkpoints (weights-only ``.h5``) into a PyTorch checkpoint.

The released files (``best_map.h5``) are ``model_body.save_weights(...)`` of the graph built by
``yolo_body`` in henghuiding/Vision-Language-Transformer (TF 1.15, keras 2.3.1, keras-transformer
0.38): one HDF5 group per Keras layer, named as Keras named the layer, whose attribute
``weight_names`` lists datasets such as ``conv2d_1/kernel:0``. The result is a checkpoint of
``export.vlt.build_vlt(get_config('paper', ...))`` that ``python -m export.export_onnx`` exports as
usual:

    python -m export.convert_keras --h5 best_map.h5 --glove glove.840B.300d.txt \\
        --refer-root data --dataset refcoco --out runs/vlt-refcoco-keras/checkpoint.pt
    python -m export.export_onnx --checkpoint runs/vlt-refcoco-keras/checkpoint.pt --out models/vlt-refcoco

How layers are matched. The graph's unnamed layers are numbered by Keras in the order the Python
code creates them (``conv2d_1``, ``conv2d_2``, ...; ``batch_normalization_*``; ``dense_*``), so each
kind is sorted by that number and matched, position by position, to ``KERAS_CONVS``,
``KERAS_BATCH_NORMS`` and ``KERAS_DENSES`` below; the transformer's layers carry fixed names
(``Encoder-1-MultiHeadSelfAttention``, ...). Layout changes: conv kernels H x W x I x O -> O x I x H x W;
dense, attention (``_Wq`` ...) and feed-forward (``_W1``, ``_W2``) kernels I x O -> O x I; the GRU's
``kernel`` (E x 3U), ``recurrent_kernel`` (U x 3U) and ``bias`` (3U), gate order z, r, h, copy as they
are into ``KerasGRUCell``; BatchNormalization gamma/beta/moving_mean/moving_variance -> weight/bias/
running_mean/running_var; LayerNormalization gamma/beta -> weight/bias. Every tensor of the file must
be used and every parameter and buffer of the model filled (the frozen word table excepted: the
Keras graph takes word vectors as input, so the table comes from ``--glove``); anything else, or any
shape mismatch, is an error.

Nq, the input size (the HW of the last Dense) and every width and transformer depth are read from
the file (``infer_shape_config``); L is not in the weights (15 for RefCOCO/RefCOCO+, 20 for G-Ref:
``--max-words``), nor is the number of heads (8).
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from export.darknet import backbone_convs
from export.vlt import VLT, build_vlt, get_config
from export.vlt.glove import BUNDLED, build_vocabulary

# ------------------------------------------------------------------------------------------------
# The mapping table. Keras creation order (= the order of model/vlt_model.py, yolo_body) on the
# left, this project's module on the right. Backbone convs come first, in darknet cfg order, which
# is also Backbone's module order (see export.darknet.backbone_convs).
# ------------------------------------------------------------------------------------------------
# Conv2D layers after the 58 of darknet_body (52 Darknet-53 + the six head convs). Keras
# creation order differs from this project's module order only in where things live: the fusion
# convs are created inside simple_fusion / up_proj_cat_proj / pool_proj_cat_proj / proj_cat; the
# mask decoder's first CBL is created in vlt_transformer (after ref_tf), its others in vlt_postproc.
KERAS_CONVS_AFTER_BACKBONE: Tuple[str, ...] = (
    "fusion.refine.0",      # simple_fusion: darknet_resblock 1x1-512
    "fusion.refine.1",      # simple_fusion: darknet_resblock 3x3-1024
    "fusion.fv1_proj",      # up_proj_cat_proj(Fm, Fv1): 1x1-512 on Fv1
    "fusion.mid",           # up_proj_cat_proj(Fm, Fv1): 1x1-512 on the concat -> Fm_mid_query
    "fusion.fv2_proj",      # pool_proj_cat_proj: 1x1-256 on avgpool(Fv2)
    "fusion.fmq",           # pool_proj_cat_proj: 1x1-512 on the concat -> Fm_query
    "fusion.tf_mid.0",      # proj_cat: 1x1-256
    "fusion.tf_mid.1",      # proj_cat: 3x3-512
    "fusion.tf_mid_proj",   # up_proj_cat_proj(Fm, Fm_mid_tf): 1x1-512 on Fm_mid_tf
    "fusion.tf_out.0",      # up_proj_cat_proj(Fm, Fm_mid_tf): 1x1-256 on the concat
    "fusion.tf_out.1",      # make_multitask_braches: 1x1-hidden_dim -> F_tf
    "qgm.convs.0",          # vlt_querynet: 3x3-(C+6)
    "qgm.convs.1",          # vlt_querynet: 3x3-(C+6)
    "qgm.convs.2",          # vlt_querynet: 3x3-(C+6)
    "qgm.query_maps",       # vlt_querynet: DarknetConv2D(num_query, 1x1), with bias, no BN
    "mask_decoder.convs.0",       # vlt_transformer: 3x3-hidden_dim on the Nq response maps
    "mask_decoder.convs.1",       # vlt_postproc: 3x3
    "mask_decoder.convs.2",       # vlt_postproc: 3x3
    "mask_decoder.up_convs.0",    # vlt_postproc: up2, 3x3 (seg_out_stride <= 8)
    "mask_decoder.up_convs.1",    # vlt_postproc: up2, 3x3 (seg_out_stride <= 4)
    "mask_decoder.up_convs.2",    # vlt_postproc: up2, 3x3 (seg_out_stride <= 2)
    "mask_decoder.out",     # vlt_postproc: DarknetConv2D(1, 3x3), with bias, no BN
)
# BatchNormalization layers after the 58 of darknet_body: one per CBL above, in the same order,
# plus the two of simple_fusion that are not part of a CBL.
KERAS_BATCH_NORMS_AFTER_BACKBONE: Tuple[str, ...] = (
    "fusion.refine.0",
    "fusion.refine.1",
    "fusion.lang_bn",       # simple_fusion: BN after Dense(jemb_dim) on the sentence vector
    "fusion.fuse_bn",       # simple_fusion: BN after Multiply(F_v_proj, tiled f_q)
    "fusion.fv1_proj",
    "fusion.mid",
    "fusion.fv2_proj",
    "fusion.fmq",
    "fusion.tf_mid.0",
    "fusion.tf_mid.1",
    "fusion.tf_mid_proj",
    "fusion.tf_out.0",
    "fusion.tf_out.1",
    "qgm.convs.0",
    "qgm.convs.1",
    "qgm.convs.2",
    "mask_decoder.convs.0",
    "mask_decoder.convs.1",
    "mask_decoder.convs.2",
    "mask_decoder.up_convs.0",
    "mask_decoder.up_convs.1",
    "mask_decoder.up_convs.2",
)
# Dense layers, all of them, in creation order.
KERAS_DENSES: Tuple[str, ...] = (
    "language_encoder.pool_linear",   # build_nlp_model: Dense(rnn, tanh), word attention weights
    "fusion.lang_proj",               # simple_fusion: Dense(jemb_dim) on the sentence vector
    "qgm.map_to_vector",              # vlt_transformer: Dense(hidden, relu) on each query map (HW -> D)
    "qgm.lang_proj",                  # vlt_transformer: Dense(hidden, relu) on the words
    "qgm.q_in",                       # lang_tf_enc: q_inp = Dense(hidden, relu)(queries + pos)
    "qgm.k_in",                       # lang_tf_enc: k_inp = Dense(hidden, relu)(words + pos)
    "qgm.v_in",                       # lang_tf_enc: v_inp = Dense(hidden, relu)(words + pos)
    "qbm.query_proj",                 # ref_tf balance: Dense(hidden, relu)(decoder_input), created first
    "qbm.response_proj",              # ref_tf balance: Dense(hidden, relu)(decoded_layer)
    "qbm.hidden",                     # ref_tf balance: Dense(hidden, relu) on the concat
    "qbm.confidence",                 # ref_tf balance: Dense(1, sigmoid)
    "mask_decoder.response_to_map",   # ref_tf: Dense(feat_size**2, relu)
)
# Layers with their own names (keras-transformer) or the only one of their kind.
#   Keras layer                              -> module                          kind
KERAS_NAMED: Tuple[Tuple[str, str, str], ...] = (
    ("bidirectional", "language_encoder", "bigru"),   # Bidirectional(GRU(rnn), merge_mode='sum')
    ("multi_head_attention", "qgm.attention", "mha"),  # lang_tf_enc: MultiHeadAttention(head_num)
)


def transformer_layers(enc_layers: int, dec_layers: int) -> List[Tuple[str, str, str]]:
    """keras-transformer's fixed layer names -> this project's modules."""
    out: List[Tuple[str, str, str]] = []
    for i in range(enc_layers):
        k, t = f"Encoder-{i + 1}", f"transformer.encoder.{i}"
        out += [(f"{k}-MultiHeadSelfAttention", f"{t}.self_attn", "mha"),
                (f"{k}-MultiHeadSelfAttention-Norm", f"{t}.norm1", "ln"),
                (f"{k}-FeedForward", f"{t}.ffn", "ffn"),
                (f"{k}-FeedForward-Norm", f"{t}.norm2", "ln")]
    for i in range(dec_layers):
        k, t = f"Decoder-{i + 1}", f"transformer.decoder.{i}"
        out += [(f"{k}-MultiHeadSelfAttention", f"{t}.self_attn", "mha"),
                (f"{k}-MultiHeadSelfAttention-Norm", f"{t}.norm1", "ln"),
                (f"{k}-MultiHeadQueryAttention", f"{t}.cross_attn", "mha"),
                (f"{k}-MultiHeadQueryAttention-Norm", f"{t}.norm2", "ln"),
                (f"{k}-FeedForward", f"{t}.ffn", "ffn"),
                (f"{k}-FeedForward-Norm", f"{t}.norm3", "ln")]
    return out


# ------------------------------------------------------------------------------------------------
# Reading the .h5
# ------------------------------------------------------------------------------------------------
# layer name -> [(weight name as stored, e.g. 'conv2d_1/kernel:0', array)]
KerasWeights = Dict[str, List[Tuple[str, np.ndarray]]]


def read_keras_h5(path: Union[str, Path]) -> KerasWeights:
    """All weights of a Keras ``save_weights`` (or ``save``) HDF5 file, per layer, in stored order."""
    import h5py

    def _str(v: Any) -> str:
        return v.decode("utf8") if isinstance(v, bytes) else str(v)

    out: KerasWeights = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        names = [_str(n) for n in root.attrs["layer_names"]] if "layer_names" in root.attrs else list(root.keys())
        for name in names:
            g = root[name]
            wnames = [_str(n) for n in g.attrs.get("weight_names", [])]
            if not wnames:  # no attribute: every dataset below the group
                found: List[str] = []
                g.visititems(lambda k, v: found.append(k) if isinstance(v, h5py.Dataset) else None)
                wnames = found
            if wnames:
                out[name] = [(w, np.asarray(g[w])) for w in wnames]
    return out


def _numbered(weights: KerasWeights, prefix: str) -> List[str]:
    """Layers named '<prefix>_<n>' (or '<prefix>'), sorted by n: Keras creation order."""
    pat = re.compile(rf"^{re.escape(prefix)}(?:_(\d+))?$")
    found = [(int(m.group(1) or 0), name) for name in weights for m in [pat.match(name)] if m]
    return [name for _, name in sorted(found)]


def _leaf(weight_name: str) -> str:
    """'a/b/Encoder-1-FeedForward_W1:0' -> 'Encoder-1-FeedForward_W1'."""
    return weight_name.split("/")[-1].split(":")[0]


# ------------------------------------------------------------------------------------------------
# Converting
# ------------------------------------------------------------------------------------------------
class _Filler:
    """Copies arrays into the model's state and records what was used and what was filled."""

    def __init__(self, model: nn.Module) -> None:
        self.state = dict(model.state_dict(keep_vars=True))
        self.filled: Dict[str, str] = {}  # torch key -> 'layer/weight' it came from

    def put(self, key: str, value: np.ndarray, source: str) -> None:
        if key not in self.state:
            raise KeyError(f"{source}: the model has no {key!r}")
        if key in self.filled:
            raise ValueError(f"{key} filled twice: from {self.filled[key]} and {source}")
        t = self.state[key]
        if tuple(value.shape) != tuple(t.shape):
            raise ValueError(f"shape mismatch: {source} gives {tuple(value.shape)} for {key} {tuple(t.shape)}")
        with torch.no_grad():
            t.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
        self.filled[key] = source


def _take(weights: KerasWeights, layer: str, used: set) -> Dict[str, Tuple[str, np.ndarray]]:
    if layer not in weights:
        raise KeyError(f"the .h5 has no layer {layer!r} (its layers: {sorted(weights)[:8]}...)")
    out: Dict[str, Tuple[str, np.ndarray]] = {}
    for wname, arr in weights[layer]:
        out[wname] = (f"{layer}/{wname}", arr)
        used.add((layer, wname))
    return out


def _by_leaf(ws: Dict[str, Tuple[str, np.ndarray]], *leaves: str, layer: str) -> List[Tuple[str, np.ndarray]]:
    got = []
    for leaf in leaves:
        hits = [v for k, v in ws.items() if _leaf(k) == leaf or _leaf(k).endswith("_" + leaf)]
        if len(hits) != 1:
            raise ValueError(f"layer {layer!r}: expected one weight '{leaf}', found {len(hits)} in {sorted(ws)}")
        got.append(hits[0])
    if len(ws) != len(leaves):
        raise ValueError(f"layer {layer!r}: expected weights {leaves}, the file has {sorted(ws)}")
    return got


def _conv(f: _Filler, ws, module: str, layer: str, bias: bool) -> None:
    leaves = ("kernel", "bias") if bias else ("kernel",)
    got = _by_leaf(ws, *leaves, layer=layer)
    f.put(f"{module}.weight", got[0][1].transpose(3, 2, 0, 1), got[0][0])  # H x W x I x O -> O x I x H x W
    if bias:
        f.put(f"{module}.bias", got[1][1], got[1][0])


def _bn(f: _Filler, ws, module: str, layer: str) -> None:
    got = _by_leaf(ws, "gamma", "beta", "moving_mean", "moving_variance", layer=layer)
    for (src, arr), name in zip(got, ("weight", "bias", "running_mean", "running_var")):
        f.put(f"{module}.{name}", arr, src)


def _dense(f: _Filler, ws, module: str, layer: str) -> None:
    (ks, k), (bs, b) = _by_leaf(ws, "kernel", "bias", layer=layer)
    f.put(f"{module}.weight", k.T, ks)  # I x O -> O x I
    f.put(f"{module}.bias", b, bs)


def _mha(f: _Filler, ws, module: str, layer: str) -> None:
    got = _by_leaf(ws, "Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo", layer=layer)
    for i, proj in enumerate(("q_proj", "k_proj", "v_proj", "out_proj")):
        (ws_, w), (bs_, b) = got[2 * i], got[2 * i + 1]
        f.put(f"{module}.{proj}.weight", w.T, ws_)
        f.put(f"{module}.{proj}.bias", b, bs_)


def _ffn(f: _Filler, ws, module: str, layer: str) -> None:
    (s1, w1), (sb1, b1), (s2, w2), (sb2, b2) = _by_leaf(ws, "W1", "b1", "W2", "b2", layer=layer)
    f.put(f"{module}.linear1.weight", w1.T, s1)
    f.put(f"{module}.linear1.bias", b1, sb1)
    f.put(f"{module}.linear2.weight", w2.T, s2)
    f.put(f"{module}.linear2.bias", b2, sb2)


def _ln(f: _Filler, ws, module: str, layer: str) -> None:
    (gs, g), (bs, b) = _by_leaf(ws, "gamma", "beta", layer=layer)
    f.put(f"{module}.weight", g, gs)
    f.put(f"{module}.bias", b, bs)


def _bigru(f: _Filler, ws, module: str, layer: str) -> None:
    """Bidirectional weights: forward kernel, recurrent_kernel, bias, then the backward ones (Keras
    stores them in that order; names such as 'bidirectional_1/forward_gru_1/kernel:0')."""
    if len(ws) != 6:
        raise ValueError(f"layer {layer!r}: expected 6 GRU weights, the file has {sorted(ws)}")
    items = list(ws.items())
    for direction, half in (("forward", items[:3]), ("backward", items[3:])):
        other = "backward" if direction == "forward" else "forward"
        if any(other + "_" in k for k, _ in half):
            raise ValueError(f"layer {layer!r}: {other} GRU weights stored where the {direction} ones belong: {sorted(ws)}")
        for leaf in ("kernel", "recurrent_kernel", "bias"):
            hits = [v for k, v in half if _leaf(k) == leaf]
            if len(hits) != 1:
                raise ValueError(f"layer {layer!r}: expected one {direction} '{leaf}', found {len(hits)}")
            f.put(f"{module}.{direction}_gru.{leaf}", hits[0][1], hits[0][0])  # Keras layout, as is


_KIND = {"conv": _conv, "bn": _bn, "dense": _dense, "mha": _mha, "ffn": _ffn, "ln": _ln, "bigru": _bigru}


def conversion_plan(model: VLT) -> List[Tuple[str, str, str]]:
    """(keras layer kind or fixed name, module, kind) for every Keras layer with weights.

    Unnamed kinds appear as 'conv2d#i', 'batch_normalization#i', 'dense#i': the i-th layer of that
    kind in creation order.
    """
    body, head = backbone_convs(model.backbone)
    backbone = [f"backbone.{name}" for name, _ in body + head]
    plan: List[Tuple[str, str, str]] = []
    convs = [f"{m}.0" for m in backbone] + [
        m if m in ("qgm.query_maps", "mask_decoder.out") else f"{m}.0" for m in KERAS_CONVS_AFTER_BACKBONE
    ]
    for i, m in enumerate(convs):
        plan.append((f"conv2d#{i}", m, "conv_bias" if m in ("qgm.query_maps", "mask_decoder.out") else "conv"))
    bns = [f"{m}.1" for m in backbone] + [
        m if m in ("fusion.lang_bn", "fusion.fuse_bn") else f"{m}.1" for m in KERAS_BATCH_NORMS_AFTER_BACKBONE
    ]
    for i, m in enumerate(bns):
        plan.append((f"batch_normalization#{i}", m, "bn"))
    for i, m in enumerate(KERAS_DENSES):
        plan.append((f"dense#{i}", m, "dense"))
    plan += list(KERAS_NAMED)
    plan += transformer_layers(len(model.transformer.encoder), len(model.transformer.decoder))
    return plan


def convert_weights(weights: KerasWeights, model: VLT) -> Dict[str, Any]:
    """Copy every Keras tensor into ``model``; raise on anything unmapped, unfilled or mis-shaped.

    Returns:
      dict: counts of Keras layers/tensors/values used and the torch keys filled (mapping coverage).
    """
    if not getattr(model.qgm, "input_proj", False):
        raise ValueError("the released graph has Dense q/k/v layers before the QGM attention: "
                         "build the model with qgm_input_proj=True (the 'paper' preset)")
    f = _Filler(model)
    used: set = set()
    kinds = {"conv2d": _numbered(weights, "conv2d"), "batch_normalization": _numbered(weights, "batch_normalization"),
             "dense": _numbered(weights, "dense")}
    plan = conversion_plan(model)
    for kind, names in kinds.items():
        want = sum(1 for k, _, _ in plan if k.startswith(kind + "#"))
        if len(names) != want:
            raise ValueError(f"the .h5 has {len(names)} {kind} layers with weights, the paper graph has {want}")
    for key, module, kind in plan:
        if "#" in key:
            prefix, i = key.split("#")
            layer = kinds[prefix][int(i)]
        else:
            matches = _numbered(weights, key) if key in ("bidirectional", "multi_head_attention") else [key]
            if len(matches) != 1:
                raise ValueError(f"expected one {key!r} layer in the .h5, found {matches}")
            layer = matches[0]
        ws = _take(weights, layer, used)
        if kind == "conv_bias":
            _conv(f, ws, module, layer, bias=True)
        elif kind == "conv":
            _conv(f, ws, module, layer, bias=False)
        else:
            _KIND[kind](f, ws, module, layer)

    all_tensors = {(layer, w) for layer, ws in weights.items() for w, _ in ws}
    unmapped = sorted(all_tensors - used)
    if unmapped:
        raise ValueError(f"{len(unmapped)} tensors of the .h5 are not mapped, e.g. {unmapped[:5]}")
    skip = ("language_encoder.embedding.table",)
    unfilled = sorted(k for k in f.state if k not in f.filled and k not in skip and not k.endswith("num_batches_tracked"))
    if unfilled:
        raise ValueError(f"{len(unfilled)} parameters/buffers of the model get no Keras tensor, e.g. {unfilled[:5]}")
    n_values = sum(int(a.size) for ws in weights.values() for _, a in ws)
    return {"keras_layers": len(weights), "keras_tensors": len(all_tensors), "keras_tensors_mapped": len(used),
            "keras_values": n_values, "torch_keys_filled": len(f.filled), "filled": f.filled}


def _array(weights: KerasWeights, layer: str, leaf: str) -> np.ndarray:
    hits = [a for k, a in weights[layer] if _leaf(k) == leaf or _leaf(k).endswith("_" + leaf)]
    if len(hits) != 1:
        raise ValueError(f"layer {layer!r}: expected one weight {leaf!r}, found {len(hits)}")
    return hits[0]


def infer_shape_config(weights: KerasWeights) -> Dict[str, int]:
    """Every size the weights fix, read off the tensors: Nq, input size S, word size E, GRU units,
    backbone width, D, FFN width, mask-decoder width and the transformer's depths. The number of
    heads is not in the weights (8 in every released file); Darknet-53's depths are checked by
    ``convert_weights``."""
    convs = _numbered(weights, "conv2d")
    dense = _numbered(weights, "dense")
    if len(convs) < 73 or len(dense) < 12:
        raise ValueError(f"not the VLT graph: {len(convs)} conv2d and {len(dense)} dense layers with weights")

    def conv_out(module: str) -> int:
        return int(_array(weights, convs[58 + KERAS_CONVS_AFTER_BACKBONE.index(module)], "kernel").shape[-1])

    hw = int(_array(weights, dense[KERAS_DENSES.index("mask_decoder.response_to_map")], "kernel").shape[1])
    side = math.isqrt(hw)
    if side * side != hw:
        raise ValueError(f"the last Dense has {hw} units, not a square feature map")
    gru = _numbered(weights, "bidirectional")
    kernel = next(a for k, a in weights[gru[0]] if _leaf(k) == "kernel")
    depth = {part: len([n for n in weights if re.fullmatch(rf"{part}-\d+-MultiHeadSelfAttention", n)])
             for part in ("Encoder", "Decoder")}
    ffn = "Encoder-1-FeedForward" if depth["Encoder"] else "Decoder-1-FeedForward"
    return {"num_queries": conv_out("qgm.query_maps"), "image_size": side * 16, "word_dim": int(kernel.shape[0]),
            "rnn_hidden": int(kernel.shape[1] // 3),
            "backbone_width": int(_array(weights, convs[0], "kernel").shape[-1]),
            "d_model": conv_out("fusion.tf_out.1"), "ffn_dim": int(_array(weights, ffn, "W1").shape[1]),
            "decoder_width": conv_out("mask_decoder.convs.0"),
            "enc_layers": depth["Encoder"], "dec_layers": depth["Decoder"]}


def run_convert(
    *,
    h5: Path,
    out: Path,
    glove: str,
    max_words: int,
    data_words: Sequence[str] = (),
    vocab_top_n: int = 100000,
    source_name: Optional[str] = None,
) -> Tuple[VLT, Dict[str, Any]]:
    """Read ``h5``, build the paper model, copy the weights, add the GloVe table, save ``out``."""
    weights = read_keras_h5(h5)
    shape = infer_shape_config(weights)
    vocab, table, vocab_info = build_vocabulary(data_words, source=glove, top_n=vocab_top_n)
    if table.shape[1] != shape["word_dim"]:
        raise ValueError(f"the GloVe vectors have {table.shape[1]} dimensions, the checkpoint's GRU takes "
                         f"{shape['word_dim']} (the original used 300-d GloVe 840B / spaCy en_vectors_web_lg)")
    cfg = get_config("paper", max_words=max_words, vocab_size=len(vocab), **shape)
    # Every parameter and statistic is overwritten below (convert_weights checks that), so the
    # model is built without initialising its 89 M parameters.
    with torch.device("meta"):
        model = build_vlt(cfg)
    model = model.to_empty(device="cpu")
    for name, buf in model.named_buffers():
        if name.endswith("num_batches_tracked"):
            buf.zero_()
    report = convert_weights(weights, model)
    model.language_encoder.embedding.load_vectors(torch.from_numpy(table))
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in report.items() if k != "filled"}
    from export.engine import save_checkpoint

    save_checkpoint(
        out, model=model.state_dict(), model_ema=None, optimizer=None, step=0, epoch=0, config=cfg.to_dict(),
        vocab=vocab, vocab_info=vocab_info,
        args={"preset": "paper", "converted_from": source_name or str(h5), "glove": str(glove)},
        conversion=summary,
    )
    return model, report


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Convert a released VLT Keras checkpoint", add_help=False)
    p.add_argument("--h5", type=Path, required=True, help="the released weights (e.g. best_map.h5)")
    p.add_argument("--out", type=Path, required=True, help="PyTorch checkpoint to write")
    p.add_argument("--glove", default=BUNDLED, help="GloVe text file; 300-d glove.840B.300d.txt matches the original")
    p.add_argument("--max-words", type=int, default=15, help="L: 15 for RefCOCO/RefCOCO+, 20 for G-Ref")
    p.add_argument("--vocab-top-n", type=int, default=100000, help="most frequent GloVe words in the vocabulary")
    p.add_argument("--refer-root", type=Path, default=None, help="optional: add every word of a REFER training split")
    p.add_argument("--dataset", default="refcoco", help="with --refer-root: refcoco, refcoco+ or refcocog")
    p.add_argument("--split-by", default=None, help="with --refer-root: unc, umd or google")
    return p


def main(args: argparse.Namespace) -> Dict[str, Any]:
    words: List[str] = []
    if args.refer_root is not None:
        from export.data.refer import ReferDataset

        words = ReferDataset(args.refer_root, args.dataset, "train", split_by=args.split_by).words()
    _, report = run_convert(h5=args.h5, out=args.out, glove=args.glove, max_words=args.max_words,
                            data_words=words, vocab_top_n=args.vocab_top_n)
    print(f"mapped {report['keras_tensors_mapped']}/{report['keras_tensors']} Keras tensors "
          f"({report['keras_values'] / 1e6:.2f} M values) into {report['torch_keys_filled']} parameters/buffers "
          f"-> {args.out}")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    main(parser.parse_args())
