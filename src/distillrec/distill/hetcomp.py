"""HetComp: distillation from heterogeneous teachers (Kang et al., WWW 2023; spec part A).

The student imitates an ensemble of M teachers (``ensemble.TeacherEnsemble``), each seen through V
checkpoints of its training trajectory (``trajectory``), along an easy-to-hard curriculum:

- **Dynamic knowledge construction (DKC, §A.5).** Every (user, teacher) pair starts at checkpoint 0. After
  every ``dkc_every`` epochs the student's top-k (train items removed) is compared with each teacher's
  *next* checkpoint by the position-weighted overlap δ (``discrepancy``). The first check only stores
  δ̄ = δ(next); later checks switch a pair to its next checkpoint when δ̄/δ_now > θ_t = α·decay^(t/p) (the
  student has come close enough to the next knowledge) or, with ``switch_below_one`` (the authors' code),
  when δ̄/δ_now < 1 (it drifts away). θ_t < 1 from the 10th check on with the defaults, after which every
  pair advances at each check. The target top-K of each user is rebuilt from the selected checkpoints.
- **Adaptive knowledge transfer (AKT, §A.6).** Phase 1 ("overall"): each item of the observed list P_u and
  of the ensemble top-K T_u must beat all the rest (unobserved items outside T_u) — set membership, order
  ignored (``akt_overall_loss``). Phase 2 ("rank"), once DKC has brought (a fraction of) the pairs to the
  final checkpoint: Plackett-Luce permutation losses for P_u, T_u[:50] and T_u[:10] (``akt_rank_loss``).
  Observed and unobserved items are separate lists: P_u is never pushed above T_u.

No ground-truth loss by default (``lambda_cf = 0``, the authors' code); ``lambda_cf = 1`` adds the student's
own loss (the paper's form). Losses are means over the batch's unique users (the authors sum over them):
λ = 0.01 · (≈ 740 unique users per 1024 CiteULike interactions) ≈ 7 and 0.005 · 740 ≈ 3.5; with
``reduction = "sum"`` use the authors' 0.01 / 0.005.

Differences to the authors' code, on purpose: DKC runs on its own schedule (not on the evaluation's ranking),
a zero discrepancy always switches (their 0/0 never does), phase 2 starts by an explicit rule
(``phase2_rule``), scores are not clamped to ±40 (the kernels are stable), and the trajectories are
top-K_e lists rather than dense U × I importances.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import AliasChoices, Field, model_validator
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.distill.base import Distiller, MethodConfig, batch_field, register_method
from distillrec.distill.ensemble import TeacherEnsemble
from distillrec.distill.knowledge import TeacherKnowledge
from distillrec.distill.losses import relaxed_pl_loss, set_softmax_loss
from distillrec.distill.trajectory import rank_lists
from distillrec.models.base import Recommender
from distillrec.utils import DistillrecError


class HetCompConfig(MethodConfig):
    # λ_CF: the student's own loss. 0 = the authors' code (their BPR term is computed but never added).
    lambda_base: float = Field(0.0, ge=0, validation_alias=AliasChoices("lambda_base", "lambda_cf"))
    lambda_overall: float = Field(7.0, ge=0)  # phase 1; authors: 0.01 × sum over unique users
    lambda_rank: float = Field(3.5, ge=0)  # phase 2; authors: 0.005 × sum
    reduction: Literal["mean", "sum"] = "mean"  # over the batch's unique users
    n_topk: int = Field(100, ge=1)  # K: the ensemble's top unobserved items distilled
    n_observed: int = Field(10, ge=1)  # K_o: the ensemble-ranked observed items distilled
    n_ranked: int = Field(50, ge=1)  # phase 2: the ordered prefix of T_u
    n_emphasis: int = Field(10, ge=1)  # phase 2: the prefix of T_u ordered a second time
    tau1: float | None = Field(None, gt=0)  # position temperature; None = the ensemble's (10)
    tau2: float | None = Field(None, gt=0)  # consistency temperature; None = the ensemble's (100)
    teachers: list[str] | None = None  # a subset of the teacher set (names); None = all
    dkc_every: int = Field(10, ge=1)  # p: epochs between DKC checks
    alpha: float = Field(1.05, ge=0)  # α of θ_t = α · decay^(t/p)
    decay: float = Field(0.995, gt=0)
    switch_below_one: bool = True  # the code's escape: also switch when δ̄/δ_now < 1
    discrepancy_k: int = Field(50, ge=1)  # length of the compared top lists
    discrepancy_decimals: int | None = Field(4, ge=0)  # the code rounds δ to 4 decimals; None = exact
    phase2_rule: Literal["fraction", "rounded_mean"] = "fraction"
    phase2_frac: float = Field(1.0, gt=0, le=1)  # "fraction": share of (user, teacher) pairs at the final ckpt
    # None = the exact tail over every unobserved item outside T_u (the authors'). M = estimate it from M
    # uniform draws per step (sampled softmax): the student scores K + K_o + M items per user, not all of them.
    tail_samples: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check_lengths(self) -> HetCompConfig:
        if not self.n_emphasis <= self.n_ranked <= self.n_topk:
            raise ValueError(f"need n_emphasis ≤ n_ranked ≤ n_topk, got {self.n_emphasis}, {self.n_ranked}, "
                             f"{self.n_topk}")
        return self


# -- pure pieces (tested against hand-computed values) ---------------------------------------------------------
def discount_gains(k: int, device: torch.device | str | None = None) -> Tensor:
    """g_j / log2(j + 2) with g_j = 2^{exp(−j/10)} − 1, j = 0..k−1 (the student's position)."""
    j = torch.arange(k, dtype=torch.float32, device=device)
    return (torch.pow(2.0, torch.exp(-j / 10)) - 1) / torch.log2(j + 2)


def discrepancy(student_top: Tensor, teacher_top: Tensor, decimals: int | None = 4) -> Tensor:
    """δ = 1 − Σ_j 1[student_top[j] ∈ teacher_top] g_j/log2(j+2) / Σ_j g_j/log2(j+2), per row; both [R, k]."""
    srt = teacher_top.long().sort(dim=1).values
    query = student_top.long()
    pos = torch.searchsorted(srt, query).clamp_(max=srt.shape[1] - 1)
    hit = srt.gather(1, pos) == query
    gains = discount_gains(query.shape[1], query.device)
    d = 1 - (hit.float() * gains).sum(1) / gains.sum()
    return torch.round(d, decimals=decimals) if decimals is not None else d


def dkc_threshold(epochs_done: int, every: int, alpha: float = 1.05, decay: float = 0.995) -> float:
    """θ_t = α · decay^⌊t/p⌋."""
    return alpha * decay ** (epochs_done // every)


def switch_mask(reference: Tensor, now: Tensor, threshold: float, below_one: bool = True) -> Tensor:
    """Switch where δ̄/δ_now > θ (or < 1 with ``below_one``); a zero δ_now counts as an infinite ratio."""
    ratio = torch.where(now > 0, reference / now.clamp(min=1e-12), torch.full_like(now, math.inf))
    out = ratio > threshold
    return out | (ratio < 1) if below_one else out


def dkc_step(selection: Tensor, reference: Tensor, disc: Tensor, threshold: float,
             below_one: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """One DKC check. ``selection`` [U, M] current checkpoints, ``reference`` [U, M] δ̄, ``disc`` [U, M, V]
    the student's discrepancy to every checkpoint. Returns (new selection, new reference, switched)."""
    last = disc.shape[2] - 1
    now = disc.gather(2, (selection + 1).clamp(max=last).unsqueeze(2)).squeeze(2)
    switched = (selection < last) & switch_mask(reference, now, threshold, below_one)
    selection = selection + switched.long()
    after = disc.gather(2, (selection + 1).clamp(max=last).unsqueeze(2)).squeeze(2)
    return selection, torch.where(switched, after, reference), switched


def _reduce(per_user: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return per_user.sum()
    return per_user.mean() if per_user.numel() else per_user.sum()


class _MaskedLogSumExp(torch.autograd.Function):
    """log Σ_j exp(s_j) per row over the entries not ``excluded``, keeping the forward's softmax: the backward
    is one multiply, where autograd's would redo max, subtract and exp over [B, n_items] and mask again. A row
    with every entry excluded gives −inf and a zero gradient."""

    @staticmethod
    def forward(ctx: Any, scores: Tensor, excluded: Tensor) -> Tensor:
        x = scores.masked_fill(excluded, float("-inf"))
        peak = x.amax(dim=1, keepdim=True)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        p = x.sub_(peak).exp_()
        total = p.sum(dim=1, keepdim=True)
        p.div_(total.clamp(min=torch.finfo(p.dtype).tiny))
        ctx.save_for_backward(p)
        return (total.log() + peak).squeeze(1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (p,) = ctx.saved_tensors
        return p * grad.unsqueeze(1), None


def masked_logsumexp(scores: Tensor, excluded: Tensor) -> Tensor:
    """``logsumexp(scores.masked_fill(excluded, -inf), dim=1)`` with a one-multiply backward: [B]."""
    return _MaskedLogSumExp.apply(scores, excluded)


def _tail_logsumexp(scores: Tensor, train_mask: Tensor, top: Tensor) -> Tensor:
    """log Σ exp(s_uj) over the items neither observed nor in ``top``: [B]."""
    excluded = train_mask.clone()
    excluded.scatter_(1, top, True)
    return masked_logsumexp(scores, excluded)


def akt_overall_loss(scores: Tensor, observed: Tensor, observed_len: Tensor, top: Tensor, train_mask: Tensor,
                     reduction: str = "mean") -> Tensor:
    """Phase 1, per user Σ_{i ∈ P_u ∪ T_u} [log(e^{s_i} + Σ_{j ∈ N_u} e^{s_j}) − s_i], N_u = unobserved items
    outside T_u. ``scores`` [B, n_items] (student), ``observed`` [B, K_o] (valid up to ``observed_len`` [B]),
    ``top`` [B, K], ``train_mask`` bool [B, n_items] (every observed item)."""
    tail = _tail_logsumexp(scores, train_mask, top)
    return overall_loss(scores.gather(1, top), scores.gather(1, observed), observed_len, tail, reduction)


def overall_loss(s_top: Tensor, s_obs: Tensor, observed_len: Tensor, tail: Tensor, reduction: str = "mean") -> Tensor:
    """Phase 1 from the list scores ``s_top`` [B, K], ``s_obs`` [B, K_o] and the tail's log-sum-exp [B]."""
    per_user = set_softmax_loss(s_top, tail.unsqueeze(1), reduction="none")
    valid = torch.arange(s_obs.shape[1], device=s_obs.device) < observed_len.unsqueeze(1)
    rows = valid.nonzero()[:, 0]
    # Each observed item competes with the tail alone: one row per valid (user, item) pair, no padding.
    obs_terms = set_softmax_loss(s_obs[valid].unsqueeze(1), tail[rows].unsqueeze(1), reduction="none")
    return _reduce(per_user.index_add(0, rows, obs_terms), reduction)


def akt_rank_loss(scores: Tensor, observed: Tensor, observed_len: Tensor, top: Tensor, train_mask: Tensor,
                  n_ranked: int = 50, n_emphasis: int = 10, reduction: str = "mean") -> Tensor:
    """Phase 2, per user ℓ_PL(P_u; N⁵⁰) + ½ [ℓ_PL(T_u[:50]; N⁵⁰) + ℓ_PL(T_u[:10]; N¹⁰)], Nⁿ = unobserved
    items outside T_u[:n] (shapes as in ``akt_overall_loss``)."""
    ranked = top[:, :n_ranked]
    tail = _tail_logsumexp(scores, train_mask, ranked)
    return rank_loss(scores.gather(1, ranked), scores.gather(1, observed), observed_len, tail, n_emphasis,
                     reduction)


def rank_loss(s_top: Tensor, s_obs: Tensor, observed_len: Tensor, tail: Tensor, n_emphasis: int = 10,
              reduction: str = "mean") -> Tensor:
    """Phase 2 from the scores of T_u[:n_ranked] ``s_top``, of P_u ``s_obs`` and N^{n_ranked}'s log-sum-exp."""
    tail_emph = torch.logaddexp(tail, torch.logsumexp(s_top[:, n_emphasis:], dim=1))  # + T_u[10:50]
    per_user = 0.5 * (relaxed_pl_loss(s_top, bag_logsumexp=tail, reduction="none")
                      + relaxed_pl_loss(s_top[:, :n_emphasis], bag_logsumexp=tail_emph, reduction="none"))
    # Users with equal list lengths share one kernel call: at most K_o calls, never a loop over users.
    for length in observed_len.unique().tolist():
        if length == 0:
            continue
        rows = (observed_len == length).nonzero().squeeze(1)
        terms = relaxed_pl_loss(s_obs[rows, :length], bag_logsumexp=tail[rows], reduction="none")
        per_user = per_user.index_add(0, rows, terms)
    return _reduce(per_user, reduction)


def sampled_tail_logsumexp(s_draws: Tensor, keep: Tensor, n_items: int) -> Tensor:
    """log Σ_{j ∈ N_u} e^{s_uj} estimated from M uniform draws over all ``n_items`` items (with replacement,
    shared by the batch): log(n_items / M) + log Σ_m keep_um · e^{s_um}, ``keep`` [B, M] = whether draw m lies
    in N_u. The sum is unbiased (its log slightly low, as in sampled softmax); M = n_items with every item
    drawn once is exact. A row that kept no draw gives −inf (no tail)."""
    m = s_draws.shape[1]
    return torch.logsumexp(s_draws.masked_fill(~keep, float("-inf")), dim=1) + math.log(n_items / m)


# -- the method -------------------------------------------------------------------------------------------------
@register_method("hetcomp")
class HetComp(Distiller):
    Config = HetCompConfig
    rank_chunk_elems = 1 << 24  # student scores held at once when DKC ranks every user

    def __init__(self, student: Recommender, ensemble: TeacherEnsemble, dataset: Dataset,
                 config: HetCompConfig | Mapping[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(student, TeacherKnowledge(), dataset, config, seed)
        c = self.config
        if ensemble.dataset.fingerprint() != dataset.fingerprint() or ensemble.n_users != dataset.n_users:
            raise DistillrecError(f"the teacher ensemble was built for {ensemble.dataset.name!r}, not {dataset.name!r}")
        for name, value in (("n_topk", c.n_topk), ("discrepancy_k", c.discrepancy_k)):
            if value > ensemble.topk_len:
                raise DistillrecError(f"hetcomp {name}={value} exceeds the teachers' trajectory lists "
                                      f"(K_e = {ensemble.topk_len})")
        for name, tau in (("tau1", c.tau1), ("tau2", c.tau2)):
            if tau is not None and tau != getattr(ensemble, name):
                raise DistillrecError(f"hetcomp {name}={tau} but the ensemble was built with "
                                      f"{getattr(ensemble, name)}; build it with the same value")
        self.dataset = dataset
        self.ensemble = ensemble.to(self.device)
        shape = (dataset.n_users, ensemble.n_teachers)
        self.register_buffer("selection", torch.zeros(shape, dtype=torch.long, device=self.device))
        self.register_buffer("reference", torch.zeros(shape, device=self.device))
        # phase (1 or 2), whether δ̄ was initialised, the epoch of the last check
        self.register_buffer("dkc_state", torch.tensor([1, 0, 0], dtype=torch.long, device=self.device))
        observed, observed_len = self.ensemble.observed_lists(c.n_observed)  # static, as in the authors' code
        self.register_buffer("observed", observed, persistent=False)
        self.register_buffer("observed_len", observed_len, persistent=False)
        self.register_buffer("top", self.ensemble.topk(c.n_topk, self.selection), persistent=False)

    @classmethod
    def from_teacher_set(cls, student: Recommender, teacher_set_dir: str | Path, dataset: Dataset,
                         config: HetCompConfig | Mapping[str, Any] | None = None, seed: int = 0) -> HetComp:
        """Build the ensemble from a teacher-set directory (``distillrec.teachers.train_teacher_set``)."""
        config = cls.make_config(config)
        ensemble = TeacherEnsemble.from_teacher_set(teacher_set_dir, dataset, config.tau1 or 10.0,
                                                    config.tau2 or 100.0, teachers=config.teachers)
        return cls(student, ensemble, dataset, config, seed)

    @classmethod
    def from_teacher(cls, *args: Any, **kwargs: Any) -> Distiller:
        raise DistillrecError(
            "hetcomp distils an ensemble of teacher trajectories, not one teacher: train a teacher set "
            "(distillrec.teachers.train_teacher_set) and use distillrec.teachers.distill_from_teacher_set "
            "or HetComp.from_teacher_set")

    # -- state --------------------------------------------------------------------------------------------
    @property
    def phase(self) -> int:
        return int(self.dkc_state[0])

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.top = self.ensemble.topk(self.config.n_topk, self.selection)  # T_u follows the restored selection
        return out

    def stats(self) -> dict[str, Any]:
        last = self.ensemble.n_checkpoints - 1
        return {"phase": self.phase, "final_frac": round(float((self.selection == last).float().mean()), 4),
                "mean_checkpoint": round(float(self.selection.float().mean()), 4)}

    # -- DKC ----------------------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        done = self.epoch_index(epoch)  # epochs trained so far
        if self.phase == 1 and done > 0 and done % self.config.dkc_every == 0 and int(self.dkc_state[2]) != done:
            self.dkc(done)

    @torch.no_grad()
    def discrepancies(self) -> Tensor:
        """δ [n_users, M, V] of the current student's top-k to every teacher checkpoint's top-k."""
        k = self.config.discrepancy_k
        student_top = rank_lists(self.student, self.dataset, k, self.rank_chunk_elems)[0].to(self.device).long()
        m, v = self.ensemble.n_teachers, self.ensemble.n_checkpoints
        out = torch.empty(self.n_users, m, v, device=self.device)
        step = max(1, (1 << 20) // (m * v * k))
        for u0 in range(0, self.n_users, step):
            users = torch.arange(u0, min(u0 + step, self.n_users), device=self.device)
            teacher = self.ensemble.lists[:, :, users, :k].permute(2, 0, 1, 3).reshape(-1, k)  # [B·M·V, k]
            student = student_top[users].repeat_interleave(m * v, dim=0)
            out[users] = discrepancy(student, teacher, self.config.discrepancy_decimals).view(-1, m, v)
        return out

    @torch.no_grad()
    def dkc(self, epochs_done: int) -> None:
        """One DKC check after ``epochs_done`` epochs: initialise δ̄, or switch pairs and rebuild T_u."""
        c = self.config
        disc = self.discrepancies()
        last = self.ensemble.n_checkpoints - 1
        if not int(self.dkc_state[1]):
            nxt = (self.selection + 1).clamp(max=last).unsqueeze(2)
            self.reference.copy_(disc.gather(2, nxt).squeeze(2))
            self.dkc_state[1] = 1
        else:
            theta = dkc_threshold(epochs_done, c.dkc_every, c.alpha, c.decay)
            sel, ref, _ = dkc_step(self.selection, self.reference, disc, theta, c.switch_below_one)
            self.selection.copy_(sel)
            self.reference.copy_(ref)
            self.top = self.ensemble.topk(c.n_topk, self.selection)
            if self._phase2_ready():
                self.dkc_state[0] = 2
        self.dkc_state[2] = epochs_done

    def _phase2_ready(self) -> bool:
        last = self.ensemble.n_checkpoints - 1
        if self.config.phase2_rule == "rounded_mean":  # the authors' test: round(mean_u v_ux, 2) == V−1 ∀x
            means = self.selection.float().mean(0)
            return bool((torch.round(means, decimals=2) >= last).all())
        return float((self.selection == last).float().mean()) >= self.config.phase2_frac

    # -- AKT ----------------------------------------------------------------------------------------------
    def train_mask(self, users: Tensor) -> Tensor:
        """Bool [B, n_items]: the users' training items (a batch of rows, never U × I)."""
        indptr, indices = self.ensemble.train_indptr, self.ensemble.train_indices
        starts, lengths = indptr[users], indptr[users + 1] - indptr[users]
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths)
        first = torch.repeat_interleave(starts - (lengths.cumsum(0) - lengths), lengths)
        cols = indices[first + torch.arange(len(rows), device=users.device)]
        mask = torch.zeros(len(users), self.n_items, dtype=torch.bool, device=users.device)
        mask[rows, cols] = True
        return mask

    def kd_terms(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        c = self.config
        users = batch_field(batch, "users", self.name).unique()
        if c.tail_samples:
            return self._sampled_terms(users)
        scores = self.student.full_scores(users)
        args = (scores, self.observed[users], self.observed_len[users], self.top[users], self.train_mask(users))
        if self.phase == 1:
            return {"overall": c.lambda_overall * akt_overall_loss(*args, reduction=c.reduction)}
        return {"rank": c.lambda_rank * akt_rank_loss(*args, n_ranked=c.n_ranked, n_emphasis=c.n_emphasis,
                                                      reduction=c.reduction)}

    def _sampled_terms(self, users: Tensor) -> dict[str, Tensor]:
        """AKT with the tail estimated from ``tail_samples`` uniform draws shared by the batch's users (one
        [B, K + K_o + M] list through the student's list scorer instead of [B, n_items] scores)."""
        c = self.config
        top = self.top[users]
        if c.tail_samples >= self.n_items:  # every item once: the exact tail
            draws = torch.arange(self.n_items, device=self.device)
        else:
            draws = torch.randint(0, self.n_items, (c.tail_samples,), generator=self.generator(), device=self.device)
        excluded = self.train_mask(users)
        excluded.scatter_(1, top, True)
        k, k_obs = top.shape[1], self.observed.shape[1]
        tables = self.score_tables()
        if tables is not None:  # shared draws: one [B, d] × [d, M] product
            s_top, s_obs = self.list_scores(users, torch.cat([top, self.observed[users]], dim=1), "user").split(
                [k, k_obs], dim=1)
            user_table, item_table = tables
            s_draws = user_table[users] @ item_table[draws].T
        else:
            cols = torch.cat([top, self.observed[users], draws.expand(len(users), -1)], dim=1)
            s_top, s_obs, s_draws = self.list_scores(users, cols, "user").split([k, k_obs, draws.numel()], dim=1)
        tail = sampled_tail_logsumexp(s_draws, ~excluded[:, draws], self.n_items)  # N_u: outside train and T_u
        observed_len = self.observed_len[users]
        if self.phase == 1:
            return {"overall": c.lambda_overall * overall_loss(s_top, s_obs, observed_len, tail, c.reduction)}
        if c.n_ranked < k:  # N^{n_ranked} also holds T_u[n_ranked:], scored exactly
            tail = torch.logaddexp(tail, torch.logsumexp(s_top[:, c.n_ranked:], dim=1))
        return {"rank": c.lambda_rank * rank_loss(s_top[:, :c.n_ranked], s_obs, observed_len, tail, c.n_emphasis,
                                                  c.reduction)}
