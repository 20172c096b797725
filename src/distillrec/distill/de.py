"""DE: Distillation Experts (Kang et al., CIKM 2020).

Experts map the student's user and item representations into the teacher's space; a Gumbel-softmax over
a selection network (fed with the teacher representation) picks one expert per entity; the loss is the
squared reconstruction error of the teacher representation, over the batch's unique users, positives and
negatives. Experts and selection networks are ``extra_parameters``: trained, then dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.distill.base import Distiller, MethodConfig, batch_field, register_method
from distillrec.distill.experts import DistillationExperts, representation_dims
from distillrec.distill.gumbel import anneal_temperature
from distillrec.distill.knowledge import KnowledgeSpec, TeacherKnowledge
from distillrec.models.base import Recommender


class DEConfig(MethodConfig):
    """Defaults of the authors' code: M = 30 experts, τ from 1 to 1e-10 over E = 1000 epochs (E explicit here;
    the authors tie it to max_epoch), λ_DE = 1e-2 on summed losses.

    λ: the authors sum BPR over 1024 triples and DE over unique users + ½(unique positives + unique negatives).
    Here each part is a mean; on the CiteULike split with batch 1024 the unique/triples ratios are 0.70 (users),
    0.94 (positives) and 0.98 (negatives), a weighted 0.83, hence λ = 1e-2 × 0.83.
    """

    lambda_de: float = 8.3e-3
    n_experts: int = 30
    tau_start: float = 1.0
    tau_end: float = 1e-10
    anneal_epochs: int = 1000


@register_method("de")
class DE(Distiller):
    Config = DEConfig

    def __init__(self, student: Recommender, knowledge: TeacherKnowledge, dataset: Dataset,
                 config: DEConfig | Mapping[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__(student, knowledge, dataset, config, seed)
        dims = representation_dims(student, self.teacher_user_repr, self.teacher_item_repr)
        self.experts = DistillationExperts(*dims, self.config.n_experts).to(self.device)
        self.tau = self.config.tau_start

    @classmethod
    def knowledge_spec(cls, config: DEConfig) -> KnowledgeSpec:
        return KnowledgeSpec(reprs=True)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        c = self.config
        self.tau = anneal_temperature(self.epoch_index(epoch), c.tau_start, c.tau_end, c.anneal_epochs)

    def kd_terms(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        loss = self.experts.batch_loss(
            self.student, self.teacher_user_repr, self.teacher_item_repr, batch_field(batch, "users", self.name),
            batch_field(batch, "pos_items", self.name), batch.get("neg_items"), self.tau, self.generator())
        return {"de": self.config.lambda_de * loss}

    def stats(self) -> dict[str, Any]:
        return {"tau": self.tau}
