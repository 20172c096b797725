"""Results of a stream run: the r(k, j) matrices, LA/RA/H summaries, new-user results, plots and report.md.

Plots are matplotlib ``Figure`` objects (no pyplot, no global state), as in ``distillrec.report.plots``:
:func:`heatmap_figure` draws r(k, j) per model, :func:`summary_figure` LA/RA/H-mean after each block.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from distillrec.continual.config import StreamConfig
from distillrec.continual.metrics import matrix_from_rows, stream_summary
from distillrec.continual.stream import Stream
from distillrec.utils import atomic_write, atomic_write_json, atomic_write_text

DEFINITIONS = ("r(k, j): the model after block k on block j's test (full ranking; block j's train and valid "
               "masked). LA_k = mean_{i=1..k} r(i, i); RA_k = mean_{i=1..k} mean_{j<i} r(i, j) (D0 included "
               "unless include_base is off); H = 2·LA·RA/(LA+RA).")


def clean_nans(obj: Any) -> Any:
    """NaN → None everywhere (JSON has no NaN)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: clean_nans(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_nans(v) for v in obj]
    return obj


def _metrics_of(blocks: list[dict[str, Any]]) -> list[str]:
    first = blocks[0]["eval"]
    role = next(iter(first))
    return [m for m in first[role]["blocks"][0] if "@" in m]


