"""CCD's stage 1 (spec §B.5): the fresh student distilled from the teacher system, with IR-RRD run the way the
authors run it.

Per epoch of block k:

1. a separate **item pass**: every item (all of them, not only the block's positives), in shuffled batches,
   each batch its own optimiser step on the item-side relaxed ranking loss λ_i · Σ_i L_RRD^item(i);
2. the interaction pass: each batch of D_k's train interactions, BPR + λ_u · user-side RRD (the batch's users).

The item pass is the only training signal the fresh student gets for old users who are inactive in D_k (on
ml-100k about 85 % of the base block's test users): they enter as the teacher's top users of items, or in the
items' uninteresting bags. Folded into the interaction steps (the library's IR-RRD: the batch's positive items,
weight 0.009 next to BPR in one step) that signal is tiny; as its own Adam steps its scale is normalised away,
as in the authors' code. The item pass runs at the start of the epoch rather than after the interaction
pass (the trainer evaluates right after the interaction pass): each evaluation still follows as many passes
of each kind.

The loss is the mean over the batch's items, as every other term of the library: the passes share one Adam
optimiser, whose second moments set the step size of both, so the item pass must keep the authors' ratio to
the BPR pass (both summed there, with λ_i = 0.01; both means here, λ_i = 0.009). A summed item pass next to a
mean BPR pass inflates the shared second moments ~1000× and stalls the BPR steps (ml-100k: base student
recall@20 0.307 → 0.225).

``user_pass`` (config ``kd_user_pass: all``, not the authors' code) adds the symmetric pass over all users
seen so far, so that old users inactive in D_k get the teacher system's user-side ranking too; the spec
(§B.5) flags the active-users-only user term as a likely source of the distilled student's forgetting.

``negatives`` (spec §B.5's "negative_exclude" plus the teacher's top-40): a users × items pattern the BPR
negatives avoid; ``bag_exclude``: one the user-side uninteresting bags avoid beyond the user's positives and
teacher list. The spec names both for the user side only; the item-side bags stay as IR-RRD draws them.
``item_pass=False`` keeps IR-RRD's own item term on each batch (config ``kd_item_pass: batch``).

``ego_lists`` (config ``kd_ego_rrd``): a graph student (LightGCN) scores both RRD sides on its layer-0 (ego)
embeddings, while BPR uses the propagated ones, as the authors' KD.py (spec §B.5). The library's IR-RRD keeps
scoring lists on the propagated readout.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from distillrec.continual.growth import embedding_tables
from distillrec.continual.negatives import NegativeSampler, union
from distillrec.data.dataset import Dataset
from distillrec.distill.base import batch_field
from distillrec.distill.irrrd import IRRRD, IRRRDConfig
from distillrec.distill.knowledge import TeacherKnowledge
from distillrec.distill.sampling import PairIndex, RankingLists
from distillrec.models.base import Recommender
from distillrec.utils import DistillrecError


class CCDDistiller(IRRRD):
    """BPR + user-side RRD per interaction batch; item-side RRD in a separate pass over all items per epoch.

    The trainer's optimiser is handed over with :meth:`attach_optimizer` (``stages.fit`` does it) before the
    first epoch."""

    def __init__(self, student: Recommender, knowledge: TeacherKnowledge, dataset: Dataset,
                 config: IRRRDConfig | Mapping[str, Any] | None = None, seed: int = 0, *, pass_batch_size: int = 1024,
                 user_pass: bool = False, item_pass: bool = True, negatives: sp.spmatrix | None = None,
                 bag_exclude: sp.spmatrix | None = None, ego_lists: bool = False) -> None:
        super().__init__(student, knowledge, dataset, config, seed)
        tables = embedding_tables(student)
        self.ego_lists = ego_lists and tables is not None and hasattr(student, "propagate")
        self.separate_item_pass = item_pass
        if user_pass and not item_pass:
            raise DistillrecError("CCDDistiller: the user pass needs the separate item pass")
        train = sp.csr_matrix(dataset.train, dtype=np.float32)
        self.negatives = NegativeSampler(train, negatives).to(self.device) if negatives is not None else None
        if bag_exclude is not None:
            self.user_lists = self._user_bags(train, bag_exclude)
        if pass_batch_size < 1:
            raise DistillrecError(f"pass_batch_size must be ≥ 1, got {pass_batch_size}")
        self.pass_batch_size = pass_batch_size
        self.user_pass = user_pass
        self._user_pass_loss = float("nan")
        self.optimizer: torch.optim.Optimizer | None = None
        self._item_pass_loss = float("nan")

    def _user_bags(self, train: sp.csr_matrix, extra: sp.spmatrix) -> RankingLists:
        """User-side lists whose bags also avoid ``extra``; a row that could then no longer hold its list and
        bag (a small catalogue) keeps the plain exclusion."""
        c = self.config
        extra = union([extra], *train.shape)
        excluded = union([train, extra], *train.shape)
        room = train.shape[1] - np.asarray(excluded.sum(1)).ravel()
        # room for the interesting entries and the bag: RankingLists then neither shortens K for every row nor
        # draws the bag with replacement (it cuts the row's list where needed)
        short = room < min(c.n_interesting, self.teacher_user_topk.shape[1]) + c.n_uninteresting
        if short.any():
            warnings.warn(f"ccd: {int(short.sum())} users keep bags that may hold hard-negative items: their "
                          "catalogue is too small for the list, the bag and the exclusion", stacklevel=3)
            excluded = union([train, sp.diags((~short).astype(np.float32)) @ extra], *train.shape)
        index = PairIndex(excluded).to(self.device)
        return RankingLists(self.teacher_user_topk, index, c.n_interesting, c.n_uninteresting, c.temperature,
                            c.sampling, name="ccd")

    def score_tables(self) -> tuple[Tensor, Tensor] | None:
        if self.ego_lists:  # dot products of the ID tables: LightGCN's layer 0
            return self.student.user_emb.weight, self.student.item_emb.weight
        return super().score_tables()

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def loss(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if self.negatives is not None and "neg_items" in batch:
            if self._epoch is None:
                self.on_epoch_start(1)
            users = batch_field(batch, "users", self.name)
            batch = {**batch, "neg_items": self.negatives.draw(users, batch["neg_items"], self.generator())}
        return super().loss(batch)

    def kd_terms(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if not self.separate_item_pass:
            return super().kd_terms(batch)
        users = batch_field(batch, "users", self.name).unique()
        user_loss = self.ranked_loss(users, self.user_lists.combined[users], self.user_lists.k, "user")
        return {"rrd": self.config.lambda_user * user_loss}

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)  # redraws both sides' lists
        if not self.separate_item_pass:
            return
        self.item_pass()
        if self.user_pass:
            self._user_pass_loss = self.side_pass("user")

    def item_pass(self) -> float:
        """One pass of optimiser steps over all items in shuffled batches; returns the mean weighted loss."""
        self._item_pass_loss = self.side_pass("item")
        return self._item_pass_loss

    def side_pass(self, side: str) -> float:
        """One pass of optimiser steps over every item (or user) in shuffled batches on that side's relaxed
        ranking loss; returns the mean weighted loss."""
        if self.optimizer is None:
            raise DistillrecError("CCDDistiller: attach the trainer's optimizer (attach_optimizer) before training")
        weight = self.config.lambda_item if side == "item" else self.config.lambda_user
        lists = self.item_lists if side == "item" else self.user_lists
        count = self.n_items if side == "item" else self.n_users
        if not weight:
            return 0.0
        order = torch.randperm(count, generator=self.generator(), device=self.device)
        total, n = 0.0, 0
        for start in range(0, count, self.pass_batch_size):
            rows = order[start:start + self.pass_batch_size]
            loss = weight * self.ranked_loss(rows, lists.combined[rows], lists.k, side)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach())
            n += 1
        self.optimizer.zero_grad(set_to_none=True)
        return total / max(1, n)

    def stats(self) -> dict[str, Any]:
        if not self.separate_item_pass:
            return {}
        out = {"ir_rrd_pass": round(self._item_pass_loss, 6)}
        if self.user_pass:
            out["rrd_pass"] = round(self._user_pass_loss, 6)
        return out
