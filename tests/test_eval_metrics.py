"""Ranking metrics against hand-computed values and a plain reference implementation."""

import math

import numpy as np
import pytest
import torch

from distillrec.evaluate import rank_metrics, ranking_metrics


def _one(hits, n_rel, ks, metrics=("recall", "ndcg", "precision", "map", "hit", "mrr")):
    out = ranking_metrics(torch.tensor([hits], dtype=torch.bool), torch.tensor([n_rel]), ks, metrics)
    return {k: float(v[0]) for k, v in out.items()}


def test_three_relevant_hits_at_ranks_1_and_4():
    m = _one([1, 0, 0, 1, 0], n_rel=3, ks=(3, 5))
    idcg3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # min(3, K) = 3 ideal hits at ranks 1..3
    # K = 5: 2 hits of 3 relevant
    assert m["recall@5"] == pytest.approx(2 / 3)
    assert m["precision@5"] == pytest.approx(2 / 5)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(5)) / idcg3)
    assert m["map@5"] == pytest.approx((1 / 1 + 2 / 4) / 3)  # precision at each hit, over min(3, 5)
    assert m["hit@5"] == 1.0
    assert m["mrr@5"] == 1.0
    # K = 3: only the rank-1 hit counts
    assert m["recall@3"] == pytest.approx(1 / 3)
    assert m["precision@3"] == pytest.approx(1 / 3)
    assert m["ndcg@3"] == pytest.approx(1 / idcg3)
    assert m["map@3"] == pytest.approx(1 / 3)


def test_fewer_relevant_than_k_caps_idcg_and_map():
    # one relevant item, found at rank 2
    m = _one([0, 1, 0, 0, 0], n_rel=1, ks=(1, 5))
    assert m["recall@5"] == 1.0
    assert m["precision@5"] == pytest.approx(1 / 5)
    assert m["ndcg@5"] == pytest.approx(1 / math.log2(3))  # IDCG = 1 (one ideal hit at rank 1)
    assert m["map@5"] == pytest.approx(1 / 2)  # precision@2 = 1/2, divided by min(1, 5) = 1
    assert m["mrr@5"] == pytest.approx(1 / 2)
    assert all(m[f"{x}@1"] == 0.0 for x in ("recall", "ndcg", "precision", "map", "hit", "mrr"))


def test_more_relevant_than_k():
    m = _one([0, 1, 1, 0, 1], n_rel=10, ks=(5,))
    assert m["recall@5"] == pytest.approx(3 / 10)  # LightGCN convention: not capped at K
    dcg = 1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(6)
    idcg = sum(1 / math.log2(r + 1) for r in range(1, 6))
    assert m["ndcg@5"] == pytest.approx(dcg / idcg)
    assert m["map@5"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 5)
    assert m["mrr@5"] == pytest.approx(1 / 2)
    assert m["precision@5"] == pytest.approx(3 / 5)


def test_no_hits_and_metric_order():
    out = ranking_metrics(torch.zeros(2, 4, dtype=torch.bool), torch.tensor([1, 3]), ks=(4, 2), metrics=("ndcg", "hit"))
    assert list(out) == ["ndcg@2", "ndcg@4", "hit@2", "hit@4"]
    assert all(v.tolist() == [0.0, 0.0] for v in out.values())


def test_bad_input():
    with pytest.raises(ValueError, match="at least one relevant"):
        ranking_metrics(torch.zeros(1, 5, dtype=torch.bool), torch.tensor([0]), ks=(5,))
    with pytest.raises(ValueError, match="fewer than the largest K"):
        ranking_metrics(torch.zeros(1, 5, dtype=torch.bool), torch.tensor([1]), ks=(10,))
    with pytest.raises(ValueError, match="unknown metric"):
        ranking_metrics(torch.zeros(1, 5, dtype=torch.bool), torch.tensor([1]), ks=(5,), metrics=("auc",))
    with pytest.raises(ValueError, match="positive integers"):
        ranking_metrics(torch.zeros(1, 5, dtype=torch.bool), torch.tensor([1]), ks=(0,))


def _reference(hits: np.ndarray, n_rel: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Textbook definitions, one user at a time."""
    out = {m: [] for m in ("recall", "ndcg", "precision", "map", "hit", "mrr")}
    for row, n in zip(hits, n_rel):
        top = row[:k]
        h = top.sum()
        out["recall"].append(h / n)
        out["precision"].append(h / k)
        out["hit"].append(float(h > 0))
        dcg = sum(1 / math.log2(r + 2) for r in range(k) if top[r])
        idcg = sum(1 / math.log2(r + 2) for r in range(min(n, k)))
        out["ndcg"].append(dcg / idcg)
        ap, seen = 0.0, 0
        for r in range(k):
            if top[r]:
                seen += 1
                ap += seen / (r + 1)
        out["map"].append(ap / min(n, k))
        first = next((r for r in range(k) if top[r]), None)
        out["mrr"].append(0.0 if first is None else 1 / (first + 1))
    return {m: np.array(v) for m, v in out.items()}


def test_matches_reference_on_random_data():
    rng = np.random.default_rng(0)
    hits = rng.random((200, 50)) < 0.15
    n_rel = hits.sum(1) + rng.integers(0, 8, 200)
    n_rel[n_rel == 0] = 1
    ks = (1, 3, 10, 20, 50)
    out = ranking_metrics(torch.from_numpy(hits), torch.from_numpy(n_rel), ks)
    for k in ks:
        ref = _reference(hits, n_rel, k)
        for m, v in ref.items():
            np.testing.assert_allclose(out[f"{m}@{k}"].numpy(), v, rtol=1e-12, err_msg=f"{m}@{k}")


def test_rank_metrics_hand_values():
    out = rank_metrics(torch.tensor([1, 3, 7, 500]), ks=(5, 10))
    assert out["hit@5"].tolist() == [1, 1, 0, 0]
    assert out["hit@10"].tolist() == [1, 1, 1, 0]
    np.testing.assert_allclose(out["ndcg@5"].numpy(), [1.0, 1 / math.log2(4), 0, 0])
    np.testing.assert_allclose(out["ndcg@10"].numpy(), [1.0, 0.5, 1 / math.log2(8), 0])
    np.testing.assert_allclose(out["mrr@10"].numpy(), [1.0, 1 / 3, 1 / 7, 0])
    with pytest.raises(ValueError, match="1-based"):
        rank_metrics(torch.tensor([0]))
