"""Proxy-guided replay: the sampler's distribution, exclusions, labels, merging, serving in slices."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

from distillrec.continual.negatives import NegativeSampler
from distillrec.continual.objectives import UpdateObjective
from distillrec.continual.replay import ReplayBuffer, ReplaySet, merge_replay, sample_replay
from distillrec.models.bpr import BPR


def fixed_scores(item_scores: list[float], n_users: int) -> BPR:
    """A BPR model whose every user scores item i with item_scores[i] (dim 1, user embedding 1)."""
    m = BPR(n_users, len(item_scores), BPR.Config(embedding_dim=1))
    with torch.no_grad():
        m.user_emb.weight.fill_(1.0)
        m.item_emb.weight.copy_(torch.tensor(item_scores)[:, None])
    return m


def test_sampler_distribution_matches_the_formula() -> None:
    n_users = 6000
    source = fixed_scores([5, 4, 3, 2, 1, 0], n_users)  # r_X = 0..5
    reference = fixed_scores([0, 1, 2, 3, 4, 5], n_users)  # r_W = 5..0
    eps, top_a = 0.5, 4
    got = sample_replay(source, reference, n=1, top_a=top_a, epsilon=eps, generator=torch.Generator().manual_seed(0))
    assert len(got) == n_users and torch.equal(got.users.sort().values, torch.arange(n_users))
    # P(i) ∝ exp(ε (r_W − r_X)) on the source's top-A: differences 5, 3, 1, −1 for items 0..3
    w = np.exp(eps * np.array([5, 3, 1, -1], dtype=float))
    expected = w / w.sum()
    freq = np.bincount(got.items.numpy(), minlength=6) / n_users
    assert freq[4:].sum() == 0  # outside the top-A: never
    assert np.abs(freq[:4] - expected).max() < 0.03
    assert torch.allclose(got.labels, torch.sigmoid(torch.tensor([5.0, 4, 3, 2]))[got.items])


def test_sampler_excludes_and_draws_without_replacement() -> None:
    source = fixed_scores([5, 4, 3, 2, 1, 0], 50)
    reference = fixed_scores([5, 4, 3, 2, 1, 0], 50)
    exclude = sp.csr_matrix((np.ones(50, np.float32), (np.arange(50), np.ones(50, int))), shape=(50, 6))
    got = sample_replay(source, reference, n=4, top_a=4, epsilon=1e-4, exclude=exclude,
                        generator=torch.Generator().manual_seed(1))
    assert len(got) == 200
    assert not (got.items == 1).any()  # item 1 was excluded: pushed below every real score
    # with item 1 gone, the top-4 is {0, 2, 3, 4}; 4 draws take all of them, once each
    for u in range(50):
        assert sorted(got.items[got.users == u].tolist()) == [0, 2, 3, 4]
    # fewer candidates than asked: only what the top-A holds
    few = sample_replay(source, reference, n=10, top_a=2, users=torch.tensor([0, 1]))
    assert len(few) == 4


def test_merge_keeps_the_largest_label() -> None:
    a = ReplaySet(torch.tensor([0, 0, 1]), torch.tensor([1, 2, 1]), torch.tensor([0.2, 0.9, 0.5]))
    b = ReplaySet(torch.tensor([0, 2]), torch.tensor([1, 0]), torch.tensor([0.7, 0.1]))
    m = merge_replay([a, b], n_items=3)
    got = {(int(u), int(i)): round(float(y), 4) for u, i, y in zip(m.users, m.items, m.labels)}
    assert got == {(0, 1): 0.7, (0, 2): 0.9, (1, 1): 0.5, (2, 0): 0.1}
    assert len(merge_replay([], 3)) == 0


def test_buffer_serves_each_triple_once_per_epoch() -> None:
    data = ReplaySet(torch.arange(10), torch.arange(10), torch.full((10,), 0.5))
    buf = ReplayBuffer(lambda g: data, n_batches=3, seed=0)
    buf.resample(1)
    buf.new_epoch(1)
    slices = [buf.next_slice() for _ in range(3)]
    assert [len(s) for s in slices] == [4, 4, 2]
    assert sorted(torch.cat([s.users for s in slices]).tolist()) == list(range(10))
    assert buf.next_slice() is None


def test_update_objective_anneals_replay() -> None:
    torch.manual_seed(0)
    model = BPR(4, 5, BPR.Config(embedding_dim=3))
    data = ReplaySet(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3]), torch.full((4,), 0.9))
    obj = UpdateObjective(model, replay=ReplayBuffer(lambda g: data, n_batches=1), lambda_replay=0.5,
                          anneal_epochs=10.0, resample_every=5)
    batch = {"users": torch.tensor([0, 1]), "pos_items": torch.tensor([0, 1]), "neg_items": torch.tensor([[2], [3]])}
    obj.on_epoch_start(1)
    t1 = obj.loss(batch)
    obj.on_epoch_start(3)
    t3 = obj.loss(batch)
    with torch.no_grad():
        bce = torch.nn.functional.binary_cross_entropy_with_logits(model.score(data.users, data.items), data.labels)
    assert math.isclose(t1["replay"].item(), 0.5 * float(bce), rel_tol=1e-5)
    assert math.isclose(t3["replay"].item(), 0.5 * math.exp(-0.2) * float(bce), rel_tol=1e-5)
    assert obj.stats()["n_replay"] == 4


def test_negative_sampler_avoids_positives_and_the_hard_set() -> None:
    """CCD's stages draw BPR negatives outside positives ∪ the teacher side's top-N (spec §B.6d, §B.7.4); a
    user whose positives ∪ hard set fill the catalogue falls back to negatives outside the positives."""
    rng = np.random.default_rng(0)
    n_users, n_items = 20, 30
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))
    hard = sp.lil_matrix((n_users, n_items), dtype=np.float32)
    hard[:, :10] = 1.0  # every user's "top-10" of the teacher side
    hard[0, :] = 1.0  # user 0: nothing left outside train ∪ hard
    sampler = NegativeSampler(train, hard.tocsr())
    users = torch.arange(n_users).repeat(50)
    got = sampler.draw(users, torch.zeros(len(users), 2, dtype=torch.long), torch.Generator().manual_seed(0))
    assert got.shape == (len(users), 2)
    dense_train, dense_hard = train.toarray() > 0, hard.toarray() > 0
    u, i = users[:, None].expand_as(got).numpy(), got.numpy()
    assert not dense_train[u, i].any()
    rest = u != 0
    assert not dense_hard[u[rest], i[rest]].any()  # ... and never the hard items
    assert len(np.unique(i[rest])) > 10  # still spread over the free items
    assert set(i[~rest].tolist()) <= set(np.flatnonzero(~dense_train[0]).tolist())  # the fallback row


def test_update_objective_redraws_the_batch_negatives() -> None:
    torch.manual_seed(0)
    model = BPR(4, 12, BPR.Config(embedding_dim=3))
    train = sp.csr_matrix((np.ones(4, np.float32), ([0, 1, 2, 3], [0, 1, 2, 3])), shape=(4, 12))
    hard = sp.csr_matrix(np.tile((np.arange(12) < 8).astype(np.float32), (4, 1)))  # items 0..7 are hard
    seen: list[torch.Tensor] = []
    plain_loss = model.loss
    model.loss = lambda batch: (seen.append(batch["neg_items"]), plain_loss(batch))[1]
    obj = UpdateObjective(model, negatives=NegativeSampler(train, hard), seed=3)
    obj.on_epoch_start(1)
    batch = {"users": torch.arange(4).repeat(8), "pos_items": torch.arange(4).repeat(8),
             "neg_items": torch.full((32, 1), 5)}  # the trainer's plain draw: a hard item
    obj.loss(batch)
    assert seen[-1].shape == (32, 1) and bool((seen[-1] >= 8).all())
    plain = UpdateObjective(model)
    plain.on_epoch_start(1)
    plain.loss(batch)
    assert torch.equal(seen[-1], batch["neg_items"])  # without a hard set the batch is left as drawn
