"""CCD's hard-negative exclusion (spec §B.5, §B.6d, §B.7.4): the items a stage's BPR negatives (and stage 1's
uninteresting RRD bags) must avoid beyond the user's positives.

- stage 1 (fresh student D_k): the teacher system's top-N, and the top-N of S_{k−1}, P_{k−1} and M_k;
- stage 2 (student M_k): the top-N of the previous teacher system E_{k−1}, of D_{k−1}, S_{k−1} and P_{k−1};
- stage 3 (each teacher): the top-N of E_{k−1}, S_{k−1}, P_{k−1} and M_k.

The authors treat these items as likely positives, so drawing them as negatives would push down what the teacher
side (or the proxies) rank highest. Sets are users × items sparse patterns (a model sized for an earlier block
covers its own users and items only); membership is tested with ``PairIndex`` (sorted pair keys), and negatives
are drawn by rejection on tensors — never a dense users × items mask.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from distillrec.distill.knowledge import top_lists
from distillrec.distill.sampling import PairIndex, sample_uninteresting
from distillrec.models.base import Recommender


def _binary(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> sp.csr_matrix:
    """The n_rows × n_cols 0/1 pattern of (row, col) pairs; pairs outside it are dropped, repeats count once."""
    keep = (rows >= 0) & (rows < n_rows) & (cols >= 0) & (cols < n_cols)
    m = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])), shape=(n_rows, n_cols))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def lists_to_pairs(lists: Tensor, n_rows: int, n_cols: int) -> sp.csr_matrix:
    """The rows × cols binary pattern of per-row id lists [R ≤ n_rows, N] (entries ≥ n_cols are padding)."""
    ids = lists.detach().cpu().numpy().astype(np.int64)
    return _binary(np.repeat(np.arange(ids.shape[0], dtype=np.int64), ids.shape[1]), ids.ravel(), n_rows, n_cols)


@torch.no_grad()
def top_pairs(model: Recommender, n: int, n_users: int, n_items: int, exclude: sp.spmatrix | None = None,
              chunk_elems: int = 1 << 22) -> sp.csr_matrix:
    """Each of the model's users' ``n`` highest-scored items outside ``exclude`` (within the model's own
    catalogue), as an ``n_users × n_items`` pattern (rows and columns past the model's sizes stay empty)."""
    nu, ni = model.n_users, model.n_items
    k = min(n, ni)
    if k <= 0 or nu == 0:
        return sp.csr_matrix((n_users, n_items), dtype=np.float32)
    mask = sp.csr_matrix((nu, ni), dtype=np.float32) if exclude is None else sp.csr_matrix(exclude)[:nu, :ni]
    model.eval()
    (ids, _), _ = top_lists(lambda rows: model.full_scores(rows)[:, :ni], nu, ni, mask.tocsr(), k, chunk_elems,
                            model.device)
    return lists_to_pairs(ids, n_users, n_items)


def union(parts: list[sp.spmatrix], n_users: int, n_items: int) -> sp.csr_matrix:
    """The binary union of patterns, each cut or padded to ``n_users × n_items``."""
    coos = [sp.coo_matrix(p) for p in parts]
    rows = np.concatenate([c.row.astype(np.int64) for c in coos] or [np.zeros(0, np.int64)])
    cols = np.concatenate([c.col.astype(np.int64) for c in coos] or [np.zeros(0, np.int64)])
    return _binary(rows, cols, n_users, n_items)


class NegativeSampler(nn.Module):
    """Uniform negatives outside a user's positives ∪ hard set, by rejection against sorted pair keys.

    A user whose positives ∪ hard set cover the whole catalogue (tiny data sets only) falls back to negatives
    outside the positives alone; one who has interacted with everything keeps the batch's own negatives."""

    def __init__(self, train: sp.spmatrix, hard: sp.spmatrix) -> None:
        super().__init__()
        train = sp.csr_matrix(train, dtype=np.float32)
        self.full = PairIndex(union([train, hard], *train.shape))
        self.plain = PairIndex(train)

    def draw(self, users: Tensor, negatives: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """New negatives shaped like ``negatives`` ([B] or [B, n]) for ``users`` [B]."""
        n = negatives.shape[1] if negatives.dim() == 2 else 1
        rows = users.to(self.full.keys.device)
        out = negatives.reshape(len(users), n).clone().to(rows.device)
        n_cols = self.full.n_cols
        free_full = n_cols - self.full.counts[rows]
        free_plain = n_cols - self.plain.counts[rows]
        for index, ok in ((self.full, free_full >= 1), (self.plain, (free_full < 1) & (free_plain >= 1))):
            idx = ok.nonzero().squeeze(1)
            if idx.numel():
                out[idx] = sample_uninteresting(rows[idx], n, index, generator=generator, replace_short=True)
        return out.to(negatives.device).reshape(negatives.shape)
