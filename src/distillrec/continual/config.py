"""The typed configuration of a stream run (YAML presets under ``configs/ccd/``, ``--set a.b=value``).

Per-block hyper-parameters (the authors tuned replay sizes and proxy weights per block, spec §B.10) take a
number or a list: the list's (k−1)-th entry applies to block k, its last entry to every later block.
Defaults are the authors' (``run.sh``, Yelp), with the λ of summed losses rescaled for mean-reduced ones
where the method says so.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from distillrec.config import TrainConfig, load_yaml, merge, parse_overrides
from distillrec.utils import DistillrecError

PerBlock = float | list[float]


def at_block(value: PerBlock, k: int) -> float:
    """The value of a per-block setting at block k ≥ 1."""
    if isinstance(value, list):
        if not value:
            raise DistillrecError("a per-block list must not be empty")
        return value[min(k - 1, len(value) - 1)]
    return value


def _train(**kw: Any) -> TrainConfig:
    # The authors' L2 of 1e-4 acts on summed losses; ours are batch means, so it is divided by the 2,048 pairs of
    # a batch. Unscaled, Adam's coupled decay drives every row a batch does not touch to 0 (BPR → ln 2).
    base = {"valid_metric": "recall@20", "topk": [20], "weight_decay": 5e-8}
    return TrainConfig(**(base | kw))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class StreamSettings(_Strict):
    """How a time-stamped data set is cut (the registry's stream data sets come cut)."""

    base_fraction: float = Field(0.5, gt=0, lt=1)
    n_blocks: int = Field(5, ge=1)
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    dataset: dict[str, Any] = Field(default_factory=dict)  # load_dataset options (synthetic: n_users, …)


class InitSettings(_Strict):
    mode: Literal["auto", "ccd", "random"] = "auto"  # auto: ccd for ccd/lwckd, random for finetune
    student_mode: Literal["ccd", "random"] | None = None  # the student's own, in every method (None: as mode)
    topk: int = Field(20, ge=1)  # |H_u| of the 2-hop term
    one_hop_only: bool = False


class ReplaySettings(_Strict):
    lambda_replay: float = Field(0.5, ge=0)
    anneal_epochs: float = Field(10.0, ge=0)  # T_a of exp(−e/T_a); 0 = no annealing
    epsilon: float = Field(1e-4, ge=0)
    top_a: PerBlock = Field(default_factory=lambda: [50, 100, 100, 50, 50])  # A
    n_stability: PerBlock = Field(default_factory=lambda: [1, 3, 5, 1, 3])  # n_S per user
    n_plasticity: PerBlock = Field(default_factory=lambda: [0, 5, 5, 5, 1])  # n_P per user
    n_student: PerBlock = 0  # n_M per user (teacher side: items from the updated student)
    resample_every: int = Field(5, ge=0)  # epochs between re-draws (the authors: at every evaluation)
    batch_size: int = Field(1024, ge=1)  # users scored at a time while sampling


class StudentUpdateSettings(_Strict):
    # what ccd's stage 2 updates into M_k: "distilled" — D_{k−1}, the authors' (spec §B.6); "deployed" — the
    # previous deployed student M_{k−1}, which keeps what it knew of idle users (the replay reference is then
    # M_{k−1} too; not the authors')
    start: Literal["distilled", "deployed"] = "distilled"
    w_stability: PerBlock = Field(default_factory=lambda: [1.0, 1.0, 0.9, 0.9, 0.9])
    w_plasticity: PerBlock = Field(default_factory=lambda: [0.0, 0.1, 0.0, 0.0, 0.0])
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    train: TrainConfig = Field(default_factory=lambda: _train(learning_rate=1e-3, batch_size=2048, epochs=10,
                                                               eval_every=5, patience=2))


def _teacher_replay() -> ReplaySettings:
    return ReplaySettings(anneal_epochs=5.0, top_a=[100, 100, 50, 100, 100], n_stability=[5, 1, 3, 1, 1],
                          n_plasticity=[0, 3, 5, 3, 5], n_student=[5, 5, 1, 1, 1])


class TeacherUpdateSettings(_Strict):
    lwckd: dict[str, Any] = Field(default_factory=dict)  # LWCKDConfig fields
    kl_lambda: float = Field(1.0, ge=0)  # Mult-VAE teachers: KL to the previous output
    pseudo_label: float = Field(0.1, gt=0, le=1)  # Mult-VAE teachers: replay pairs become this label
    replay: ReplaySettings = Field(default_factory=_teacher_replay)
    train: TrainConfig = Field(default_factory=lambda: _train(learning_rate=1e-3, batch_size=2048, epochs=10,
                                                               eval_every=5, patience=2))

    @field_validator("lwckd")
    @classmethod
    def _check_lwckd(cls, v: dict[str, Any]) -> dict[str, Any]:
        from distillrec.continual.lwckd import LWCKDConfig

        LWCKDConfig(**v)
        return v


def _kd_defaults() -> dict[str, Any]:
    # CCD: teacher top-40 in order (no rank sampling), λ_u = λ_i = 0.01 on summed losses; mean-reduced here,
    # so × unique rows / triples of a 1024 batch (≈ 0.7 users, ≈ 0.9 items, as IR-RRD's defaults).
    # The authors' bags (10,000–30,000 uniform items per user) are cut to 1,000: memory is rows × bag.
    return {"n_topk": 40, "n_interesting": 40, "n_uninteresting": 1000, "lambda_user": 0.007, "temperature": 10.0,
            "n_item_topk": 40, "n_item_interesting": 40, "n_item_uninteresting": 1000, "lambda_item": 0.009,
            "item_temperature": 10.0, "sampling": "top"}


class EvalSettings(_Strict):
    ks: list[int] = Field(default_factory=lambda: [20, 50])
    metrics: list[str] = Field(default_factory=lambda: ["recall", "ndcg"])
    primary: str = "recall@20"  # what the plots and the H-mean headline use
    mask: Literal["block", "history"] = "block"  # mask block j's train (CCD) or blocks 0..j's train
    include_base: bool = True  # RA counts the base block among the past blocks
    batch_size: int | None = Field(None, ge=1)


class StreamConfig(_Strict):
    teachers: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"name": "bpr", "embedding_dim": 64, "seed": s} for s in range(3)])
    student: dict[str, Any] = Field(default_factory=lambda: {"name": "bpr", "embedding_dim": 8})
    teacher_train: TrainConfig = Field(default_factory=lambda: _train(learning_rate=1e-3, batch_size=512,
                                                                       n_negatives=2, epochs=100, eval_every=1,
                                                                       patience=10))
    kd: dict[str, Any] = Field(default_factory=_kd_defaults)  # IR-RRD (distill/irrrd.py) fields
    kd_train: TrainConfig = Field(default_factory=lambda: _train(learning_rate=5e-3, batch_size=1024, epochs=10,
                                                                  eval_every=5, patience=2))
    # stage 1's item-side RRD: "separate" — the authors' own pass of optimiser steps over all items per epoch
    # (spec §B.5, continual/kd.py); "batch" — the library IR-RRD's term on each batch's positive items
    kd_item_pass: Literal["separate", "batch"] = "separate"
    # stage 1's user-side RRD: "batch" — the authors', on the users of D_k's interaction batches only;
    # "all" — plus a pass of its own over every user seen so far (needs kd_item_pass "separate")
    kd_user_pass: Literal["batch", "all"] = "batch"
    # where ccd's stage 1 starts at blocks k >= 1: "fresh" — a random student, the authors' (spec §B.5, pitfall
    # 6); "student" — the deployed student M_k, so what it knows of users inactive in D_k is not thrown away;
    # "both" — a fresh D_k for the proxies and the teachers' replay, and a second one from M_k that starts the
    # next block's stage 2 (two distillations a block)
    kd_init: Literal["fresh", "student", "both"] = "fresh"
    # the authors' hard-negative exclusion (spec §B.5, §B.6d, §B.7.4): BPR negatives in stage 1 (and stage 1's
    # user-side RRD bags) and in ccd's stages 2–3 avoid the top-N items of the teacher system, the distilled
    # student and the proxies (continual/negatives.py); 0 = the trainer's plain uniform negatives
    hard_negatives_top: int = Field(40, ge=0)
    # stage 1 with a graph student (LightGCN): both RRD sides on its layer-0 embeddings, BPR on the propagated
    # ones (the authors' KD.py, spec §B.5); false: RRD on the propagated readout too
    kd_ego_rrd: bool = True
    student_update: StudentUpdateSettings = Field(default_factory=StudentUpdateSettings)
    teacher_update: TeacherUpdateSettings = Field(default_factory=TeacherUpdateSettings)
    init: InitSettings = Field(default_factory=InitSettings)
    ensemble_beta: float = Field(0.05, gt=0)
    # interactions a graph model propagates over / an autoencoder encodes at block k: all train parts so
    # far ("history"), or block k's own ("block")
    graph: Literal["history", "block"] = "history"
    eval: EvalSettings = Field(default_factory=EvalSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    device: str = "auto"

    @field_validator("teachers")
    @classmethod
    def _check_teachers(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not v:
            raise ValueError("at least one teacher")
        for spec in v:
            _check_model_spec(spec)
        return v

    @field_validator("student")
    @classmethod
    def _check_student(cls, v: dict[str, Any]) -> dict[str, Any]:
        _check_model_spec(v)
        return v

    @field_validator("kd")
    @classmethod
    def _check_kd(cls, v: dict[str, Any]) -> dict[str, Any]:
        from distillrec.distill.irrrd import IRRRDConfig

        IRRRDConfig(**v)
        return v

    def to_plain(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _check_model_spec(spec: dict[str, Any]) -> None:
    from distillrec.config import validate_model_hparams

    if "name" not in spec:
        raise ValueError(f"a model entry needs a 'name': {spec}")
    validate_model_hparams(spec["name"], {k: v for k, v in spec.items() if k not in ("name", "seed")})


def resolve_stream_config(config_file: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                          base: dict[str, Any] | None = None) -> StreamConfig:
    """Defaults < ``base`` < the YAML file < ``overrides`` (``"student_update.train.epochs=5"``)."""
    # start from the defaults, so an override can reach into a default list (``teachers.0.embedding_dim=32``)
    raw: dict[str, Any] = merge(StreamConfig().to_plain(), copy.deepcopy(base) if base else {})
    if config_file:
        raw = merge(raw, load_yaml(config_file))
    for key, value in parse_overrides(list(overrides)):
        _set_path(raw, key, value)
    try:
        return StreamConfig(**raw)
    except ValidationError as e:
        parts = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            parts.append(f"{loc}: {'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}")
        raise DistillrecError(f"invalid stream config: {'; '.join(parts)}") from None
    except DistillrecError as e:
        raise DistillrecError(f"invalid stream config: {e}") from None


def _set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for p in parts[:-1]:
        if p.isdigit() and isinstance(node, list):
            node = node[int(p)]
            continue
        if not isinstance(node.get(p), dict | list):
            node[p] = {}
        node = node[p]
    last = parts[-1]
    if isinstance(node, list) and last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
