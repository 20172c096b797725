"""Scoring rows against lists, forward + backward: per-pair gathers vs the sampled product vs the dense product.

List distillation scores each row (a user, or an item on the item side) against a list of columns and
backpropagates into both representation tables. Three exact ways: gather the [R, N, d] representations
(the generic path, which LightGCN students took up to session 7: ``score`` on pairs), the sampled
dense-dense product of ``scoring._TableDot``, and the full product rows @ tableᵀ followed by a gather.
``ListScorer`` picks sampled or dense by the share of the table a list covers (``DENSE_FRACTION``).

Shapes are the real ones of each setting (rows per step, list length, table rows, width); the tables are
random, which does not change the cost. Times: best of ``--repeats``, one thread.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/list_scoring.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from distillrec.distill.scoring import DENSE_FRACTION, _TableDot

# (setting, rows per step, list length, table rows, row-table rows, width)
SHAPES = [
    ("CCD Yelp D0 student, item-side pass (11,540 of 12,200 users)", 1024, 11540, 12200, 15000, 8),
    ("CCD Yelp D0 student, user side (10,040 of ~15,000 items)", 900, 10040, 15000, 12200, 8),
    ("RRD citeulike-loo, user side (40 + 40 of 25,181 items)", 700, 80, 25181, 5220, 20),
    ("IR-RRD citeulike-loo, item side (80 of 5,220 users)", 1024, 80, 5220, 25181, 20),
    ("1,000 of 25,181 items, dim 64", 700, 1000, 25181, 5220, 64),
    ("3,000 of 25,181 items (12 %)", 700, 3000, 25181, 5220, 20),
]

WAYS = {
    "gather": lambda row_repr, table, cols: (table[cols] * row_repr.unsqueeze(1)).sum(-1),
    "sampled": lambda row_repr, table, cols: _TableDot.apply(row_repr, table, cols),
    "dense": lambda row_repr, table, cols: (row_repr @ table.T).gather(1, cols),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    rows_out = []
    for label, r, n, n_table, n_row_table, d in SHAPES:
        table = torch.randn(n_table, d, requires_grad=True)
        row_table = torch.randn(n_row_table, d, requires_grad=True)
        rows = torch.randint(0, n_row_table, (r,))
        cols = torch.randint(0, n_table, (r, n))
        weights = torch.randn(r, n)
        best: dict[str, float] = {}
        for _ in range(args.repeats):
            for name, fn in WAYS.items():
                table.grad = row_table.grad = None
                t0 = time.perf_counter()
                (fn(row_table[rows], table, cols) * weights).sum().backward()
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
        picked = "dense" if n >= DENSE_FRACTION * n_table else "sampled"
        best = {k: best[k] for k in WAYS}
        rows_out.append({"setting": label, "ms": {k: round(v * 1000, 1) for k, v in best.items()},
                         "picked": picked, "gather ÷ picked": round(best["gather"] / best[picked], 2),
                         "picked ÷ best": round(best[picked] / min(best.values()), 2)})
    print(json.dumps({"rows": rows_out, "threads": torch.get_num_threads(),
                      "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"}, indent=2))


if __name__ == "__main__":
    main()
