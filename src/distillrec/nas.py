"""AdaRec end to end: search a student architecture → derive → retrain → evaluate against the teacher.

``search(dataset, teacher_run_dir, out, overrides)`` is the Python side of ``distillrec search``. It writes::

    out/config.yaml                  the resolved NAS config
    out/search/                      the super-net's run directory (log.jsonl holds τ, EMD weights, alpha)
    out/architecture.{txt,json}      the derived cell; out/cells.png its drawing and the final alpha
    out/retrain/                     the derived student's run directory (the deployable model)
    out/ablations/<name>/…           random architecture, no EMD, no cost loss, fixed NextItNet student,
                                     the searched architecture without KD (no_kd)
    out/results.json, out/report.md  test metrics, parameters, MACs, latency of teacher and students

Every stage is a normal run directory (``load_run`` reads it); a finished stage is reused and an interrupted
one resumes from its last checkpoint, so re-running the same command continues where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distillrec.config import RunConfig, TrainConfig, load_yaml, merge, parse_overrides
from distillrec.data.dataset import Dataset
from distillrec.distill.adarec import AdaRecConfig, AdaRecDistiller
from distillrec.models import Recommender, get_model_class
from distillrec.models.supernet import AdaRecStudent, SuperNet, count_macs, edge_list
from distillrec.train.checkpoint import load_checkpoint
from distillrec.train.evaluation import evaluate_model, rounded
from distillrec.train.runs import BUDGET_KEYS, Run, check_resumable, load_run, write_results
from distillrec.train.trainer import Trainer
from distillrec.utils import DistillrecError, atomic_write, atomic_write_json, atomic_write_text, seed_everything

ABLATIONS = ("random", "no_emd", "no_cost", "fixed_student")
_EVAL = {"topk": [5, 10, 20], "valid_metric": "ndcg@10", "optimizer": "adamw"}


class NASConfig(BaseModel):
    """Sections: ``model`` (super-net/student sizes), ``method`` (AdaRec losses), ``search`` and ``retrain``
    (training loops), ``kd`` / ``warm_start`` (how the derived student is retrained) and ``ablations``."""

    model_config = ConfigDict(extra="forbid")

    model: dict[str, Any] = Field(default_factory=dict)  # embedding_dim (default teacher width / 4), n_cells, ...
    method: AdaRecConfig = Field(default_factory=AdaRecConfig)
    # the authors search all 200 epochs (spec §6): no early stop, so τ anneals to its end (× 0.8 every 5 epochs)
    search: TrainConfig = Field(default_factory=lambda: TrainConfig(
        epochs=200, batch_size=64, learning_rate=5e-3, weight_decay=5e-4, patience=200, **_EVAL))
    retrain: TrainConfig = Field(default_factory=lambda: TrainConfig(
        epochs=100, batch_size=128, learning_rate=1e-3, weight_decay=5e-4, grad_clip=5.0, **_EVAL))
    # Default: the spec's mode (ii) `scratch_kd` — what the paper describes and what this library is for (KD
    # was worth +0.025 NDCG@10 on Beauty, BENCHMARKS.md). The authors' code retrains in mode (i), warm start
    # with CE only (kd: false, warm_start: true, lr 1e-4: configs/adarec/faithful.yaml); the presets that
    # gave the reported rows use (iii), warm start with KD.
    kd: bool = True  # retrain with the KD losses (no cost term); False: CE only, as the authors' finetune
    warm_start: bool = False  # start the derived student from the super-net's weights (the authors' finetune)
    ablations: list[Literal["random", "no_emd", "no_cost", "fixed_student", "no_kd"]] = Field(default_factory=list)


def resolve_nas_config(config_file: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> NASConfig:
    """Defaults < YAML file < ``section.key=value`` overrides (``search.epochs=5``, ``method.beta=0``, ``kd=false``)."""
    raw: dict[str, Any] = load_yaml(config_file) if config_file else {}
    for key, value in parse_overrides(list(overrides)):
        section, _, sub = key.partition(".")
        if not sub:
            raw[key] = value
        elif section in ("model", "method", "search", "retrain"):
            raw.setdefault(section, {})[sub] = value
        else:
            raise DistillrecError(f"unknown NAS config section {section!r} in {key!r}; use model., method., "
                                  "search., retrain. or a top-level key (kd, warm_start, ablations)")
    if "search" in raw or "retrain" in raw:  # a section given in part keeps the other defaults of that stage
        base = NASConfig()
        for stage in ("search", "retrain"):
            if isinstance(raw.get(stage), dict):
                raw[stage] = merge(getattr(base, stage).model_dump(), raw[stage])
    try:
        return NASConfig(**raw)
    except ValidationError as e:
        where = f"{config_file}: " if config_file else ""
        parts = ["{}: {}".format(".".join(map(str, err["loc"])), "unknown key" if err["type"] == "extra_forbidden"
                                 else err["msg"]) for err in e.errors()]
        raise DistillrecError(f"{where}invalid NAS config: {'; '.join(parts)}") from None


# -- rendering ------------------------------------------------------------------------------------------------
def render_architecture(genotype: list[str], n_nodes: int, n_cells: int | None = None) -> str:
    """The derived cell as text, one line per intermediate node."""
    edges = edge_list(n_nodes)
    head = f"cell (shared by {n_cells} cells)" if n_cells else "cell"
    lines = [f"{head}; node 0 = the cell input"]
    for n in range(1, n_nodes + 1):
        parts = [f"{op}(node {j})" for (j, t), op in zip(edges, genotype, strict=True) if t == n and op != "none"]
        lines.append(f"  node {n} = {' + '.join(parts) if parts else '0'}")
    lines.append(f"  output = input + ReLU(LayerNorm(attention-weighted sum of nodes 1..{n_nodes}))")
    return "\n".join(lines)


def draw_cells(genotype: list[str], n_nodes: int, arch_probs: np.ndarray | None = None,
               op_names: list[str] | None = None) -> Figure:
    """A drawing of the derived cell (nodes left to right, one labelled arc per edge; 'none' edges dashed) and,
    given ``arch_probs`` [n_edges, n_ops], a heat map of the final architecture distribution."""
    fig = Figure(figsize=(11 if arch_probs is not None else 6.5, 3.6))
    axes = fig.subplots(1, 2 if arch_probs is not None else 1, squeeze=False)[0]
    ax = axes[0]
    xs = np.arange(n_nodes + 1) * 3.0
    top = 0.4
    for (j, n), op in zip(edge_list(n_nodes), genotype, strict=True):
        rad = 0.0 if n == j + 1 else -0.2 - 0.06 * (n - j)  # longer edges arc higher (negative rad: upwards)
        peak = -rad * (xs[n] - xs[j]) / 2  # a quadratic Bézier reaches half its control point's offset
        top = max(top, peak + 0.4)
        ax.annotate("", xy=(xs[n], 0), xytext=(xs[j], 0), arrowprops={
            "arrowstyle": "-|>", "connectionstyle": f"arc3,rad={rad}", "shrinkA": 14, "shrinkB": 14,
            "color": "0.6" if op == "none" else "C0", "linestyle": "--" if op == "none" else "-"})
        ax.text((xs[j] + xs[n]) / 2, peak if rad else 0.2, op, ha="center", va="center", fontsize=7,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    for i, x in enumerate(xs):
        ax.add_patch(_circle(x))
        ax.text(x, 0, "in" if i == 0 else str(i), ha="center", va="center", fontsize=9, zorder=4)
    ax.set_xlim(-1, xs[-1] + 1)
    ax.set_ylim(-0.6, top)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("derived cell")
    if arch_probs is not None:
        hm = axes[1]
        im = hm.imshow(arch_probs, aspect="auto", cmap="viridis")
        hm.set_xticks(range(arch_probs.shape[1]), op_names or [], rotation=60, ha="right", fontsize=7)
        hm.set_yticks(range(len(genotype)), [f"{j}→{n}" for j, n in edge_list(n_nodes)], fontsize=7)
        hm.set_title("softmax(alpha) per edge")
        fig.colorbar(im, ax=hm)
    return fig


def _circle(x: float):
    from matplotlib.patches import Circle

    return Circle((x, 0), 0.3, facecolor="white", edgecolor="black", zorder=3)


# -- stages -----------------------------------------------------------------------------------------------------
def _stage(net: Recommender, data: Dataset, train_cfg: TrainConfig, dataset_section: dict[str, Any], out_dir: Path,
           distiller: AdaRecDistiller | None, echo: Callable[[str], None], progress: bool | None,
           prepare: Callable[[], None] | None = None, distill: dict[str, Any] | None = None,
           ) -> tuple[Run, dict[str, Any]]:
    """Train one model in its run directory (reused when finished, resumed when interrupted). ``distill``
    records how the stage was trained (AdaRec settings, warm start) in its config, so that a directory run
    with other settings is refused rather than silently reused."""
    run_cfg = RunConfig(dataset=dataset_section, model={"name": net.name, **net.hparams()}, train=train_cfg,
                        distill=distill)
    done = out_dir / "results.json"
    plain = run_cfg.to_plain()
    text = yaml.safe_dump(plain, sort_keys=False)
    cfg_path = out_dir / "config.yaml"
    if (out_dir / "checkpoints" / "last.pt").exists():
        check_resumable(cfg_path, plain, "this stage was run with another config; choose another --out "
                        f"(only {' and '.join(f'{s}.{k}' for s in ('search', 'retrain') for k in BUDGET_KEYS)} "
                        "may change)", echo)
    if done.exists():
        net.load_state_dict(load_checkpoint(out_dir / "checkpoints" / "best.pt", map_location=net.device)["model"])
        echo(f"{out_dir}: finished earlier, reused")
        return Run(net, data, run_cfg, out_dir), json.loads(done.read_text())
    resume = (out_dir / "checkpoints" / "last.pt").exists()
    if prepare is not None and not resume:
        prepare()  # e.g. warm start: only for a fresh run (a resumed one restores its own weights)
    atomic_write_text(cfg_path, text)
    trainer = Trainer(net, data, train_cfg, out_dir=out_dir, distiller=distiller, run_config=run_cfg.to_plain(),
                      progress=progress, echo=echo)
    if distiller is not None and distiller.search:  # alpha gets its own learning rate and weight decay
        trainer.optimizer = distiller.optimizer(train_cfg.learning_rate, train_cfg.weight_decay)
    result = trainer.fit(resume=resume)
    net.load_state_dict(load_checkpoint(out_dir / "checkpoints" / "best.pt", map_location=trainer.device)["model"])
    run = Run(net, data, run_cfg, out_dir, result)
    return run, write_results(run, trainer)


def _student_hparams(cfg: NASConfig, teacher: Run) -> dict[str, Any]:
    t = teacher.model
    hp = {"embedding_dim": max(8, t.item_embedding.embedding_dim // 4), "max_len": t.config.max_len}
    return {**hp, **cfg.model}


def search_stage(teacher: Run, cfg: NASConfig, out_dir: Path, method: AdaRecConfig, echo, progress) -> SuperNet:
    seed_everything(cfg.search.seed)
    net = SuperNet.from_dataset(teacher.dataset, **_student_hparams(cfg, teacher))
    distiller = AdaRecDistiller(net, teacher.model, method)
    _stage(net, teacher.dataset, cfg.search, teacher.config.dataset, out_dir, distiller, echo, progress,
           distill={"method": "adarec", "stage": "search", **method.model_dump(mode="json")})
    return net


def retrain_stage(teacher: Run, cfg: NASConfig, out_dir: Path, student: Recommender, method: AdaRecConfig,
                  echo, progress, supernet: SuperNet | None = None) -> tuple[Run, dict[str, Any]]:
    prepare = None
    if cfg.warm_start and supernet is not None and isinstance(student, AdaRecStudent):
        def prepare() -> None:
            echo(f"warm start: {student.warm_start(supernet)} tensors copied from the super-net")
    distiller = AdaRecDistiller(student, teacher.model, method) if cfg.kd else None
    distill = {"method": "adarec", "stage": "retrain", "kd": cfg.kd, "warm_start": prepare is not None}
    if cfg.kd:
        distill |= method.model_dump(mode="json")
    return _stage(student, teacher.dataset, cfg.retrain, teacher.config.dataset, out_dir, distiller, echo, progress,
                  prepare, distill)


def derived_student(teacher: Run, cfg: NASConfig, genotype: list[str]) -> AdaRecStudent:
    seed_everything(cfg.retrain.seed)
    hp = {k: v for k, v in _student_hparams(cfg, teacher).items() if k != "ops"}
    return AdaRecStudent.from_dataset(teacher.dataset, **hp, genotype=genotype)


def fixed_student(teacher: Run, cfg: NASConfig, size_of: Recommender) -> Recommender:
    """A NextItNet of the same width whose number of residual blocks brings its non-embedding parameters
    closest to ``size_of``'s (the "KD without search" baseline)."""
    seed_everything(cfg.retrain.seed)
    cls, width = get_model_class("nextitnet"), size_of.item_embedding.embedding_dim
    target = non_embedding_parameters(size_of)
    best = None
    for r in range(1, 33):
        cand = cls.from_dataset(teacher.dataset, embedding_dim=width, dilations=([1, 4] * r)[:r], n_blocks=1,
                                max_len=size_of.config.max_len)
        gap = abs(non_embedding_parameters(cand) - target)
        if best is None or gap < best[0]:
            best = (gap, cand)
    return best[1]


