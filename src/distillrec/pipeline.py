"""The main job, ``distillrec run``: teacher → student alone → each distillation method → one comparison.

Every student is trained by the same loop with the same epoch budget and early-stopping rule, evaluated on
one protocol, and reported with its size, scoring latency and training time per epoch. With several seeds
the table shows mean ± std and a paired test (per user, values averaged over seeds) of each method against
the student trained alone. Each model lives in its own run directory under ``out``; a finished one is reused
and an interrupted one resumes, so re-running the same command continues where it stopped.

With ``teachers`` (model names, or a teacher-set directory) the job is the heterogeneous case of HetComp:
the teacher set is trained (with trajectories) or reused, every student is a BPR-MF under the authors'
schedule and each KD method distils the set's ensemble (``distillrec.teachers.distill_from_teacher_set``);
the table gets one row per teacher and one for the ensemble (the reference of "% teacher"). ``adarec`` runs
AdaRec's search → derive → retrain (``distillrec.nas``) from a sequential teacher.

``--set`` strings apply to every model; one prefixed with a method name (``rrd.distill.lambda_rrd=0.01``),
``teacher.`` (the single teacher), ``teachers.`` (every model of the teacher set), ``trajectory.`` (the set's
trajectory settings) or ``adarec.`` (the NAS config: ``adarec.search.epochs=20``) applies only there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distillrec.config import RunConfig, TrainConfig, resolve_config
from distillrec.data.dataset import Dataset
from distillrec.distill import list_methods
from distillrec.distill.ensemble import read_manifest
from distillrec.report.summary import Entry, ordered, seed_dirs, summarise
from distillrec.train.evaluation import evaluate_model
from distillrec.train.runs import (
    Run,
    check_reusable,
    distill,
    distill_config,
    load_data,
    load_run,
    model_size_key,
    reuse_diffs,
    train,
)
from distillrec.utils import DistillrecError, atomic_write_json, atomic_write_text

DEFAULT_METHODS = ("student", "rd", "cd", "de", "rrd", "de-rrd", "dcd")
# HetComp's comparison (with --teachers); METHOD@best distils the best single teacher of the set (on valid).
HETERO_METHODS = ("student", "rrd@best", "rrd", "dcd", "hetcomp")
BEST_SUFFIX = "@best"


def split_best(method: str) -> tuple[str, str | None]:
    """A method name of the comparison as (distillation method, teacher-set member): ``"rrd@best"`` →
    ``("rrd", "best")``, ``"rrd"`` → ``("rrd", None)`` (the whole ensemble)."""
    if method.endswith(BEST_SUFFIX):
        return method.removesuffix(BEST_SUFFIX), "best"
    return method, None

# The built-in demonstration: settings under which a BPR teacher (dim 64) clearly beats a dim-8 student on
# the synthetic data set and the whole job fits in a few minutes on two CPU cores.
DEMO_TRAIN = ["train.epochs=30", "train.learning_rate=0.01", "train.batch_size=1024", "train.patience=5",
              "train.eval_every=2", "train.valid_metric=ndcg@20"]
DEMO_STUDENT_DIM = 8
# The heterogeneous demonstration: the same budget, validated on Recall@50 and reported at 10 and 50 as in
# HetComp; the student is the authors' MF of dimension 6.
DEMO_TRAIN_HETERO = ["train.epochs=30", "train.learning_rate=0.01", "train.batch_size=1024", "train.patience=5",
                     "train.eval_every=2", "train.valid_metric=recall@50", "train.topk=[10, 50]"]
HETERO_STUDENT_DIM = 6
TEACHER_ALIASES = {"mf": "bpr"}  # HetComp's name for BPR-MF
SEQUENTIAL_TEACHERS = ("sasrec", "nextitnet")
_SET_TARGETS = ("teacher", "teachers", "trajectory", "adarec")


@dataclass
class JobConfig:
    dataset: str | None = None  # default: the teacher set's data set (a set directory given), else synthetic
    teacher: str = "bpr:64"  # MODEL:DIM, or a teacher's run directory
    student_dim: int | None = None  # default: a tenth of the teacher's (φ = 0.1), at least 4
    methods: tuple[str, ...] | None = None  # default: DEFAULT_METHODS, or HETERO_METHODS with teachers
    seeds: int = 1
    first_seed: int = 1  # seeds first_seed … first_seed + seeds − 1, so one seed can be added to a table later
    out: Path = Path("runs/demo")
    config_file: str | None = None
    overrides: tuple[str, ...] = ()  # --set, applied to the teacher, the student and every method
    progress: bool | None = None
    teachers: str | tuple[str, ...] | None = None  # heterogeneous: model names (mf, cml, …) or a teacher-set dir
    teachers_config: str | None = None  # a teacher-set YAML (configs/hetcomp/*-teachers.yaml)
    adarec_config: str | None = None  # a NAS YAML (configs/adarec/*.yaml)


def _hash(cfg: RunConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.to_plain(), sort_keys=True).encode()).hexdigest()[:10]


def _primary_metrics(protocol: str, ks: list[int] | None = None) -> list[str]:
    if protocol == "sampled":
        return ["hit@5", "ndcg@5", "hit@10", "ndcg@10"]
    lo, hi = (min(ks), max(ks)) if ks else (10, 20)
    return [f"recall@{lo}", f"ndcg@{lo}", f"recall@{hi}", f"ndcg@{hi}"]


def split_sets(sets: list[str], targets: tuple[str, ...]) -> tuple[list[str], dict[str, list[str]]]:
    """``--set`` strings for every model, and those prefixed with one of ``targets`` (prefix removed)."""
    common: list[str] = []
    routed: dict[str, list[str]] = {}
    for text in sets:
        head, dot, _ = text.split("=", 1)[0].strip().partition(".")
        if dot and head in targets:
            routed.setdefault(head, []).append(text.strip()[len(head) + 1:])
        else:
            common.append(text)
    return common, routed


def teacher_specs(names: list[str] | tuple[str, ...], available: dict[str, Any] | None = None) -> dict[str, Any]:
    """Teacher-set entries for model names (``mf`` = ``bpr``); with ``available`` (a teacher-set YAML's
    ``teachers``) a name picks the entry of that name (any case) or of that model."""
    from distillrec.models import get_model_class

    out: dict[str, Any] = {}
    for raw in names:
        name = raw.strip()
        model = TEACHER_ALIASES.get(name.lower(), name.lower())
        if name in out:
            raise DistillrecError(f"--teachers names {name!r} twice")
        if available is None:
            get_model_class(model)  # an unknown model is an error naming the known ones
            out[name] = {"model": {"name": model}}
            continue
        hits = [k for k, v in available.items() if k.lower() == name.lower()
                or _spec_model(v) == model]
        if not hits:
            raise DistillrecError(f"--teachers: no teacher {name!r} in the teacher-set config (it has "
                                  f"{', '.join(available)})")
        out[hits[0]] = available[hits[0]]
    return out


def _spec_model(spec: Any) -> str | None:
    model = spec.get("model") if isinstance(spec, dict) else spec
    return model.get("name") if isinstance(model, dict) else model


class Job:
    def __init__(self, cfg: JobConfig, echo: Callable[[str], None] | None = None) -> None:
        if not cfg.methods:
            cfg = replace(cfg, methods=HETERO_METHODS if cfg.teachers is not None else DEFAULT_METHODS)
        self.cfg = cfg
        self.echo = echo or print
        self.out = Path(cfg.out)
        self.teacher_set_dir = Path(cfg.teachers) if isinstance(cfg.teachers, str) and Path(cfg.teachers).is_dir() \
            else None
        self.manifest = read_manifest(self.teacher_set_dir) if self.teacher_set_dir else None
        self.dataset_name = cfg.dataset or (self.manifest or {}).get("dataset_name") or "synthetic"
        hetero = cfg.teachers is not None
        demo = self.dataset_name == "synthetic" and not cfg.config_file and not cfg.teachers_config
        self.sets = list((DEMO_TRAIN_HETERO if hetero else DEMO_TRAIN) if demo else [])
        # every registered method is a routing target, so a table's command can be re-run with some of its methods
        targets = _SET_TARGETS + tuple(cfg.methods) + tuple(list_methods())
        self.sets, self.routed = split_sets(self.sets + list(cfg.overrides), targets)
        self.eval_config: TrainConfig | None = None  # hetero: every row is evaluated with the students' settings

    def sets_for(self, target: str) -> list[str]:
        return self.sets + self.routed.get(target, [])

    def check_methods(self) -> None:
        """Refuse unknown or misplaced methods before anything is trained."""
        from distillrec.distill import get_method

        for method in self.cfg.methods:
            if method == "hetcomp" and self.cfg.teachers is None:
                raise DistillrecError("method 'hetcomp' distils a teacher set: pass --teachers mf,cml,… "
                                      "(or a teacher-set directory)")
            if method == "adarec" and self.cfg.teachers is not None:
                raise DistillrecError("method 'adarec' needs one sequential teacher (--teacher nextitnet:64), "
                                      "not a teacher set")
            kd, member = split_best(method)
            if member is not None:
                if self.cfg.teachers is None:
                    raise DistillrecError(f"method {method!r} distils the best teacher of a teacher set: pass "
                                          "--teachers mf,cml,… (or a teacher-set directory)")
                if kd in ("student", "adarec", "hetcomp"):
                    raise DistillrecError(f"{method!r}: only a distillation method (rd, cd, rrd, ir-rrd, dcd, …) "
                                          "can take the best single teacher")
                get_method(kd)
            elif method not in ("student", "adarec"):
                cls = get_method(method)
                if self.cfg.teachers is not None and method != "hetcomp" and cls.knowledge_spec(cls.Config()).reprs:
                    raise DistillrecError(f"method {method!r} distils representations, which a teacher set's "
                                          "ensemble does not have; use a ranking method (rd, cd, rrd, ir-rrd, dcd)")
        teacher = self.cfg.teacher.partition(":")[0]
        if "adarec" in self.cfg.methods and not Path(self.cfg.teacher).is_dir() and teacher not in SEQUENTIAL_TEACHERS:
            raise DistillrecError(f"method 'adarec' needs a sequential teacher ({', '.join(SEQUENTIAL_TEACHERS)}), "
                                  f"got --teacher {self.cfg.teacher}")

    # -- stages ---------------------------------------------------------------------------------------------
    def teacher(self, dataset: Dataset) -> Run:
        spec = self.cfg.teacher
        if Path(spec).is_dir():
            self.echo(f"teacher: reusing the run in {spec}")
            return load_run(spec, dataset=dataset)
        name, _, dim = spec.partition(":")
        sets = ([f"model.{model_size_key(name)}={int(dim)}"] if dim else []) + self.sets_for("teacher")
        cfg = resolve_config(dataset=self.dataset_name, model=name, config_file=self.cfg.config_file, overrides=sets)
        return self._train(f"teacher-{name}-{_hash(cfg)}", "teacher", lambda path, resume: train(
            dataset, config=cfg, out=path, resume=resume, progress=self.cfg.progress, echo=self._quiet))

    def student_dim(self, teacher: Run) -> int:
        if self.cfg.student_dim:
            return self.cfg.student_dim
        if self.dataset_name == "synthetic" and self.cfg.teacher == "bpr:64":
            return DEMO_STUDENT_DIM
        return max(4, int(teacher.model.hparams()[model_size_key(teacher.model.name)]) // 10)

    def _train(self, sub: str, label: str, fit: Callable[[Path, bool], Run], planned: RunConfig | None = None) -> Run:
        """Train ``sub`` (or resume it); a finished one is reused when it was trained under ``planned``."""
        path = self.out / sub
        if (path / "results.json").exists():
            if planned is not None:
                check_reusable(path, planned)
            self.echo(f"{label}: reusing {path}")
            return load_run(path, dataset=self._dataset)
        resume = (path / "checkpoints" / "last.pt").exists()
        self.echo(f"{label}: {'resuming' if resume else 'training'} → {path}")
        return fit(path, resume)

    def load(self, cfg: RunConfig) -> Dataset:
        dataset = load_data(cfg)
        self.echo(f"data set {dataset.name}: {dataset.n_users:,} users, {dataset.n_items:,} items, "
                  f"{dataset.train.nnz:,} training interactions")
        return dataset

    def _quiet(self, msg: str) -> None:
        if msg.startswith(("early stop", "resuming", "no valid")):
            self.echo("  " + msg)

    def run(self) -> dict[str, Any]:
        self.check_methods()
        if self.cfg.teachers is not None:
            from distillrec.pipeline_hetero import run_hetero

            return run_hetero(self)
        # The data set section of the resolved config (with any --set dataset.* options) decides what is loaded.
        probe = resolve_config(dataset=self.dataset_name, model=self.cfg.teacher.partition(":")[0]
                               if not Path(self.cfg.teacher).is_dir() else None,
                               config_file=self.cfg.config_file, overrides=self.sets)
        self._dataset = dataset = self.load(probe)
        if "adarec" in self.cfg.methods and dataset.sequences is None:
            raise DistillrecError(f"method 'adarec' needs a sequential data set (beauty, lastfm, or synthetic with "
                                  f"--set dataset.sequences=true); {dataset.name!r} has no sequences")
        teacher = self.teacher(dataset)
        dim = self.student_dim(teacher)
        protocol = teacher.config.train.protocol
        protocol = dataset.protocol if protocol == "auto" else protocol
        entries = [self._entry("teacher", 0, teacher, protocol)]
        for seed in range(self.cfg.first_seed, self.cfg.first_seed + self.cfg.seeds):
            for method in self.cfg.methods:
                run = self._student(teacher, method, dim, seed)
                entries.append(self._entry(method, seed, run, protocol))
        entries += self.finished_elsewhere(entries, lambda m, s: self._planned(teacher, m, dim, s), protocol)
        summary = summarise(ordered(entries), _primary_metrics(protocol), protocol, dataset.name)
        self.write(summary, entries)
        return summary

    def _planned(self, teacher: Run, method: str, dim: int, seed: int) -> RunConfig | dict[str, Any]:
        """The config this job trains ``method`` × ``seed`` under (a NAS config's plain data for AdaRec)."""
        if method == "adarec":
            from distillrec import nas

            return nas.resolve_nas_config(self.cfg.adarec_config, self._adarec_sets(dim, seed)).model_dump(mode="json")
        sets = [*self.sets_for(method), f"train.seed={seed}"]
        if method == "student":
            base = teacher.config.derived_base()
            base["model"][model_size_key(teacher.model.name)] = dim
            return resolve_config(base=base, config_file=self.cfg.config_file, overrides=sets)
        return distill_config(teacher, method, student_dim=dim, config_file=self.cfg.config_file, overrides=sets)

    def _student(self, teacher: Run, method: str, dim: int, seed: int) -> Run:
        if method == "adarec":
            return self._adarec(teacher, dim, seed)
        sets = [*self.sets_for(method), f"train.seed={seed}"]
        sub = f"{method}/seed-{seed}"
        label = f"{method} (dim {dim}, seed {seed})"
        planned = self._planned(teacher, method, dim, seed)
        if method == "student":
            return self._train(sub, label, lambda path, resume: train(
                self._dataset, config=planned, out=path, resume=resume, progress=self.cfg.progress,
                echo=self._quiet), planned=planned)
        return self._train(sub, label, lambda path, resume: distill(
            teacher, method, out=path, student_dim=dim, config_file=self.cfg.config_file, overrides=sets,
            resume=resume, progress=self.cfg.progress, echo=self._quiet), planned=planned)

    def _adarec(self, teacher: Run, dim: int, seed: int) -> Run:
        """AdaRec (``nas.search``) at the students' width; the retrained derived student is the row. The job's
        ``train.*`` settings apply to both NAS stages, ``adarec.*`` ones on top."""
        from distillrec import nas

        path = self.out / "adarec" / f"seed-{seed}"
        label = f"adarec (dim {dim}, seed {seed})"
        sets = self._adarec_sets(dim, seed)
        if (path / "results.json").exists():
            check_reusable(path, self._planned(teacher, "adarec", dim, seed))
            self.echo(f"{label}: reusing {path}")
        else:
            self.echo(f"{label}: searching → {path}")
            nas.search(self._dataset, teacher.path, path, sets, config_file=self.cfg.adarec_config,
                       progress=self.cfg.progress, echo=self._quiet)
        return load_run(path / "retrain", dataset=self._dataset)

    def _adarec_sets(self, dim: int, seed: int) -> list[str]:
        stages = [f"{stage}.{text[len('train.'):]}" for text in self.sets if text.startswith("train.")
                  for stage in ("search", "retrain")]
        return [f"model.embedding_dim={dim}", *stages, f"search.seed={seed}", f"retrain.seed={seed}",
                *self.routed.get("adarec", [])]

    def finished_elsewhere(self, entries: list[Entry], planned: Callable[[str, int], Any], protocol: str
                           ) -> list[Entry]:
        """Rows for finished sub-runs of ``out`` this invocation did not ask for — other seeds (an earlier
        ``--first-seed``) or methods trained by another ``distillrec run`` into the same directory — when they
        were trained under the settings this invocation would use (``planned(method, seed)``). Without them
        the report of whichever process writes last holds only its own rows."""
        have = {(e.name, e.seed) for e in entries}
        known = {"student", "adarec", *list_methods()}
        extra = []
        method_dirs = sorted(p for p in self.out.iterdir() if p.is_dir()) if self.out.is_dir() else []
        for method_dir in method_dirs:
            method = method_dir.name
            if split_best(method)[0] not in known:
                continue
            for seed, path in seed_dirs(method_dir).items():
                run_dir = path / "retrain" if method == "adarec" else path
                if (method, seed) in have or not (run_dir / "results.json").exists():
                    continue
                try:
                    diffs = reuse_diffs(path, planned(method, seed))
                except DistillrecError as exc:
                    diffs = [str(exc)]
                if diffs:
                    self.echo(f"left out of the table: {path}, trained under other settings ({'; '.join(diffs[:3])})")
                    continue
                self.echo(f"also in the table: {method} seed {seed} (finished in {path})")
                extra.append(self._entry(method, seed, load_run(run_dir, dataset=self._dataset), protocol))
        return extra

    def _entry(self, name: str, seed: int, run: Run, protocol: str) -> Entry:
        results = json.loads((run.path / "results.json").read_text())
        ev = evaluate_model(run.model, run.dataset, "test", protocol, self.eval_config or run.config.train)
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
        runs = [e for e in entries if e.run is not None and e.run.path is not None]
        plot_learning_curves({f"{e.name} s{e.seed}": e.run.path / "log.jsonl" for e in runs},
                             (self.eval_config or runs[0].run.config.train).valid_metric,
                             self.out / "learning_curves.png")
        atomic_write_text(self.out / "report.md", markdown_table(summary))
        self.echo("")
        self.echo(terminal_table(summary))
        self.echo(f"\nwritten: {self.out}/report.md, results.json, accuracy_vs_parameters.png, learning_curves.png")
