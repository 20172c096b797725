import numpy as np
import pandas as pd
import pytest

from distillrec.data import PrepConfig, build_dataset, load_file
from distillrec.data import splits as S
from distillrec.data.preprocess import apply_threshold, deduplicate, encode_ids, k_core
from distillrec.utils import DistillrecError


def _frame(pairs, **cols):
    u, i = zip(*pairs)
    return pd.DataFrame({"user": list(u), "item": list(i), **cols})


# -- preprocessing -------------------------------------------------------------------------------------------
def test_threshold_and_dedup_keep_the_earliest():
    df = _frame([(1, 1), (1, 1), (1, 2), (2, 1)], rating=[5, 4, 2, 4], timestamp=[30, 10, 20, 5])
    kept = apply_threshold(df, 4)
    assert kept["rating"].tolist() == [5, 4, 4]
    once = deduplicate(kept)
    assert sorted(zip(once["user"], once["item"], once["timestamp"])) == [(1, 1, 10), (2, 1, 5)]
    with pytest.raises(DistillrecError, match="needs a rating column"):
        apply_threshold(df.drop(columns="rating"), 4)


def test_dedup_per_split_for_int_and_string_ids():
    df = _frame([(1, 1), (1, 1), (1, 1), (1, 2)], split=pd.Categorical(["train", "train", "test", "train"]))
    out = deduplicate(df)
    assert list(zip(out["user"], out["item"], out["split"])) == [(1, 1, "train"), (1, 1, "test"), (1, 2, "train")]
    out = deduplicate(_frame([("a", "x"), ("b", "x"), ("a", "x")]))
    assert list(zip(out["user"], out["item"])) == [("a", "x"), ("b", "x")]


def test_k_core_is_iterative():
    # 2-core: item 9 has one user -> dropped; then user 3 has one item left -> dropped; then item 2 has one
    # user -> dropped; then user 2 has one item -> dropped. A single pass would keep users 2 and 3.
    df = _frame([(0, 0), (0, 1), (1, 0), (1, 1), (2, 1), (2, 2), (3, 2), (3, 9)])
    out = k_core(df, min_user=2, min_item=2)
    assert sorted(zip(out["user"], out["item"])) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_encode_ids_sorted_and_identity():
    codes, ids, n = encode_ids(np.array([30, 10, 20, 10]))
    assert codes.tolist() == [2, 0, 1, 0] and ids.tolist() == ["10", "20", "30"] and n == 3
    codes, ids, n = encode_ids(np.array(["b", "a", "b"], dtype=object))
    assert codes.tolist() == [1, 0, 1] and ids.tolist() == ["a", "b"]
    codes, ids, n = encode_ids(np.array([0, 4]), identity=True, n=6)
    assert codes.tolist() == [0, 4] and n == 6 and ids[5] == "5"
    with pytest.raises(DistillrecError, match="outside the declared id space"):
        encode_ids(np.array([7]), identity=True, n=6)


# -- splits --------------------------------------------------------------------------------------------------
def test_ratio_counts_hand_values():
    n_valid, n_test = S.ratio_counts(np.array([1, 2, 3, 10, 20, 25]), (0.8, 0.1, 0.1))
    assert n_test.tolist() == [0, 1, 1, 1, 2, 2] and n_valid.tolist() == [0, 0, 1, 1, 2, 2]
    n_valid, n_test = S.ratio_counts(np.array([5, 10]), (6, 2, 2))  # normalised; HetComp's 6:2:2
    assert n_test.tolist() == [1, 2] and n_valid.tolist() == [1, 2]


def test_ratio_split_per_user_and_seeded():
    users = np.repeat(np.arange(50), 10)
    a = S.split_ratio(users, (0.8, 0.1, 0.1), np.random.default_rng(3))
    b = S.split_ratio(users, (0.8, 0.1, 0.1), np.random.default_rng(3))
    c = S.split_ratio(users, (0.8, 0.1, 0.1), np.random.default_rng(4))
    assert (a == b).all() and (a != c).any()
    per_user = np.stack([np.bincount(users[a == k], minlength=50) for k in (S.TRAIN, S.VALID, S.TEST)], axis=1)
    assert (per_user == [8, 1, 1]).all()
    # the held-out rows are not simply the last rows of each user
    assert (a.reshape(50, 10)[:, :8] != S.TRAIN).any()


