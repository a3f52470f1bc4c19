import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from export.vlt import VLTConfig, build_vlt  # noqa: E402


def micro_config(**kw) -> VLTConfig:
    """A config small enough to build and run in milliseconds, with every component present."""
    base = dict(image_size=64, max_words=6, backbone_width=4, backbone_depths=(1, 1, 1, 1, 1), vocab_size=40,
                word_dim=8, rnn_hidden=16, gru_recurrent_activation="sigmoid", mask_padding=True, d_model=16,
                nheads=2, ffn_dim=16, num_queries=4, decoder_width=8, dropout=0.0, lang_dropout=0.0)
    base.update(kw)
    return VLTConfig(**base)


@pytest.fixture
def micro_model():
    torch.manual_seed(0)
    cfg = micro_config()
    model = build_vlt(cfg)
    model.language_encoder.embedding.load_vectors(torch.randn(cfg.vocab_size, cfg.word_dim))
    return model, cfg
