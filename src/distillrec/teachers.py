"""Teacher sets for HetComp: train heterogeneous teachers, each with its trajectory, into one directory.

A teacher-set directory holds one run directory per teacher (``config.yaml``, ``log.jsonl``,
``results.json``, ``checkpoints/``, plus ``trajectory.pt``) and ``teacher_set.json``, the manifest: the data
set section, its fingerprint, the trajectory settings and per teacher its model, run directory, trajectory
file, checkpoint epochs, size, scoring latency and accuracy. The manifest is rewritten after every finished
teacher, so an interrupted set keeps the teachers it has; running the same call again reuses them, and a
teacher whose run was cut short resumes from its ``last.pt`` (which carries the trajectory recorder's state)
when its run configuration is unchanged, otherwise it is trained again from scratch.

- ``train_with_trajectory(dataset, model, k_checkpoints, …)``: one model trained by the usual loop with a
  ``TrajectoryRecorder`` callback (``TrainConfig`` has no trajectory switch);
- ``train_teacher_set(…)``: the six teachers of the paper — MF (bpr), CML (cml), NeuMF (neumf), LightGCN
  (lightgcn), Mult-VAE (vae), item autoencoder (iae) — or any mapping of names to model specs;
- ``distill_from_teacher_set(teacher_set, …)``: a HetComp student from a teacher set (what
  ``distill(method="hetcomp")`` cannot do: the method needs trajectories, not one teacher), or, with
  ``method="rrd"`` / ``"dcd"`` / …, a single-teacher method that reads its lists from the ensemble's ranking
  (``ensemble_knowledge``), as the HetComp authors ran their baselines (no top-rank sampling by default).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

from distillrec.config import RunConfig, load_yaml, merge, resolve_config
from distillrec.data.dataset import Dataset
from distillrec.distill.ensemble import MANIFEST, TeacherEnsemble, read_manifest
from distillrec.distill.knowledge import KnowledgeSpec, TeacherKnowledge, compute_knowledge
from distillrec.distill.trajectory import FILENAME, Trajectory, TrajectoryRecorder, train_hash
from distillrec.models.base import Recommender
from distillrec.train.checkpoint import check_fingerprint, load_checkpoint
from distillrec.train.runs import Run, build_model, load_data, load_run, model_size_key, write_results
from distillrec.train.trainer import Trainer
from distillrec.utils import DistillrecError, atomic_write_json, atomic_write_text, seed_everything

FORMAT = "distillrec-teacher-set/1"
# HetComp's teachers (names as in the authors' code). Their sizes are not in the public code: model defaults.
DEFAULT_TEACHERS: dict[str, dict[str, Any]] = {
    "MF": {"model": {"name": "bpr"}}, "ML": {"model": {"name": "cml"}}, "DL": {"model": {"name": "neumf"}},
    "GNN": {"model": {"name": "lightgcn"}}, "AE": {"model": {"name": "vae"}}, "I-AE": {"model": {"name": "iae"}},
}
# The authors' student schedule (spec §A.7): Adam 1e-3, L2 1e-5, 1024 interactions per batch, validation
# every 10 epochs on Recall@50, stop after 5 evaluations without a gain.
HETCOMP_TRAIN: dict[str, Any] = {"epochs": 1000, "batch_size": 1024, "learning_rate": 1e-3, "weight_decay": 1e-5,
                                 "eval_every": 10, "patience": 5, "valid_metric": "recall@50", "topk": [10, 50]}
# Single-teacher methods distilled from the ensemble: the HetComp authors removed the sampling of top-ranked
# items from their ranking-matching baselines (spec §A.10), i.e. the ensemble's top-K in order.
ENSEMBLE_METHOD_DEFAULTS: dict[str, dict[str, Any]] = {"rrd": {"sampling": "top"}, "dcd": {"sampling": "top"}}


class TrajectoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k_checkpoints: int = Field(4, ge=1)  # V (the last = the best model)
    topk: int = Field(100, ge=1)  # K_e: listed unobserved items per user and checkpoint
    queue_len: int = Field(5, ge=1)  # recent recorded epochs in the rank-std queue
    queue_topk: int | None = Field(None, ge=1)  # list length kept per queued epoch (default 2·K_e)
    every: int = Field(1, ge=1)  # record every k epochs (and at every validation)
    # checkpoint 0 at 1/V of the way to the best epoch ("interval") or at the first recorded epoch ("first")
    start: Literal["interval", "first"] = "interval"


class TeacherSetConfig(BaseModel):
    """A teacher-set YAML: ``dataset``, shared ``train`` settings, ``teachers`` (name → {model, train}) and
    ``trajectory``. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    dataset: dict[str, Any] = Field(default_factory=lambda: {"name": "synthetic"})
    train: dict[str, Any] = Field(default_factory=dict)
    teachers: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_TEACHERS))
    trajectory: TrajectoryConfig = Field(default_factory=TrajectoryConfig)


