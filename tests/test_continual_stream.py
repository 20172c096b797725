"""The stream protocol: cutting a time-stamped data set into blocks, growing id spaces, per-block views."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from distillrec.continual.stream import Stream, cut_stream, load_stream, stream_from_blocks
from distillrec.data import load_dataset
from distillrec.data.build import build_blocks
from distillrec.data.dataset import Dataset
from distillrec.utils import DistillrecError


@pytest.fixture(scope="module")
def synth_stream() -> Stream:
    return load_stream("synthetic", n_users=150, n_items=100, n_blocks=3)


def _first_block(stream: Stream, axis: int) -> np.ndarray:
    """Block in which each entity first occurs (any split), -1 if never."""
    n = stream.n_users if axis == 0 else stream.n_items
    first = np.full(n, -1)
    for k in reversed(range(stream.n_blocks)):
        b = stream.blocks[k]
        m = (b.train + b.valid + b.test).tocsr()
        present = np.diff(m.indptr) > 0 if axis == 0 else np.asarray(m.sum(0)).ravel() > 0
        first[present] = k
    return first


def test_cut_stream_blocks_and_growing_ids(synth_stream: Stream) -> None:
    s = synth_stream
    assert s.n_blocks == 4
    total = sum(b.train.nnz + b.valid.nnz + b.test.nnz for b in s.blocks) + s.meta["n_dropped_eval"]
    base = s.blocks[0]
    # the base block holds half of the interactions (before the eval rows that had to be dropped)
    assert abs((base.train.nnz + base.valid.nnz + base.test.nnz) / total - 0.5) < 0.05
    for axis, seen in ((0, s.n_users_seen), (1, s.n_items_seen)):
        first = _first_block(s, axis)
        assert np.all(np.diff(seen) >= 0)
        for k in range(s.n_blocks):
            ids = np.flatnonzero(first == k)
            lo = 0 if k == 0 else seen[k - 1]
            # an entity first seen in block k has an id above every earlier id, below the block's count
            assert ids.size == 0 or (ids.min() >= lo and ids.max() < seen[k])
    # incremental blocks: roughly equal sizes
    sizes = [b.train.nnz + b.valid.nnz + b.test.nnz for b in s.blocks[1:]]
    assert max(sizes) - min(sizes) < 0.2 * max(sizes)


def test_block_splits_follow_the_ccd_protocol(synth_stream: Stream) -> None:
    for b in synth_stream.blocks:
        in_train = np.asarray(b.train.sum(0)).ravel() > 0
        for split in ("valid", "test"):
            m = b.split(split)
            assert in_train[m.indices].all()  # eval items occur in the block's train
            assert (b.train.multiply(m)).nnz == 0  # disjoint from train
        has_v, has_t = np.diff(b.valid.indptr) > 0, np.diff(b.test.indptr) > 0
        assert np.array_equal(has_v, has_t)  # a user keeps both eval parts or neither
        assert has_t.sum() > 10


def test_cut_stream_is_chronological() -> None:
    # 3 users × 4 interactions with distinct times; base 50% = the 6 earliest rows
    users = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    items = np.array([0, 1, 2, 3, 0, 1, 4, 5, 2, 3, 6, 7])
    times = np.array([1, 2, 3, 9, 4, 5, 10, 11, 6, 7, 8, 12], dtype=float)
    train = sp.csr_matrix((np.ones(12, np.float32), (users, items)), shape=(3, 8))
    ts = sp.csr_matrix((times, (users, items)), shape=(3, 8))
    empty = sp.csr_matrix((3, 8), dtype=np.float32)
    ds = Dataset("toy", 3, 8, train=train, valid=empty, test=empty, user_ids=np.array(["a", "b", "c"]),
                 item_ids=np.array([f"i{i}" for i in range(8)]))
    ds.train_timestamps = ts
    s = cut_stream(ds, base_fraction=0.5, n_blocks=2, ratios=(1.0, 0.0, 0.0))
    assert s.n_users_seen == [3, 3, 3]
    # base = times 1..6 (items 0, 1, 2); D1 = times 7, 8, 9 (items 3, 6, 3); D2 = times 10, 11, 12 (4, 5, 7).
    # New ids by first appearance: 3 → 3, 6 → 4, 4 → 5, 5 → 6, 7 → 7
    assert s.n_items_seen == [3, 5, 8]
    d1 = s.blocks[1].train.tocoo()
    assert sorted(d1.col.tolist()) == [3, 3, 4]
    assert {s.blocks[1].item_ids[i] for i in d1.col} == {"i3", "i6"}
    assert [s.blocks[2].item_ids[i] for i in (5, 6, 7)] == ["i4", "i5", "i7"]
    assert list(s.blocks[0].user_ids) == ["a", "b", "c"]


def test_views_cut_to_the_entities_seen(synth_stream: Stream) -> None:
    s = synth_stream
    nu, ni = s.sizes(1)
    v = s.view(2, 1)
    assert (v.n_users, v.n_items) == s.sizes(2)
    assert v.test.nnz == s.blocks[1].test.nnz and v.train.nnz == s.blocks[1].train.nnz
    own = s.view(1)
    assert (own.n_users, own.n_items) == (nu, ni)
    hist = s.view(2, 2, train="history")
    assert hist.train.nnz >= max(b.train.nnz for b in s.blocks[:3])
    assert hist.train.nnz == s.history(2).nnz
    new = s.new_users(2)
    assert len(new) and new.min() >= s.n_users_seen[1] and new.max() < s.n_users_seen[2]
    assert len(s.new_users(0)) == 0
    with pytest.raises(ValueError):
        s.view(1, 2)


def test_stream_from_given_blocks() -> None:
    frame = pd.DataFrame({"block": [0, 0, 0, 1, 1, 1, 1], "split": ["train", "train", "test", "train", "train",
                                                                      "valid", "test"],
                          "user": [0, 1, 0, 1, 2, 2, 2], "item": [0, 1, 1, 2, 3, 2, 3]})
    s = stream_from_blocks(build_blocks(frame, "given"))
    assert s.n_users_seen == [2, 3] and s.n_items_seen == [2, 4]
    assert list(s.new_users(1)) == [2]


def test_stream_errors() -> None:
    with pytest.raises(DistillrecError, match="no timestamps"):
        cut_stream(load_dataset("synthetic", n_users=50, n_items=40))
    with pytest.raises(DistillrecError, match=r"ratios=\(1.0, 0.0, 0.0\)"):
        cut_stream(load_dataset("synthetic", n_users=50, n_items=40, timestamps=True))
    with pytest.raises(DistillrecError, match="no time blocks"):
        stream_from_blocks(load_dataset("synthetic", n_users=50, n_items=40))


def test_ml100k_has_timestamps_and_cuts(data_dir) -> None:
    s = load_stream("ml-100k", data_dir=data_dir)
    assert s.n_blocks == 6
    assert s.n_users_seen[-1] == 942 and s.n_items_seen[-1] <= 1447
    assert all(b.test.nnz > 0 for b in s.blocks)
