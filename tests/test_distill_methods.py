"""Every method: term names, gradients reach the student (and extras) only, the KD terms can be optimised,
and a hand-computed value on a one-user case."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from pydantic import ValidationError

from distillrec.data.dataset import Dataset
from distillrec.distill import get_method, list_methods
from distillrec.distill.base import side_scores
from distillrec.models.bpr import BPR
from distillrec.utils import DistillrecError

SMALL_LISTS = {"n_topk": 50, "n_interesting": 10, "n_uninteresting": 10}
CASES = [
    ("rd", {}, 1, {"rd"}),
    ("rd", {"dynamic_start_epoch": 0, "renormalize": True}, 1, {"rd"}),
    ("cd", {"n_topk": 50}, 1, {"cd"}),
    ("cd", {"n_topk": 50, "guide": "student", "decay": "linear"}, 1, {"cd"}),
    ("cd", {"n_topk": 50, "guide": "base"}, 1, {"cd"}),
    ("de", {"n_experts": 4}, 1, {"de"}),
    ("de", {"n_experts": 4, "expert_dtype": "bfloat16", "de_entities": 16}, 1, {"de"}),
    ("rrd", SMALL_LISTS, 1, {"rrd"}),
    ("rrd", {**SMALL_LISTS, "sampling": "top"}, 1, {"rrd"}),
    ("de-rrd", {**SMALL_LISTS, "n_experts": 4}, 1, {"de", "rrd"}),
    ("de-rrd", {**SMALL_LISTS, "n_experts": 4, "expert_dtype": "bfloat16", "de_entities": 16}, 1, {"de", "rrd"}),
    ("ir-rrd", {**SMALL_LISTS, "n_item_topk": 40, "n_item_interesting": 5, "n_item_uninteresting": 5}, 1,
     {"rrd", "ir_rrd"}),
    ("ir-rrd", {**SMALL_LISTS, "n_item_topk": 40, "n_item_interesting": 5, "n_item_uninteresting": 5,
                "item_rows": "positives"}, 1, {"rrd", "ir_rrd"}),
    ("dcd", {"n_topk": 50, "n_item_topk": 40, "n_samples": 10, "n_item_samples": 5}, 1, {"ucd", "icd"}),
    ("dcd", {"n_topk": 50, "n_samples": 10, "lambda_item": 0.0, "sampling": "top"}, 1, {"ucd"}),
    ("dcd", {"n_topk": 50, "n_item_topk": 40, "n_samples": 10, "n_item_samples": 5, "resample": "batch"}, 1,
     {"ucd", "icd"}),
    ("dcd", {**SMALL_LISTS, "n_samples": 10, "lambda_item": 0.0, "lambda_rkd": 1e-3}, 1, {"ucd", "rrd"}),
]


@pytest.fixture(scope="module")
def setting():
    rng = np.random.default_rng(0)
    # 120 users × 150 items, 12 training items per user.
    cols = np.stack([rng.choice(150, 12, replace=False) for _ in range(120)])
    train = sp.csr_matrix((np.ones(cols.size, np.float32), (np.repeat(np.arange(120), 12), cols.ravel())),
                          shape=(120, 150))
    ds = Dataset("random", 120, 150, train=train, test=sp.csr_matrix((120, 150)))
    torch.manual_seed(0)
    teacher = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=16, init_std=0.5))
    coo = ds.train.tocoo()
    g = torch.Generator().manual_seed(0)
    batch = {"users": torch.as_tensor(coo.row[:64], dtype=torch.long),
             "pos_items": torch.as_tensor(coo.col[:64], dtype=torch.long),
             "neg_items": torch.randint(0, ds.n_items, (64, 1), generator=g)}
    return ds, teacher, batch


def test_registry_and_configs():
    assert set(list_methods()) >= {"rd", "cd", "de", "rrd", "de-rrd", "ir-rrd", "dcd"}
    with pytest.raises(DistillrecError, match="unknown distillation method 'nope'"):
        get_method("nope")
    with pytest.raises(ValidationError, match="n_topK"):
        get_method("rrd").Config(n_topK=3)
    assert get_method("rrd").Config().lambda_rrd == pytest.approx(7e-4)  # 1e-3 × 0.70, see RRDConfig


@pytest.mark.parametrize(("name", "config", "epoch", "terms"), CASES)
def test_terms_gradients_and_optimisation(setting, name, config, epoch, terms):
    ds, teacher, batch = setting
    torch.manual_seed(1)
    student = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4, init_std=0.1))
    d = get_method(name).from_teacher(student, teacher, ds, config, seed=0)
    d.on_epoch_start(epoch)
    out = d.loss(batch)
    assert set(out) == {"base"} | terms
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
    sum(out.values()).backward()
    assert student.user_emb.weight.grad.abs().sum() > 0 and student.item_emb.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is never part of the graph
    assert not any(b.requires_grad for b in d.buffers())
    extras = d.extra_parameters()
    assert (len(extras) > 0) == ("de" in terms)
    assert all(p.grad is not None for p in extras)
    assert not any(k.startswith("teacher_") for k in d.state_dict())  # knowledge stays out of checkpoints

    # The KD terms alone can be driven down by the student (+ extras).
    def kd() -> float:
        vals = [sum(v for k, v in d.loss(batch).items() if k != "base").item() for _ in range(3)]
        return float(np.mean(vals))

    before = kd()
    opt = torch.optim.Adam(list(student.parameters()) + extras, lr=0.05)
    for _ in range(40):
        opt.zero_grad()
        sum(v for k, v in d.loss(batch).items() if k != "base").backward()
        opt.step()
    assert kd() < 0.9 * before


@pytest.mark.parametrize("item_rows", ["lists", "positives"])
def test_ir_rrd_item_side_rows(setting, item_rows):
    """The item side ranks users for every item of the batch users' sampled lists (the authors' code, spec §8),
    or for the batch's positive items; λ_item defaults to each rule's rescaled value."""
    ds, teacher, batch = setting
    student = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4, init_std=0.1))
    config = {**SMALL_LISTS, "n_item_topk": 40, "n_item_interesting": 5, "n_item_uninteresting": 5,
              "item_rows": item_rows}
    d = get_method("ir-rrd").from_teacher(student, teacher, ds, config, seed=0)
    assert d.config.lambda_item == {"lists": 8.3e-3, "positives": 4.7e-4}[item_rows]
    d.on_epoch_start(1)
    seen, real, real_of = {}, d.ranked_loss, d.ranked_loss_of

    def spy(rows, lists, k, side):
        seen.setdefault(side, rows)
        return real(rows, lists, k, side)

    def spy_of(rows, lists, k, side):  # the item side's lists are the epoch's, whole: rows pick from them
        assert lists is d.item_lists.combined
        seen.setdefault(side, rows)
        return real_of(rows, lists, k, side)

    d.ranked_loss, d.ranked_loss_of = spy, spy_of
    d.loss(batch)
    users = batch["users"].unique()
    expected = d.user_lists.combined[users].unique() if item_rows == "lists" else batch["pos_items"].unique()
    assert torch.equal(seen["item"], expected) and torch.equal(seen["user"], users)
    if item_rows == "lists":
        assert len(expected) > len(batch["pos_items"].unique())  # on CiteULike: ~17,000 vs ~960


@pytest.mark.parametrize("share", [0.3, 0.8])
def test_ranked_loss_of_all_rows_equals_the_gathered_rows(setting, share):
    """Above PLAN_FRACTION the rows' loss is computed on every row of the epoch's lists at once (a structure
    built once per lists tensor): same value and gradients as gathering the rows' lists."""
    ds, teacher, _ = setting
    config = {**SMALL_LISTS, "n_item_topk": 40, "n_item_interesting": 5, "n_item_uninteresting": 5}
    losses, grads = [], []
    for planned in (True, False):
        torch.manual_seed(0)
        student = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4, init_std=0.1))
        d = get_method("ir-rrd").from_teacher(student, teacher, ds, config, seed=0)
        d.on_epoch_start(1)
        g = torch.Generator().manual_seed(1)
        items = torch.randperm(ds.n_items, generator=g)[: int(share * ds.n_items)].sort().values
        lists = d.item_lists.combined
        loss = (d.ranked_loss_of(items, lists, d.item_lists.k, "item") if planned
                else d.ranked_loss(items, lists[items], d.item_lists.k, "item"))
        loss.backward()
        assert ("item" in d._plans) == (planned and share > d.PLAN_FRACTION)
        losses.append(loss.detach())
        grads.append((student.user_emb.weight.grad.clone(), student.item_emb.weight.grad.clone()))
    assert torch.allclose(losses[0], losses[1], rtol=1e-6)
    for a, b in zip(grads[0], grads[1]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)
        assert a.abs().sum() > 0


