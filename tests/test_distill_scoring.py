"""List scoring: the representation-table paths (sampled product, dense product) equal the generic ``score``
path, values and gradients, for BPR-MF and LightGCN."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from distillrec.data.dataset import Dataset
from distillrec.distill.scoring import DENSE_FRACTION, ListScorer, side_scores
from distillrec.models.bpr import BPR
from distillrec.models.lightgcn import LightGCN
from distillrec.models.neumf import NeuMF


@pytest.mark.parametrize(("side", "n_cols"), [("user", 7), ("item", 7), ("user", 40), ("item", 40), ("user", 60),
                                             ("item", 70)])
def test_table_path_matches_generic_scores_and_gradients(side, n_cols):
    torch.manual_seed(0)
    n_users, n_items = 300, 250
    model = BPR(n_users, n_items, BPR.Config(embedding_dim=6, init_std=0.5))
    scorer = ListScorer(model)
    assert scorer.kind == "table"
    g = torch.Generator().manual_seed(1)
    n_table = n_items if side == "user" else n_users
    n_rows = 5 if n_cols == 7 else 40
    rows = torch.randint(0, n_users if side == "user" else n_items, (n_rows,), generator=g)
    cols = torch.randint(0, n_table, (n_rows, n_cols), generator=g)  # repeats within rows included
    cols[0, :3] = cols[0, 3]  # a row with the same column four times
    weights = torch.randn(n_rows, n_cols, generator=g)

    def grads(fn):
        model.zero_grad()
        out = fn(model, rows, cols, side) if fn is side_scores else fn(rows, cols, side)
        (out * weights).sum().backward()
        return out.detach(), model.user_emb.weight.grad.clone(), model.item_emb.weight.grad.clone()

    # 5 × 7 entries: the scatter path for the table gradient; 40 × 40 (≥ 2 × the table's rows): the transposed
    # CSR path; 60 of 250 / 70 of 300 (≥ DENSE_FRACTION of the table): the dense product.
    for fast, slow in zip(grads(scorer), grads(side_scores)):
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)


def test_lightgcn_lists_match_generic_scores_and_gradients():
    """LightGCN's propagated tables: short lists (sampled product) and lists over most of the table (dense
    product + gather), both sides; gradients reach the ego embeddings through the propagation."""
    rng = np.random.default_rng(0)
    n_users, n_items = 30, 25
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))
    ds = Dataset("tiny", n_users, n_items, train=train, test=sp.csr_matrix((n_users, n_items)))
    torch.manual_seed(0)
    model = LightGCN.from_dataset(ds, embedding_dim=6, n_layers=2)
    scorer = ListScorer(model)
    assert scorer.kind == "table"
    g = torch.Generator().manual_seed(2)
    rows = torch.tensor([3, 0, 17, 4, 9])
    for side, n_table in (("user", n_items), ("item", n_users)):
        for n_cols in (3, int(DENSE_FRACTION * n_table) + 1, 2 * n_table):  # sampled, dense, longer than table
            cols = torch.randint(0, n_table, (5, n_cols), generator=g)
            weights = torch.randn(5, n_cols, generator=g)
            results = []
            for fn in (scorer, lambda r, c, s_: side_scores(model, r, c, s_)):
                model.zero_grad()
                out = fn(rows, cols, side)
                (out * weights).sum().backward()
                results.append((out.detach(), model.user_emb.weight.grad.clone(), model.item_emb.weight.grad.clone()))
            for fast, slow in zip(*results):
                torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)


def test_only_dot_product_models_take_the_fast_path():
    assert ListScorer(BPR(10, 8, BPR.Config(embedding_dim=4))).kind == "table"
    assert ListScorer(NeuMF(10, 8)).kind == "generic"
    assert ListScorer(LightGCN(10, 8)).kind == "generic"  # no graph yet: its scores cannot be checked


def test_lightgcn_student_propagates_once_per_distillation_step(monkeypatch):
    """The base loss and both list sides of a step share one propagation (``training_step``); the loss and
    every gradient equal those of separate propagations, and the next step propagates afresh."""
    from contextlib import nullcontext

    from distillrec.distill import get_method

    rng = np.random.default_rng(1)
    n_users, n_items = 60, 70
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.15).astype(np.float32))
    ds = Dataset("tiny", n_users, n_items, train=train, test=sp.csr_matrix((n_users, n_items)))
    torch.manual_seed(0)
    teacher = BPR(n_users, n_items, BPR.Config(embedding_dim=8, init_std=0.5))
    student = LightGCN.from_dataset(ds, embedding_dim=4, n_layers=2)
    config = {"n_topk": 20, "n_item_topk": 15, "n_samples": 6, "n_item_samples": 5}
    d = get_method("dcd").from_teacher(student, teacher, ds, config, seed=0)
    coo = train.tocoo()
    batch = {"users": torch.as_tensor(coo.row[:32], dtype=torch.long),
             "pos_items": torch.as_tensor(coo.col[:32], dtype=torch.long),
             "neg_items": torch.randint(0, n_items, (32, 1), generator=torch.Generator().manual_seed(0))}
    calls = []
    inner = student._propagate
    monkeypatch.setattr(student, "_propagate", lambda: calls.append(1) or inner())

    def step() -> tuple[list[float], list[torch.Tensor]]:
        d.on_epoch_start(1)
        student.zero_grad()
        calls.clear()
        terms = d.loss(batch)
        sum(terms.values()).backward()
        return [v.item() for v in terms.values()], [student.user_emb.weight.grad.clone(),
                                                    student.item_emb.weight.grad.clone()]

    shared = step()
    assert len(calls) == 1 and set(d.loss(batch)) == {"base", "ucd", "icd"}
    monkeypatch.setattr(student, "training_step", nullcontext)
    separate = step()
    assert len(calls) == 3  # base loss, user lists, item lists
    assert shared[0] == pytest.approx(separate[0], rel=1e-6)
    for a, b in zip(shared[1], separate[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
