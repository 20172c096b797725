"""Run directories and the Python API behind ``distillrec train / evaluate / recommend``.

A run directory holds ``config.yaml`` (resolved), ``log.jsonl``, ``results.json``, ``checkpoints/best.pt``
and ``checkpoints/last.pt``, and ``learning_curve.png``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from distillrec.config import RunConfig, resolve_config
from distillrec.data.dataset import Dataset
from distillrec.models import Recommender, get_model_class
from distillrec.train.checkpoint import check_fingerprint, load_checkpoint
from distillrec.train.evaluation import evaluate_model, rounded
from distillrec.train.trainer import Trainer, TrainResult
from distillrec.utils import DistillrecError, atomic_write_json, atomic_write_text, resolve_device, seed_everything


def load_data(cfg: RunConfig) -> Dataset:
    from distillrec.data import load_dataset

    return load_dataset(cfg.dataset_name, data_dir=cfg.dataset.get("data_dir"), **cfg.dataset_options)


def build_model(cfg: RunConfig, dataset: Dataset) -> Recommender:
    return get_model_class(cfg.model_name).from_dataset(dataset, **cfg.model_hparams)


@dataclass
class Run:
    """A trained model with its data set and resolved config (what ``load_run`` returns)."""

    model: Recommender
    dataset: Dataset
    config: RunConfig
    path: Path | None = None
    result: TrainResult | None = None

    def evaluate(self, split: str = "test", protocol: str | None = None) -> dict[str, Any]:
        protocol = protocol or (self.dataset.protocol if self.config.train.protocol == "auto"
                                else self.config.train.protocol)
        return rounded(evaluate_model(self.model, self.dataset, split, protocol, self.config.train).metrics)

    def recommend(self, user: str | int, k: int = 10, split: str = "test") -> list[tuple[str, float]]:
        """Top-k items (external ids, scores) for an external user id; items seen in training excluded."""
        from distillrec.train.recommend import internal_users, top_items

        # straight from the top-k tensors: a DataFrame would cost as much as scoring the user
        _, items, scores = next(top_items(self.model, self.dataset, internal_users(self.dataset, [user]), k, split,
                                          progress=False))
        return [(str(self.dataset.item_ids[i]), float(v)) for i, v in zip(items[0].tolist(), scores[0].tolist())
                if v != float("-inf")]

    def recommend_many(self, users: Iterable[str | int] | None = None, k: int = 10, split: str = "test",
                       batch_size: int | None = None, progress: bool | None = None,
                       source: str = "") -> pd.DataFrame:
        """Top-k for many external user ids (every user when None) as the table ``user, rank, item, score``,
        scored in batches; ``source`` names where the ids came from in the error for an unknown one."""
        from distillrec.train.recommend import internal_users, recommendations

        ids = internal_users(self.dataset, users, source)
        return recommendations(self.model, self.dataset, ids, k, split, batch_size, progress)


def train(
    dataset: str | Dataset | None = None,
    model: str | None = None,
    *,
    out: str | Path | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    config: RunConfig | None = None,
    resume: bool = False,
    progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
) -> Run:
    """Train one model and write its run directory (when ``out`` is given). Returns the best model."""
    ds_obj = dataset if isinstance(dataset, Dataset) else None
    if config is None:
        config = resolve_config(dataset=ds_obj.name if ds_obj else dataset, model=model,
                                config_file=config_file, overrides=overrides)
    seed_everything(config.train.seed)
    data = ds_obj if ds_obj is not None else load_data(config)
    net = build_model(config, data)
    if config.init_from and not resume:  # a resumed run restores its own weights
        net.init_from(load_run(config.init_from, data).model.to(net.device))
    return _fit(net, data, config, out, resume, progress, echo)


def _fit(net: Recommender, data: Dataset, config: RunConfig, out: str | Path | None, resume: bool,
         progress: bool | None, echo: Callable[[str], None] | None, distiller: Any = None) -> Run:
    """Train ``net`` (with ``distiller`` when given), keep its best weights, write the run directory."""
    out_dir = Path(out) if out else None
    if out_dir is not None:
        _prepare_out(out_dir, config, resume, echo)
    trainer = Trainer(net, data, config.train, out_dir=out_dir, distiller=distiller, run_config=config.to_plain(),
                      progress=progress, echo=echo)
    result = trainer.fit(resume=resume)
    if out_dir is not None:
        _load_weights(net, out_dir / "checkpoints" / "best.pt", data)
    run = Run(net, data, config, out_dir, result)
    if out_dir is not None:
        write_results(run, trainer)
    return run


# Keys that only decide when a run stops: a resumed run may change them (train longer, or wait longer for a
# gain) and still follow the same trajectory, since no schedule in the trainer depends on them.
BUDGET_KEYS = ("epochs", "patience")


def config_changes(old_text: str, new_plain: dict[str, Any]) -> list[str] | None:
    """None when a run written with ``old_text`` (its config.yaml) cannot continue under ``new_plain``; else
    the budget keys that differ (``["train.epochs: 30 → 12"]``), empty when nothing does."""
    old = yaml.safe_load(old_text) or {}
    if not isinstance(old, dict):
        return None
    old_train, new_train = dict(old.get("train") or {}), dict(new_plain.get("train") or {})
    changed = [f"train.{k}: {old_train.get(k)} → {new_train.get(k)}" for k in BUDGET_KEYS
               if old_train.get(k) != new_train.get(k)]
    for k in BUDGET_KEYS:
        old_train.pop(k, None)
        new_train.pop(k, None)
    same = {**old, "train": old_train} == {**new_plain, "train": new_train}
    return changed if same else None


def check_resumable(cfg_path: Path, new_plain: dict[str, Any], message: str,
                    echo: Callable[[str], None] | None = None) -> None:
    """Refuse to continue a run under another config (``message``). An interrupted run (no results.json yet)
    may continue with a new epoch budget or patience; a finished one is only reused as it is."""
    if not cfg_path.exists():
        return
    changes = config_changes(cfg_path.read_text(), new_plain)
    if changes is None:
        raise DistillrecError(f"{cfg_path}: {message}")
    if changes and (cfg_path.parent / "results.json").exists():
        raise DistillrecError(f"{cfg_path}: this run has finished under another budget ({', '.join(changes)}); "
                              "choose another --out to train it again")
    if changes and echo is not None:
        echo(f"{cfg_path.parent}: continuing with a new budget ({', '.join(changes)})")


# Sections written in full from a typed schema: a key an older run lacks is a field added since (at its default).
# The other sections (model, distill, dataset) hold only the keys that were set, so a key on one side only differs.
_TYPED_SECTIONS = ("train", "search", "retrain", "method")  # RunConfig's train; NASConfig's stages and method


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between a finished run's config and the one asked for now (teacher
    paths compare as resolved paths)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = [k for k in old if k in new]
        if prefix.rstrip(".") not in _TYPED_SECTIONS:
            keys += [k for k in new if k not in old] + [k for k in old if k not in new]
        return [d for k in keys for d in config_diff(old.get(k, "(unset)"), new.get(k, "(unset)"), f"{prefix}{k}.")]
    key = prefix.rstrip(".")
    if key == "distill.teacher" and old is not None and new is not None:
        return [] if Path(old).resolve() == Path(new).resolve() else [f"{key}: {old} → {new}"]
    return [] if old == new else [f"{key}: {old} → {new}"]


def reuse_diffs(run_dir: Path, planned: RunConfig | dict[str, Any]) -> list[str]:
    """The settings in which the run in ``run_dir`` differs from ``planned`` (empty: it can stand for it)."""
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        return []
    old = yaml.safe_load(cfg_path.read_text()) or {}
    return config_diff(old, planned.to_plain() if isinstance(planned, RunConfig) else planned)


def check_reusable(run_dir: Path, planned: RunConfig | dict[str, Any]) -> None:
    """Refuse to reuse a finished run that was trained under another config than ``planned`` (a run config,
    or the plain data of another config, e.g. a NAS one): its results would be reported as if they came from
    the settings asked for now."""
    diffs = reuse_diffs(run_dir, planned)
    if diffs:
        raise DistillrecError(f"{run_dir} holds a finished run trained under another config ({'; '.join(diffs)}); "
                              "choose another --out, or delete that run to train it again")


def _prepare_out(out_dir: Path, config: RunConfig, resume: bool, echo: Callable[[str], None] | None = None) -> None:
    cfg_path = out_dir / "config.yaml"
    plain = config.to_plain()
    if cfg_path.exists() and (out_dir / "checkpoints" / "last.pt").exists() and not resume:
        raise DistillrecError(f"{out_dir} already holds a run; pass --resume to continue it or choose another --out")
    if resume:
        check_resumable(cfg_path, plain, "the run was started with another config; --resume needs the same one "
                        f"(only train.{' and train.'.join(BUDGET_KEYS)} may change)", echo)
    atomic_write_text(cfg_path, yaml.safe_dump(plain, sort_keys=False))


def write_results(run: Run, trainer: Trainer) -> dict[str, Any]:
    from distillrec.report.latency import scoring_latency
    from distillrec.report.plots import plot_learning_curve

    results: dict[str, Any] = {
        "dataset": run.dataset.name,
        "model": run.model.name,
        "model_hparams": run.model.hparams(),
        "parameters": run.model.num_parameters(),
        "protocol": trainer.protocol,
        "train": run.result.to_dict() if run.result else None,
    }
    for split in ("valid", "test"):
        if getattr(run.dataset, split) is not None:
            results[split] = trainer.evaluate(split)
    results["latency_ms_per_user"] = round(scoring_latency(run.model, run.dataset), 4)
    atomic_write_json(run.path / "results.json", results)
    plot_learning_curve(run.path / "log.jsonl", run.path / "learning_curve.png", trainer.config.valid_metric)
    return results


def _load_weights(model: Recommender, path: Path, dataset: Dataset) -> dict[str, Any]:
    ckpt = load_checkpoint(path, map_location=model.device)
    check_fingerprint(ckpt, dataset.fingerprint(), path, dataset.name)
    model.load_state_dict(ckpt["model"])
    return ckpt


def load_run(run_dir: str | Path, dataset: Dataset | str | None = None, device: str = "auto") -> Run:
    """Load a run directory's best model, with its data set (or another one, checked by fingerprint)."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoints" / "best.pt"
    if not run_dir.is_dir():
        raise DistillrecError(f"run directory not found: {run_dir}")
    ckpt = load_checkpoint(ckpt_path)
    config = RunConfig(**ckpt["config"]) if ckpt.get("config") else resolve_config(
        dataset=ckpt["dataset_name"], model=ckpt["model_name"])
    if isinstance(dataset, Dataset):
        data = dataset
    else:
        if isinstance(dataset, str):
            config = config.model_copy(update={"dataset": {**config.dataset, "name": dataset}})
        data = load_data(config)
    check_fingerprint(ckpt, data.fingerprint(), ckpt_path, data.name)
    model = get_model_class(ckpt["model_name"]).from_dataset(data, **ckpt["model_hparams"])
    model.load_state_dict(ckpt["model"])
    model.to(resolve_device(device))
    return Run(model, data, config, run_dir)


