"""IR-RRD (Kang et al., Information Sciences 2021): RRD on the user side plus RRD on the item side.

Item side: per item, K_I users from the teacher's top-N users of that item (rank-discounted, in teacher
order) must be ranked in order and above L_I users drawn uniformly among those neither interacting with the
item nor in its top-N. Both sides are redrawn once per epoch. The item-side term covers every item of the batch
users' sampled user-side lists (interesting ∪ uninteresting), as the authors' code does (spec §8): ~17,000
items per 1,024-triple CiteULike batch. ``item_rows: positives`` takes the batch's positive items instead
(DCD's rule, ~960 rows: ~18× less item-side work, and what this module did before session 15).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import model_validator
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.distill.base import Distiller, MethodConfig, batch_field, register_method
from distillrec.distill.knowledge import KnowledgeSpec, TeacherKnowledge
from distillrec.distill.sampling import PairIndex, RankingLists
from distillrec.models.base import Recommender


class IRRRDConfig(MethodConfig):
    """The authors' defaults: user side N = 500, K = 40, L = 40, T = 10, λ_URRD = 1e-3; item side N = 500,
    K = 20, L = 20, T = 10, λ_IR = 5e-4 — both on summed losses. Mean-reduced here, so rescaled by the
    rows / triples ratio of a 1024-triple CiteULike batch: users 0.70; items of the users' lists 16.6
    (17,042 rows: λ_item 8.3e-3), or positive items 0.94 (λ_item 4.7e-4) with ``item_rows: positives``."""

    lambda_user: float = 7e-4
    n_topk: int = 500
    n_interesting: int = 40
    n_uninteresting: int = 40
    temperature: float = 10.0
    lambda_item: float | None = None  # None: 8.3e-3 for item_rows "lists", 4.7e-4 for "positives"
    item_rows: Literal["lists", "positives"] = "lists"
    n_item_topk: int = 500
    n_item_interesting: int = 20
    n_item_uninteresting: int = 20
    item_temperature: float = 10.0
    sampling: Literal["rank", "top"] = "rank"

    @model_validator(mode="after")
    def _lists_fit(self) -> IRRRDConfig:
        for k, n, what in ((self.n_interesting, self.n_topk, ""), (self.n_item_interesting, self.n_item_topk, "item_")):
            if k > n:
                raise ValueError(f"n_{what}interesting ({k}) must not exceed n_{what}topk ({n})")
        if self.lambda_item is None:
            self.lambda_item = 8.3e-3 if self.item_rows == "lists" else 4.7e-4
        return self


@register_method("ir-rrd")
class IRRRD(Distiller):
    Config = IRRRDConfig

    def __init__(self, student: Recommender, knowledge: TeacherKnowledge, dataset: Dataset,
                 config: IRRRDConfig | Mapping[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(student, knowledge, dataset, config, seed)
        c = self.config
        self.user_lists = RankingLists(self.teacher_user_topk, PairIndex(dataset.train).to(self.device),
                                       c.n_interesting, c.n_uninteresting, c.temperature, c.sampling, name="ir-rrd")
        self.item_lists = RankingLists(self.teacher_item_topk, PairIndex(dataset.train.T).to(self.device),
                                       c.n_item_interesting, c.n_item_uninteresting, c.item_temperature, c.sampling,
                                       name="ir-rrd (item side)")

    @classmethod
    def knowledge_spec(cls, config: IRRRDConfig) -> KnowledgeSpec:
        return KnowledgeSpec(n_user_topk=config.n_topk, n_item_topk=config.n_item_topk)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.user_lists.refresh(self.generator())
        self.item_lists.refresh(self.generator())

    def kd_terms(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        users = batch_field(batch, "users", self.name).unique()
        user_lists = self.user_lists.combined[users]
        if self.config.item_rows == "lists":
            items = user_lists.unique()
        else:
            items = batch_field(batch, "pos_items", self.name).unique()
        user_loss = self.ranked_loss(users, user_lists, self.user_lists.k, "user")
        item_loss = self.ranked_loss_of(items, self.item_lists.combined, self.item_lists.k, "item")
        return {"rrd": self.config.lambda_user * user_loss, "ir_rrd": self.config.lambda_item * item_loss}
