"""The comparison table of ``distillrec run``: one row per method, mean ± std over seeds, size, latency, epoch
time, and a paired test of each method against the student trained alone (per user, values averaged over seeds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distillrec.utils import DistillrecError

if TYPE_CHECKING:
    from distillrec.train.runs import Run


@dataclass
class Entry:
    """One trained model of the comparison (one method, one seed)."""

    name: str
    seed: int
    run: Run | None  # None for the ensemble (no single run directory)
    results: dict[str, Any]
    eval: Any = None  # EvalResult on the test split, with per-user values
    extra: dict[str, Any] = field(default_factory=dict)


def seed_dirs(method_dir: Path) -> dict[int, Path]:
    """``{seed: path}`` for the ``seed-N`` sub-directories of one method's directory in a ``distillrec run``
    output, in seed order (the layout the pipeline writes, and the archive and table scripts read)."""
    if not method_dir.is_dir():
        return {}
    found = {int(m.group(1)): p for p in method_dir.iterdir()
             if p.is_dir() and (m := re.fullmatch(r"seed-(\d+)", p.name))}
    return dict(sorted(found.items()))


def ordered(entries: list[Entry]) -> list[Entry]:
    """Teachers and the ensemble first, then the student alone, then each method in order of first appearance;
    seeds ascending within a method."""
    first: dict[str, int] = {}
    for e in entries:
        first.setdefault(e.name, len(first))

    def key(e: Entry) -> tuple[int, int, int]:
        group = 1 if e.name == "student" else 0 if _is_reference(e.name) else 2
        return group, first[e.name], e.seed

    return sorted(entries, key=key)


def _is_reference(name: str) -> bool:
    """Teachers and the ensemble: rows that are not compared with the student alone."""
    return name in ("student", "teacher", "ensemble") or name.startswith("teacher:")


def summarise(entries: list[Entry], metrics: list[str], protocol: str, dataset: str) -> dict[str, Any]:
    """One row per method: mean ± std over seeds, size, latency, epoch time, paired test vs the student.
    "% teacher" (``of_teacher``) is relative to the ensemble when there is one, else to the teacher."""
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
        if student and not _is_reference(name):
            row["vs_student"] = _paired(group, student, metrics[-1], paired_test)
            base = np.mean([(e.results.get("train") or {}).get("seconds_per_epoch", 0.0) for e in student])
            row["epoch_time_vs_student"] = row["seconds_per_epoch"] / base if base else None
        rows.append(row)
    reference = next((r for name in ("ensemble", "teacher") for r in rows if r["name"] == name), None)
    if reference:
        t_val = reference[metrics[-1]]
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