def distill(
    teacher: Run | str | Path,
    method: str,
    *,
    out: str | Path | None = None,
    student: str | None = None,
    student_dim: int | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    resume: bool = False,
    progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
) -> Run:
    """Distil ``teacher`` (a Run or run directory) into a student with ``method``; the student starts from the
    teacher's config (data set, model, training settings) with its size set by ``student_dim`` (default:
    a tenth of the teacher's, the φ = 0.1 of DE-RRD/DCD) and any ``overrides``."""
    from distillrec.distill import get_method

    t_run = teacher if isinstance(teacher, Run) else load_run(teacher)
    config = distill_config(t_run, method, student=student, student_dim=student_dim, config_file=config_file,
                            overrides=overrides)
    seed_everything(config.train.seed)
    data = t_run.dataset
    net = build_model(config, data)
    method_cls = get_method(method)
    hparams = {k: v for k, v in config.distill.items() if k not in ("method", "teacher")}
    cache = t_run.path / "knowledge" if t_run.path else None
    t_run.model.to(resolve_device(config.train.device)).eval()
    distiller = method_cls.from_teacher(net.to(t_run.model.device), t_run.model, data, hparams, cache_dir=cache,
                                        seed=config.train.seed)
    return _fit(net, data, config, out, resume, progress, echo, distiller)


def distill_config(t_run: Run, method: str, *, student: str | None = None, student_dim: int | None = None,
                   config_file: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """The resolved config of a student distilled from ``t_run`` (what :func:`distill` trains with)."""
    base = t_run.config.derived_base()
    base["distill"] = {"method": method, "teacher": str(t_run.path) if t_run.path else None}
    if student and student != t_run.config.model_name:
        base["model"] = {"name": student}
    size_key = model_size_key(base["model"]["name"])
    if student_dim is None and size_key in base["model"] and student is None:
        student_dim = max(1, int(base["model"][size_key]) // 10)
    if student_dim is not None:
        base["model"][size_key] = student_dim
    return resolve_config(config_file=config_file, overrides=overrides, base=base)


def model_size_key(model_name: str) -> str:
    """The config key that sets a model's width (what φ scales)."""
    fields = get_model_class(model_name).Config.model_fields
    for key in ("embedding_dim", "hidden_size"):
        if key in fields:
            return key
    raise DistillrecError(f"model {model_name!r} has no size key (embedding_dim / hidden_size)")
