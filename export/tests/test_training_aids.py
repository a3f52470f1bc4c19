"""Training aids (export/training_aids.py) and the warmup-stable-decay schedule."""

import pytest
import torch

from export.engine import collate, lr_at, save_checkpoint, train_one_step, load_checkpoint
from export.tests.test_engine import _micro_samples
from export.training_aids import EncoderMaskHead, train_word_table
from export.vlt import build_vlt


def test_wsd_schedule_holds_then_decays_and_cosine_is_the_default():
    kw = dict(base_lr=1.0, warmup=0.1, final_ratio=0.01)
    assert lr_at(0.05, **kw) == pytest.approx(0.5)  # warm-up
    assert lr_at(0.5, decay=0.25, **kw) == 1.0 and lr_at(0.74, decay=0.25, **kw) == 1.0  # held
    assert lr_at(0.875, decay=0.25, **kw) == pytest.approx(0.01 + 0.99 * 0.5)  # half-way down the cosine
    assert lr_at(1.0, decay=0.25, **kw) == pytest.approx(0.01)
    assert lr_at(0.5, **kw) < 1.0 and lr_at(0.5, **kw) == lr_at(0.5, decay=1.0, **kw)  # cosine from warm-up


def test_trained_word_table_moves_and_loads_into_a_plain_vlt(micro_model, tmp_path):
    model, cfg = micro_model
    before = model.language_encoder.embedding.table.clone()
    train_word_table(model)
    table = model.language_encoder.embedding.table
    assert isinstance(table, torch.nn.Parameter) and table.requires_grad
    samples, tok = _micro_samples(cfg, 3)
    batch = collate(samples, tokenizer=tok, image_size=cfg.image_size, mask_size=cfg.mask_size, share_images=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_one_step(model, batch, opt, weight_decay=0.0, channels_last=False)
    used = batch["tokens"].unique()
    assert not torch.equal(table.detach()[used], before[used])  # the rows of the batch's words moved
    # same state-dict key as the frozen buffer: a plain VLT loads it
    save_checkpoint(tmp_path / "c.pt", model=model.state_dict(), model_ema=None, config=cfg.to_dict())
    plain, _ = load_checkpoint(tmp_path / "c.pt")
    assert not isinstance(plain.language_encoder.embedding.table, torch.nn.Parameter)
    assert torch.equal(plain.language_encoder.embedding.table, table.detach())


def test_encoder_mask_head_adds_a_loss_that_reaches_the_network(micro_model):
    model, cfg = micro_model
    head = EncoderMaskHead(model, dim=cfg.d_model, feature_size=cfg.feature_size)
    samples, tok = _micro_samples(cfg, 4)
    batch = collate(samples, tokenizer=tok, image_size=cfg.image_size, mask_size=cfg.mask_size, share_images=True)
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=3e-3)
    kw = dict(weight_decay=0.0, channels_last=False, aux=head, aux_weight=0.5)
    first = train_one_step(model, batch, opt, **kw)
    for _ in range(10):
        last = train_one_step(model, batch, opt, **kw)
    assert "aux" in first and last["aux"] < first["aux"]
    # the hook keeps the encoder output only until the loss reads it
    with pytest.raises(AssertionError, match="forward pass"):
        head.loss(batch["target"])
    # the exported network is untouched: a fresh VLT has the same state-dict keys
    assert set(model.state_dict()) == set(build_vlt(cfg).state_dict())


def test_word_similarity_groups_score_the_rows_of_each_table():
    import numpy as np

    from export.tools.word_similarity import GROUPS, group_similarity

    vocab = ["<pad>", "<unk>", "left", "right", "above", "below"]
    same = np.zeros((6, 3), np.float32)
    same[2:] = [1.0, 0.0, 0.0]  # every word the same direction: cosine 1
    apart = same.copy()
    apart[3] = [-1.0, 0.0, 0.0]  # right opposite left
    apart[5] = [0.0, 2.0, 0.0]  # below orthogonal to above
    result = group_similarity({"same": same, "apart": apart}, vocab)
    assert set(result) == {"left/right", "above/below"}  # the other groups have words outside vocab
    assert result["left/right"] == pytest.approx({"same": 1.0, "apart": -1.0})
    assert result["above/below"] == pytest.approx({"same": 1.0, "apart": 0.0})
    assert set(GROUPS["colours"]) >= {"red", "blue"}
