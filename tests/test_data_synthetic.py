import numpy as np
import scipy.sparse.linalg as spla

from distillrec.data import load_dataset, make_synthetic, synthetic_interactions


def test_deterministic_by_seed():
    a = synthetic_interactions(n_users=300, n_items=200, seed=7, timestamps=True)
    b = synthetic_interactions(n_users=300, n_items=200, seed=7, timestamps=True)
    c = synthetic_interactions(n_users=300, n_items=200, seed=8, timestamps=True)
    assert a.equals(b) and not a.equals(c)


def test_default_size_and_split():
    ds = make_synthetic()
    s = ds.stats()
    assert (ds.n_users, ds.n_items) == (2000, 1500)
    assert 60_000 <= s["n_interactions"] <= 100_000
    assert s["n_valid"] > 0 and s["n_test"] > 0 and abs(s["n_train"] / s["n_interactions"] - 0.8) < 0.03
    assert s["train_per_user"]["min"] >= 3  # at least 5 items per user, one each to valid and test


def test_power_law_popularity_and_long_tailed_activity():
    df = synthetic_interactions(seed=0)
    item_deg = np.sort(np.bincount(df["item"], minlength=1500))[::-1]
    top10 = item_deg[:150].sum() / item_deg.sum()
    assert top10 > 0.3  # uniform popularity would give 0.1
    ranks = np.arange(1, 1501)
    mid = slice(10, 1000)  # the head saturates (items are drawn at most once per user), fit the body
    slope = np.polyfit(np.log(ranks[mid]), np.log(np.maximum(item_deg[mid], 1)), 1)[0]
    assert -1.5 < slope < -0.4
    user_deg = np.bincount(df["user"])
    assert user_deg.min() >= 5 and user_deg.max() > 4 * np.median(user_deg)


def test_preferences_have_more_than_rank_8():
    # 32 taste clusters: the top 8 singular directions leave much of the structure unexplained, so a dim-8
    # student underfits what a dim-64 teacher can represent.
    ds = make_synthetic()
    s = spla.svds(ds.train.astype(np.float64), k=32, return_singular_vectors=False)
    s = np.sort(s)[::-1] ** 2
    assert s[8:32].sum() / s[:32].sum() > 0.35  # measured 0.50 at seed 0


def test_sequences_and_registry_overrides():
    ds = load_dataset("synthetic", n_users=200, n_items=150, sequences=True, seed=3)
    assert ds.n_users == 200 and ds.n_items == 150 and len(ds.sequences) == 200
    assert ds.train_timestamps is not None and ds.train_timestamps.nnz == ds.train.nnz
    last = np.array([s[-1] for s in ds.sequences])
    assert (ds.test.indices == last).all()  # leave-one-out by position: the last item is the test item
    # consecutive items share a taste cluster more often than in a shuffled history: a sequential signal
    df = synthetic_interactions(n_users=500, n_items=400, seed=3, timestamps=True)
    cluster = df.attrs["item_cluster"][df["item"].to_numpy()]
    same_user = df["user"].to_numpy()[1:] == df["user"].to_numpy()[:-1]
    ordered = (cluster[1:] == cluster[:-1])[same_user].mean()
    shuffled = df.sample(frac=1.0, random_state=0).sort_values("user", kind="stable")
    c2 = df.attrs["item_cluster"][shuffled["item"].to_numpy()]
    assert ordered > 3 * (c2[1:] == c2[:-1])[same_user].mean()
    assert (np.diff(df["timestamp"].to_numpy())[same_user] > 0).all()  # each user's rows in time order
