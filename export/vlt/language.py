"""Language encoder: frozen GloVe word table, Keras-semantics bidirectional GRU and per-channel
attention pooling into a sentence vector (the 'words in', 'language encoder' and 'sentence vector'
rows of docs/vlt.md §1)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import VLTConfig


class WordEmbedding(nn.Module):
    """A frozen word table held inside the graph: token ids -> vectors.

    Row 0 (padding) is all zeros, row 1 is the unknown word. The table is a buffer, not a parameter,
    so no optimiser ever touches it and it is exported into the ONNX graph as a constant.

    Arguments:
      vocab_size (int): rows of the table.
      dim (int): E, the vector size.
    """

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("table", torch.zeros(vocab_size, dim), persistent=True)

    def load_vectors(self, vectors: torch.Tensor) -> None:
        assert vectors.shape == self.table.shape, f"expected {tuple(self.table.shape)}, got {tuple(vectors.shape)}"
        with torch.no_grad():
            self.table.copy_(vectors)
            self.table[0].zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (torch.Tensor): B x L int64 -> B x L x E."""
        return F.embedding(tokens, self.table)


class KerasGRUCell(nn.Module):
    """One GRU direction with Keras semantics (``reset_after=False``), gate order z, r, h.

      z = act_r(x Wz + h Uz + bz);  r = act_r(x Wr + h Ur + br)
      hh = tanh(x Wh + (r * h) Uh + bh);  h' = z * h + (1 - z) * hh

    The reset gate is applied *before* the recurrent matmul (PyTorch's nn.GRU applies it after), so
    the authors' Keras kernels load into ``kernel``/``recurrent_kernel``/``bias`` as they are.

    Arguments:
      input_dim (int): E.
      units (int): hidden size.
      recurrent_activation (str): 'sigmoid' (Keras 2.3.1 default) or 'hard_sigmoid' (Keras <= 2.2).
    """

    def __init__(self, input_dim: int, units: int, *, recurrent_activation: str = "hard_sigmoid") -> None:
        super().__init__()
        self.units = units
        self.kernel = nn.Parameter(torch.empty(input_dim, 3 * units))
        self.recurrent_kernel = nn.Parameter(torch.empty(units, 3 * units))
        self.bias = nn.Parameter(torch.zeros(3 * units))
        self.recurrent_activation = recurrent_activation
        nn.init.xavier_uniform_(self.kernel)  # Keras glorot_uniform
        for k in range(3):  # Keras orthogonal, per gate block
            nn.init.orthogonal_(self.recurrent_kernel.data[:, k * units : (k + 1) * units])

    def _gate(self, x: torch.Tensor) -> torch.Tensor:
        if self.recurrent_activation == "hard_sigmoid":
            return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)  # Keras hard_sigmoid
        return torch.sigmoid(x)

    def forward(self, x: torch.Tensor, reverse: bool = False, h0: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Arguments:
          x (torch.Tensor): B x L x E.
          reverse (bool): run from the last word to the first (Keras go_backwards); the outputs are
            returned in the original word order.
          h0 (torch.Tensor | None): B x units initial state (Keras initial_state); zeros when None.
        Returns:
          torch.Tensor: B x L x units, the hidden state after each word.
        """
        b, length, _ = x.shape
        u = self.units
        xp = torch.matmul(x, self.kernel) + self.bias  # B x L x 3U: input projections of all steps
        uz, ur, uh = self.recurrent_kernel.split(u, dim=1)
        urz = torch.cat([uz, ur], dim=1)
        h = x.new_zeros(b, u) if h0 is None else h0
        outs = [h] * length
        steps = range(length - 1, -1, -1) if reverse else range(length)
        for t in steps:
            xz, xr, xh = xp[:, t].split(u, dim=1)
            rz = torch.matmul(h, urz)
            z = self._gate(xz + rz[:, :u])
            r = self._gate(xr + rz[:, u:])
            hh = torch.tanh(xh + torch.matmul(r * h, uh))
            h = z * h + (1.0 - z) * hh
            outs[t] = h
        return torch.stack(outs, dim=1)


class LanguageEncoder(nn.Module):
    """Word table -> BiGRU (forward + backward summed) -> word features H and sentence vector f.

    Arguments:
      vocab_size (int): rows of the frozen word table.
      word_dim (int): E.
      hidden (int): GRU units per direction (1024 in the paper).
      dropout (float): dropout on the GRU input and inside the attention pooling (0.1 in the paper).
      mask_padding (bool): exclude padded words from the pooling softmax.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        word_dim: int,
        hidden: int,
        recurrent_activation: str = "hard_sigmoid",
        dropout: float = 0.1,
        mask_padding: bool = False,
    ) -> None:
        super().__init__()
        self.embedding = WordEmbedding(vocab_size, word_dim)
        self.input_dropout = nn.Dropout(dropout)
        self.forward_gru = KerasGRUCell(word_dim, hidden, recurrent_activation=recurrent_activation)
        self.backward_gru = KerasGRUCell(word_dim, hidden, recurrent_activation=recurrent_activation)
        self.pool_linear = nn.Linear(hidden, hidden)
        self.pool_dropout = nn.Dropout(dropout)
        self.mask_padding = mask_padding
        self.out_dim = hidden

    def forward(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """
        Arguments:
          tokens (torch.Tensor): word ids, shape B x L, right-padded with 0.
        Returns:
          (H, f, pad): word features B x L x U, sentence vector B x U, and the padding mask B x L
          (True on padding) when ``mask_padding`` is on, else None.
        """
        assert tokens.dim() == 2, f"expected B x L token ids, got {tokens.shape}"
        pad = (tokens == 0) if self.mask_padding else None
        x = self.input_dropout(self.embedding(tokens))  # B x L x E
        words = self.forward_gru(x) + self.backward_gru(x, reverse=True)  # B x L x U
        sentence = self._pool(words, pad)
        return words, sentence, pad

    def _pool(self, words: torch.Tensor, pad: Optional[torch.Tensor]) -> torch.Tensor:
        """Per-channel attention pooling: A = softmax_t(drop(tanh(Linear(H)))), f = sum_t A * H."""
        scores = self.pool_dropout(torch.tanh(self.pool_linear(words)))  # B x L x U
        if pad is not None:
            scores = scores.masked_fill(pad[:, :, None], float("-inf"))
        weights = torch.nan_to_num(torch.softmax(scores, dim=1), nan=0.0)  # softmax over L
        return (weights * words).sum(dim=1)  # B x U


def build_language_encoder(cfg: VLTConfig) -> LanguageEncoder:
    return LanguageEncoder(
        vocab_size=cfg.vocab_size,
        word_dim=cfg.word_dim,
        hidden=cfg.rnn_hidden,
        recurrent_activation=cfg.gru_recurrent_activation,
        dropout=cfg.lang_dropout,
        mask_padding=cfg.mask_padding,
    )
