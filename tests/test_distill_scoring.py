"""List scoring: the lookup-table fast path equals the generic ``score`` path, values and gradients."""

import pytest
import torch

from distillrec.distill.scoring import ListScorer, lookup_tables, side_scores
from distillrec.models.bpr import BPR
from distillrec.models.neumf import NeuMF


@pytest.mark.parametrize(("side", "n_cols"), [("user", 7), ("item", 7), ("user", 40), ("item", 20)])
def test_table_path_matches_generic_scores_and_gradients(side, n_cols):
    torch.manual_seed(0)
    model = BPR(30, 25, BPR.Config(embedding_dim=6, init_std=0.5))
    scorer = ListScorer(model)
    assert scorer.kind == "table"
    g = torch.Generator().manual_seed(1)
    n_rows, n_table = (5, 25) if side == "user" else (5, 30)
    rows = torch.tensor([3, 0, 17, 4, 9])
    cols = torch.randint(0, n_table, (n_rows, n_cols), generator=g)  # repeats within rows included
    cols[0, :3] = cols[0, 3]  # a row with the same column four times
    weights = torch.randn(n_rows, n_cols, generator=g)

    def grads(fn):
        model.zero_grad()
        out = fn(model, rows, cols, side) if fn is side_scores else fn(rows, cols, side)
        (out * weights).sum().backward()
        return out.detach(), model.user_emb.weight.grad.clone(), model.item_emb.weight.grad.clone()

    # 5 × 7 entries: the scatter path for the table gradient; 5 × 40 (≥ 2 × 25 rows): the transposed CSR path.
    for fast, slow in zip(grads(scorer), grads(side_scores)):
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)


def test_only_lookup_table_models_take_the_fast_path():
    assert lookup_tables(BPR(10, 8, BPR.Config(embedding_dim=4))) is not None
    assert ListScorer(NeuMF(10, 8)).kind == "generic"
