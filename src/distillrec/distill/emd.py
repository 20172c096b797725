"""Many-to-many layer mapping by the Earth Mover's Distance (BERT-EMD, as AdaRec uses it; spec §5).

Student layers i (weights w_s) and teacher layers j (weights w_t), both on the simplex, with a ground distance
D[i, j]. The flow F* = argmin Σ F·D subject to F ≥ 0, F·1 = w_s, Fᵀ·1 = w_t is solved exactly (POT's network
simplex, ``ot.emd``) on detached float64 distances; the loss Σ F*·D then carries gradients through D only.

After every training step the layer weights move by BERT-EMD's "cost attention": a layer whose transport
cost per unit of mass is high gets less weight next time,

    c_i = Σ_j F_ij D_ij / w_i,    ŵ_i = (Σ_k c_k) / c_i,    w = softmax(ŵ / τ)    (τ = 10 in AdaRec)

and the same on the teacher side with the mirrored distance D'[j, i] (KL is not symmetric) and Fᵀ.
``update="sum"`` normalises ŵ by its sum instead (the BERT-EMD authors' later variant).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import ot
import torch
from torch import Tensor, nn


def emd_flow(w_s: Tensor, w_t: Tensor, dist: Tensor) -> Tensor:
    """The exact optimal transport plan [S, T] between two weight vectors for the ground distance ``dist``."""
    if dist.shape != (w_s.numel(), w_t.numel()):
        raise ValueError(f"distance matrix has shape {tuple(dist.shape)}, expected ({w_s.numel()}, {w_t.numel()})")
    a = w_s.detach().double().cpu().numpy()
    b = w_t.detach().double().cpu().numpy()
    m = np.ascontiguousarray(dist.detach().double().cpu().numpy())
    if not (np.isfinite(m).all() and (a >= 0).all() and (b >= 0).all()):
        raise ValueError("EMD needs finite distances and non-negative layer weights")
    flow = ot.emd(a / a.sum(), b / b.sum(), m)  # balanced: both sides carry mass 1
    return torch.from_numpy(flow).to(dist.device, dist.dtype)


def cost_attention(flow: Tensor, dist: Tensor, weights: Tensor, tau: float = 10.0,
                   update: Literal["softmax", "sum"] = "softmax", eps: float = 1e-8) -> Tensor:
    """BERT-EMD's weight update for the rows of ``flow`` / ``dist`` (the side whose ``weights`` are given).

    ``eps`` floors the per-unit cost (the authors leave ŵ = 0 when a cost is exactly 0, spec §5).
    """
    c = (flow * dist).sum(1) / weights.clamp_min(eps)
    c = c.clamp_min(eps)
    hat = c.sum() / c
    return torch.softmax(hat / tau, 0) if update == "softmax" else hat / hat.sum()


class EMDLayerMapper(nn.Module):
    """Holds the persistent layer weights (buffers: checkpointed with the distiller) and computes the loss."""

    def __init__(self, n_student: int, n_teacher: int, tau: float = 10.0,
                 update: Literal["softmax", "sum"] = "softmax") -> None:
        super().__init__()
        if n_student < 1 or n_teacher < 1:
            raise ValueError(f"EMD needs at least one layer per side, got {n_student} and {n_teacher}")
        if tau <= 0:
            raise ValueError(f"EMD temperature must be positive, got {tau}")
        self.tau, self.update_rule = tau, update
        self.register_buffer("w_student", torch.full((n_student,), 1.0 / n_student, dtype=torch.float64))
        self.register_buffer("w_teacher", torch.full((n_teacher,), 1.0 / n_teacher, dtype=torch.float64))
        self.last_flow: Tensor | None = None

    def forward(self, dist: Tensor, dist_mirror: Tensor | None = None) -> Tensor:
        """Σ F*·D for D [S, T]; in training mode the weights are then updated (``dist_mirror`` [T, S]; default
        Dᵀ, right for symmetric distances)."""
        flow = emd_flow(self.w_student, self.w_teacher, dist)
        self.last_flow = flow.detach()
        if self.training:
            self.update(flow.detach(), dist.detach(), (dist_mirror if dist_mirror is not None else dist.T).detach())
        return (flow * dist).sum()

    @torch.no_grad()
    def update(self, flow: Tensor, dist: Tensor, dist_mirror: Tensor) -> None:
        new_s = cost_attention(flow.double(), dist.double(), self.w_student, self.tau, self.update_rule)
        new_t = cost_attention(flow.T.double(), dist_mirror.double(), self.w_teacher, self.tau, self.update_rule)
        self.w_student.copy_(new_s)
        self.w_teacher.copy_(new_t)


def uniform_layer_map(n_student: int, n_teacher: int) -> list[int]:
    """Teacher layer of each student layer for a fixed one-to-one mapping: evenly spaced, ending at the last
    (4 student × 8 teacher layers: 1, 3, 5, 7 in 0-based ids), the 'skip' mapping of PKD/TinyBERT."""
    return [max(0, round((i + 1) * n_teacher / n_student) - 1) for i in range(n_student)]


class OneToOneLayerMapper(nn.Module):
    """The no-EMD ablation: student layer i learns from one fixed teacher layer, loss = mean_i D[i, map(i)]."""

    def __init__(self, n_student: int, n_teacher: int) -> None:
        super().__init__()
        flow = torch.zeros(n_student, n_teacher, dtype=torch.float64)
        flow[torch.arange(n_student), torch.tensor(uniform_layer_map(n_student, n_teacher))] = 1.0 / n_student
        self.register_buffer("flow", flow, persistent=False)
        self.last_flow: Tensor | None = None

    def forward(self, dist: Tensor, dist_mirror: Tensor | None = None) -> Tensor:
        self.last_flow = self.flow
        return (self.flow.to(dist.dtype) * dist).sum()


def layer_distances(student: Tensor, teacher: Tensor, kind: Literal["kl", "mse"] = "kl",
                    direction: Literal["forward", "reverse"] = "forward",
                    denominator: float | None = None) -> tuple[Tensor, Tensor]:
    """Ground distances between every student layer [S, N, C] and teacher layer [T, N, C] over N tokens.

    ``kl``: the states are softmaxed over channels; forward D[i, j] = KL(p_t,j ‖ p_s,i) (teacher as target),
    reverse D[i, j] = KL(p_s,i ‖ p_t,j) (the authors' argument order). ``mse``: mean squared error per element.
    Sums over tokens are divided by ``denominator`` (default N: a per-token mean; the authors divide by B).
    Returns (D [S, T], D' [T, S]): D' is the mirrored distance used for the teacher-side weight update.
    """
    if student.dim() != 3 or teacher.dim() != 3 or student.shape[1:] != teacher.shape[1:]:
        raise ValueError(f"layer stacks must be [S, N, C] and [T, N, C], got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}")
    n_tokens, channels = student.shape[1], student.shape[2]
    denom = float(denominator if denominator is not None else max(1, n_tokens))
    if kind == "mse":
        sq_s = (student**2).sum((1, 2))
        sq_t = (teacher**2).sum((1, 2))
        cross = torch.einsum("snc,tnc->st", student, teacher)
        d = (sq_s[:, None] + sq_t[None, :] - 2 * cross).clamp_min(0) / (denom * channels)
        return d, d.T
    logp_s, logp_t = torch.log_softmax(student, -1), torch.log_softmax(teacher, -1)
    p_s, p_t = logp_s.exp(), logp_t.exp()
    # KL(a‖b) = Σ a log a − Σ a log b: the self terms are per layer, the cross terms one einsum each
    kl_t_s = (p_t * logp_t).sum((1, 2))[None, :] - torch.einsum("tnc,snc->st", p_t, logp_s)  # KL(p_t‖p_s) [S,T]
    kl_s_t = (p_s * logp_s).sum((1, 2))[:, None] - torch.einsum("snc,tnc->st", p_s, logp_t)  # KL(p_s‖p_t) [S,T]
    kl_t_s, kl_s_t = kl_t_s.clamp_min(0) / denom, kl_s_t.clamp_min(0) / denom
    if direction == "forward":
        return kl_t_s, kl_s_t.T
    return kl_s_t, kl_t_s.T
