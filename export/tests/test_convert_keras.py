"""The Keras -> PyTorch converter on an .h5 laid out like the released VLT checkpoints.

``keras_paper_graph`` below re-creates, layer by layer, what model/vlt_model.py (yolo_body) of
henghuiding/Vision-Language-Transformer builds, with the names Keras 2.3.1 gives those layers (each
unnamed kind numbered in creation order from 1 after K.clear_session()) and the weight names and
shapes their build() methods create (Conv2D kernel H x W x I x O, Dense kernel I x O, GRU kernel
E x 3U / recurrent_kernel U x 3U / bias 3U inside Bidirectional, keras-multi-head '<name>_Wq' ...,
keras-position-wise-feed-forward '<name>_W1' ..., keras-layer-normalization gamma/beta). It is
written from the original code, independently of the converter's table, and is written to disk in
Keras' save_weights layout (root attribute layer_names, per-layer attribute weight_names).
"""

from collections import defaultdict
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py", reason="h5py is not installed")

from export.convert_keras import convert_weights, read_keras_h5, run_convert  # noqa: E402
from export.vlt import VLTConfig  # noqa: E402

Spec = List[Tuple[str, List[Tuple[str, Tuple[int, ...]]]]]


class _KerasNames:
    """Keras' automatic layer names (snake-case class name + per-class counter) and weight names."""

    def __init__(self) -> None:
        self.count: Dict[str, int] = defaultdict(int)
        self.layers: Spec = []

    def name(self, kind: str) -> str:
        self.count[kind] += 1
        return f"{kind}_{self.count[kind]}"

    def layer(self, name: str, weights: List[Tuple[str, Tuple[int, ...]]] = ()) -> str:
        self.layers.append((name, [(f"{name}/{w}:0", s) for w, s in weights]))
        return name

    def other(self, kind: str) -> None:
        self.layer(self.name(kind))

    def conv(self, cin: int, cout: int, k: int, bias: bool = False) -> None:  # DarknetConv2D
        w = [("kernel", (k, k, cin, cout))] + ([("bias", (cout,))] if bias else [])
        self.layer(self.name("conv2d"), w)

    def bn(self, c: int) -> None:
        self.layer(self.name("batch_normalization"),
                   [("gamma", (c,)), ("beta", (c,)), ("moving_mean", (c,)), ("moving_variance", (c,))])

    def cbl(self, cin: int, cout: int, k: int) -> None:  # DarknetConv2D_BN_Leaky
        self.conv(cin, cout, k)
        self.bn(cout)
        self.other("leaky_re_lu")

    def dense(self, din: int, dout: int) -> None:
        self.layer(self.name("dense"), [("kernel", (din, dout)), ("bias", (dout,))])

    def mha(self, name: str, d: int) -> None:  # keras-multi-head MultiHeadAttention
        ws = []
        for p in ("q", "k", "v", "o"):
            ws += [(f"{name}_W{p}", (d, d)), (f"{name}_b{p}", (d,))]
        self.layer(name, ws)

    def ffn(self, name: str, d: int, units: int) -> None:
        self.layer(name, [(f"{name}_W1", (d, units)), (f"{name}_b1", (units,)),
                          (f"{name}_W2", (units, d)), (f"{name}_b2", (d,))])

    def ln(self, name: str, d: int) -> None:
        self.layer(name, [("gamma", (d,)), ("beta", (d,))])


