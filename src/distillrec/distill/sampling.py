"""Tensor samplers for ranking distillation; no Python loop over users or items, no dense U×I mask.

- ``gumbel_topk``: k draws without replacement ∝ weights for every row at once. Adding Gumbel noise to
  log-weights and taking the top k is exactly sequential sampling without replacement (the Plackett-Luce
  sampling identity), i.e. the same distribution as ``torch.multinomial(w, k, replacement=False)``, but a
  single ``topk`` and it cannot fail on rows with fewer than k positive weights.
- ``rank_discounted_positions``: RRD's interesting positions, P(rank r) ∝ exp(−r/T), sorted (teacher order).
- ``PairIndex`` + ``sample_uninteresting``: uniform items per row that are neither in the row's training
  interactions nor in its teacher top-N list, by rejection on tensors.
- ``ranks_in_rows`` / ``discrepancy_log_weights``: DCD's student-vs-teacher rank discrepancy inside the
  teacher's top-N lists, with a floor so every weight is positive.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from distillrec.distill.gumbel import gumbel_noise
from distillrec.utils import DistillrecError


def gumbel_topk(log_weights: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Per row, ``k`` column indices drawn without replacement with P ∝ exp(log_weights) (in draw order).

    ``log_weights`` is [R, N] (or [N], shared by every row when ``k`` is drawn once). −inf entries are never
    drawn, as long as each row has at least ``k`` finite entries.
    """
    if k > log_weights.shape[-1]:
        raise ValueError(f"cannot draw {k} entries without replacement from {log_weights.shape[-1]}")
    keys = log_weights + gumbel_noise(log_weights.shape, generator, log_weights.device, log_weights.dtype)
    return keys.topk(k, dim=-1).indices


