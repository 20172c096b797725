"""HetComp's distillation step: the fused masked log-sum-exp (what ``HetComp`` runs) ÷ autograd's
masked_fill + logsumexp it replaced, and both ÷ the plain student's BPR step; one process, same batches.

Setting: a trained teacher set (default: the ml-100k set of the HetComp table), student MF dim 6, Adam,
batches of 1,024 interactions, each batch's unique users scored against every item (the exact full-item
tails of the authors' losses). Rounds alternate plain, old, new; the table gives medians over rounds of the
pure step time of one epoch (no evaluation, no batch building), for phase 1 and phase 2. ``--tail-samples M``
adds the opt-in sampled tail (``tail_samples: M``: K + K_o + M scores per user instead of every item).

    DISTILLREC_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hetcomp_step.py \\
        [--teachers runs/hetcomp/ml-100k/teachers] [--dataset ml-100k] [--rounds 5] [--tail-samples 256]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import distillrec.distill.hetcomp as hc
from distillrec.data import load_dataset
from distillrec.models.bpr import BPR
from distillrec.train.batches import BatchBuilder


def autograd_tail(scores: torch.Tensor, train_mask: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """The replaced tail: masked_fill then torch.logsumexp, differentiated by autograd."""
    excluded = train_mask.clone()
    excluded.scatter_(1, top, True)
    return torch.logsumexp(scores.masked_fill(excluded, float("-inf")), dim=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", default="runs/hetcomp/ml-100k/teachers")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tail-samples", type=int, default=None, help="also time the sampled tail with M draws")
    args = ap.parse_args()
    ds = load_dataset(args.dataset)
    torch.manual_seed(0)
    student = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=6))
    method = hc.HetComp.from_teacher_set(student, args.teachers, ds, {})
    sampled = (hc.HetComp.from_teacher_set(student, args.teachers, ds, {"tail_samples": args.tail_samples})
               if args.tail_samples else None)
    batches = list(BatchBuilder(ds, "pairwise", 1024, 1).epoch(torch.Generator().manual_seed(0)))
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    fused = hc._tail_logsumexp

    def epoch(kd: bool, m: hc.HetComp = method) -> float:
        t0 = time.perf_counter()
        for b in batches:
            opt.zero_grad()
            loss = sum(m.kd_terms(b).values()) if kd else student.loss(b)
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    print(f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"{args.dataset}: {len(batches)} batches, {ds.n_items} items; {args.rounds} rounds")
    extra = f" sampled (M = {args.tail_samples}) s | sampled ÷ plain |" if sampled is not None else ""
    print(f"| phase | plain s | autograd s | fused s | autograd ÷ plain | fused ÷ plain | autograd ÷ fused |{extra}")
    print("|---|---|---|---|---|---|---|" + ("---|---|" if sampled is not None else ""))
    for phase in (1, 2):
        method.dkc_state[0] = phase
        if sampled is not None:
            sampled.dkc_state[0] = phase
        times: dict[str, list[float]] = {"plain": [], "autograd": [], "fused": [], "sampled": []}
        for _ in range(args.rounds):
            times["plain"].append(epoch(False))
            hc._tail_logsumexp = autograd_tail
            times["autograd"].append(epoch(True))
            hc._tail_logsumexp = fused
            times["fused"].append(epoch(True))
            if sampled is not None:
                times["sampled"].append(epoch(True, sampled))
        m = {k: statistics.median(v) for k, v in times.items() if v}
        ratios = (m["autograd"] / m["plain"], m["fused"] / m["plain"], m["autograd"] / m["fused"])
        row = (f"| {phase} | {m['plain']:.3f} | {m['autograd']:.3f} | {m['fused']:.3f} "
               f"| {ratios[0]:.1f} | {ratios[1]:.1f} | {ratios[2]:.2f} |")
        if sampled is not None:
            row += f" {m['sampled']:.3f} | {m['sampled'] / m['plain']:.1f} |"
        print(row)


if __name__ == "__main__":
    main()
