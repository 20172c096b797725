"""LA / RA / H-mean from hand-made r(k, j) matrices; the rank ensemble; the LWC-KD terms against brute force."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from distillrec.continual import resolve_stream_config
from distillrec.continual.ensemble import RankEnsemble
from distillrec.continual.lwckd import LWCKD, LWCKDConfig, _Neighbours, contrastive_term, knn_graph
from distillrec.continual.metrics import harmonic_mean, matrix_from_rows, stream_summary
from distillrec.models.bpr import BPR

NAN = float("nan")
R = [[0.5, NAN, NAN],
     [0.4, 0.3, NAN],
     [0.2, 0.25, 0.35]]


def test_la_ra_h_hand_values() -> None:
    s = stream_summary(R)
    la1, ra1 = 0.3, 0.4
    la2, ra2 = (0.3 + 0.35) / 2, (0.4 + (0.2 + 0.25) / 2) / 2
    assert s["per_block"]["LA"][1:] == pytest.approx([la1, la2])
    assert s["per_block"]["RA"][1:] == pytest.approx([ra1, ra2])
    assert s["H"] == pytest.approx(2 * la2 * ra2 / (la2 + ra2))
    assert s["per_block"]["H"][1] == pytest.approx(2 * 0.3 * 0.4 / 0.7)
    assert math.isnan(s["per_block"]["LA"][0])
    no_base = stream_summary(R, include_base=False)  # D0 is not a "past block": only r(2, 1) counts
    assert no_base["RA"] == pytest.approx(0.25)
    assert math.isnan(no_base["per_block"]["RA"][1])
    partial = stream_summary(matrix_from_rows([[0.5], [0.4, 0.3]], 3))  # a run stopped after D1
    assert partial["LA"] == pytest.approx(0.3) and partial["RA"] == pytest.approx(0.4)
    assert math.isnan(stream_summary([[0.5, NAN]])["H"])
    assert harmonic_mean(0.0, 0.0) == 0.0


def _fixed(scores: list[list[float]]) -> BPR:
    """A dim-n_items BPR model whose user u scores item i with scores[u][i] (identity item embeddings)."""
    s = torch.tensor(scores)
    m = BPR(s.shape[0], s.shape[1], BPR.Config(embedding_dim=s.shape[1]))
    with torch.no_grad():
        m.user_emb.weight.copy_(s)
        m.item_emb.weight.copy_(torch.eye(s.shape[1]))
    return m


def test_rank_ensemble_hand_values() -> None:
    a, b = _fixed([[3.0, 2.0, 1.0]]), _fixed([[1.0, 2.0, 30.0]])
    ens = RankEnsemble([a, b], beta=1.0)
    # ranks a: 0, 1, 2 → 1, 1/2, 1/3; b: 2, 1, 0 → 1/3, 1/2, 1; mean by rank, not by score scale
    assert torch.allclose(ens.full_scores(torch.tensor([0])), torch.tensor([[2 / 3, 1 / 2, 2 / 3]]))
    ens05 = RankEnsemble([a, b])
    expected = (torch.tensor([1.0, 2.0, 3.0]) ** -0.05 + torch.tensor([3.0, 2.0, 1.0]) ** -0.05) / 2
    assert torch.allclose(ens05.full_scores(torch.tensor([0]))[0], expected)
    assert torch.allclose(ens05.score(torch.tensor([0]), torch.tensor([[2, 0]])), expected[[2, 0]][None])


def test_knn_graph_by_cosine() -> None:
    m = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32))
    g = knn_graph(m, n_neighbors=1).toarray()
    assert g.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 0]]  # row 2 shares nothing: no neighbour


def test_contrastive_term_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    old, new = torch.randn(3, 4, generator=g), torch.randn(5, 4, generator=g)
    nbrs = sp.csr_matrix((np.ones(4, np.float32), ([0, 0, 2, 2], [1, 3, 0, 4])), shape=(3, 5))
    rows = torch.tensor([0, 1, 2])
    got = contrastive_term(old, new, rows, _Neighbours(nbrs), temperature=2.0, weights=torch.tensor([1.0, 5.0, 3.0]))
    logp = torch.log_softmax(old @ new.T / 2.0, dim=1)
    # anchor 1 has no neighbour and is left out of the mean
    want = -((logp[0, 1] + logp[0, 3]) / 2 * 1.0 + (logp[2, 0] + logp[2, 4]) / 2 * 3.0) / 2
    assert torch.allclose(got, want)


def test_lwckd_terms_and_gradients() -> None:
    torch.manual_seed(0)
    old_train = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32))
    old_u, old_i = torch.randn(2, 4), torch.randn(3, 4)
    model = BPR(3, 4, BPR.Config(embedding_dim=4, init_std=0.1))  # grown: one new user, one new item
    plain = LWCKD(old_u, old_i, old_train, LWCKDConfig(piw=False, graph_terms=False, lambda_lwc=1.0))
    users, items = torch.tensor([0, 1, 2]), torch.tensor([1, 3])  # user 2 and item 3 are new: ignored
    terms = plain.terms(model, users, items)
    new_u, new_i = model.user_emb.weight[:2], model.item_emb.weight[:3]
    ui = contrastive_term(old_u, new_i, torch.tensor([0, 1]), _Neighbours(old_train), 5.0)
    iu = contrastive_term(old_i[[1]], new_u, torch.tensor([1]), _Neighbours(old_train.T.tocsr()), 5.0)
    assert torch.allclose(terms["lwc"], ui + iu)
    full = LWCKD(old_u, old_i, old_train, LWCKDConfig(n_clusters=2), seed=0)
    terms = full.terms(model, users, items)
    assert set(terms) == {"lwc", "cluster"}
    sum(terms.values()).backward()
    assert model.user_emb.weight.grad[:2].abs().sum() > 0 and full.centres.grad is not None
    assert full.w_c.grad is not None  # W_c is in the graph through the PIW weights (trained with the centres)


def test_piw_weights_use_the_bilinear_cluster_profile() -> None:
    """PIW's G = softmax(e W_c μ) (spec §B.7.2), not the clustering loss's Student-t Q: the weights follow
    W_c, and equal users' drifts give equal weights."""
    torch.manual_seed(0)
    old_train = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=np.float32))
    old_u, old_i = torch.randn(3, 4), torch.randn(3, 4)
    lw = LWCKD(old_u, old_i, old_train, LWCKDConfig(n_clusters=2, graph_terms=False), seed=0)
    e = torch.randn(5, 4)
    want = torch.softmax(e @ lw.w_c @ lw.centres.T, dim=1)
    assert torch.allclose(lw.piw_assign(e), want)
    assert not torch.allclose(lw.piw_assign(e), lw.soft_assign(e))
    with torch.no_grad():
        lw.w_c.mul_(3.0)
    assert torch.allclose(lw.piw_assign(e), torch.softmax(3.0 * e @ lw.centres.T, dim=1), atol=1e-6)


