"""Interaction DataFrame + preprocessing options → :class:`Dataset` (and the block-stream variant).

``PrepConfig`` is the single place that names every preprocessing and split option; the registry keeps a
default ``PrepConfig`` per data set and ``load_dataset(name, **overrides)`` changes fields of it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, ValidationError

from distillrec.data import splits as S
from distillrec.data.dataset import Dataset
from distillrec.data.preprocess import apply_threshold, deduplicate, encode_ids, k_core
from distillrec.data.sampling import sample_candidates
from distillrec.utils import DistillrecError

SplitKind = Literal["ratio", "shuffle_prefix", "loo", "temporal", "temporal_user", "given"]


class PrepConfig(BaseModel):
    """Preprocessing and split options (all overridable through ``load_dataset(name, **overrides)``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rating_threshold: float | None = None  # keep rating >= threshold (implicit feedback)
    deduplicate: bool = True  # one row per (user, item) (per split/block for given splits)
    min_user_interactions: int = 0  # iterative k-core on users ...
    min_item_interactions: int = 0  # ... and items
    # ratio: random per user; loo: leave-one-out (loo_order); temporal: one global time cut by ratios;
    # temporal_user: per-user ratio, latest rows held out; given: the file's own split column;
    # shuffle_prefix: HetComp's CiteULike loader (legacy NumPy shuffle per user, test first), row for row
    split: SplitKind = "ratio"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, valid, test
    loo_order: Literal["random", "time", "position"] = "random"
    loo_valid: bool = True  # leave-one-out also holds out a validation item
    valid_fraction: float = 0.0  # given split without valid: carve this per-user fraction of train
    eval_items_in_train: bool = False  # drop valid/test rows whose item never occurs in train
    # then drop a user's valid and test rows both when either is left empty (HetComp's loader)
    drop_incomplete_eval_users: bool = False
    seed: int = 0
    n_candidates: int = 0  # sampled protocol: N fixed negatives per user (same array for valid and test)
    identity_ids: bool = False  # ids in the file are already internal (0..n-1); keep them
    n_users: int | None = None  # identity id-space sizes (default: max id + 1)
    n_items: int | None = None
    keep_sequences: bool = False  # fill Dataset.sequences (needs split="loo", loo_order="position")
    protocol: Literal["full", "sampled"] = "full"

    @classmethod
    def make(cls, base: PrepConfig | None = None, **overrides: Any) -> PrepConfig:
        data = (base.model_dump() if base is not None else {}) | overrides
        try:
            return cls(**data)
        except ValidationError as e:
            allowed = ", ".join(cls.model_fields)
            lines = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise DistillrecError(f"bad preprocessing option(s): {lines} (options: {allowed})") from None


def build_dataset(
    df: pd.DataFrame,
    name: str,
    prep: PrepConfig | None = None,
    *,
    citation: str = "",
    meta: dict[str, Any] | None = None,
) -> Dataset:
    """Apply ``prep`` to an interaction frame from :func:`read_interactions` and assemble the Dataset."""
    prep = prep or PrepConfig()
    meta = dict(meta or {}) | {"raw": raw_counts(df)}
    n_raw = len(df)
    if prep.keep_sequences and not (prep.split == "loo" and prep.loo_order == "position"):
        raise DistillrecError("keep_sequences needs split='loo' with loo_order='position'")
    if prep.split == "given" and "split" not in df.columns:
        raise DistillrecError(f"{name}: split='given' but the data has no split column")
    if prep.split in ("temporal", "temporal_user") or (prep.split == "loo" and prep.loo_order == "time"):
        if "timestamp" not in df.columns:
            raise DistillrecError(f"{name}: split={prep.split!r} needs timestamps, but the data has none")
    df = apply_threshold(df, prep.rating_threshold)
    # Sequences keep repeated items (the CSR matrices are binary anyway); everything else is de-duplicated.
    if prep.deduplicate and not prep.keep_sequences:
        df = deduplicate(df)
    df = k_core(df, prep.min_user_interactions, prep.min_item_interactions)
    if len(df) == 0:
        raise DistillrecError(f"{name}: no interactions left after filtering ({_describe_filters(prep)})")
    users, user_ids, n_users = encode_ids(df["user"].to_numpy(), identity=prep.identity_ids, n=prep.n_users)
    items, item_ids, n_items = encode_ids(
        df["item"].to_numpy(), identity=prep.identity_ids, n=prep.n_items, what="item"
    )
    codes = _split_codes(df, users, prep)
    if prep.eval_items_in_train:
        in_train = np.zeros(n_items, dtype=bool)
        in_train[items[codes == S.TRAIN]] = True
        keep = (codes == S.TRAIN) | in_train[items]
        users, items, codes, df = users[keep], items[keep], codes[keep], df[keep]
    if prep.drop_incomplete_eval_users:
        n_valid = np.bincount(users[codes == S.VALID], minlength=n_users)
        n_test = np.bincount(users[codes == S.TEST], minlength=n_users)
        keep = (codes == S.TRAIN) | ((n_valid > 0) & (n_test > 0))[users]
        users, items, codes, df = users[keep], items[keep], codes[keep], df[keep]
    mats = {s: _csr(users[codes == c], items[codes == c], n_users, n_items) for s, c in S.SPLIT_CODES.items()}
    if prep.split == "given" and not (codes == S.VALID).any():
        mats["valid"] = None
    meta.update(n_raw_rows=n_raw, n_rows={s: int((codes == c).sum()) for s, c in S.SPLIT_CODES.items()},
                preprocessing=prep.model_dump())
    ds = Dataset(
        name, n_users, n_items, train=mats["train"], valid=mats["valid"], test=mats["test"],
        user_ids=user_ids, item_ids=item_ids, protocol=prep.protocol, citation=citation, meta=meta,
    )
    if "timestamp" in df.columns:
        ds.train_timestamps = _timestamps(users, items, codes, df["timestamp"].to_numpy(), ds.train)
    if prep.keep_sequences:
        ds.sequences = _sequences(users, items, n_users)
    if prep.n_candidates:
        observed = sum(m for m in (ds.train, ds.valid, ds.test) if m is not None)
        cand = sample_candidates(observed, prep.n_candidates, seed=prep.seed)
        ds.candidates = {"valid": cand, "test": cand}
    return ds


def raw_counts(df: pd.DataFrame) -> dict[str, Any]:
    """Distinct users and items and the number of rows of an input frame (before any filtering)."""
    out: dict[str, Any] = {"n_users": int(df["user"].nunique()), "n_items": int(df["item"].nunique()),
                           "n_rows": len(df)}
    if "rating" in df.columns:
        values, counts = np.unique(df["rating"].to_numpy(), return_counts=True)
        if len(values) <= 20:  # a rating scale, not a continuous score
            out["ratings"] = {f"{v:g}": int(c) for v, c in zip(values, counts)}
    return out


def _split_codes(df: pd.DataFrame, users: np.ndarray, prep: PrepConfig) -> np.ndarray:
    rng = np.random.default_rng(prep.seed)
    ts = df["timestamp"].to_numpy() if "timestamp" in df.columns else None
    if prep.split == "given":
        codes = _given_codes(df["split"])
        if prep.valid_fraction:
            if (codes == S.VALID).any():
                raise DistillrecError("valid_fraction: the given split already has a valid part")
            codes = S.carve_valid(users, codes, prep.valid_fraction, rng)
        return codes
    if prep.split == "ratio":
        return S.split_ratio(users, prep.ratios, rng)
    if prep.split == "shuffle_prefix":
        return S.split_shuffle_prefix(users, prep.ratios, prep.seed)
    if prep.split == "temporal_user":
        return S.split_ratio(users, prep.ratios, rng, key=ts)
    if prep.split == "temporal":
        return S.split_temporal_global(ts, prep.ratios)
    key = {"random": None, "time": ts, "position": np.arange(len(users))}[prep.loo_order]
    return S.split_leave_one_out(users, rng, key=key, with_valid=prep.loo_valid)


def _given_codes(split: pd.Series) -> np.ndarray:
    """Split column (categorical from the readers, or plain strings) → TRAIN/VALID/TEST codes."""
    names = list(S.SPLIT_CODES)
    if isinstance(split.dtype, pd.CategoricalDtype) and list(split.cat.categories) == names:
        return split.cat.codes.to_numpy().astype(np.int8)
    known = split.isin(names).to_numpy()
    if not known.all():
        raise DistillrecError(f"split value {split[~known].iloc[0]!r} is not one of train, valid, test")
    return pd.Categorical(split, categories=names).codes.astype(np.int8)


def _csr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _timestamps(
    users: np.ndarray, items: np.ndarray, codes: np.ndarray, ts: np.ndarray, train: sp.csr_matrix
) -> sp.csr_matrix:
    """Earliest timestamp of each training pair, on exactly ``train``'s sparsity pattern."""
    rows = codes == S.TRAIN
    frame = pd.DataFrame({"k": users[rows] * train.shape[1] + items[rows], "t": ts[rows].astype(np.float64)})
    first = frame.groupby("k", sort=True)["t"].min()
    out = train.copy().astype(np.float64)
    keys = np.repeat(np.arange(train.shape[0], dtype=np.int64), np.diff(train.indptr)) * train.shape[1] + train.indices
    out.data = first.reindex(keys).to_numpy()
    return out


def _sequences(users: np.ndarray, items: np.ndarray, n_users: int) -> list[np.ndarray]:
    order = np.argsort(users, kind="stable")  # stable: file (chronological) order inside each user
    bounds = np.searchsorted(users[order], np.arange(1, n_users))
    return np.split(items[order], bounds)


def _describe_filters(prep: PrepConfig) -> str:
    parts = []
    if prep.rating_threshold is not None:
        parts.append(f"rating >= {prep.rating_threshold}")
    if prep.min_user_interactions > 1:
        parts.append(f"users with >= {prep.min_user_interactions} items")
    if prep.min_item_interactions > 1:
        parts.append(f"items with >= {prep.min_item_interactions} users")
    return ", ".join(parts) or "no filter; the input is empty"


def build_blocks(df: pd.DataFrame, name: str, *, citation: str = "", meta: dict[str, Any] | None = None) -> Dataset:
    """A stream of time blocks (columns block, split, user, item; ids already global and incremental).

    Each block becomes a Dataset in the final, global id space with its own train/valid/test. The top-level
    Dataset is the *static view* of the stream: train = the union of all blocks' train; valid/test = the last
    block's valid/test minus pairs that occur in that union train (a user can revisit an item in a later
    block; kept, such a pair would be masked as seen and could never be hit). Per-block ``meta`` holds the
    raw row counts (the Yelp lists repeat items, which the binary CSR matrices count once) and the id space
    seen so far (``n_users_seen``, ``n_items_seen`` = max id up to the block + 1, as CCD grows its tables).
    """
    prep = PrepConfig(split="given", identity_ids=True, deduplicate=False)
    users, user_ids, n_users = encode_ids(df["user"].to_numpy(), identity=True)
    items, item_ids, n_items = encode_ids(df["item"].to_numpy(), identity=True, what="item")
    block = df["block"].to_numpy()
    codes = _given_codes(df["split"])
    blocks = []
    for k in np.unique(block):  # a handful of blocks; everything inside is vectorised
        rows = block == k
        mats = {s: _csr(users[rows & (codes == c)], items[rows & (codes == c)], n_users, n_items)
                for s, c in S.SPLIT_CODES.items()}
        seen = block <= k
        bmeta = {
            "block": int(k),
            "n_rows": {s: int((rows & (codes == c)).sum()) for s, c in S.SPLIT_CODES.items()},
            "n_users_seen": int(users[seen].max()) + 1,
            "n_items_seen": int(items[seen].max()) + 1,
        }
        blocks.append(Dataset(f"{name}/D{k}", n_users, n_items, user_ids=user_ids, item_ids=item_ids,
                              citation=citation, meta=bmeta, **mats))
    train = _csr(users[codes == S.TRAIN], items[codes == S.TRAIN], n_users, n_items)
    last = blocks[-1]
    held = {s: last.split(s) - last.split(s).multiply(train) for s in ("valid", "test")}
    for m in held.values():
        m.eliminate_zeros()
    meta = dict(meta or {}) | {"raw": raw_counts(df), "n_raw_rows": len(df), "preprocessing": prep.model_dump(),
                               "static_view": "train = all blocks' train; valid/test = last block's, minus train"}
    ds = Dataset(name, n_users, n_items, train=train, valid=held["valid"], test=held["test"], user_ids=user_ids,
                 item_ids=item_ids, citation=citation, meta=meta)
    ds.blocks = blocks
    return ds
