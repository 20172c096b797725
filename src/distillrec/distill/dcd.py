"""DCD: Dual Correction strategy for ranking Distillation (Lee & Kim, CIKM 2021), as the released code does it.

Inside each user's teacher top-N list, the student's rank of every item is compared with the teacher's:
items the student *under*-ranks are drawn (P of them, ∝ w⁺ = tanh(max(ε·(r_S − r_T), 0))) and kept in teacher
order; items it *over*-ranks are drawn (P, ∝ w⁻ = tanh(max(ε·(r_T − r_S), 0))) as the bag they must beat, in
the relaxed Plackett-Luce loss (UCD). The item side does the same with the teacher's top-N users of every
batch positive (ICD). Weights are recomputed from the current student every ``refresh_every`` epochs (3 in
the code), vectorised over [rows, N] (the code loops over users and items and holds dense U×I matrices).
Weights are floored (1e-5) so a row with fewer than P positive weights still yields P draws (the code
crashes there); the bag is drawn among the entries the ordered list left, so the floor never puts an entry in
both lists (the code's disjoint supports never can).

Deviation (default ``resample="epoch"``): the code draws fresh lists for the batch's rows in every
mini-batch; here every row is drawn once per epoch, from the same weights, and reused by each batch it
appears in — RRD's schedule. The per-batch draw costs two [rows, N] weighted samples per side and batch
(on CiteULike ~200M random keys per epoch, 10× the rest of the epoch); per epoch it is ~30M. ``"batch"``
restores the code's schedule.

Resume: the student ranks behind the weights are persistent buffers (int16), saved with the checkpoint, so a
run resumed between two refreshes samples from the same weights as the uninterrupted run.

Small catalogues: P is lowered (with a warning) to what a row's list can supply (N, or N/2 for "top").

``sampling="top"`` is the no-sampling variant: the ordered list is the teacher's top-P; the bag is still
drawn ∝ w⁻, among the list positions after P.

The code optimises base + UCD + ICD only; a summary of the paper mentions the corrections *in addition to* a
ranking-distillation loss. ``lambda_rkd`` > 0 adds that user-side RRD term (``rrd``, RRD's lists and
defaults). Without it nothing anchors the teacher's list against items outside it, and a large λ lets the
within-list order dominate (on a planted 300 × 200 set, λ = 0.3 lowered the student's top-10 agreement with
the teacher below the plain student's, while λ = 0.03 raised it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.distill.base import Distiller, MethodConfig, batch_field, register_method
from distillrec.distill.knowledge import KnowledgeSpec, TeacherKnowledge
from distillrec.distill.sampling import PairIndex, RankingLists, discrepancy_weights, weighted_topk
from distillrec.models.base import Recommender


class DCDConfig(MethodConfig):
    """The released code has no hyper-parameter values (no main script) and the paper's could not be read:
    N = 500 (hard-coded) and the 3-epoch refresh are code facts; P = 40 / 20 and λ follow the IR-RRD
    defaults (1e-3 user, 5e-4 item, on summed losses, rescaled ×0.70 / ×0.94 for the mean-reduced losses here,
    as measured on a 1024-triple CiteULike batch); ε = 0.1 follows a third-party port (rank gap / 10).
    All of these except N are unverified: check the paper before quoting numbers."""

    lambda_user: float = 7e-4
    lambda_item: float = 4.7e-4
    n_topk: int = 500
    n_item_topk: int = 500
    n_samples: int = 40  # P on the user side
    n_item_samples: int = 20  # P on the item side
    epsilon: float = 0.1
    floor: float = 1e-5
    # The code's 3: refreshing every epoch gave the same BPR student (test H@5 0.4829 vs 0.4840) for 1.3× the
    # epoch time, and a NeuMF student's overshoot cycle only shortens to 2 epochs (BENCHMARKS.md, session 14).
    refresh_every: int = 3
    sampling: Literal["discrepancy", "top"] = "discrepancy"
    # "epoch": one draw per row per epoch, reused by every batch (RRD's schedule; ~6× fewer draws);
    # "batch": fresh draws per mini-batch, as the released code does.
    resample: Literal["batch", "epoch"] = "epoch"
    lambda_rkd: float = 0.0  # the paper's extra RRD term; 0 = the released code
    n_interesting: int = 40  # RRD lists, used only when lambda_rkd > 0
    n_uninteresting: int = 40
    temperature: float = 10.0

    @model_validator(mode="after")
    def _lists_fit(self) -> DCDConfig:
        factor = 2 if self.sampling == "top" else 1  # "top" draws its bag from the positions after the first P
        for p, n, what in ((self.n_samples, self.n_topk, ""), (self.n_item_samples, self.n_item_topk, "item_")):
            if factor * p > n:
                raise ValueError(f"n_{what}samples ({p}) {'× 2 ' if factor == 2 else ''}must not exceed "
                                 f"n_{what}topk ({n}) with sampling={self.sampling!r}")
        if self.lambda_rkd and self.n_interesting > self.n_topk:
            raise ValueError(f"n_interesting ({self.n_interesting}) must not exceed n_topk ({self.n_topk})")
        if self.refresh_every < 1:
            raise ValueError(f"refresh_every must be ≥ 1, got {self.refresh_every}")
        return self


@register_method("dcd")
class DCD(Distiller):
    Config = DCDConfig

    def __init__(self, student: Recommender, knowledge: TeacherKnowledge, dataset: Dataset,
                 config: DCDConfig | Mapping[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(student, knowledge, dataset, config, seed)
        c = self.config
        factor = 2 if c.sampling == "top" else 1
        # (side, teacher lists, P, λ, batch field, term name)
        self.sides: list[tuple[str, str, int, float, str, str]] = []
        for side, field, p, lam, batch_key, term in (("user", "user_topk", c.n_samples, c.lambda_user, "users", "ucd"),
                                                     ("item", "item_topk", c.n_item_samples, c.lambda_item,
                                                      "pos_items", "icd")):
            if not lam:
                continue
            n = getattr(self, f"teacher_{field}").shape[1]
            p = self.list_width(field, factor * p, f"{factor} × n_{'item_' if side == 'item' else ''}samples")
            self.sides.append((side, field, max(1, p // factor), lam, batch_key, term))
            # Student ranks inside the teacher lists at the last refresh: persistent, for exact resume.
            dtype = torch.int16 if n <= torch.iinfo(torch.int16).max else torch.int32
            self.register_buffer(f"student_rank_{side}", torch.zeros(getattr(self, f"teacher_{field}").shape,
                                                                     dtype=dtype, device=self.device))
        self.register_buffer("refreshed_at", torch.tensor(-1, device=self.device))  # epoch of the last refresh
        self.user_lists = None
        if c.lambda_rkd:
            self.user_lists = RankingLists(self.teacher_user_topk, PairIndex(dataset.train).to(self.device),
                                           c.n_interesting, c.n_uninteresting, c.temperature, "rank",
                                           name="dcd (rrd term)")
        self.weights: dict[str, tuple[Tensor, Tensor]] = {}  # side → (w⁺, w⁻), derived from the ranks
        self._weights_of: int | None = None  # the refresh the weights were derived from
        self.epoch_draws: dict[str, Tensor] = {}  # side → [R, 2P]: ordered then bag (resample="epoch")

    @classmethod
    def knowledge_spec(cls, config: DCDConfig) -> KnowledgeSpec:
        return KnowledgeSpec(n_user_topk=config.n_topk, n_item_topk=config.n_item_topk if config.lambda_item else 0)

    def refresh(self) -> None:
        """Recompute the student's ranks inside every row's teacher list (and from them w⁺ / w⁻)."""
        for side, field, *_ in self.sides:
            self.student_ranks(getattr(self, f"teacher_{field}"), side, out=getattr(self, f"student_rank_{side}"))
        self.refreshed_at.fill_(self._epoch or 0)

    def _derive_weights(self) -> None:
        for side, *_ in self.sides:
            ranks = getattr(self, f"student_rank_{side}")
            self.weights[side] = discrepancy_weights(ranks, self.config.epsilon, self.config.floor)
        self._weights_of = int(self.refreshed_at)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        if self.user_lists is not None:
            self.user_lists.refresh(self.generator())
        if int(self.refreshed_at) < 0 or self.epoch_index(epoch) % self.config.refresh_every == 0:
            self.refresh()
        if self._weights_of != int(self.refreshed_at) or any(
                w[0].device != self.device for w in self.weights.values()):
            self._derive_weights()  # after a refresh, or after a checkpoint's ranks were loaded
        if self.config.resample == "epoch":
            for side, field, p, *_ in self.sides:
                n_rows, n = getattr(self, f"teacher_{field}").shape
                step = max(1, (1 << 21) // n)  # bounded temporaries: ~2M keys at a time
                self.epoch_draws[side] = torch.cat([
                    self.draw(side, field, torch.arange(r0, min(r0 + step, n_rows), device=self.device), p)
                    for r0 in range(0, n_rows, step)])

    def draw(self, side: str, field: str, rows: Tensor, p: int) -> Tensor:
        """[B, 2P] for ``rows`` of ``side``: P list entries drawn ∝ w⁺ in teacher order, then P drawn ∝ w⁻."""
        w_plus, w_minus = (w[rows] for w in self.weights[side])
        lists = getattr(self, f"teacher_{field}")[rows]
        g = self.generator()
        if self.config.sampling == "top":
            ordered_pos = torch.arange(p, device=rows.device).expand(rows.numel(), p)
            bag_pos = weighted_topk(w_minus[:, p:], p, g) + p
        else:
            ordered_pos = weighted_topk(w_plus, p, g).sort(dim=1).values
            if lists.shape[1] >= 2 * p:
                # w⁺ and w⁻ have disjoint supports, so the code's two lists never share an entry; the floor
                # (weights that are 0 there) could draw an entry into both: the bag skips the ordered ones
                w_minus.scatter_(1, ordered_pos, 0.0)
            bag_pos = weighted_topk(w_minus, p, g)
        return lists.gather(1, torch.cat([ordered_pos, bag_pos], dim=1))

    def kd_terms(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        terms = {}
        for side, field, p, lam, batch_key, term in self.sides:
            rows = batch_field(batch, batch_key, self.name).unique()
            if self.config.resample == "epoch":
                lists = self.epoch_draws[side][rows]
            else:
                lists = self.draw(side, field, rows, p)
            terms[term] = lam * self.ranked_loss(rows, lists, p, side)
        if self.user_lists is not None:
            users = batch_field(batch, "users", self.name).unique()
            terms["rrd"] = self.config.lambda_rkd * self.ranked_loss(users, self.user_lists.combined[users],
                                                                     self.user_lists.k, "user")
        return terms
