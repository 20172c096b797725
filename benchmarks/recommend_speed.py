"""Serving throughput: top-K for many users with ``Run.recommend_many`` (batched) against a loop of one-user
``Run.recommend`` calls, same run, same process, alternated rounds, best of the rounds.

    DISTILLREC_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recommend_speed.py \
        runs/citeulike-loo/bpr200 [--users 500] [--k 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from distillrec.train.runs import load_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    run = load_run(args.run_dir)
    users = [str(u) for u in run.dataset.user_ids[: args.users]]
    run.recommend_many(users[:8], args.k, progress=False)  # warm-up
    loop, batched = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        one = [run.recommend(u, args.k) for u in users]
        loop.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        table = run.recommend_many(users, args.k, progress=False)
        batched.append(time.perf_counter() - t0)
    assert [item for recs in one for item, _ in recs] == table["item"].tolist(), "the two paths disagree"
    n = len(users)
    print(f"{run.model.name} on {run.dataset.name}: {run.dataset.n_items:,} items, {n} users, top-{args.k}, "
          f"best of {args.rounds} alternated rounds, {torch.get_num_threads()} thread(s)")
    print("| path | ms / user | speed-up |")
    print("|---|---|---|")
    print(f"| one-user `recommend` loop | {1000 * min(loop) / n:.3f} | 1.00× |")
    print(f"| `recommend_many` (batched) | {1000 * min(batched) / n:.3f} | {min(loop) / min(batched):.1f}× |")


if __name__ == "__main__":
    main()
