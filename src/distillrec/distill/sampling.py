"""Tensor samplers for ranking distillation; no Python loop over users or items, no dense U×I mask.

- ``gumbel_topk``: k draws without replacement ∝ weights for every row at once. Adding Gumbel noise to
  log-weights and taking the top k is exactly sequential sampling without replacement (the Plackett-Luce
  sampling identity), i.e. the same distribution as ``torch.multinomial(w, k, replacement=False)``, but a
  single ``topk`` and it cannot fail on rows with fewer than k positive weights.
- ``rank_discounted_positions``: RRD's interesting positions, P(rank r) ∝ exp(−r/T), sorted (teacher order).
- ``PairIndex`` + ``sample_uninteresting``: uniform items per row that are neither in the row's training
  interactions nor in its teacher top-N list, by rejection on tensors (with replacement, from the few columns
  left, for the rows of a catalogue too small to hold L of them).
- ``RankingLists``: RRD's per-epoch lists for all rows of one side, the list cut per row where a small
  catalogue would leave fewer than L columns outside train ∪ top-N.
- ``ranks_in_rows`` / ``discrepancy_log_weights``: DCD's student-vs-teacher rank discrepancy inside the
  teacher's top-N lists, with a floor so every weight is positive.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from distillrec.distill.gumbel import gumbel_noise, uniform
from distillrec.distill.topn import select_topk
from distillrec.utils import DistillrecError


def weighted_topk(weights: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """``gumbel_topk`` for plain positive weights, in draw order: the k largest log(U) / w, U ~ U[0, 1) — an
    exponential race (w / E, E = −log U ~ Exp(1), in the same order; the same distribution as log w + Gumbel)
    with one log and one division per entry, cut by ``select_topk`` (DCD draws 30M keys an epoch)."""
    if k > weights.shape[-1]:
        raise ValueError(f"cannot draw {k} entries without replacement from {weights.shape[-1]}")
    keys = uniform(weights.shape, generator, weights.device, weights.dtype).log_().div_(weights)
    return select_topk(keys, k)[1]


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
        csr.sum_duplicates()
        self.n_rows, self.n_cols = csr.shape
        rows = np.repeat(np.arange(self.n_rows, dtype=np.int64), np.diff(csr.indptr))
        keys = torch.from_numpy(rows * self.n_cols + csr.indices.astype(np.int64)).sort().values
        self.register_buffer("keys", keys, persistent=False)
        self.register_buffer("counts", torch.from_numpy(np.diff(csr.indptr).astype(np.int64)), persistent=False)
        self.register_buffer("indptr", torch.from_numpy(csr.indptr.astype(np.int64)), persistent=False)

    def contains(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Bool [R, L]: whether (rows[r], cols[r, l]) is in the pattern. ``rows`` is [R], ``cols`` [R, L]."""
        if self.keys.numel() == 0:
            return torch.zeros_like(cols, dtype=torch.bool)
        query = rows.unsqueeze(1) * self.n_cols + cols
        pos = torch.searchsorted(self.keys, query).clamp_(max=self.keys.numel() - 1)
        return self.keys[pos] == query

    def mark(self, rows: Tensor, mask: Tensor) -> None:
        """Set mask[r, c] = True for every pair (rows[r], c) of the pattern; ``mask`` is [R, n_cols]."""
        lengths = self.counts[rows]
        local = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), lengths)
        first = torch.repeat_interleave(self.indptr[rows] - (lengths.cumsum(0) - lengths), lengths)
        keys = self.keys[first + torch.arange(local.numel(), device=rows.device)]
        mask[local, keys - rows[local] * self.n_cols] = True


def in_sorted_rows(sorted_lists: Tensor, cols: Tensor) -> Tensor:
    """Bool [R, L]: whether cols[r, l] occurs in the ascending row sorted_lists[r] ([R, N])."""
    sorted_lists = sorted_lists.contiguous()
    pos = torch.searchsorted(sorted_lists, cols).clamp_(max=sorted_lists.shape[1] - 1)
    return sorted_lists.gather(1, pos) == cols


