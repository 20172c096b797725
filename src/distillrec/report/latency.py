"""Serving cost: scoring latency per user (all items scored + top-K) and model size."""

from __future__ import annotations

import time

import torch

from distillrec.data.dataset import Dataset
from distillrec.models.base import Recommender


@torch.no_grad()
def scoring_latency(model: Recommender, dataset: Dataset, n_users: int = 512, batch_size: int = 128,
                    k: int = 20, repeats: int = 3, split: str = "test") -> float:
    """Milliseconds per user to score every item and take the top-k, best of ``repeats`` passes.

    Measured in batches, as a recommender serves requests; a warm-up pass runs first so one-off costs (graph
    propagation caches, allocator growth) are excluded — ``prepare_eval`` is part of model loading.
    """
    model.eval()
    model.prepare_eval(dataset, split)
    device = model.device
    users = torch.arange(min(n_users, dataset.n_users), device=device)
    k = min(k, dataset.n_items)

    def one_pass() -> float:
        t0 = time.perf_counter()
        for s in range(0, len(users), batch_size):
            scores = model.full_scores(users[s : s + batch_size])
            torch.topk(scores, k, dim=1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    one_pass()
    best = min(one_pass() for _ in range(repeats))
    return 1000.0 * best / len(users)
