import numpy as np
import pytest
import scipy.sparse as sp
import torch

from distillrec.data import sample_candidates, sample_negatives
from distillrec.data.sampling import _negatives_torch, pair_keys


def _train(n_users=50, n_items=40, per_user=30, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_users), per_user)
    cols = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    return sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n_users, n_items))


def _hits(matrix: sp.csr_matrix, users: np.ndarray, items: np.ndarray) -> int:
    return int(np.asarray(matrix[np.repeat(users, items.shape[1]), items.ravel()]).sum())


def test_pair_keys_sorted():
    m = sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 0]], dtype=np.float32))
    assert pair_keys(m).tolist() == [1, 2, 3]


def test_negatives_avoid_train_items_and_are_seeded():
    train = _train()  # 30 of 40 items per user in train: three of four draws get rejected
    users = np.repeat(np.arange(50), 20)
    neg = sample_negatives(train, torch.from_numpy(users), 3, torch.Generator().manual_seed(0))
    assert isinstance(neg, torch.Tensor) and neg.shape == (1000, 3) and neg.dtype == torch.int64
    assert _hits(train, users, neg.numpy()) == 0
    again = sample_negatives(train, users, 3, torch.Generator().manual_seed(0))
    other = sample_negatives(train, users, 3, torch.Generator().manual_seed(1))
    assert torch.equal(neg, again) and not torch.equal(neg, other)
    as_np = sample_negatives(train, users, 3, np.random.default_rng(0))
    assert isinstance(as_np, np.ndarray) and _hits(train, users, as_np) == 0


def test_negatives_are_uniform_over_the_unobserved_items():
    train = _train(n_users=1, n_items=20, per_user=10)
    neg = sample_negatives(train, np.zeros(20_000, dtype=np.int64), 1, np.random.default_rng(0)).ravel()
    counts = np.bincount(neg, minlength=20)
    allowed = np.setdiff1d(np.arange(20), train.indices)
    assert counts[train.indices].sum() == 0
    # 2,000 expected per allowed item; a chi-square with 9 dof stays far below 40 unless sampling is skewed
    chi2 = ((counts[allowed] - 2000) ** 2 / 2000).sum()
    assert chi2 < 40


def test_torch_rejection_loop():
    train = _train()
    keys = torch.from_numpy(pair_keys(train))
    users = torch.arange(50).repeat_interleave(4)
    neg = _negatives_torch(keys, users, 40, 5, torch.Generator().manual_seed(0))
    assert neg.shape == (200, 5) and _hits(train, users.numpy(), neg.numpy()) == 0


def test_negatives_bad_input():
    full = sp.csr_matrix(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="user 0 has every item in train"):
        sample_negatives(full, np.array([0]), 1)
    with pytest.raises(ValueError, match="user ids must lie in"):
        sample_negatives(_train(), np.array([99]), 1)


def test_candidates_distinct_unobserved_and_fixed_by_seed():
    observed = _train(n_users=30, n_items=200, per_user=60)
    cand = sample_candidates(observed, 100, seed=5)
    assert cand.shape == (30, 100) and cand.dtype == np.int64
    assert _hits(observed, np.arange(30), cand) == 0
    assert all(len(set(row)) == 100 for row in cand.tolist())
    assert (cand == sample_candidates(observed, 100, seed=5)).all()
    assert (cand != sample_candidates(observed, 100, seed=6)).any()


def test_candidates_when_barely_enough_items_remain():
    # 40 items, 30 observed: exactly 10 unobserved, all of which must be picked
    observed = _train(n_users=5, n_items=40, per_user=30)
    cand = sample_candidates(observed, 10, seed=0)
    for u in range(5):
        assert sorted(cand[u]) == sorted(set(range(40)) - set(observed[u].indices))
    with pytest.raises(ValueError, match="fewer than 11 candidates"):
        sample_candidates(observed, 11)
