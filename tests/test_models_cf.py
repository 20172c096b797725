"""Collaborative-filtering recommenders: contract consistency, hand-computed pieces, and learning behaviour."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from pydantic import ValidationError

from distillrec.data.dataset import Dataset
from distillrec.models import get_model_class, list_models
from distillrec.models.bpr import BPR
from distillrec.models.cml import CML
from distillrec.models.lightgcn import LightGCN
from distillrec.models.neumf import NeuMF
from distillrec.models.pop import Pop
from distillrec.models.vae import ItemAE, MultVAE, normalized_rows
from distillrec.utils import DistillrecError

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


CF_MODELS = ["bpr", "cml", "lightgcn", "neumf", "vae", "iae", "pop"]

# small sizes so every model learns the planted structure in a few dozen steps
SMALL = {
    "bpr": {"embedding_dim": 16, "init_std": 0.1},
    "cml": {"embedding_dim": 16, "margin": 0.5},
    "lightgcn": {"embedding_dim": 16, "n_layers": 2},
    "neumf": {"embedding_dim": 8, "mlp_layers": [16, 8]},
    "vae": {"embedding_dim": 8, "hidden_dims": [32], "total_anneal_steps": 50},
    "iae": {"embedding_dim": 8, "hidden_dims": [32], "total_anneal_steps": 50},
    "pop": {},
}


def planted(seed: int = 0, n_users: int = 80, n_items: int = 48, n_groups: int = 4) -> Dataset:
    """Users of group g like items of group g (p = 0.5); one liked item per user is held out as test."""
    rng = np.random.default_rng(seed)
    ug = np.arange(n_users) % n_groups
    ig = np.arange(n_items) % n_groups
    like = (ug[:, None] == ig[None, :]) & (rng.random((n_users, n_items)) < 0.5)
    like[np.arange(n_users), ug] = True  # every user has at least one liked item
    test = np.zeros_like(like)
    for u in range(n_users):  # test set construction, not a hot path
        test[u, rng.choice(np.flatnonzero(like[u]))] = True
    train = like & ~test
    return Dataset("planted", n_users, n_items, train=sp.csr_matrix(train), test=sp.csr_matrix(test))


def batch_for(model, ds: Dataset, g: torch.Generator, batch_size: int = 128, n_neg: int = 4) -> dict:
    if model.input_type == "pairwise":
        coo = ds.train.tocoo()
        pick = torch.randint(coo.nnz, (batch_size,), generator=g)
        return {
            "users": torch.from_numpy(coo.row).long()[pick],
            "pos_items": torch.from_numpy(coo.col).long()[pick],
            "neg_items": torch.randint(ds.n_items, (batch_size, n_neg), generator=g),
        }
    if model.input_type == "user":
        users = torch.randperm(ds.n_users, generator=g)[:32]
        return {"users": users, "rows": torch.from_numpy(ds.train[users.numpy()].toarray())}
    items = torch.randperm(ds.n_items, generator=g)[:24]
    return {"items": items, "cols": torch.from_numpy(ds.train.T.tocsr()[items.numpy()].toarray())}


def test_auc(model, ds: Dataset) -> float:
    """Mean over users of P(score of the held-out item > score of a random never-seen item)."""
    model.eval()
    with torch.no_grad():
        model.prepare_eval(ds, "test")
        scores = model.full_scores(torch.arange(ds.n_users)).numpy()
    model.train()
    pos = scores[ds.test.nonzero()]  # one test item per user, rows in user order
    neg_mask = ~(ds.train + ds.test).toarray().astype(bool)
    wins = (pos[:, None] > scores) & neg_mask
    return float((wins.sum(1) / neg_mask.sum(1)).mean())


test_auc.__test__ = False  # a helper, not a test


@pytest.mark.parametrize("name", [n for n in CF_MODELS if n != "pop"])
def test_training_lowers_loss_and_ranks_held_out_items(name):
    torch.manual_seed(0)
    ds = planted()
    model = get_model_class(name).from_dataset(ds, **SMALL[name])
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(1)
    auc_before = test_auc(model, ds)
    losses = []
    for _ in range(80):
        loss = model.loss(batch_for(model, ds, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10]), losses
    auc = test_auc(model, ds)
    assert auc > 0.8 and auc > auc_before + 0.1, (auc_before, auc)


@pytest.mark.parametrize("name", CF_MODELS)
def test_score_matches_full_scores(name):
    torch.manual_seed(0)
    ds = planted()
    model = get_model_class(name).from_dataset(ds, **SMALL[name])
    users = torch.tensor([0, 5, 17, 79])
    items = torch.randint(ds.n_items, (4, 6))
    with torch.no_grad():
        full = model.full_scores(users)
        assert full.shape == (4, ds.n_items)
        torch.testing.assert_close(model.score(users, items), full.gather(1, items), atol=1e-5, rtol=1e-5)
        pairs = full.gather(1, items[:, :1]).squeeze(1)
        torch.testing.assert_close(model.score(users, items[:, 0]), pairs, atol=1e-5, rtol=1e-5)
        # the same after prepare_eval's caches are built in eval mode
        model.eval()
        model.prepare_eval(ds, "test")
        torch.testing.assert_close(model.full_scores(users), full, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.score(users, items), full.gather(1, items), atol=1e-5, rtol=1e-5)
    assert model.user_repr(users).shape[0] == 4 and model.item_repr(items[:, 0]).shape[0] == 4


def test_neumf_full_scores_in_chunks_equal_pair_scores():
    torch.manual_seed(0)
    model = NeuMF(7, 23, NeuMF.Config(embedding_dim=4, mlp_layers=[8, 6, 3]))
    users = torch.arange(7)
    whole = model.full_scores(users)
    model.chunk_elements = 7 * 6 * 5  # 5 items per chunk -> 5 chunks, the last one short
    chunked = model.full_scores(users)
    pairs = model.score(users.repeat_interleave(23), torch.arange(23).repeat(7)).reshape(7, 23)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(pairs, whole, atol=1e-6, rtol=1e-5)
    assert model.user_repr(users).shape == (7, 4 + 4)


def test_neumf_candidate_lists_project_each_item_once_with_the_same_values_and_gradients():
    torch.manual_seed(0)
    model = NeuMF(6, 9, NeuMF.Config(embedding_dim=4, mlp_layers=[8, 6, 3]))
    users, items = torch.arange(6), torch.randint(0, 9, (6, 12))  # repeats within and across the lists
    deduped = model.score(users, items)
    (deduped ** 2).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    plain = model._logits(users, items)
    (plain ** 2).sum().backward()
    torch.testing.assert_close(deduped, plain)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, msg=n)


@pytest.mark.parametrize("n_pairs", [4, 60])  # fewer pairs than either table's rows, and more than both
def test_neumf_pair_scores_match_list_scores_in_values_and_gradients(n_pairs):
    torch.manual_seed(0)
    model = NeuMF(6, 9, NeuMF.Config(embedding_dim=4, mlp_layers=[8, 6, 3]))
    users, items = torch.randint(0, 6, (n_pairs,)), torch.randint(0, 9, (n_pairs,))
    pairs = model.score(users, items)  # the pair form (projected tables once past their size)
    (pairs ** 2).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    listed = model._logits(users, items.unsqueeze(1)).squeeze(1)  # one row per pair, projected per row
    (listed ** 2).sum().backward()
    torch.testing.assert_close(pairs, listed)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, msg=n)


def test_lightgcn_propagation_matches_dense_computation():
    r = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0]], dtype=np.float32)  # item 3 is isolated
    ds = Dataset("g", 3, 4, train=sp.csr_matrix(r), test=sp.csr_matrix((3, 4)))
    model = LightGCN.from_dataset(ds, embedding_dim=2, n_layers=2)
    ego = np.arange(14, dtype=np.float32).reshape(7, 2) / 10 - 0.5
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.from_numpy(ego[:3]))
        model.item_emb.weight.copy_(torch.from_numpy(ego[3:]))
    a = np.zeros((7, 7))
    a[:3, 3:] = r
    a[3:, :3] = r.T
    deg = a.sum(1)
    d = np.where(deg > 0, deg, 1) ** -0.5 * (deg > 0)
    a_hat = d[:, None] * a * d[None, :]
    e1 = a_hat @ ego
    e2 = a_hat @ e1
    expected = (ego + e1 + e2) / 3
    users, items = model.propagate()
    np.testing.assert_allclose(users.detach().numpy(), expected[:3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(items.detach().numpy(), expected[3:], rtol=1e-5, atol=1e-6)
    # spot check one entry by hand: Â[user0, item0] = 1/sqrt(deg(u0)=2 · deg(i0)=2) = 0.5
    assert a_hat[0, 3] == pytest.approx(0.5)
    # the graph is not part of a checkpoint; the ego embeddings are
    assert set(model.state_dict()) == {"user_emb.weight", "item_emb.weight"}


def test_lightgcn_cache_is_dropped_by_train():
    ds = planted()
    model = LightGCN.from_dataset(ds, embedding_dim=4, n_layers=1)
    model.eval()
    model.prepare_eval(ds, "test")
    assert model._cache is not None
    model.train()
    assert model._cache is None
    with pytest.raises(DistillrecError, match="training graph"):
        LightGCN(3, 4).full_scores(torch.tensor([0]))


def test_vae_anneal_schedule_and_step_counter_in_state_dict():
    ds = planted()
    cfg = {"embedding_dim": 4, "hidden_dims": [8], "anneal_cap": 0.3, "total_anneal_steps": 10}
    model = MultVAE.from_dataset(ds, **cfg)
    batch = batch_for(model, ds, torch.Generator().manual_seed(0))
    seen = []
    for _ in range(5):
        seen.append(model.beta)
        model.loss(batch)
    assert seen == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.3])  # min(cap, step / total)
    model.eval()
    model.loss(batch)  # evaluation does not advance the schedule
    assert int(model.anneal_step) == 5
    state = model.state_dict()
    assert int(state["anneal_step"]) == 5 and "in_indptr" not in state
    resumed = MultVAE(ds.n_users, ds.n_items, MultVAE.Config(**cfg))
    resumed.load_state_dict(state)
    assert resumed.beta == pytest.approx(0.3)
    assert MultVAE(3, 4, MultVAE.Config(total_anneal_steps=0, anneal_cap=0.2)).beta == 0.2


def test_vae_loss_is_hand_computable_at_evaluation():
    """Eval mode, no hidden layer: loss = -Σ x·log_softmax(W μ + b) + β·KL with μ from the normalised input."""
    torch.manual_seed(0)
    model = MultVAE(2, 3, MultVAE.Config(embedding_dim=1, hidden_dims=[], total_anneal_steps=4, anneal_cap=1.0))
    model.anneal_step.fill_(2)  # β = 2 / 4
    x = torch.tensor([[1.0, 0.0, 1.0]])
    enc, dec = model.encoder[0], model.decoder[0]
    h = enc(x / np.sqrt(2.0))
    mu, logvar = h[:, :1], h[:, 1:]
    nll = -(torch.log_softmax(dec(mu), -1) * x).sum()
    kl = 0.5 * (-logvar + logvar.exp() + mu**2 - 1).sum()
    model.eval()
    torch.testing.assert_close(model.loss({"users": torch.tensor([0]), "rows": x}), nll + 0.5 * kl)


def test_iae_full_scores_are_decoder_logits_of_encoded_items():
    ds = planted()
    model = ItemAE.from_dataset(ds, embedding_dim=4, hidden_dims=[8])
    model.eval()
    users = torch.tensor([1, 2, 3])
    with torch.no_grad():
        cols = torch.from_numpy(ds.train.T.toarray())
        mu, _ = model.encode(cols)
        logits = model.decode(mu)  # [n_items, n_users]
        torch.testing.assert_close(model.full_scores(users), logits[:, users].T, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.item_repr(torch.tensor([0, 5])), mu[[0, 5]])


def test_normalized_rows_matches_scipy():
    m = sp.random(9, 7, density=0.3, random_state=3, format="lil")
    m[4] = 0  # an empty row
    m = m.tocsr()
    m.eliminate_zeros()
    m.data[:] = 1.0
    idx = torch.tensor([4, 0, 8, 4, 2])
    out = normalized_rows(torch.from_numpy(m.indptr).long(), torch.from_numpy(m.indices).long(), idx, 7)
    dense = m[idx.numpy()].toarray()
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    np.testing.assert_allclose(out.to_dense().numpy(), dense / np.where(norms > 0, norms, 1), rtol=1e-6)


def test_cml_embeddings_stay_in_unit_ball():
    torch.manual_seed(0)
    ds = planted()
    model = CML.from_dataset(ds, embedding_dim=8, margin=1.0)
    with torch.no_grad():
        model.user_emb.weight.mul_(10)  # rows far outside the ball
    opt = torch.optim.Adam(model.parameters(), lr=0.5)  # big steps push rows outward
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = batch_for(model, ds, g)
        loss = model.loss(batch)
        # the rows of this batch were clipped in place before the step, as CML's clip_by_norm
        assert model.user_emb.weight[batch["users"]].norm(dim=1).max() <= 1.0 + 1e-5
        opt.zero_grad()
        loss.backward()
        opt.step()
    all_users, all_items = torch.arange(ds.n_users), torch.arange(ds.n_items)
    assert model.user_repr(all_users).norm(dim=1).max() <= 1.0 + 1e-5
    assert model.item_repr(all_items).norm(dim=1).max() <= 1.0 + 1e-5
    u, v = model.user_repr(all_users[:2]), model.item_repr(all_items[:3])
    torch.testing.assert_close(model.full_scores(all_users[:2])[:, :3], -torch.cdist(u, v) ** 2, atol=1e-5, rtol=1e-5)


def test_cml_hinge_by_hand():
    model = CML(1, 3, CML.Config(embedding_dim=2, margin=0.5, use_rank_weight=False))
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.tensor([[0.0, 0.0]]))
        model.item_emb.weight.copy_(torch.tensor([[0.6, 0.0], [0.0, 0.5], [0.0, 0.9]]))
    batch = {"users": torch.tensor([0]), "pos_items": torch.tensor([0]), "neg_items": torch.tensor([[1, 2]])}
    # d²(pos) = 0.36; closest negative d² = 0.25; hinge = 0.5 + 0.36 - 0.25
    assert model.loss(batch).item() == pytest.approx(0.61)
    model.config.use_rank_weight = True
    # impostors: 0.86 - 0.25 > 0 yes, 0.86 - 0.81 > 0 yes -> weight log(1 + 3·1)
    assert model.loss(batch).item() == pytest.approx(0.61 * np.log(4.0))


def test_bpr_and_neumf_losses_by_hand():
    model = BPR(1, 3, BPR.Config(embedding_dim=1))
    with torch.no_grad():
        model.user_emb.weight.fill_(1.0)
        model.item_emb.weight.copy_(torch.tensor([[2.0], [1.0], [-1.0]]))
    batch = {"users": torch.tensor([0]), "pos_items": torch.tensor([0]), "neg_items": torch.tensor([[1, 2]])}
    expected = -(np.log(1 / (1 + np.exp(-1.0))) + np.log(1 / (1 + np.exp(-3.0)))) / 2
    assert model.loss(batch).item() == pytest.approx(expected, rel=1e-6)
    nmf = NeuMF(1, 3, NeuMF.Config(embedding_dim=2, mlp_layers=[4, 2]))
    logits = nmf.score(torch.tensor([0]), torch.tensor([[0, 1, 2]]))[0]
    bce = -(torch.log(torch.sigmoid(logits[0])) + torch.log(1 - torch.sigmoid(logits[1:])).sum()) / 3
    assert nmf.loss(batch).item() == pytest.approx(bce.item(), rel=1e-5)
    nmf_bpr = NeuMF(1, 3, NeuMF.Config(embedding_dim=2, mlp_layers=[4, 2], loss_type="bpr"))
    nmf_bpr.load_state_dict(nmf.state_dict())
    pairwise = -(torch.log(torch.sigmoid(logits[0] - logits[1])) + torch.log(torch.sigmoid(logits[0] - logits[2]))) / 2
    assert nmf_bpr.loss(batch).item() == pytest.approx(pairwise.item(), rel=1e-5)


def test_pop_ranks_by_training_count_and_round_trips():
    r = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]])
    ds = Dataset("p", 4, 4, train=sp.csr_matrix(r), test=sp.csr_matrix((4, 4)))
    model = Pop.from_dataset(ds)
    scores = model.full_scores(torch.tensor([0, 3]))
    assert scores.tolist() == [[1, 3, 2, 1], [1, 3, 2, 1]]
    assert scores.argsort(dim=1, descending=True, stable=True)[0].tolist() == [1, 2, 0, 3]
    scores[0, 1] = -1  # callers may mask in place without touching the model
    assert model.counts.tolist() == [1, 3, 2, 1]
    loaded = Pop(4, 4)
    loaded.load_state_dict(model.state_dict())
    assert loaded.score(torch.tensor([2]), torch.tensor([2])).tolist() == [2.0]


def test_config_rejects_unknown_keys_and_registry_lists_models():
    with pytest.raises(ValidationError, match="embeding_dim"):
        BPR.Config(embeding_dim=3)
    with pytest.raises(ValidationError):
        get_model_class("lightgcn").Config(n_layers=-1)
    with pytest.raises(ValidationError, match="mlp_layers"):
        NeuMF.Config(mlp_layers=[7, 4])
    with pytest.raises(ValidationError):
        get_model_class("vae").Config(dropout=1.0)
    with pytest.raises(ValidationError, match="hidden_dims"):
        get_model_class("iae").Config(hidden_dims=[600, 0])
    assert set(CF_MODELS) <= set(list_models())
    for name in CF_MODELS:
        assert get_model_class(name).name == name


def test_lightgcn_propagation_and_its_gradient_match_the_dense_adjacency():
    """The CSR propagation with its symmetric backward (Â G, no transpose) against the dense Â."""
    import copy

    import scipy.sparse as sp

    from distillrec.models.lightgcn import LightGCN, normalized_adjacency

    rng = np.random.default_rng(0)
    train = sp.csr_matrix((np.ones(60), (rng.integers(0, 9, 60), rng.integers(0, 7, 60))), shape=(9, 7))
    model = LightGCN(9, 7, LightGCN.Config(embedding_dim=5, n_layers=2))
    model.set_graph(train)
    dense = normalized_adjacency(train, 9, 7).to_dense()
    assert torch.allclose(dense, dense.T)  # what the backward relies on
    model.train()
    users, items = model.propagate()
    weights = torch.randn(16, 5)
    (torch.cat([users, items]) * weights).sum().backward()
    ego = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach().requires_grad_()
    layers = [ego, dense @ ego, dense @ (dense @ ego)]
    expected = sum(layers) / 3
    assert torch.allclose(torch.cat([users, items]), expected, atol=1e-6)
    (expected * weights).sum().backward()
    got = torch.cat([model.user_emb.weight.grad, model.item_emb.weight.grad])
    assert torch.allclose(got, ego.grad, atol=1e-6)
    twin = copy.deepcopy(model)  # CCD and HetComp copy models; the CSR buffer must survive it
    assert torch.allclose(torch.cat(twin.eval().propagate()), torch.cat(model.eval().propagate()))