def keras_paper_graph(*, nq: int = 16, feat: int = 26, embed: int = 300, rnn: int = 1024) -> Spec:
    g = _KerasNames()
    g.layer("input_1")
    g.layer("q_input")
    # darknet_body
    g.cbl(3, 32, 3)
    c = 32
    for nf, nb in ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)):  # resblock_body
        g.other("zero_padding2d")
        g.cbl(c, nf, 3)
        for _ in range(nb):
            g.cbl(nf, nf // 2, 1)
            g.cbl(nf // 2, nf, 3)
            g.other("add")
        c = nf
    for cin, cout, k in ((1024, 512, 1), (512, 1024, 3)) * 3:
        g.cbl(cin, cout, k)
    # build_nlp_model: Bidirectional(GRU(rnn, return_sequences=True, dropout=0.1), merge_mode='sum')
    bi = g.name("bidirectional")
    gru = []
    for d in ("forward", "backward"):
        gru += [(f"{d}_gru_1/kernel", (embed, 3 * rnn)), (f"{d}_gru_1/recurrent_kernel", (rnn, 3 * rnn)),
                (f"{d}_gru_1/bias", (3 * rnn,))]
    g.layer(bi, gru)
    g.dense(rnn, rnn)  # Dense(rnn, tanh)
    for kind in ("dropout", "lambda", "multiply", "lambda"):
        g.other(kind)
    # simple_fusion(Fv0, fq, jemb_dim=1024)
    g.cbl(1024, 512, 1)
    g.cbl(512, 1024, 3)
    g.other("add")
    g.dense(rnn, 1024)
    g.bn(1024)
    g.other("leaky_re_lu")
    g.other("lambda")
    g.other("multiply")
    g.bn(1024)
    g.other("leaky_re_lu")
    # up_proj_cat_proj(Fm, Fv1, 512, 512)
    g.other("up_sampling2d")
    g.cbl(512, 512, 1)
    g.other("concatenate")
    g.cbl(1024 + 512, 512, 1)
    # pool_proj_cat_proj(Fm_mid_query, Fv2, 256, 512)
    g.other("average_pooling2d")
    g.cbl(256, 256, 1)
    g.other("concatenate")
    g.cbl(512 + 256, 512, 1)
    # proj_cat(Fm_query, Fm_mid_query, 512)
    g.cbl(512, 256, 1)
    g.cbl(256, 512, 3)
    g.other("concatenate")
    # up_proj_cat_proj(Fm, Fm_mid_tf, 512) (do = 256)
    g.other("up_sampling2d")
    g.cbl(1024, 512, 1)
    g.other("concatenate")
    g.cbl(1024 + 512, 256, 1)
    g.cbl(256, 256, 1)  # F_tf, hidden_dim
    # vlt_querynet
    g.other("lambda")
    for _ in range(3):
        g.cbl(518, 518, 3)
    g.conv(518, nq, 1, bias=True)
    # vlt_transformer
    for kind in ("reshape", "reshape", "permute"):
        g.other(kind)
    g.dense(feat * feat, 256)  # query_flat
    g.dense(rnn, 256)  # lang_feat
    # lang_tf_enc
    g.layer("Fusion-Lang-Decoder-Embedding")
    g.layer("Fusion-Vis-Decoder-Embedding")
    g.dense(256, 256)  # q_inp
    g.dense(256, 256)  # k_inp
    g.dense(256, 256)  # v_inp
    g.mha(g.name("multi_head_attention"), 256)
    g.layer("Fusion-Add")
    # ref_tf
    g.layer("Encoder-Embedding")
    for i in (1, 2):
        n = f"Encoder-{i}-MultiHeadSelfAttention"
        g.mha(n, 256)
        g.layer(f"{n}-Dropout")
        g.layer(f"{n}-Add")
        g.ln(f"{n}-Norm", 256)
        n = f"Encoder-{i}-FeedForward"
        g.ffn(n, 256, 256)
        g.layer(f"{n}-Dropout")
        g.layer(f"{n}-Add")
        g.ln(f"{n}-Norm", 256)
    g.layer("Decoder-Embedding")
    for i in (1, 2):
        for part in ("MultiHeadSelfAttention", "MultiHeadQueryAttention"):
            n = f"Decoder-{i}-{part}"
            g.mha(n, 256)
            g.layer(f"{n}-Dropout")
            g.layer(f"{n}-Add")
            g.ln(f"{n}-Norm", 256)
        n = f"Decoder-{i}-FeedForward"
        g.ffn(n, 256, 256)
        g.layer(f"{n}-Dropout")
        g.layer(f"{n}-Add")
        g.ln(f"{n}-Norm", 256)
    g.dense(256, 256)  # query_proj (on decoder_input)
    g.dense(256, 256)  # output_proj (on decoded_layer)
    g.other("concatenate")
    g.dense(512, 256)
    g.dense(256, 1)
    g.other("multiply")
    g.dense(256, feat * feat)
    g.other("reshape")
    g.other("permute")
    g.cbl(nq, 256, 3)  # vlt_transformer, after ref_tf
    # vlt_postproc (seg_out_stride 2)
    g.cbl(256, 256, 3)
    g.cbl(256, 256, 3)
    for _ in range(3):
        g.other("up_sampling2d")
        g.cbl(256, 256, 3)
    g.conv(256, 1, 3, bias=True)
    return g.layers


def write_keras_h5(path, spec: Spec, seed: int = 0) -> Dict[Tuple[str, str], np.ndarray]:
    """Keras 2.3.1 save_weights layout, layers stored in a shuffled order (the converter must not
    depend on it). Returns the values written, per (layer, weight name)."""
    rng = np.random.default_rng(seed)
    period = np.arange(9973, dtype=np.float32) * np.float32(1e-3)  # cheaper than 89 M random draws
    values = {}
    order = list(range(len(spec)))
    rng.shuffle(order)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [spec[i][0].encode("utf8") for i in order]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.3.1"
        for i in order:
            name, weights = spec[i]
            g = f.create_group(name)
            g.attrs["weight_names"] = [w.encode("utf8") for w, _ in weights]
            for w, shape in weights:
                # a value pattern of its own per tensor (offset = its index), so a swap or a wrong
                # transpose shows up as a mismatch
                n = int(np.prod(shape))
                a = (np.resize(period, n) + np.float32(len(values) + 1)).reshape(shape)
                g.create_dataset(w, data=a)
                values[(name, w)] = a
    return values


def _write_glove(path, dim: int = 300) -> None:
    rng = np.random.default_rng(1)
    words = ["the", "man", "on", "left", "woman", "right", "red", "shirt", "dog"]
    path.write_text("".join(w + " " + " ".join(f"{v:.4f}" for v in rng.standard_normal(dim)) + "\n" for w in words))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keras")
    spec = keras_paper_graph(nq=16, feat=26)
    values = write_keras_h5(tmp / "best_map.h5", spec)
    _write_glove(tmp / "glove.txt")
    model, report = run_convert(h5=tmp / "best_map.h5", out=tmp / "ckpt.pt", glove=str(tmp / "glove.txt"),
                                max_words=15, data_words=["man", "left", "zebra"], vocab_top_n=5)
    return tmp, spec, values, model, report


def _expected(source: str, key: str, a: np.ndarray) -> np.ndarray:
    """The documented layout change for one tensor."""
    if a.ndim == 4:
        return a.transpose(3, 2, 0, 1)  # conv H x W x I x O -> O x I x H x W
    if a.ndim == 2 and "_gru" not in key:
        return a.T  # dense / attention / feed-forward I x O -> O x I
    return a  # GRU (Keras layout kept), biases, norms


def test_every_tensor_of_the_original_graph_is_mapped(converted):
    _, spec, values, model, report = converted
    n_tensors = sum(len(w) for _, w in spec)
    assert report["keras_tensors"] == n_tensors == len(values)
    assert report["keras_tensors_mapped"] == n_tensors, "100 % of the Keras tensors must be used"
    sources = list(report["filled"].values())
    assert len(sources) == len(set(sources)) == n_tensors, "each Keras tensor fills exactly one parameter"
    n_values = sum(int(np.prod(s)) for _, ws in spec for _, s in ws)
    assert report["keras_values"] == n_values
    # every parameter and buffer is filled, except the word table (the Keras graph takes vectors)
    state = model.state_dict()
    left = {k for k in state if k not in report["filled"] and not k.endswith("num_batches_tracked")}
    assert left == {"language_encoder.embedding.table"}
    trainable = sum(p.numel() for p in model.parameters())
    moving = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert trainable + moving == n_values


def test_values_round_trip_into_the_right_parameters(converted):
    _, _, values, model, report = converted
    state = model.state_dict()
    for key, source in report["filled"].items():
        layer, weight = source.split("/", 1)
        want = _expected(source, key, values[(layer, weight)])
        np.testing.assert_array_equal(state[key].numpy(), want, err_msg=f"{key} <- {source}")


@pytest.mark.parametrize("key,source", [
    ("backbone.stem.0.weight", "conv2d_1/conv2d_1/kernel:0"),
    ("backbone.stages.4.4.conv2.0.weight", "conv2d_52/conv2d_52/kernel:0"),
    ("backbone.head.0.0.weight", "conv2d_53/conv2d_53/kernel:0"),
    ("backbone.head.5.1.running_var", "batch_normalization_58/batch_normalization_58/moving_variance:0"),
    ("fusion.refine.0.0.weight", "conv2d_59/conv2d_59/kernel:0"),
    ("fusion.lang_bn.weight", "batch_normalization_61/batch_normalization_61/gamma:0"),
    ("fusion.fuse_bn.running_mean", "batch_normalization_62/batch_normalization_62/moving_mean:0"),
    ("fusion.fv1_proj.1.bias", "batch_normalization_63/batch_normalization_63/beta:0"),
    ("fusion.tf_out.1.0.weight", "conv2d_69/conv2d_69/kernel:0"),
    ("qgm.query_maps.bias", "conv2d_73/conv2d_73/bias:0"),
    ("mask_decoder.convs.0.0.weight", "conv2d_74/conv2d_74/kernel:0"),
    ("mask_decoder.out.weight", "conv2d_80/conv2d_80/kernel:0"),
    ("language_encoder.pool_linear.weight", "dense_1/dense_1/kernel:0"),
    ("fusion.lang_proj.bias", "dense_2/dense_2/bias:0"),
    ("qgm.map_to_vector.weight", "dense_3/dense_3/kernel:0"),
    ("qgm.lang_proj.weight", "dense_4/dense_4/kernel:0"),
    ("qgm.q_in.weight", "dense_5/dense_5/kernel:0"),
    ("qgm.k_in.weight", "dense_6/dense_6/kernel:0"),
    ("qgm.v_in.bias", "dense_7/dense_7/bias:0"),
    ("qbm.query_proj.weight", "dense_8/dense_8/kernel:0"),
    ("qbm.response_proj.weight", "dense_9/dense_9/kernel:0"),
    ("qbm.confidence.weight", "dense_11/dense_11/kernel:0"),
    ("mask_decoder.response_to_map.weight", "dense_12/dense_12/kernel:0"),
    ("language_encoder.forward_gru.kernel", "bidirectional_1/bidirectional_1/forward_gru_1/kernel:0"),
    ("language_encoder.backward_gru.recurrent_kernel", "bidirectional_1/bidirectional_1/backward_gru_1/recurrent_kernel:0"),
    ("qgm.attention.k_proj.weight", "multi_head_attention_1/multi_head_attention_1/multi_head_attention_1_Wk:0"),
    ("transformer.encoder.1.self_attn.out_proj.bias",
     "Encoder-2-MultiHeadSelfAttention/Encoder-2-MultiHeadSelfAttention/Encoder-2-MultiHeadSelfAttention_bo:0"),
    ("transformer.encoder.0.ffn.linear2.weight", "Encoder-1-FeedForward/Encoder-1-FeedForward/Encoder-1-FeedForward_W2:0"),
    ("transformer.decoder.1.cross_attn.q_proj.weight",
     "Decoder-2-MultiHeadQueryAttention/Decoder-2-MultiHeadQueryAttention/Decoder-2-MultiHeadQueryAttention_Wq:0"),
    ("transformer.decoder.0.norm3.weight", "Decoder-1-FeedForward-Norm/Decoder-1-FeedForward-Norm/gamma:0"),
])
def test_named_layers_land_in_their_modules(converted, key, source):
    """Spot checks where shapes alone cannot tell two layers apart (written from the original code)."""
    assert converted[4]["filled"][key] == source


def test_checkpoint_carries_config_vocabulary_and_glove_table(converted):
    tmp, _, _, model, _ = converted
    ckpt = torch.load(tmp / "ckpt.pt", map_location="cpu", weights_only=False)
    cfg = VLTConfig.from_dict(ckpt["config"])
    assert (cfg.num_queries, cfg.image_size, cfg.max_words, cfg.word_dim) == (16, 416, 15, 300)
    assert cfg.qgm_input_proj and cfg.gru_recurrent_activation == "sigmoid"
    assert set(ckpt["model"]) == set(model.state_dict())
    vocab = ckpt["vocab"]
    assert vocab[:2] == ["<pad>", "<unk>"] and "zebra" in vocab and "man" in vocab
    table = ckpt["model"]["language_encoder.embedding.table"]
    assert table.shape == (len(vocab), 300) and float(table[0].abs().sum()) == 0.0
    assert ckpt["args"]["preset"] == "paper" and ckpt["conversion"]["keras_tensors_mapped"] == ckpt["conversion"]["keras_tensors"]


def test_unmapped_tensor_or_shape_mismatch_fails_loudly(converted):
    tmp, _, _, model, _ = converted
    weights = read_keras_h5(tmp / "best_map.h5")
    extra = dict(weights)
    extra["dense_13"] = [("dense_13/kernel:0", np.zeros((256, 1), np.float32)), ("dense_13/bias:0", np.zeros(1, np.float32))]
    with pytest.raises(ValueError, match="dense layers"):
        convert_weights(extra, model)
    stray = dict(weights)
    stray["Encoder-1-FeedForward-Norm"] = weights["Encoder-1-FeedForward-Norm"] + [
        ("Encoder-1-FeedForward-Norm/scale:0", np.ones(256, np.float32))]
    with pytest.raises(ValueError, match="Encoder-1-FeedForward-Norm"):
        convert_weights(stray, model)
    bad = dict(weights)
    (kname, k), (bname, b) = weights["dense_12"]
    bad["dense_12"] = [(kname, k[:, :100]), (bname, b[:100])]
    with pytest.raises(ValueError, match="shape mismatch"):
        convert_weights(bad, model)



def test_qgm_input_projections_get_gradients():
    """The released graph's q/k/v Dense layers in front of the QGM attention (qgm_input_proj, on in
    the paper preset) take part in the forward pass; off, the state_dict keeps its old keys."""
    from export.tests.conftest import micro_config
    from export.vlt import build_vlt

    cfg = micro_config(qgm_input_proj=True)
    torch.manual_seed(0)
    model = build_vlt(cfg)
    model.language_encoder.embedding.load_vectors(torch.randn(cfg.vocab_size, cfg.word_dim))
    logits, _, _ = model(torch.rand(2, 3, 64, 64), torch.randint(2, cfg.vocab_size, (2, cfg.max_words)))
    logits.sum().backward()
    assert all(float(m.weight.grad.abs().sum()) > 0 for m in (model.qgm.q_in, model.qgm.k_in, model.qgm.v_in))
    assert "qgm.q_in.weight" not in build_vlt(micro_config()).state_dict(), "off by default: old checkpoints load"
