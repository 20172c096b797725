"""The heterogeneous case of ``distillrec run`` (HetComp's setting): a teacher set instead of one teacher.

``--teachers mf,cml,neumf,lightgcn,vae,iae`` trains those models with their trajectories into
``out/teachers`` (a teacher-set directory; finished teachers are reused, a changed one is retrained), or
``--teachers DIR`` reuses a set from ``distillrec teachers``. Every student is a BPR-MF (dimension 6 by
default, the authors' student) under HetComp's schedule (``teachers.HETCOMP_TRAIN``) unless ``--config`` or
``--set`` say otherwise; ``student`` is trained alone, ``hetcomp`` with its curriculum, and every other method
(rrd, dcd, …) distils the ensemble's ranking (no top-rank sampling by default, as the authors ran them);
``METHOD@best`` (``rrd@best``) distils only the set's best teacher on the validation metric — the
single-teacher KD row of HetComp's tables.
Everything is evaluated by full ranking at the students' ``train.topk``; the table gets one row per teacher
(``teacher:NAME``) and one for the ensemble, whose size and latency are the sums over its members.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distillrec.config import RunConfig, load_yaml, merge, parse_overrides, resolve_config
from distillrec.data.dataset import Dataset
from distillrec.teachers import (
    HETCOMP_TRAIN,
    TeacherSet,
    distill_from_teacher_set,
    load_teacher_set,
    load_teacher_set_config,
    student_base_config,
    train_teacher_set,
)
from distillrec.train.runs import Run, load_run, train
from distillrec.utils import DistillrecError

if TYPE_CHECKING:
    from distillrec.pipeline import Job

# HetComp's list lengths, capped at the teacher set's K_e when its trajectories are shorter.
_HETCOMP_LISTS = {"n_topk": 100, "n_ranked": 50, "n_emphasis": 10, "discrepancy_k": 50}


def run_hetero(job: Job) -> dict[str, Any]:
    from distillrec.pipeline import HETERO_STUDENT_DIM, _primary_metrics
    from distillrec.report.summary import Entry, ordered, summarise

    cfg = job.cfg
    manifest = job.manifest
    file_raw = load_yaml(cfg.config_file) if cfg.config_file else {}
    file_distill = file_raw.pop("distill", None)
    if manifest and (not cfg.dataset or cfg.dataset == (manifest.get("dataset") or {}).get("name")):
        section = dict(manifest.get("dataset") or {"name": manifest.get("dataset_name")})
    else:
        section = {"name": job.dataset_name}
    probe = resolve_config(base=merge({"dataset": section, "model": {"name": "bpr"}, "train": dict(HETCOMP_TRAIN)},
                                      file_raw), overrides=job.sets)
    job._dataset = dataset = job.load(probe)
    job.eval_config = probe.train
    ts = teacher_set(job, dataset, probe.dataset)

    entries = []
    for member in ts.manifest["teachers"]:
        run = load_run(ts.path / member["run_dir"], dataset=dataset)
        entries.append(job._entry(f"teacher:{member['name']}", 0, run, "full"))
    ensemble = ts.ensemble()
    ev = ensemble.evaluate("test", ks=probe.train.topk, batch_size=probe.train.eval_batch_size)
    cost = ensemble.cost()
    entries.append(Entry("ensemble", 0, None, {"parameters": cost["parameters"] or 0, "train": None,
                                               "latency_ms_per_user": cost["latency_ms_per_user"] or 0.0}, ev))
    dim = cfg.student_dim or HETERO_STUDENT_DIM
    for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
        for method in cfg.methods:
            config = student_config(job, ts, method, dim, seed, file_raw, file_distill)
            entries.append(job._entry(method, seed, _student(job, ts, method, config, dim, seed), "full"))
    entries += job.finished_elsewhere(
        entries, lambda m, s: student_config(job, ts, m, dim, s, file_raw, file_distill), "full")
    summary = summarise(ordered(entries), _primary_metrics("full", probe.train.topk), "full", dataset.name)
    summary["teacher_set"] = str(ts.path)
    job.write(summary, entries)
    return summary


def teacher_set(job: Job, dataset: Dataset, section: dict[str, Any]) -> TeacherSet:
    """The set named by ``--teachers``: reused from a directory, or trained (or reused) in ``out/teachers``."""
    from distillrec.pipeline import teacher_specs

    cfg = job.cfg
    if job.teacher_set_dir is not None:
        job.echo(f"teacher set: reusing {job.teacher_set_dir}")
        return load_teacher_set(job.teacher_set_dir, dataset)
    names = [n for n in (cfg.teachers.split(",") if isinstance(cfg.teachers, str) else cfg.teachers) if n.strip()]
    if not names or any("/" in n for n in names):
        raise DistillrecError(f"--teachers {cfg.teachers!r}: expected model names (mf,cml,neumf,lightgcn,vae,iae) "
                              "or an existing teacher-set directory")
    train_section: dict[str, Any] | None = None
    trajectory: dict[str, Any] = {}
    available = None
    if cfg.teachers_config:
        set_cfg = load_teacher_set_config(cfg.teachers_config)
        available, train_section, trajectory = set_cfg.teachers, set_cfg.train, set_cfg.trajectory.model_dump()
    teachers = teacher_specs(names, available)
    trajectory = merge(trajectory, dict(parse_overrides(job.routed.get("trajectory", []))))
    path = job.out / "teachers"
    job.echo(f"teacher set ({', '.join(teachers)}) → {path}")
    return train_teacher_set(dataset, path, teachers=teachers, train=train_section, trajectory=trajectory or None,
                             overrides=job.sets_for("teachers"), progress=cfg.progress, echo=job.echo,
                             dataset_section=section)


def student_config(job: Job, ts: TeacherSet, method: str, dim: int, seed: int, file_raw: dict[str, Any],
                   file_distill: dict[str, Any] | None) -> RunConfig:
    """Defaults (``student_base_config``) < the config file (its ``distill`` section only for its own
    method) < ``--set`` (global, then ``METHOD.``-prefixed) < the seed."""
    from distillrec.pipeline import split_best

    kd = split_best(method)[0]
    base = student_base_config(ts.path, {"dataset": section_of(ts)}, "hetcomp" if method == "student" else kd,
                               "bpr", dim)
    if method == "student":
        del base["distill"]
    else:
        if kd == "hetcomp":
            k_e = int(ts.manifest.get("trajectory", {}).get("topk", 100))
            base["distill"].update({k: min(v, k_e) for k, v in _HETCOMP_LISTS.items()})
        if file_distill and file_distill.get("method", kd) == kd:
            base["distill"] = merge(base["distill"], {**file_distill, "method": kd})
    base = merge(base, {k: v for k, v in file_raw.items() if k != "dataset"})
    return resolve_config(base=base, overrides=[*job.sets_for(method), f"train.seed={seed}"])


def section_of(ts: TeacherSet) -> dict[str, Any]:
    return dict(ts.manifest.get("dataset") or {"name": ts.dataset.name})


def _student(job: Job, ts: TeacherSet, method: str, config: RunConfig, dim: int, seed: int) -> Run:
    sub, label = f"{method}/seed-{seed}", f"{method} (dim {dim}, seed {seed})"
    progress = job.cfg.progress
    if method == "student":
        return job._train(sub, label, lambda path, resume: train(
            ts.dataset, config=config, out=path, resume=resume, progress=progress, echo=job._quiet), planned=config)
    from distillrec.pipeline import split_best

    kd, member = split_best(method)
    return job._train(sub, label, lambda path, resume: distill_from_teacher_set(
        ts.path, out=path, dataset=ts.dataset, method=kd, config=config, resume=resume, progress=progress,
        echo=job.echo if member else job._quiet, member=member), planned=config)