def test_list_plan_is_rebuilt_for_new_lists(setting):
    ds, teacher, _ = setting
    student = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4, init_std=0.1))
    config = {**SMALL_LISTS, "n_item_topk": 40, "n_item_interesting": 5, "n_item_uninteresting": 5}
    d = get_method("ir-rrd").from_teacher(student, teacher, ds, config, seed=0)
    everything = torch.arange(ds.n_items)
    d.on_epoch_start(1)
    d.ranked_loss_of(everything, d.item_lists.combined, d.item_lists.k, "item")
    first = d._plans["item"]
    d.ranked_loss_of(everything, d.item_lists.combined, d.item_lists.k, "item")
    assert d._plans["item"] is first  # same epoch: reused
    d.on_epoch_start(2)
    d.ranked_loss_of(everything, d.item_lists.combined, d.item_lists.k, "item")
    assert d._plans["item"] is not first and d._plans["item"].cols is d.item_lists.combined
    second = d._plans["item"]
    d.item_lists.combined[0, 0] = (d.item_lists.combined[0, 0] + 1) % ds.n_users  # edited in place
    d.ranked_loss_of(everything, d.item_lists.combined, d.item_lists.k, "item")
    assert d._plans["item"] is not second


# -- one user, four items: every term by hand ------------------------------------------------------------------
def tiny():
    """User 0 has item 0 in train. Teacher (dim 1): user 1, items (0, 1, 2, 3) → unobserved order 3, 2, 1.
    Student (dim 1): user 1, items (0, 3, 2, 1) → on items 3, 2, 1 it scores 1, 2, 3 (the reverse)."""
    train = sp.csr_matrix(np.array([[1, 0, 0, 0]], dtype=np.float32))
    ds = Dataset("tiny", 1, 4, train=train, test=sp.csr_matrix((1, 4)))
    teacher, student = BPR(1, 4, BPR.Config(embedding_dim=1)), BPR(1, 4, BPR.Config(embedding_dim=1))
    with torch.no_grad():
        teacher.user_emb.weight.fill_(1.0)
        teacher.item_emb.weight.copy_(torch.tensor([[0.0], [1.0], [2.0], [3.0]]))
        student.user_emb.weight.fill_(1.0)
        student.item_emb.weight.copy_(torch.tensor([[0.0], [3.0], [2.0], [1.0]]))
    batch = {"users": torch.tensor([0]), "pos_items": torch.tensor([1]), "neg_items": torch.tensor([[2]])}
    return ds, teacher, student, batch


