"""The comparison table of ``distillrec run``, for the terminal and for ``report.md``."""

from __future__ import annotations

from typing import Any


def _cells(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    metrics = summary["metrics"]
    multi = any(r["seeds"] > 1 for r in summary["rows"])
    head = ["model", *metrics, "% teacher", "params", "ms/user", "s/epoch", "× student", "p (t-test)"]
    body = []
    for r in summary["rows"]:
        vals = [f"{r[m]:.4f}" + (f" ± {r[m + '_std']:.4f}" if multi and r["seeds"] > 1 else "") for m in metrics]
        vs = r.get("vs_student")
        body.append([
            r["name"],
            *vals,
            f"{100 * r['of_teacher']:.1f}" if r.get("of_teacher") else "",
            f"{r['parameters']:,}",
            f"{r['latency_ms_per_user']:.3f}",
            f"{r['seconds_per_epoch']:.2f}" if r["seconds_per_epoch"] else "",
            f"{r['epoch_time_vs_student']:.2f}" if r.get("epoch_time_vs_student") else "",
            (f"{vs['p_t']:.3g}" + (" *" if vs["p_t"] < 0.05 and vs["mean_diff"] > 0 else "")) if vs else "",
        ])
    return head, body


def terminal_table(summary: dict[str, Any]) -> str:
    head, body = _cells(summary)
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    title = f"{summary['dataset']} — test, {summary['protocol']} protocol"
    lines = [title, fmt(head), "  ".join("-" * w for w in widths), *map(fmt, body)]
    lines.append("* significantly better than the student alone (paired t-test on per-user "
                 f"{summary['metrics'][-1]}, p < 0.05)")
    return "\n".join(lines)


def markdown_table(summary: dict[str, Any]) -> str:
    head, body = _cells(summary)
    lines = [f"# {summary['dataset']}: distillation comparison", "",
             f"Test split, {summary['protocol']} protocol. `% teacher` is the share of the "
             f"{'ensemble' if any(r['name'] == 'ensemble' for r in summary['rows']) else 'teacher'}'s "
             f"{summary['metrics'][-1]}; `× student` is the epoch time relative to the student trained alone; "
             "`p` is a paired t-test against the student alone on per-user values (averaged over seeds).", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines += ["", "![accuracy against size](accuracy_vs_parameters.png)", "",
              "![learning curves](learning_curves.png)", ""]
    return "\n".join(lines)
