"""Behaviour: on planted-cluster data, a small student distilled with RRD agrees more with its teacher's
top-10 than the same student trained alone with the same batches and steps."""

import numpy as np
import scipy.sparse as sp
import torch

from distillrec.data.dataset import Dataset
from distillrec.distill import get_method
from distillrec.models.bpr import BPR

STEPS_PER_EPOCH = 20


def planted(n_users: int = 300, n_items: int = 200, n_clusters: int = 4, per_user: int = 20, noise: float = 0.2,
            seed: int = 0) -> Dataset:
    """User u belongs to cluster u mod C and draws most of its items from that cluster's items."""
    rng = np.random.default_rng(seed)
    item_cluster = np.arange(n_items) % n_clusters
    n_noise = round(per_user * noise)
    rows, cols = [], []
    for u in range(n_users):
        own = np.flatnonzero(item_cluster == u % n_clusters)
        other = np.flatnonzero(item_cluster != u % n_clusters)
        items = np.concatenate([rng.choice(own, per_user - n_noise, replace=False),
                                rng.choice(other, n_noise, replace=False)])
        rows.extend([u] * per_user)
        cols.extend(items)
    train = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    return Dataset("planted", n_users, n_items, train=train, test=sp.csr_matrix((n_users, n_items)))


def batches(ds, seed: int, steps: int, batch_size: int = 256):
    coo = ds.train.tocoo()
    users, items = torch.as_tensor(coo.row, dtype=torch.long), torch.as_tensor(coo.col, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(users), (batch_size,), generator=g)
        yield {"users": users[idx], "pos_items": items[idx],
               "neg_items": torch.randint(0, ds.n_items, (batch_size, 1), generator=g)}


def fit(ds, model, steps: int, distiller=None, seed: int = 0) -> None:
    params = list(model.parameters()) + (distiller.extra_parameters() if distiller is not None else [])
    opt = torch.optim.Adam(params, lr=0.01)
    for step, batch in enumerate(batches(ds, seed, steps)):
        if distiller is not None and step % STEPS_PER_EPOCH == 0:
            distiller.on_epoch_start(step // STEPS_PER_EPOCH + 1)
        terms = distiller.loss(batch) if distiller is not None else {"base": model.loss(batch)}
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()


def top10(ds, model) -> torch.Tensor:
    with torch.no_grad():
        scores = model.full_scores(torch.arange(ds.n_users))
    scores[torch.as_tensor(ds.train.toarray() > 0)] = float("-inf")
    return scores.topk(10, dim=1).indices


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean fraction of each user's top-10 shared by the two lists."""
    return (a.unsqueeze(2) == b.unsqueeze(1)).any(dim=2).float().mean().item()


def test_rrd_student_agrees_more_with_teacher_than_student_alone():
    ds = planted()
    torch.manual_seed(0)
    teacher = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=32, init_std=0.1))
    fit(ds, teacher, 400)
    teacher_top = top10(ds, teacher)

    torch.manual_seed(1)
    alone = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4, init_std=0.1))
    fit(ds, alone, 300, seed=1)
    torch.manual_seed(1)
    student = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4, init_std=0.1))
    rrd = get_method("rrd").from_teacher(student, teacher, ds, {
        "lambda_rrd": 0.3, "n_topk": 30, "n_interesting": 10, "n_uninteresting": 20, "temperature": 5.0})
    fit(ds, student, 300, rrd, seed=1)

    alone_agree, rrd_agree = agreement(top10(ds, alone), teacher_top), agreement(top10(ds, student), teacher_top)
    # Measured when written: alone ≈ 0.34, RRD ≈ 0.48.
    assert rrd_agree > alone_agree + 0.08, (alone_agree, rrd_agree)
