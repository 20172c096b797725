"""HetComp: discrepancy, the DKC switching rule, both AKT loss phases (against brute force), the phase change."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from distillrec.config import resolve_config
from distillrec.data.dataset import Dataset
from distillrec.distill import get_method
from distillrec.distill.ensemble import TeacherEnsemble
from distillrec.distill.hetcomp import (
    HetComp,
    HetCompConfig,
    akt_overall_loss,
    akt_rank_loss,
    discrepancy,
    dkc_step,
    dkc_threshold,
    sampled_tail_logsumexp,
    switch_mask,
)
from distillrec.distill.trajectory import Trajectory, train_hash
from distillrec.models.bpr import BPR
from distillrec.utils import DistillrecError


# -- discrepancy and the switching rule ---------------------------------------------------------------------------
def gain(j: int) -> float:
    return (2 ** math.exp(-j / 10) - 1) / math.log2(j + 2)


def test_discrepancy_is_the_position_weighted_overlap():
    student = torch.tensor([[10, 11, 12, 13], [1, 2, 3, 4]])
    teacher = torch.tensor([[13, 99, 11, 98], [4, 3, 2, 1]])
    total = sum(gain(j) for j in range(4))
    want = 1 - (gain(1) + gain(3)) / total  # the student's positions 1 and 3 are in the teacher's list
    got = discrepancy(student, teacher, decimals=None)
    assert got[0].item() == pytest.approx(want, rel=1e-6)
    assert got[1].item() == pytest.approx(0.0, abs=1e-7)  # same set, any order
    assert discrepancy(student, teacher)[0].item() == pytest.approx(round(want, 4), abs=1e-7)


def test_threshold_decays_below_one_at_the_tenth_check():
    assert dkc_threshold(10, 10) == pytest.approx(1.05 * 0.995)
    assert dkc_threshold(90, 10) > 1 > dkc_threshold(100, 10)
    assert dkc_threshold(100, 10) == pytest.approx(1.05 * 0.995**10)


def test_switch_rule_against_hand_values():
    ref = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.0])
    now = torch.tensor([0.4, 0.49, 0.6, 0.0, 0.0])  # ratios 1.25, 1.02, 0.83, inf, 0/0 (= inf)
    assert switch_mask(ref, now, 1.05).tolist() == [True, False, True, True, True]
    assert switch_mask(ref, now, 1.05, below_one=False).tolist() == [True, False, False, True, True]
    # once θ < 1 the rule switches unconditionally
    g = torch.Generator().manual_seed(0)
    r, n = torch.rand(1000, generator=g), torch.rand(1000, generator=g)
    assert switch_mask(r, n, dkc_threshold(100, 10)).all()


def test_dkc_step_moves_switched_pairs_and_measures_the_new_next_checkpoint():
    sel = torch.tensor([[0, 1], [2, 0]])
    ref = torch.tensor([[0.5, 0.5], [0.3, 0.5]])
    disc = torch.tensor([[[0.9, 0.4, 0.7], [0.9, 0.8, 0.49]],     # (0,0): next=1 → 0.4, ratio 1.25 → switch
                         [[0.9, 0.9, 0.1], [0.9, 0.49, 0.6]]])    # (1,0) final, (1,1): ratio 1.02 → stay
    new_sel, new_ref, switched = dkc_step(sel, ref, disc, threshold=1.05)
    assert switched.tolist() == [[True, False], [False, False]]
    assert new_sel.tolist() == [[1, 1], [2, 0]]
    assert new_ref.flatten().tolist() == pytest.approx([0.7, 0.5, 0.3, 0.5])  # δ̄ = δ to the new next (ckpt 2)


# -- the losses ---------------------------------------------------------------------------------------------------
def lse(values) -> float:
    return math.log(sum(math.exp(v) for v in values))


def pl(s, ordered, bag) -> float:
    return sum(lse([s[i] for i in ordered[k:]] + [s[j] for j in bag]) - s[ordered[k]] for k in range(len(ordered)))


def loss_inputs():
    s = torch.tensor([[0.3, -1.2, 2.0, 0.7, -0.4, 1.1, 0.0, 0.5],
                      [1.5, 0.2, -0.3, 0.9, 0.4, -1.0, 2.2, 0.1]])
    train = [{0, 2}, {3}]
    observed = torch.tensor([[2, 0], [3, 0]])  # user 1's second entry is padding
    observed_len = torch.tensor([2, 1])
    top = torch.tensor([[5, 3, 7], [6, 0, 4]])
    mask = torch.zeros(2, 8, dtype=torch.bool)
    for u, items in enumerate(train):
        mask[u, list(items)] = True
    return s, train, observed, observed_len, top, mask


def test_phase1_overall_loss_against_brute_force():
    s, train, observed, observed_len, top, mask = loss_inputs()
    want = []
    for u in range(2):
        su = s[u].tolist()
        rest = [j for j in range(8) if j not in train[u] and j not in top[u].tolist()]
        chosen = observed[u, :observed_len[u]].tolist() + top[u].tolist()
        want.append(sum(math.log(math.exp(su[i]) + sum(math.exp(su[j]) for j in rest)) - su[i] for i in chosen))
    got = akt_overall_loss(s, observed, observed_len, top, mask, reduction="sum")
    assert got.item() == pytest.approx(sum(want), rel=1e-5)
    assert akt_overall_loss(s, observed, observed_len, top, mask).item() == pytest.approx(sum(want) / 2, rel=1e-5)


def test_phase2_rank_loss_against_brute_force():
    s, train, observed, observed_len, top, mask = loss_inputs()
    want = 0.0
    for u in range(2):
        su, t = s[u].tolist(), top[u].tolist()
        unobserved = [j for j in range(8) if j not in train[u]]
        tail2 = [j for j in unobserved if j not in t[:2]]
        tail1 = [j for j in unobserved if j not in t[:1]]
        want += pl(su, observed[u, :observed_len[u]].tolist(), tail2)
        want += 0.5 * (pl(su, t[:2], tail2) + pl(su, t[:1], tail1))
    got = akt_rank_loss(s, observed, observed_len, top, mask, n_ranked=2, n_emphasis=1, reduction="sum")
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_losses_push_the_distilled_items_up():
    s, _, observed, observed_len, top, mask = loss_inputs()
    s = s.clone().requires_grad_(True)
    akt_overall_loss(s, observed, observed_len, top, mask).backward()
    grad = s.grad
    assert (grad.gather(1, top) < 0).all()  # descending the loss raises every top item
    assert grad[0, 2] < 0 and grad[0, 1] > 0  # observed item 2 up, tail item 1 down


# -- the method ---------------------------------------------------------------------------------------------------
def toy_ensemble(v: int = 3) -> tuple[Dataset, TeacherEnsemble]:
    """6 users × 12 items, 2 teachers with V checkpoints of random top-6 unobserved lists."""
    rng = np.random.default_rng(0)
    n_users, n_items, k = 6, 12, 6
    train = np.zeros((n_users, n_items), np.float32)
    for u in range(n_users):
        train[u, rng.choice(n_items, 3, replace=False)] = 1
    ds = Dataset("toy", n_users, n_items, train=sp.csr_matrix(train), test=sp.csr_matrix((n_users, n_items)))
    trajs = []
    for _ in range(2):
        lists = np.stack([np.stack([rng.permutation(np.flatnonzero(train[u] == 0))[:k] for u in range(n_users)])
                          for _ in range(v)])
        trajs.append(Trajectory(
            topk=torch.as_tensor(lists, dtype=torch.int32), rank_std=torch.zeros(v, n_users, k).half(),
            observed_rank=torch.as_tensor(rng.integers(0, 3, (v, ds.train.nnz)), dtype=torch.int32),
            observed_std=torch.zeros(v, ds.train.nnz).half(), epochs=list(range(1, v + 1)), queue_len=1,
            queue_topk=k, dataset_fingerprint=ds.fingerprint(), train_hash=train_hash(ds.train)))
    return ds, TeacherEnsemble(trajs, ["A", "B"], ds)


def small_config(**kw) -> dict:
    return {"n_topk": 4, "n_ranked": 3, "n_emphasis": 2, "n_observed": 2, "discrepancy_k": 4, **kw}


def batch(ds: Dataset) -> dict:
    users = torch.arange(ds.n_users)
    return {"users": users, "pos_items": torch.zeros_like(users), "neg_items": torch.ones(ds.n_users, 1).long()}


def test_phase_changes_after_dkc_brings_every_pair_to_the_final_checkpoint():
    ds, ens = toy_ensemble(v=3)
    student = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4, init_std=0.1))
    # α = 0: every check switches; checks after 1, 2, 3 epochs: init, → ckpt 1, → ckpt 2 (final)
    hc = HetComp(student, ens, ds, small_config(dkc_every=1, alpha=0.0))
    assert hc.top.tolist() == ens.topk(4, torch.zeros(6, 2, dtype=torch.long)).tolist()
    phases, terms = [], []
    for epoch in range(1, 6):
        hc.on_epoch_start(epoch)
        phases.append(hc.phase)
        terms.append(set(hc.loss(batch(ds))))
    assert phases == [1, 1, 1, 2, 2]
    assert terms[0] == {"overall"} and terms[-1] == {"rank"}  # λ_CF = 0: no base term
    assert hc.selection.eq(2).all() and hc.stats()["final_frac"] == 1.0
    assert hc.top.tolist() == ens.topk(4).tolist()  # T_u is the converged ensemble now


def test_no_switch_when_the_student_does_not_move_and_the_threshold_is_above_one():
    ds, ens = toy_ensemble(v=3)
    torch.manual_seed(0)  # an unseeded student matched some teacher's top-4 exactly ~1 run in 10: δ = 0 switches
    student = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4))
    hc = HetComp(student, ens, ds, small_config(dkc_every=1, alpha=1.05, switch_below_one=False))
    assert (hc.discrepancies() > 0).all()  # the premise: no pair is matched already
    for epoch in range(1, 5):  # the student is never trained: δ̄/δ = 1 < θ
        hc.on_epoch_start(epoch)
    assert hc.selection.eq(0).all() and hc.phase == 1
    hc.load_state_dict({**hc.state_dict(), "selection": torch.full((6, 2), 2)})
    assert hc.top.tolist() == ens.topk(4).tolist()  # restored state rebuilds T_u


@pytest.mark.parametrize("phase", [1, 2])
def test_the_sampled_tail_is_exact_with_every_item_and_unbiased_with_fewer(phase):
    """tail_samples ≥ n_items draws every item once: the exact loss and gradients. With 4 draws of 12, the
    average of e^(estimated tail) over many steps is the exact tail sum."""
    ds, ens = toy_ensemble(v=3)
    out = []
    for tail_samples in (None, 12):
        torch.manual_seed(0)
        student = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4, init_std=0.5))
        hc = HetComp(student, ens, ds, small_config(tail_samples=tail_samples))
        hc.dkc_state[0] = phase
        hc.on_epoch_start(1)
        terms = hc.loss(batch(ds))
        sum(terms.values()).backward()
        out.append((set(terms), sum(terms.values()).item(), student.user_emb.weight.grad, student.item_emb.weight.grad))
    (names, exact, *grads), (names_s, sampled, *grads_s) = out
    assert names == names_s == ({"overall"} if phase == 1 else {"rank"})
    assert sampled == pytest.approx(exact, rel=1e-5)
    for a, b in zip(grads, grads_s):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_sampled_tail_estimate_by_hand_and_unbiased_sum():
    # log(n_items / M) + log Σ_kept e^s: 10 items, 3 draws scoring 0, log 3 (kept) and 5 (not) → log(10/3 · 4)
    got = sampled_tail_logsumexp(torch.tensor([[0.0, math.log(3), 5.0]]), torch.tensor([[True, True, False]]), 10)
    assert got.item() == pytest.approx(math.log(40 / 3), rel=1e-6)
    assert sampled_tail_logsumexp(torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool), 10).item() == -math.inf
    # the sum (not its log) is unbiased: 4 draws with replacement of 12 items, of which 8 are in the tail
    g = torch.Generator().manual_seed(0)
    s = torch.linspace(-1, 2, 12)
    keep_item = torch.arange(12) % 3 != 0
    draws = torch.randint(0, 12, (40_000, 4), generator=g)
    est = sampled_tail_logsumexp(s[draws], keep_item[draws], 12).exp().mean()
    assert est.item() == pytest.approx(s[keep_item].exp().sum().item(), rel=0.02)


def test_config_and_construction_errors():
    assert HetCompConfig(lambda_cf=1.0).lambda_base == 1.0  # the paper-style CF term
    assert HetCompConfig().lambda_base == 0.0
    with pytest.raises(ValueError, match="n_emphasis"):
        HetCompConfig(n_ranked=200)
    cfg = resolve_config(base={"model": {"name": "bpr"}, "distill": {"method": "hetcomp"}},
                         overrides=["distill.alpha=1.1", "distill.phase2_rule=rounded_mean"])
    assert cfg.distill["alpha"] == 1.1
    with pytest.raises(DistillrecError, match="unknown key"):
        resolve_config(base={"model": {"name": "bpr"}, "distill": {"method": "hetcomp", "lamda_rank": 1}})
    ds, ens = toy_ensemble()
    student = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4))
    with pytest.raises(DistillrecError, match="exceeds the teachers' trajectory lists"):
        HetComp(student, ens, ds, {"n_topk": 100})
    with pytest.raises(DistillrecError, match="tau1"):
        HetComp(student, ens, ds, small_config(tau1=50.0))
    with pytest.raises(DistillrecError, match="teacher set"):
        get_method("hetcomp").from_teacher(student, student, ds)


def test_masked_logsumexp_matches_autograd_on_values_and_gradients():
    from distillrec.distill.hetcomp import masked_logsumexp

    gen = torch.Generator().manual_seed(0)
    scores = (torch.randn(5, 9, generator=gen) * 4).requires_grad_()
    excluded = torch.rand(5, 9, generator=gen) < 0.4
    excluded[2] = True  # every item excluded: −inf and no gradient
    weights = torch.randn(5, generator=gen)
    out = masked_logsumexp(scores, excluded)
    (out[[0, 1, 3, 4]] * weights[[0, 1, 3, 4]]).sum().backward()
    ref_scores = scores.detach().clone().requires_grad_()
    ref = torch.logsumexp(ref_scores.masked_fill(excluded, float("-inf")), dim=1)
    (ref[[0, 1, 3, 4]] * weights[[0, 1, 3, 4]]).sum().backward()
    assert torch.allclose(out, ref) and out[2] == float("-inf")
    assert torch.allclose(scores.grad, ref_scores.grad, atol=1e-7)
    assert not scores.grad[2].any() and not scores.grad[excluded].any()