def test_shuffle_prefix_matches_the_authors_loop():
    # HetComp's loader written out: np.random.seed(0), then per user (file order) shuffle the item list and cut
    # int(0.2 n) test, then int(0.2 n) valid
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 13, size=40)
    users = np.concatenate([np.full(n, u) for u, n in enumerate(sizes)])
    users = np.concatenate([users[users % 2 == 1], users[users % 2 == 0]])  # users not contiguous by id
    codes = S.split_shuffle_prefix(users, (0.6, 0.2, 0.2), seed=0)
    saved = np.random.get_state()  # noqa: NPY002
    np.random.seed(0)  # noqa: NPY002 (the authors' global generator is the point)
    expected = np.zeros(len(users), dtype=np.int8)
    for u in dict.fromkeys(users.tolist()):  # order of first appearance
        rows = list(np.flatnonzero(users == u))
        np.random.shuffle(rows)  # noqa: NPY002
        n = len(rows)
        expected[rows[: int(0.2 * n)]] = S.TEST
        expected[rows[int(0.2 * n) : 2 * int(0.2 * n)]] = S.VALID
    np.random.set_state(saved)  # noqa: NPY002
    assert (codes == expected).all() and (codes == S.TEST).sum() == sum(int(0.2 * n) for n in sizes)


def test_drop_incomplete_eval_users():
    # u1's only test item (d) never occurs in train: it goes, and then u1 has a valid row but no test row, so
    # the valid row goes too; u2 keeps both
    pairs = [("u1", "a"), ("u1", "b"), ("u1", "d"), ("u2", "b"), ("u2", "a"), ("u2", "c"), ("u3", "c")]
    df = _frame(pairs, split=["train", "valid", "test", "train", "valid", "test", "train"])
    kept = build_dataset(df, "t", PrepConfig(split="given", eval_items_in_train=True))
    assert (kept.valid.nnz, kept.test.nnz) == (2, 1)
    ds = build_dataset(df, "t", PrepConfig(split="given", eval_items_in_train=True, drop_incomplete_eval_users=True))
    assert (ds.valid.nnz, ds.test.nnz, ds.train.nnz) == (1, 1, 3)
    u2 = ds.user_index("u2")
    assert ds.valid[u2].indices.tolist() == [ds.item_index("a")]
    assert ds.test[u2].indices.tolist() == [ds.item_index("c")]


def test_leave_one_out_by_time_and_by_position():
    users = np.array([0, 0, 0, 1, 1, 2])
    ts = np.array([5, 9, 1, 3, 2, 7])
    codes = S.split_leave_one_out(users, np.random.default_rng(0), key=ts)
    assert codes.tolist() == [S.VALID, S.TEST, S.TRAIN, S.TEST, S.TRAIN, S.TRAIN]
    codes = S.split_leave_one_out(users, np.random.default_rng(0), key=np.arange(6), with_valid=False)
    assert codes.tolist() == [S.TRAIN, S.TRAIN, S.TEST, S.TRAIN, S.TEST, S.TRAIN]


def test_temporal_global_cut_and_per_user_fraction():
    ts = np.arange(10)[::-1].astype(float)  # rows in reverse time order
    codes = S.split_temporal_global(ts, (0.8, 0.1, 0.1))
    assert codes.tolist() == [S.TEST, S.VALID] + [S.TRAIN] * 8
    users = np.zeros(10, dtype=np.int64)
    per_user = S.split_ratio(users, (0.6, 0.2, 0.2), np.random.default_rng(0), key=ts)
    assert per_user.tolist() == [S.TEST] * 2 + [S.VALID] * 2 + [S.TRAIN] * 6


def test_carve_valid_from_a_given_train():
    users = np.repeat(np.arange(4), 10)
    codes = np.where(np.tile(np.arange(10), 4) < 8, S.TRAIN, S.TEST).astype(np.int8)
    out = S.carve_valid(users, codes, 0.25, np.random.default_rng(0))
    assert (out[codes == S.TEST] == S.TEST).all()
    assert np.bincount(users[out == S.VALID], minlength=4).tolist() == [2, 2, 2, 2]


