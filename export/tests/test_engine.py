import numpy as np
import torch

from export.engine import collate, dice_loss, forward_batch, train_one_step
from export.vlt.tokenizer import PAD, UNK, Tokenizer


def _samples(rng):
    """Two scenes: the first carries three expressions (one image array), the second one."""
    a = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    b = rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
    masks = [rng.integers(0, 2, size=img.shape[:2], dtype=np.uint8) for img in (a, a, a, b)]
    words = ["the red one", "the blue circle", "the leftmost star", "the big square"]
    return [{"image": img, "mask": m, "expression": w} for img, m, w in zip((a, a, a, b), masks, words)]


def _tokenizer():
    return Tokenizer([PAD, UNK, "the", "red", "one", "blue", "circle", "leftmost", "star", "big", "square"], 6)


def test_collate_shares_one_image_row_per_scene():
    samples = _samples(np.random.default_rng(0))
    plain = collate(samples, tokenizer=_tokenizer(), image_size=64, mask_size=32)
    shared = collate(samples, tokenizer=_tokenizer(), image_size=64, mask_size=32, share_images=True)
    assert plain["image"].shape[0] == 4 and "image_index" not in plain
    assert shared["image"].shape[0] == 2
    assert shared["image_index"].tolist() == [0, 0, 0, 1]
    # Every expression sees exactly the pixels and target it would see without sharing.
    assert torch.equal(shared["image"][shared["image_index"]], plain["image"])
    assert torch.equal(shared["target"], plain["target"]) and torch.equal(shared["tokens"], plain["tokens"])


def _micro_samples(cfg, seed):
    """``_samples`` with expressions in the micro model's vocabulary, and its tokenizer."""
    samples = _samples(np.random.default_rng(seed))
    for s, e in zip(samples, ["w1 w2", "w3", "w4 w5 w6", "w7"]):
        s["expression"] = e
    return samples, Tokenizer([PAD, UNK] + [f"w{i}" for i in range(cfg.vocab_size - 2)], cfg.max_words)


def test_forward_batch_with_shared_images_equals_one_copy_per_expression(micro_model):
    model, cfg = micro_model
    model.eval()  # BatchNorm running statistics: the only difference sharing makes is in train mode
    samples, tok = _micro_samples(cfg, 1)
    plain = collate(samples, tokenizer=tok, image_size=cfg.image_size, mask_size=cfg.mask_size)
    shared = collate(samples, tokenizer=tok, image_size=cfg.image_size, mask_size=cfg.mask_size, share_images=True)
    with torch.no_grad():
        a = forward_batch(model, plain["image"], plain)
        b = forward_batch(model, shared["image"], shared)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_dice_loss_scores_overlap():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:5, 2:5] = 1
    perfect = torch.where(target > 0, 20.0, -20.0)
    assert dice_loss(perfect, target).item() < 1e-3
    assert dice_loss(-perfect, target).item() > 0.95
    half = perfect.clone()
    half[:, :, 2:5, 2:4] = -20.0  # a third of the target found
    assert 0.4 < dice_loss(half, target).item() < 0.6


def test_train_step_with_dice_and_shared_images_lowers_the_loss(micro_model):
    model, cfg = micro_model
    samples, tok = _micro_samples(cfg, 2)
    batch = collate(samples, tokenizer=tok, image_size=cfg.image_size, mask_size=cfg.mask_size, share_images=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    kw = dict(weight_decay=0.0, channels_last=False, dice_weight=1.0)
    first = train_one_step(model, batch, opt, **kw)
    for _ in range(15):
        last = train_one_step(model, batch, opt, **kw)
    assert {"loss", "dice", "train_miou"} <= set(first)
    assert last["loss"] < first["loss"] and last["dice"] < first["dice"]
