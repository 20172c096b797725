"""The stream protocol: a base block D0 and incremental blocks D1..Dn, each with its own train/valid/test.

A :class:`Stream` holds the blocks as Datasets in one global id space whose ids grow with time: every user or
item first seen in block k has an id above all ids seen before it, so "the entities seen up to block k" are
simply ids ``< n_users_seen[k]`` / ``< n_items_seen[k]`` and a model grows its tables by appending rows.

Two sources:

- the registry's stream data sets (``gowalla-stream``, ``yelp-stream``): blocks as given (``Dataset.blocks``);
- any time-stamped data set, cut by :func:`cut_stream`: the first ``base_fraction`` of the interactions in time
  order form D0, the rest ``n_blocks`` equal chronological blocks; ids are re-assigned in order of first
  appearance; each block is split per user (``ratios``, CCD's 8:1:1 with at least one test and one valid item),
  its valid/test items that never occur in the block's train are dropped, and a user whose valid or test part
  then becomes empty loses both (the CCD protocol, spec §B.3).

:meth:`Stream.view` gives the Dataset a model of block k works on: every matrix cut to the entities seen up to
block k (``[n_users_seen[k], n_items_seen[k]]``), so models never score ids from the future.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from distillrec.data.build import build_blocks
from distillrec.data.dataset import Dataset
from distillrec.data.splits import SPLIT_CODES, TEST, TRAIN, VALID, split_ratio
from distillrec.utils import DistillrecError


@dataclass
class Stream:
    name: str
    blocks: list[Dataset]  # D0..Dn, all [n_users, n_items] in the global id space
    n_users_seen: list[int]  # entities seen up to and including block k (max id + 1)
    n_items_seen: list[int]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.blocks) < 2:
            raise DistillrecError(f"stream {self.name!r} needs a base block and at least one incremental block, "
                                  f"got {len(self.blocks)} block(s)")
        for seen in (self.n_users_seen, self.n_items_seen):
            if len(seen) != len(self.blocks) or any(b < a for a, b in pairwise(seen)):
                raise DistillrecError(f"stream {self.name!r}: entity counts per block must grow, got {seen}")
        self._cache: dict[tuple, sp.csr_matrix] = {}

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def n_users(self) -> int:
        return self.blocks[0].n_users

    @property
    def n_items(self) -> int:
        return self.blocks[0].n_items

    def sizes(self, k: int) -> tuple[int, int]:
        return self.n_users_seen[k], self.n_items_seen[k]

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.blocks[0].fingerprint().encode())
        for b in self.blocks:
            for split in ("train", "valid", "test"):
                m = b.split(split)
                h.update(m.indptr.tobytes())
                h.update(m.indices.tobytes())
        return h.hexdigest()[:16]

    # -- matrices ---------------------------------------------------------------------------------------------
    def matrix(self, j: int, split: str, k: int | None = None) -> sp.csr_matrix:
        """Block j's ``split`` cut to the entities seen up to block k (default j)."""
        k = j if k is None else k
        key = ("m", j, split, k)
        if key not in self._cache:
            nu, ni = self.sizes(k)
            self._cache[key] = _binary(self.blocks[j].split(split)[:nu, :ni])
        return self._cache[key]

    def history(self, j: int, k: int | None = None) -> sp.csr_matrix:
        """The union of the train parts of blocks 0..j, cut to the entities seen up to block k (default j)."""
        k = j if k is None else k
        key = ("h", j, k)
        if key not in self._cache:
            total = self.matrix(0, "train", k)
            for i in range(1, j + 1):
                total = total + self.matrix(i, "train", k)
            self._cache[key] = _binary(total)
        return self._cache[key]

    def view(self, k: int, j: int | None = None, train: str = "block") -> Dataset:
        """Block j (default k) as a Dataset over the entities seen up to block k.

        ``train``: ``"block"`` — block j's own train (what CCD trains on, and what evaluation masks);
        ``"history"`` — the train parts of blocks 0..j (full retraining; the cumulative evaluation mask).
        """
        j = k if j is None else j
        if not 0 <= j <= k < self.n_blocks:
            raise ValueError(f"need 0 <= j <= k < {self.n_blocks}, got j={j}, k={k}")
        if train not in ("block", "history"):
            raise ValueError(f"train must be 'block' or 'history', got {train!r}")
        nu, ni = self.sizes(k)
        b = self.blocks[j]
        tr = self.matrix(j, "train", k) if train == "block" else self.history(j, k)
        return Dataset(f"{self.name}/D{j}@{k}", nu, ni, train=tr, valid=self.matrix(j, "valid", k),
                       test=self.matrix(j, "test", k), user_ids=b.user_ids[:nu], item_ids=b.item_ids[:ni],
                       meta={"block": j, "at_block": k, "train": train})

    def new_users(self, k: int) -> np.ndarray:
        """Users first seen in block k that have test items in it (empty for the base block)."""
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        lo, hi = self.n_users_seen[k - 1], self.n_users_seen[k]
        has_test = np.diff(self.blocks[k].test.indptr)[lo:hi] > 0
        return np.flatnonzero(has_test).astype(np.int64) + lo

    def stats(self) -> list[dict[str, Any]]:
        out = []
        for k, b in enumerate(self.blocks):
            row: dict[str, Any] = {"block": k, "n_users_seen": self.n_users_seen[k],
                                   "n_items_seen": self.n_items_seen[k]}
            for split in ("train", "valid", "test"):
                row[f"n_{split}"] = int(b.split(split).nnz)
            row["n_test_users"] = int((np.diff(b.test.indptr) > 0).sum())
            row["n_new_test_users"] = len(self.new_users(k))
            out.append(row)
        return out


