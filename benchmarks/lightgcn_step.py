"""LightGCN training step: the CSR propagation with its symmetric backward (what ``LightGCN`` runs) ÷ the COO
``torch.sparse.mm`` path it replaced, same model, same batches, one process.

Setting (CCD's Yelp teacher): the yelp-stream base block D0 (12,248 users with train data, 27,209 nodes,
119,869 train interactions), LightGCN dim 128, 2 layers, BPR, Adam, batch 512 × 2 negatives. Steps
alternate between the two paths (C, O, C, O, …) so background load hits both alike; the table gives the
median ms per step over the rounds and the ratio. Both paths must produce the same loss and gradients
(checked on the first batch).

    DISTILLREC_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lightgcn_step.py [--steps N]
"""

from __future__ import annotations

import argparse

import torch

from _alternating import machine_line, median_step_ms
from distillrec.continual import load_stream
from distillrec.models.bpr import bpr_loss, pair_scores
from distillrec.models.lightgcn import LightGCN, normalized_adjacency


def coo_loss(model: LightGCN, adjacency: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The replaced path: layer-mean propagation through ``torch.sparse.mm`` on the COO Â."""
    ego = torch.cat([model.user_emb.weight, model.item_emb.weight])
    layer, total = ego, ego
    for _ in range(model.config.n_layers):
        layer = torch.sparse.mm(adjacency, layer)
        total = total + layer
    users, items = (total / (model.config.n_layers + 1)).split([model.n_users, model.n_items])
    u = users[batch["users"]]
    return bpr_loss(pair_scores(u, items[batch["pos_items"]]), pair_scores(u, items[batch["neg_items"]]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    view = load_stream("yelp-stream").view(0)
    model = LightGCN(view.n_users, view.n_items, LightGCN.Config(embedding_dim=128, n_layers=2, reg_weight=0.0))
    model.set_graph(view.train)
    model.train()
    coo = normalized_adjacency(view.train, view.n_users, view.n_items)
    gen = torch.Generator().manual_seed(0)
    coo_train = view.train.tocoo()

    def batch() -> dict[str, torch.Tensor]:
        idx = torch.randint(0, coo_train.nnz, (512,), generator=gen).repeat(2)
        return {"users": torch.as_tensor(coo_train.row)[idx], "pos_items": torch.as_tensor(coo_train.col)[idx],
                "neg_items": torch.randint(0, view.n_items, (1024,), generator=gen)}

    first = batch()
    grads = []
    for loss_fn in (model.loss, lambda b: coo_loss(model, coo, b)):
        model.zero_grad()
        loss = loss_fn(first)
        loss.backward()
        grads.append((loss.item(), model.user_emb.weight.grad.clone(), model.item_emb.weight.grad.clone()))
    assert abs(grads[0][0] - grads[1][0]) < 1e-6, "the two paths disagree on the loss"
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(grads[0][1:], grads[1][1:])), "gradients differ"

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    med = median_step_ms({"csr": model.loss, "coo": lambda x: coo_loss(model, coo, x)}, batch, opt, args.steps)
    print(machine_line(args.steps))
    print("| path | ms / step (median) |\n|---|---|")
    print(f"| COO torch.sparse.mm (before) | {med['coo']:.1f} |\n| CSR + symmetric backward (now) | {med['csr']:.1f} |")
    print(f"speed-up: {med['coo'] / med['csr']:.2f}×")


if __name__ == "__main__":
    main()