def kd_value(name, config, epoch=1, setup=None):
    ds, teacher, student, batch = tiny()
    d = get_method(name).from_teacher(student, teacher, ds, {"lambda_base": 0.0, **config})
    d.on_epoch_start(epoch)
    if setup:
        setup(d)
    out = d.loss(batch)
    assert "base" not in out
    return {k: v.item() for k, v in out.items()}, d


def test_rrd_by_hand():
    # Interesting = teacher top-2 in order (3, 2), student scores (1, 2); the only uninteresting item is 1 (3).
    #   [log(e¹ + e² + e³) − 1] + [log(e² + e³) − 2] = 2.4076060 + 1.3132617 = 3.7208677
    terms, _ = kd_value("rrd", {"lambda_rrd": 1.0, "n_topk": 2, "n_interesting": 2, "n_uninteresting": 1,
                                "sampling": "top"})
    assert terms["rrd"] == pytest.approx(3.7208677, abs=1e-5)


def test_dcd_by_hand_and_refresh_schedule():
    # List (3, 2, 1): student ranks (2, 1, 0) vs teacher (0, 1, 2) → ε = 1 gaps (2, 0, −2): item 3 is the only
    # under-ranked one (w⁺ = tanh 2, others 1e-5), item 1 the only over-ranked one. With P = 1:
    #   log(e¹ + e³) − 1 = 2.1269280
    terms, d = kd_value("dcd", {"lambda_user": 1.0, "lambda_item": 0.0, "n_topk": 3, "n_samples": 1,
                                "epsilon": 1.0})
    assert terms["ucd"] == pytest.approx(2.1269280, abs=1e-5)
    calls = []
    d.refresh = lambda: calls.append(d._epoch)
    for epoch in range(2, 9):
        d.on_epoch_start(epoch)
    assert calls == [4, 7]  # every 3 epochs from the first (1, 4, 7 = the code's 0, 3, 6)


