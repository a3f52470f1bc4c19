"""A Keras 2 (tf-keras) build of the released VLT graph, used only to check export/convert_keras.py.

The released checkpoints are ``save_weights`` files of the graph that ``yolo_body`` builds in the
authors' implementation (TF 1.15, keras 2.3.1, keras-transformer 0.38). This module builds that
graph again, from a reading of its model/ folder, with the same layer classes (Keras ``Conv2D``,
``BatchNormalization``, ``GRU`` inside ``Bidirectional``, ``Dense``; keras-transformer's encoder and
decoder components; keras-multi-head's ``MultiHeadAttention``; keras-pos-embd's ``TrigPosEmbedding``)
created in the same order, so that Keras numbers the unnamed layers as in the released files, and
writes it with ``save_weights`` to ``.h5`` as the original's ``ModelCheckpoint(save_weights_only=True)``
did. Widths come from a ``VLTConfig``: the ``paper`` preset gives the released graph; smaller widths
keep every layer.

What differs from keras 2.3.1 and cannot be avoided with a current TensorFlow: tf-keras names the
first layer of a kind ``conv2d`` (then ``conv2d_1`` ...) where keras 2.3.1 starts at ``conv2d_1``, and
stores a GRU's weights under ``forward_gru/gru_cell/`` rather than ``forward_gru_1/``. The creation
order, which is what the converter relies on, is the same. The GRU is given keras 2.3.1's defaults
explicitly (``reset_after=False``, ``recurrent_activation='sigmoid'``): tf-keras' own defaults differ.

Needs ``pip install -r export/requirements-keras.txt``; Keras 2 is selected with
``TF_USE_LEGACY_KERAS=1``, which this module sets before TensorFlow is imported.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # keras 2 API (tf-keras), as the CyberZHG layers need
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dataclasses import dataclass  # noqa: E402
from typing import Dict, List, Sequence, Tuple  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras_multi_head import MultiHeadAttention  # noqa: E402
from keras_pos_embd import TrigPosEmbedding  # noqa: E402
from keras_transformer import get_decoder_component, get_encoder_component  # noqa: E402
from tensorflow import keras  # noqa: E402

from export.vlt import VLTConfig  # noqa: E402

L = keras.layers
K = keras.backend

if not keras.layers.Layer.__module__.startswith("tf_keras"):
    raise ImportError("tensorflow.keras is not tf-keras: install tf-keras and set TF_USE_LEGACY_KERAS=1 "
                      "before TensorFlow is imported")


@dataclass
class KerasVLT:
    """The built graph: ``model`` is what ``save_weights`` writes; ``probe`` has the same inputs and
    every intermediate tensor the comparison looks at as outputs (names in ``probe_names``);
    ``qgm_attention`` is the QGM's MultiHeadAttention layer (its weights come from ``attention_inputs``)."""

    model: keras.Model
    probe: keras.Model
    probe_names: List[str]
    qgm_attention: MultiHeadAttention


def _check(cfg: VLTConfig) -> None:
    """The released graph ties some widths together (module docstring of export/vlt/config.py)."""
    if cfg.decoder_width != cfg.d_model or cfg.ffn_dim != cfg.d_model:
        raise ValueError("the released graph uses one width (hidden_dim) for D, the FFN and the mask decoder: "
                         f"got d_model {cfg.d_model}, ffn_dim {cfg.ffn_dim}, decoder_width {cfg.decoder_width}")
    if not cfg.qgm_input_proj or cfg.mask_padding:
        raise ValueError("the released graph has the QGM's q/k/v Dense layers and no padding mask")
    if cfg.gru_recurrent_activation != "sigmoid":
        raise ValueError("keras 2.3.1's GRU uses sigmoid recurrent gates")


# --- building blocks, each creating its layers in the order the original does ------------------------
def _conv(filters: int, size: int, *, strides: int = 1, bias: bool = False) -> L.Layer:
    """DarknetConv2D: L2 5e-4 on the kernel, 'valid' padding for the stride-2 convs, else 'same'."""
    return L.Conv2D(filters, size, strides=strides, padding="valid" if strides == 2 else "same", use_bias=bias,
                    kernel_regularizer=keras.regularizers.l2(5e-4))


def _cbl(x, filters: int, size: int, *, strides: int = 1):
    """DarknetConv2D_BN_Leaky: conv, then BatchNormalization, then LeakyReLU(0.1)."""
    conv, bn, act = _conv(filters, size, strides=strides), L.BatchNormalization(), L.LeakyReLU(alpha=0.1)
    return act(bn(conv(x)))