def non_embedding_parameters(model: Recommender) -> int:
    emb = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return sum(p.numel() for p in model.parameters() if id(p) not in emb)


def macs_per_sequence(model: Recommender) -> int | None:
    """MACs of encoding one full-length sequence (item scoring excluded); None for attention models, whose
    score products the hook counter does not see."""
    if model.name == "sasrec":
        return None
    model.eval()
    n = model.config.max_len
    seq = (torch.arange(n, device=model.device) % model.n_items)[None]
    return count_macs(model, lambda: model.seq_output(seq))


def _row(name: str, model: Recommender, results: dict[str, Any] | None, teacher: Run, cfg: NASConfig,
         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from distillrec.report.latency import scoring_latency

    data = teacher.dataset
    if results is None or "test" not in results:
        test = rounded(evaluate_model(model, data, "test", "full", cfg.retrain).metrics)
    else:
        test = results["test"]
    row = {"name": name, "model": model.name, "test": test}
    if "test" in data.candidates:  # the papers' protocol too (spec §7.3), never mixed with the full-ranking one
        row["test_sampled"] = rounded(evaluate_model(model, data, "test", "sampled", cfg.retrain).metrics)
    row |= {"parameters": model.num_parameters(),
           "non_embedding_parameters": non_embedding_parameters(model), "macs_per_sequence": macs_per_sequence(model),
           "latency_ms_per_user": round(scoring_latency(model, teacher.dataset), 4)}
    if results and results.get("train"):
        row["train_seconds"] = results["train"]["train_seconds"]
    return row | (extra or {})


def _search_and_retrain(teacher: Run, cfg: NASConfig, out: Path, method: AdaRecConfig, echo, progress,
                        write_arch: bool = False) -> tuple[list[str], Recommender, dict[str, Any]]:
    supernet = search_stage(teacher, cfg, out / "search", method, echo, progress)
    genotype = supernet.derive()
    c = supernet.config
    if write_arch:
        probs = supernet.arch_probs().cpu().numpy()
        text = render_architecture(genotype, c.n_nodes, c.n_cells)
        atomic_write_text(out / "architecture.txt", text + "\n")
        atomic_write_json(out / "architecture.json", {"genotype": genotype, "edges": edge_list(c.n_nodes),
                                                      "op_names": supernet.op_names, "arch_probs": probs.tolist()})
        fig = draw_cells(genotype, c.n_nodes, probs, supernet.op_names)
        atomic_write(out / "cells.png", lambda fh: fig.savefig(fh, format="png", dpi=120, bbox_inches="tight"))
        echo(text)
    student = derived_student(teacher, cfg, genotype)
    _, results = retrain_stage(teacher, cfg, out / "retrain", student, method, echo, progress, supernet)
    return genotype, student, results


def search(dataset: str | Dataset | None, teacher_run_dir: str | Path, out: str | Path,
           overrides: list[str] | tuple[str, ...] = (), *, config_file: str | Path | None = None,
           progress: bool | None = None, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Search → derive → retrain → evaluate (and the configured ablations); returns what results.json holds."""
    echo = echo or (lambda msg: None)
    cfg = resolve_nas_config(config_file, overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    teacher = load_run(teacher_run_dir, dataset)
    if not hasattr(teacher.model, "hidden_states"):
        raise DistillrecError(f"{teacher_run_dir}: AdaRec needs a sequential teacher (sasrec, nextitnet), got "
                              f"{teacher.model.name!r}")
    teacher.model.eval()
    genotype, student, results = _search_and_retrain(teacher, cfg, out, cfg.method, echo, progress, write_arch=True)
    rows = [_row("teacher", teacher.model, None, teacher, cfg),
            _row("adarec", student, results, teacher, cfg, {"genotype": genotype})]
    for name in cfg.ablations:
        rows.append(_ablation(name, teacher, cfg, out / "ablations" / name, student, echo, progress))
    summary = {"dataset": teacher.dataset.name, "teacher": str(teacher_run_dir), "genotype": genotype,
               "architecture": render_architecture(genotype, student.config.n_nodes, student.config.n_cells),
               "protocol": "full", "rows": rows}
    if "test" in teacher.dataset.candidates:
        summary["sampled_negatives"] = int(teacher.dataset.candidates["test"].shape[1])
    atomic_write_json(out / "results.json", summary)
    atomic_write_text(out / "report.md", report_markdown(summary))
    return summary


def _ablation(name: str, teacher: Run, cfg: NASConfig, out: Path, adarec: Recommender, echo, progress) -> dict:
    method = cfg.method
    if name == "random":
        rng = np.random.default_rng(cfg.search.seed)
        names = SuperNet.Config(**_student_hparams(cfg, teacher)).op_names
        genotype = [str(x) for x in rng.choice(names, size=len(adarec.config.genotype))]
        student = derived_student(teacher, cfg, genotype)
        _, res = retrain_stage(teacher, cfg, out / "retrain", student, method, echo, progress)
        return _row(name, student, res, teacher, cfg, {"genotype": genotype})
    if name == "no_kd":  # the searched architecture trained alone: the equal-size student without KD
        student = derived_student(teacher, cfg, list(adarec.config.genotype))
        _, res = retrain_stage(teacher, cfg.model_copy(update={"kd": False}), out / "retrain", student, method,
                               echo, progress)
        return _row(name, student, res, teacher, cfg, {"genotype": list(adarec.config.genotype)})
    if name == "fixed_student":
        student = fixed_student(teacher, cfg, adarec)
        _, res = retrain_stage(teacher, cfg.model_copy(update={"kd": True}), out / "retrain", student, method,
                               echo, progress)
        return _row(name, student, res, teacher, cfg, {"dilations": student.config.dilations})
    changes = {"no_emd": {"mapping": "one_to_one"}, "no_cost": {"beta": 0.0}}[name]
    method = method.model_copy(update=changes)
    genotype, student, res = _search_and_retrain(teacher, cfg, out, method, echo, progress)
    return _row(name, student, res, teacher, cfg, {"genotype": genotype})


def _share(row: dict[str, Any], teacher: dict[str, Any], key: str, metric: str = "ndcg@10") -> str:
    """The row's share of the teacher's metric (the issue's ≥ 95 % goal reads this column)."""
    t = teacher.get(key, {}).get(metric)
    v = row.get(key, {}).get(metric)
    return f"{100 * v / t:.1f} %" if t and v is not None else "–"


def report_markdown(summary: dict[str, Any]) -> str:
    rows = summary["rows"]
    teacher = next((r for r in rows if r["name"] == "teacher"), rows[0])
    metrics = [m for m in ("hit@5", "hit@10", "ndcg@10", "hit@20", "ndcg@20", "mrr@20") if m in rows[0]["test"]]
    head = ["model", *metrics, "% teacher N@10", "params", "non-emb params", "MACs/seq", "ms/user"]
    lines = [f"# AdaRec on {summary['dataset']} (test, {summary['protocol']} ranking)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        macs = f"{r['macs_per_sequence']:,}" if r["macs_per_sequence"] is not None else "–"
        cells = [r["name"], *(f"{r['test'][m]:.4f}" for m in metrics), _share(r, teacher, "test"),
                 f"{r['parameters']:,}", f"{r['non_embedding_parameters']:,}", macs, f"{r['latency_ms_per_user']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if all("test_sampled" in r for r in rows):
        n = summary.get("sampled_negatives", "N")
        sampled = [m for m in ("hit@1", "hit@5", "hit@10", "ndcg@5", "ndcg@10", "ndcg@20", "mrr@5", "mrr@20")
                   if m in rows[0]["test_sampled"]]
        head = ["model", *sampled, "% teacher N@10"]
        lines += ["", f"Sampled protocol (the papers'): the held-out item against {n} fixed negatives per user", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [r["name"], *(f"{r['test_sampled'][m]:.4f}" for m in sampled), _share(r, teacher, "test_sampled")]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Discovered cell:", "", "```", summary["architecture"], "```", ""]
    return "\n".join(lines)
