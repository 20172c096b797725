"""DE experts: the opt-in bf16 matmuls agree with fp32 and keep fp32 parameters; the entity subset is an
unbiased estimate of the full DE term."""

import pytest
import torch

from distillrec.distill.experts import DistillationExperts, ExpertMixture
from distillrec.models.bpr import BPR


def test_bfloat16_experts_agree_with_float32_and_keep_float32_parameters():
    torch.manual_seed(0)
    fp32 = ExpertMixture(20, 200, 30)
    bf16 = ExpertMixture(20, 200, 30, compute_dtype="bfloat16")
    bf16.load_state_dict(fp32.state_dict())
    student, teacher = torch.randn(300, 20), torch.randn(300, 200)
    losses, grads = [], []
    for mix in (fp32, bf16):
        out = mix(student, teacher, tau=0.5, generator=torch.Generator().manual_seed(1))
        assert out.dtype == torch.float32
        loss = mix.loss(student, teacher, tau=0.5, generator=torch.Generator().manual_seed(1))
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.reshape(-1) for p in mix.parameters()]))
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in mix.parameters())
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)  # bf16 carries ~3 significant digits
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cosine > 0.999
    with pytest.raises(ValueError, match="compute dtype"):
        ExpertMixture(2, 3, 1, compute_dtype="float16")


def _de_loss(experts, student, users, pos, neg, seed):
    t_user, t_item = torch.arange(40.0).view(10, 4), torch.arange(48.0).view(12, 4) / 10
    return experts.batch_loss(student, t_user, t_item, users, pos, neg, tau=1.0,
                              generator=torch.Generator().manual_seed(seed)).item()


def test_entity_subset_is_an_unbiased_estimate_of_the_full_term():
    torch.manual_seed(0)
    student = BPR(10, 12, BPR.Config(embedding_dim=3, init_std=1.0))
    full = DistillationExperts((3, 4), (3, 4), n_experts=1)  # one expert: the selection is exactly 1
    sub = DistillationExperts((3, 4), (3, 4), n_experts=1, max_entities=3)
    sub.load_state_dict(full.state_dict())
    users, pos, neg = torch.arange(10), torch.arange(8), torch.arange(4, 12).view(-1, 1)
    with torch.no_grad():
        exact = _de_loss(full, student, users, pos, neg, 0)
        draws = torch.tensor([_de_loss(sub, student, users, pos, neg, seed) for seed in range(3000)])
    assert draws.std() > 0.01 * exact  # the subsets differ
    assert draws.mean().item() == pytest.approx(exact, rel=0.03)  # ~10σ of the mean away from a bias of 3 %
    # A cap above the entity counts changes nothing.
    wide = DistillationExperts((3, 4), (3, 4), n_experts=1, max_entities=50)
    wide.load_state_dict(full.state_dict())
    with torch.no_grad():
        assert _de_loss(wide, student, users, pos, neg, 7) == pytest.approx(exact, rel=1e-6)
    with pytest.raises(ValueError, match="max_entities"):
        DistillationExperts((3, 4), (3, 4), n_experts=1, max_entities=0)


@pytest.mark.parametrize("tau", [1e-2, 1e-3, 1e-8])
def test_sparse_routing_matches_the_dense_product_once_the_selection_is_hard(tau):
    """Skipping the pairs with weight ≤ 1e-20·τ changes neither the loss nor any gradient beyond fp32 rounding,
    and computes only a few pairs per entity."""
    torch.manual_seed(0)
    mix = ExpertMixture(20, 200, 30)
    student, teacher = torch.randn(400, 20), torch.randn(400, 200)
    results = []
    for sparse in (False, True):
        mix.zero_grad()
        mix.sparse_routing = sparse
        x = student.clone().requires_grad_()
        loss = mix.loss(x, teacher, tau, generator=torch.Generator().manual_seed(5))
        loss.backward()
        grads = torch.cat([p.grad.reshape(-1) for p in mix.parameters()] + [x.grad.reshape(-1)])
        results.append((loss.item(), grads, mix.last_density))
    (dense_loss, dense_grads, dense_density), (sparse_loss, sparse_grads, sparse_density) = results
    assert dense_density == 1.0 and sparse_density < 0.1  # ~1-2 of 30 experts per entity
    assert sparse_loss == pytest.approx(dense_loss, rel=1e-6)
    torch.testing.assert_close(sparse_grads, dense_grads, rtol=1e-5, atol=1e-6 * dense_grads.abs().max().item())


def test_soft_selection_stays_dense():
    torch.manual_seed(0)
    mix = ExpertMixture(4, 8, 6)
    mix(torch.randn(50, 4), torch.randn(50, 8), tau=1.0, generator=torch.Generator().manual_seed(0))
    assert mix.last_density == 1.0
