"""The shared loss kernels: hand-computed values, a naive reference, stability, gradients."""

import math

import pytest
import torch

from distillrec.distill.losses import (
    listmle_loss,
    ranked_list_loss,
    relaxed_pl_loss,
    set_softmax_loss,
    soft_bce_loss,
    squared_error_loss,
)


def naive_relaxed_pl(ordered: torch.Tensor, bag: torch.Tensor) -> torch.Tensor:
    """Σ_k [log(Σ_{l≥k} e^{o_l} + Σ_j e^{b_j}) − o_k] per row, with plain Python loops (float64)."""
    out = []
    for o, b in zip(ordered.double().tolist(), bag.double().tolist()):
        total = 0.0
        for k in range(len(o)):
            total += math.log(sum(math.exp(x) for x in o[k:]) + sum(math.exp(x) for x in b)) - o[k]
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


def test_relaxed_pl_hand_computed():
    # ordered (2, 1), bag (0):
    #   k=1: log(e² + e¹ + e⁰) − 2 = log(11.107337) − 2 = 0.4076060
    #   k=2: log(e¹ + e⁰) − 1      = log(3.7182818) − 1 = 0.3132617
    #   total 0.7208677
    loss = relaxed_pl_loss(torch.tensor([[2.0, 1.0]]), torch.tensor([[0.0]]), reduction="sum")
    assert loss.item() == pytest.approx(0.7208677, abs=1e-6)


def test_listmle_is_the_empty_bag_case():
    # ordered (2, 1) alone: log(e² + e¹) − 2 + 0 = log(1 + e⁻¹) = 0.3132617
    s = torch.tensor([[2.0, 1.0]])
    assert listmle_loss(s).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert relaxed_pl_loss(s, torch.zeros(1, 0)).item() == pytest.approx(listmle_loss(s).item())


def test_relaxed_pl_matches_naive_loop_and_reductions():
    g = torch.Generator().manual_seed(0)
    ordered, bag = torch.randn(7, 5, generator=g) * 3, torch.randn(7, 4, generator=g) * 3
    per_row = relaxed_pl_loss(ordered, bag, reduction="none")
    torch.testing.assert_close(per_row.double(), naive_relaxed_pl(ordered, bag), rtol=1e-5, atol=1e-5)
    assert relaxed_pl_loss(ordered, bag, "sum").item() == pytest.approx(per_row.sum().item(), rel=1e-6)
    assert relaxed_pl_loss(ordered, bag, "mean").item() == pytest.approx(per_row.mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        relaxed_pl_loss(ordered, bag, "avg")


def test_relaxed_pl_with_a_precomputed_bag_logsumexp():
    g = torch.Generator().manual_seed(2)
    ordered, bag = torch.randn(4, 3, generator=g) * 5, torch.randn(4, 50, generator=g) * 5
    expected = relaxed_pl_loss(ordered, bag, reduction="none")
    got = relaxed_pl_loss(ordered, reduction="none", bag_logsumexp=torch.logsumexp(bag, dim=1))
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="either bag or bag_logsumexp"):
        relaxed_pl_loss(ordered, bag, bag_logsumexp=torch.zeros(4))


def test_relaxed_pl_gradient_matches_float64_reference():
    g = torch.Generator().manual_seed(1)
    o, b = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 2, generator=g, dtype=torch.float64)
    o1, b1 = o.clone().requires_grad_(), b.clone().requires_grad_()
    relaxed_pl_loss(o1, b1, "sum").backward()
    o2, b2 = o.clone().requires_grad_(), b.clone().requires_grad_()
    # Reference written with explicit suffix sums of exponentials.
    e_o, e_b = o2.exp(), b2.exp()
    suffix = torch.stack([e_o[:, k:].sum(1) for k in range(4)], 1) + e_b.sum(1, keepdim=True)
    (suffix.log() - o2).sum().backward()
    torch.testing.assert_close(o1.grad, o2.grad)
    torch.testing.assert_close(b1.grad, b2.grad)


