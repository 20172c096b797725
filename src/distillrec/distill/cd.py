"""CD: Collaborative Distillation (Lee et al., ICDM 2019), on the teacher's top-N lists.

Per user and epoch, ``n_samples`` items are drawn from the teacher's top-N unobserved items with a
rank-aware probability — exp(−γ·r/N) or linear 1 − r/N in the rank r of the *teacher* (``guide="teacher"``,
CD-TG) or of the current *student* (``"student"``, CD-SG; labels still come from the teacher), or uniformly
(``"base"``, CD-Base). The student's logit on each is fitted to the teacher's soft label
q = σ((z_T + T2)/T1) with a point-wise BCE (mean over the samples, then over the batch's unique users).

No official code exists; the sampling pool (the teacher's top-N list, as the DE-RRD paper describes CD)
and the soft-label form (from a third-party port) are interpretations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.distill.base import Distiller, MethodConfig, batch_field, register_method
from distillrec.distill.knowledge import KnowledgeSpec, TeacherKnowledge
from distillrec.distill.losses import soft_bce_loss
from distillrec.distill.sampling import gumbel_topk
from distillrec.models.base import Recommender


class CDConfig(MethodConfig):
    """λ = 1 (the paper's default in its LaTeX source). γ, N and the sample count are not recoverable and
    are set here; T1 = 1 as in the paper; T2 is described there as another scale with default 1 but its
    formula is unverified, so the label shift defaults to the neutral 0 (q = σ(z_T))."""

    lambda_cd: float = 1.0
    n_topk: int = 100
    n_samples: int = 10
    guide: Literal["teacher", "student", "base"] = "teacher"
    decay: Literal["exp", "linear"] = "exp"
    gamma: float = 5.0
    label_temperature: float = 1.0  # T1
    label_shift: float = 0.0  # T2 as an additive shift


@register_method("cd")
class CD(Distiller):
    Config = CDConfig

    def __init__(self, student: Recommender, knowledge: TeacherKnowledge, dataset: Dataset,
                 config: CDConfig | Mapping[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(student, knowledge, dataset, config, seed)
        c = self.config
        if c.n_samples > c.n_topk:
            raise ValueError(f"CD: n_samples ({c.n_samples}) must not exceed n_topk ({c.n_topk})")
        self.n_list = self.list_width("user_topk", c.n_topk, "n_topk")  # shorter on a small catalogue
        self.n_samples = self.list_width("user_topk", c.n_samples, "n_samples")
        self.register_buffer("samples", torch.zeros(0, self.n_samples, dtype=torch.long), persistent=False)
        self.register_buffer("labels", torch.zeros(0, self.n_samples), persistent=False)

    @classmethod
    def knowledge_spec(cls, config: CDConfig) -> KnowledgeSpec:
        return KnowledgeSpec(n_user_topk=config.n_topk)

    def sampling_log_weights(self) -> Tensor:
        """[U, N] log-probabilities (up to a constant) of drawing each list position this epoch."""
        c, n = self.config, self.n_list
        lists = self.teacher_user_topk[:, :n]
        if c.guide == "base":
            return torch.zeros(lists.shape, device=self.device)
        if c.guide == "student":
            rank = self.student_ranks(lists, "user").float()
        else:
            rank = torch.arange(n, device=self.device, dtype=torch.float32).expand(lists.shape)
        if c.decay == "exp":
            return -c.gamma * rank / n
        return torch.log1p(-rank / n)  # 1 − r/N ≥ 1/N > 0

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        c = self.config
        pos = gumbel_topk(self.sampling_log_weights(), self.n_samples, self.generator())
        self.samples = self.teacher_user_topk.gather(1, pos)
        teacher_logits = self.teacher_user_topk_scores.gather(1, pos)
        self.labels = torch.sigmoid((teacher_logits + c.label_shift) / c.label_temperature)

    def kd_terms(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        users = batch_field(batch, "users", self.name).unique()
        logits = self.list_scores(users, self.samples[users], "user")
        return {"cd": self.config.lambda_cd * soft_bce_loss(logits, self.labels[users])}
