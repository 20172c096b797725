"""Summaries of a stream's accuracy matrix r(k, j): the model after block k, tested on block j ≤ k.

After block k (k ≥ 1; the base block D0 is learned offline, not continually):

- LA_k (learning average, plasticity) = mean_{i=1..k} r(i, i): each block right after learning it;
- RA_k (retained average, stability)  = mean_{i=1..k} mean_{j ∈ past(i)} r(i, j): what the model after
  block i still knows about the blocks before it, averaged over time; past(i) = 0..i−1 with
  ``include_base`` (the default: forgetting the base block counts), else 1..i−1 (steps with no past skipped);
- H_k = 2·LA_k·RA_k / (LA_k + RA_k), their harmonic mean.

The paper's exact formulas (§5.1) were not retrievable (spec §B.9); these are the usual continual-learning
definitions (Riemer et al., ICLR'19) made per block, and they are stated in every report.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def harmonic_mean(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return float("nan")
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def stream_summary(r: np.ndarray | list, include_base: bool = True) -> dict[str, Any]:
    """Per-block LA/RA/H (lists indexed by block; block 0 is NaN) and the final values, from r [n, n]
    (NaN above the diagonal, or missing rows for blocks not reached yet)."""
    r = np.asarray(r, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] > r.shape[1]:
        raise ValueError(f"r must be [blocks reached, n_blocks] with row k holding blocks 0..k, got {r.shape}")
    n = r.shape[0]
    la, ra, h = [float("nan")], [float("nan")], [float("nan")]
    diag, past = [], []
    for i in range(1, n):
        diag.append(r[i, i])
        lo = 0 if include_base else 1
        if i > lo:
            past.append(float(np.mean(r[i, lo:i])))
        la.append(float(np.mean(diag)))
        ra.append(float(np.mean(past)) if past else float("nan"))
        h.append(harmonic_mean(la[-1], ra[-1]))
    if n == 1:
        la, ra, h = [float("nan")], [float("nan")], [float("nan")]
    return {"LA": la[-1], "RA": ra[-1], "H": h[-1], "per_block": {"LA": la, "RA": ra, "H": h},
            "include_base": include_base}


def matrix_from_rows(rows: list[list[float]], n_blocks: int) -> np.ndarray:
    """r as an [len(rows), n_blocks] array from per-block lists of r(k, 0..k), NaN elsewhere."""
    out = np.full((len(rows), n_blocks), np.nan)
    for k, row in enumerate(rows):
        out[k, : len(row)] = row
    return out
