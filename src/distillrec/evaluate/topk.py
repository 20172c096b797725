"""Row-wise top-K over wide score matrices, in two cheap stages instead of one full-row selection.

``torch.topk`` on CPU copies each row into (value, index) pairs and partially sorts them: for K = 20 of
40,981 items that costs about 40 % of the score matmul itself. Splitting each row into chunks of ``c``
columns, a vectorised ``amax`` finds every chunk's maximum; the K chunks with the largest maxima hold the
row's top-K *values* (proof below); one small ``topk`` over those K·c candidates finishes the job. The work
outside the ``amax`` pass drops from n to n/c + K·c elements per row.

Why the K best chunks suffice: let t be the K-th largest chunk maximum. Any element above t sits in a chunk
whose maximum is above t, hence in a selected chunk. If the K-th largest value equals t, each selected chunk
with maximum t holds an element equal to t and each selected chunk with a larger maximum holds an element
above t, so the selected chunks hold at least K elements ≥ t: the values are exactly those of ``torch.topk``.

Ties are broken by item index, lower first — the order a stable sort by descending score gives — so results
do not depend on the device, the batch or torch's selection internals. The fast path knows when a row's
cut-off is ambiguous (equal chunk maxima at the chunk cut-off, or more candidates equal to the K-th value
than were taken) and recomputes only those rows exactly, by threshold and cumulative count; within the
list, equal values are re-ordered by index. NaN behaves as in ``torch.topk`` (ranked above every number,
no tie rule), so it surfaces for the caller to reject.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_MIN_CHUNK = 8  # below this the two stages cost more than one plain topk


def chunk_size(n: int, k: int) -> int:
    """Chunk width that balances the two stages (n/c chunk maxima vs k·c candidates): c ≈ √(n/k), a power of
    two; 0 when a plain ``torch.topk`` is cheaper."""
    c = 2 ** round(math.log2(max(1.0, math.sqrt(n / max(1, k)))))
    return c if c >= _MIN_CHUNK else 0


def topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``(values, indices)`` of the k largest entries of each row of ``scores [B, n]``, values sorted
    descending, equal values ordered by item index (lower first), and at the cut-off the lowest-index items
    among equal scores are the ones kept. Values equal ``torch.topk(scores, k, dim=1).values``."""
    n = scores.shape[1]
    if not 0 < k <= n:
        raise ValueError(f"k={k} must be in [1, {n}]")
    c = chunk_size(n, k) if scores.device.type == "cpu" else 0  # GPU topk is fast; chunking only adds work
    if c and -(-n // c) > k:
        values, indices, unsure = _two_stage(scores, k, c)
    else:
        values, indices = torch.topk(scores, k, dim=1)
        kth = values[:, -1:]
        unsure = (scores == kth).sum(1) > (values == kth).sum(1)
    if torch.isnan(values).any():
        return values, indices  # no tie rule with NaN: callers reject NaN scores anyway
    if bool(unsure.any()):
        rows = unsure.nonzero().squeeze(1)
        values[rows], indices[rows] = _lowest_index_cut(scores[rows], values[rows, -1], k)
    return _order_ties_by_index(values, indices)


def _two_stage(scores: Tensor, k: int, c: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k values via the k best chunks; ``unsure`` flags rows whose cut-off may hold other equal scores."""
    b, n = scores.shape
    m = n // c
    maxima = scores[:, : m * c].reshape(b, m, c).amax(dim=2)  # a view when rows are contiguous
    if m * c < n:  # the ragged tail is one more (short) chunk
        maxima = torch.cat([maxima, scores[:, m * c :].amax(dim=1, keepdim=True)], dim=1)
    best = torch.topk(maxima, k + 1, dim=1)  # one extra to see a tie at the chunk cut-off
    unsure = best.values[:, k - 1] == best.values[:, k]  # equal chunk maxima: the chunk choice is arbitrary
    chunks = torch.sort(best.indices[:, :k], dim=1).values  # ascending, so candidate columns ascend too
    cols = (chunks.unsqueeze(2) * c + torch.arange(c, device=scores.device)).view(b, k * c)
    outside = cols >= n  # columns past the end of the tail chunk
    cand = scores.gather(1, cols.clamp(max=n - 1)).masked_fill_(outside, float("-inf"))
    values, pos = torch.topk(cand, k, dim=1)
    kth = values[:, -1:]
    unsure |= (cand == kth).sum(1) > (values == kth).sum(1)  # topk chose among equal candidates
    indices = cols.gather(1, pos)
    unsure |= (indices >= n).any(1)  # a padding column was taken (fewer than k finite candidates)
    return values, indices, unsure


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
