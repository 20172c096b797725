"""Growing embedding tables, CCD's entity initialisation (hand-computed), the proxies' EMA."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from distillrec.continual.entity_init import init_new_entities, neighbour_init, two_hop_neighbours
from distillrec.continual.growth import grow_model
from distillrec.continual.proxies import ema_model
from distillrec.models.bpr import BPR
from distillrec.models.lightgcn import LightGCN
from distillrec.models.vae import MultVAE
from distillrec.utils import DistillrecError


def _bpr(n_users: int, n_items: int, users: list, items: list) -> BPR:
    m = BPR(n_users, n_items, BPR.Config(embedding_dim=2))
    with torch.no_grad():
        m.user_emb.weight.copy_(torch.tensor(users, dtype=torch.float32))
        m.item_emb.weight.copy_(torch.tensor(items, dtype=torch.float32))
    return m


# Old: users u0 [1, 0], u1 [0, 1], u2 [1, 1]; items i0 [2, 0], i1 [0, 2]. New: users 3, 4 and item 2.
# Block train: u0–i0, u1–i0, u1–i1, u3–i0, u3–i2, u4–i2 (u2 inactive in the block).
OLD_USERS = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
OLD_ITEMS = [[2.0, 0.0], [0.0, 2.0]]
R = sp.csr_matrix((np.ones(6, np.float32), ([0, 1, 1, 3, 3, 4], [0, 0, 1, 0, 2, 2])), shape=(5, 3))


def test_grow_bpr_keeps_old_rows() -> None:
    torch.manual_seed(0)
    m = BPR(3, 2, BPR.Config(embedding_dim=4))
    g = grow_model(m, 5, 3)
    assert (g.n_users, g.n_items) == (5, 3)
    assert torch.equal(g.user_emb.weight[:3], m.user_emb.weight)
    assert torch.equal(g.item_emb.weight[:2], m.item_emb.weight)
    assert g.user_emb.weight[3:].abs().sum() > 0  # the model's own random init
    z = grow_model(m, 5, 3, new_rows="zero")
    assert torch.equal(z.user_emb.weight[3:], torch.zeros(2, 4))
    assert torch.equal(z.item_emb.weight[2:], torch.zeros(1, 4))
    with pytest.raises(DistillrecError, match="shrink"):
        grow_model(m, 2, 2)


def test_grow_lightgcn_and_vae() -> None:
    torch.manual_seed(0)
    small = sp.csr_matrix((np.ones(3, np.float32), ([0, 1, 2], [0, 1, 1])), shape=(3, 2))
    lg = LightGCN(3, 2, LightGCN.Config(embedding_dim=4, n_layers=1))
    lg.set_graph(small)
    g = grow_model(lg, 5, 3, interactions=R)
    assert torch.equal(g.user_emb.weight[:3], lg.user_emb.weight)
    assert g.full_scores(torch.arange(5)).shape == (5, 3)  # the new graph is attached
    vae = MultVAE(3, 2, MultVAE.Config(embedding_dim=4, hidden_dims=[6]))
    gv = grow_model(vae, 5, 3, interactions=R)
    assert torch.equal(gv.encoder[0].weight[:, :2], vae.encoder[0].weight)  # input layer grows by columns
    assert torch.equal(gv.decoder[-1].weight[:2], vae.decoder[-1].weight)  # output layer grows by rows
    assert torch.equal(gv.decoder[-1].bias[:2], vae.decoder[-1].bias)
    assert torch.equal(gv.encoder[1].weight, vae.encoder[1].weight)
    assert gv.full_scores(torch.arange(5)).shape == (5, 3)


def test_entity_init_hand_values() -> None:
    u, i = torch.tensor(OLD_USERS), torch.tensor(OLD_ITEMS)
    users = neighbour_init(R, 3, 2, u, i, topk=2)
    # u3: 1-hop mean(i0) = [2, 0]; 2-hop: old users sharing i0 by block activity = u1 (2), u0 (1) → [.5, .5]
    # u4: no old item (1-hop 0); nobody old shares i2 → the 2 most active old users u1, u0 → [.5, .5]
    assert torch.allclose(users, torch.tensor([[1.25, 0.25], [0.25, 0.25]]))
    # topk 3: u3 has only two co-occurring old users; filled with the next most active one (u2, activity 0)
    users3 = neighbour_init(R, 3, 2, u, i, topk=3)
    assert torch.allclose(users3[0], 0.5 * (torch.tensor([2.0, 0.0]) + torch.tensor([2 / 3, 2 / 3])))
    assert two_hop_neighbours(R, 3, 3).tolist() == [[1, 0, 2], [1, 0, 2]]
    # item 2: its users (u3, u4) are new → 1-hop 0; 2-hop: i0 (shares u3; activity 3), filled with i1 → [1, 1]
    items = neighbour_init(R.T.tocsr(), 2, 3, i, u, topk=2)
    assert torch.allclose(items, torch.tensor([[0.5, 0.5]]))
    one = neighbour_init(R, 3, 2, u, i, topk=2, one_hop_only=True)
    assert torch.allclose(one, torch.tensor([[2.0, 0.0], [0.0, 0.0]]))


def test_init_new_entities_on_a_grown_model() -> None:
    m = grow_model(_bpr(3, 2, OLD_USERS, OLD_ITEMS), 5, 3)
    assert init_new_entities(m, R, 3, 2, topk=2)
    assert torch.allclose(m.user_emb.weight, torch.tensor([*OLD_USERS, [1.25, 0.25], [0.25, 0.25]]))
    assert torch.allclose(m.item_emb.weight, torch.tensor([*OLD_ITEMS, [0.5, 0.5]]))
    vae = MultVAE(5, 3, MultVAE.Config(embedding_dim=2, hidden_dims=[4]))
    assert not init_new_entities(vae, R, 3, 2)  # no ID tables: left to the model's own init


def test_proxy_ema() -> None:
    proxy = _bpr(2, 2, [[1.0, 1.0], [2.0, 2.0]], [[0.0, 1.0], [1.0, 0.0]])
    distilled = _bpr(3, 2, [[0.0, 0.0], [10.0, 0.0], [5.0, 5.0]], [[1.0, 1.0], [3.0, 3.0]])
    s = ema_model(proxy, distilled, 0.9)
    assert torch.allclose(s.user_emb.weight, torch.tensor([[0.9, 0.9], [2.8, 1.8], [5.0, 5.0]]))
    assert torch.allclose(s.item_emb.weight, torch.tensor([[0.1, 1.0], [1.2, 0.3]]))
    assert not any(p.requires_grad for p in s.parameters())
    first = ema_model(None, distilled, 0.9)  # block 1: S = P = D_0
    assert torch.equal(first.user_emb.weight, distilled.user_emb.weight)
    assert torch.equal(distilled.user_emb.weight[1], torch.tensor([10.0, 0.0]))  # the source is untouched
    with pytest.raises(DistillrecError):
        ema_model(distilled, proxy, 0.5)  # a proxy larger than the student