def _darknet(x, width: int, depths: Sequence[int]):
    """Darknet-53 with the six YOLOv3 head convs; resblocks pad top/left by one before their stride-2 conv."""
    x = _cbl(x, width, 3)
    for k, blocks in enumerate(depths):
        filters = width * 2 ** (k + 1)
        x = L.ZeroPadding2D(((1, 0), (1, 0)))(x)
        x = _cbl(x, filters, 3, strides=2)
        for _ in range(blocks):
            y = _cbl(_cbl(x, filters // 2, 1), filters, 3)
            x = L.Add()([x, y])
    c5 = width * 2 ** len(depths)
    for _ in range(3):
        x = _cbl(_cbl(x, c5 // 2, 1), c5, 3)
    return x


def stage_end_layers(depths: Sequence[int]) -> Tuple[int, int]:
    """Indices in the darknet Model's ``layers`` of the Add ending the third and the fourth stage
    (the original reads ``darknet.layers[92]`` and ``[152]``): input, 3 stem layers, then per stage a
    ZeroPadding2D, a CBL and 7 layers per residual block."""
    ends, i = [], 3
    for blocks in depths:
        i += 4 + 7 * blocks
        ends.append(i)
    return ends[2], ends[3]


def _tile_sentence(size: int):
    def tile(v):
        return tf.tile(v[:, None, None, :], [1, size, size, 1])  # B x C -> B x size x size x C
    return tile


def _append_coords(x):
    """[x, x, x, y, y, y] coordinate channels in [-1, 1] after the features (vlt_querynet's Lambda)."""
    b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    fh, fw = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    xs = 2.0 * tf.range(fw) / (fw - 1.0) - 1.0
    ys = 2.0 * tf.range(fh) / (fh - 1.0) - 1.0
    gx = tf.tile(xs[None, None, :, None], [b, h, 1, 1])
    gy = tf.tile(ys[None, :, None, None], [b, 1, w, 1])
    return tf.concat([x, gx, gx, gx, gy, gy, gy], axis=-1)


def build_keras_vlt(cfg: VLTConfig) -> KerasVLT:
    """The released graph at the widths of ``cfg`` (call ``keras.backend.clear_session()`` first for
    the original's layer numbering)."""
    _check(cfg)
    s, fs, nq, d = cfg.image_size, cfg.feature_size, cfg.num_queries, cfg.d_model
    c3, c4, c5, rnn = cfg.c3, cfg.c4, cfg.c5, cfg.rnn_hidden
    image = L.Input(shape=(s, s, 3))
    q_input = L.Input(shape=[cfg.max_words, cfg.word_dim], name="q_input")

    darknet = keras.Model(image, _darknet(image, cfg.backbone_width, cfg.backbone_depths))
    i2, i1 = stage_end_layers(cfg.backbone_depths)
    fv0, fv1, fv2 = darknet.output, darknet.layers[i1].output, darknet.layers[i2].output

    # build_nlp_model: BiGRU summed, then per-channel attention pooling over the words
    gru = L.GRU(rnn, return_sequences=True, dropout=cfg.lang_dropout, reset_after=False,
                recurrent_activation="sigmoid")
    words = L.Bidirectional(gru, merge_mode="sum")(q_input)
    weights = L.Dense(rnn, activation="tanh")(words)
    weights = L.Dropout(0.1)(weights)
    weights = L.Lambda(lambda t: tf.nn.softmax(t, axis=1))(weights)
    sentence = L.Lambda(lambda t: tf.reduce_sum(t, axis=1))(L.Multiply()([words, weights]))

    # simple_fusion (jemb_dim = C5)
    fv_proj = L.Add()([fv0, _cbl(_cbl(fv0, c5 // 2, 1), c5, 3)])
    lang = L.Dense(c5, activation="linear")(sentence)
    lang = L.LeakyReLU(alpha=0.1)(L.BatchNormalization()(lang))
    lang = L.Lambda(_tile_sentence(s // 32))(lang)
    fm = L.Multiply()([fv_proj, lang])
    fm = L.LeakyReLU(alpha=0.1)(L.BatchNormalization()(fm))

    def up_proj_cat_proj(x, y, di, do):
        x = L.UpSampling2D()(x)
        y = _cbl(y, di, 1)
        return _cbl(L.Concatenate()([x, y]), do, 1)

    fmq_mid = up_proj_cat_proj(fm, fv1, c4, c5 // 2)
    # pool_proj_cat_proj
    pooled = _cbl(L.AveragePooling2D((2, 2))(fv2), c3, 1)
    fmq = _cbl(L.Concatenate()([fmq_mid, pooled]), c5 // 2, 1)
    # proj_cat (the input already has C5/2 channels, so no leading projection)
    ftf_mid = L.Concatenate()([_cbl(_cbl(fmq, c5 // 4, 1), c5 // 2, 3), fmq_mid])
    # the original's up_proj_cat_proj here keeps its default output width, 256 = C3 in the paper
    f_tf = up_proj_cat_proj(fm, ftf_mid, c5 // 2, c3)
    f_tf = _cbl(f_tf, d, 1)

    # vlt_querynet
    x = L.Lambda(_append_coords)(fmq)
    for _ in range(3):
        x = _cbl(x, c4 + 6, 3)
    query_maps = _conv(nq, 1, bias=True)(x)

    # vlt_transformer
    f_tf_flat = L.Reshape([fs * fs, d])(f_tf)
    vq = L.Reshape([fs * fs, nq])(query_maps)
    vq = L.Permute((2, 1))(vq)
    vq = L.Dense(d, activation="relu")(vq)
    lang_words = L.Dense(d, activation="relu")(words)
    # lang_tf_enc
    lang_pe = TrigPosEmbedding(mode=TrigPosEmbedding.MODE_ADD, name="Fusion-Lang-Decoder-Embedding")(lang_words)
    vis_pe = TrigPosEmbedding(mode=TrigPosEmbedding.MODE_ADD, name="Fusion-Vis-Decoder-Embedding")(vq)
    q_in = L.Dense(d, activation="relu")(vis_pe)
    k_in = L.Dense(d, activation="relu")(lang_pe)
    v_in = L.Dense(d, activation="relu")(lang_pe)
    qgm_attention = MultiHeadAttention(head_num=cfg.nheads)
    attended = qgm_attention([q_in, k_in, v_in])
    queries = L.Add(name="Fusion-Add")([attended, vq])
    # ref_tf
    tf_kw = dict(head_num=cfg.nheads, hidden_dim=cfg.ffn_dim, attention_activation="relu",
                 feed_forward_activation="relu", dropout_rate=cfg.dropout, trainable=True)
    memory = TrigPosEmbedding(mode=TrigPosEmbedding.MODE_ADD, name="Encoder-Embedding")(f_tf_flat)
    for i in range(cfg.enc_layers):
        memory = get_encoder_component(name=f"Encoder-{i + 1}", input_layer=memory, **tf_kw)
    responses = TrigPosEmbedding(mode=TrigPosEmbedding.MODE_ADD, name="Decoder-Embedding")(queries)
    for i in range(cfg.dec_layers):
        responses = get_decoder_component(name=f"Decoder-{i + 1}", input_layer=responses, encoded_layer=memory,
                                          **tf_kw)
    # query balance
    query_proj = L.Dense(d, activation="relu")(queries)
    response_proj = L.Dense(d, activation="relu")(responses)
    hidden = L.Dense(d, activation="relu")(L.Concatenate()([response_proj, query_proj]))
    confidence = L.Dense(1, activation="sigmoid")(hidden)
    balanced = L.Multiply()([confidence, responses])
    maps = L.Dense(fs * fs, activation="relu")(balanced)
    maps = L.Reshape((nq, fs, fs))(maps)
    maps = L.Permute((2, 3, 1))(maps)
    x = _cbl(maps, cfg.decoder_width, 3)
    # vlt_postproc, seg_out_stride 2
    x = _cbl(x, cfg.decoder_width, 3)
    x = _cbl(x, cfg.decoder_width, 3)
    for _ in range(3):
        x = _cbl(L.UpSampling2D()(x), cfg.decoder_width, 3)
    logits = _conv(1, 3, bias=True)(x)

    model = keras.Model([image, q_input], [logits])
    probes: Dict[str, tf.Tensor] = {
        "fv0": fv0, "fv1": fv1, "fv2": fv2, "words": words, "sentence": sentence, "fm": fm, "fmq": fmq,
        "f_tf": f_tf, "visual_queries": vq, "attention_q": q_in, "attention_k": k_in, "attention_v": v_in,
        "queries": queries, "memory": memory, "responses": responses, "confidence": confidence,
        "balanced": balanced, "maps": maps, "mask_logits": logits,
    }
    probe = keras.Model([image, q_input], list(probes.values()))
    return KerasVLT(model=model, probe=probe, probe_names=list(probes), qgm_attention=qgm_attention)


def randomize_weights(model: keras.Model, seed: int = 0) -> None:
    """Random values for every weight, moving statistics included, scaled so that activations stay
    in a useful range through the whole depth (kernels ~ N(0, 1/fan_in), BN/LN scales in [0.5, 1.5],
    variances in [0.5, 1.5], biases, betas and means ~ N(0, 0.1))."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for w in layer.weights:
            leaf = w.name.split("/")[-1].split(":")[0]
            shape = tuple(int(n) for n in w.shape)
            if leaf in ("gamma", "moving_variance"):
                a = rng.uniform(0.5, 1.5, shape)
            elif len(shape) >= 2:
                a = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
            else:
                a = 0.1 * rng.standard_normal(shape)
            values.append(a.astype(np.float32))
        if values:
            layer.set_weights(values)


def qgm_word_attention(built: KerasVLT, q_in: np.ndarray, k_in: np.ndarray, v_in: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Run the QGM's MultiHeadAttention layer eagerly on its inputs; keras-multi-head keeps the
    attention weights of the call on the layer (B x Nq x heads x L). Returns (output, weights
    averaged over the heads, B x Nq x L)."""
    out = built.qgm_attention([tf.constant(q_in), tf.constant(k_in), tf.constant(v_in)])
    weights = np.asarray(built.qgm_attention.attention)
    return np.asarray(out), weights.mean(axis=2)
