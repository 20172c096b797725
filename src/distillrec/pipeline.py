"""The main job, ``distillrec run``: teacher → student alone → each distillation method → one comparison.

Every student is trained by the same loop with the same epoch budget and early-stopping rule, evaluated on
one protocol, and reported with its size, scoring latency and training time per epoch. With several seeds
the table shows mean ± std and a paired test (per user, values averaged over seeds) of each method against
the student trained alone. Each model lives in its own run directory under ``out``; a finished one is reused
and an interrupted one resumes, so re-running the same command continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distillrec.config import RunConfig, resolve_config
from distillrec.data.dataset import Dataset
from distillrec.train.evaluation import evaluate_model
from distillrec.train.runs import Run, distill, load_data, load_run, model_size_key, train
from distillrec.utils import DistillrecError, atomic_write_json, atomic_write_text

DEFAULT_METHODS = ("student", "rd", "cd", "de", "rrd", "de-rrd", "dcd")

# The built-in demonstration: settings under which a BPR teacher (dim 64) clearly beats a dim-8 student on
# the synthetic data set and the whole job fits in a few minutes on two CPU cores.
DEMO_TRAIN = ["train.epochs=30", "train.learning_rate=0.01", "train.batch_size=1024", "train.patience=5",
              "train.eval_every=2", "train.valid_metric=ndcg@20"]
DEMO_STUDENT_DIM = 8


@dataclass
class JobConfig:
    dataset: str = "synthetic"
    teacher: str = "bpr:64"  # MODEL:DIM, or a teacher's run directory
    student_dim: int | None = None  # default: a tenth of the teacher's (φ = 0.1), at least 4
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: int = 1
    out: Path = Path("runs/demo")
    config_file: str | None = None
    overrides: tuple[str, ...] = ()  # --set, applied to the teacher, the student and every method
    progress: bool | None = None


@dataclass
class Entry:
    """One trained model of the comparison (one method, one seed)."""

    name: str
    seed: int
    run: Run
    results: dict[str, Any]
    eval: Any = None  # EvalResult on the test split, with per-user values
    extra: dict[str, Any] = field(default_factory=dict)


def _hash(cfg: RunConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.to_plain(), sort_keys=True).encode()).hexdigest()[:10]


def _primary_metrics(protocol: str) -> list[str]:
    if protocol == "sampled":
        return ["hit@5", "ndcg@5", "hit@10", "ndcg@10"]
    return ["recall@10", "ndcg@10", "recall@20", "ndcg@20"]


class Job:
    def __init__(self, cfg: JobConfig, echo: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.echo = echo or print
        self.out = Path(cfg.out)
        self.sets = list(DEMO_TRAIN if cfg.dataset == "synthetic" and not cfg.config_file else [])
        self.sets += list(cfg.overrides)

    # -- stages ---------------------------------------------------------------------------------------------
    def teacher(self, dataset: Dataset) -> Run:
        spec = self.cfg.teacher
        if Path(spec).is_dir():
            self.echo(f"teacher: reusing the run in {spec}")
            return load_run(spec, dataset=dataset)
        name, _, dim = spec.partition(":")
        sets = ([f"model.{model_size_key(name)}={int(dim)}"] if dim else []) + self.sets
        cfg = resolve_config(dataset=self.cfg.dataset, model=name, config_file=self.cfg.config_file, overrides=sets)
        return self._train(f"teacher-{name}-{_hash(cfg)}", "teacher", lambda path, resume: train(
            dataset, config=cfg, out=path, resume=resume, progress=self.cfg.progress, echo=self._quiet))

    def student_dim(self, teacher: Run) -> int:
        if self.cfg.student_dim:
            return self.cfg.student_dim
        if self.cfg.dataset == "synthetic" and self.cfg.teacher == "bpr:64":
            return DEMO_STUDENT_DIM
        return max(4, int(teacher.model.hparams()[model_size_key(teacher.model.name)]) // 10)

    def _train(self, sub: str, label: str, fit: Callable[[Path, bool], Run]) -> Run:
        path = self.out / sub
        if (path / "results.json").exists():
            self.echo(f"{label}: reusing {path}")
            return load_run(path, dataset=self._dataset)
        resume = (path / "checkpoints" / "last.pt").exists()
        self.echo(f"{label}: {'resuming' if resume else 'training'} → {path}")
        return fit(path, resume)

    def _quiet(self, msg: str) -> None:
        if msg.startswith(("early stop", "resuming", "no valid")):
            self.echo("  " + msg)

    def run(self) -> dict[str, Any]:
        # The data set section of the resolved config (with any --set dataset.* options) decides what is loaded.
        probe = resolve_config(dataset=self.cfg.dataset, model=self.cfg.teacher.partition(":")[0]
                               if not Path(self.cfg.teacher).is_dir() else None,
                               config_file=self.cfg.config_file, overrides=self.sets)
        self._dataset = dataset = load_data(probe)
        self.echo(f"data set {dataset.name}: {dataset.n_users:,} users, {dataset.n_items:,} items, "
                  f"{dataset.train.nnz:,} training interactions")
        teacher = self.teacher(dataset)
        dim = self.student_dim(teacher)
        protocol = teacher.config.train.protocol
        protocol = dataset.protocol if protocol == "auto" else protocol
        entries = [self._entry("teacher", 0, teacher, protocol)]
        for seed in range(1, self.cfg.seeds + 1):
            for method in self.cfg.methods:
                run = self._student(teacher, method, dim, seed)
                entries.append(self._entry(method, seed, run, protocol))
        summary = summarise(entries, _primary_metrics(protocol), protocol, dataset.name)
        self.write(summary, entries)
        return summary

    def _student(self, teacher: Run, method: str, dim: int, seed: int) -> Run:
        size = model_size_key(teacher.model.name)
        sets = [*self.sets, f"train.seed={seed}"]
        sub = f"{method}/seed-{seed}"
        label = f"{method} (dim {dim}, seed {seed})"
        if method == "student":
            base = teacher.config.to_plain()
            base["model"][size] = dim
            cfg = resolve_config(base=base, config_file=self.cfg.config_file, overrides=sets)
            return self._train(sub, label, lambda path, resume: train(
                self._dataset, config=cfg, out=path, resume=resume, progress=self.cfg.progress, echo=self._quiet))
        return self._train(sub, label, lambda path, resume: distill(
            teacher, method, out=path, student_dim=dim, config_file=self.cfg.config_file, overrides=sets,
            resume=resume, progress=self.cfg.progress, echo=self._quiet))

    def _entry(self, name: str, seed: int, run: Run, protocol: str) -> Entry:
        results = json.loads((run.path / "results.json").read_text())
        ev = evaluate_model(run.model, run.dataset, "test", protocol, run.config.train)
        return Entry(name, seed, run, results, ev)

    # -- output ---------------------------------------------------------------------------------------------
    def write(self, summary: dict[str, Any], entries: list[Entry]) -> None:
        from distillrec.report.plots import plot_accuracy_vs_size, plot_learning_curves
        from distillrec.report.tables import markdown_table, terminal_table

        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / "results.json", summary)
        metric = summary["metrics"][-1]
        plot_accuracy_vs_size(summary["rows"], metric, self.out / "accuracy_vs_parameters.png",
                              title=f"{summary['dataset']}: test {metric} against size")
        plot_learning_curves({f"{e.name} s{e.seed}": e.run.path / "log.jsonl" for e in entries},
                             entries[0].run.config.train.valid_metric, self.out / "learning_curves.png")
        atomic_write_text(self.out / "report.md", markdown_table(summary))
        self.echo("")
        self.echo(terminal_table(summary))
        self.echo(f"\nwritten: {self.out}/report.md, results.json, accuracy_vs_parameters.png, learning_curves.png")


def summarise(entries: list[Entry], metrics: list[str], protocol: str, dataset: str) -> dict[str, Any]:
    """One row per method: mean ± std over seeds, size, latency, epoch time, paired test vs the student."""
    from distillrec.evaluate import paired_test

    by_name: dict[str, list[Entry]] = {}
    for e in entries:
        by_name.setdefault(e.name, []).append(e)
    student = by_name.get("student")
    rows = []
    for name, group in by_name.items():
        row: dict[str, Any] = {"name": name, "seeds": len(group)}
        for m in metrics:
            vals = [e.eval.metrics[m] for e in group]
            row[m] = float(np.mean(vals))
            row[f"{m}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        first = group[0].results
        row["parameters"] = first["parameters"]
        row["latency_ms_per_user"] = float(np.mean([e.results["latency_ms_per_user"] for e in group]))
        train_info = [e.results.get("train") or {} for e in group]
        row["seconds_per_epoch"] = float(np.mean([t.get("seconds_per_epoch", 0.0) for t in train_info]))
        row["epochs"] = float(np.mean([t.get("best_epoch", 0) for t in train_info]))
        if student and name not in ("student", "teacher"):
            row["vs_student"] = _paired(group, student, metrics[-1], paired_test)
            base = np.mean([e.results.get("train", {}).get("seconds_per_epoch", 0.0) for e in student])
            row["epoch_time_vs_student"] = row["seconds_per_epoch"] / base if base else None
        rows.append(row)
    teacher = by_name.get("teacher")
    if teacher:
        t_val = rows[0][metrics[-1]]
        for row in rows:
            row["of_teacher"] = row[metrics[-1]] / t_val if t_val else None
    return {"dataset": dataset, "protocol": protocol, "metrics": metrics, "rows": rows}


def _paired(group: list[Entry], student: list[Entry], metric: str, paired_test) -> dict[str, Any]:
    """Per-user values averaged over seeds on both sides, then a paired t-test and a Wilcoxon test."""
    def mean_per_user(es: list[Entry]) -> tuple[np.ndarray, np.ndarray]:
        users = es[0].eval.users
        for e in es[1:]:
            if not np.array_equal(e.eval.users, users):
                raise DistillrecError("seeds evaluated different users; cannot pair them")
        return users, np.mean([e.eval.per_user[metric] for e in es], axis=0)

    a, b = mean_per_user(group), mean_per_user(student)
    t = paired_test(a, b, test="t")
    w = paired_test(a, b, test="wilcoxon")
    return {"metric": metric, "mean_diff": t.mean_diff, "p_t": t.p_value, "p_wilcoxon": w.p_value, "n_users": t.n}
