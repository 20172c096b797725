"""Top-K ranking metrics from the relevance of each user's top list, vectorised over users and K.

Input: ``hits [B, K_max]`` — 1 where the item at rank r (0-based column) is relevant, 0 otherwise — and
``n_relevant [B]`` — how many relevant (held-out) items the user has, whether or not they were retrieved.
One pass computes every metric at every K from cumulative sums over the columns of ``hits``.

Conventions (binary relevance, r = 1-based rank):

- ``recall@K``    = hits@K / n_relevant. The LightGCN/NGCF convention: the denominator is *not* capped at K,
  so a user with more than K relevant items cannot reach 1.0.
- ``precision@K`` = hits@K / K.
- ``ndcg@K``      = DCG@K / IDCG@K with DCG = Σ rel_r / log2(r + 1); IDCG places min(n_relevant, K) hits first.
- ``map@K``       = Σ_r rel_r · precision@r / min(n_relevant, K) (AP normalised by the best reachable count).
- ``hit@K``       = 1 if at least one relevant item is in the top K.
- ``mrr@K``       = 1 / (rank of the first relevant item) if it is within the top K, else 0.

Ties in the scores are resolved before these functions see anything: ``evaluate.topk`` ranks equal scores by
item index, lower first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

METRICS = ("recall", "ndcg", "precision", "map", "hit", "mrr")


def check_request(ks: Iterable[int], metrics: Iterable[str], allowed: Sequence[str] = METRICS) -> tuple:
    """Validate and normalise a (ks, metrics) request; returns (sorted unique ks, metrics tuple)."""
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be a non-empty list of positive integers, got {ks}")
    metrics = tuple(dict.fromkeys(str(m).lower() for m in metrics))
    unknown = [m for m in metrics if m not in allowed]
    if unknown or not metrics:
        raise ValueError(f"unknown metric(s) {unknown}; expected some of {', '.join(allowed)}")
    return ks, metrics


def ranking_metrics(
    hits: Tensor,
    n_relevant: Tensor,
    ks: Iterable[int] = (10, 20),
    metrics: Iterable[str] = METRICS,
) -> dict[str, Tensor]:
    """Per-user metrics ``{"recall@20": Tensor[B], ...}`` from the top list's relevance.

    ``hits`` is ``[B, K_max]`` (bool or 0/1 float) with ``K_max >= max(ks)``; ``n_relevant`` is ``[B]`` and
    must be ≥ 1 for every row (users without held-out items are the caller's to skip).
    """
    ks, metrics = check_request(ks, metrics)
    if hits.dim() != 2:
        raise ValueError(f"hits must be [users, K], got shape {tuple(hits.shape)}")
    if hits.shape[1] < ks[-1]:
        raise ValueError(f"hits has {hits.shape[1]} columns, fewer than the largest K={ks[-1]}")
    n_relevant = torch.as_tensor(n_relevant, device=hits.device)
    if n_relevant.shape != hits.shape[:1]:
        raise ValueError(f"n_relevant has shape {tuple(n_relevant.shape)}, expected ({hits.shape[0]},)")
    if hits.shape[0] and int(n_relevant.min()) < 1:
        raise ValueError("every user needs at least one relevant item (n_relevant >= 1)")

    k_max = ks[-1]
    hits = hits[:, :k_max].to(torch.float64)  # float64: sums of up to K terms stay exact enough to compare
    n_rel = n_relevant.to(torch.float64)
    ranks = torch.arange(1, k_max + 1, device=hits.device, dtype=torch.float64)
    cum_hits = hits.cumsum(1)  # hits within the top r, r = 1..K_max
    out: dict[str, Tensor] = {}
    need = set(metrics)
    if "ndcg" in need:
        discount = 1.0 / torch.log2(ranks + 1.0)
        cum_dcg = (hits * discount).cumsum(1)
        cum_idcg = discount.cumsum(0)  # IDCG with j ideal hits is cum_idcg[j - 1]
    if "map" in need:
        cum_ap = (hits * cum_hits / ranks).cumsum(1)  # Σ rel_r · precision@r
    if "mrr" in need:
        first = hits * (cum_hits == 1)  # 1 only at the first relevant position
        cum_rr = (first / ranks).cumsum(1)
    for m in metrics:  # metric-major key order: recall@10, recall@20, ndcg@10, ...
        for k in ks:
            col = k - 1
            h = cum_hits[:, col]
            capped = torch.clamp(n_rel, max=k)
            if m == "recall":
                v = h / n_rel
            elif m == "precision":
                v = h / k
            elif m == "hit":
                v = (h > 0).to(torch.float64)
            elif m == "ndcg":
                v = cum_dcg[:, col] / cum_idcg[capped.long() - 1]
            elif m == "map":
                v = cum_ap[:, col] / capped
            else:  # mrr
                v = cum_rr[:, col]
            out[f"{m}@{k}"] = v
    return out


def rank_metrics(
    ranks: Tensor, ks: Iterable[int] = (5, 10, 20), metrics: Iterable[str] = ("hit", "ndcg", "mrr")
) -> dict[str, Tensor]:
    """Metrics of one target per row from its 1-based rank p (sampled protocol, DE-RRD convention).

    ``hit@K`` = 1[p ≤ K], ``ndcg@K`` = 1[p ≤ K] / log2(p + 1), ``mrr@K`` = 1[p ≤ K] / p.
    """
    ks, metrics = check_request(ks, metrics, allowed=("hit", "ndcg", "mrr"))
    p = ranks.to(torch.float64)
    if p.numel() and float(p.min()) < 1:
        raise ValueError("ranks are 1-based and must be >= 1")
    gains = {"hit": torch.ones_like(p), "ndcg": 1.0 / torch.log2(p + 1.0), "mrr": 1.0 / p}
    out: dict[str, Tensor] = {}
    for m in metrics:
        for k in ks:
            out[f"{m}@{k}"] = (p <= k).to(torch.float64) * gains[m]
    return out