@dataclass
class TeacherSet:
    path: Path
    dataset: Dataset
    manifest: dict[str, Any]

    def ensemble(self, tau1: float = 10.0, tau2: float = 100.0, teachers: Sequence[str] | None = None
                 ) -> TeacherEnsemble:
        return TeacherEnsemble.from_teacher_set(self.path, self.dataset, tau1, tau2, teachers)


# -- one run with a trajectory ----------------------------------------------------------------------------------
_RUN_FILES = ("log.jsonl", "results.json", "checkpoints/last.pt", "checkpoints/best.pt", FILENAME)


def _fit(model: Recommender, dataset: Dataset, config: RunConfig, out: str | Path | None, *,
         callbacks: Sequence[Any] = (), distiller: Any = None, overwrite: bool = False, resume: bool = False,
         progress: bool | None = None, echo: Callable[[str], None] | None = None) -> tuple[Run, dict[str, Any]]:
    """``train.runs``' fit with trainer callbacks: train, keep the best weights, write the run directory.
    Returns the run and its ``results.json`` content (empty without ``out``)."""
    out_dir = Path(out) if out else None
    if out_dir is not None:
        if (out_dir / "checkpoints" / "last.pt").exists() and not (overwrite or resume):
            raise DistillrecError(f"{out_dir} already holds a run; choose another output directory")
        if overwrite and not resume:  # a run cut short: its trajectory is lost, so it starts over
            for name in _RUN_FILES:
                (out_dir / name).unlink(missing_ok=True)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(config.to_plain(), sort_keys=False))
    trainer = Trainer(model, dataset, config.train, out_dir=out_dir, distiller=distiller,
                      run_config=config.to_plain(), progress=progress, echo=echo, callbacks=callbacks)
    result = trainer.fit(resume=resume)
    if out_dir is not None:
        ckpt = load_checkpoint(out_dir / "checkpoints" / "best.pt", map_location=model.device)
        check_fingerprint(ckpt, dataset.fingerprint(), out_dir / "checkpoints" / "best.pt", dataset.name)
        model.load_state_dict(ckpt["model"])
    run = Run(model, dataset, config, out_dir, result)
    return run, write_results(run, trainer) if out_dir is not None else {}


def train_with_trajectory(
    dataset: Dataset, model: Recommender, k_checkpoints: int = 4, *, config: RunConfig | None = None,
    out: str | Path | None = None, topk: int = 100, queue_len: int = 5, queue_topk: int | None = None,
    every: int = 1, overwrite: bool = False, resume: bool = False, progress: bool | None = None,
    echo: Callable[[str], None] | None = None, start: str = "interval",
) -> tuple[Run, Trajectory]:
    """Train ``model`` with the usual loop while recording ``k_checkpoints`` trajectory checkpoints (the last
    = the best model); with ``out`` the run directory gets ``trajectory.pt`` too. ``resume``: continue the
    run in ``out`` from its ``last.pt``, trajectory included."""
    if config is None:
        config = resolve_config(base={"dataset": {"name": dataset.name}, "model": {"name": model.name,
                                                                                  **model.hparams()}})
    recorder = TrajectoryRecorder(dataset, k_checkpoints, topk, queue_len, queue_topk, every, start=start)
    run, _ = _fit(model, dataset, config, out, callbacks=[recorder], overwrite=overwrite, resume=resume,
                  progress=progress, echo=echo)
    assert recorder.trajectory is not None  # on_fit_end always builds it or raises
    return run, recorder.trajectory


# -- a teacher set ----------------------------------------------------------------------------------------------
def _teacher_spec(name: str, spec: Any) -> dict[str, Any]:
    if isinstance(spec, str):
        return {"model": {"name": spec}, "train": {}}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("model"), Mapping | str):
        raise DistillrecError(f"teacher {name!r}: expected a model name or {{model: {{name: …}}, train: {{…}}}}, "
                              f"got {spec!r}")
    unknown = set(spec) - {"model", "train"}
    if unknown:
        raise DistillrecError(f"teacher {name!r}: unknown key(s) {', '.join(sorted(unknown))} (use model, train)")
    model = {"name": spec["model"]} if isinstance(spec["model"], str) else dict(spec["model"])
    return {"model": model, "train": dict(spec.get("train") or {})}


