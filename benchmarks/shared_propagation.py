"""One LightGCN propagation per training step (``Recommender.training_step``) ÷ one per loss term, same model,
same batches, one process.

Setting (CCD's Yelp teacher update on block D1): a LightGCN teacher (dim 128, 2 layers) on the yelp-stream
view of D1, batch 2048 × 1 negative, Adam; the step's loss is what ``UpdateObjective`` adds up: BPR, the LWC-KD
terms against the D0 representations (all of them: contrastive, cluster/PIW, graph), and a replay BCE on
1,024 (user, item) pairs. Without the scope each of the three propagates on its own. Steps alternate between
the two forms (S, P, S, P, …) so background load hits both alike; the table gives the median ms per step and
the ratio. Both forms must give the same loss and gradients (checked on the first batch).

    DISTILLREC_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shared_propagation.py
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from functools import partial

import torch
import torch.nn.functional as F

from _alternating import machine_line, median_step_ms
from distillrec.continual import load_stream
from distillrec.continual.lwckd import LWCKD, LWCKDConfig
from distillrec.models.lightgcn import LightGCN


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    stream = load_stream("yelp-stream")
    old_view, view = stream.view(0), stream.view(1)
    torch.manual_seed(0)
    cfg = LightGCN.Config(embedding_dim=128, n_layers=2, reg_weight=0.0)
    model = LightGCN(view.n_users, view.n_items, cfg)
    model.set_graph(view.train)
    model.train()
    old = LightGCN(old_view.n_users, old_view.n_items, cfg)
    old.set_graph(old_view.train)
    old.eval()
    with torch.no_grad():
        old_u, old_i = old.propagate()
    lwckd = LWCKD(old_u, old_i, old_view.train,
                  LWCKDConfig(lambda_lwc=0.01, lambda_cluster=1.0, temperature=5.0, n_clusters=10, n_neighbors=10))
    gen = torch.Generator().manual_seed(0)
    coo = view.train.tocoo()

    def batch() -> dict[str, torch.Tensor]:
        idx = torch.randint(0, coo.nnz, (2048,), generator=gen)
        return {"users": torch.as_tensor(coo.row, dtype=torch.long)[idx],
                "pos_items": torch.as_tensor(coo.col, dtype=torch.long)[idx],
                "neg_items": torch.randint(0, view.n_items, (2048, 1), generator=gen),
                "replay_users": torch.randint(0, old_view.n_users, (1024,), generator=gen),
                "replay_items": torch.randint(0, old_view.n_items, (1024,), generator=gen),
                "labels": torch.randint(0, 2, (1024,), generator=gen).float()}

    def step_loss(b: dict[str, torch.Tensor], scope) -> torch.Tensor:
        with scope():
            terms = {"base": model.loss(b)}
            terms.update(lwckd.terms(model, b["users"], b["pos_items"]))
            logits = model.score(b["replay_users"], b["replay_items"])
            terms["replay"] = 0.5 * F.binary_cross_entropy_with_logits(logits, b["labels"])
        return sum(terms.values())

    forms = {"shared": model.training_step, "per term": nullcontext}
    first = batch()
    checks = []
    for scope in forms.values():
        model.zero_grad()
        lwckd.zero_grad()
        loss = step_loss(first, scope)
        loss.backward()
        checks.append((loss.item(), model.user_emb.weight.grad.clone(), model.item_emb.weight.grad.clone()))
    assert abs(checks[0][0] - checks[1][0]) <= 1e-6 * abs(checks[1][0]), "the two forms disagree on the loss"
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(checks[0][1:], checks[1][1:]))

    opt = torch.optim.Adam(list(model.parameters()) + list(lwckd.parameters()), lr=1e-3)
    med = median_step_ms({name: partial(step_loss, scope=scope) for name, scope in forms.items()}, batch, opt,
                         args.steps)
    print(machine_line(args.steps))
    print("| form | ms / step (median) |\n|---|---|")
    print(f"| one propagation per term (before) | {med['per term']:.1f} |\n"
          f"| one per step (now) | {med['shared']:.1f} |")
    print(f"speed-up: {med['per term'] / med['shared']:.2f}×")


if __name__ == "__main__":
    main()
