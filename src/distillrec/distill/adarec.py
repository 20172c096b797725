"""AdaRec's search and retrain objective (spec §4, §6): next-item CE, target-oriented KD, cost-sensitive loss.

    L = (1 − γ_e)·CE + γ_e·(λ_emb·L_emb + λ_hid·L_hid + λ_logit·L_logit) + β·L_cost

* CE: next-item cross-entropy over all items at every real position.
* L_emb: MSE between the projected student embedding output and the teacher's.
* L_hid: EMD many-to-many mapping (``distill.emd``) between the projected student layers (cells) and the
  teacher layers, ground distance KL over channel-softmaxed states; ``mapping="one_to_one"`` is the no-EMD
  ablation.
* L_logit: Hinton KD, T²·KL(p_t^T ‖ p_s^T) over all items.
* L_cost: Σ over edges of ⟨hard Gumbel sample, per-op cost⟩; the costs are measured from the op modules at the
  configured width (``models.seq_ops.measure_op_costs``) and normalised (``cost_mode``).

Why an ``nn.Module`` with the Distiller hooks rather than a ``Distiller``: AdaRec distils the teacher's hidden
states, embedding output and full logits at every position of the training batch, which a cached top-N /
representation ``TeacherKnowledge`` cannot hold; the frozen teacher runs on each batch (under ``no_grad``). It
keeps the trainer's contract: ``loss(batch)`` returns named weighted terms, ``on_epoch_start(epoch)`` anneals
the Gumbel temperature and γ, ``extra_parameters()`` are the KD projections (dropped after training),
``stats()`` logs τ, the EMD layer weights and the architecture distribution.

``faithful=True`` (warns) reproduces the authors' code: reverse KL(p_s ‖ p_t) for logits and hidden states,
temperature 1 without T², no padding mask, and per-sequence sums over positions divided by the batch size.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from distillrec.distill.emd import EMDLayerMapper, OneToOneLayerMapper, layer_distances
from distillrec.models.sasrec import SequentialRecommender
from distillrec.models.supernet import FAITHFUL_OPS, SuperNet
from distillrec.utils import DistillrecError, fusable

# The authors' hard-coded relative costs of their ten ops (spec §3.1), for cost_mode="paper" only.
PAPER_COSTS = dict(zip(FAITHFUL_OPS, (0.56531834, 0.56531834, 0.56531834, 2.12701275, 2.12701275, 2.12701275,
                                      0.48075444, 0.48075444, 0.48074893, 0.48074893), strict=True))


class AdaRecConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gamma: float = Field(0.5, ge=0.0, le=1.0)  # KD share of the objective
    gamma_decay: float = Field(0.0, ge=0.0, lt=1.0)  # γ_e = γ·(1 − decay)^e
    kd: bool = True  # False: CE (+ cost) only
    lambda_emb: float = Field(1.0, ge=0.0)
    lambda_hid: float = Field(1.0, ge=0.0)
    lambda_logit: float = Field(1.0, ge=0.0)
    temperature: float = Field(1.0, gt=0.0)  # logit KD
    mapping: Literal["emd", "one_to_one"] = "emd"
    hidden_distance: Literal["kl", "mse"] = "kl"
    emd_tau: float = Field(10.0, gt=0.0)
    emd_update: Literal["softmax", "sum"] = "softmax"
    teacher_layers: list[int] | None = None  # 1-based teacher layers to distil; None = all
    # search only
    beta: float = Field(1.0, ge=0.0)  # cost weight (authors: 8 with their cost table; see configs/adarec)
    cost_mode: Literal["relative", "softmax", "paper"] = "relative"
    cost_estimator: Literal["sample", "expected"] = "sample"
    tau0: float = Field(1.0, gt=0.0)  # Gumbel temperature τ_e = τ0·decay^⌊e/step⌋
    tau_decay: float = Field(0.8, gt=0.0, le=1.0)
    tau_step: int = Field(5, ge=1)
    arch_learning_rate: float = Field(2e-5, gt=0.0)
    arch_weight_decay: float = Field(1e-4, ge=0.0)
    faithful: bool = False


def op_cost_vector(params: Tensor, macs: Tensor, names: list[str], mode: str) -> Tensor:
    """Per-op cost from measured parameters and MACs.

    ``relative``: ½(params/max params + MACs/max MACs), the costliest op = 1, skip/zero = 0.
    ``softmax``: the authors' formula n_ops·½(softmax(MACs/1e6) + softmax(params/1e6)) on the measured counts.
    ``paper``: the authors' hard-coded table (their ten ops only).
    """
    params, macs = params.double(), macs.double()
    if mode == "relative":
        return 0.5 * (params / params.max().clamp_min(1) + macs / macs.max().clamp_min(1))
    if mode == "softmax":
        return len(names) * 0.5 * (torch.softmax(macs / 1e6, 0) + torch.softmax(params / 1e6, 0))
    missing = [n for n in names if n not in PAPER_COSTS]
    if missing:
        raise DistillrecError(f"cost_mode 'paper' has costs only for the authors' ops; not for {missing}")
    return torch.tensor([PAPER_COSTS[n] for n in names], dtype=torch.float64)


def item_logits(model: SequentialRecommender, hidden: Tensor) -> Tensor:
    """Scores over all items [..., n_items] of hidden states [..., d] (the model's output layer, then its items)."""
    return model.item_logits(model.output(hidden))


def logit_kd(z_s: Tensor, z_t: Tensor, temperature: float = 1.0, reverse: bool = False) -> Tensor:
    """Per-token KD [N]: T²·KL(p_t^T ‖ p_s^T), or the authors' reverse KL(p_s ‖ p_t) at T = 1 (no T²)."""
    if reverse:
        logp_s, logp_t = F.log_softmax(z_s, -1), F.log_softmax(z_t, -1)
        return (logp_s.exp() * (logp_s - logp_t)).sum(-1)
    logp_s, logp_t = F.log_softmax(z_s / temperature, -1), F.log_softmax(z_t / temperature, -1)
    return temperature**2 * (logp_t.exp() * (logp_t - logp_s)).sum(-1)


class AdaRecDistiller(nn.Module):
    """KD from a frozen sequential teacher into a super-net (search) or any sequential student (retrain)."""

    def __init__(self, student: SequentialRecommender, teacher: SequentialRecommender,
                 config: AdaRecConfig | dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config if isinstance(config, AdaRecConfig) else AdaRecConfig(**(config or {}))
        c = self.config
        if c.faithful:
            warnings.warn("AdaRec faithful mode: reverse KL, no padding mask and per-sequence sums, as in the "
                          "authors' code (spec §10)", UserWarning, stacklevel=2)
        if (student.n_items, student.pad_id) != (teacher.n_items, teacher.pad_id):
            raise DistillrecError(f"student has {student.n_items} items but the teacher has {teacher.n_items}")
        self.student = student
        object.__setattr__(self, "teacher", teacher.eval().requires_grad_(False))  # not a submodule: not saved
        self.search = isinstance(student, SuperNet)
        if student.config.max_len > teacher.config.max_len:
            raise DistillrecError(f"student max_len {student.config.max_len} exceeds the teacher's "
                                  f"{teacher.config.max_len}: the teacher cannot read the student's batches")
        probe = torch.zeros(1, 1, dtype=torch.long, device=student.device)
        was_training = student.training
        student.eval()  # a 1-token probe (BatchNorm in faithful mode needs eval statistics)
        try:
            with torch.no_grad():
                n_s = len(student.encode(probe)) - 1
                t_states = teacher.encode(probe.to(teacher.device))
        finally:
            student.train(was_training)
        n_t = len(t_states) - 1
        self.teacher_layers = list(range(1, n_t + 1)) if c.teacher_layers is None else list(c.teacher_layers)
        if not self.teacher_layers or min(self.teacher_layers) < 1 or max(self.teacher_layers) > n_t:
            raise DistillrecError(f"teacher_layers must be 1-based layer ids in 1..{n_t}, got {c.teacher_layers}")
        d_s, d_t = student.item_embedding.embedding_dim, t_states[0].shape[-1]
        self.emb_proj = nn.Linear(d_s, d_t).to(student.device)
        self.hid_proj = nn.Linear(d_s, d_t).to(student.device)  # one projection shared by every student layer
        n_map = len(self.teacher_layers)
        self.mapper = (EMDLayerMapper(n_s, n_map, c.emd_tau, c.emd_update) if c.mapping == "emd"
                       else OneToOneLayerMapper(n_s, n_map))
        if self.search:
            cost = op_cost_vector(student.op_params, student.op_macs, student.op_names, c.cost_mode)
            self.register_buffer("op_cost", cost.float().to(student.device), persistent=False)
        self.gamma_e = c.gamma
        self._epoch: int | None = None

    # -- hooks ------------------------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        self._epoch = epoch
        e = max(0, epoch - 1)
        c = self.config
        self.gamma_e = c.gamma * (1 - c.gamma_decay) ** e
        if self.search:
            self.student.set_temperature(c.tau0 * c.tau_decay ** (e // c.tau_step))

    def extra_parameters(self) -> list[nn.Parameter]:
        return [*self.emb_proj.parameters(), *self.hid_proj.parameters()]

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"gamma": round(self.gamma_e, 6)}
        if isinstance(self.mapper, EMDLayerMapper):
            out["w_student"] = [round(v, 5) for v in self.mapper.w_student.tolist()]
            out["w_teacher"] = [round(v, 5) for v in self.mapper.w_teacher.tolist()]
        if self.search:
            out["tau"] = self.student.tau
            out["genotype"] = self.student.derive()
            out["arch_probs"] = [[round(v, 4) for v in row] for row in self.student.arch_probs().tolist()]
        return out

    def optimizer(self, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
        """AdamW with two groups: weights (student + projections) and, in a search, ``alpha`` at its own rate
        (the spec's two AdamW optimisers stepped after one backward pass)."""
        if not self.search:
            params = [*self.student.parameters(), *self.extra_parameters()]
            return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, fused=fusable(params))
        c = self.config
        weights, arch = [*self.student.weight_parameters(), *self.extra_parameters()], self.student.arch_parameters()
        return torch.optim.AdamW([
            {"params": weights},
            {"params": arch, "lr": c.arch_learning_rate, "weight_decay": c.arch_weight_decay},
        ], lr=learning_rate, weight_decay=weight_decay, fused=fusable([*weights, *arch]))

    # -- the objective --------------------------------------------------------------------------------------
    def cost_loss(self, arch: Tensor) -> Tensor:
        """Σ over edges of the sampled ops' costs (or their expectation under softmax(alpha))."""
        if self.config.cost_estimator == "expected":
            arch = torch.softmax(self.student.alpha, -1)
        return (arch * self.op_cost.to(arch.dtype)).sum()

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self._epoch is None:
            self.on_epoch_start(1)
        c, student = self.config, self.student
        x, y = batch["input_seq"], batch["target_seq"]
        valid = y != student.pad_id
        if not bool(valid.any()):
            raise ValueError("sequence batch has no target: every target_seq entry is the padding id")
        arch = student.sample_arch() if self.search else None
        states = student.encode(x, arch) if self.search else student.encode(x)
        ce = F.cross_entropy(item_logits(student, states[-1][valid]), y[valid])
        gamma = self.gamma_e if c.kd else 0.0
        terms = {"ce": (1 - gamma) * ce}
        if gamma > 0:
            terms.update(self._kd_terms(x, valid, states, gamma))
        if self.search and c.beta > 0:
            terms["cost"] = c.beta * self.cost_loss(arch)
        return terms

    def _kd_terms(self, x: Tensor, valid: Tensor, states: list[Tensor], gamma: float) -> dict[str, Tensor]:
        c, student, teacher = self.config, self.student, self.teacher
        if next(teacher.parameters()).device != x.device:
            teacher.to(x.device)
        # corrected: real positions only, per-token means; faithful: every position, sums divided by B
        sel = torch.ones_like(valid) if c.faithful else valid
        denom = float(x.shape[0]) if c.faithful else None
        with torch.no_grad():
            t_states = teacher.encode(x)
            t_emb = t_states[0][sel]
            t_hid = torch.stack([t_states[j][sel] for j in self.teacher_layers])
            z_t = item_logits(teacher, t_states[-1][sel])
        terms: dict[str, Tensor] = {}
        if c.lambda_emb:
            se = (self.emb_proj(states[0][sel]) - t_emb) ** 2
            terms["emb"] = gamma * c.lambda_emb * se.mean()  # faithful: the mean includes padding positions
        if c.lambda_hid:
            s_hid = self.hid_proj(torch.stack([h[sel] for h in states[1:]]))
            direction = "reverse" if c.faithful else "forward"
            d, d_mirror = layer_distances(s_hid, t_hid, c.hidden_distance, direction, denom)
            terms["hid"] = gamma * c.lambda_hid * self.mapper(d, d_mirror)
        if c.lambda_logit:
            kd = logit_kd(item_logits(student, states[-1][sel]), z_t, c.temperature, reverse=c.faithful)
            terms["logit"] = gamma * c.lambda_logit * (kd.sum() / denom if c.faithful else kd.mean())
        return terms

