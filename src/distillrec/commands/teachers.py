"""``distillrec teachers``: train a heterogeneous teacher set (HetComp) with trajectories, print its table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from distillrec.commands import echo_err, format_table, markdown, num


@click.command("teachers")
@click.option("--dataset", "-d", default=None, help="registered data set (default: the config's, else synthetic)")
@click.option("--teachers", "names", default=None, metavar="NAMES",
              help="comma-separated models (mf = bpr, cml, neumf, lightgcn, vae, iae), or names in --config; "
                   "default: every teacher of --config, else HetComp's six")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="teacher-set YAML (configs/hetcomp/*-teachers.yaml)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="every teacher's config key (train.epochs=50, model.embedding_dim=32), dataset.KEY=… "
                   "or trajectory.KEY=… (k_checkpoints, topk, queue_len, every)")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="teacher-set directory to write")
@click.option("--resume", is_flag=True,
              help="continue the set in --out: finished teachers are reused, one cut short resumes")
def teachers_cmd(dataset, names, config_file, overrides, out, resume) -> None:
    """Train a heterogeneous teacher set, each teacher with its trajectory (for `distill --teachers`)."""
    from distillrec.config import parse_overrides
    from distillrec.pipeline import split_sets, teacher_specs
    from distillrec.teachers import load_teacher_set_config, train_teacher_set
    from distillrec.utils import DistillrecError, atomic_write_json, atomic_write_text

    out_dir = Path(out)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not resume:
        raise DistillrecError(f"{out_dir} is not empty; pass --resume to continue the teacher set there "
                              "or choose another --out")
    cfg = load_teacher_set_config(config_file)  # defaults: synthetic, HetComp's six, K_e = 100
    common, routed = split_sets(list(overrides), ("dataset", "trajectory"))
    section = dict(cfg.dataset)
    if dataset and dataset != section.get("name"):
        section = {"name": dataset}
    section.update(dict(parse_overrides(routed.get("dataset", []))))
    teachers = cfg.teachers
    if names:
        teachers = teacher_specs([n for n in names.split(",") if n.strip()], cfg.teachers if config_file else None)
    trajectory = cfg.trajectory.model_dump() | dict(parse_overrides(routed.get("trajectory", [])))
    # The file's sections are passed one by one: a `teachers` mapping given next to the file would be merged
    # into the file's, not replace it.
    ts = train_teacher_set(section, out_dir, teachers=teachers, train=cfg.train, trajectory=trajectory,
                           overrides=common, echo=echo_err)
    summary = summarise_set(ts)
    atomic_write_json(out_dir / "results.json", summary)
    head, body = _cells(summary)
    atomic_write_text(out_dir / "report.md", f"# Teacher set on {summary['dataset']}\n\n{markdown(head, body)}\n")
    click.echo(f"{summary['dataset']}: teacher set ({summary['protocol']} protocol)")
    click.echo(format_table(head, body))
    click.echo(f"teacher set: {out_dir} (teacher_set.json, results.json, report.md)")


def summarise_set(ts: Any) -> dict[str, Any]:
    """One row per teacher (valid/test metrics, size, latency, best epoch) and one for the ensemble."""
    import yaml

    rows = []
    protocol = "full"
    for m in ts.manifest["teachers"]:
        run_dir = ts.path / m["run_dir"]
        results = json.loads((run_dir / "results.json").read_text())
        protocol = results.get("protocol", protocol)
        valid_metric = yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["valid_metric"]
        rows.append({"name": m["name"], "model": m["model"], "valid_metric": valid_metric,
                     "valid": m.get("valid") or {}, "test": m.get("test") or {}, "parameters": m["parameters"],
                     "latency_ms_per_user": m["latency_ms_per_user"], "best_epoch": m.get("best_epoch")})
    ks = sorted({int(k.split("@")[1]) for k in rows[0]["test"] if "@" in k}) or [10, 50]
    if protocol == "full":  # the ensemble ranks by full ranking only
        ensemble = ts.ensemble()
        cost = ensemble.cost()
        rows.append({"name": "ensemble", "model": "+".join(r["model"] for r in rows),
                     "valid_metric": rows[0]["valid_metric"],
                     "valid": _rounded(ensemble.evaluate("valid", ks=ks).metrics),
                     "test": _rounded(ensemble.evaluate("test", ks=ks).metrics), "parameters": cost["parameters"],
                     "latency_ms_per_user": cost["latency_ms_per_user"], "best_epoch": None})
    return {"dataset": ts.dataset.name, "protocol": protocol, "teacher_set": str(ts.path), "rows": rows}


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in metrics.items()}


def _cells(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    rows = summary["rows"]
    kinds = ("hit", "ndcg") if summary["protocol"] == "sampled" else ("recall", "ndcg")
    test = [k for k in rows[0]["test"] if k.split("@")[0] in kinds]
    test.sort(key=lambda k: (int(k.split("@")[1]), k))
    valid_metric = rows[0]["valid_metric"]
    head = ["teacher", "model", f"valid {valid_metric}", *(f"test {k}" for k in test), "params", "ms/user",
            "best epoch"]
    body = [[r["name"], r["model"], num(r["valid"].get(valid_metric)), *(num(r["test"].get(k)) for k in test),
             f"{r['parameters']:,}" if r["parameters"] is not None else "–",
             num(r["latency_ms_per_user"], 3), str(r["best_epoch"]) if r["best_epoch"] is not None else ""]
            for r in rows]
    return head, body
