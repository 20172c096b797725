"""RD: Ranking Distillation (Tang & Wang, KDD 2018), on a point-wise student.

The teacher's top-K unobserved items of the instance's user are extra positives with rank weights:
L_RD = −Σ_r w_r·log σ(ŷ_{π_r}), mean over the batch's training instances (each (user, item) pair, so a user
counts as often as it appears, as in the authors' per-instance code). Weights: w^a_r ∝ exp(−r/λ) (normalised
to sum 1); after ``dynamic_start_epoch`` also w^b_r = tanh(max(μ·(r̂_r − r), 0)), where the student's rank r̂
of the r-th teacher item is estimated from n probe items drawn uniformly once per epoch:
r̂ = ⌊(n_items − 1)·#{probes scored above it}/n⌋. The authors' code does not renormalise w^a·w^b
(``renormalize=False``); the paper does. Weights carry no gradient.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.distill.base import Distiller, MethodConfig, batch_field, register_method
from distillrec.distill.knowledge import KnowledgeSpec, TeacherKnowledge
from distillrec.distill.losses import soft_bce_loss
from distillrec.models.base import Recommender


class RDConfig(MethodConfig):
    """The authors' code defaults: K = 10, λ = 1, μ = 0.1, n = 100 probes, dynamic weights from epoch 10,
    α = 1 added to an unscaled base loss. The code already averages over the batch, so no λ rescaling."""

    lambda_rd: float = 1.0  # α (teach_alpha)
    n_topk: int = 10  # K
    position_temperature: float = 1.0  # λ in w^a ∝ exp(−r/λ)
    mu: float = 0.1
    n_probes: int = 100
    dynamic_start_epoch: int = 10
    renormalize: bool = False


@register_method("rd")
class RD(Distiller):
    Config = RDConfig

    def __init__(self, student: Recommender, knowledge: TeacherKnowledge, dataset: Dataset,
                 config: RDConfig | Mapping[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(student, knowledge, dataset, config, seed)
        c = self.config
        self.k = k = self.list_width("user_topk", c.n_topk, "n_topk")  # shorter on a small catalogue
        ranks = torch.arange(k, dtype=torch.float32, device=self.device)
        w = torch.exp(-ranks / c.position_temperature)
        self.register_buffer("position_weights", w / w.sum(), persistent=False)
        self.register_buffer("probes", torch.zeros(0, c.n_probes, dtype=torch.long, device=self.device),
                             persistent=False)
        self.dynamic = False

    @classmethod
    def knowledge_spec(cls, config: RDConfig) -> KnowledgeSpec:
        return KnowledgeSpec(n_user_topk=config.n_topk)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.dynamic = self.epoch_index(epoch) >= self.config.dynamic_start_epoch
        if self.dynamic:
            self.probes = torch.randint(0, self.n_items, (self.n_users, self.config.n_probes),
                                        generator=self.generator(), device=self.device)

    def kd_terms(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        c, k = self.config, self.k
        users = batch_field(batch, "users", self.name)
        top = self.teacher_user_topk[users, :k]
        weights = self.position_weights.expand(top.shape)
        if self.dynamic:
            top_scores = self.list_scores(users, top, "user")
            with torch.no_grad():  # the probes only estimate ranks: no gradient, so no backward pass
                probe_scores = self.list_scores(users, self.probes[users], "user")
            above = (probe_scores.unsqueeze(1) > top_scores.detach().unsqueeze(2)).sum(dim=2)
            est_rank = torch.floor((self.n_items - 1) * above.float() / c.n_probes)
            teacher_rank = torch.arange(k, device=self.device)
            weights = weights * torch.tanh((c.mu * (est_rank - teacher_rank)).clamp(min=0))
            if c.renormalize:
                weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-12)
        else:
            top_scores = self.list_scores(users, top, "user")
        loss = soft_bce_loss(top_scores, torch.ones_like(top_scores), weights, row_reduce="sum")
        return {"rd": c.lambda_rd * loss}
