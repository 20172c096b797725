"""CML: collaborative metric learning, users and items as points in one Euclidean space.

Reference: C.-K. Hsieh, L. Yang, Y. Cui, T.-Y. Lin, S. Belongie, D. Estrin. "Collaborative Metric Learning."
WWW 2017 (code: github.com/changun/CollMetric). Loss per (user, positive): hinge
[m + d²(u, i) − d²(u, j)]₊ on the closest of the sampled negatives j, weighted by the WARP rank estimate
log(1 + n_items · #impostors / n_neg). Embeddings are kept in the unit ball: the reference clips every row to
norm ≤ 1 after each step; here the batch's rows are clipped in place before each step and every read goes
through the same projection, so what the model scores with (and distils) is always inside the ball.
Score = −d²(u, i) (same ranking as −d).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from distillrec.models.base import ModelConfig, Recommender
from distillrec.models.registry import register_model


def project_to_ball(x: Tensor, max_norm: float = 1.0) -> Tensor:
    """Scale rows with norm > max_norm back onto the sphere (differentiable; rows inside are unchanged)."""
    norms = x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x * (max_norm / norms).clamp(max=1.0)


@register_model("cml")
class CML(Recommender):
    input_type = "pairwise"

    class Config(ModelConfig):
        # CollMetric example run (CML.py __main__): embed_dim 100, margin 1.9, clip_norm 1, rank weight on,
        # covariance loss off, 20 negatives per positive (N_NEGATIVE); init N(0, 1/√dim).
        embedding_dim: int = Field(100, gt=0)
        margin: float = Field(1.9, gt=0)
        clip_norm: float = Field(1.0, gt=0)
        use_rank_weight: bool = True

    def __init__(self, n_users: int, n_items: int, config: Config | None = None) -> None:
        super().__init__(n_users, n_items, config)
        dim = self.config.embedding_dim
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items, dim)
        with torch.no_grad():
            for emb in (self.user_emb, self.item_emb):
                nn.init.normal_(emb.weight, std=dim**-0.5)
                emb.weight.copy_(project_to_ball(emb.weight, self.config.clip_norm))

    def _users(self, users: Tensor) -> Tensor:
        return project_to_ball(self.user_emb(users), self.config.clip_norm)

    def _items(self, items: Tensor) -> Tensor:
        return project_to_ball(self.item_emb(items), self.config.clip_norm)

    @torch.no_grad()
    def _clip_rows(self, users: Tensor, items: Tensor) -> None:
        """CML's clip_by_norm on the rows this batch touches (they are the only ones the last step moved)."""
        for weight, idx in ((self.user_emb.weight, users), (self.item_emb.weight, items)):
            idx = idx.unique()
            weight[idx] = project_to_ball(weight[idx], self.config.clip_norm)

    def _sq_dist(self, u: Tensor, v: Tensor) -> Tensor:
        """Squared distances of users [B, d] to items [B, d] (-> [B]) or [B, N, d] (-> [B, N])."""
        if v.dim() == 3:
            u = u.unsqueeze(1)
        return (u - v).pow(2).sum(-1)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        users, pos, neg = batch["users"], batch["pos_items"], batch["neg_items"]
        self._clip_rows(users, torch.cat([pos, neg.reshape(-1)]))
        u = self._users(users)
        d_pos = self._sq_dist(u, self._items(pos))  # [B]
        d_neg = self._sq_dist(u, self._items(neg))  # [B, n_neg]
        pair_loss = (self.config.margin + d_pos - d_neg.min(dim=1).values).clamp_min(0.0)
        if self.config.use_rank_weight:
            # a constant weight per pair (no gradient through the impostor count, as in the reference)
            impostors = (self.config.margin + d_pos.unsqueeze(1) - d_neg > 0).float().mean(dim=1).detach()
            pair_loss = pair_loss * torch.log1p(impostors * self.n_items)
        return pair_loss.mean()

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        return -self._sq_dist(self._users(users), self._items(items))

    def full_scores(self, users: Tensor) -> Tensor:
        u = self._users(users)
        # a lookup (a copy), not the weight itself: loss() clips weight rows in place, which must not invalidate
        # a graph that a distiller built from these scores earlier in the same step
        v = self._items(torch.arange(self.n_items, device=users.device))
        # ‖u − v‖² = ‖u‖² − 2 uᵀv + ‖v‖², as one matmul instead of a [B, n_items, d] difference tensor
        return -(u.pow(2).sum(-1, keepdim=True) - 2 * u @ v.T + v.pow(2).sum(-1))

    def user_repr(self, users: Tensor) -> Tensor:
        return self._users(users)

    def item_repr(self, items: Tensor) -> Tensor:
        return self._items(items)
