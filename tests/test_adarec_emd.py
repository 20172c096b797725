"""EMD layer mapping: exact flow on hand-solved and LP-checked cases, cost-attention updates, distances."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linprog

from distillrec.distill.emd import (
    EMDLayerMapper,
    OneToOneLayerMapper,
    cost_attention,
    emd_flow,
    layer_distances,
    uniform_layer_map,
)

D_HAND = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], dtype=torch.float64)
W_S = torch.tensor([0.5, 0.5], dtype=torch.float64)
W_T = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)


def test_flow_of_a_hand_solved_case():
    # s0 must ship 0.5: t0 (cost 1) and t1 (cost 2) are its cheapest; s1 fills t2 (cost 1). Unique optimum.
    flow = emd_flow(W_S, W_T, D_HAND)
    assert torch.allclose(flow, torch.tensor([[0.25, 0.25, 0.0], [0.0, 0.0, 0.5]], dtype=torch.float64))
    assert float((flow * D_HAND).sum()) == pytest.approx(1.25)


def test_flow_matches_a_brute_force_lp():
    rng = np.random.default_rng(0)
    for s, t in ((2, 3), (4, 8)):
        a, b = rng.dirichlet(np.ones(s)), rng.dirichlet(np.ones(t))
        d = rng.random((s, t))
        flow = emd_flow(torch.tensor(a), torch.tensor(b), torch.tensor(d)).numpy()
        # equality constraints: row sums = a, column sums = b
        a_eq = np.vstack([np.kron(np.eye(s), np.ones(t)), np.kron(np.ones(s), np.eye(t))])
        lp = linprog(d.ravel(), A_eq=a_eq, b_eq=np.concatenate([a, b]), bounds=(0, None), method="highs")
        assert (flow * d).sum() == pytest.approx(lp.fun, abs=1e-9)
        assert np.allclose(flow.sum(1), a) and np.allclose(flow.sum(0), b) and (flow >= 0).all()


def test_loss_gradient_flows_through_distances_only():
    mapper = EMDLayerMapper(2, 3, tau=1.0)
    mapper.w_student.copy_(W_S)
    mapper.w_teacher.copy_(W_T)
    d = D_HAND.clone().requires_grad_(True)
    mapper.eval()  # no weight update
    loss = mapper(d)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(1.25)
    assert torch.allclose(d.grad, mapper.last_flow)
    assert torch.equal(mapper.w_student, W_S)


def test_cost_attention_update_by_hand():
    mapper = EMDLayerMapper(2, 3, tau=1.0)
    mapper.w_student.copy_(W_S)
    mapper.w_teacher.copy_(W_T)
    mapper.train()
    mapper(D_HAND)  # mirror defaults to Dᵀ
    # student: c = (0.25·1 + 0.25·2)/0.5 = 1.5 and (0.5·1)/0.5 = 1 → ŵ = 2.5/1.5, 2.5/1 → softmax(ŵ / 1)
    e = math.exp(2.5 - 2.5 / 1.5)
    assert mapper.w_student.tolist() == pytest.approx([1 / (1 + e), e / (1 + e)])
    # teacher: c = 0.25·1/0.25 = 1, 0.25·2/0.25 = 2, 0.5·1/0.5 = 1 → ŵ = 4, 2, 4
    z = 2 * math.exp(4) + math.exp(2)
    assert mapper.w_teacher.tolist() == pytest.approx([math.exp(4) / z, math.exp(2) / z, math.exp(4) / z])
    # weights stay positive and on the simplex
    assert float(mapper.w_student.sum()) == pytest.approx(1.0) and (mapper.w_teacher > 0).all()


def test_cost_attention_mirror_temperature_and_sum_rule():
    flow = emd_flow(W_S, W_T, D_HAND)
    mirror = torch.tensor([[2.0, 6.0], [4.0, 4.0], [6.0, 2.0]], dtype=torch.float64)  # = 2·Dᵀ
    w = cost_attention(flow.T, mirror, W_T, tau=10.0)
    assert w.tolist() == pytest.approx(torch.softmax(torch.tensor([4.0, 2.0, 4.0], dtype=torch.float64) / 10, 0)
                                       .tolist())  # a common scale of the costs cancels in ŵ
    w_sum = cost_attention(flow, D_HAND, W_S, update="sum")
    assert w_sum.tolist() == pytest.approx([(2.5 / 1.5) / (2.5 / 1.5 + 2.5), 2.5 / (2.5 / 1.5 + 2.5)])
    # a zero transport cost is floored, not divided by
    assert torch.isfinite(cost_attention(flow, torch.zeros(2, 3, dtype=torch.float64), W_S)).all()


def test_one_to_one_mapping():
    assert uniform_layer_map(4, 8) == [1, 3, 5, 7]
    assert uniform_layer_map(4, 4) == [0, 1, 2, 3]
    assert uniform_layer_map(2, 3) == [1, 2]
    d = torch.arange(32, dtype=torch.float64).view(4, 8)
    assert float(OneToOneLayerMapper(4, 8)(d)) == pytest.approx((1 + 11 + 21 + 31) / 4)


def test_layer_distances_match_direct_kl_and_mse():
    torch.manual_seed(0)
    hs, ht = torch.randn(3, 7, 5), torch.randn(4, 7, 5)
    d, mirror = layer_distances(hs, ht, "kl", "forward")
    for i in range(3):
        for j in range(4):
            kl_t_s = F.kl_div(F.log_softmax(hs[i], -1), F.log_softmax(ht[j], -1), log_target=True,
                              reduction="sum") / 7
            kl_s_t = F.kl_div(F.log_softmax(ht[j], -1), F.log_softmax(hs[i], -1), log_target=True,
                              reduction="sum") / 7
            assert float(d[i, j]) == pytest.approx(float(kl_t_s), abs=1e-5)
            assert float(mirror[j, i]) == pytest.approx(float(kl_s_t), abs=1e-5)
    rev, rev_mirror = layer_distances(hs, ht, "kl", "reverse", denominator=2.0)  # the authors' order, / B
    assert torch.allclose(rev, mirror.T * 7 / 2, atol=1e-5) and torch.allclose(rev_mirror, d.T * 7 / 2, atol=1e-5)
    mse, mse_mirror = layer_distances(hs, ht, "mse")
    assert float(mse[1, 2]) == pytest.approx(float(((hs[1] - ht[2]) ** 2).mean()), abs=1e-5)
    assert torch.equal(mse_mirror, mse.T)
    with pytest.raises(ValueError, match="layer stacks"):
        layer_distances(hs, ht[:, :3])