def test_dcd_floored_lists_never_share_an_entry(setting):
    """Where few weights are positive the floor fills the draws; the bag must still avoid the ordered list (the
    code's w⁺ and w⁻ supports are disjoint)."""
    ds, teacher, _ = setting
    student = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4, init_std=0.1))
    d = get_method("dcd").from_teacher(student, teacher, ds, {"n_topk": 20, "n_samples": 8, "n_item_topk": 20,
                                                              "n_item_samples": 8}, seed=0)
    d.on_epoch_start(1)
    for side, field, p, *_ in d.sides:
        ranks = getattr(d, f"teacher_{field}")
        # the student agrees with the teacher on every list: every gap is 0, every weight at the floor
        d.weights[side] = tuple(torch.full(ranks.shape, 1e-5) for _ in range(2))
        draws = d.draw(side, field, torch.arange(ranks.shape[0]), p)
        ordered, bag = draws[:, :p], draws[:, p:]
        assert not (ordered.unsqueeze(2) == bag.unsqueeze(1)).any()


def test_de_by_hand():
    # One expert (selection is then exactly 1), d_s = d_t = 1 → hidden 1; set ĥ = 2·relu(h_s).
    #   user 0: (1 − 2·1)² = 1; pos item 1: (1 − 2·3)² = 25; neg item 2: (2 − 2·2)² = 4 → 1 + ½(25 + 4) = 15.5
    def set_expert(d):
        for mix in (d.experts.users, d.experts.items):
            with torch.no_grad():
                mix.w1.fill_(1.0)
                mix.b1.zero_()
                mix.w2.fill_(2.0)
                mix.b2.zero_()

    terms, d = kd_value("de", {"lambda_de": 1.0, "n_experts": 1}, setup=set_expert)
    assert terms["de"] == pytest.approx(15.5, abs=1e-5)
    assert d.stats()["tau"] == 1.0
    d.on_epoch_start(2)
    assert d.tau == 1.0  # the authors update τ after each epoch from its 0-based index: epochs 1 and 2 at τ0
    d.on_epoch_start(502)
    assert d.tau == pytest.approx(1e-5)  # τ0·(τ_end/τ0)^{500/1000}


def test_rd_by_hand():
    # Teacher top-2 (3, 2), student scores (1, 2); w^a ∝ (1, e⁻¹) = (0.7310586, 0.2689414):
    #   0.7310586·log(1 + e⁻¹) + 0.2689414·log(1 + e⁻²) = 0.2290169 + 0.0341366 = 0.2631535
    terms, _ = kd_value("rd", {"n_topk": 2})
    assert terms["rd"] == pytest.approx(0.2631535, abs=1e-5)

    # Dynamic weights with the probes fixed to all four items (scores 0, 3, 2, 1): item 3 (score 1) has 2
    # probes above → r̂ = ⌊3·2/4⌋ = 1 → w^b = tanh(0.1·(1 − 0)); item 2 (score 2) has 1 above → r̂ = 0 → w^b = 0.
    def fix_probes(d):
        d.probes = torch.tensor([[0, 1, 2, 3]])

    terms, _ = kd_value("rd", {"n_topk": 2, "n_probes": 4, "dynamic_start_epoch": 0}, setup=fix_probes)
    assert terms["rd"] == pytest.approx(0.7310586 * math.tanh(0.1) * math.log(1 + math.exp(-1)), abs=1e-6)


def test_cd_by_hand():
    # Both list items sampled (n_samples = N = 2): labels σ(3), σ(2) from the teacher; student logits 1, 2.
    def bce(x, q):
        return -(q * math.log(1 / (1 + math.exp(-x))) + (1 - q) * math.log(1 - 1 / (1 + math.exp(-x))))

    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    terms, d = kd_value("cd", {"n_topk": 2, "n_samples": 2})
    assert terms["cd"] == pytest.approx((bce(1, sig(3)) + bce(2, sig(2))) / 2, abs=1e-5)
    assert sorted(d.samples[0].tolist()) == [2, 3]