# -- build_dataset -------------------------------------------------------------------------------------------
def test_build_maps_ids_dedups_and_keeps_timestamps():
    pairs = [("u2", "x"), ("u2", "x"), ("u2", "y"), ("u2", "z"), ("u1", "x"), ("u1", "y"), ("u1", "z")]
    df = _frame(pairs, timestamp=[7, 3, 4, 5, 1, 2, 8])
    ds = build_dataset(df, "t", PrepConfig(split="loo", loo_order="time"))
    assert ds.user_ids.tolist() == ["u1", "u2"] and ds.item_ids.tolist() == ["x", "y", "z"]
    assert ds.stats()["n_interactions"] == 6  # the duplicate (u2, x) counted once
    assert ds.test[ds.user_index("u1")].indices.tolist() == [ds.item_index("z")]  # latest (t=8)
    assert ds.test[ds.user_index("u2")].indices.tolist() == [ds.item_index("z")]  # t=5
    assert ds.valid[ds.user_index("u2")].indices.tolist() == [ds.item_index("y")]
    # (u2, x) kept its earliest timestamp, 3, aligned with the train matrix's pattern
    assert ds.train_timestamps[ds.user_index("u2")].toarray().tolist() == [[3, 0, 0]]
    assert (ds.train_timestamps.indices == ds.train.indices).all()


def test_build_sequences_keep_file_order_and_repeats():
    df = _frame([(0, 5), (0, 6), (0, 5), (0, 7), (1, 1), (1, 2), (1, 3)])
    ds = build_dataset(df, "s", PrepConfig(split="loo", loo_order="position", keep_sequences=True))
    assert [s.tolist() for s in ds.sequences] == [[3, 4, 3, 5], [0, 1, 2]]  # items 1,2,3,5,6,7 -> 0..5 sorted
    assert ds.train.nnz == 3 and ds.test[0].indices.tolist() == [5] and ds.valid[0].indices.tolist() == [3]
    assert [h.tolist() for h in ds.history("test")] == [[3, 4, 3], [0, 1]]
    with pytest.raises(DistillrecError, match="keep_sequences needs split='loo'"):
        build_dataset(df, "s", PrepConfig(keep_sequences=True))


def test_build_given_split_candidates_and_errors():
    df = _frame([(0, 0), (0, 1), (1, 2), (1, 3)], split=["train", "test", "train", "valid"])
    ds = build_dataset(df, "g", PrepConfig(split="given", identity_ids=True, n_items=12, n_candidates=5))
    assert ds.n_items == 12 and ds.valid.nnz == 1 and ds.test.nnz == 1
    assert ds.candidates["valid"] is ds.candidates["test"] and ds.candidates["test"].shape == (2, 5)
    assert not np.isin(ds.candidates["test"][0], [0, 1]).any()
    with pytest.raises(DistillrecError, match="no interactions left after filtering"):
        build_dataset(_frame([(0, 0), (1, 1)], rating=[1, 2]), "e", PrepConfig(rating_threshold=4))
    with pytest.raises(DistillrecError, match="needs timestamps"):
        build_dataset(df, "g", PrepConfig(split="temporal"))
    with pytest.raises(DistillrecError, match=r"bad preprocessing option.*ratioz"):
        PrepConfig.make(None, ratioz=(1, 1, 1))


def test_load_file_with_column_mapping(tmp_path):
    rows = [f"{u},{i},{3 + (u + i) % 3}" for u in range(30) for i in range(u % 5, u % 5 + 12)]
    (tmp_path / "r.csv").write_text("who,what,stars\n" + "\n".join(rows) + "\n")
    ds = load_file(tmp_path / "r.csv", columns={"user": "who", "item": "what", "rating": "stars"},
                   rating_threshold=4, min_item_interactions=3, seed=1)
    kept = sum((3 + (u + i) % 3) >= 4 for u in range(30) for i in range(u % 5, u % 5 + 12))
    assert ds.stats()["n_interactions"] == kept and ds.n_users == 30 and ds.valid.nnz > 0
