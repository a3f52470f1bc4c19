"""Query Balance Module (QBM, VLT paper §3.5): a confidence per query from its response and the
query itself, which scales that query's response. The released graph uses four linear layers
(docs/vlt.md §4): c = sigmoid(L4(ReLU(L3(cat[ReLU(L1(R)), ReLU(L2(Fq))])))), R' = c * R."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import VLTConfig


class QueryBalanceModule(nn.Module):
    """
    Arguments:
      dim (int): D.
    """

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.response_proj = nn.Linear(dim, dim)
        self.query_proj = nn.Linear(dim, dim)
        self.hidden = nn.Linear(2 * dim, dim)
        self.confidence = nn.Linear(dim, 1)

    def forward(self, responses: torch.Tensor, queries: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Arguments:
          responses (torch.Tensor): R, B x Nq x D.
          queries (torch.Tensor): Fq, B x Nq x D.
        Returns:
          (R', c): balanced responses B x Nq x D and confidences B x Nq in (0, 1).
        """
        x = torch.cat([F.relu(self.response_proj(responses)), F.relu(self.query_proj(queries))], dim=-1)
        c = torch.sigmoid(self.confidence(F.relu(self.hidden(x)))).squeeze(-1)  # B x Nq
        return responses * c.unsqueeze(-1), c


def build_qbm(cfg: VLTConfig) -> QueryBalanceModule:
    return QueryBalanceModule(dim=cfg.d_model)
