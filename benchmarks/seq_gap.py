"""Where a sequential student loses to its teacher: per-user NDCG@K on one split, paired, in thirds of the
users by history length and by the target item's training popularity.

A test split of ~1,000 users (LastFM) gives a mean NDCG@10 a standard error near 0.004, the same size as the
differences between students, so the paired difference and its standard error come first; the buckets say
whether the gap sits on long histories or rare targets (what a wider student or a longer finetune can fix)
or everywhere.

    DISTILLREC_DATA_DIR=../shared/data .venv/bin/python benchmarks/seq_gap.py \\
        --teacher runs/adarec/lastfm/teacher --student runs/adarec/lastfm/nas-w64-e100/retrain
"""

from __future__ import annotations

import argparse
from itertools import pairwise

import numpy as np
import torch

from distillrec.evaluate import evaluate_full
from distillrec.train.runs import load_run


def thirds(key: np.ndarray) -> list[tuple[float, float, np.ndarray]]:
    edges = np.quantile(key, [0, 1 / 3, 2 / 3, 1])
    return [(lo, hi, (key >= lo) & (key <= hi)) for lo, hi in pairwise(edges)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--split", default="test", choices=["valid", "test"])
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    teacher = load_run(args.teacher)
    data = teacher.dataset
    student = load_run(args.student, data)
    key = f"ndcg@{args.k}"
    res_t = evaluate_full(teacher.model, data, split=args.split, ks=(args.k,))
    res_s = evaluate_full(student.model, data, split=args.split, ks=(args.k,))
    users, t, s = res_t.users, res_t.per_user[key], res_s.per_user[key]
    diff = t - s
    print(f"{data.name} {args.split}: {len(users)} users; {key} teacher {t.mean():.4f}, student {s.mean():.4f} "
          f"({100 * s.mean() / t.mean():.1f} %); teacher − student {diff.mean():.4f} ± "
          f"{diff.std(ddof=1) / np.sqrt(len(diff)):.4f} (paired standard error)")
    history = np.array([len(h) for h in data.history(args.split)])[users]
    target = data.split(args.split)
    first_target = target.indices[target.indptr[users]]  # leave-one-out: one held-out item per user
    popularity = np.asarray(data.train.sum(0)).ravel()[first_target]
    for name, values in (("history length", history), ("target's training interactions", popularity)):
        print(f"  by {name}:")
        for lo, hi, m in thirds(values):
            print(f"    [{lo:.0f}, {hi:.0f}]  n = {m.sum():4d}  teacher {t[m].mean():.4f}  student {s[m].mean():.4f}")


if __name__ == "__main__":
    main()
