"""Small planted-structure data sets for fast behaviour tests."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from distillrec.data import Dataset


def planted_dataset(n_users: int = 160, n_items: int = 100, n_clusters: int = 4, per_user: int = 14,
                    noise: float = 0.1, seed: int = 0, name: str = "planted") -> Dataset:
    """Users of cluster c mostly pick items of cluster c; per user 1 valid + 1 test item, the rest train."""
    rng = np.random.default_rng(seed)
    user_c = np.arange(n_users) % n_clusters
    item_c = np.arange(n_items) % n_clusters
    splits = {"train": [], "valid": [], "test": []}
    for u in range(n_users):
        own = np.flatnonzero(item_c == user_c[u])
        n_noise = round(per_user * noise)
        items = np.concatenate([rng.choice(own, per_user - n_noise, replace=False),
                                rng.choice(np.flatnonzero(item_c != user_c[u]), n_noise, replace=False)])
        items = rng.permutation(items)
        splits["valid"].append((u, items[0]))
        splits["test"].append((u, items[1]))
        splits["train"].extend((u, i) for i in items[2:])

    def csr(pairs):
        a = np.asarray(pairs)
        return sp.csr_matrix((np.ones(len(a), np.float32), (a[:, 0], a[:, 1])), shape=(n_users, n_items))

    return Dataset(name, n_users, n_items, train=csr(splits["train"]), valid=csr(splits["valid"]),
                   test=csr(splits["test"]), user_ids=np.array([f"u{u}" for u in range(n_users)]),
                   item_ids=np.array([f"i{i}" for i in range(n_items)]))


def seq_dataset(seqs: list[list[int]], n_items: int) -> Dataset:
    """Leave-one-out by position: last item test, second-to-last valid, the rest train."""
    n = len(seqs)

    def csr(parts: list[list[int]]) -> sp.csr_matrix:
        rows = np.repeat(np.arange(n), [len(p) for p in parts])
        cols = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
        return sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(n, n_items))

    return Dataset("seqtoy", n, n_items, train=csr([s[:-2] for s in seqs]), valid=csr([s[-2:-1] for s in seqs]),
                   test=csr([s[-1:] for s in seqs]), sequences=[np.asarray(s, dtype=np.int64) for s in seqs])


def cycle_dataset(n_users: int = 64, n_items: int = 24, length: int = 18, noise: float = 0.1, seed: int = 0):
    """Each user walks item -> item + 1 (mod n_items) from a random start; with prob. ``noise`` a random jump."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        s = [int(rng.integers(n_items))]
        for _ in range(length - 1):
            s.append(int(rng.integers(n_items)) if rng.random() < noise else (s[-1] + 1) % n_items)
        seqs.append(s)
    return seq_dataset(seqs, n_items)
