"""Teacher knowledge for a teacher whose scores are not representation products: one pass vs a pass per item block.

A rank ensemble (CCD's teacher system, HetComp's ensemble) or NeuMF cannot score "all users for a block of items"
more cheaply than scoring every item for those users, so the item-side top-N users per item used to cost a full
ensemble pass per block of items (distillrec up to session 7: ``teacher.score(all_users, items)`` per block,
kept here as the baseline), on top of the user-side pass. ``compute_knowledge`` now builds both sides from one
pass over user blocks, keeping every item's running top-N users. Both are exact; the lists are compared.

The teacher is a rank ensemble of trained models from run directories (any mix), the spec CCD's (top-40 both
sides). Both paths use the same threads (all cores) and block size.

    DISTILLREC_DATA_DIR=../shared/data .venv/bin/python benchmarks/knowledge_one_pass.py \
        --runs runs/citeulike/bpr,runs/citeulike/lightgcn,runs/citeulike/neumf
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from torch import Tensor

from distillrec.continual.ensemble import RankEnsemble
from distillrec.distill import knowledge as kn
from distillrec.distill.knowledge import KnowledgeSpec, compute_knowledge
from distillrec.train.runs import load_run


@torch.no_grad()
def per_item_block(teacher, dataset, spec: KnowledgeSpec, chunk_elems: int) -> tuple[Tensor, ...]:
    """The session-7 path: user side by blocks of users, item side by blocks of items, each block scored
    for every user through ``teacher.score``."""
    n_users, n_items = dataset.n_users, dataset.n_items
    device = teacher.device
    workers = os.cpu_count() or 1
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    all_users = torch.arange(n_users, device=device)

    def item_block(items: Tensor) -> Tensor:
        return teacher.score(all_users, items.expand(n_users, -1)).T

    try:
        u = kn.top_lists(teacher.full_scores, n_users, n_items, dataset.train, spec.n_user_topk, chunk_elems, device,
                      workers)[0]
        i = kn.top_lists(item_block, n_items, n_users, dataset.train.T.tocsr(), spec.n_item_topk, chunk_elems, device,
                      workers)[0]
    finally:
        torch.set_num_threads(saved)
    return (*u, *i)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", required=True, help="comma-separated run directories: the ensemble's members")
    ap.add_argument("--topk", type=int, default=40)
    ap.add_argument("--chunk-elems", type=int, default=kn.DEFAULT_CHUNK_ELEMS)
    args = ap.parse_args()
    runs = [load_run(r, device="cpu") for r in args.runs.split(",")]
    dataset = runs[0].dataset
    teacher = RankEnsemble([r.model for r in runs])
    teacher.prepare_eval(dataset, "valid")
    spec = KnowledgeSpec(n_user_topk=args.topk, n_item_topk=args.topk)

    t0 = time.perf_counter()
    new = compute_knowledge(teacher, dataset, spec, chunk_elems=args.chunk_elems, item_side="full_scores")
    t_new = time.perf_counter() - t0
    t0 = time.perf_counter()
    u_ids, u_vals, i_ids, i_vals = per_item_block(teacher, dataset, spec, args.chunk_elems)
    t_old = time.perf_counter() - t0
    same = (torch.equal(u_ids, new.user_topk) and torch.equal(u_vals, new.user_topk_scores)
            and torch.equal(i_ids, new.item_topk)
            and torch.equal(i_vals, new.item_topk_scores))
    step = max(1, args.chunk_elems // dataset.n_users)
    result = {
        "setting": f"{dataset.name}: {dataset.n_users} users × {dataset.n_items} items; rank ensemble of "
                   f"{[r.model.name for r in runs]}; top-{args.topk} both sides; {-(-dataset.n_items // step)} "
                   "item blocks on the old path",
        "seconds_per_item_block_path": round(t_old, 1),
        "seconds_one_pass": round(t_new, 1),
        "speedup": round(t_old / t_new, 2),
        "identical_lists": same,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }
    print(json.dumps(result, indent=2))
    if not same:
        raise SystemExit("the two paths disagree")


if __name__ == "__main__":
    main()