def assemble_results(stream: Stream, method: str, seed: int, cfg: StreamConfig,
                     blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """results.json of one run from its per-block records."""
    out: dict[str, Any] = {"dataset": stream.name, "method": method, "seed": seed, "n_blocks": stream.n_blocks,
                           "blocks_done": len(blocks), "primary": cfg.eval.primary, "definitions": DEFINITIONS,
                           "stream": stream.stats(), "models": {}, "timing": []}
    if not blocks:
        return out
    metrics = _metrics_of(blocks)
    for role in blocks[0]["eval"]:
        rows = {m: [[b[m] for b in rec["eval"][role]["blocks"]] for rec in blocks] for m in metrics}
        entry: dict[str, Any] = {"r": rows, "summary": {}, "new_users": {}, "parameters": []}
        for m in metrics:
            r = matrix_from_rows(rows[m], stream.n_blocks)
            entry["summary"][m] = stream_summary(r, cfg.eval.include_base)
            entry["new_users"][m] = [rec["eval"][role].get("new_users", {}).get(m) for rec in blocks]
        entry["parameters"] = [rec["eval"][role]["parameters"] for rec in blocks]
        out["models"][role] = entry
    out["timing"] = [{"block": rec["block"], "seconds": rec["seconds"], "stages": _stage_seconds(rec["stages"])}
                     for rec in blocks]
    return out


def _stage_seconds(stages: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten the per-stage training records to {stage: seconds}."""
    out: dict[str, float] = {}
    for name, value in stages.items():
        if isinstance(value, dict) and "seconds" in value:
            out[prefix + name] = value["seconds"]
        elif isinstance(value, dict):
            out.update(_stage_seconds(value, f"{prefix}{name}/"))
    return out


# -- figures --------------------------------------------------------------------------------------------------
def heatmap_figure(matrices: dict[str, np.ndarray], metric: str, title: str = "") -> Figure:
    """One r(k, j) heat-map per model (rows: after block k; columns: tested on block j)."""
    fig = Figure(figsize=(4.4 * len(matrices), 3.8), layout="constrained")
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    finite = [v for r in matrices.values() for v in np.ravel(r) if np.isfinite(v)]
    vmax = max(finite) if finite else 1.0
    for ax, (role, r) in zip(axes, matrices.items()):
        im = ax.imshow(np.ma.masked_invalid(r), cmap="viridis", vmin=0, vmax=vmax or 1.0)
        for (k, j), v in np.ndenumerate(r):
            if np.isfinite(v):
                ax.text(j, k, f"{v:.3f}", ha="center", va="center", fontsize=7,
                        color="white" if v < 0.6 * (vmax or 1.0) else "black")
        ax.set_xticks(range(r.shape[1]), [f"D{j}" for j in range(r.shape[1])])
        ax.set_yticks(range(r.shape[0]), [f"D{k}" for k in range(r.shape[0])])
        ax.set_xlabel("tested on block j")
        ax.set_ylabel("after block k")
        ax.set_title(f"{role}: {metric}")
        fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title)
    return fig


def summary_figure(summaries: dict[str, dict[str, Any]], metric: str, title: str = "") -> Figure:
    """LA, RA and H-mean after each block, one panel per model."""
    fig = Figure(figsize=(4.2 * len(summaries), 3.4), layout="constrained")
    axes = fig.subplots(1, len(summaries), squeeze=False)[0]
    for ax, (role, s) in zip(axes, summaries.items()):
        per = s["per_block"]
        x = list(range(1, len(per["LA"])))
        for name, style in (("LA", "o-"), ("RA", "s-"), ("H", "^--")):
            ax.plot(x, per[name][1:], style, markersize=4, label=name)
        ax.set_xticks(x, [f"D{k}" for k in x])
        ax.set_xlabel("after block")
        ax.set_ylabel(metric)
        ax.set_title(role)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120, bbox_inches="tight"))
    return path


# -- writing --------------------------------------------------------------------------------------------------
def _fmt(v: Any, std: Any = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def write_outputs(results: dict[str, Any], out: Path) -> None:
    metric = results["primary"]
    atomic_write_json(out / "results.json", results)
    models = results["models"]
    mats = {role: matrix_from_rows(e["r"][metric], results["n_blocks"]) for role, e in models.items()}
    title = f"{results['dataset']} — {results['method']} (seed {results['seed']})"
    _save(heatmap_figure(mats, metric, title), out / "r_heatmap.png")
    _save(summary_figure({role: e["summary"][metric] for role, e in models.items()}, metric, title),
          out / "la_ra.png")
    atomic_write_text(out / "report.md", report_markdown(results))


def report_markdown(results: dict[str, Any]) -> str:
    metric = results["primary"]
    lines = [f"# {results['dataset']}: {results['method']} (seed {results['seed']})", "", DEFINITIONS, "",
             f"## Summary ({metric})", "", "| model | LA | RA | H-mean | parameters (last block) |",
             "|---|---|---|---|---|"]
    for role, e in results["models"].items():
        s = e["summary"][metric]
        lines.append(f"| {role} | {_fmt(s['LA'])} | {_fmt(s['RA'])} | {_fmt(s['H'])} | {e['parameters'][-1]:,} |")
    for role, e in results["models"].items():
        n = len(e["r"][metric])
        lines += ["", f"## {role}: r(k, j), {metric}", "",
                  "| after \\ on | " + " | ".join(f"D{j}" for j in range(n)) + " | new users |",
                  "|---" * (n + 2) + "|"]
        for k, row in enumerate(e["r"][metric]):
            cells = [_fmt(v) for v in row] + [""] * (n - len(row))
            lines.append(f"| D{k} | " + " | ".join(cells) + f" | {_fmt(e['new_users'][metric][k])} |")
    lines += ["", "## Time per block (s)", "", "| block | total | stages |", "|---|---|---|"]
    for t in results["timing"]:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in t["stages"].items())
        lines.append(f"| D{t['block']} | {t['seconds']:.1f} | {stages} |")
    return "\n".join(lines) + "\n"


def aggregate_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of LA/RA/H and of r(k, j), per model and metric."""
    first = runs[0]
    agg: dict[str, Any] = {"dataset": first["dataset"], "method": first["method"], "primary": first["primary"],
                           "seeds": [r["seed"] for r in runs], "n_blocks": first["n_blocks"],
                           "definitions": DEFINITIONS, "models": {}}
    for role, e in first["models"].items():
        entry: dict[str, Any] = {}
        for m in e["summary"]:
            vals = {key: np.array([r["models"][role]["summary"][m][key] for r in runs], dtype=float)
                    for key in ("LA", "RA", "H")}
            mats = np.stack([matrix_from_rows(r["models"][role]["r"][m], first["n_blocks"]) for r in runs])
            entry[m] = {key: {"mean": float(np.mean(v)), "std": float(np.std(v))} for key, v in vals.items()}
            entry[m]["r_mean"] = clean_nans(np.mean(mats, axis=0).tolist())  # NaN above the diagonal
        entry["parameters"] = e["parameters"][-1]
        agg["models"][role] = entry
    agg["seconds_total"] = [sum(t["seconds"] for t in r["timing"]) for r in runs]
    return agg


def write_aggregate(agg: dict[str, Any], out: Path) -> None:
    atomic_write_json(out / "results.json", clean_nans(agg))
    metric = agg["primary"]
    lines = [f"# {agg['dataset']}: {agg['method']}, seeds {agg['seeds']}", "", DEFINITIONS, "",
             "| model | metric | LA | RA | H-mean |", "|---|---|---|---|---|"]
    for role, e in agg["models"].items():
        for m, s in e.items():
            if isinstance(s, dict) and "LA" in s:
                cells = " | ".join(_fmt(s[x]["mean"], s[x]["std"]) for x in ("LA", "RA", "H"))
                lines.append(f"| {role} | {m} | {cells} |")
    lines += ["", f"Per-seed runs: {', '.join(f'seed{s}/report.md' for s in agg['seeds'])}; primary metric {metric}."]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
