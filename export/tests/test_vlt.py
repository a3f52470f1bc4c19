"""Invariants of the VLT network: shapes of every component, gradients, overfitting, presets."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.engine import referring_loss
from export.tests.conftest import micro_config
from export.vlt import VLTConfig, build_vlt, count_parameters, get_config
from export.vlt.common import ReLUMultiheadAttention
from export.vlt.language import KerasGRUCell


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("length", [4, 9])
def test_component_shapes(batch, length):
    cfg = micro_config(max_words=length)
    model = build_vlt(cfg).eval()
    s, h = cfg.image_size, cfg.feature_size
    image = torch.rand(batch, 3, s, s)
    tokens = torch.randint(1, cfg.vocab_size, (batch, length))
    tokens[:, -1] = 0
    with torch.no_grad():
        fv0, fv1, fv2 = model.backbone(image)
        assert fv0.shape == (batch, cfg.c5, s // 32, s // 32)
        assert fv1.shape == (batch, cfg.c4, s // 16, s // 16)
        assert fv2.shape == (batch, cfg.c3, s // 8, s // 8)
        words, sentence, pad = model.language_encoder(tokens)
        assert words.shape == (batch, length, cfg.rnn_hidden)
        assert sentence.shape == (batch, cfg.rnn_hidden)
        assert pad.shape == (batch, length) and bool(pad[:, -1].all())
        fmq, f_tf = model.fusion(fv0, fv1, fv2, sentence)
        assert fmq.shape == (batch, cfg.c4, h, h)
        assert f_tf.shape == (batch, cfg.d_model, h, h)
        queries, attn = model.qgm(fmq, words, pad)
        assert queries.shape == (batch, cfg.num_queries, cfg.d_model)
        assert attn.shape == (batch, cfg.nheads, cfg.num_queries, length)
        assert torch.allclose(attn.sum(-1), torch.ones(()))
        assert float(attn[..., -1].abs().max()) == 0.0, "padded words must get no attention"
        responses = model.transformer(f_tf, queries)
        assert responses.shape == (batch, cfg.num_queries, cfg.d_model)
        balanced, conf = model.qbm(responses, queries)
        assert balanced.shape == responses.shape and conf.shape == (batch, cfg.num_queries)
        assert bool(((conf > 0) & (conf < 1)).all())
        logits = model.mask_decoder(balanced)
        assert logits.shape == (batch, 1, s // 2, s // 2)
        full = model(image, tokens)
    assert [tuple(t.shape) for t in full] == [(batch, 1, s // 2, s // 2), (batch, cfg.num_queries),
                                              (batch, cfg.num_queries, length)]
    assert all(torch.isfinite(t).all() for t in full)
    assert torch.allclose(full[0], logits, atol=1e-5)


def test_sizes_follow_the_input_size():
    for s in (64, 96, 128):
        cfg = micro_config(image_size=s)
        model = build_vlt(cfg).eval()
        assert model.qgm.map_to_vector.in_features == (s // 16) ** 2
        assert model.mask_decoder.response_to_map.out_features == (s // 16) ** 2
        with torch.no_grad():
            out = model(torch.rand(1, 3, s, s), torch.ones(1, cfg.max_words, dtype=torch.long))
        assert out[0].shape[-1] == s // 2


def test_gradients_reach_every_parameter_and_not_the_glove_table(micro_model):
    model, cfg = micro_model
    model.train()
    image = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    tokens = torch.randint(2, cfg.vocab_size, (2, cfg.max_words))
    logits, conf, attn = model(image, tokens)
    (logits.mean() + conf.mean() + attn.mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"No gradient for {name}"
        assert float(p.grad.abs().sum()) > 0, f"Zero gradient for {name}"
    table = model.language_encoder.embedding.table
    assert not table.requires_grad and table.grad is None
    assert all(p is not table for p in model.parameters()), "the GloVe table must not be a parameter"


def test_overfits_one_batch():
    torch.manual_seed(0)
    cfg = micro_config()
    model = build_vlt(cfg)
    model.language_encoder.embedding.load_vectors(torch.randn(cfg.vocab_size, cfg.word_dim))
    image = torch.rand(4, 3, cfg.image_size, cfg.image_size)
    tokens = torch.randint(2, cfg.vocab_size, (4, cfg.max_words))
    target = torch.zeros(4, 1, cfg.mask_size, cfg.mask_size)
    for i in range(4):  # a different square per sample
        target[i, :, 4 * i : 4 * i + 10, 6 + 3 * i : 18 + 3 * i] = 1.0
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = referring_loss(model(image, tokens)[0], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, f"loss went {losses[0]:.1f} -> {losses[-1]:.1f}"


def test_paper_preset_parameter_count():
    cfg = get_config("paper", vocab_size=2)
    model = build_vlt(cfg)
    trainable = count_parameters(model)
    # Keras counts BatchNorm moving statistics as (non-trainable) parameters too.
    bn_stats = sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    # exactly the weights of the released graph's layers, listed from the original code
    from export.tests.test_convert_keras import keras_paper_graph

    released = sum(int(np.prod(shape)) for _, weights in keras_paper_graph() for _, shape in weights)
    assert trainable + bn_stats == released, f"paper preset has {trainable + bn_stats}, the released graph {released}"
    assert 55e6 < count_parameters(model.backbone) < 57e6  # Darknet-53 + six head convs, ~56 M
    assert cfg.feature_size == 26 and cfg.mask_size == 208 and cfg.c5 == 1024
    assert model.qgm.convs[0][0].in_channels == 518
    assert model.transformer.encoder[0].ffn.linear1.out_features == 256


def test_keras_gru_matches_hand_computed_steps_from_a_nonzero_state():
    """Keras' reset_after=False GRU, step by step: the reset gate multiplies h before the recurrent
    matmul. From a non-zero state and over several steps, which a one-step test from h = 0 cannot
    tell from PyTorch's nn.GRU (export/tests/test_keras_roundtrip.py checks it against Keras itself)."""
    torch.manual_seed(0)
    cell = KerasGRUCell(3, 2, recurrent_activation="sigmoid")
    with torch.no_grad():
        cell.bias.normal_()
    x = torch.randn(2, 5, 3)
    h = torch.randn(2, 2)
    got = cell(x, h0=h)
    k, u, b = cell.kernel, cell.recurrent_kernel, cell.bias
    for t in range(5):
        z = torch.sigmoid(x[:, t] @ k[:, :2] + h @ u[:, :2] + b[:2])
        r = torch.sigmoid(x[:, t] @ k[:, 2:4] + h @ u[:, 2:4] + b[2:4])
        hh = torch.tanh(x[:, t] @ k[:, 4:] + (r * h) @ u[:, 4:] + b[4:])
        h = z * h + (1 - z) * hh
        assert torch.allclose(got[:, t], h, atol=1e-6), f"step {t}"


