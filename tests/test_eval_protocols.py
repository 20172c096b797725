"""Full-ranking and sampled protocols: hand values, masking, skipping, ties, a loop reference, model path."""

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from distillrec.data import Dataset
from distillrec.evaluate import EvalResult, evaluate_full, evaluate_sampled
from distillrec.models.base import Recommender
from distillrec.utils import DistillrecError


def _csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    m = sp.lil_matrix((len(rows), n_items), dtype=np.float32)
    for u, items in enumerate(rows):
        for i in items:
            m[u, i] = 1
    return m.tocsr()


def _hand_dataset() -> Dataset:
    n = 6
    return Dataset("hand", 3, n, train=_csr([[0], [2], [1]], n), valid=_csr([[1], [], []], n),
                   test=_csr([[3], [4, 5], []], n))


# user 0: train item 0 and valid item 1 score highest; test item 3 is next.
# user 1: train item 2 scores highest, then test 5, item 0, test 4.
HAND_SCORES = torch.tensor([
    [10.0, 9.0, 1.0, 8.0, 2.0, 3.0],
    [8.0, 1.0, 10.0, 0.0, 7.0, 9.0],
    [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
])


def _lookup(table: torch.Tensor):
    return lambda users: table[users].clone()


def test_full_hand_values_masking_and_skipping():
    res = evaluate_full(_lookup(HAND_SCORES), _hand_dataset(), "test", ks=(1, 3))
    assert res.n_users_evaluated == 2 and res.n_users_skipped == 1  # user 2 has no test item
    assert res.users.tolist() == [0, 1] and res.n_targets == 3
    pu = {k: v.tolist() for k, v in res.per_user.items()}
    # user 0: items 0 (train) and 1 (valid) masked -> test item 3 at rank 1
    assert pu["recall@1"][0] == 1.0 and pu["ndcg@1"][0] == 1.0
    # user 1: item 2 masked -> ranking 5 (hit), 0, 4 (hit): hits at ranks 1 and 3 of 2 relevant
    assert pu["recall@1"][1] == 0.5 and pu["recall@3"][1] == 1.0
    assert pu["precision@3"][1] == pytest.approx(2 / 3)
    assert pu["ndcg@3"][1] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert pu["map@3"][1] == pytest.approx((1 + 2 / 3) / 2)
    assert pu["mrr@3"][1] == 1.0
    assert res["recall@1"] == pytest.approx(0.75)  # mean over evaluated users only
    # without masking the training item tops user 0's list and the valid item comes second
    raw = evaluate_full(_lookup(HAND_SCORES), _hand_dataset(), "test", ks=(1, 3), exclude_seen=False)
    assert raw.per_user["hit@1"].tolist() == [0.0, 0.0]
    assert raw.per_user["mrr@3"][0] == pytest.approx(1 / 3)


def test_valid_split_masks_test_items():
    # ranking valid for user 0: train item 0 and test item 3 masked; valid item 1 is then first
    res = evaluate_full(_lookup(HAND_SCORES), _hand_dataset(), "valid", ks=(1,))
    assert res.users.tolist() == [0] and res.n_users_skipped == 2
    assert res["hit@1"] == 1.0


def test_masked_item_is_never_a_hit_even_when_the_list_runs_out():
    # 3 items, user 0 has train item 0 that is also (by leakage) a test item: masked, so never counted
    ds = Dataset("leak", 1, 3, train=_csr([[0, 1]], 3), test=_csr([[0, 2]], 3))
    res = evaluate_full(_lookup(torch.tensor([[5.0, 4.0, 3.0]])), ds, ks=(3,))
    assert res.per_user["hit@3"].tolist() == [1.0]
    assert res.per_user["recall@3"].tolist() == [0.5]  # item 2 found, item 0 masked
    assert res.per_user["precision@3"].tolist() == [pytest.approx(1 / 3)]


@pytest.mark.parametrize("n", [100, 3000])  # plain and two-stage top-K paths
def test_ties_broken_by_lower_item_index(n):
    ds = Dataset("ties", 3, n, train=_csr([[0], [0], [0]], n), test=_csr([[3, 40, 77, 99], [50], [9]], n))
    scores = torch.zeros(3, n)
    scores[1, 50] = scores[1, 7] = 1.0  # user 1: the test item ties with item 7 for rank 1; 7 goes first
    scores[2, 12] = scores[2, 9] = 1.0  # user 2: test item 9 ties with item 12; 9 goes first
    res = evaluate_full(_lookup(scores), ds, ks=(1, 5))
    pu = {k: v.tolist() for k, v in res.per_user.items()}
    # user 0: all scores equal, item 0 masked -> ranking 1, 2, 3, 4, 5: test item 3 at rank 3
    assert pu["recall@5"][0] == 0.25 and pu["mrr@5"][0] == pytest.approx(1 / 3)
    assert pu["hit@1"][1:] == [0.0, 1.0]
    assert pu["mrr@5"][1:] == [0.5, 1.0]
    assert pu["ndcg@5"][1] == pytest.approx(1 / math.log2(3))


def _random_dataset(seed: int = 0, n_users: int = 40, n_items: int = 60) -> Dataset:
    rng = np.random.default_rng(seed)
    draw = rng.random((n_users, n_items))
    train = sp.csr_matrix((draw < 0.15).astype(np.float32))
    valid = sp.csr_matrix(((draw >= 0.15) & (draw < 0.2)).astype(np.float32))
    test = sp.csr_matrix(((draw >= 0.2) & (draw < 0.3) & (rng.random(n_users) < 0.85)[:, None]).astype(np.float32))
    return Dataset("random", n_users, n_items, train=train, valid=valid, test=test)


def _reference_full(scores: np.ndarray, ds: Dataset, split: str, k: int) -> dict[str, dict[int, float]]:
    """One user at a time: mask with numpy, sort, then the textbook definitions."""
    seen, target = ds.seen(split).toarray() > 0, ds.split(split).toarray() > 0
    out: dict[str, dict[int, float]] = {m: {} for m in ("recall", "ndcg", "precision", "map", "hit", "mrr")}
    for u in range(ds.n_users):
        rel = set(np.flatnonzero(target[u]))
        if not rel:
            continue
        row = np.where(seen[u], -np.inf, scores[u])
        ranked = np.argsort(-row, kind="stable")[:k]
        hit_ranks = [r + 1 for r, i in enumerate(ranked) if i in rel]
        out["recall"][u] = len(hit_ranks) / len(rel)
        out["precision"][u] = len(hit_ranks) / k
        out["hit"][u] = float(bool(hit_ranks))
        out["ndcg"][u] = sum(1 / math.log2(r + 1) for r in hit_ranks) / sum(
            1 / math.log2(r + 1) for r in range(1, min(len(rel), k) + 1))
        out["map"][u] = sum((j + 1) / r for j, r in enumerate(hit_ranks)) / min(len(rel), k)
        out["mrr"][u] = 1 / hit_ranks[0] if hit_ranks else 0.0
    return out


@pytest.mark.parametrize("batch_size", [1, 7, None])
def test_full_matches_loop_reference(batch_size):
    ds = _random_dataset()
    scores = torch.from_numpy(np.random.default_rng(1).random((ds.n_users, ds.n_items)).astype(np.float32))
    ks = (1, 5, 10, 20)
    res = evaluate_full(_lookup(scores), ds, "test", ks=ks, batch_size=batch_size)
    assert res.n_users_evaluated + res.n_users_skipped == ds.n_users and res.n_users_skipped > 0
    for k in ks:
        ref = _reference_full(scores.numpy(), ds, "test", k)
        for m, per in ref.items():
            assert list(per) == res.users.tolist()
            np.testing.assert_allclose(res.per_user[f"{m}@{k}"], list(per.values()), rtol=1e-9, err_msg=f"{m}@{k}")
            assert res[f"{m}@{k}"] == pytest.approx(np.mean(list(per.values())))


def test_user_subset_and_json_round_trip():
    ds = _random_dataset()
    scores = torch.rand(ds.n_users, ds.n_items, generator=torch.Generator().manual_seed(2))
    full = evaluate_full(_lookup(scores), ds, ks=(10,), metrics=("ndcg",))
    subset = [int(u) for u in full.users[::3]]
    part = evaluate_full(_lookup(scores), ds, ks=(10,), metrics=("ndcg",), users=[*subset, subset[0]])
    assert part.users.tolist() == subset
    np.testing.assert_allclose(part.per_user["ndcg@10"], full.per_user["ndcg@10"][::3])
    back = EvalResult.from_dict(json.loads(json.dumps(full.to_dict(per_user=True))))
    assert back.metrics == full.metrics and back.users.tolist() == full.users.tolist()
    np.testing.assert_array_equal(back.per_user["ndcg@10"], full.per_user["ndcg@10"])
    assert "per_user" not in full.to_dict() and full.to_dict()["n_users_skipped"] == full.n_users_skipped


class _TableModel(Recommender):
    """A fixed score table as a Recommender, recording the evaluator's calls."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__(table.shape[0], table.shape[1])
        self.table = torch.nn.Parameter(table.clone())
        self.prepared: list[str] = []

    def prepare_eval(self, dataset, split):
        assert not self.training and not torch.is_grad_enabled()
        self.prepared.append(split)

    def full_scores(self, users):
        return self.table[users]

    def score(self, users, items):
        return self.table[users.unsqueeze(1), items]


def test_recommender_path_matches_callable_and_restores_mode():
    model = _TableModel(HAND_SCORES)
    model.train()
    res = evaluate_full(model, _hand_dataset(), "test", ks=(1, 3))
    assert model.prepared == ["test"] and model.training
    ref = evaluate_full(_lookup(HAND_SCORES), _hand_dataset(), "test", ks=(1, 3))
    assert res.metrics == ref.metrics


def test_full_errors():
    ds = _hand_dataset()
    bad = HAND_SCORES.clone()
    bad[1, 3] = float("nan")
    with pytest.raises(DistillrecError, match="NaN"):
        evaluate_full(_lookup(bad), ds, ks=(2,))
    with pytest.raises(DistillrecError, match="expected"):
        evaluate_full(lambda u: HAND_SCORES[u][:, :4], ds, ks=(2,))
    with pytest.raises(ValueError, match="exceeds the number of items"):
        evaluate_full(_lookup(HAND_SCORES), ds, ks=(7,))
    with pytest.raises(ValueError, match="unknown split"):
        evaluate_full(_lookup(HAND_SCORES), ds, "tset")
    with pytest.raises(ValueError, match="internal ids"):
        evaluate_full(_lookup(HAND_SCORES), ds, ks=(2,), users=[5])
    with pytest.raises(TypeError, match="Recommender or a callable"):
        evaluate_full(42, ds, ks=(2,))


def _sampled_dataset() -> Dataset:
    n = 10
    cands = np.array([[5, 6, 7, 8], [5, 6, 7, 8], [5, 6, 7, 8]])
    return Dataset("loo", 3, n, train=_csr([[9], [9], [9]], n), test=_csr([[0], [1, 2], []], n),
                   candidates={"test": cands}, protocol="sampled")


SAMPLED_SCORES = torch.tensor([
    # user 0: target 0 scores 0.5; candidates 5..8 score 0.9, 0.5 (tie), 0.1, 0.7 -> 2 strictly higher, p = 3
    [0.5, 0, 0, 0, 0, 0.9, 0.5, 0.1, 0.7, 0],
    # user 1: target 1 beats every candidate (p = 1); target 2 is below all four (p = 5)
    [0, 2.0, -1.0, 0, 0, 0.9, 0.5, 0.1, 0.7, 0],
    [0.0] * 10,
])


def test_sampled_hand_values():
    res = evaluate_sampled(lambda u, items: SAMPLED_SCORES[u.unsqueeze(1), items], _sampled_dataset(), ks=(1, 4, 5))
    assert res.users.tolist() == [0, 1] and res.n_users_skipped == 1 and res.n_targets == 3
    pu = {k: v.tolist() for k, v in res.per_user.items()}
    assert pu["hit@1"] == [0.0, 0.5]
    assert pu["hit@4"] == [1.0, 0.5]
    assert pu["hit@5"] == [1.0, 1.0]
    assert pu["ndcg@5"] == pytest.approx([1 / math.log2(4), (1 + 1 / math.log2(6)) / 2])
    assert pu["mrr@5"] == pytest.approx([1 / 3, (1 + 1 / 5) / 2])
    assert pu["mrr@4"] == pytest.approx([1 / 3, 0.5])
    assert res["hit@1"] == 0.25 and res.extra["n_candidates"] == 4
    model = _TableModel(SAMPLED_SCORES)
    assert evaluate_sampled(model, _sampled_dataset(), ks=(1, 4, 5), batch_size=1).metrics == res.metrics
    assert model.prepared == ["test"]


def test_sampled_errors():
    ds = _sampled_dataset()
    with pytest.raises(DistillrecError, match="no sampled candidates for split 'valid'"):
        evaluate_sampled(_TableModel(SAMPLED_SCORES), Dataset("v", 3, 10, train=ds.train, test=ds.test,
                                                             valid=ds.test, candidates=ds.candidates), "valid")
    ds.candidates["test"] = np.array([[5, 6, 7, 10]] * 3)
    with pytest.raises(DistillrecError, match="outside"):
        evaluate_sampled(_TableModel(SAMPLED_SCORES), ds)
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_sampled(_TableModel(SAMPLED_SCORES), _sampled_dataset(), metrics=("recall",))
