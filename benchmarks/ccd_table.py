"""CCD against its continual baselines on one stream: H-mean per block, final LA/RA/H, and cost per block.

Reads the directories that ``distillrec stream --method M --seed 0 --seed 1 --seed 2 --out ROOT/M`` wrote
(one per method, each with ``seed<N>/results.json``) and prints Markdown tables:

1. H-mean of the primary metric after every block k ≥ 1, mean ± std over seeds, teacher and student, with
   the best continual baseline per block and whether CCD beats it (the issue's criterion from D2 on);
2. final LA / RA / H per method;
3. cost: mean seconds per incremental block (D1…Dn; D0 is shared) and CCD's time ÷ each baseline's, and the
   student's parameters ÷ the teacher system's.

    .venv/bin/python benchmarks/ccd_table.py runs/ccd/ml100k-v2 [--metric recall@20] [--json] \
        [--latency ml-100k --config configs/ccd/ml100k.yaml]

``--latency`` also times full-ranking scoring of every user at the last block's size, the student against the
teacher system (every member scored, then the rank ensemble), in one process, best of 5.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillrec.continual.metrics import matrix_from_rows, stream_summary

METHODS = ("ccd", "finetune", "lwckd", "once", "retrain")
# continual baselines: "once" is the never-updated student and "retrain" the from-scratch reference on all data
# so far (CCD's gap to it is printed on its own row)
CONTINUAL = ("finetune", "lwckd")


def load(root: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for m in METHODS:
        runs = [json.loads(p.read_text()) for p in sorted((root / m).glob("seed*/results.json"))]
        runs = [r for r in runs if r.get("blocks_done") == r.get("n_blocks")]
        if runs:
            out[m] = runs
    return out


def per_block_h(run: dict[str, Any], model: str, metric: str) -> list[float]:
    rows = run["models"][model]["r"][metric]
    return stream_summary(matrix_from_rows(rows, run["n_blocks"]))["per_block"]["H"]


def fmt(values: list[float], d: int = 4) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.{d}f} ± {a.std():.{d}f}" if len(a) > 1 else f"{a.mean():.{d}f}"


def h_table(data: dict[str, list[dict[str, Any]]], model: str, metric: str) -> tuple[str, dict[str, Any]]:
    n = next(iter(data.values()))[0]["n_blocks"]
    hs = {m: np.array([per_block_h(r, model, metric) for r in runs]) for m, runs in data.items()}  # [seeds, blocks]
    means = {m: h.mean(axis=0) for m, h in hs.items()}
    head = ["method", *(f"D{k}" for k in range(1, n))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, h in hs.items():
        lines.append(f"| {m} (seeds {len(h)}) | " + " | ".join(fmt(h[:, k]) for k in range(1, n)) + " |")
    verdict: dict[str, Any] = {}
    if "ccd" in means:
        base = [m for m in CONTINUAL if m in means]
        if base:
            best = [max(base, key=lambda b, k=k: means[b][k]) for k in range(n)]
            cells = []
            for k in range(1, n):
                gap = means["ccd"][k] - means[best[k]][k]
                verdict[f"D{k}"] = {"best_baseline": best[k], "gap": round(float(gap), 4)}
                cells.append(f"{gap:+.4f} vs {best[k]}")
            lines.append("| CCD − best continual baseline | " + " | ".join(cells) + " |")
        if "retrain" in means:
            lines.append("| CCD − retrain | " + " | ".join(f"{means['ccd'][k] - means['retrain'][k]:+.4f}"
                                                        for k in range(1, n)) + " |")
    return "\n".join(lines), verdict


def parameters(entry: dict[str, Any]) -> int | None:
    """A model's parameters at the last block (a per-block list in a seed's results, one number otherwise)."""
    p = entry.get("parameters")
    return p[-1] if isinstance(p, list) else p


def final_table(data: dict[str, list[dict[str, Any]]], metric: str) -> str:
    lines = ["| method | model | LA | RA | H-mean | parameters |", "|---|---|---|---|---|---|"]
    for m, runs in data.items():
        for model in ("teacher", "student"):
            s = [r["models"][model]["summary"][metric] for r in runs]
            params = parameters(runs[0]["models"][model])
            lines.append(f"| {m} | {model} | {fmt([x['LA'] for x in s])} | {fmt([x['RA'] for x in s])} | "
                         f"{fmt([x['H'] for x in s])} | {f'{params:,}' if params else '—'} |")
    return "\n".join(lines)


def block_seconds(run: dict[str, Any]) -> float:
    """Mean wall seconds of the incremental blocks D1…Dn (D0's base training is shared by every method)."""
    return float(np.mean([t["seconds"] for t in run["timing"] if t["block"] > 0]))


def cost_table(data: dict[str, list[dict[str, Any]]]) -> str:
    secs = {m: [block_seconds(r) for r in runs] for m, runs in data.items()}
    ccd = np.mean(secs["ccd"]) if "ccd" in secs else None
    lines = ["| method | s / incremental block | CCD ÷ this |", "|---|---|---|"]
    for m, s in secs.items():
        ratio = f"{ccd / np.mean(s):.2f}" if ccd is not None and m != "ccd" else "—"
        lines.append(f"| {m} | {fmt(s, 1)} | {ratio} |")
    return "\n".join(lines)


def scoring_latency(dataset: str, config: Path, repeats: int = 5, batch: int = 256) -> dict[str, float]:
    """ms per user to score every item and take the top-20 (``report.latency``, the library's serving
    measure): the student vs the teacher system (untrained weights: the cost does not depend on them), at the
    last block's numbers of users and items."""
    from distillrec.continual import resolve_stream_config
    from distillrec.continual.driver import as_stream
    from distillrec.continual.ensemble import RankEnsemble
    from distillrec.continual.stages import build_model
    from distillrec.report.latency import scoring_latency as latency

    cfg = resolve_stream_config(config_file=config, overrides=["device=cpu"])
    stream = as_stream(dataset, cfg)
    last = stream.n_blocks - 1
    nu, ni = stream.sizes(last)
    graph, dev = stream.history(last), torch.device("cpu")
    view = stream.view(last, train="history")
    teachers = [build_model(spec, nu, ni, graph, i, dev) for i, spec in enumerate(cfg.teachers)]
    models = {"student": build_model(cfg.student, nu, ni, graph, 0, dev),
              "teacher system": RankEnsemble(teachers, cfg.ensemble_beta)}
    return {name: latency(m, view, n_users=nu, batch_size=batch, repeats=repeats) for name, m in models.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="directory with one sub-directory per method")
    ap.add_argument("--metric", default="recall@20")
    ap.add_argument("--json", action="store_true", help="print the per-block verdicts as JSON too")
    ap.add_argument("--latency", metavar="DATASET", help="time scoring: student vs teacher system")
    ap.add_argument("--config", type=Path, help="the stream config of the runs (for --latency)")
    args = ap.parse_args()
    data = load(args.root)
    if not data:
        raise SystemExit(f"{args.root}: no finished stream runs (METHOD/seed<N>/results.json)")
    verdicts = {}
    for model in ("teacher", "student"):
        table, verdicts[model] = h_table(data, model, args.metric)
        print(f"\n{model}: H-mean of {args.metric} after each block\n\n{table}")
    print(f"\nfinal LA / RA / H-mean ({args.metric})\n\n{final_table(data, args.metric)}")
    print(f"\ncost per incremental block (wall clock)\n\n{cost_table(data)}")
    if "ccd" in data:
        p = data["ccd"][0]["models"]
        ps, pt = parameters(p["student"]), parameters(p["teacher"])
        if ps and pt:
            print(f"\nstudent parameters ÷ teacher system's (last block): {ps:,} ÷ {pt:,} = {ps / pt:.3f}")
    if args.latency:
        lat = scoring_latency(args.latency, args.config)
        print(f"\nscoring latency per user (ms, all items + top-20, 1 process, best of 5): student "
              f"{lat['student']:.4f}, teacher system {lat['teacher system']:.4f} → student ÷ teacher system "
              f"{lat['student'] / lat['teacher system']:.3f}")
    if args.json:
        print(json.dumps(verdicts, indent=1))


if __name__ == "__main__":
    main()
