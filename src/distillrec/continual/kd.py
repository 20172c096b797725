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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from distillrec.distill.base import batch_field
from distillrec.distill.irrrd import IRRRD
from distillrec.utils import DistillrecError


class CCDDistiller(IRRRD):
    """BPR + user-side RRD per interaction batch; item-side RRD in a separate pass over all items per epoch.

    The trainer's optimiser is handed over with :meth:`attach_optimizer` (``stages.fit`` does it) before the
    first epoch."""

    def __init__(self, *args: Any, pass_batch_size: int = 1024, user_pass: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if pass_batch_size < 1:
            raise DistillrecError(f"pass_batch_size must be ≥ 1, got {pass_batch_size}")
        self.pass_batch_size = pass_batch_size
        self.user_pass = user_pass
        self._user_pass_loss = float("nan")
        self.optimizer: torch.optim.Optimizer | None = None
        self._item_pass_loss = float("nan")

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def kd_terms(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        users = batch_field(batch, "users", self.name).unique()
        user_loss = self.ranked_loss(users, self.user_lists.combined[users], self.user_lists.k, "user")
        return {"rrd": self.config.lambda_user * user_loss}

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)  # redraws both sides' lists
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
        out = {"ir_rrd_pass": round(self._item_pass_loss, 6)}
        if self.user_pass:
            out["rrd_pass"] = round(self._user_pass_loss, 6)
        return out
