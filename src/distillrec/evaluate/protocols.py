"""Evaluation protocols: full ranking over every item, and sampled candidates (DE-RRD / SASRec papers).

Both accept either a ``Recommender`` (switched to eval mode, ``prepare_eval(dataset, split)`` called, run
under ``torch.no_grad()``, its training mode restored afterwards) or a plain callable:
``users -> scores [B, n_items]`` for the full protocol, ``(users, items [B, N]) -> scores [B, N]`` for the
sampled one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.evaluate.metrics import METRICS, check_request, rank_metrics, ranking_metrics
from distillrec.evaluate.result import EvalResult
from distillrec.evaluate.topk import topk
from distillrec.models.base import Recommender
from distillrec.utils import DistillrecError, resolve_device

# Scores held per batch in the full protocol. On CPU a block of ~16 MB keeps the allocator reusing the same
# memory (larger blocks are mmap'ed and page-faulted afresh for every batch) and stays cache-friendly.
_CPU_BATCH_ELEMENTS = 1 << 22
_GPU_BATCH_ELEMENTS = 1 << 28


def default_batch_size(n_items: int, device: torch.device) -> int:
    budget = _GPU_BATCH_ELEMENTS if device.type == "cuda" else _CPU_BATCH_ELEMENTS
    return max(1, budget // max(1, n_items))


@contextmanager
def _scorer(model_or_fn: object, dataset: Dataset, split: str, full: bool, device) -> Iterator[tuple]:
    """Yield (score function, device) for a Recommender or a callable, in eval mode and without grad."""
    with torch.no_grad():
        if isinstance(model_or_fn, Recommender):
            model = model_or_fn
            was_training = model.training
            model.eval()
            try:
                model.prepare_eval(dataset, split)
                fn = model.full_scores if full else model.score
                yield fn, resolve_device(device) if device is not None else model.device
            finally:
                if was_training:
                    model.train()  # also drops the caches prepare_eval built
        elif callable(model_or_fn):
            yield model_or_fn, resolve_device(device if device is not None else "cpu")
        else:
            raise TypeError(f"expected a Recommender or a callable, got {type(model_or_fn).__name__}")


def _select_users(dataset: Dataset, target: sp.csr_matrix, users: Iterable[int] | None) -> tuple:
    """Users to evaluate (those with ≥1 held-out item) and how many requested users were skipped."""
    if users is None:
        cand = np.arange(dataset.n_users, dtype=np.int64)
    else:
        if isinstance(users, Tensor):
            users = users.cpu().numpy()
        cand = np.unique(np.asarray(users if isinstance(users, np.ndarray) else list(users), dtype=np.int64))
        if cand.size and (cand[0] < 0 or cand[-1] >= dataset.n_users):
            raise ValueError(f"users must be internal ids in [0, {dataset.n_users}); got {cand[0]}..{cand[-1]}")
    n_target = np.diff(target.indptr)
    keep = cand[n_target[cand] > 0]
    return keep, int(cand.size - keep.size)


def batch_offsets(rows: sp.csr_matrix, bs: int, device: torch.device) -> tuple[np.ndarray, Tensor]:
    """Offsets ``(r mod bs) * n_cols + col`` of every stored entry, and the CSR row pointer to slice them.

    The entries of batch [s, e) are ``flat[ptr[s]:ptr[e]]``, already relative to that batch's score block.
    """
    ptr = rows.indptr.astype(np.int64)
    local_row = np.repeat(np.arange(rows.shape[0], dtype=np.int64) % bs, np.diff(ptr))
    flat = local_row * rows.shape[1] + rows.indices.astype(np.int64)
    return ptr, torch.from_numpy(flat).to(device)


def _finish(protocol: str, split: str, ks: tuple, users: np.ndarray, parts: dict[str, list[Tensor]],
            n_skipped: int, n_targets: int, t0: float, extra: dict) -> EvalResult:
    per_user = {k: torch.cat(v).cpu().numpy() if v else np.zeros(0) for k, v in parts.items()}
    means = {k: float(v.mean()) if v.size else float("nan") for k, v in per_user.items()}
    return EvalResult(protocol=protocol, split=split, ks=ks, metrics=means, users=users, per_user=per_user,
                      n_users_evaluated=int(users.size), n_users_skipped=n_skipped, n_targets=n_targets,
                      seconds=time.perf_counter() - t0, extra=extra)


def evaluate_full(
    model_or_fn: Recommender | Callable[[Tensor], Tensor],
    dataset: Dataset,
    split: str = "test",
    ks: Iterable[int] = (10, 20),
    metrics: Iterable[str] = METRICS,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    users: Iterable[int] | None = None,
    exclude_seen: bool = True,
) -> EvalResult:
    """Rank every item for each user with held-out items in ``split``; Recall/NDCG/... at each K.

    The user's ``dataset.seen(split)`` items (training items and the other held-out split) are set to -inf
    before the top-K, by scattering that CSR row slice into the batch's score rows; a masked item is never a
    hit. Ties are broken by item index, lower first (``evaluate.topk``): among equal scores the lower internal
    item id ranks higher and is the one kept at the K cut-off, on every device and batch size.
    ``batch_size`` users are scored at a time (memory: batch_size × n_items scores, modified in place; default
    ~16 MB of scores per batch on CPU, 1 GB on GPU). ``users`` restricts evaluation to a subset (one shard).
    """
    t0 = time.perf_counter()
    ks, metrics = check_request(ks, metrics)
    target = dataset.split(split)
    n_items, k_max = dataset.n_items, ks[-1]
    if k_max > n_items:
        raise ValueError(f"K={k_max} exceeds the number of items ({n_items}) of {dataset.name!r}")
    eval_users, n_skipped = _select_users(dataset, target, users)
    n_eval = len(eval_users)
    top_hits = torch.zeros(n_eval, k_max, dtype=torch.bool)
    nan_rows = torch.zeros(n_eval, dtype=torch.bool)
    with _scorer(model_or_fn, dataset, split, True, device) as (fn, dev):
        bs = int(batch_size) if batch_size else default_batch_size(n_items, dev)
        if bs < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        bs = min(bs, max(1, n_eval))
        # Everything a batch needs is prepared once, up front, as flat offsets into a [bs, n_items] block:
        # a batch then only slices these tensors (no scipy, no per-batch index arithmetic).
        tgt_ptr, tgt_flat = batch_offsets(target[eval_users], bs, dev)
        if exclude_seen:
            seen_ptr, seen_flat = batch_offsets(dataset.seen(split)[eval_users], bs, dev)
        n_rel = torch.from_numpy(np.diff(tgt_ptr))
        is_target = torch.zeros(bs * n_items, dtype=torch.bool, device=dev)  # reused, reset after each batch
        users_t = torch.from_numpy(eval_users).to(dev)
        for s in range(0, n_eval, bs):
            e = min(s + bs, n_eval)
            scores = fn(users_t[s:e])
            if scores.shape != (e - s, n_items):
                raise DistillrecError(
                    f"scores have shape {tuple(scores.shape)}, expected ({e - s}, {n_items}) for {dataset.name!r}"
                )
            if scores.device != dev:
                raise DistillrecError(f"scores are on {scores.device} but evaluation runs on {dev}; "
                                      "pass device= to evaluate_full")
            scores = scores.contiguous()
            if exclude_seen:
                scores.view(-1).index_fill_(0, seen_flat[seen_ptr[s] : seen_ptr[e]], float("-inf"))
            top_val, top_idx = topk(scores, k_max)
            del scores
            # hit = the ranked item is a held-out item of the user: mark the batch's targets, gather, unmark
            flat = tgt_flat[tgt_ptr[s] : tgt_ptr[e]]
            is_target.index_fill_(0, flat, True)
            hits = is_target.view(bs, n_items)[: e - s].gather(1, top_idx)
            is_target.index_fill_(0, flat, False)
            hits &= top_val > float("-inf")  # a masked item is never a hit
            top_hits[s:e] = hits.cpu()
            # topk ranks NaN above every number, so a NaN score anywhere in a row shows up in its top list
            nan_rows[s:e] = torch.isnan(top_val).any(1).cpu()
    if bool(nan_rows.any()):
        bad = eval_users[nan_rows.numpy()][:5].tolist()
        raise DistillrecError(f"the model produced NaN scores ranking {split} of {dataset.name!r} (users {bad})")
    values = ranking_metrics(top_hits, n_rel, ks, metrics) if n_eval else {}
    parts = {k: [v] for k, v in values.items()} or {f"{m}@{k}": [] for m in metrics for k in ks}
    return _finish("full", split, ks, eval_users, parts, n_skipped, int(tgt_ptr[-1]), t0,
                   {"exclude_seen": exclude_seen, "batch_size": bs})


def evaluate_sampled(
    model_or_fn: Recommender | Callable[[Tensor, Tensor], Tensor],
    dataset: Dataset,
    split: str = "test",
    ks: Iterable[int] = (5, 10, 20),
    metrics: Iterable[str] = ("hit", "ndcg", "mrr"),
    batch_size: int = 2048,
    device: str | torch.device | None = None,
    users: Iterable[int] | None = None,
) -> EvalResult:
    """Rank each held-out item of ``split`` against the user's ``dataset.candidates[split]`` negatives.

    The 1-based rank is p = 1 + (number of candidates scoring strictly higher than the target): ties count in
    the target's favour, so a constant model gets p = 1. Metrics per target (``metrics.rank_metrics``):
    hit@K = 1[p ≤ K], ndcg@K = 1[p ≤ K]/log2(p+1), mrr@K = 1[p ≤ K]/p. A user with several targets gets the
    mean over them (each ranked against the negatives only). Scoring calls ``score(users [B], items [B, N+1])``
    with the target in column 0.
    """
    t0 = time.perf_counter()
    ks, metrics = check_request(ks, metrics, allowed=("hit", "ndcg", "mrr"))
    target = dataset.split(split)
    if split not in dataset.candidates:
        have = ", ".join(dataset.candidates) or "none"
        raise DistillrecError(f"data set {dataset.name!r} has no sampled candidates for split {split!r} "
                              f"(candidates for: {have}); use evaluate_full or a data set with candidates")
    cands_np = np.asarray(dataset.candidates[split])
    if cands_np.ndim != 2 or cands_np.shape[0] != dataset.n_users:
        raise DistillrecError(f"{dataset.name!r}: candidates[{split!r}] has shape {cands_np.shape}, "
                              f"expected ({dataset.n_users}, N)")
    if cands_np.size and (cands_np.min() < 0 or cands_np.max() >= dataset.n_items):
        raise DistillrecError(f"{dataset.name!r}: candidates[{split!r}] holds item ids outside [0, {dataset.n_items})")
    eval_users, n_skipped = _select_users(dataset, target, users)
    # One (user, target item) pair per held-out interaction of the evaluated users.
    n_t = np.diff(target.indptr)[eval_users]
    sub = target[eval_users]
    pair_pos = torch.repeat_interleave(torch.arange(len(eval_users)), torch.from_numpy(n_t))
    pair_user = torch.from_numpy(eval_users)[pair_pos]
    pair_item = torch.from_numpy(sub.indices.astype(np.int64))
    cands = torch.from_numpy(cands_np.astype(np.int64))
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    per_pair: dict[str, list[Tensor]] = {}
    with _scorer(model_or_fn, dataset, split, False, device) as (fn, dev):
        for s in range(0, len(pair_user), batch_size):
            u = pair_user[s : s + batch_size]
            items = torch.cat([pair_item[s : s + batch_size, None], cands[u]], dim=1)
            scores = fn(u.to(dev), items.to(dev))
            if scores.shape != items.shape:
                raise DistillrecError(f"scores have shape {tuple(scores.shape)}, expected {tuple(items.shape)}")
            if torch.isnan(scores).any():
                raise DistillrecError(f"the model produced NaN scores when ranking {split} of {dataset.name!r}")
            rank = 1 + (scores[:, 1:] > scores[:, :1]).sum(1)
            for k, v in rank_metrics(rank, ks, metrics).items():
                per_pair.setdefault(k, []).append(v.cpu())
    parts: dict[str, list[Tensor]] = {}
    counts = torch.from_numpy(n_t).to(torch.float64)
    for k, chunks in per_pair.items():
        total = torch.zeros(len(eval_users), dtype=torch.float64).index_add_(0, pair_pos, torch.cat(chunks))
        parts[k] = [total / counts]
    if not parts:
        parts = {f"{m}@{k}": [] for m in metrics for k in ks}
    return _finish("sampled", split, ks, eval_users, parts, n_skipped, len(pair_user), t0,
                   {"n_candidates": int(cands_np.shape[1])})
