"""Preprocessing on an interaction DataFrame: implicit threshold, de-duplication, k-core, id maps.

Every step is vectorised (pandas / numpy) and keeps row order, so a sequence file's chronological order
survives all of them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from distillrec.utils import DistillrecError


def apply_threshold(df: pd.DataFrame, threshold: float | None) -> pd.DataFrame:
    """Implicit feedback: keep the rows with ``rating >= threshold`` (no-op for ``None``)."""
    if threshold is None:
        return df
    if "rating" not in df.columns:
        raise DistillrecError(f"rating_threshold={threshold} needs a rating column, but the data has none")
    return df[df["rating"].to_numpy() >= threshold]


def deduplicate(df: pd.DataFrame, keys: tuple[str, ...] = ("user", "item")) -> pd.DataFrame:
    """One row per (user, item) — per split and block too when those columns exist.

    With timestamps the earliest row is kept, otherwise the first in file order.
    """
    subset = [k for k in (*keys, "split", "block") if k in df.columns]
    if "timestamp" in df.columns:
        first = df.sort_values("timestamp", kind="stable").duplicated(subset=subset, keep="first")
        return df[~first.reindex(df.index).to_numpy()]
    packed = _pack_int_key(df, subset)
    if packed is not None:  # hashing one int64 column is several times faster than a multi-column frame
        return df[~pd.Series(packed).duplicated(keep="first").to_numpy()]
    return df[~df.duplicated(subset=subset, keep="first").to_numpy()]


def _pack_int_key(df: pd.DataFrame, columns: list[str]) -> np.ndarray | None:
    """One int64 per row that is unique per combination of ``columns``, when they are all non-negative
    integers (or categorical codes) small enough to pack; otherwise None."""
    key = np.zeros(len(df), dtype=np.int64)
    span = 1
    for col in columns:
        values = df[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            arr, size = values.cat.codes.to_numpy().astype(np.int64), len(values.cat.categories)
        elif pd.api.types.is_integer_dtype(values) and len(values):
            arr = values.to_numpy(dtype=np.int64)
            size = int(arr.max()) + 1
            if arr.min() < 0:
                return None
        else:
            return None
        if span * max(size, 1) >= 2**62:
            return None
        key = key * max(size, 1) + arr
        span *= max(size, 1)
    return key


def k_core(df: pd.DataFrame, min_user: int = 0, min_item: int = 0, max_rounds: int = 1000) -> pd.DataFrame:
    """Iterative k-core: drop users with < ``min_user`` and items with < ``min_item`` distinct interactions,
    repeated until both hold (dropping items can push a user below the bar and vice versa)."""
    if min_user <= 1 and min_item <= 1:
        return df
    users, _ = pd.factorize(df["user"])
    items, _ = pd.factorize(df["item"])
    # Count distinct pairs so a repeated item in a sequence does not count twice.
    pair_first = ~pd.DataFrame({"u": users, "i": items}).duplicated().to_numpy()
    keep = np.ones(len(df), dtype=bool)
    for _ in range(max_rounds):
        live = keep & pair_first
        u_count = np.bincount(users[live], minlength=users.max(initial=-1) + 1)
        i_count = np.bincount(items[live], minlength=items.max(initial=-1) + 1)
        new_keep = keep & (u_count[users] >= min_user) & (i_count[items] >= min_item)
        if (new_keep == keep).all():
            break
        keep = new_keep
    return df[keep]


def encode_ids(
    values: np.ndarray, *, identity: bool = False, n: int | None = None, what: str = "user"
) -> tuple[np.ndarray, np.ndarray, int]:
    """External ids → contiguous internal codes. Returns ``(codes, external_ids_as_str, n)``.

    ``identity``: the ids already are internal (non-negative integers, e.g. a published split); the id space is
    ``0..n-1`` with ``n`` = the given size or max id + 1, so ids without data keep their place. Otherwise the
    sorted distinct ids (numeric order for integer ids) get codes ``0..n-1``.
    """
    if identity:
        if values.dtype.kind not in "iu":
            raise DistillrecError(f"identity {what} ids must be integers, got e.g. {values[0]!r}")
        codes = values.astype(np.int64)
        top = int(codes.max(initial=-1)) + 1
        if codes.size and codes.min() < 0:
            raise DistillrecError(f"identity {what} ids must be non-negative, got {int(codes.min())}")
        if n is not None and n < top:
            raise DistillrecError(f"{what} id {top - 1} is outside the declared id space of {n} {what}s")
        size = top if n is None else n
        return codes, np.arange(size).astype(str), size
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques).astype(str), len(uniques)
