"""Typed run configuration: YAML files and ``--set key=value`` overrides resolved into pydantic objects.

A run config has three sections, each validated with unknown keys rejected by name::

    dataset: {name: citeulike-loo}          # + options passed to load_dataset (split, seed, ...)
    model:   {name: bpr, embedding_dim: 200} # + the model's own Config fields
    train:   {epochs: 1000, learning_rate: 1.0e-3, weight_decay: 1.0e-3, valid_metric: hit@5}

Precedence (as in RecBole): ``--set`` > ``--config`` file > command-line shortcuts (--dataset/--model) >
the built-in defaults of each typed config.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distillrec.utils import DistillrecError


class TrainConfig(BaseModel):
    """The training loop's settings (shared by teachers, students, distillation and super-nets)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(100, ge=0, description="maximum number of epochs")
    batch_size: int = Field(1024, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0, description="L2 through the optimizer (DE-RRD: 1e-3)")
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    n_negatives: int = Field(1, ge=1, description="negatives per positive for pairwise models")
    eval_every: int = Field(1, ge=1, description="validate every k epochs")
    valid_metric: str = Field("ndcg@20", description="early-stopping metric on the valid split")
    patience: int = Field(10, ge=1, description="evaluations without improvement before stopping")
    topk: list[int] = Field(default_factory=lambda: [10, 20])
    protocol: Literal["auto", "full", "sampled"] = Field("auto", description="auto: the data set's default")
    eval_batch_size: int = Field(1024, ge=1)
    seed: int = 2026
    device: str = "auto"
    grad_clip: float | None = Field(None, gt=0)


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: dict[str, Any] = Field(default_factory=lambda: {"name": "synthetic"})
    model: dict[str, Any] = Field(default_factory=lambda: {"name": "bpr"})
    train: TrainConfig = Field(default_factory=TrainConfig)
    # Distilled students only: {method: NAME, teacher: RUN_DIR, + the method's own Config fields}.
    distill: dict[str, Any] | None = None
    # A trained run whose weights start this model (``Recommender.init_from``: NCF's pre-training, e.g. a
    # NeuMF whose GMF half starts from a BPR-MF run of the same size). Not inherited by distilled students.
    init_from: str | None = None

    @property
    def model_name(self) -> str:
        return self.model["name"]

    @property
    def model_hparams(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "name"}

    @property
    def dataset_name(self) -> str:
        return self.dataset["name"]

    @property
    def dataset_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.dataset.items() if k not in ("name", "data_dir")}

    def derived_base(self) -> dict[str, Any]:
        """The plain config a model derived from this run starts from (a student of this teacher): the same
        sections, without this run's own ``init_from``."""
        plain = self.to_plain()
        plain.pop("init_from", None)
        return plain

    def to_plain(self) -> dict[str, Any]:
        plain = self.model_dump(mode="json")
        if plain["init_from"] is None:  # unset: absent, so configs (and hashes) of earlier runs stay the same
            del plain["init_from"]
        return plain


def parse_value(text: str) -> Any:
    """``--set`` values are YAML scalars/lists; '1e-3' (which YAML 1.1 leaves a string) becomes a float."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> list[tuple[str, Any]]:
    out = []
    for pair in pairs:
        if "=" not in pair:
            raise DistillrecError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out.append((key.strip(), parse_value(value)))
    return out


SECTIONS = ("dataset", "model", "train", "distill")


def _train_keys() -> set[str]:
    return set(TrainConfig.model_fields)


def _method_keys(raw: dict[str, Any]) -> set[str]:
    method = (raw.get("distill") or {}).get("method")
    if not method:
        return set()
    from distillrec.distill import get_method

    return set(get_method(method).Config.model_fields)


TOP_LEVEL_KEYS = ("init_from",)  # plain values beside the sections


def apply_overrides(raw: dict[str, Any], overrides: list[tuple[str, Any]]) -> dict[str, Any]:
    """Apply ``section.key=value`` (or a bare ``key=value`` for train keys, the model's own keys and the top-level
    ``init_from``)."""
    raw = copy.deepcopy(raw)
    for key, value in overrides:
        if key in TOP_LEVEL_KEYS:
            raw[key] = value
            continue
        if "." in key:
            section, sub = key.split(".", 1)
            if section not in SECTIONS:
                raise DistillrecError(f"unknown config section {section!r} in {key!r}; "
                                      f"use one of {', '.join(s + '.' for s in SECTIONS)}")
        elif key in _train_keys():
            section, sub = "train", key
        elif key in _method_keys(raw):
            section, sub = "distill", key
        else:
            section, sub = "model", key  # validated against the model's Config below
        if not isinstance(raw.get(section), dict):
            raw[section] = {}
        raw[section][sub] = value
    return raw


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise DistillrecError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DistillrecError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise DistillrecError(f"{path}: a config file must be a mapping of sections, got {type(data).__name__}")
    return data


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_config(
    *,
    dataset: str | None = None,
    model: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Build a validated RunConfig; every unknown key is an error that names it."""
    raw: dict[str, Any] = copy.deepcopy(base) if base else {}
    if dataset:
        raw.setdefault("dataset", {})["name"] = dataset
    if model:
        raw.setdefault("model", {})["name"] = model
    if config_file:
        raw = merge(raw, load_yaml(config_file))
    raw = apply_overrides(raw, parse_overrides(list(overrides)))
    for section in ("dataset", "model"):
        if isinstance(raw.get(section), str):
            raw[section] = {"name": raw[section]}
    try:
        cfg = RunConfig(**raw)
    except ValidationError as e:
        raise DistillrecError(f"invalid config: {_explain(e)}") from None
    validate_model_hparams(cfg.model_name, cfg.model_hparams)
    if cfg.distill is not None:
        validate_method_hparams(cfg.distill)
    return cfg


def validate_method_hparams(section: dict[str, Any]) -> BaseModel:
    from distillrec.distill import get_method

    if "method" not in section:
        raise DistillrecError("config section 'distill' needs a 'method' key")
    cls = get_method(section["method"])
    hparams = {k: v for k, v in section.items() if k not in ("method", "teacher")}
    try:
        return cls.Config(**hparams)
    except ValidationError as e:
        known = ", ".join(sorted(cls.Config.model_fields))
        raise DistillrecError(f"invalid config for method {section['method']!r}: {_explain(e)} "
                              f"(its keys: {known})") from None


def validate_model_hparams(name: str, hparams: dict[str, Any]) -> BaseModel:
    from distillrec.models import get_model_class

    cls = get_model_class(name)
    try:
        return cls.Config(**hparams)
    except ValidationError as e:
        known = ", ".join(sorted(cls.Config.model_fields))
        raise DistillrecError(f"invalid config for model {name!r}: {_explain(e)} (its keys: {known})") from None


def _explain(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
