"""Train/valid/test splits, seeded and vectorised over all users at once.

Every function takes the internal user code of each interaction row and returns one split code per row:
``TRAIN`` (0), ``VALID`` (1) or ``TEST`` (2). The per-user splits share one mechanism: order each user's rows
by a key (random for the ratio split and random leave-one-out, the timestamp for temporal ones, the file
position for sequences), then send the last ``n_test`` rows of the user to test and the ``n_valid`` before
them to valid. One ``lexsort`` does it for every user; there is no Python loop per user (except in
``split_shuffle_prefix``, which reproduces a published split drawn by NumPy's legacy generator).
"""

from __future__ import annotations

import numpy as np

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_CODES = {"train": TRAIN, "valid": VALID, "test": TEST}


def rank_within_user(users: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row: its 0-based rank among the same user's rows in ascending ``key`` order (ties keep row
    order), and the user's number of rows."""
    order = np.lexsort((np.arange(len(users)), key, users))
    sorted_users = users[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_users[1:] != sorted_users[:-1])))
    sizes = np.diff(np.append(starts, len(users)))
    group = np.repeat(np.arange(len(starts)), sizes)
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = np.arange(len(users)) - starts[group]
    count = np.empty(len(users), dtype=np.int64)
    count[order] = sizes[group]
    return rank, count


def holdout_last(rank: np.ndarray, count: np.ndarray, n_valid: np.ndarray, n_test: np.ndarray) -> np.ndarray:
    """Rows ranked last go to test (``n_test`` of them), the ``n_valid`` before them to valid, the rest train."""
    codes = np.full(len(rank), TRAIN, dtype=np.int8)
    from_end = count - rank  # 1 for a user's last row
    codes[from_end <= n_test + n_valid] = VALID
    codes[from_end <= n_test] = TEST
    return codes


def _checked_ratios(ratios: tuple[float, float, float]) -> np.ndarray:
    r = np.asarray(ratios, dtype=np.float64)
    if r.shape != (3,) or (r < 0).any() or r.sum() <= 0 or r[0] <= 0:
        raise ValueError(f"ratios must be three non-negative numbers (train, valid, test) with train > 0, got {ratios}")
    return r


def ratio_counts(count: np.ndarray, ratios: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """How many of a user's ``count`` rows go to valid and test under ``ratios`` (train, valid, test).

    ``floor(ratio · n)``, but at least one test row once a user has 2 rows and at least one valid row once
    it has 3 (when those ratios are non-zero) — the rule of RecBole's ratio split and of the CCD split —
    and never fewer than one training row.
    """
    r = _checked_ratios(ratios)
    r = r / r.sum()
    n_test = np.floor(r[2] * count + 1e-9).astype(np.int64)
    n_valid = np.floor(r[1] * count + 1e-9).astype(np.int64)
    if r[2] > 0:
        n_test = np.where(count >= 2, np.maximum(n_test, 1), 0)
    if r[1] > 0:
        n_valid = np.where(count >= 3, np.maximum(n_valid, 1), 0)
    # Keep one training row: take back from valid first, then from test.
    over = np.maximum(n_test + n_valid - (count - 1), 0)
    from_valid = np.minimum(over, n_valid)
    n_valid = n_valid - from_valid
    n_test = np.maximum(n_test - (over - from_valid), 0)
    return n_valid, n_test


def split_ratio(
    users: np.ndarray, ratios: tuple[float, float, float], rng: np.random.Generator, key: np.ndarray | None = None
) -> np.ndarray:
    """Per-user ratio split (e.g. 8:1:1). ``key`` None: random; a timestamp: the latest rows are held out."""
    if key is None:
        key = rng.random(len(users))
    rank, count = rank_within_user(users, key)
    n_valid, n_test = ratio_counts(count, ratios)
    return holdout_last(rank, count, n_valid, n_test)


def split_shuffle_prefix(users: np.ndarray, ratios: tuple[float, float, float], seed: int) -> np.ndarray:
    """HetComp's CiteULike loader, reproduced to the row: NumPy's legacy RNG seeded once with ``seed``, then each
    user's rows (users in order of first appearance, rows in file order) shuffled in turn; the first
    ⌊r_test·n⌋ go to test, the next ⌊r_valid·n⌋ to valid, the rest to train (``int(0.2 * n)`` in the authors'
    float arithmetic). This is a Python loop over users, because only the legacy generator's exact sequence of
    shuffles gives back the published split; it runs once, when the data set is prepared."""
    r = _checked_ratios(ratios).tolist()  # Python floats: int(0.2 * n) as the authors computed it
    order = np.argsort(users, kind="stable")
    starts = np.flatnonzero(np.concatenate(([True], users[order][1:] != users[order][:-1])))
    groups = np.split(order, starts[1:])
    groups.sort(key=lambda g: g[0])  # users in order of first appearance
    rs = np.random.RandomState(seed)
    codes = np.full(len(users), TRAIN, dtype=np.int8)
    for rows in groups:
        rows = rows.copy()
        rs.shuffle(rows)
        n_test, n_valid = int(r[2] * len(rows)), int(r[1] * len(rows))
        codes[rows[:n_test]] = TEST
        codes[rows[n_test : n_test + n_valid]] = VALID
    return codes


def split_leave_one_out(
    users: np.ndarray, rng: np.random.Generator, key: np.ndarray | None = None, with_valid: bool = True
) -> np.ndarray:
    """Leave-one-out: per user the last row (by ``key``; random when None) is test, the one before valid.

    A user with one row keeps it in train; with two rows (or ``with_valid=False``) there is no valid row.
    """
    if key is None:
        key = rng.random(len(users))
    rank, count = rank_within_user(users, key)
    n_test = (count >= 2).astype(np.int64)
    n_valid = ((count >= 3) & with_valid).astype(np.int64)
    return holdout_last(rank, count, n_valid, n_test)


def split_temporal_global(timestamps: np.ndarray, ratios: tuple[float, float, float]) -> np.ndarray:
    """One global time cut: the earliest share of all interactions trains, the next validates, the latest tests.

    Rows with equal timestamps at a boundary stay together on the earlier side of the cut.
    """
    r = np.asarray(ratios, dtype=np.float64)
    r = r / r.sum()
    ts = np.sort(np.asarray(timestamps, dtype=np.float64))
    n = len(ts)
    if n == 0:
        return np.zeros(0, dtype=np.int8)
    cut_valid = ts[min(n - 1, max(0, int(np.floor(r[0] * n + 1e-9)) - 1))]
    cut_test = ts[min(n - 1, max(0, int(np.floor((r[0] + r[1]) * n + 1e-9)) - 1))]
    t = np.asarray(timestamps, dtype=np.float64)
    codes = np.where(t > cut_valid, VALID, TRAIN).astype(np.int8)
    codes[t > cut_test] = TEST
    return codes


def carve_valid(users: np.ndarray, codes: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Move a seeded random ``fraction`` of each user's training rows to valid (for a given train/test split)."""
    if not 0 < fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {fraction}")
    codes = codes.copy()
    train_rows = np.flatnonzero(codes == TRAIN)
    sub = split_ratio(users[train_rows], (1 - fraction, 0.0, fraction), rng)
    codes[train_rows[sub == TEST]] = VALID
    return codes
