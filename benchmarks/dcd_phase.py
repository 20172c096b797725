"""Validation accuracy of DCD runs by the epoch's position in the discrepancy-refresh cycle.

DCD recomputes the student's ranks inside the teacher's lists (the weights its samples are drawn from) every
``refresh_every`` epochs; the epochs in between sample from ranks that are one or two epochs stale. This reads
each run's ``log.jsonl`` and resolved ``config.yaml`` and prints, per window of epochs, the mean and best of
the validation metric at each phase (0 = the epoch that refreshed), and draws the curves with the refresh
epochs marked, so a run that oscillates with the cycle shows it.

    .venv/bin/python benchmarks/dcd_phase.py runs/citeulike-loo/kd-neumf/dcd/seed-1 \
        runs/citeulike-loo/kd-neumf-refresh1/dcd/seed-1 --metric hit@5 --png dcd_phase.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import yaml
from matplotlib.figure import Figure

from distillrec.distill.dcd import DCDConfig


def read_run(path: Path, metric: str) -> tuple[int, list[tuple[int, float, float]]]:
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    every = int(cfg.get("distill", {}).get("refresh_every", DCDConfig().refresh_every))  # unset = the default
    rows = []
    for line in (path / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        if metric in r.get("valid", {}):
            rows.append((r["epoch"], r["valid"][metric], r.get("seconds", float("nan"))))
    return every, rows


def phase_table(every: int, rows: list[tuple[int, float, float]], windows: list[int]) -> list[str]:
    out = []
    edges = [1, *windows, max(e for e, _, _ in rows) + 1]
    for lo, hi in pairwise(edges):
        by: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for epoch, value, seconds in rows:
            if lo <= epoch < hi:
                by[(epoch - 1) % every].append((value, seconds))  # the trainer's epochs are 1-based
        cells = [f"phase {p}: mean {sum(v for v, _ in xs) / len(xs):.4f}, best {max(v for v, _ in xs):.4f}, "
                 f"{sum(s for _, s in xs) / len(xs):.1f} s" for p, xs in sorted(by.items())]
        if cells:
            out.append(f"  epochs {lo}-{hi - 1}: " + "; ".join(cells))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="DCD run directories (log.jsonl + config.yaml)")
    ap.add_argument("--metric", default="hit@5")
    ap.add_argument("--windows", default="30,100", help="epoch boundaries of the summary windows")
    ap.add_argument("--png", type=Path, help="draw the curves here")
    args = ap.parse_args()
    windows = [int(x) for x in args.windows.split(",") if x]
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    for path in args.runs:
        every, rows = read_run(path, args.metric)
        print(f"{path} (refresh every {every} epochs, {len(rows)} evaluated epochs)")
        if not rows:
            continue
        print("\n".join(phase_table(every, rows, windows)))
        epochs, values = [e for e, _, _ in rows], [v for _, v, _ in rows]
        line, = ax.plot(epochs, values, lw=0.8, label=f"{path} (refresh every {every})")
        if every > 1:
            fresh = [(e, v) for e, v, _ in rows if (e - 1) % every == 0]
            ax.plot(*zip(*fresh, strict=True), ".", ms=3, color=line.get_color())
    if args.png:
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"valid {args.metric}")
        ax.set_title("DCD: validation by refresh phase (dots: the epochs that refreshed)")
        ax.legend(fontsize=7)
        fig.savefig(args.png, dpi=120, bbox_inches="tight")
        print(f"written: {args.png}")


if __name__ == "__main__":
    main()
