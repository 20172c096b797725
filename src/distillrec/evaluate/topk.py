"""Row-wise top-K over wide score matrices, in two cheap stages instead of one full-row selection.

``torch.topk`` on CPU copies each row into (value, index) pairs and partially sorts them: for K = 20 of
40,981 items that costs about 40 % of the score matmul itself. Cutting each row into chunks of ``c``
columns, one vectorised ``amax`` pass gives every chunk's maximum; the K chunks with the largest maxima, plus
the ragged tail (the last n mod c columns), hold the row's top-K values; one small ``topk`` over those
K·c (+ tail) candidates finishes. Work outside the ``amax`` pass drops from n to about n/c + K·c per row.

Why the K best chunks suffice: let t be the K-th largest chunk maximum. An element left out lies in a chunk
whose maximum is ≤ t, so it is ≤ t; the K selected chunks each hold an element ≥ t, so the candidates'
K-th largest value is ≥ t ≥ every element left out. The values are exactly those of ``torch.topk``.

Ties are broken by item index, lower first — the order a stable sort by descending score gives — so results
do not depend on the device, the batch or torch's selection internals. A row's cut-off is ambiguous only
when the (K+1)-th chunk maximum equals the K-th, or the (K+1)-th candidate equals the K-th: one extra
element in each ``topk`` shows it, and only those rows are recomputed exactly (threshold and cumulative
count). Within the list, equal values are re-ordered by index. NaN behaves as in ``torch.topk`` (ranked above
every number, no tie rule), so it surfaces for the caller to reject.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor

_DIRECT = 256  # rows this short go straight to torch.topk (cheap per element at this length)
_FAN_OUT = 8  # chunks per wanted item: each stage shrinks the candidates about 8-fold
_MAX_CHUNK = 64  # wider chunks make the gather of the k best chunks cost more than the smaller topk saves


def chunk_size(n: int, k: int) -> int:
    """Columns per chunk for a row of n when k are wanted: about n / (8k), at most 64, so the chunk maxima
    number at least 8k and the k best chunks hold at most n/8 candidates; 0 when a plain ``torch.topk`` is the
    better choice. (Chosen by timing [102, 40981] blocks on 1 and 2 CPU threads.)"""
    if n <= _DIRECT:
        return 0
    c = min(_MAX_CHUNK, n // (_FAN_OUT * k))
    return c if c >= 2 else 0


def topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``(values, indices)`` of the k largest entries of each row of ``scores [B, n]``, values sorted
    descending, equal values ordered by item index (lower first), and at the cut-off the lowest-index items
    among equal scores are the ones kept. Values equal ``torch.topk(scores, k, dim=1).values``."""
    n = scores.shape[1]
    if not 0 < k <= n:
        raise ValueError(f"k={k} must be in [1, {n}]")
    if scores.device.type == "cpu":
        values, indices, unsure = _select(scores, k, top=True)
    else:  # GPU topk is fast; chunking would only add kernel launches
        values, indices, unsure = _topk_and_tie(scores, k)
    if torch.isnan(values).any():
        return values, indices  # no tie rule with NaN: callers reject NaN scores anyway
    if bool(unsure.any()):
        rows = unsure.nonzero().squeeze(1)
        values[rows], indices[rows] = _lowest_index_cut(scores[rows], values[rows, -1], k)
    return _order_ties_by_index(values, indices)


def _topk_and_tie(x: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """torch.topk plus a flag per row: does an entry left out equal the k-th value (an arbitrary cut-off)?"""
    if k == x.shape[1]:
        values, indices = torch.topk(x, k, dim=1)
        return values, indices, torch.zeros(len(x), dtype=torch.bool, device=x.device)
    values, indices = torch.topk(x, k + 1, dim=1)  # one extra: equal to the k-th means a tie at the cut
    return values[:, :k], indices[:, :k], values[:, k - 1] == values[:, k]


def _select(x: Tensor, k: int, top: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k with a tie flag, by stages: the k chunks with the largest maxima plus the ragged tail hold the
    top-k values (module notes), so the search recurses on the chunk maxima, then on those candidates."""
    b, n = x.shape
    c = chunk_size(n, k)
    m = n // c if c else 0
    if m <= k:
        return _topk_and_tie(x, k)
    chunked = x[:, : m * c].reshape(b, m, c)  # a view when rows are contiguous
    maxima = chunked.amax(dim=2)  # the one pass over the whole block: worth every thread
    with _one_thread() if top else nullcontext():
        _, chunks, unsure = _select(maxima, k)  # a tie among chunk maxima: the chunk choice
        cand = chunked[torch.arange(b, device=x.device).unsqueeze(1), chunks].view(b, k * c)
        if m * c < n:
            cand = torch.cat([cand, x[:, m * c :]], dim=1)
        values, pos, unsure_cand = _select(cand, k)
        # candidate position -> column of x: inside one of the gathered chunks, or in the tail
        in_chunks = pos < k * c
        chunk_pos = pos.clamp(max=k * c - 1)
        indices = torch.where(in_chunks, chunks.gather(1, chunk_pos // c) * c + chunk_pos % c, pos - k * c + m * c)
    return values, indices, unsure | unsure_cand


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run the selection stages after the first ``amax`` pass on one thread. That pass reads the whole block
    and keeps every thread (on a quiet 2-core machine 2 threads take 0.25 ms per [102, 40981] block, 1 thread
    0.5 ms); the later stages work on small blocks: too little to gain from more threads, while every
    parallel region costs a fork/join, and a scheduler time slice when the cores are shared with other
    processes (measured: evaluation time doubled on a loaded 2-core machine). Restored on exit."""
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


def _lowest_index_cut(scores: Tensor, kth: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact top-k of a few rows given each row's k-th largest value: everything above it, then the
    lowest-index entries equal to it. A handful of passes over the rows, no sort of the row."""
    kth = kth.unsqueeze(1)
    above = scores > kth
    equal = scores == kth
    need = k - above.sum(1, keepdim=True)  # ≥ 1, and at least that many entries equal kth exist
    take = above | (equal & (equal.cumsum(1, dtype=torch.int32) <= need))
    indices = take.nonzero()[:, 1].view(-1, k)  # row-major: ascending item index within each row
    return scores.gather(1, indices), indices


def _order_ties_by_index(values: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each [k] list by value (descending), equal values by item index (ascending)."""
    indices, by_index = torch.sort(indices, dim=1)
    values = values.gather(1, by_index)
    values, by_value = torch.sort(values, dim=1, descending=True, stable=True)
    return values, indices.gather(1, by_value)