def test_side_scores_item_side():
    _, _, student, _ = tiny()
    items, users = torch.tensor([1, 3]), torch.tensor([[0, 0, 0], [0, 0, 0]])
    assert side_scores(student, items, users, "item").tolist() == [[3.0] * 3, [1.0] * 3]


def test_wrong_batch_and_config_errors_are_clear():
    ds, teacher, student, _ = tiny()
    d = get_method("rrd").from_teacher(student, teacher, ds, {"n_topk": 2, "n_interesting": 2, "n_uninteresting": 1})
    with pytest.raises(DistillrecError, match="needs a training batch with 'users'"):
        d.kd_terms({"rows": torch.zeros(1, 4)})
    with pytest.raises(ValidationError, match=r"n_interesting \(6\) must not exceed n_topk \(5\)"):
        get_method("rrd").Config(n_topk=5, n_interesting=6)
    with pytest.raises(ValidationError, match=r"n_item_interesting \(9\)"):
        get_method("ir-rrd").Config(n_item_topk=8, n_item_interesting=9)
    with pytest.raises(ValidationError, match=r"n_samples \(30\) × 2 must not exceed n_topk \(50\)"):
        get_method("dcd").Config(n_topk=50, n_samples=30, sampling="top")


def test_a_catalogue_too_small_for_the_lists_is_cut_with_warnings():
    # 4 items, 1 seen: 3 unobserved (teacher order 3, 2, 1). Asked N = 5, K = 4, L = 3: the list is cut to 3,
    # K to 2 (one column must stay for the bag), and the one column left is drawn with replacement.
    ds, teacher, student, _ = tiny()
    with pytest.warns(UserWarning) as record:
        d = get_method("rrd").from_teacher(student, teacher, ds, {"n_topk": 5, "n_interesting": 4,
                                                                  "n_uninteresting": 3})
    text = " ".join(str(w.message) for w in record)
    assert "cut from 5 to 3" in text and "cut to 2" in text and "with replacement" in text
    d.on_epoch_start(1)
    assert d.user_lists.k == 2
    assert d.user_lists.combined.tolist() == [[3, 2, 1, 1, 1]]
    assert torch.isfinite(d.loss({"users": torch.tensor([0]), "pos_items": torch.tensor([0]),
                                  "neg_items": torch.tensor([[1]])})["rrd"])


# -- every method with NeuMF and LightGCN on either side ------------------------------------------------------
PAIRS = [("neumf", "neumf"), ("lightgcn", "lightgcn"), ("bpr", "neumf"), ("lightgcn", "bpr")]  # teacher, student
HP = {"bpr": {"embedding_dim": 8}, "neumf": {"embedding_dim": 4, "mlp_layers": [8, 4]},
      "lightgcn": {"embedding_dim": 8, "n_layers": 2}}
FIRST_CASES = {name: config for name, config, _, _ in reversed(CASES)}  # the first config of each method


@pytest.mark.parametrize("name", sorted(FIRST_CASES))
@pytest.mark.parametrize(("teacher_name", "student_name"), PAIRS)
def test_every_method_with_neumf_and_lightgcn(setting, name, teacher_name, student_name):
    """Knowledge from a NeuMF / LightGCN teacher (non-dot scoring, graph propagation) and a loss whose
    gradients reach every embedding table of a NeuMF / LightGCN student."""
    from distillrec.models import get_model_class

    ds, _, batch = setting
    torch.manual_seed(2)
    teacher = get_model_class(teacher_name).from_dataset(ds, **HP[teacher_name])
    student = get_model_class(student_name).from_dataset(ds, **HP[student_name])
    teacher.eval()
    d = get_method(name).from_teacher(student, teacher, ds, FIRST_CASES[name], seed=0)
    d.on_epoch_start(1)
    with student.training_step():
        out = d.loss(batch)
        assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
        sum(v for k, v in out.items() if k != "base").backward()  # the distillation terms alone
    tables = [m.weight for m in student.modules() if isinstance(m, torch.nn.Embedding)]
    assert tables and all(t.grad is not None and t.grad.abs().sum() > 0 for t in tables)
    assert all(p.grad is None for p in teacher.parameters())