def load_teacher_set_config(path: str | Path | None = None, **sections: Any) -> TeacherSetConfig:
    """A validated teacher-set config: the YAML file (if any), then ``sections`` on top."""
    raw = load_yaml(path) if path else {}
    raw = merge(raw, {k: v for k, v in sections.items() if v is not None})
    try:
        return TeacherSetConfig(**raw)
    except ValidationError as e:
        where = f"{path}: " if path else ""
        raise DistillrecError(f"{where}invalid teacher-set config: {e.errors()[0]['loc']}: "
                              f"{e.errors()[0]['msg']}") from None


def teacher_run_configs(cfg: TeacherSetConfig, dataset: Mapping[str, Any] | None = None,
                        overrides: Sequence[str] = ()) -> dict[str, RunConfig]:
    """Each teacher's resolved run config (shared ``train`` < the teacher's ``train`` < ``overrides``);
    every unknown key is an error naming the teacher."""
    out = {}
    for name, raw_spec in cfg.teachers.items():
        spec = _teacher_spec(name, raw_spec)
        base = {"dataset": dict(dataset or cfg.dataset), "model": spec["model"],
                "train": merge(cfg.train, spec["train"])}
        try:
            out[name] = resolve_config(base=base, overrides=list(overrides))
        except DistillrecError as e:
            raise DistillrecError(f"teacher {name!r}: {e}") from None
    return out


def train_teacher_set(
    dataset: str | Mapping[str, Any] | Dataset | None = None, out: str | Path = "runs/teachers", *,
    config_file: str | Path | None = None, teachers: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None, trajectory: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (), progress: bool | None = None, echo: Callable[[str], None] | None = None,
    dataset_section: Mapping[str, Any] | None = None,
) -> TeacherSet:
    """Train every teacher (default: HetComp's six) with its trajectory into ``out``; return the set.

    ``dataset``: a name, a dataset section (``{name: synthetic, n_users: 300}``) or a loaded Dataset, whose
    section for the manifest is ``dataset_section`` (default ``{name: …}``: give it when the data set was
    loaded with options, so ``load_teacher_set`` can load it again). ``train`` settings apply to every teacher
    (a teacher's own ``train`` section wins), ``overrides`` (``--set`` strings) to every teacher on top of that."""
    echo = echo or (lambda msg: None)
    cfg = load_teacher_set_config(config_file, teachers=dict(teachers) if teachers is not None else None,
                                  train=dict(train) if train is not None else None,
                                  trajectory=dict(trajectory) if trajectory is not None else None)
    ds_section = dict(cfg.dataset)
    if isinstance(dataset, Dataset):
        ds_section = dict(dataset_section) if dataset_section is not None else {"name": dataset.name}
    elif isinstance(dataset, Mapping):
        ds_section = dict(dataset)
    elif isinstance(dataset, str):
        ds_section = {"name": dataset}
    data = dataset if isinstance(dataset, Dataset) else load_data(RunConfig(dataset=ds_section))
    out = Path(out)
    old = read_manifest(out) if (out / MANIFEST).exists() else None
    if old is not None and old.get("dataset_fingerprint") != data.fingerprint():
        raise DistillrecError(f"{out / MANIFEST}: the set was trained on another data set; choose another out")
    done = {e["name"]: e for e in (old or {}).get("teachers", [])}
    tj = cfg.trajectory
    manifest: dict[str, Any] = {"format": FORMAT, "dataset": ds_section, "dataset_name": data.name,
                                "dataset_fingerprint": data.fingerprint(), "train_hash": train_hash(data.train),
                                "trajectory": tj.model_dump(), "teachers": []}
    for name, run_cfg in teacher_run_configs(cfg, ds_section, overrides).items():
        key = _config_key(run_cfg, tj)
        prev = done.get(name)
        if prev is not None and prev.get("key") == key and (out / prev["trajectory"]).exists():
            echo(f"teacher {name}: reusing {out / prev['run_dir']}")
            manifest["teachers"].append(prev)
            continue
        resume = _resumable(out / name, run_cfg)
        echo(f"teacher {name} ({run_cfg.model_name}): {'resuming' if resume else 'training'} → {out / name}")
        seed_everything(run_cfg.train.seed)
        model = build_model(run_cfg, data)
        run, traj = train_with_trajectory(data, model, tj.k_checkpoints, config=run_cfg, out=out / name,
                                          topk=tj.topk, queue_len=tj.queue_len, queue_topk=tj.queue_topk,
                                          every=tj.every, start=tj.start, overwrite=True, resume=resume,
                                          progress=progress, echo=None)
        results = json.loads((out / name / "results.json").read_text())
        manifest["teachers"].append({
            "name": name, "model": run_cfg.model_name, "model_hparams": run_cfg.model_hparams, "key": key,
            "run_dir": name, "trajectory": f"{name}/{FILENAME}", "checkpoint_epochs": traj.epochs,
            "best_epoch": run.result.best_epoch if run.result else None, "parameters": results["parameters"],
            "latency_ms_per_user": results["latency_ms_per_user"], "valid": results.get("valid"),
            "test": results.get("test")})
        atomic_write_json(out / MANIFEST, manifest)  # after every teacher: an interrupted set keeps it
    atomic_write_json(out / MANIFEST, manifest)
    return TeacherSet(out, data, manifest)


