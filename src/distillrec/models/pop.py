"""Most-popular baseline: every user gets the items ranked by their number of training interactions.

Nothing is learned by gradient; the counts are a persistent buffer, so a saved ``pop`` reloads as it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.models.base import ModelConfig, Recommender
from distillrec.models.registry import register_model


@register_model("pop")
class Pop(Recommender):
    input_type = "none"

    class Config(ModelConfig):
        pass

    def __init__(self, n_users: int, n_items: int, config: Config | None = None) -> None:
        super().__init__(n_users, n_items, config)
        self.register_buffer("counts", torch.zeros(n_items))

    @classmethod
    def from_dataset(cls, dataset: Dataset, **hparams: Any) -> Pop:
        model = cls(dataset.n_users, dataset.n_items, cls.Config(**hparams))
        model.fit(dataset.train)
        return model

    def fit(self, train: sp.spmatrix) -> Pop:
        """Count each item's training interactions (users × items matrix)."""
        if train.shape != (self.n_users, self.n_items):
            raise ValueError(f"training matrix has shape {train.shape}, expected ({self.n_users}, {self.n_items})")
        counts = np.asarray((sp.csr_matrix(train) != 0).sum(axis=0), dtype=np.float32).ravel()
        self.counts = torch.from_numpy(counts).to(self.counts.device)
        return self

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        # input_type "none": the trainer does not optimise it; a constant keeps generic code paths working
        return torch.zeros((), device=self.counts.device)

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        return self.counts[items]

    def full_scores(self, users: Tensor) -> Tensor:
        # a real copy, not an expand() view: callers mask seen items in place
        return self.counts.unsqueeze(0).repeat(len(users), 1)

    def user_repr(self, users: Tensor) -> Tensor:
        # one constant coordinate, so that user_repr · item_repr reproduces the scores
        return torch.ones(len(users), 1, device=self.counts.device)

    def item_repr(self, items: Tensor) -> Tensor:
        return self.counts[items].unsqueeze(-1)
