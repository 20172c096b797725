"""H-mean of a stream metric after every block, teacher system and student side by side, one line per run
folder (mean over its seeds, a band of ± 1 std): the picture behind BENCHMARKS.md's CCD tables.

Each ``LABEL=DIR`` is a ``distillrec stream`` output folder, with ``seed<N>/results.json`` per seed or a
single ``results.json``; unfinished runs are skipped.

    .venv/bin/python benchmarks/ccd_plot.py --out benchmarks/results/ccd-ml100k-variants.png \
        "ccd (authors')=runs/ccd/ml100k-v4/ccd" "finetune=runs/ccd/ml100k-v4/finetune" ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from distillrec.continual.metrics import matrix_from_rows, stream_summary
from distillrec.utils import atomic_write


def finished_runs(folder: Path) -> list[dict]:
    paths = sorted(folder.glob("seed*/results.json")) or [folder / "results.json"]
    runs = [json.loads(p.read_text()) for p in paths if p.exists()]
    return [r for r in runs if r.get("blocks_done") == r.get("n_blocks")]


def h_per_block(run: dict, role: str, metric: str) -> np.ndarray:
    """H-mean after blocks 1..n−1 (block 0 has no past)."""
    r = matrix_from_rows(run["models"][role]["r"][metric], run["n_blocks"])
    return np.asarray(stream_summary(r)["per_block"]["H"][1:], dtype=float)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="LABEL=DIR")
    ap.add_argument("--metric", default="recall@20")
    ap.add_argument("--out", required=True, help="PNG file")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for spec in args.runs:
        label, _, folder = spec.partition("=")
        if not folder:
            ap.error(f"expected LABEL=DIR, got {spec!r}")
        runs = finished_runs(Path(folder))
        if not runs:
            print(f"skipped {label}: no finished run in {folder}")
            continue
        for ax, role in zip(axes, ("teacher", "student")):
            h = np.stack([h_per_block(r, role, args.metric) for r in runs])  # [seeds, blocks]
            blocks = np.arange(1, h.shape[1] + 1)
            line, = ax.plot(blocks, h.mean(0), marker="o", label=f"{label} ({len(runs)} seed{'s' * (len(runs) > 1)})")
            if len(runs) > 1:
                ax.fill_between(blocks, h.mean(0) - h.std(0), h.mean(0) + h.std(0), color=line.get_color(),
                                alpha=0.15)
    n = max((len(line.get_xdata()) for ax in axes for line in ax.get_lines()), default=0)
    for ax, role in zip(axes, ("teacher system", "student")):
        ax.set_title(role)
        ax.set_xticks(range(1, n + 1), [f"D{k}" for k in range(1, n + 1)])
        ax.set_xlabel("after block")
        ax.set_ylabel(f"H-mean of {args.metric}")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    atomic_write(args.out, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