def rank_discounted_positions(
    n_rows: int, n: int, k: int, temperature: float, generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """[n_rows, k] positions in 0..n−1, drawn without replacement with P(r) ∝ exp(−r/T), sorted ascending."""
    if temperature <= 0:
        raise ValueError(f"rank-discount temperature must be positive, got {temperature}")
    log_w = -torch.arange(n, device=device, dtype=torch.float32) / temperature
    keys = log_w.expand(n_rows, n) + gumbel_noise((n_rows, n), generator, device)
    return keys.topk(k, dim=1).indices.sort(dim=1).values


class PairIndex(nn.Module):
    """Membership test for (row, col) pairs of a sparse pattern: sorted int64 keys row·n_cols + col.

    Built from a CSR matrix (users × items for the user side, its transpose for the item side). ``contains``
    is one ``searchsorted`` over nnz keys: O(R·L·log nnz) and no dense mask.
    """

    def __init__(self, matrix: sp.spmatrix) -> None:
        super().__init__()
        csr = sp.csr_matrix(matrix)
        self.n_rows, self.n_cols = csr.shape
        rows = np.repeat(np.arange(self.n_rows, dtype=np.int64), np.diff(csr.indptr))
        keys = torch.from_numpy(rows * self.n_cols + csr.indices.astype(np.int64)).sort().values
        self.register_buffer("keys", keys, persistent=False)
        self.register_buffer("counts", torch.from_numpy(np.diff(csr.indptr).astype(np.int64)), persistent=False)

    def contains(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Bool [R, L]: whether (rows[r], cols[r, l]) is in the pattern. ``rows`` is [R], ``cols`` [R, L]."""
        if self.keys.numel() == 0:
            return torch.zeros_like(cols, dtype=torch.bool)
        query = rows.unsqueeze(1) * self.n_cols + cols
        pos = torch.searchsorted(self.keys, query).clamp_(max=self.keys.numel() - 1)
        return self.keys[pos] == query


def in_sorted_rows(sorted_lists: Tensor, cols: Tensor) -> Tensor:
    """Bool [R, L]: whether cols[r, l] occurs in the ascending row sorted_lists[r] ([R, N])."""
    pos = torch.searchsorted(sorted_lists, cols).clamp_(max=sorted_lists.shape[1] - 1)
    return sorted_lists.gather(1, pos) == cols


def _first_duplicates(cand: Tensor) -> Tensor:
    """Bool mask of entries equal to an earlier entry of the same row (the first copy stays unmasked)."""
    values, order = cand.sort(dim=1, stable=True)
    dup_sorted = torch.zeros_like(values, dtype=torch.bool)
    dup_sorted[:, 1:] = values[:, 1:] == values[:, :-1]
    return torch.zeros_like(dup_sorted).scatter_(1, order, dup_sorted)


def sample_uninteresting(
    rows: Tensor, n: int, exclude: PairIndex, sorted_lists: Tensor | None = None,
    generator: torch.Generator | None = None, max_rounds: int = 40,
) -> Tensor:
    """[R, n] distinct columns per row, uniform over columns not in ``exclude`` (train) nor ``sorted_lists``.

    ``rows`` [R] index the rows of ``exclude``; ``sorted_lists`` [R, N] (ascending) is aligned with ``rows``.

    Rejection on tensors: draw a few more than ``n`` uniform columns per row, drop excluded ones and repeats,
    keep the first ``n`` survivors in draw order (a uniform sample without replacement); rows that fell short
    are redrawn with a doubled draw. Rows with too small a pool are an error up front.
    """
    n_cols = exclude.n_cols
    device = exclude.keys.device
    rows = rows.to(device)
    n_list = 0 if sorted_lists is None else sorted_lists.shape[1]
    pool = n_cols - exclude.counts[rows] - n_list
    if rows.numel() and int(pool.min()) < n:
        bad = int(rows[pool.argmin()])
        raise DistillrecError(
            f"row {bad} has only {int(pool.min())} columns outside its training interactions and its "
            f"top-{n_list} list, fewer than the {n} uninteresting samples asked for; lower the sample count or N"
        )
    out = torch.empty(rows.numel(), n, dtype=torch.long, device=device)
    todo = torch.arange(rows.numel(), device=device)
    draw = n + n // 2 + 8
    for _ in range(max_rounds):
        if todo.numel() == 0:
            return out
        r = rows[todo]
        cand = torch.randint(0, n_cols, (todo.numel(), draw), generator=generator, device=device)
        bad = exclude.contains(r, cand) | _first_duplicates(cand)
        if sorted_lists is not None:
            bad |= in_sorted_rows(sorted_lists[todo], cand)
        ok = (~bad).sum(dim=1) >= n
        # Stable sort puts the survivors first, in draw order.
        first = torch.argsort(bad.to(torch.int8), dim=1, stable=True)[:, :n]
        out[todo[ok]] = cand.gather(1, first)[ok]
        todo = todo[~ok]
        draw = min(draw * 2, 16 * n_cols)
    raise DistillrecError(f"rejection sampling of uninteresting columns did not finish in {max_rounds} rounds")


def ranks_in_rows(scores: Tensor) -> Tensor:
    """0-based rank of each entry within its row, highest score = 0 (an argsort plus a scatter)."""
    order = scores.argsort(dim=1, descending=True)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def discrepancy_log_weights(student_rank: Tensor, epsilon: float, floor: float = 1e-5) -> tuple[Tensor, Tensor]:
    """DCD's weights inside a teacher top-N list (teacher rank = position), as logs for ``gumbel_topk``.

    under-estimated: w⁺ = tanh(max(ε·(r_S − r_T), 0)); over-estimated: w⁻ = tanh(max(ε·(r_T − r_S), 0)).
    Both are clamped to ≥ ``floor`` so every row can always supply k draws (the authors' code crashes there).
    """
    teacher_rank = torch.arange(student_rank.shape[1], device=student_rank.device)
    gap = (student_rank - teacher_rank).float() * epsilon
    w_plus = torch.tanh(gap.clamp(min=0)).clamp(min=floor)
    w_minus = torch.tanh((-gap).clamp(min=0)).clamp(min=floor)
    return w_plus.log(), w_minus.log()


class RankingLists(nn.Module):
    """RRD's per-epoch lists for every row of one side (users → items, or items → users).

    ``interesting`` [R, K]: K positions of the row's teacher top-N list, rank-discounted (``mode="rank"``,
    P(r) ∝ exp(−r/T), sorted so the list stays in teacher order) or simply the first K (``mode="top"``, the
    authors' later no-sampling variant). ``uninteresting`` [R, L]: uniform columns outside the row's training
    interactions and its top-N list. ``refresh`` redraws both for all rows (once per epoch).
    """

    def __init__(self, topk: Tensor, exclude: PairIndex, n_interesting: int, n_uninteresting: int,
                 temperature: float = 10.0, mode: str = "rank", chunk_rows: int = 1 << 16) -> None:
        super().__init__()
        if mode not in ("rank", "top"):
            raise ValueError(f"sampling mode must be 'rank' or 'top', got {mode!r}")
        if not 0 < n_interesting <= topk.shape[1]:
            raise ValueError(f"n_interesting must be in 1..{topk.shape[1]} (the top-N length), got {n_interesting}")
        if n_uninteresting < 0:
            raise ValueError(f"n_uninteresting must be ≥ 0, got {n_uninteresting}")
        self.k, self.l, self.temperature, self.mode, self.chunk_rows = (
            n_interesting, n_uninteresting, temperature, mode, chunk_rows)
        self.exclude = exclude
        self.register_buffer("topk", topk, persistent=False)
        self.register_buffer("sorted_topk", topk.sort(dim=1).values, persistent=False)
        n_rows = topk.shape[0]
        self.register_buffer("interesting", topk[:, :n_interesting].clone(), persistent=False)
        self.register_buffer("uninteresting", torch.zeros(n_rows, n_uninteresting, dtype=torch.long,
                                                          device=topk.device), persistent=False)

    def refresh(self, generator: torch.Generator | None = None) -> None:
        n_rows, n = self.topk.shape
        device = self.topk.device
        if self.mode == "rank":
            pos = rank_discounted_positions(n_rows, n, self.k, self.temperature, generator, device)
            self.interesting = self.topk.gather(1, pos)
        if self.l:
            parts = []
            for r0 in range(0, n_rows, self.chunk_rows):
                rows = torch.arange(r0, min(r0 + self.chunk_rows, n_rows), device=device)
                parts.append(sample_uninteresting(rows, self.l, self.exclude, self.sorted_topk[rows], generator))
            self.uninteresting = torch.cat(parts)

    def lists(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        return self.interesting[rows], self.uninteresting[rows]
