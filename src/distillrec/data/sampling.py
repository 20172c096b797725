"""Negative sampling: per-epoch training negatives and fixed evaluation candidates.

Both are rejection samplers over the whole batch at once: draw uniformly, test membership of every
(user, item) pair with one ``searchsorted`` into the sorted keys ``user * n_items + item`` of the observed
pairs, redraw only the rejected slots. No Python loop over users, no dense users × items matrix.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def pair_keys(matrix: sp.spmatrix) -> np.ndarray:
    """Sorted int64 keys ``row * n_cols + col`` of the stored entries of a sparse matrix."""
    csr = sp.csr_matrix(matrix)
    rows = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    keys = rows * csr.shape[1] + csr.indices.astype(np.int64)
    return keys if csr.has_sorted_indices else np.sort(keys)


def _contains_np(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    if keys.size == 0:
        return np.zeros(query.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return keys[pos] == query


def _contains_torch(keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    if keys.numel() == 0:
        return torch.zeros(query.shape, dtype=torch.bool, device=query.device)
    pos = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
    return keys[pos] == query


def sample_negatives(
    train: sp.spmatrix,
    users: np.ndarray | torch.Tensor,
    n_negatives: int,
    generator: torch.Generator | np.random.Generator | None = None,
) -> torch.Tensor | np.ndarray:
    """``[len(users), n_negatives]`` items drawn uniformly (with replacement) from the items *not* in each
    user's row of ``train``.

    With a ``torch.Generator`` (or none) it returns a LongTensor: on a CUDA generator the rejection loop runs
    on that device; on the CPU numpy draws it, seeded from (and advancing) the generator. With a
    ``numpy.random.Generator`` it returns an int64 array. The trainer calls this once per
    epoch for all training positives (``users = train row of each positive``).
    """
    n_users, n_items = train.shape
    counts = np.diff(sp.csr_matrix(train).indptr)
    users_np = users.detach().cpu().numpy() if isinstance(users, torch.Tensor) else np.asarray(users)
    users_np = users_np.astype(np.int64).reshape(-1)
    if users_np.size and (users_np.min() < 0 or users_np.max() >= n_users):
        raise ValueError(f"user ids must lie in [0, {n_users}), got {users_np.min()}..{users_np.max()}")
    if users_np.size and (counts[users_np] >= n_items).any():
        full = users_np[counts[users_np] >= n_items][0]
        raise ValueError(f"user {full} has every item in train: no negative to sample")
    if isinstance(generator, np.random.Generator):
        return _negatives_np(pair_keys(train), users_np, n_items, n_negatives, generator)
    device = generator.device if generator is not None else torch.device("cpu")
    if device.type == "cpu":
        # On the CPU numpy does the same work several times faster than torch's small-tensor ops; the seed
        # comes from the torch generator, so the draw still follows (and advances) its state.
        seed = int(torch.randint(2**62, (1,), generator=generator).item())
        out_np = _negatives_np(pair_keys(train), users_np, n_items, n_negatives, np.random.default_rng(seed))
        return torch.from_numpy(out_np)
    keys = torch.from_numpy(pair_keys(train)).to(device)
    return _negatives_torch(keys, torch.from_numpy(users_np).to(device), n_items, n_negatives, generator)


def _negatives_torch(
    keys: torch.Tensor, users: torch.Tensor, n_items: int, n_negatives: int, generator: torch.Generator | None
) -> torch.Tensor:
    """The rejection loop on tensors, on ``users``' device (used for CUDA generators)."""
    device = users.device
    u = users.unsqueeze(1)
    out = torch.randint(n_items, (len(users), n_negatives), generator=generator, device=device)
    bad = _contains_torch(keys, u * n_items + out)
    while bool(bad.any()):
        rows, cols = bad.nonzero(as_tuple=True)
        redraw = torch.randint(n_items, (rows.numel(),), generator=generator, device=device)
        out[rows, cols] = redraw
        bad[rows, cols] = _contains_torch(keys, u[rows, 0] * n_items + redraw)
    return out


