"""The Dataset contract: everything about one prepared data set, in internal ids.

Internal ids are contiguous: users 0..n_users-1, items 0..n_items-1. ``user_ids[u]`` / ``item_ids[i]`` give
the external id (as a string) so recommendations can be mapped back. Interactions per split are binary CSR
matrices with users as rows. Nothing here is ever pickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

SPLITS = ("train", "valid", "test")


@dataclass
class Dataset:
    name: str
    n_users: int
    n_items: int
    train: sp.csr_matrix
    test: sp.csr_matrix
    valid: sp.csr_matrix | None = None
    user_ids: np.ndarray | None = None  # external id of each internal user (str); None = identity
    item_ids: np.ndarray | None = None
    # Sequential data: each user's full chronological item sequence (internal ids, train part first, then the
    # held-out valid and test items at the end for leave-one-out by position).
    sequences: list[np.ndarray] | None = None
    # Timestamp per training interaction, aligned with ``train.data`` (same sparsity pattern), when known.
    train_timestamps: sp.csr_matrix | None = None
    # Sampled-protocol candidates: split -> [n_users, N] fixed negatives (never observed by the user).
    candidates: dict[str, np.ndarray] = field(default_factory=dict)
    # Stream data: the blocks D0..Dn, each a Dataset in the same (final, global) id space.
    blocks: list[Dataset] | None = None
    protocol: str = "full"  # default evaluation protocol: "full" or "sampled"
    citation: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in SPLITS:
            m = getattr(self, split)
            if m is None:
                continue
            if m.shape != (self.n_users, self.n_items):
                raise ValueError(
                    f"{self.name}: {split} matrix has shape {m.shape}, expected ({self.n_users}, {self.n_items})"
                )
            m = sp.csr_matrix(m, dtype=np.float32)
            m.sum_duplicates()
            m.data[:] = 1.0
            m.sort_indices()
            setattr(self, split, m)
        if self.user_ids is None:
            self.user_ids = np.arange(self.n_users).astype(str)
        if self.item_ids is None:
            self.item_ids = np.arange(self.n_items).astype(str)
        self._user_index: dict[str, int] | None = None
        self._item_index: dict[str, int] | None = None

    # -- splits -------------------------------------------------------------------------------------------
    def split(self, name: str) -> sp.csr_matrix:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        m = getattr(self, name)
        if m is None:
            raise ValueError(f"data set {self.name!r} has no {name} split")
        return m

    def seen(self, split: str) -> sp.csr_matrix:
        """Items to mask when ranking for ``split``: training items, plus the other held-out split."""
        mask = self.train
        other = {"test": self.valid, "valid": self.test}.get(split)
        if other is not None:
            mask = (mask + other).tocsr()
            mask.data[:] = 1.0
        return mask

    @property
    def is_sequential(self) -> bool:
        return self.sequences is not None

    def history(self, split: str) -> list[np.ndarray]:
        """The ordered input sequence per user when predicting ``split`` (leave-one-out by position)."""
        if self.sequences is None:
            raise ValueError(f"data set {self.name!r} has no sequences")
        cut = {"train": 2, "valid": 2, "test": 1}[split]
        return [s[:-cut] if len(s) > cut else s[:0] for s in self.sequences]

    # -- ids ----------------------------------------------------------------------------------------------
    def user_index(self, external: str | int) -> int:
        if self._user_index is None:
            self._user_index = {str(e): i for i, e in enumerate(self.user_ids)}
        try:
            return self._user_index[str(external)]
        except KeyError:
            raise KeyError(f"user {external!r} is not in data set {self.name!r}") from None

    def item_index(self, external: str | int) -> int:
        if self._item_index is None:
            self._item_index = {str(e): i for i, e in enumerate(self.item_ids)}
        try:
            return self._item_index[str(external)]
        except KeyError:
            raise KeyError(f"item {external!r} is not in data set {self.name!r}") from None

    def fingerprint(self) -> str:
        """A short hash of the id maps and sizes: a checkpoint trained on other ids must not load here."""
        import hashlib

        h = hashlib.sha256()
        h.update(f"{self.n_users}:{self.n_items}:".encode())
        for arr in (self.user_ids, self.item_ids):
            h.update("\x1f".join(map(str, arr)).encode())
            h.update(b"\x1e")
        return h.hexdigest()[:16]

    # -- statistics ---------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "n_users": self.n_users, "n_items": self.n_items}
        total = 0
        for split in SPLITS:
            m = getattr(self, split)
            if m is None:
                continue
            out[f"n_{split}"] = int(m.nnz)
            out[f"n_users_{split}"] = int((np.diff(m.indptr) > 0).sum())  # users with at least one
            total += int(m.nnz)
        out["n_interactions"] = total
        out["density"] = total / max(1, self.n_users * self.n_items)
        per_user = np.diff(self.train.indptr)
        out["train_per_user"] = {
            "min": int(per_user.min()) if len(per_user) else 0,  # (min(initial=0) would always say 0)
            "median": float(np.median(per_user)) if len(per_user) else 0.0,
            "mean": float(per_user.mean()) if len(per_user) else 0.0,
            "max": int(per_user.max(initial=0)),
        }
        out["n_items_train"] = int((np.bincount(self.train.indices, minlength=self.n_items) > 0).sum())
        out["protocol"] = self.protocol
        if self.candidates:
            out["candidates"] = {k: list(v.shape) for k, v in self.candidates.items()}
        if "raw" in self.meta:  # the input before filtering / thresholding (rows may repeat pairs)
            out["raw"] = dict(self.meta["raw"])
        if self.blocks is not None:
            out["n_blocks"] = len(self.blocks)
            out["blocks"] = [
                {k: v for k, v in b.stats().items() if k.startswith(("n_", "name"))} | {"n_rows": b.meta.get("n_rows")}
                for b in self.blocks
            ]
        return out