def test_reverse_gru_reads_from_the_end():
    torch.manual_seed(0)
    cell = KerasGRUCell(3, 4)
    x = torch.randn(2, 5, 3)
    backward = cell(x, reverse=True)
    forward_on_flipped = cell(x.flip(1)).flip(1)
    assert torch.allclose(backward, forward_on_flipped, atol=1e-6)


def test_decoder_self_attention_is_causal():
    torch.manual_seed(0)
    attn = ReLUMultiheadAttention(8, 2)
    y = torch.randn(1, 5, 8)
    _, w = attn(y, y, y, causal=True)
    assert float(w[0, :, 0, 1:].abs().max()) == 0.0  # query 0 sees only itself
    changed = y.clone()
    changed[0, 4] += 1.0  # the last query cannot affect earlier ones
    out_a, _ = attn(y, y, y, causal=True)
    out_b, _ = attn(changed, changed, changed, causal=True)
    assert torch.allclose(out_a[0, :4], out_b[0, :4], atol=1e-6)


def test_unknown_config_keys_and_bad_presets_fail_loudly():
    with pytest.raises(ValueError, match="unknown preset"):
        get_config("huge")
    with pytest.raises(ValueError, match="unknown VLTConfig keys"):
        type(get_config("tiny")).from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="multiple of 32"):
        get_config("tiny", image_size=100)


def test_loss_is_summed_over_pixels_per_sample():
    logits = torch.zeros(2, 1, 4, 4)
    target = torch.ones(2, 1, 4, 4)
    expected = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / 2
    assert torch.allclose(referring_loss(logits, target), expected)


def test_ema_tracks_the_model_early_and_averages_later():
    from export.engine import ModelEma

    model = torch.nn.Linear(2, 2)
    ema = ModelEma(model, decay=0.999)
    for _ in range(30):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update(model)
    # With the warm-up the average is dominated by recent weights, not by the initial ones.
    gap = (model.weight - ema.module.weight).abs().max().item()
    assert gap < 5.0, gap
    assert ema.module.weight.requires_grad is False


def test_configs_of_the_removed_probe_options_load_when_off_and_are_refused_when_on():
    saved = {**micro_config().to_dict(), "decoder_skip": False, "decoder_skip_gate": False, "memory_maps": False}
    assert VLTConfig.from_dict(saved) == micro_config()
    with pytest.raises(ValueError, match="unknown VLTConfig keys"):
        VLTConfig.from_dict({**saved, "memory_maps": True})