def _negatives_np(
    keys: np.ndarray, users: np.ndarray, n_items: int, n_negatives: int, rng: np.random.Generator
) -> np.ndarray:
    out = rng.integers(n_items, size=(len(users), n_negatives), dtype=np.int64)
    bad = _contains_np(keys, users[:, None] * n_items + out)
    while bad.any():
        rows, cols = np.nonzero(bad)
        redraw = rng.integers(n_items, size=rows.size, dtype=np.int64)
        out[rows, cols] = redraw
        bad[rows, cols] = _contains_np(keys, users[rows] * n_items + redraw)
    return out


def sample_candidates(observed: sp.spmatrix, n_candidates: int, seed: int = 0, max_rounds: int = 50) -> np.ndarray:
    """Fixed evaluation negatives: ``[n_users, n_candidates]`` distinct items per user, none ever observed by
    that user (``observed`` = the union of all splits), in random order; the same seed gives the same array.

    Rejection rounds draw a few more items than needed per unfinished user, drop observed and repeated ones
    and keep the first ``n_candidates`` valid draws; the rare user whose unobserved items barely exceed
    ``n_candidates`` is finished by ranking random keys over its whole row (a small batch of rows).
    """
    observed = sp.csr_matrix(observed)
    n_users, n_items = observed.shape
    n = int(n_candidates)
    available = n_items - np.diff(observed.indptr)
    if n <= 0:
        raise ValueError(f"n_candidates must be positive, got {n_candidates}")
    if (available < n).any():
        bad = int(np.flatnonzero(available < n)[0])
        raise ValueError(f"user {bad} has only {available[bad]} unobserved items, fewer than {n} candidates")
    rng = np.random.default_rng(seed)
    keys = pair_keys(observed)
    out = np.full((n_users, n), -1, dtype=np.int64)
    todo = np.arange(n_users)
    # Draw enough for a typical row (its observed items plus repeats among the draws, with slack); rows that
    # fall short go round again with their valid picks kept.
    p_reject = float(np.mean(n_items - available) + n / 2) / n_items
    extra = int(np.ceil(n * min(p_reject, 1.0) * 2)) + 16
    for _ in range(max_rounds):
        if todo.size == 0:
            break
        draws = rng.integers(n_items, size=(todo.size, n + extra), dtype=np.int64)
        pool = np.concatenate([out[todo], draws], axis=1)  # previous valid picks first, so they stay
        # Sort each row (stable: draw order among equal items): repeats become neighbours, and the flattened
        # keys come out globally sorted, which makes the membership search cache-friendly.
        order = np.argsort(pool, axis=1, kind="stable")
        ranked = np.take_along_axis(pool, order, axis=1)
        ok = (ranked >= 0) & ~_contains_np(keys, todo[:, None] * n_items + ranked)
        ok[:, 1:] &= ranked[:, 1:] != ranked[:, :-1]
        valid = np.empty_like(ok)
        np.put_along_axis(valid, order, ok, axis=1)
        # Keep the first n valid entries of each row, in draw order (a scatter by running count, no sort).
        slot = np.cumsum(valid, axis=1, dtype=np.int32) - 1
        take = valid & (slot < n)
        rows = np.broadcast_to(np.arange(todo.size)[:, None], pool.shape)
        picked = np.full((todo.size, n), -1, dtype=np.int64)
        picked[rows[take], slot[take]] = pool[take]
        out[todo] = picked
        todo = todo[slot[:, -1] + 1 < n]
    for start in range(0, todo.size, 256):
        rows = todo[start : start + 256]
        scores = rng.random((rows.size, n_items))
        sub = observed[rows]
        scores[np.repeat(np.arange(rows.size), np.diff(sub.indptr)), sub.indices] = np.inf
        out[rows] = np.argsort(scores, axis=1)[:, :n]
    return out
