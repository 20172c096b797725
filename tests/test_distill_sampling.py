"""Samplers and Gumbel pieces: distributions over many draws, exclusion guarantees, hand-computed values."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from distillrec.distill.gumbel import anneal_temperature, gumbel_softmax
from distillrec.distill.sampling import (
    PairIndex,
    RankingLists,
    discrepancy_log_weights,
    gumbel_topk,
    rank_discounted_positions,
    ranks_in_rows,
    sample_uninteresting,
    weighted_topk,
)
from distillrec.utils import DistillrecError

# χ² critical values at p = 0.001: a correct sampler fails one of these with probability 1e-3 (the seeds are
# fixed, so the tests are deterministic anyway).
CHI2_999 = {3: 16.27, 4: 18.47, 22: 48.27}


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def test_gumbel_topk_single_draw_follows_weights():
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    draws = gumbel_topk(w.log().expand(40_000, 4), 1, g).squeeze(1)
    counts = torch.bincount(draws, minlength=4).float()
    assert chi_square(counts, w / w.sum()) < CHI2_999[3]


def test_gumbel_topk_without_replacement_matches_sequential_draws():
    # Two draws without replacement from w = (1, 2, 3, 4): P(i in sample) = w_i/10 + Σ_{j≠i} (w_j/10)·w_i/(10 − w_j)
    w = [1.0, 2.0, 3.0, 4.0]
    exact = [wi / 10 + sum(wj / 10 * wi / (10 - wj) for j, wj in enumerate(w) if j != i) for i, wi in enumerate(w)]
    assert sum(exact) == pytest.approx(2.0)
    g = torch.Generator().manual_seed(1)
    draws = gumbel_topk(torch.tensor(w).log().expand(40_000, 4), 2, g)
    assert (draws[:, 0] != draws[:, 1]).all()
    freq = torch.bincount(draws.reshape(-1), minlength=4).float() / 40_000
    np.testing.assert_allclose(freq.numpy(), exact, atol=0.012)
    # The first column is the first draw: P ∝ w.
    first = torch.bincount(draws[:, 0], minlength=4).float()
    assert chi_square(first, torch.tensor(w) / 10) < CHI2_999[3]


def test_gumbel_topk_never_draws_minus_inf_and_survives_floored_rows():
    g = torch.Generator().manual_seed(2)
    log_w = torch.tensor([[0.0, float("-inf"), 0.0, float("-inf")]]).expand(1000, 4)
    assert set(gumbel_topk(log_w, 2, g).reshape(-1).tolist()) == {0, 2}
    # A row whose weights are all at the floor (DCD's "nothing under-ranked") still yields k distinct draws.
    floor = torch.full((3, 5), math.log(1e-5))
    out = gumbel_topk(floor, 5, g)
    assert (out.sort(dim=1).values == torch.arange(5)).all()
    with pytest.raises(ValueError, match="without replacement"):
        gumbel_topk(floor, 6, g)


@pytest.mark.parametrize("n_cols", [4, 500])  # 500: DCD's list length, numpy uniforms and the threshold top-k
def test_weighted_topk_matches_sequential_draws(n_cols):
    w = [1.0, 2.0, 3.0, 4.0]
    exact = [wi / 10 + sum(wj / 10 * wi / (10 - wj) for j, wj in enumerate(w) if j != i) for i, wi in enumerate(w)]
    weights = torch.full((40_000, n_cols), 1e-7)  # the tail at a floor: drawn ~2e-5 of the time at 500 columns
    weights[:, :4] = torch.tensor(w)
    draws = weighted_topk(weights, 2, torch.Generator().manual_seed(1))
    assert (draws[:, 0] != draws[:, 1]).all()
    freq = torch.bincount(draws.reshape(-1), minlength=n_cols)[:4].float() / 40_000
    np.testing.assert_allclose(freq.numpy(), exact, atol=0.012)
    first = torch.bincount(draws[:, 0], minlength=n_cols)[:4].float()  # first column = first draw, P ∝ w
    assert chi_square(first, torch.tensor(w) / 10) < CHI2_999[3]
    # A row with fewer weighted entries than k takes them all, then distinct entries from its floor.
    k = min(6, n_cols)
    out = weighted_topk(weights[:100], k, torch.Generator().manual_seed(2))
    assert (out[:, :4].sort(dim=1).values == torch.arange(4)).all()
    assert all(len(set(row)) == k for row in out.tolist())
    with pytest.raises(ValueError, match="without replacement"):
        weighted_topk(weights[:2], n_cols + 1)


def test_rank_discounted_positions_distribution_and_order():
    g = torch.Generator().manual_seed(3)
    one = rank_discounted_positions(50_000, 5, 1, temperature=2.0, generator=g).squeeze(1)
    p = torch.exp(-torch.arange(5.0) / 2.0)
    assert chi_square(torch.bincount(one, minlength=5).float(), p / p.sum()) < CHI2_999[4]
    many = rank_discounted_positions(200, 500, 40, temperature=10.0, generator=g)
    assert (many[:, 1:] > many[:, :-1]).all()  # sorted = teacher order, and distinct
    assert many.min() >= 0 and many.max() < 500
    assert many.max() < 250  # exp(−r/10): ranks past ~150 are essentially never drawn


def tiny_train() -> sp.csr_matrix:
    dense = np.zeros((3, 30), dtype=np.float32)
    dense[0, [0, 1, 2]] = 1
    dense[1, [5, 29]] = 1
    return sp.csr_matrix(dense)


def test_pair_index_contains():
    index = PairIndex(tiny_train())
    rows = torch.tensor([0, 1, 2])
    cols = torch.tensor([[2, 3], [29, 0], [0, 29]])
    assert index.contains(rows, cols).tolist() == [[True, False], [True, False], [False, False]]
    assert index.counts.tolist() == [3, 2, 0]


def test_uninteresting_excludes_train_and_topn_and_is_uniform():
    index = PairIndex(tiny_train())
    top = torch.tensor([3, 4, 5, 6])
    n_rows = 20_000
    rows = torch.zeros(n_rows, dtype=torch.long)
    out = sample_uninteresting(rows, 5, index, top.expand(n_rows, 4), torch.Generator().manual_seed(4))
    assert out.shape == (n_rows, 5)
    forbidden = {0, 1, 2, 3, 4, 5, 6}
    assert not forbidden & set(out.reshape(-1).tolist())
    assert (out.sort(dim=1).values[:, 1:] != out.sort(dim=1).values[:, :-1]).all()  # distinct within a row
    pool = [c for c in range(30) if c not in forbidden]  # 23 columns, each drawn with P = 5/23 per row
    counts = torch.bincount(out.reshape(-1), minlength=30)[pool].float()
    assert chi_square(counts, torch.full((23,), 1 / 23)) < CHI2_999[22]


def test_uninteresting_taking_most_of_the_pool_is_uniform_and_distinct():
    """n > 3/4 of the pool goes through random keys instead of rejection (CCD's 11,500 of ~12,200 users)."""
    index = PairIndex(tiny_train())
    top = torch.tensor([3, 4, 5, 6])
    n_rows = 20_000
    out = sample_uninteresting(torch.zeros(n_rows, dtype=torch.long), 20, index, top.expand(n_rows, 4),
                               torch.Generator().manual_seed(6))
    forbidden = {0, 1, 2, 3, 4, 5, 6}
    assert out.shape == (n_rows, 20) and not forbidden & set(out.reshape(-1).tolist())
    assert (out.sort(dim=1).values[:, 1:] != out.sort(dim=1).values[:, :-1]).all()
    pool = [c for c in range(30) if c not in forbidden]  # 23 columns, each kept with P = 20/23 per row
    counts = torch.bincount(out.reshape(-1), minlength=30)[pool].float()
    assert chi_square(counts, torch.full((23,), 1 / 23)) < CHI2_999[22]
    # which 3 columns a row leaves out is uniform too: every column is missing from ~3/23 of the rows
    missing = n_rows - torch.bincount(out.reshape(-1), minlength=30)[pool]
    assert ((missing.float() / n_rows - 3 / 23).abs() < 0.01).all()


def test_uninteresting_rows_with_few_choices_and_too_small_pools():
    index = PairIndex(tiny_train())
    # Row 1 excludes {5, 29} (train) and its list {0..4, 6..20}: exactly 8 columns remain, all must come back.
    lists = torch.tensor([c for c in range(21) if c != 5]).expand(100, 20)
    out = sample_uninteresting(torch.ones(100, dtype=torch.long), 8, index, lists, torch.Generator().manual_seed(5))
    assert (out.sort(dim=1).values == torch.arange(21, 29)).all()
    with pytest.raises(DistillrecError, match="row 1 has only 8 columns"):
        sample_uninteresting(torch.ones(2, dtype=torch.long), 9, index, lists[:2])


def test_ranks_and_discrepancy_weights_by_hand():
    assert ranks_in_rows(torch.tensor([[0.1, 0.9, 0.5]])).tolist() == [[2, 0, 1]]
    # student ranks (2, 0, 1) vs teacher ranks (0, 1, 2), ε = 0.5 → gaps ε·(r_S − r_T) = (1, −0.5, −0.5)
    log_plus, log_minus = discrepancy_log_weights(torch.tensor([[2, 0, 1]]), epsilon=0.5, floor=1e-5)
    np.testing.assert_allclose(log_plus.exp().numpy(), [[math.tanh(1.0), 1e-5, 1e-5]], rtol=1e-5)
    np.testing.assert_allclose(log_minus.exp().numpy(), [[1e-5, math.tanh(0.5), math.tanh(0.5)]], rtol=1e-5)


def test_ranking_lists_refresh():
    index = PairIndex(tiny_train())
    topk = torch.tensor([[10, 11, 12, 13, 14, 15], [6, 7, 8, 9, 10, 11], [1, 2, 3, 4, 5, 6]])
    lists = RankingLists(topk, index, n_interesting=3, n_uninteresting=4, temperature=1.0, mode="rank")
    lists.refresh(torch.Generator().manual_seed(6))
    inter, unint = lists.lists(torch.tensor([0, 1, 2]))
    position = (inter.unsqueeze(2) == topk.unsqueeze(1)).float().argmax(dim=2)
    assert (position[:, 1:] > position[:, :-1]).all()  # teacher order kept
    for r in range(3):
        assert not set(unint[r].tolist()) & (set(topk[r].tolist()) | set(tiny_train()[r].indices.tolist()))
    top = RankingLists(topk, index, 3, 4, mode="top")
    top.refresh(torch.Generator().manual_seed(6))
    assert top.lists(torch.tensor([1]))[0].tolist() == [[6, 7, 8]]
    with pytest.warns(UserWarning, match="7 interesting entries per row cut to 6"):
        assert RankingLists(topk, index, 7, 4).k == 6
    with pytest.raises(ValueError, match="n_interesting"):
        RankingLists(topk, index, 0, 4)


def test_ranking_lists_cut_per_row_on_a_small_catalogue():
    # 30 columns; row 0 has 3 training columns (27 unobserved), row 1 has 2 (28), row 2 none (30). Lists of 20,
    # K = 3, L = 10: rows keep 17, 18 and 20 entries so that 10 columns stay outside train ∪ list.
    index = PairIndex(tiny_train())
    g = torch.Generator().manual_seed(8)
    topk = torch.stack([torch.tensor([c for c in range(30) if c not in own][:20])
                        for own in ({0, 1, 2}, {5, 29}, set())])
    with pytest.warns(UserWarning, match="cut to 17–18 entries for 2 of 3 rows"):
        lists = RankingLists(topk, index, 3, 10, temperature=100.0)
    for _ in range(20):
        lists.refresh(g)
        for r, keep in enumerate((17, 18, 20)):
            kept = set(topk[r, :keep].tolist())
            assert set(lists.interesting[r].tolist()) <= kept  # interesting only from the cut list
            bag = set(lists.uninteresting[r].tolist())
            assert len(bag) == 10 and not bag & (kept | set(tiny_train()[r].indices.tolist()))
    # The bag of row 0 can only be its 10 free columns: all of them, every time.
    assert set(lists.uninteresting[0].tolist()) == set(range(30)) - {0, 1, 2} - set(topk[0, :17].tolist())


def test_uninteresting_with_replacement_from_a_too_small_pool_is_uniform():
    index = PairIndex(tiny_train())
    lists = torch.tensor([c for c in range(24) if c not in (5,)]).expand(4000, 23)  # row 1 keeps 28, 29 − {29}…
    out = sample_uninteresting(torch.ones(4000, dtype=torch.long), 6, index, lists, torch.Generator().manual_seed(9),
                               replace_short=True)
    # Row 1 excludes {5, 29} and 0..23: columns 24..28 are left (5 of them) for 6 draws → with replacement.
    assert set(out.reshape(-1).tolist()) == {24, 25, 26, 27, 28}
    counts = torch.bincount(out.reshape(-1), minlength=29)[24:].float()
    assert chi_square(counts, torch.full((5,), 0.2)) < CHI2_999[4]
    with pytest.raises(DistillrecError, match="row 1 has only 5 columns"):
        sample_uninteresting(torch.ones(2, dtype=torch.long), 6, index, lists[:2])


def test_anneal_temperature_values():
    assert anneal_temperature(0) == 1.0
    assert anneal_temperature(500, 1.0, 1e-10, 1000) == pytest.approx(1e-5)  # halfway in log space
    assert anneal_temperature(250, 1.0, 1e-10, 1000) == pytest.approx(10 ** -2.5)  # the authors' early stop
    assert anneal_temperature(1000) == pytest.approx(1e-10)
    assert anneal_temperature(5000) == 1e-10  # clamped
    assert anneal_temperature(3, tau0=2.0, tau_end=0.5, n_epochs=4) == pytest.approx(2.0 * 0.25 ** 0.75)
    with pytest.raises(ValueError):
        anneal_temperature(1, n_epochs=0)


def test_gumbel_softmax_selection_frequencies_and_hard_limit():
    g = torch.Generator().manual_seed(7)
    alpha = torch.tensor([0.2, 0.3, 0.5])
    s = gumbel_softmax(alpha.log().expand(30_000, 3), tau=1.0, generator=g)
    assert torch.allclose(s.sum(dim=1), torch.ones(30_000))
    counts = torch.bincount(s.argmax(dim=1), minlength=3).float()
    assert chi_square(counts, alpha) < 13.82  # χ²(2) at p = 0.001
    hard = gumbel_softmax(alpha.log().expand(100, 3), tau=1e-10, generator=g)
    assert ((hard == 0) | (hard == 1)).all() and (hard.sum(dim=1) == 1).all()
