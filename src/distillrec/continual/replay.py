"""Proxy-guided replay (spec §B.6c, §B.7.3): which (user, item, soft label) triples a model re-learns.

For a source model X (a proxy, or the updated student when the teacher replays) and a reference model W
(the model whose knowledge is at risk), per user:

    P(i | u) ∝ exp(ε · (r^W_ui − r^X_ui)) · 1[r^X_ui < A]

with r the 0-based rank in the user's row after the excluded items (the old and the new block's training
items) are pushed to the bottom. Items X ranks high but W ranks low are preferred; the sample is restricted
to X's top-A. ``n`` items per user are drawn without replacement (Gumbel top-k, the same distribution as
``torch.multinomial(replacement=False)``); the label is σ(s^X_ui). Triples of several sources are merged and
a (user, item) pair drawn twice keeps its largest label. Users are scored ``batch_size`` rows at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from distillrec.distill.sampling import gumbel_topk, ranks_in_rows
from distillrec.models.base import Recommender


@dataclass
class ReplaySet:
    users: Tensor  # long [M]
    items: Tensor  # long [M]
    labels: Tensor  # float [M], in (0, 1)

    def __len__(self) -> int:
        return int(self.users.numel())

    @classmethod
    def empty(cls, device: torch.device | str = "cpu") -> ReplaySet:
        z = torch.zeros(0, dtype=torch.long, device=device)
        return cls(z, z.clone(), torch.zeros(0, device=device))

    def to(self, device: torch.device | str) -> ReplaySet:
        return ReplaySet(self.users.to(device), self.items.to(device), self.labels.to(device))


def _masked_rows(model: Recommender, users: Tensor, n_items: int, exclude: sp.csr_matrix | None) -> Tensor:
    scores = model.full_scores(users)[:, :n_items].float()
    if exclude is not None:
        sub = exclude[users.cpu().numpy()][:, :n_items].tocoo()
        if sub.nnz:
            rows = torch.from_numpy(sub.row.astype(np.int64)).to(scores.device)
            cols = torch.from_numpy(sub.col.astype(np.int64)).to(scores.device)
            scores[rows, cols] = -1e8  # as the authors: excluded items rank last, below every real score
    return scores


@torch.no_grad()
def sample_replay(source: Recommender, reference: Recommender, n: int, top_a: int, epsilon: float = 1e-4,
                  users: Tensor | None = None, exclude: sp.csr_matrix | None = None,
                  generator: torch.Generator | None = None, batch_size: int = 1024) -> ReplaySet:
    """``n`` replay items per user of ``users`` (default: all of the source's users) from ``source``.

    Ranks run over the source's items (the reference's extra items, if any, are ignored); ``exclude`` is a
    users × items matrix (at least the source's size) of items never to replay.
    """
    device = source.device
    n_items = source.n_items
    users = torch.arange(source.n_users, device=device) if users is None else users.to(device)
    k = min(n, top_a, n_items)
    if k <= 0 or users.numel() == 0:
        return ReplaySet.empty(device)
    for m in (source, reference):
        m.eval()
    out_u, out_i, out_y = [], [], []
    for s in range(0, users.numel(), batch_size):
        b = users[s:s + batch_size]
        s_x = _masked_rows(source, b, n_items, exclude)
        s_w = _masked_rows(reference, b, n_items, exclude)
        r_x, r_w = ranks_in_rows(s_x), ranks_in_rows(s_w)
        log_w = epsilon * (r_w - r_x).float()
        log_w = log_w.masked_fill(r_x >= top_a, float("-inf"))
        # Gumbel keys must not depend on where the batch sits on the device: draw them on the CPU generator
        items = gumbel_topk(log_w.cpu(), k, generator).to(device)
        ok = torch.isfinite(log_w.gather(1, items))  # rows with fewer than k candidates drop the rest
        out_u.append(b[:, None].expand_as(items)[ok])
        out_i.append(items[ok])
        out_y.append(torch.sigmoid(s_x.gather(1, items))[ok])
    return ReplaySet(torch.cat(out_u), torch.cat(out_i), torch.cat(out_y))


def merge_replay(parts: Sequence[ReplaySet], n_items: int) -> ReplaySet:
    """One set of distinct (user, item) pairs; a pair drawn by several sources keeps its largest label."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return ReplaySet.empty()
    keys = torch.cat([p.users * n_items + p.items for p in parts])
    labels = torch.cat([p.labels for p in parts])
    uniq, inverse = torch.unique(keys, return_inverse=True)
    best = torch.full((uniq.numel(),), -1.0, device=labels.device).scatter_reduce(
        0, inverse, labels, reduce="amax", include_self=True)
    return ReplaySet(uniq // n_items, uniq % n_items, best)


class ReplayBuffer:
    """The replay triples of one training stage, served in slices: each training batch takes the next slice
    of an epoch's shuffle, so one epoch of the block's data also covers the replay set once."""

    def __init__(self, draw, n_batches: int, seed: int = 0) -> None:
        self.draw = draw  # generator -> ReplaySet (re-sampled on demand)
        self.n_batches = max(1, n_batches)
        self.seed = seed
        self.data = ReplaySet.empty()
        self.order = torch.zeros(0, dtype=torch.long)
        self.cursor = 0
        self.step = 0

    def resample(self, epoch: int) -> None:
        self.data = self.draw(torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * epoch + 1))

    def new_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        self.order = torch.randperm(len(self.data), generator=g).to(self.data.users.device)
        self.cursor = 0
        self.step = math.ceil(len(self.data) / self.n_batches) if len(self.data) else 0

    def next_slice(self) -> ReplaySet | None:
        if self.cursor >= len(self.order):
            return None
        idx = self.order[self.cursor:self.cursor + self.step]
        self.cursor += self.step
        return ReplaySet(self.data.users[idx], self.data.items[idx], self.data.labels[idx])
