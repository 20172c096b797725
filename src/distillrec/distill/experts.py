"""Distillation Experts (DE): M small MLPs map a student representation into the teacher's space, and a
selection network picks one per entity with a Gumbel-softmax (shared by DE and DE-RRD).

For entity e with teacher representation h_t and student representation h_s:
α = softmax(W·h_t + b); s = GumbelSoftmax(log(α + 1e-10), τ); ĥ_t = Σ_m s_m·E_m(h_s); loss ‖h_t − ĥ_t‖²
(squared error summed over dimensions, as in the authors' code). Expert m is Linear(d_s → h), ReLU,
Linear(h → d_t) with h = ⌊(d_s + d_t)/2⌋ (d_s/2 when d_s = d_t).

All M experts run as two matrix products instead of M small ones: the first layers are stacked into one
[d_s, M·h] matrix, and because the second layer is linear, Σ_m s_m·(W2_m z_m + b2_m) equals
[s_1 z_1, …, s_M z_M] @ [W2_1; …; W2_M] + s @ B2. Exact, and it keeps the gradients of every expert and of
the selection network.

Cost: the second layer is a [B, M·h] × [M·h, d_t] product, 3× that with its gradients, per entity — for
the authors' setting (M = 30, 20 → 110 → 200) about 2.2 MFLOP per entity, some 100× a dim-20 student's own
per-entity work; it dominates DE's epoch time on a CPU. The batch's positives and negatives go through the
experts in one product (each row with its own Gumbel draw, as in two separate calls).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from distillrec.distill.gumbel import gumbel_softmax
from distillrec.distill.losses import squared_error_loss
from distillrec.models.base import Recommender


def expert_hidden_dim(student_dim: int, teacher_dim: int) -> int:
    if student_dim == teacher_dim:
        return max(1, student_dim // 2)
    return (student_dim + teacher_dim) // 2


EXPERT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_NEGLIGIBLE = 1e-20  # selection weights ≤ this × min(τ, 1) are skipped (see the module notes)


class ExpertMixture(nn.Module):
    """M experts d_s → d_t plus their selection network (a Linear over teacher representations).

    ``compute_dtype="bfloat16"``: the two expert matmuls (forward and backward) run under bf16 autocast —
    bf16 inputs, fp32 accumulation, bf16 outputs — while the parameters, the selection network, the
    Gumbel-softmax and the loss stay fp32 (autocast casts the fp32 master weights on the way in, and their
    gradients come back fp32). 2–3× faster on CPUs with native bf16 (AVX512-BF16, AMX); the reconstruction
    carries bf16's ~3 significant digits."""

    def __init__(self, student_dim: int, teacher_dim: int, n_experts: int, compute_dtype: str = "float32") -> None:
        super().__init__()
        if n_experts < 1:
            raise ValueError(f"n_experts must be ≥ 1, got {n_experts}")
        if compute_dtype not in EXPERT_DTYPES:
            raise ValueError(f"expert compute dtype must be one of {', '.join(EXPERT_DTYPES)}, got {compute_dtype!r}")
        self.compute_dtype = compute_dtype
        self.student_dim, self.teacher_dim, self.n_experts = student_dim, teacher_dim, n_experts
        self.hidden_dim = h = expert_hidden_dim(student_dim, teacher_dim)
        self.w1 = nn.Parameter(torch.empty(student_dim, n_experts * h))
        self.b1 = nn.Parameter(torch.empty(n_experts * h))
        self.w2 = nn.Parameter(torch.empty(n_experts * h, teacher_dim))
        self.b2 = nn.Parameter(torch.empty(n_experts, teacher_dim))
        self.gate = nn.Linear(teacher_dim, n_experts)
        self.sparse_routing = True  # skip negligible (entity, expert) pairs; False: always the dense product
        self.last_density = 1.0  # fraction of (entity, expert) pairs computed in the latest call
        # nn.Linear's default init, per expert: U(±1/sqrt(fan_in)) for weights and biases.
        for p, fan_in in ((self.w1, student_dim), (self.b1, student_dim), (self.w2, h), (self.b2, h)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(p, -bound, bound)

    def selection(self, teacher_repr: Tensor, tau: float, generator: torch.Generator | None = None) -> Tensor:
        """[B, M] relaxed one-hot expert choice from the teacher representation."""
        alpha = torch.softmax(self.gate(teacher_repr), dim=-1)
        return gumbel_softmax(torch.log(alpha + 1e-10), tau, generator)

    def forward(self, student_repr: Tensor, teacher_repr: Tensor, tau: float,
                generator: torch.Generator | None = None) -> Tensor:
        """ĥ_t [B, d_t]: the selected experts' reconstruction of the teacher representation."""
        s = self.selection(teacher_repr, tau, generator)
        low = self.compute_dtype != "float32"
        with torch.autocast(student_repr.device.type, dtype=EXPERT_DTYPES[self.compute_dtype], enabled=low):
            out = self._sparse(student_repr, s, tau) if self.sparse_routing else None
            if out is None:
                self.last_density = 1.0
                hidden = torch.addmm(self.b1, student_repr, self.w1).relu_()  # [B, M·h]
                weighted = (hidden.view(-1, self.n_experts, self.hidden_dim) * s.unsqueeze(-1).to(hidden.dtype))
                out = torch.addmm(s @ self.b2, weighted.view(hidden.shape), self.w2)
        return out.float()

    def _sparse(self, x: Tensor, s: Tensor, tau: float) -> Tensor | None:
        """The kept (entity, expert) pairs only, grouped by expert: one small product per expert in use; None
        when more than half of the pairs are kept (the dense product is then cheaper).

        A loop rather than one padded bmm: once the selection is hard the experts' loads are skewed (on
        CiteULike at τ = 0.02 the busiest item expert takes 340 of 968 pairs), and padding every expert to the
        busiest one's count computed 3-7× the kept pairs; the loop's ≤ M small products cost 1.3-4.7× less."""
        keep = s > _NEGLIGIBLE * min(tau, 1.0)
        rows, experts = keep.nonzero(as_tuple=True)
        if 2 * len(rows) > s.numel():
            return None
        self.last_density = len(rows) / max(1, s.numel())
        order = torch.argsort(experts, stable=True)
        rows, experts = rows[order], experts[order]
        counts = torch.bincount(experts, minlength=self.n_experts).tolist()
        d_s, h, d_t, m = self.student_dim, self.hidden_dim, self.teacher_dim, self.n_experts
        # unbind: one backward node that stacks the experts' gradients, instead of one full-size zero per slice
        w1, b1 = self.w1.view(d_s, m, h).unbind(1), self.b1.view(m, h).unbind(0)
        w2 = self.w2.view(m, h, d_t).unbind(0)
        xs, outs, start = x[rows], [], 0
        for e, n in enumerate(counts):
            if n:
                z = torch.addmm(b1[e], xs[start:start + n], w1[e]).relu_()
                outs.append(z @ w2[e])
                start += n
        contrib = torch.cat(outs) * s[rows, experts].unsqueeze(1).to(outs[0].dtype)
        base = s @ self.b2
        return base.to(contrib.dtype).index_add(0, rows, contrib)

    def loss(self, student_repr: Tensor, teacher_repr: Tensor, tau: float,
             generator: torch.Generator | None = None, reduction: str = "mean") -> Tensor:
        """‖h_t − ĥ_t‖² per entity, reduced over entities; teacher representations never get gradients."""
        teacher_repr = teacher_repr.detach()
        return squared_error_loss(teacher_repr, self(student_repr, teacher_repr, tau, generator), reduction)


class DistillationExperts(nn.Module):
    """Separate expert mixtures for users and items; the DE term of one training batch."""

    def __init__(self, user_dims: tuple[int, int], item_dims: tuple[int, int], n_experts: int,
                 compute_dtype: str = "float32", max_entities: int | None = None) -> None:
        """``user_dims`` / ``item_dims``: (student dim, teacher dim) of the user and item representations;
        ``compute_dtype``: see ``ExpertMixture``; ``max_entities``: see ``batch_loss``."""
        super().__init__()
        if max_entities is not None and max_entities < 1:
            raise ValueError(f"max_entities must be ≥ 1 or None, got {max_entities}")
        self.max_entities = max_entities
        self.users = ExpertMixture(*user_dims, n_experts, compute_dtype)
        self.items = ExpertMixture(*item_dims, n_experts, compute_dtype)

    @property
    def density(self) -> float:
        """Fraction of (entity, expert) pairs computed in the latest batch, users and items averaged."""
        return 0.5 * (self.users.last_density + self.items.last_density)

    def _subset(self, entities: Tensor, generator: torch.Generator | None) -> Tensor:
        """At most ``max_entities`` of ``entities``, uniformly without replacement."""
        if self.max_entities is None or entities.numel() <= self.max_entities:
            return entities
        pick = torch.randperm(entities.numel(), generator=generator, device=entities.device)[: self.max_entities]
        return entities[pick]

    def batch_loss(
        self, student: Recommender, teacher_user_repr: Tensor, teacher_item_repr: Tensor, users: Tensor,
        pos_items: Tensor, neg_items: Tensor | None, tau: float, generator: torch.Generator | None = None,
    ) -> Tensor:
        """mean_u L(u) + ½·(mean_i L(i) + mean_j L(j)) over the batch's unique users, positives and negatives.

        The authors sum each part over unique entities; this is the mean-reduced form (see the DE Config).
        With ``max_entities`` each part is averaged over a uniform random subset of at most that many of its
        unique entities: an unbiased estimate of the same loss (and gradient), for a fraction of the cost.
        """
        u = self._subset(users.unique(), generator)
        total = self.users.loss(student.user_repr(u), teacher_user_repr[u], tau, generator)
        parts = [self._subset(pos_items.unique(), generator)]
        if neg_items is not None and neg_items.numel():
            parts.append(self._subset(neg_items.reshape(-1).unique(), generator))
        items = torch.cat(parts)  # an item in both parts is two rows, with two draws (two calls in the code)
        per_item = self.items.loss(student.item_repr(items), teacher_item_repr[items], tau, generator, "none")
        item_loss = sum(part.mean() for part in per_item.split([len(p) for p in parts]))
        return total + 0.5 * item_loss


def representation_dims(student: Recommender, knowledge_user: Tensor, knowledge_item: Tensor) \
        -> tuple[tuple[int, int], tuple[int, int]]:
    """((student, teacher) user dims, (student, teacher) item dims), probing the student on entity 0."""
    zero = torch.zeros(1, dtype=torch.long, device=student.device)
    with torch.no_grad():
        d_su, d_si = student.user_repr(zero).shape[-1], student.item_repr(zero).shape[-1]
    return (d_su, knowledge_user.shape[1]), (d_si, knowledge_item.shape[1])
