"""BPR-MF: matrix factorisation trained with the Bayesian Personalised Ranking loss.

Reference: S. Rendle, C. Freudenthaler, Z. Gantner, L. Schmidt-Thieme. "BPR: Bayesian Personalized Ranking from
Implicit Feedback." UAI 2009. Defaults follow the DE-RRD (CIKM'20) teacher on CiteULike: N(0, 0.01) init,
dim 200; that setup trains with Adam lr 1e-3 and weight_decay 1e-3 as the L2 term (an optimiser setting, so it
lives in the training config, not here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distillrec.models.base import ModelConfig, Recommender
from distillrec.models.registry import register_model


def pair_scores(user_emb: Tensor, item_emb: Tensor) -> Tensor:
    """Inner products of [B, d] users with items [B, d] (-> [B]) or [B, N, d] (-> [B, N])."""
    if item_emb.dim() == 2:
        return (user_emb * item_emb).sum(-1)
    return torch.bmm(item_emb, user_emb.unsqueeze(-1)).squeeze(-1)


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    """Mean of -log σ(s⁺ - s⁻) over the batch and every negative; pos [B], neg [B, n_neg]."""
    return -F.logsigmoid(pos_scores.unsqueeze(-1) - neg_scores).mean()


@register_model("bpr")
class BPR(Recommender):
    input_type = "pairwise"

    class Config(ModelConfig):
        embedding_dim: int = Field(200, gt=0)  # DE-RRD teacher on CiteULike (its students use 200·φ, e.g. 20)
        init_std: float = Field(0.01, gt=0)  # DE-RRD: N(0, 0.01)

    def __init__(self, n_users: int, n_items: int, config: Config | None = None) -> None:
        super().__init__(n_users, n_items, config)
        dim = self.config.embedding_dim
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user_emb.weight, std=self.config.init_std)
        nn.init.normal_(self.item_emb.weight, std=self.config.init_std)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        u = self.user_emb(batch["users"])
        pos = pair_scores(u, self.item_emb(batch["pos_items"]))
        neg = pair_scores(u, self.item_emb(batch["neg_items"]))
        return bpr_loss(pos, neg)

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        return pair_scores(self.user_emb(users), self.item_emb(items))

    def full_scores(self, users: Tensor) -> Tensor:
        return self.user_emb(users) @ self.item_emb.weight.T

    def repr_tables(self) -> tuple[Tensor, Tensor]:
        return self.user_emb.weight, self.item_emb.weight

    def user_repr(self, users: Tensor) -> Tensor:
        return self.user_emb(users)

    def item_repr(self, items: Tensor) -> Tensor:
        return self.item_emb(items)
