"""The Recommender contract shared by every teacher and student.

A model is a ``torch.nn.Module`` with a typed ``Config`` (pydantic, unknown keys rejected) and:

- ``loss(batch) -> Tensor``: its own training objective, mean over the batch;
- ``score(users, items) -> Tensor``: scores for ``items`` of shape [B] (pairs) or [B, N] (lists);
- ``full_scores(users) -> Tensor [B, n_items]``: every item, for ranking and teacher knowledge;
- ``user_repr(users)`` / ``item_repr(items)``: the representations that representation KD distils.

``input_type`` tells the trainer which batches to build (see ``distillrec.train.batches``):

- ``"pairwise"``: ``{"users": [B], "pos_items": [B], "neg_items": [B, n_neg]}``
- ``"user"``: ``{"users": [B], "rows": [B, n_items] float}`` (autoencoders; rows of the train matrix)
- ``"item"``: ``{"items": [B], "cols": [B, n_users] float}`` (item-based autoencoders)
- ``"sequence"``: ``{"users": [B], "input_seq": [B, L], "target_seq": [B, L], "neg_seq": [B, L]}``;
  sequences are left-padded with ``n_items`` (the padding id), targets are the next item at each position.
- ``"none"``: nothing to learn (``pop``).

Before ranking, the evaluator calls ``prepare_eval(dataset, split)``: graph models cache their propagated
embeddings there, sequential models store each user's history for ``split``. Switching back to training
mode (``model.train()``) drops those caches.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.utils import DistillrecError


class ModelConfig(BaseModel):
    """Hyper-parameters of a model. Subclasses add fields; a typo in a key is an error."""

    model_config = ConfigDict(extra="forbid")


class Recommender(nn.Module):
    name: ClassVar[str] = ""
    input_type: ClassVar[str] = "pairwise"
    Config: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, n_users: int, n_items: int, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.n_users = n_users
        self.n_items = n_items
        self.config = config if config is not None else self.Config()

    @classmethod
    def from_dataset(cls, dataset: Dataset, **hparams: Any) -> Recommender:
        """Build from a data set; models that need the training graph or sequences override this."""
        return cls(dataset.n_users, dataset.n_items, cls.Config(**hparams))

    # -- the contract -------------------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        raise NotImplementedError

    def full_scores(self, users: Tensor) -> Tensor:
        raise NotImplementedError

    def user_repr(self, users: Tensor) -> Tensor:
        raise NotImplementedError

    def item_repr(self, items: Tensor) -> Tensor:
        raise NotImplementedError

    def repr_tables(self) -> tuple[Tensor, Tensor] | None:
        """(every user's repr [n_users, d], every item's [n_items, d]) for this step, when the scores are their
        dot products; list distillation then scores long lists without a gather per (row, column) pair.
        Default: None (the pair form of ``score`` is used)."""
        return None

    def init_from(self, other: Recommender) -> None:
        """Start from another trained model's weights (``RunConfig.init_from``). Default: not supported."""
        raise DistillrecError(f"{type(self).__name__} cannot be initialised from a {type(other).__name__} run")

    @contextmanager
    def training_step(self) -> Iterator[None]:
        """The forward of one optimiser step. A distillation loss scores the student several times per step (its
        base loss, then each list side); a model whose scores all come from one costly pass (LightGCN's
        propagation) runs that pass once for the whole scope. Default: nothing to share."""
        yield

    def prepare_eval(self, dataset: Dataset, split: str) -> None:
        """Cache whatever ranking needs (propagated embeddings, histories). Default: nothing."""

    def train(self, mode: bool = True) -> Recommender:
        if mode:
            self.clear_cache()
        return super().train(mode)

    def clear_cache(self) -> None:
        """Drop caches built by ``prepare_eval``."""

    # -- conveniences -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def hparams(self) -> dict[str, Any]:
        return self.config.model_dump()
