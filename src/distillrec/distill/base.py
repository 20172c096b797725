"""The Distiller contract and the method registry.

A ``Distiller`` wraps a student ``Recommender`` and the frozen teacher knowledge (``TeacherKnowledge``):

- ``loss(batch) -> dict[str, Tensor]``: named, already-weighted terms whose sum is optimised: ``base`` (the
  student's own loss × ``lambda_base``) plus the method's terms (``rrd``, ``de``, …). The batch is the
  student's own training batch; methods draw their extra items from the cached knowledge.
- ``on_epoch_start(epoch)``: refresh per-epoch samples, anneal temperatures, switch curricula. Called by the
  trainer before each epoch with 1-based epoch numbers (and lazily with epoch 1 if ``loss`` comes first);
  schedules count from ``epoch_index(epoch) = epoch − 1``, so the first epoch is epoch 0 of a paper schedule.
  Every draw of an epoch comes from ``generator()``, seeded by (seed, epoch) at the epoch's start — as the
  trainer's own draws are — so a run resumed from a checkpoint repeats the uninterrupted run exactly. State
  that outlives an epoch and cannot be recomputed from (seed, epoch) and the student (DCD's student ranks)
  lives in persistent buffers, saved with the checkpoint.
- ``extra_parameters()``: parameters that are trained with the student but not deployed (experts, gates).
- ``student``: what gets deployed.

The teacher itself is not held: every method works from the knowledge tensors (registered as non-persistent
buffers, so ``.to(device)`` moves them and checkpoints stay small). ``Distiller.from_teacher`` computes or
loads that knowledge. Methods use the student only through ``score``, ``user_repr``, ``item_repr`` and
``loss``, so any model of the contract (BPR-MF, NeuMF, LightGCN) can be teacher or student. ``list_scores``
scores each row against its list, with a faster form for students scored by dot products of representation
tables (``score_tables``, ``distill.scoring``).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.distill.knowledge import KnowledgeSpec, TeacherKnowledge, load_or_compute_knowledge
from distillrec.distill.losses import ranked_list_loss
from distillrec.distill.sampling import ranks_in_rows
from distillrec.distill.scoring import ListPlan, ListScorer, planned_side_scores, side_scores, side_tables
from distillrec.models.base import Recommender
from distillrec.registry import Registry
from distillrec.utils import DistillrecError


class MethodConfig(BaseModel):
    """Hyper-parameters of a distillation method; a typo in a key is an error."""

    model_config = ConfigDict(extra="forbid")

    lambda_base: float = 1.0  # weight of the student's own loss


METHODS: Registry[type[Distiller]] = Registry("distillation method", "distillrec.distill")
register_method = METHODS.register


def get_method(name: str) -> type[Distiller]:
    return METHODS.get(name)


def list_methods() -> list[str]:
    return METHODS.names()


def batch_field(batch: Mapping[str, Tensor], key: str, method: str) -> Tensor:
    try:
        return batch[key]
    except KeyError:
        raise DistillrecError(f"method {method!r} needs a training batch with {key!r}; got keys {sorted(batch)}") \
            from None


def ranked_pair_loss(model: Recommender, rows: Tensor, ordered: Tensor, bag: Tensor, side: str) -> Tensor:
    """Relaxed Plackett-Luce loss (mean over rows) of the model's scores: ``ordered`` [B, K] in order, above
    ``bag`` [B, L]. One ``score`` call for both lists."""
    scores = side_scores(model, rows, torch.cat([ordered, bag], dim=1), side)
    return ranked_list_loss(scores, ordered.shape[1])


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of a distiller's draws in ``epoch``: a hash of (seed, epoch), a stream apart from the trainer's."""
    digest = hashlib.blake2b(f"distill|{seed}|{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class Distiller(nn.Module):
    name: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, student: Recommender, knowledge: TeacherKnowledge, dataset: Dataset,
                 config: MethodConfig | Mapping[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__()
        if (student.n_users, student.n_items) != (dataset.n_users, dataset.n_items):
            raise DistillrecError(f"student has {student.n_users} users × {student.n_items} items but data set "
                                  f"{dataset.name!r} has {dataset.n_users} × {dataset.n_items}")
        self.student = student
        self.config = self.make_config(config)
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}
        self._epoch: int | None = None
        self._check_knowledge(knowledge)
        for field, tensor in knowledge.tensors().items():
            self.register_buffer(f"teacher_{field}", tensor.to(student.device), persistent=False)
        self.list_scorer = ListScorer(student)
        self._plans: dict[str, ListPlan] = {}

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def make_config(cls, config: MethodConfig | Mapping[str, Any] | None) -> MethodConfig:
        if config is None:
            return cls.Config()
        if isinstance(config, Mapping):
            return cls.Config(**config)
        if not isinstance(config, cls.Config):
            raise DistillrecError(f"method {cls.name!r} expects a {cls.Config.__name__}, got {type(config).__name__}")
        return config

    @classmethod
    def knowledge_spec(cls, config: MethodConfig) -> KnowledgeSpec:
        """The teacher knowledge this method needs under ``config``."""
        return KnowledgeSpec()

    @classmethod
    def from_teacher(cls, student: Recommender, teacher: Recommender, dataset: Dataset,
                     config: MethodConfig | Mapping[str, Any] | None = None, cache_dir: str | Path | None = None,
                     seed: int = 0) -> Distiller:
        """Compute (or load from ``cache_dir``) the teacher knowledge, then build the distiller."""
        config = cls.make_config(config)
        knowledge = load_or_compute_knowledge(teacher, dataset, cls.knowledge_spec(config), cache_dir)
        return cls(student, knowledge, dataset, config, seed)

    def _check_knowledge(self, knowledge: TeacherKnowledge) -> None:
        spec = self.knowledge_spec(self.config)
        need = []
        if spec.n_user_topk and (knowledge.user_topk is None or knowledge.user_topk.shape[0] != self.n_users):
            need.append("user top-N lists")
        if spec.n_item_topk and (knowledge.item_topk is None or knowledge.item_topk.shape[0] != self.n_items):
            need.append("item top-N lists")
        if spec.reprs and (knowledge.user_repr is None or knowledge.item_repr is None):
            need.append("teacher representations")
        if need:
            raise DistillrecError(f"method {self.name!r} needs {', '.join(need)} in the teacher knowledge")

    # -- shared helpers -----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.student.device

    def generator(self) -> torch.Generator:
        """The generator of the current epoch's draws on the current device: seeded by (seed, epoch) when
        first used in an epoch, so every draw of an epoch is a function of (seed, epoch) alone."""
        device = self.device
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(epoch_seed(self.seed, self._epoch or 0))
        return self._generators[key]

    def list_width(self, knowledge_field: str, wanted: int, what: str) -> int:
        """How many entries of the cached ``knowledge_field`` lists to use: ``wanted``, or fewer (with a
        warning) when the lists were cut because the catalogue has fewer unobserved entries per row."""
        have = getattr(self, f"teacher_{knowledge_field}").shape[1]
        if wanted > have:
            warnings.warn(f"method {self.name!r}: {what} cut from {wanted} to {have}, the length of the teacher's "
                          f"{knowledge_field} lists (a small catalogue)", stacklevel=2)
            return have
        return wanted

    def score_tables(self) -> tuple[Tensor, Tensor] | None:
        """(user, item) representation tables whose dot products are the student's list scores, or None where
        the student scores otherwise (``score`` per pair)."""
        return self.list_scorer.tables()

    def list_scores(self, rows: Tensor, cols: Tensor, side: str) -> Tensor:
        """Student scores [R, N] of each row against its list."""
        return self.list_scorer(rows, cols, side, self.score_tables())

    def ranked_loss(self, rows: Tensor, lists: Tensor, k: int, side: str) -> Tensor:
        """Relaxed Plackett-Luce loss (mean over rows): ``lists`` [R, K + L] holds each row's ordered list
        (first ``k`` columns, in order) and its bag; one scoring pass for both."""
        return ranked_list_loss(self.list_scores(rows, lists, side), k)

    # Share of an epoch's list rows from which scoring all of them (``ListPlan``) beats gathering the batch's:
    # at 68 % (IR-RRD's item side on CiteULike-LOO) all rows take ~0.7× the time of the gathered ones.
    PLAN_FRACTION: ClassVar[float] = 0.5

    def ranked_loss_of(self, rows: Tensor, lists: Tensor, k: int, side: str) -> Tensor:
        """``ranked_loss(rows, lists[rows], k, side)`` for ``lists`` [n_rows of the side, K + L] fixed over an
        epoch (its per-row lists). When ``rows`` cover most of them and the student scores through tables,
        every row is scored against a structure built once per ``lists`` (the loss then takes ``rows``):
        the same value and gradients, without the per-batch gather of the lists and sort of their entries."""
        tables = self.score_tables()
        if tables is None or rows.numel() < self.PLAN_FRACTION * lists.shape[0]:
            return self.ranked_loss(rows, lists[rows], k, side)
        plan = self._plans.get(side)
        # new lists (each epoch's refresh makes a new tensor), or the same tensor changed in place
        if plan is None or plan.cols is not lists or plan.version != lists._version:
            plan = self._plans[side] = ListPlan(lists, side_tables(tables, side)[1].shape[0])
        # the loss kernel on the batch's rows alone: 1.3–1.6× faster than on every row, same gradients
        return ranked_list_loss(planned_side_scores(tables, plan, side).index_select(0, rows), k)

    @torch.no_grad()
    def student_ranks(self, lists: Tensor, side: str, pairs_per_chunk: int = 1 << 20,
                      out: Tensor | None = None) -> Tensor:
        """0-based rank [R, N] of every entry of every row's list under the current student (eval mode,
        chunked over rows, no gradients): the student's view of the teacher's lists (DCD, CD-SG). Written
        into ``out`` (any integer dtype) when given."""
        was_training = self.student.training
        self.student.eval()
        if out is None:
            out = torch.empty(lists.shape, dtype=torch.long, device=lists.device)
        try:
            chunk = max(1, pairs_per_chunk // lists.shape[1])
            for r0 in range(0, lists.shape[0], chunk):
                rows = torch.arange(r0, min(r0 + chunk, lists.shape[0]), device=lists.device)
                out[r0:r0 + chunk] = ranks_in_rows(self.list_scores(rows, lists[rows], side))
            return out
        finally:
            self.student.train(was_training)

    # -- the contract -------------------------------------------------------------------------------------
    def loss(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if self._epoch is None:
            self.on_epoch_start(1)
        terms: dict[str, Tensor] = {}
        with self.student.training_step():
            if self.config.lambda_base:
                terms["base"] = self.config.lambda_base * self.student.loss(batch)
            terms.update(self.kd_terms(batch))
        return terms

    def kd_terms(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The method's own weighted terms for one training batch."""
        raise NotImplementedError

    def on_epoch_start(self, epoch: int) -> None:
        self._epoch = epoch
        self._generators.clear()  # the epoch's generators are re-seeded from (seed, epoch) on first use

    @staticmethod
    def epoch_index(epoch: int) -> int:
        """0-based position of the trainer's 1-based ``epoch`` in a schedule."""
        return max(0, epoch - 1)

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trained alongside the student, dropped from the deployed model."""
        student_ids = {id(p) for p in self.student.parameters()}
        return [p for p in self.parameters() if id(p) not in student_ids]

    def stats(self) -> dict[str, Any]:
        """Numbers worth logging once per epoch (temperatures, …)."""
        return {}
