"""CCD's teacher system: a rank ensemble of several teachers (spec §B.8).

Each member x ranks every item for the user (0-based rank r^x_ui of its full score row); the ensemble score is

    Ŝ_ui = mean_x (1 / (r^x_ui + 1))^β,     β = 0.05

so a member contributes by rank, not by score scale, and heterogeneous teachers (BPR, LightGCN, Mult-VAE)
mix. :class:`RankEnsemble` is a ``Recommender`` (scores only), so evaluation and the teacher-knowledge cache
(top-N lists per user and per item for RRD/IR-RRD) take it like any teacher.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.distill.sampling import ranks_in_rows
from distillrec.models.base import Recommender
from distillrec.utils import DistillrecError


class RankEnsemble(Recommender):
    input_type = "none"

    def __init__(self, members: Sequence[Recommender], beta: float = 0.05) -> None:
        if not members:
            raise DistillrecError("a rank ensemble needs at least one member")
        sizes = {(m.n_users, m.n_items) for m in members}
        if len(sizes) != 1:
            raise DistillrecError(f"ensemble members differ in size: {sorted(sizes)}")
        n_users, n_items = sizes.pop()
        super().__init__(n_users, n_items)
        self.members = nn.ModuleList(members)
        self.beta = beta
        self.eval()  # scores only; evaluation then leaves the members in eval mode (caches kept)

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def hparams(self) -> dict:
        return {"beta": self.beta, "members": [m.name for m in self.members]}

    def importance(self, scores: Tensor) -> Tensor:
        """(1 / (rank + 1))^β of each entry of score rows [B, N]."""
        return torch.exp(-self.beta * torch.log1p(ranks_in_rows(scores).float()))

    def full_scores(self, users: Tensor) -> Tensor:
        total = None
        for m in self.members:
            imp = self.importance(m.full_scores(users).float())
            total = imp if total is None else total + imp
        return total / len(self.members)

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        rows = self.full_scores(users)
        return rows.gather(1, items if items.dim() == 2 else items[:, None]).reshape(items.shape)

    def prepare_eval(self, dataset: Dataset, split: str) -> None:
        for m in self.members:
            m.prepare_eval(dataset, split)

    def num_parameters(self) -> int:
        return sum(m.num_parameters() for m in self.members)