def _binary(m: sp.spmatrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float32)
    m.sum_duplicates()
    m.data[:] = 1.0
    m.eliminate_zeros()
    m.sort_indices()
    return m


def stream_from_blocks(dataset: Dataset) -> Stream:
    """A Stream from a Dataset with ``blocks`` (the registry's stream data sets, ``build_blocks``)."""
    if not dataset.blocks:
        raise DistillrecError(f"data set {dataset.name!r} has no time blocks; cut one with cut_stream()")
    blocks = dataset.blocks
    seen_u = [int(b.meta.get("n_users_seen", 0)) for b in blocks]
    seen_i = [int(b.meta.get("n_items_seen", 0)) for b in blocks]
    if not all(seen_u) or not all(seen_i):  # blocks built elsewhere: derive the counts from the matrices
        seen_u, seen_i = _seen_counts(blocks)
    return Stream(dataset.name, list(blocks), seen_u, seen_i, meta={"source": "blocks"})


def _seen_counts(blocks: list[Dataset]) -> tuple[list[int], list[int]]:
    seen_u, seen_i, mu, mi = [], [], 0, 0
    for b in blocks:
        for split in ("train", "valid", "test"):
            m = b.split(split).tocoo()
            if m.nnz:
                mu, mi = max(mu, int(m.row.max()) + 1), max(mi, int(m.col.max()) + 1)
        seen_u.append(mu)
        seen_i.append(mi)
    return seen_u, seen_i


