"""Plots: learning curves from a run's log, accuracy against size for a comparison."""

from __future__ import annotations

import json
from pathlib import Path

# Figure objects without pyplot: no GUI backend, no global state, safe on servers and in threads.
from matplotlib.figure import Figure

from distillrec.utils import atomic_write


def _figure(width: float, height: float):
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def _save(fig: Figure, path: Path) -> Path:
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120, bbox_inches="tight"))
    return path


def plot_learning_curve(log_path: str | Path, out_png: str | Path, metric: str) -> Path | None:
    """Training loss per epoch (left axis) and the validation metric (right axis)."""
    log_path = Path(log_path)
    if not log_path.exists():
        return None
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not records:
        return None
    fig, ax = _figure(6.4, 3.8)
    epochs = [r["epoch"] for r in records]
    for term in records[-1]["loss"]:
        ax.plot(epochs, [r["loss"].get(term) for r in records], label=f"loss: {term}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    valid = [(r["epoch"], r["valid"][metric]) for r in records if metric in r.get("valid", {})]
    if valid:
        ax2 = ax.twinx()
        ax2.plot(*zip(*valid), color="black", marker="o", markersize=3, label=f"valid {metric}")
        ax2.set_ylabel(f"valid {metric}")
        ax2.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(log_path.parent.name)
    return _save(fig, Path(out_png))


def plot_accuracy_vs_size(rows: list[dict], metric: str, out_png: str | Path, title: str = "") -> Path:
    """One point per model: parameters (log x) against ``metric``; labels name the method."""
    fig, ax = _figure(6.4, 4.2)
    for row in rows:
        x, y = row["parameters"], row[metric]
        ax.scatter([x], [y], s=40)
        err = row.get(f"{metric}_std")
        if err:
            ax.errorbar([x], [y], yerr=[err], fmt="none", capsize=3, color="grey")
        ax.annotate(row["name"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"{metric} against model size")
    return _save(fig, Path(out_png))


def plot_learning_curves(logs: dict[str, str | Path], metric: str, out_png: str | Path) -> Path | None:
    """The validation metric per epoch of several runs on one axis (from their ``log.jsonl``)."""
    fig, ax = _figure(6.4, 4.2)
    drawn = 0
    for label, path in logs.items():
        path = Path(path)
        if not path.exists():
            continue
        points = [(r["epoch"], r["valid"][metric]) for r in map(json.loads, path.read_text().splitlines())
                  if metric in r.get("valid", {})]
        if points:
            ax.plot(*zip(*points), marker=".", markersize=3, label=label)
            drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"valid {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, Path(out_png))