@pytest.mark.parametrize("preset", [None, "configs/ccd/yelp.yaml", "configs/ccd/yelp-mf.yaml"])
def test_lwckd_weights_are_the_authors_over_the_batch_pairs(preset: str | None) -> None:
    """λ_LWC = 0.01 and λ_cl = 1 sit next to the authors' BPR summed over a 2,048-pair batch, and L_XY is a mean
    over anchors in both codes (spec §B.7.2): with our batch-mean BPR they are ÷ 2,048, as the weight decay."""
    root = Path(__file__).resolve().parents[1]
    cfg = resolve_stream_config(root / preset if preset else None)
    pairs = cfg.teacher_update.train.batch_size * cfg.teacher_update.train.n_negatives
    lw = LWCKDConfig(**cfg.teacher_update.lwckd)
    assert pairs == 2048
    assert lw.lambda_lwc == pytest.approx(0.01 / pairs) and lw.lambda_cluster == pytest.approx(1.0 / pairs)
    assert cfg.teacher_update.train.weight_decay == pytest.approx(1e-4 / pairs, rel=0.03)  # the same convention


@pytest.mark.parametrize("layers,chosen", [("ego", [0, 1]), ("propagated", [1, 2])])
def test_lwckd_per_lightgcn_layer(layers: str, chosen: list[int]) -> None:
    """Spec §B.7.2: for LightGCN every term is taken on each of the chosen layer outputs (old layer l against new
    layer l) and the layers are averaged; ``readout`` keeps the layer-mean embeddings."""
    from distillrec.continual.lwckd import layer_reprs
    from distillrec.models.lightgcn import LightGCN

    torch.manual_seed(0)
    old_train = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=np.float32))
    old = LightGCN(3, 3, LightGCN.Config(embedding_dim=4, n_layers=2))
    old.set_graph(old_train)
    new = LightGCN(4, 4, LightGCN.Config(embedding_dim=4, n_layers=2))  # grown by one user and one item
    new.set_graph(sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 1]], np.float32)))
    cfg = LWCKDConfig(n_clusters=2, layers=layers, lambda_lwc=1.0, lambda_cluster=1.0)
    with torch.no_grad():
        old_layers = layer_reprs(old, 3, 3, layers)
    assert len(old_layers) == 2
    full = old.layer_outputs()
    for (u, i), l in zip(old_layers, chosen):
        assert torch.equal(u, full[l][:3]) and torch.equal(i, full[l][3:])
    lw = LWCKD(torch.stack([u for u, _ in old_layers]), torch.stack([i for _, i in old_layers]), old_train, cfg)
    users, items = torch.tensor([0, 2, 3]), torch.tensor([0, 1, 3])
    got = lw.terms(new, users, items)
    # by hand: one single-layer LWCKD per chosen layer, sharing the same centres, W_c and MLP, averaged
    new_full = new.layer_outputs()
    want_lwc, want_cl = [], []
    for (u, i), l in zip(old_layers, chosen):
        one = LWCKD(u, i, old_train, LWCKDConfig(n_clusters=2, lambda_lwc=1.0, lambda_cluster=1.0))
        one.centres, one.w_c, one.mlp = lw.centres, lw.w_c, lw.mlp
        c, t = one._layer_terms(u, i, new_full[l][:3], new_full[l][4:7], torch.tensor([0, 2]), torch.tensor([0, 1]))
        want_lwc.append(t)
        want_cl.append(c)
    assert torch.allclose(got["lwc"], torch.stack(want_lwc).mean())
    assert torch.allclose(got["cluster"], torch.stack(want_cl).mean())
    # the layers really differ from the readout the model scores with
    (ru, ri), = layer_reprs(old, 3, 3, "readout")
    readout = LWCKD(ru, ri, old_train, LWCKDConfig(n_clusters=2, lambda_lwc=1.0, lambda_cluster=1.0))
    assert readout.old_user.shape[0] == 1
    readout.centres, readout.w_c, readout.mlp = lw.centres, lw.w_c, lw.mlp
    assert not torch.allclose(readout.terms(new, users, items)["lwc"], got["lwc"])
    got["lwc"].backward()
    assert new.user_emb.weight.grad[:3].abs().sum() > 0


def test_lightgcn_layer_outputs_average_to_the_readout() -> None:
    from distillrec.models.lightgcn import LightGCN

    torch.manual_seed(0)
    m = LightGCN(3, 4, LightGCN.Config(embedding_dim=5, n_layers=3))
    m.set_graph(sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]], np.float32)))
    layers = m.layer_outputs()
    assert len(layers) == 4 and torch.equal(layers[0][:3], m.user_emb.weight)
    u, i = m.propagate()
    assert torch.allclose(torch.cat([u, i]), torch.stack(layers).mean(0), atol=1e-7)
    with m.training_step():  # one propagation per step, shared by the readout and the layer-wise terms
        assert m.layer_outputs() is m.layer_outputs()
