"""The built-in synthetic data set: power-law item popularity, long-tailed user activity, latent taste clusters.

Generative story (deterministic for a seed):

* every item belongs to one of ``n_clusters`` taste clusters and has a popularity weight
  ``(rank + 1) ** -popularity_exponent`` (a random rank per item), so item degrees follow a power law;
* every user has a sparse taste mixture over clusters, ``Dirichlet(taste_concentration)``: with the default
  0.05 most users like one to three clusters;
* the number of items a user consumes is log-normal (long tail), clipped to ``[min_per_user, n_items / 4]``;
* ``P(item | user) = (1 - noise) · Σ_c taste[u, c] · pop[item] · 1[cluster(item) = c] / Z_c + noise · pop / Z``
  and the user's items are drawn without replacement (Gumbel top-k), a batch of users at a time.

With 32 clusters the preference matrix has rank ≈ 32: a dim-64 BPR model can represent it, a dim-8 one
underfits — exactly the gap distillation is meant to close. With ``sequences`` (or ``timestamps``) each user
walks through its clusters in a random order, so the next item tends to come from the current cluster: a
sequential model has something to learn.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pandas as pd

from distillrec.data.build import PrepConfig, build_dataset
from distillrec.data.dataset import Dataset

_T0 = 1_600_000_000  # timestamps start in September 2020, only so they look like Unix times


def synthetic_interactions(
    n_users: int = 2000,
    n_items: int = 1500,
    n_clusters: int = 32,
    mean_per_user: float = 40.0,
    min_per_user: int = 5,
    activity_sigma: float = 0.9,
    popularity_exponent: float = 0.9,
    taste_concentration: float = 0.05,
    noise: float = 0.05,
    timestamps: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """Columns user, item (and timestamp); rows of a user are in chronological order. The planted cluster of
    each item is in ``frame.attrs["item_cluster"]``."""
    if n_users <= 0 or n_items <= 1 or n_clusters <= 0:
        raise ValueError("n_users, n_items and n_clusters must be positive (n_items > 1)")
    if not 0 <= noise <= 1:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    rng = np.random.default_rng(seed)
    cluster = rng.integers(n_clusters, size=n_items)
    pop = (rng.permutation(n_items) + 1.0) ** -popularity_exponent
    z_cluster = np.bincount(cluster, weights=pop, minlength=n_clusters)
    taste = rng.dirichlet(np.full(n_clusters, taste_concentration), size=n_users)
    # Log-normal activity with the requested mean: E[exp(N(mu, s²))] = exp(mu + s²/2).
    mu = np.log(mean_per_user) - activity_sigma**2 / 2
    max_per_user = max(min_per_user, n_items // 4)
    counts = np.clip(np.round(rng.lognormal(mu, activity_sigma, size=n_users)), min_per_user, max_per_user)
    counts = counts.astype(np.int64)

    item_share = pop / np.where(z_cluster[cluster] > 0, z_cluster[cluster], 1.0)  # pop / Z_c of own cluster
    users, items = [], []
    batch = max(1, 2_000_000 // n_items)  # bounded [batch, n_items] blocks, never the full users × items
    for start in range(0, n_users, batch):
        stop = min(n_users, start + batch)
        prob = (1 - noise) * taste[start:stop][:, cluster] * item_share + noise * pop / pop.sum()
        gumbel = -np.log(-np.log(rng.random(prob.shape)))
        k = int(counts[start:stop].max())
        top = np.argpartition(-(np.log(prob + 1e-300) + gumbel), k - 1, axis=1)[:, :k]
        keep = np.arange(k)[None, :] < counts[start:stop, None]
        users.append(np.broadcast_to(np.arange(start, stop)[:, None], top.shape)[keep])
        items.append(top[keep])
    user = np.concatenate(users)
    item = np.concatenate(items)

    # Chronological order: each user visits its clusters in a random order (with some overlap between them).
    cluster_rank = rng.random((n_users, n_clusters)).argsort(axis=1).argsort(axis=1)
    key = cluster_rank[user, cluster[item]] + 1.5 * rng.random(len(user))
    order = np.lexsort((key, user))
    user, item = user[order], item[order]
    frame = {"user": user, "item": item}
    if timestamps:
        start_time = rng.uniform(0, 180 * 86400, size=n_users)
        gaps = rng.exponential(86400.0, size=len(user))
        first = np.concatenate(([True], user[1:] != user[:-1]))
        cum = np.cumsum(gaps)
        offset = np.maximum.accumulate(np.where(first, cum - gaps, 0))  # cumulative gap before each user's first row
        frame["timestamp"] = np.floor(_T0 + start_time[user] + cum - offset)
    out = pd.DataFrame(frame)
    out.attrs["item_cluster"] = cluster  # the planted truth, for tests and diagnostics
    return out


def make_synthetic(
    *,
    timestamps: bool = False,
    sequences: bool = False,
    seed: int = 0,
    prep: PrepConfig | None = None,
    name: str = "synthetic",
    **kwargs: Any,
) -> Dataset:
    """The synthetic data set as a Dataset: per-user random 8:1:1 split by default; with ``sequences``,
    leave-one-out by position and ``Dataset.sequences`` filled (timestamps then come along too).

    ``kwargs`` naming a parameter of :func:`synthetic_interactions` (sizes, exponents, …) go to the generator;
    the others are :class:`PrepConfig` overrides (``split``, ``ratios``, ``n_candidates`` …).
    """
    # Generator options first (n_users / n_items size the generator *and* the id space), the rest is prep.
    gen = {k: v for k, v in kwargs.items() if k in _GEN_DEFAULTS}
    over = {k: v for k, v in kwargs.items() if k not in _GEN_DEFAULTS}
    df = synthetic_interactions(timestamps=timestamps or sequences, seed=seed, **gen)
    # Ids are generated as 0..n-1: keep that id space even if some item happens never to be drawn.
    sizes = {k: int(gen.get(k, _GEN_DEFAULTS[k].default)) for k in ("n_users", "n_items")}
    defaults: dict[str, Any] = {"seed": seed, "identity_ids": True, **sizes}
    if sequences:
        defaults |= {"split": "loo", "loo_order": "position", "keep_sequences": True}
    prep = PrepConfig.make(prep, **(defaults | over))
    meta = {"generator": {"seed": seed, "timestamps": timestamps or sequences, **gen}}
    return build_dataset(df, name, prep, citation="distillrec synthetic generator", meta=meta)


_GEN_DEFAULTS = inspect.signature(synthetic_interactions).parameters