def cut_stream(dataset: Dataset, base_fraction: float = 0.5, n_blocks: int = 5,
               ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0) -> Stream:
    """Cut a time-stamped Dataset (all interactions in ``train``, with ``train_timestamps``) into a stream."""
    if dataset.train_timestamps is None:
        raise DistillrecError(f"data set {dataset.name!r} has no timestamps: a stream is cut in time order "
                              "(the registry's ml-100k and synthetic(timestamps=True) have them)")
    held = sum(int(m.nnz) for m in (dataset.valid, dataset.test) if m is not None)
    if held:
        raise DistillrecError(f"data set {dataset.name!r} already holds {held} valid/test interactions without "
                              "timestamps; load it with ratios=(1.0, 0.0, 0.0) so every interaction is in train "
                              "(load_stream does this)")
    if not 0 < base_fraction < 1:
        raise DistillrecError(f"base_fraction must be in (0, 1), got {base_fraction}")
    if n_blocks < 1:
        raise DistillrecError(f"n_blocks must be at least 1, got {n_blocks}")
    ts = dataset.train_timestamps.tocoo()
    if ts.nnz < 2 * (n_blocks + 1):
        raise DistillrecError(f"data set {dataset.name!r}: {ts.nnz} interactions are too few for {n_blocks + 1} "
                              "blocks")
    order = np.lexsort((ts.col, ts.row, ts.data))  # time, ties by user then item: deterministic
    users, items = ts.row[order].astype(np.int64), ts.col[order].astype(np.int64)
    n = len(users)
    n_base = round(base_fraction * n)
    block = np.zeros(n, dtype=np.int64)
    for b, part in enumerate(np.array_split(np.arange(n_base, n), n_blocks), start=1):
        block[part] = b
    new_u, ext_u = _first_seen_ids(users, dataset.user_ids)
    new_i, ext_i = _first_seen_ids(items, dataset.item_ids)
    codes = _block_splits(block, new_u, new_i, ratios, np.random.default_rng(seed))
    keep = codes >= 0
    names = np.array(list(SPLIT_CODES))
    frame = pd.DataFrame({"block": block[keep], "split": names[codes[keep]], "user": new_u[keep],
                          "item": new_i[keep]})
    static = build_blocks(frame, dataset.name)
    for b in static.blocks:  # build_blocks numbers entities 0..n-1: put the original external ids back
        b.user_ids, b.item_ids = ext_u[: b.n_users], ext_i[: b.n_items]
    stream = stream_from_blocks(static)
    stream.meta = {"source": "cut", "base_fraction": base_fraction, "n_blocks": n_blocks, "ratios": list(ratios),
                   "seed": seed, "n_dropped_eval": int((~keep).sum())}
    return stream


def _first_seen_ids(ids: np.ndarray, external: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-number ``ids`` (already in time order) by first appearance; also the external id of each new id."""
    uniq, first = np.unique(ids, return_index=True)
    by_time = uniq[np.argsort(first, kind="stable")]
    remap = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
    remap[by_time] = np.arange(len(by_time))
    return remap[ids], np.asarray(external)[by_time]


def _block_splits(block: np.ndarray, users: np.ndarray, items: np.ndarray, ratios: tuple[float, float, float],
                  rng: np.random.Generator) -> np.ndarray:
    """Per block and user a random split; eval rows whose item is not in the block's train are dropped (-1),
    and so are both eval parts of a user whose valid or test part ends up empty."""
    key = block * (int(users.max()) + 1) + users  # one "user" per (block, user): the split is within the block
    codes = split_ratio(key, ratios, rng).astype(np.int64)
    n_items = int(items.max()) + 1
    train_pair = np.zeros(int(block.max() + 1) * n_items, dtype=bool)
    train_pair[(block * n_items + items)[codes == TRAIN]] = True
    codes[(codes != TRAIN) & ~train_pair[block * n_items + items]] = -1
    n_key = int(key.max()) + 1
    has_valid = np.bincount(key[codes == VALID], minlength=n_key) > 0
    has_test = np.bincount(key[codes == TEST], minlength=n_key) > 0
    codes[(codes != TRAIN) & ~(has_valid & has_test)[key]] = -1
    return codes


def load_stream(name: str, data_dir: str | os.PathLike | None = None, *, base_fraction: float = 0.5,
                n_blocks: int = 5, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
                **overrides: Any) -> Stream:
    """A registry data set as a stream: stream data sets as given, any other cut in time order.

    ``overrides`` go to ``load_dataset`` (for the synthetic generator: ``n_users``, ``n_items``, …).
    """
    from distillrec.data.registry import get_spec, load_dataset

    spec = get_spec(name)
    if spec.kind == "blocks":
        return stream_from_blocks(load_dataset(name, data_dir=data_dir, **overrides))
    extra: dict[str, Any] = {"ratios": (1.0, 0.0, 0.0)}
    if spec.kind == "synthetic":
        extra["timestamps"] = True
    ds = load_dataset(name, data_dir=data_dir, **(extra | overrides))
    return cut_stream(ds, base_fraction=base_fraction, n_blocks=n_blocks, ratios=ratios, seed=seed)