def _first_duplicates(cand: Tensor) -> Tensor:
    """Bool mask of entries equal to an earlier entry of the same row (the first copy stays unmasked)."""
    values, order = cand.sort(dim=1, stable=True)
    dup_sorted = torch.zeros_like(values, dtype=torch.bool)
    dup_sorted[:, 1:] = values[:, 1:] == values[:, :-1]
    return torch.zeros_like(dup_sorted).scatter_(1, order, dup_sorted)


def _taken_chunks(rows: Tensor, exclude: PairIndex, sorted_lists: Tensor | None, max_elems: int):
    """(r0, r1, taken) over chunks of ``rows``: taken = Bool [r1 − r0, n_cols + 1], True at each row's train
    columns and list entries (the last column catches list padding); ~``max_elems`` flags at a time."""
    n_cols, device = exclude.n_cols, exclude.keys.device
    step = max(1, max_elems // n_cols)
    for r0 in range(0, rows.numel(), step):
        r = rows[r0:r0 + step]
        taken = torch.zeros(r.numel(), n_cols + 1, dtype=torch.bool, device=device)
        exclude.mark(r, taken)
        if sorted_lists is not None:
            taken.scatter_(1, sorted_lists[r0:r0 + step].clamp(max=n_cols), True)
        yield r0, r0 + r.numel(), taken


def _sample_from_complement(rows: Tensor, n: int, exclude: PairIndex, sorted_lists: Tensor | None,
                            generator: torch.Generator | None, max_elems: int = 1 << 22) -> Tensor:
    """[R, n] columns per row drawn uniformly *with* replacement from the columns outside train ∪ list: a
    dense [chunk, n_cols] mask of a few rows at a time (only the short rows of a small catalogue come here)."""
    n_cols, device = exclude.n_cols, exclude.keys.device
    out = torch.empty(rows.numel(), n, dtype=torch.long, device=device)
    for r0, r1, taken in _taken_chunks(rows, exclude, sorted_lists, max_elems):
        free = (~taken[:, :n_cols]).cumsum(1)  # free[c] = free columns ≤ c
        pool = free[:, -1:]
        j = (torch.rand(r1 - r0, n, generator=generator, device=device) * pool).long().clamp_(max=pool - 1)
        out[r0:r1] = torch.searchsorted(free, j + 1)  # the (j+1)-th free column
    return out


def _sample_by_keys(rows: Tensor, n: int, exclude: PairIndex, sorted_lists: Tensor | None,
                    generator: torch.Generator | None, max_elems: int = 1 << 24) -> Tensor:
    """[R, n] distinct columns per row, uniform without replacement over the columns outside train ∪ list: a
    random key per column, excluded columns keyed last, the n smallest kept (a random permutation's prefix).
    For rows that need most of their pool (CCD on Yelp asks 11,500 of ~12,200 users per item), where rejection
    would need ~pool·ln(pool / (pool − n)) draws per row and several doubling rounds."""
    n_cols, device = exclude.n_cols, exclude.keys.device
    out = torch.empty(rows.numel(), n, dtype=torch.long, device=device)
    for r0, r1, taken in _taken_chunks(rows, exclude, sorted_lists, max_elems):
        keys = torch.rand(r1 - r0, n_cols, generator=generator, device=device).masked_fill_(taken[:, :n_cols], 2.0)
        out[r0:r1] = keys.topk(n, dim=1, largest=False, sorted=False).indices
    return out


def sample_uninteresting(
    rows: Tensor, n: int, exclude: PairIndex, sorted_lists: Tensor | None = None,
    generator: torch.Generator | None = None, max_rounds: int = 40, replace_short: bool = False,
    list_lengths: Tensor | None = None,
) -> Tensor:
    """[R, n] distinct columns per row, uniform over columns not in ``exclude`` (train) nor ``sorted_lists``.

    ``rows`` [R] index the rows of ``exclude``; ``sorted_lists`` [R, N] (ascending) is aligned with ``rows``;
    entries ≥ ``n_cols`` are padding (a row whose list was cut short).

    Rejection on tensors: draw a few more than ``n`` uniform columns per row, drop excluded ones and repeats,
    keep the first ``n`` survivors in draw order (a uniform sample without replacement); rows that fell short
    are redrawn with a doubled draw. A row whose pool holds fewer than ``n`` columns is an error, unless
    ``replace_short``: then its ``n`` columns are drawn with replacement from the pool (which must not be empty).
    ``list_lengths`` [R]: the entries < ``n_cols`` per row of ``sorted_lists``, when the caller knows them.
    """
    n_cols = exclude.n_cols
    device = exclude.keys.device
    rows = rows.to(device)
    if sorted_lists is None:
        list_len = 0
    else:
        list_len = (sorted_lists < n_cols).sum(dim=1) if list_lengths is None else list_lengths
    pool = n_cols - exclude.counts[rows] - list_len
    out = torch.empty(rows.numel(), n, dtype=torch.long, device=device)
    todo = torch.arange(rows.numel(), device=device)
    if rows.numel() and int(pool.min()) < n:
        bad = int(pool.argmin())
        if not replace_short or int(pool[bad]) < 1:
            n_list = int(list_len) if isinstance(list_len, int) else int(list_len[bad])
            raise DistillrecError(
                f"row {int(rows[bad])} has only {int(pool[bad])} columns outside its training interactions and "
                f"its top-{n_list} list, fewer than the {n} uninteresting samples asked for; lower the sample "
                "count or N")
        short = pool < n
        idx = short.nonzero().squeeze(1)
        out[idx] = _sample_from_complement(rows[idx], n, exclude, None if sorted_lists is None
                                           else sorted_lists[idx], generator)
        todo = (~short).nonzero().squeeze(1)
    # Rows that need more than 3/4 of their pool: rejection would need several doubling rounds of draws.
    most = 4 * n > 3 * pool[todo]
    if bool(most.any()):
        dense = todo[most]
        out[dense] = _sample_by_keys(rows[dense], n, exclude, None if sorted_lists is None else sorted_lists[dense],
                                     generator)
        todo = todo[~most]
    draw = n + n // 2 + 8
    for _ in range(max_rounds):
        if todo.numel() == 0:
            return out
        r = rows[todo]
        cand = torch.randint(0, n_cols, (todo.numel(), draw), generator=generator, device=device)
        bad = exclude.contains(r, cand) | _first_duplicates(cand)
        if sorted_lists is not None:  # (no copy of the lists while every row is still to do)
            bad |= in_sorted_rows(sorted_lists if todo.numel() == rows.numel() else sorted_lists[todo], cand)
        ok = (~bad).sum(dim=1) >= n
        # Stable sort puts the survivors first, in draw order.
        first = torch.argsort(bad.to(torch.int8), dim=1, stable=True)[:, :n]
        out[todo[ok]] = cand.gather(1, first)[ok]
        todo = todo[~ok]
        draw = min(draw * 2, 16 * n_cols)
    raise DistillrecError(f"rejection sampling of uninteresting columns did not finish in {max_rounds} rounds")


def _sort_rows(x: Tensor) -> Tensor:
    """Each row sorted ascending (numpy's vectorised sort on CPU: 2× torch's on [25182, 500] ids)."""
    if x.device.type == "cpu" and x.numel():
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return x.sort(dim=1).values


def ranks_in_rows(scores: Tensor) -> Tensor:
    """0-based rank of each entry within its row, highest score = 0, equal scores by position (lower first):
    an argsort plus a scatter. On CPU the argsort is numpy's vectorised quicksort (3× faster than torch's on
    DCD's [25182, 500] lists), with the rare rows that hold equal values (or NaN) sorted again stably."""
    order = None
    if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64) and scores.numel():
        x = scores.detach().numpy()
        sorted_idx = np.argsort(-x, axis=1)
        values = np.take_along_axis(x, sorted_idx, axis=1)
        redo = np.flatnonzero((values[:, 1:] == values[:, :-1]).any(axis=1) | np.isnan(values).any(axis=1))
        order = torch.from_numpy(sorted_idx)
        if redo.size:
            rows = torch.from_numpy(redo)
            order[rows] = scores[rows].argsort(dim=1, descending=True, stable=True)
    if order is None:
        order = scores.argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def discrepancy_weights(student_rank: Tensor, epsilon: float, floor: float = 1e-5) -> tuple[Tensor, Tensor]:
    """DCD's weights inside a teacher top-N list (teacher rank = position), for ``weighted_topk``.

    under-estimated: w⁺ = tanh(max(ε·(r_S − r_T), 0)); over-estimated: w⁻ = tanh(max(ε·(r_T − r_S), 0)).
    Both are clamped to ≥ ``floor`` so every row can always supply k draws (the authors' code crashes there).
    """
    teacher_rank = torch.arange(student_rank.shape[1], device=student_rank.device, dtype=torch.float32)
    gap = student_rank.float().sub_(teacher_rank).mul_(epsilon)
    # One tanh for both: the supports (gap > 0, gap < 0) are disjoint; everything else sits at the floor.
    weight = gap.abs().tanh_().clamp_(min=floor)
    floor_t = torch.tensor(floor, device=gap.device)
    return torch.where(gap > 0, weight, floor_t), torch.where(gap < 0, weight, floor_t)


