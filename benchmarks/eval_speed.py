"""Full-ranking evaluation speed against its lower bound, the bare score matmul.

Ranks every item of a registry data set (default: Gowalla, 29,858 users × 40,981 items) for every test user
with random embeddings, computing Recall/NDCG@20 with ``evaluate_full``, and divides its time by the time of
``U[batch] @ Vᵀ`` over the same user batches and nothing else, measured in the same run (best of N each,
alternated so that background load hits both alike). Target: ratio ≤ 1.5.

    DISTILLREC_DATA_DIR=../shared/data .venv/bin/python benchmarks/eval_speed.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from distillrec.data import load_dataset
from distillrec.evaluate import EvalResult, evaluate_full
from distillrec.evaluate.protocols import default_batch_size


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="gowalla")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=None, help="users per batch (default: evaluate_full's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ds = load_dataset(args.dataset)
    gen = torch.Generator().manual_seed(args.seed)
    user_emb = torch.randn(ds.n_users, args.dim, generator=gen) / args.dim**0.5
    item_emb = torch.randn(ds.n_items, args.dim, generator=gen) / args.dim**0.5
    device = torch.device("cpu")
    batch = args.batch_size or default_batch_size(ds.n_items, device)

    def scores(users: torch.Tensor) -> torch.Tensor:
        return user_emb.index_select(0, users) @ item_emb.T

    users = torch.arange(ds.n_users)

    def run_matmul() -> tuple[float, float, None]:
        t, c = time.perf_counter(), time.process_time()
        for s in range(0, ds.n_users, batch):
            out = scores(users[s : s + batch])
            del out
        return time.perf_counter() - t, time.process_time() - c, None

    def run_eval() -> tuple[float, float, EvalResult]:
        t, c = time.perf_counter(), time.process_time()
        res = evaluate_full(scores, ds, "test", ks=(args.k,), metrics=("recall", "ndcg"), batch_size=batch)
        return time.perf_counter() - t, time.process_time() - c, res

    run_matmul()  # warm-up: first-touch allocations, thread pool start
    t_mm, t_ev, c_mm, c_ev = [], [], [], []
    for _ in range(args.repeats):  # alternated, so that background load hits both alike
        wall, cpu, _ = run_matmul()
        t_mm.append(wall)
        c_mm.append(cpu)
        wall, cpu, res = run_eval()
        t_ev.append(wall)
        c_ev.append(cpu)
    best_mm, best_ev = min(t_mm), min(t_ev)
    out = {
        "dataset": ds.name,
        "n_users": ds.n_users,
        "n_items": ds.n_items,
        "n_users_evaluated": res.n_users_evaluated,
        "dim": args.dim,
        "k": args.k,
        "metrics": res.metrics,
        "batch_size": batch,
        "repeats": args.repeats,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "matmul_s": round(best_mm, 4),
        "eval_s": round(best_ev, 4),
        "ratio": round(best_ev / best_mm, 3),
        "all_matmul_s": [round(x, 4) for x in t_mm],
        "all_eval_s": [round(x, 4) for x in t_ev],
        # CPU time of the process (all threads): less sensitive to other processes than wall time
        "cpu_ratio": round(min(c_ev) / min(c_mm), 3),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"setting : {ds.name} {ds.n_users} users × {ds.n_items} items, random {args.dim}-dim embeddings, "
          f"Recall/NDCG@{args.k}, batch {batch} users, best of {args.repeats}")
    print(f"machine : {out['cpu']}, {out['cores']} cores, torch {out['torch']} with {out['torch_threads']} threads")
    print(f"matmul  : {best_mm:.3f} s   (U[batch] @ Vᵀ only; runs {out['all_matmul_s']})")
    print(f"evaluate: {best_ev:.3f} s   (mask + top-{args.k} + metrics; runs {out['all_eval_s']})")
    print(f"ratio   : {out['ratio']:.3f}   (target ≤ 1.5; CPU-time ratio {out['cpu_ratio']:.3f}, "
          f"load average {out['load_avg_1min']} at the end)")
    print(f"metrics : {res.summary()}")


if __name__ == "__main__":
    main()
