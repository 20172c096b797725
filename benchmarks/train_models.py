"""Every model on one data set from its preset: accuracy, size and epoch time in one table.

For each model it trains ``configs/<dataset>/<model>.yaml`` into ``runs/<dataset>/<model>`` (the same thing as
``distillrec train --config configs/<dataset>/<model>.yaml --out runs/<dataset>/<model>``), one model after the
other, and then prints a Markdown table from the run directories' ``results.json``: the test metrics at the
cut-off, parameters, epochs run / best epoch, seconds per training epoch, and whether the model beats ``pop``.
A model whose run directory already holds ``results.json`` is not trained again; an interrupted one is resumed.

    DISTILLREC_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_models.py \
        --dataset ml-100k [--models pop,bpr,lightgcn,neumf,cml,vae,iae] [--k 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from distillrec.train.runs import train

CF_MODELS = ("pop", "bpr", "lightgcn", "neumf", "cml", "vae", "iae")


def run_model(dataset: str, model: str, configs: Path, runs: Path) -> dict[str, Any]:
    """Train (or reuse, or resume) one preset; returns its results.json plus the wall time spent now."""
    cfg = configs / dataset / f"{model}.yaml"
    out = runs / dataset / model
    done = out / "results.json"
    if done.exists():
        return {**json.loads(done.read_text()), "wall_s": None}
    t = time.perf_counter()
    resume = (out / "checkpoints" / "last.pt").exists()
    train(config_file=cfg, out=out, resume=resume, progress=False,
          echo=lambda msg: print(f"[{model}] {msg}", file=sys.stderr, flush=True))
    return {**json.loads(done.read_text()), "wall_s": round(time.perf_counter() - t, 1)}


def table(rows: list[dict[str, Any]], metrics: list[str]) -> str:
    pop = next((r for r in rows if r["model"] == "pop"), None)
    head = ["model", *metrics, "parameters", "epochs (best)", "s / epoch", "beats pop"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        test = r.get("test", {})
        tr = r.get("train") or {}
        beats = "—" if pop is None or r is pop else (
            "yes" if all(test.get(m, 0) > pop["test"].get(m, 0) for m in metrics) else "**no**")
        epochs = f"{tr.get('epochs_run', 0)} ({tr.get('best_epoch', 0)})" if tr.get("epochs_run") else "—"
        sec = f"{tr['seconds_per_epoch']:.2f}" if tr.get("epochs_run") else "—"
        cells = [r["model"], *(f"{test.get(m, float('nan')):.4f}" for m in metrics),
                 f"{r.get('parameters', 0):,}", epochs, sec, beats]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--models", default=",".join(CF_MODELS), help="comma-separated; presets must exist")
    ap.add_argument("--metrics", default="recall@20,ndcg@20", help="test metrics to tabulate")
    ap.add_argument("--configs", type=Path, default=Path("configs"))
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--json", action="store_true", help="print the rows as JSON after the table")
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    missing = [m for m in models if not (args.configs / args.dataset / f"{m}.yaml").exists()]
    if missing:
        ap.error(f"no preset for {', '.join(missing)} under {args.configs / args.dataset}")
    metrics = [m.strip() for m in args.metrics.split(",")]
    rows = [{**run_model(args.dataset, m, args.configs, args.runs), "model": m} for m in models]
    print(f"{args.dataset}: test split, {rows[0].get('protocol', '?')} protocol; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    print(table(rows, metrics))
    if args.json:
        keep = ("model", "parameters", "train", "valid", "test", "latency_ms_per_user", "wall_s")
        print(json.dumps([{k: r.get(k) for k in keep} for r in rows]))


if __name__ == "__main__":
    main()