def _resumable(run_dir: Path, cfg: RunConfig) -> bool:
    """Whether ``run_dir`` holds a cut-short run of this very configuration whose last.pt carries a trajectory
    recorder's state (the recorder itself checks its settings and the training data on load)."""
    last, written = run_dir / "checkpoints" / "last.pt", run_dir / "config.yaml"
    if not (last.exists() and written.exists()):
        return False
    try:
        same = yaml.safe_load(written.read_text()) == cfg.to_plain()
        return same and any(isinstance(c, dict) for c in load_checkpoint(last).get("callbacks") or [])
    except (DistillrecError, yaml.YAMLError):
        return False  # unreadable: train it again


def _config_key(cfg: RunConfig, tj: TrajectoryConfig) -> str:
    blob = json.dumps({"run": cfg.to_plain(), "trajectory": tj.model_dump()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_teacher_set(path: str | Path, dataset: Dataset | None = None) -> TeacherSet:
    """A trained teacher set, with its data set (loaded from the manifest's section unless given)."""
    manifest = read_manifest(path)
    data = dataset if dataset is not None else load_data(RunConfig(dataset=manifest.get("dataset") or {}))
    if manifest.get("dataset_fingerprint") not in (None, data.fingerprint()):
        raise DistillrecError(f"{Path(path) / MANIFEST}: trained on other user/item ids than {data.name!r}")
    return TeacherSet(Path(path), data, manifest)


# -- the ensemble as the teacher of a single-teacher method ----------------------------------------------------
class _EnsembleTeacher(torch.nn.Module):
    """The ensemble's scores e_ui as the part of the Recommender contract ``compute_knowledge`` uses on its
    one-pass path (``full_scores``; no representations). Items outside every teacher's list score 0, as in the
    authors' dense importance matrices: a list longer than the merged candidates ends in ties at 0."""

    def __init__(self, ensemble: TeacherEnsemble) -> None:
        super().__init__()
        self.ensemble = ensemble
        self._score = ensemble.scorer()

    @property
    def device(self) -> torch.device:
        return self.ensemble.device

    def prepare_eval(self, dataset: Dataset, split: str) -> None:
        pass

    def full_scores(self, users: Tensor) -> Tensor:
        return self._score(users)

    def user_repr(self, users: Tensor) -> Tensor:
        raise NotImplementedError("an ensemble of rankings has no representations")

    item_repr = user_repr


def ensemble_knowledge(ensemble: TeacherEnsemble, spec: KnowledgeSpec) -> TeacherKnowledge:
    """The teacher knowledge ``spec`` asks for (user- and item-side top-N lists), read from the ensemble's
    ranking; computed in chunks, not cached (one pass over the merged lists)."""
    if spec.reprs:
        raise DistillrecError("this method distils representations, which an ensemble of rankings does not have; "
                              "use a ranking method (rd, cd, rrd, ir-rrd, dcd) with a teacher set")
    return compute_knowledge(_EnsembleTeacher(ensemble), ensemble.dataset, spec, item_side="full_scores")


# -- a HetComp student --------------------------------------------------------------------------------------------
def student_base_config(teacher_set: str | Path, manifest: Mapping[str, Any], method: str = "hetcomp",
                        student: str = "bpr", student_dim: int | None = 6) -> dict[str, Any]:
    """The defaults of a student distilled from a teacher set: the set's data set, the authors' schedule
    (``HETCOMP_TRAIN``) and, for single-teacher methods, ``ENSEMBLE_METHOD_DEFAULTS``."""
    model: dict[str, Any] = {"name": student}
    if student_dim is not None:
        model[model_size_key(student)] = student_dim
    distill = {"method": method, "teacher": str(teacher_set), **ENSEMBLE_METHOD_DEFAULTS.get(method, {})}
    return {"dataset": dict(manifest.get("dataset") or {"name": manifest.get("dataset_name")}), "model": model,
            "train": dict(HETCOMP_TRAIN), "distill": distill}


def best_member(ts: TeacherSet, metric: str) -> dict[str, Any]:
    """The member of the set with the highest validation ``metric`` (the "best single teacher" of HetComp's
    comparison: model selection on the validation split, never on test)."""
    scored = [(m.get("valid") or {}).get(metric) for m in ts.manifest["teachers"]]
    if any(v is None for v in scored):
        missing = [m["name"] for m, v in zip(ts.manifest["teachers"], scored, strict=True) if v is None]
        raise DistillrecError(f"{ts.path / 'teacher_set.json'}: no validation {metric} for teacher(s) "
                              f"{', '.join(missing)}; cannot pick the best single teacher")
    return ts.manifest["teachers"][int(np.argmax(scored))]


def distill_from_teacher_set(
    teacher_set: str | Path, *, out: str | Path | None = None, student: str = "bpr", student_dim: int | None = 6,
    config_file: str | Path | None = None, overrides: Sequence[str] = (), dataset: Dataset | None = None,
    resume: bool = False, progress: bool | None = None, echo: Callable[[str], None] | None = None,
    method: str = "hetcomp", config: RunConfig | None = None, member: str | None = None,
) -> Run:
    """Distil a teacher set into a ``student`` (default: MF of dim 6, the authors' student) with HetComp,
    under the authors' schedule (``HETCOMP_TRAIN``) unless the config file or ``overrides`` say otherwise.

    Another ``method`` (rrd, dcd, …) distils the ensemble's ranking (``ensemble_knowledge``) the way that
    method distils one teacher's. ``config``: an already resolved run config (then ``student``,
    ``student_dim``, ``config_file`` and ``overrides`` are not used). ``member``: distil one teacher of the set
    instead of the ensemble, by name or ``"best"`` (highest validation score on the student's
    ``train.valid_metric``) — the single-teacher KD baseline."""
    from distillrec.distill import get_method
    from distillrec.distill.hetcomp import HetComp

    ts = load_teacher_set(teacher_set, dataset)
    if config is None:
        base = student_base_config(teacher_set, ts.manifest, method, student, student_dim)
        config = resolve_config(config_file=config_file, overrides=list(overrides), base=base)
    if (config.distill or {}).get("method") != method:
        raise DistillrecError(f"distill_from_teacher_set was asked for {method!r} students; the config asks for "
                              f"{(config.distill or {}).get('method')!r}")
    seed_everything(config.train.seed)
    net = build_model(config, ts.dataset)
    hparams = {k: v for k, v in config.distill.items() if k not in ("method", "teacher")}
    if member is not None:
        if method == "hetcomp":
            raise DistillrecError("HetComp distils the whole teacher set; member= is for single-teacher methods")
        names = {m["name"]: m for m in ts.manifest["teachers"]}
        if member != "best" and member not in names:
            raise DistillrecError(f"teacher set {ts.path}: no teacher {member!r} (has {', '.join(names)})")
        chosen = best_member(ts, config.train.valid_metric) if member == "best" else names[member]
        if echo:
            echo(f"  single teacher: {chosen['name']}")
        t_run = load_run(Path(ts.path) / chosen["run_dir"], dataset=ts.dataset)
        t_run.model.to(net.device).eval()
        distiller = get_method(method).from_teacher(net, t_run.model, ts.dataset, hparams,
                                                    cache_dir=t_run.path / "knowledge", seed=config.train.seed)
    elif method == "hetcomp":
        distiller = HetComp.from_teacher_set(net, teacher_set, ts.dataset, hparams, seed=config.train.seed)
    else:
        method_cls = get_method(method)
        hp = method_cls.make_config(hparams)
        knowledge = ensemble_knowledge(ts.ensemble().to(net.device), method_cls.knowledge_spec(hp))
        distiller = method_cls(net, knowledge, ts.dataset, hp, seed=config.train.seed)
    return _fit(net, ts.dataset, config, out, distiller=distiller, resume=resume, progress=progress, echo=echo)[0]
