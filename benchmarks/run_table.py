"""A comparison table from a `distillrec run` output directory, finished or not.

`distillrec run` writes its report when every method × seed is done; this script reads whatever sub-runs
exist (``METHOD/seed-N/results.json``) so long runs can be recorded as they progress. Per method: test
metrics as mean ± std over the finished seeds, epochs, s / epoch, parameters, latency, and a paired t-test
against the student alone on the seeds both have (two-sided, scipy's ``ttest_rel``; needs ≥ 2 pairs).
With a teacher set (``teachers/teacher_set.json``) each teacher and the ensemble head the table.

    .venv/bin/python benchmarks/run_table.py runs/citeulike-loo/kd --metrics hit@5,ndcg@5,hit@10
    .venv/bin/python benchmarks/run_table.py runs/hetcomp/ml-100k --metrics recall@10,recall@50,ndcg@10,ndcg@50
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from distillrec.report.summary import seed_dirs


def seeds_of(method_dir: Path) -> dict[int, dict[str, Any]]:
    return {seed: json.loads((p / "results.json").read_text()) for seed, p in seed_dirs(method_dir).items()
            if (p / "results.json").exists()}


def fmt(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.4f} ± {a.std(ddof=1):.4f}" if len(a) > 1 else f"{a.mean():.4f}"


def teacher_rows(root: Path, metrics: list[str]) -> list[str]:
    manifest = root / "teachers" / "teacher_set.json"
    if not manifest.exists():
        return []
    rows = []
    for t in json.loads(manifest.read_text())["teachers"]:
        cells = [f"{t['test'][m]:.4f}" for m in metrics]
        rows.append(f"| teacher {t['name']} ({t['model']}) | — | " + " | ".join(cells)
                    + f" | — | {t['best_epoch']} | — | {t['parameters']:,} | {t['latency_ms_per_user']} |")
    return rows


def ensemble_row(root: Path, metrics: list[str]) -> str:
    """The teacher set's ensemble (converged checkpoints): test accuracy and summed serving cost."""
    from distillrec.teachers import load_teacher_set

    ens = load_teacher_set(root / "teachers").ensemble()
    ks = sorted({int(m.split("@")[1]) for m in metrics})
    res = ens.evaluate("test", ks=ks).metrics
    cost = ens.cost()
    return (f"| ensemble of {ens.n_teachers} | — | " + " | ".join(f"{res[m]:.4f}" for m in metrics)
            + f" | — | — | — | {cost['parameters']:,} | {cost['latency_ms_per_user']:.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("--metrics", default="hit@5,ndcg@5,hit@10")
    ap.add_argument("--baseline", default="student")
    ap.add_argument("--test-metric", help="the metric of the paired test (default: the first of --metrics)")
    ap.add_argument("--ensemble", action="store_true", help="evaluate the teacher set's ensemble too "
                    "(needs DISTILLREC_DATA_DIR)")
    args = ap.parse_args()
    metrics = args.metrics.split(",")
    tm = args.test_metric or metrics[0]
    methods = {d.name: seeds_of(d) for d in sorted(args.root.iterdir()) if d.is_dir() and d.name != "teachers"}
    methods = {k: v for k, v in methods.items() if v}
    base = methods.get(args.baseline, {})
    head = ["method", "seeds", *metrics, f"p vs {args.baseline} ({tm})", "best epoch", "s / epoch",
            "parameters", "ms / user"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *teacher_rows(args.root, metrics)]
    if args.ensemble:
        lines.append(ensemble_row(args.root, metrics))
    for name, runs in methods.items():
        seeds = sorted(runs)
        cells = [fmt([runs[s]["test"][m] for s in seeds]) for m in metrics]
        common = [s for s in seeds if s in base]
        p = "—"
        if name != args.baseline and len(common) >= 2:
            a = [runs[s]["test"][tm] for s in common]
            b = [base[s]["test"][tm] for s in common]
            p = f"{stats.ttest_rel(a, b).pvalue:.3g} (n={len(common)})"
        tr = [runs[s]["train"] for s in seeds]
        lines.append(f"| {name} | {','.join(map(str, seeds))} | " + " | ".join(cells) + f" | {p} | "
                     f"{'/'.join(str(t['best_epoch']) for t in tr)} | "
                     f"{np.mean([t['seconds_per_epoch'] for t in tr]):.3f} | {runs[seeds[0]]['parameters']:,} | "
                     f"{np.mean([r['latency_ms_per_user'] for r in runs.values()]):.4f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
