"""Every registry data set against the statistics in /work/shared/data/*/SOURCE.md (real files)."""

import numpy as np
import pytest

from distillrec.data import list_datasets, load_dataset
from distillrec.utils import DistillrecError

_cache: dict = {}


@pytest.fixture
def load(data_dir):
    def get(name, **overrides):
        key = (name, tuple(sorted(overrides.items())))
        if key not in _cache:
            _cache[key] = load_dataset(name, data_dir=data_dir, download=False, **overrides)
        return _cache[key]

    return get


def test_every_entry_is_listed():
    assert set(list_datasets()) >= {"ml-100k", "gowalla", "citeulike", "citeulike-loo", "beauty", "lastfm",
                                    "gowalla-stream", "yelp-stream", "synthetic"}


def test_ml100k(load):
    s = load("ml-100k").stats()
    assert s["raw"] == {"n_users": 943, "n_items": 1682, "n_rows": 100_000,
                        "ratings": {"1": 6110, "2": 11370, "3": 27145, "4": 34174, "5": 21201}}
    assert s["n_interactions"] == 55_375  # rating >= 4 by default
    assert s["n_valid"] > 0 and s["train_per_user"]["min"] >= 1
    every = load("ml-100k", rating_threshold=None)
    assert (every.n_users, every.n_items, every.stats()["n_interactions"]) == (943, 1682, 100_000)
    assert every.train_timestamps.nnz == every.train.nnz
    assert every.train_timestamps.data.min() >= 874_724_710 and every.train_timestamps.data.max() <= 893_286_638


def test_gowalla(load):
    ds = load("gowalla")
    s = ds.stats()
    assert (s["n_users"], s["n_items"], s["n_train"], s["n_test"]) == (29_858, 40_981, 810_128, 217_242)
    assert ds.valid is None and s["n_users_test"] == 29_858
    assert ds.train.multiply(ds.test).nnz == 0
    carved = load("gowalla", valid_fraction=0.1)
    assert carved.train.nnz + carved.valid.nnz == 810_128 and carved.test.nnz == 217_242
    assert 0.08 < carved.valid.nnz / 810_128 < 0.11


def test_citeulike(load):
    s = load("citeulike").stats()
    assert (s["n_users"], s["n_items"], s["n_interactions"]) == (5_219, 25_181, 125_580)
    assert s["raw"]["n_users"] == 7_947 and s["raw"]["n_rows"] == 134_860
    ratio = load("citeulike", ratios=(0.6, 0.2, 0.2)).stats()
    assert ratio["n_interactions"] == 125_580 and 0.18 < ratio["n_test"] / 125_580 < 0.22
    # HetComp's loader (spec §A.9), row for row: the published counts
    ds = load("citeulike", split="shuffle_prefix", ratios=(0.6, 0.2, 0.2), eval_items_in_train=True,
              drop_incomplete_eval_users=True)
    assert (ds.train.nnz, ds.valid.nnz, ds.test.nnz) == (78_958, 20_823, 20_823)
    has_valid, has_test = np.diff(ds.valid.indptr) > 0, np.diff(ds.test.indptr) > 0
    assert (has_valid == has_test).all() and has_test.sum() == 4_719
    assert not (ds.valid.multiply(ds.train).nnz or ds.test.multiply(ds.train).nnz)
    assert set(ds.test.indices) <= set(ds.train.indices) and set(ds.valid.indices) <= set(ds.train.indices)


def test_citeulike_loo(load):
    ds = load("citeulike-loo")
    s = ds.stats()
    assert (s["n_users"], s["n_items"]) == (5_220, 25_182)
    assert (s["n_train"], s["n_valid"], s["n_test"]) == (115_142, 5_219, 5_219)
    assert s["n_users_train"] == 5_219 and ds.protocol == "sampled"
    cand = ds.candidates["test"]
    assert cand.shape == (5_220, 499) and ds.candidates["valid"] is cand
    observed = (ds.train + ds.valid + ds.test).tocsr()
    rows = np.repeat(np.arange(5_220), 499)
    assert observed[rows, cand.ravel()].sum() == 0
    assert ds.train.multiply(ds.test).nnz == 0 and ds.train.multiply(ds.valid).nnz == 0


def test_sequences_beauty_and_lastfm(load):
    for name, users, items, total in (("beauty", 22_363, 12_101, 198_502), ("lastfm", 1_090, 3_646, 52_551)):
        ds = load(name)
        s = ds.stats()
        assert (s["n_users"], s["n_items"]) == (users, items)
        assert sum(len(q) for q in ds.sequences) == total == sum(ds.meta["n_rows"].values())
        assert s["n_test"] == s["n_valid"] == users  # every sequence has >= 5 items
        assert (ds.test.indices == np.array([q[-1] for q in ds.sequences])).all()
        assert (ds.valid.indices == np.array([q[-2] for q in ds.sequences])).all()
        assert ds.user_ids[0] == "1" and ds.item_ids[0] == "1"  # 1-based ids of the file, mapped to 0-based


_GOWALLA_BLOCKS = [(417_977, 47_398, 47_409), (39_612, 5_065, 5_071), (79_722, 11_088, 11_104),
                   (87_989, 12_377, 12_431), (90_369, 12_970, 12_929), (61_130, 8_263, 8_291)]
_YELP_ROWS = [(119_869, 15_202, 15_206), (33_032, 6_893, 6_895), (20_189, 4_174, 4_180),
              (20_056, 4_011, 4_014), (23_567, 4_691, 4_682), (21_291, 3_929, 3_933)]


def test_gowalla_stream(load):
    ds = load("gowalla-stream")
    assert (ds.n_users, ds.n_items, len(ds.blocks)) == (29_858, 40_988, 6)
    for b, expected in zip(ds.blocks, _GOWALLA_BLOCKS):
        assert (b.train.nnz, b.valid.nnz, b.test.nnz) == expected
        assert (b.n_users, b.n_items) == (29_858, 40_988)
    assert [b.stats()["n_items_train"] for b in ds.blocks] == [39_149, 19_423, 27_198, 29_163, 28_948, 23_177]
    assert [b.meta["n_items_seen"] for b in ds.blocks] == [39_354, 39_809, 40_381, 40_689, 40_908, 40_988]
    assert ds.train.nnz == sum(e[0] for e in _GOWALLA_BLOCKS)  # no pair repeats across Gowalla blocks
    assert ds.test.nnz == 8_291


def test_yelp_stream_rows_and_pairs(load):
    ds = load("yelp-stream")
    assert (ds.n_users, ds.n_items) == (14_950, 12_261) and ds.stats()["raw"]["n_rows"] == 315_814
    for b, rows in zip(ds.blocks, _YELP_ROWS):
        assert tuple(b.meta["n_rows"][s] for s in ("train", "valid", "test")) == rows
        assert b.train.nnz <= rows[0]  # the lists repeat some items; the binary matrices count pairs once
    assert [b.stats()["n_items_train"] for b in ds.blocks] == [10_782, 9_324, 7_877, 7_570, 8_074, 7_683]
    assert ds.test.multiply(ds.train).nnz == 0  # the static view drops last-block test pairs seen in train


def test_unknown_name_and_missing_files(tmp_path):
    with pytest.raises(DistillrecError, match="unknown data set 'movielens'; known data sets: ml-100k, gowalla"):
        load_dataset("movielens")
    with pytest.raises(DistillrecError, match=r"not in .*gowalla: expected train\.txt \(or train\.txt\.gz\)"):
        load_dataset("gowalla", data_dir=tmp_path)
    with pytest.raises(DistillrecError, match="no overrides"):
        load_dataset("yelp-stream", split="ratio")