def discrepancy_log_weights(student_rank: Tensor, epsilon: float, floor: float = 1e-5) -> tuple[Tensor, Tensor]:
    """``discrepancy_weights`` as logs, for ``gumbel_topk``."""
    w_plus, w_minus = discrepancy_weights(student_rank, epsilon, floor)
    return w_plus.log(), w_minus.log()


class RankingLists(nn.Module):
    """RRD's per-epoch lists for every row of one side (users → items, or items → users).

    ``interesting`` [R, K]: K positions of the row's teacher top-N list, rank-discounted (``mode="rank"``,
    P(r) ∝ exp(−r/T), sorted so the list stays in teacher order) or simply the first K (``mode="top"``, the
    authors' later no-sampling variant). ``uninteresting`` [R, L]: uniform columns outside the row's training
    interactions and its top-N list. ``refresh`` redraws both for all rows (once per epoch); ``combined``
    [R, K + L] holds both, so a batch needs one gather.

    Small catalogues: the bag needs L columns outside train ∪ top-N in every row. Where a row has fewer than
    N + L unobserved columns its list is cut to leave L of them (never below K entries; interesting positions
    and the exclusion both use the cut list), and where even K + L do not fit, the row's L uninteresting
    columns are drawn with replacement from what is left. K itself is lowered (to one less than the fewest
    unobserved columns of any row) only when some row cannot hold K + 1. Each change is a warning.
    """

    def __init__(self, topk: Tensor, exclude: PairIndex, n_interesting: int, n_uninteresting: int,
                 temperature: float = 10.0, mode: str = "rank", chunk_rows: int = 1 << 16, name: str = "RRD") -> None:
        super().__init__()
        if mode not in ("rank", "top"):
            raise ValueError(f"sampling mode must be 'rank' or 'top', got {mode!r}")
        n_rows, n = topk.shape
        if n_interesting < 1:
            raise ValueError(f"n_interesting must be ≥ 1, got {n_interesting}")
        if n_uninteresting < 0:
            raise ValueError(f"n_uninteresting must be ≥ 0, got {n_uninteresting}")
        if temperature <= 0:
            raise ValueError(f"rank-discount temperature must be positive, got {temperature}")
        unobserved = exclude.n_cols - exclude.counts.to(topk.device)
        fewest = int(unobserved.min()) if n_rows else n + 1
        k = min(n_interesting, n, fewest - 1)
        if k < 1:
            row = int(unobserved.argmin())
            raise DistillrecError(f"{name}: row {row} has only {fewest} unobserved columns; ranking "
                                  "distillation needs at least 2 (one to rank, one to rank it above)")
        if k < n_interesting:
            warnings.warn(f"{name}: {n_interesting} interesting entries per row cut to {k}: the teacher's lists "
                          f"hold {n} and some row has only {fewest} unobserved columns (a small catalogue)",
                          stacklevel=2)
        # Per-row list length: leave n_uninteresting columns outside train ∪ list where possible.
        row_len = (unobserved - n_uninteresting).clamp(min=k, max=n)
        cut = row_len < n
        n_cut = int(cut.sum())
        if n_cut:
            warnings.warn(f"{name}: the teacher's top-{n} list is cut to {int(row_len[cut].min())}–"
                          f"{int(row_len[cut].max())} entries for {n_cut} of {n_rows} rows, so that {n_uninteresting} "
                          "uninteresting columns stay outside train ∪ list (a small catalogue)", stacklevel=2)
        n_short = int((unobserved - row_len < n_uninteresting).sum())
        if n_short and n_uninteresting:
            warnings.warn(f"{name}: {n_short} rows have fewer than {n_uninteresting} columns outside train ∪ "
                          f"their top-{k} list; their uninteresting columns are drawn with replacement", stacklevel=2)
        self.k, self.l, self.temperature, self.mode, self.chunk_rows = (
            k, n_uninteresting, temperature, mode, chunk_rows)
        self.exclude = exclude
        positions = torch.arange(n, device=topk.device)
        in_list = positions < row_len.unsqueeze(1)
        self.register_buffer("topk", topk, persistent=False)
        # Padding (n_cols, never a column) marks the entries past a row's cut; it sorts last.
        self.register_buffer("sorted_topk", _sort_rows(torch.where(in_list, topk, exclude.n_cols)), persistent=False)
        self.register_buffer("row_len", row_len, persistent=False)
        # Rank-discount log-weights (−inf past a row's cut), built once: −r/T for r in 0..N−1.
        log_w = (-positions.float() / temperature).expand(n_rows, n)
        self.register_buffer("log_weights", log_w.masked_fill(~in_list, float("-inf")) if n_cut else log_w,
                             persistent=False)
        self.register_buffer("interesting", topk[:, :k].clone(), persistent=False)
        self.register_buffer("uninteresting", torch.zeros(n_rows, n_uninteresting, dtype=torch.long,
                                                          device=topk.device), persistent=False)
        self.register_buffer("combined", torch.cat([self.interesting, self.uninteresting], 1), persistent=False)

    def refresh(self, generator: torch.Generator | None = None) -> None:
        n_rows = self.topk.shape[0]
        device = self.topk.device
        if self.mode == "rank":
            # Gumbel keys are −r/T + G with G in [−3.83, 16.12] (gumbel_noise clamps U), so a position r can
            # only beat the k-th key of the first k positions if r < k + 19.95·T: the noise is drawn for that
            # span only (for T = 10: 240 of 500), the same distribution for a fraction of the work.
            span = min(self.log_weights.shape[1], self.k + math.ceil(20 * self.temperature))
            pos = gumbel_topk(self.log_weights[:, :span], self.k, generator).sort(dim=1).values
            self.interesting = self.topk.gather(1, pos)
        if self.l:
            parts = []
            for r0 in range(0, n_rows, self.chunk_rows):
                r1 = min(r0 + self.chunk_rows, n_rows)
                rows = torch.arange(r0, r1, device=device)
                parts.append(sample_uninteresting(rows, self.l, self.exclude, self.sorted_topk[r0:r1], generator,
                                                  replace_short=True, list_lengths=self.row_len[r0:r1]))
            self.uninteresting = torch.cat(parts)
        self.combined = torch.cat([self.interesting, self.uninteresting], 1)

    def lists(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        return self.interesting[rows], self.uninteresting[rows]