def test_relaxed_pl_is_stable_for_huge_scores():
    # ±1e4 overflows exp() in any precision; the max-shifted kernel must stay finite and exact.
    ordered = torch.tensor([[1e4, 1e4 - 1.0], [-1e4, -1e4 - 1.0]])
    bag = torch.tensor([[1e4 - 2.0], [-1e4 + 5.0]])
    per_row = relaxed_pl_loss(ordered.requires_grad_(), bag, reduction="none")
    assert torch.isfinite(per_row).all()
    # Shift invariance: row 0 equals the (0, −1 | −2) case computed in small numbers.
    small = relaxed_pl_loss(torch.tensor([[0.0, -1.0]]), torch.tensor([[-2.0]]), reduction="sum")
    assert per_row[0].item() == pytest.approx(small.item(), abs=1e-3)
    # Row 1 equals the (0, −1 | 5) case: the bag item beats both ordered ones.
    expected = naive_relaxed_pl(torch.tensor([[0.0, -1.0]]), torch.tensor([[5.0]])).item()
    assert per_row[1].item() == pytest.approx(expected, abs=1e-3)
    per_row.sum().backward()
    assert torch.isfinite(ordered.grad).all()


def test_set_softmax_loss_hand_computed():
    # top (2, 1), rest (0): [log(e² + 1) − 2] + [log(e + 1) − 1] = 0.1269280 + 0.3132617 = 0.4401897
    loss = set_softmax_loss(torch.tensor([[2.0, 1.0]]), torch.tensor([[0.0]]), reduction="sum")
    assert loss.item() == pytest.approx(0.4401897, abs=1e-6)


def test_soft_bce_and_squared_error():
    # BCE(logit 0, target 0.25) = log 2 whatever the target; weighted 2 and 0 → mean over entries = log 2.
    logits, targets = torch.zeros(1, 2), torch.tensor([[0.25, 0.75]])
    w = torch.tensor([[2.0, 0.0]])
    assert soft_bce_loss(logits, targets, w).item() == pytest.approx(math.log(2), abs=1e-6)
    assert soft_bce_loss(logits, targets, w, row_reduce="sum").item() == pytest.approx(2 * math.log(2), abs=1e-6)
    # −log σ(2) for a hard label 1.
    assert soft_bce_loss(torch.tensor([[2.0]]), torch.ones(1, 1)).item() == pytest.approx(
        math.log(1 + math.exp(-2)), abs=1e-6)
    # ‖(1, 2) − (0, 0)‖² = 5 and ‖(0, 0) − (0, 0)‖² = 0: mean 2.5, sum 5
    t, p = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.zeros(2, 2)
    assert squared_error_loss(t, p).item() == pytest.approx(2.5)
    assert squared_error_loss(t, p, "sum").item() == pytest.approx(5.0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_closed_form_list_kernel_matches_the_autograd_kernel(reduction):
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(30, 13, generator=g, dtype=torch.float64) * 4
    scores[0, 6:] = -50.0  # a bag far below the list
    scores[1, :6] = -50.0  # a list far below its bag
    a, b = scores.clone().requires_grad_(), scores.clone().requires_grad_()
    fast = ranked_list_loss(a, 6, reduction)
    ref = relaxed_pl_loss(b[:, :6], b[:, 6:], reduction)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    weights = torch.randn(fast.shape, generator=g, dtype=torch.float64)
    (fast * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    per_row = naive_relaxed_pl(scores[:, :6], scores[:, 6:])
    torch.testing.assert_close(ranked_list_loss(scores, 6, "none"), per_row, rtol=1e-10, atol=1e-10)


def test_closed_form_list_kernel_falls_back_where_a_suffix_underflows():
    # Scores spread by 200: exp underflows in float32, the log-space kernel takes over, values stay exact.
    scores = torch.tensor([[0.0, -200.0, -201.0, -300.0]], requires_grad=True)
    loss = ranked_list_loss(scores, 3, "sum")
    expected = naive_relaxed_pl(scores[:, :3].detach(), scores[:, 3:].detach()).item()
    assert loss.item() == pytest.approx(expected, abs=1e-4)
    loss.backward()
    assert torch.isfinite(scores.grad).all()
    with pytest.raises(ValueError, match="0 < k"):
        ranked_list_loss(scores.detach(), 0)
    with pytest.raises(ValueError, match="reduction"):
        ranked_list_loss(scores.detach(), 2, "avg")
