"""CCD stage 1 (spec §B.5): the item-side RRD is a pass of its own optimiser steps over *all* items each epoch,
the only signal that reaches old users who are inactive in the block; the interaction batches carry BPR and
the user-side RRD only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import distillrec.distill.knowledge as knowledge_module
from distillrec.continual import load_stream, resolve_stream_config
from distillrec.continual.kd import CCDDistiller
from distillrec.continual.stages import Context, build_model, distil_student
from distillrec.data.dataset import Dataset
from distillrec.distill.knowledge import KnowledgeSpec, compute_knowledge
from distillrec.models.bpr import BPR
from distillrec.models.lightgcn import LightGCN
from distillrec.utils import DistillrecError

N_USERS, N_ITEMS, IDLE = 12, 10, 9  # users IDLE.. have no training interaction in the block


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def block_dataset() -> Dataset:
    rng = np.random.default_rng(0)
    dense = (rng.random((N_USERS, N_ITEMS)) < 0.3).astype(np.float32)
    dense[IDLE:] = 0.0  # old users inactive in this block
    dense[:IDLE, 0] = 1.0  # every active user has a positive
    return Dataset("block", N_USERS, N_ITEMS, train=sp.csr_matrix(dense), test=sp.csr_matrix((N_USERS, N_ITEMS)))


def make(pass_batch_size: int, lambda_item: float = 0.5, user_pass: bool = False,
         **extra) -> tuple[CCDDistiller, BPR, torch.optim.Adam]:
    ds = block_dataset()
    torch.manual_seed(0)
    teacher = BPR(N_USERS, N_ITEMS, BPR.Config(embedding_dim=4, init_std=1.0))
    config = {"n_topk": 4, "n_interesting": 2, "n_uninteresting": 2, "n_item_topk": 4, "n_item_interesting": 2,
              "n_item_uninteresting": 3, "lambda_user": 0.1, "lambda_item": lambda_item, "sampling": "top"}
    knowledge = compute_knowledge(teacher, ds, KnowledgeSpec(n_user_topk=4, n_item_topk=4))
    student = BPR(N_USERS, N_ITEMS, BPR.Config(embedding_dim=3, init_std=0.5))
    distiller = CCDDistiller(student, knowledge, ds, config, seed=1, pass_batch_size=pass_batch_size,
                             user_pass=user_pass, **extra)
    optimizer = torch.optim.Adam(student.parameters(), lr=0.05)
    distiller.attach_optimizer(optimizer)
    return distiller, student, optimizer


def relaxed_pl(scores: list[float], k: int) -> float:
    """−Σ_{j<k} [s_j − log(Σ_{l≥j} e^{s_l})] with the bag (entries k..) in every denominator: by hand."""
    return -sum(scores[j] - np.log(np.exp(scores[j:]).sum()) for j in range(k))


def test_item_pass_value_is_the_weighted_mean_item_side_loss() -> None:
    distiller, student, _ = make(pass_batch_size=N_ITEMS)  # one batch: the value is taken before the step
    super(CCDDistiller, distiller).on_epoch_start(1)  # draw the lists without running the pass
    lists = distiller.item_lists.combined.clone()
    k = distiller.item_lists.k
    with torch.no_grad():
        u, v = student.user_emb.weight.double().numpy(), student.item_emb.weight.double().numpy()
    expected = 0.5 * np.mean([relaxed_pl([float(u[c] @ v[i]) for c in lists[i].tolist()], k) for i in range(N_ITEMS)])
    assert distiller.item_pass() == pytest.approx(expected, rel=1e-4)


def test_item_pass_steps_over_every_item_and_reaches_idle_users() -> None:
    distiller, student, optimizer = make(pass_batch_size=4)
    before = student.user_emb.weight.detach().clone()
    distiller.on_epoch_start(1)  # the item pass: ceil(10 / 4) = 3 optimiser steps
    assert int(optimizer.state[student.item_emb.weight]["step"]) == 3
    listed = distiller.item_lists.combined.unique()
    idle_listed = listed[listed >= IDLE]
    assert idle_listed.numel() > 0  # inactive users do sit in the items' lists ...
    moved = (student.user_emb.weight.detach() - before).abs().sum(1) > 0
    assert bool(moved[idle_listed].all())  # ... and the pass trains them
    assert distiller.stats()["ir_rrd_pass"] > 0
    # the interaction batches carry the user side only
    terms = distiller.loss({"users": torch.tensor([0, 1]), "pos_items": torch.tensor([0, 0]),
                            "neg_items": torch.tensor([3, 4])})
    assert set(terms) == {"base", "rrd"}


def test_user_pass_gives_idle_users_their_own_ranking_steps() -> None:
    distiller, student, optimizer = make(pass_batch_size=5, lambda_item=0.0, user_pass=True)
    before = student.user_emb.weight.detach().clone()
    distiller.on_epoch_start(1)  # no item pass (λ_i = 0); the user pass: ceil(12 / 5) = 3 steps
    assert int(optimizer.state[student.user_emb.weight]["step"]) == 3
    moved = (student.user_emb.weight.detach() - before).abs().sum(1) > 0
    assert bool(moved[IDLE:].all())  # users without an interaction in the block are trained
    assert distiller.stats()["rrd_pass"] > 0
    plain, _, _ = make(pass_batch_size=5, lambda_item=0.0)
    plain.on_epoch_start(1)
    assert "rrd_pass" not in plain.stats()


def test_item_pass_needs_the_optimizer() -> None:
    distiller, _, _ = make(pass_batch_size=4)
    distiller.optimizer = None
    with pytest.raises(DistillrecError, match="attach"):
        distiller.on_epoch_start(1)


@pytest.mark.parametrize("mode", ["separate", "batch"])
def test_stage_one_uses_the_configured_item_pass(mode: str, tmp_path) -> None:
    stream = load_stream("synthetic", n_users=60, n_items=40, n_blocks=1)
    cfg = resolve_stream_config(overrides=[
        "student.embedding_dim=4", "kd_train.epochs=2", "kd_train.eval_every=1", "kd.n_topk=8",
        "kd.n_interesting=8", "kd.n_uninteresting=10", "kd.n_item_topk=8", "kd.n_item_interesting=8",
        "kd.n_item_uninteresting=10", f"kd_item_pass={mode}", "device=cpu"])
    ctx = Context(cfg, stream, 0, tmp_path, lambda m: None, progress=False)
    nu, ni = stream.sizes(1)
    teacher = build_model({"name": "bpr", "embedding_dim": 8}, nu, ni, ctx.graph(1), 0, ctx.device)
    distil_student(ctx, [teacher], stream.view(1), 1)
    log = [json.loads(x) for x in (tmp_path / "blocks/D1/kd/log.jsonl").read_text().splitlines()]
    if mode == "separate":
        assert set(log[0]["loss"]) == {"base", "rrd"} and log[0]["distill"]["ir_rrd_pass"] > 0
    else:
        assert set(log[0]["loss"]) == {"base", "rrd", "ir_rrd"} and "distill" not in log[0]


def test_hard_negatives_and_bags_avoid_the_excluded_items() -> None:
    """Spec §B.5: BPR negatives avoid the teacher's top-40 and S/P/M's (``negatives``); the user-side bags avoid
    the same items (``bag_exclude``)."""
    hard = sp.lil_matrix((N_USERS, N_ITEMS), dtype=np.float32)
    hard[:, 1:5] = 1.0  # items 1..4 are every user's hard items
    distiller, student, _ = make(pass_batch_size=4, negatives=hard.tocsr(), bag_exclude=hard.tocsr())
    seen: list[torch.Tensor] = []
    plain_loss = student.loss
    student.loss = lambda batch: (seen.append(batch["neg_items"]), plain_loss(batch))[1]
    users = torch.arange(IDLE).repeat(20)
    distiller.loss({"users": users, "pos_items": torch.zeros_like(users), "neg_items": torch.full((len(users),), 2)})
    train = block_dataset().train.toarray() > 0
    neg = seen[-1]
    assert neg.shape == users.shape and not bool(((neg >= 1) & (neg <= 4)).any())
    assert not train[users.numpy(), neg.numpy()].any()
    # users with room for 2 interesting + 2 uninteresting items outside train ∪ hard: bags avoid the hard items
    roomy = torch.from_numpy(10 - (train | (hard.toarray() > 0)).sum(1) >= 4)
    assert bool(roomy.any())
    in_hard = lambda bags: (bags >= 1) & (bags <= 4)  # noqa: E731
    assert not bool(in_hard(distiller.user_lists.uninteresting)[roomy].any())
    plain, _, _ = make(pass_batch_size=4)
    plain.on_epoch_start(1)
    assert bool(in_hard(plain.user_lists.uninteresting)[roomy].any())


def test_stage_one_excludes_the_teacher_top_n_from_negatives(tmp_path, monkeypatch) -> None:
    stream = load_stream("synthetic", n_users=60, n_items=40, n_blocks=1)
    made: list[CCDDistiller] = []
    init = CCDDistiller.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(CCDDistiller, "__init__", spy)
    for top in (5, 0):
        cfg = resolve_stream_config(overrides=[
            "student.embedding_dim=4", "kd_train.epochs=1", "kd.n_topk=8", "kd.n_interesting=8",
            "kd.n_uninteresting=10", "kd.n_item_topk=8", "kd.n_item_interesting=8", "kd.n_item_uninteresting=10",
            f"hard_negatives_top={top}", "device=cpu"])
        ctx = Context(cfg, stream, 0, tmp_path / str(top), lambda m: None, progress=False)
        nu, ni = stream.sizes(1)
        teacher = build_model({"name": "bpr", "embedding_dim": 8}, nu, ni, ctx.graph(1), 0, ctx.device)
        distil_student(ctx, [teacher], stream.view(1), 1)
    with_top, without = made
    assert without.negatives is None
    top5 = with_top.teacher_user_topk[:, :5]
    users = torch.arange(nu).repeat_interleave(5)
    assert bool(with_top.negatives.full.contains(users, top5.reshape(-1, 1)).all())


@pytest.mark.parametrize("ego", [True, False])
def test_lightgcn_student_ranks_lists_on_layer_zero(ego: bool) -> None:
    """Spec §B.5: both RRD sides score a LightGCN student's layer-0 embeddings, BPR the propagated ones."""
    ds = block_dataset()
    torch.manual_seed(0)
    teacher = BPR(N_USERS, N_ITEMS, BPR.Config(embedding_dim=4, init_std=1.0))
    knowledge = compute_knowledge(teacher, ds, KnowledgeSpec(n_user_topk=4, n_item_topk=4))
    student = LightGCN.from_dataset(ds, embedding_dim=3, n_layers=1, init_std=0.5)
    config = {"n_topk": 4, "n_interesting": 2, "n_uninteresting": 2, "n_item_topk": 4, "n_item_interesting": 2,
              "n_item_uninteresting": 3, "lambda_user": 0.1, "lambda_item": 0.5, "sampling": "top"}
    distiller = CCDDistiller(student, knowledge, ds, config, seed=1, ego_lists=ego)
    super(CCDDistiller, distiller).on_epoch_start(1)
    with torch.no_grad():
        ego_u, ego_i = student.user_emb.weight, student.item_emb.weight
        prop_u, prop_i = student.propagate()
    u, v = (ego_u, ego_i) if ego else (prop_u, prop_i)
    lists, k = distiller.user_lists.combined, distiller.user_lists.k
    rows = torch.arange(N_USERS)
    expected = np.mean([relaxed_pl([float(u[r] @ v[c]) for c in lists[r].tolist()], k) for r in range(N_USERS)])
    with student.training_step():
        got = distiller.ranked_loss(rows, lists, k, "user")
    assert float(got) == pytest.approx(expected, rel=1e-4)
    items, item_lists = torch.arange(N_ITEMS), distiller.item_lists.combined
    expected_items = np.mean([relaxed_pl([float(u[c] @ v[i]) for c in item_lists[i].tolist()], distiller.item_lists.k)
                              for i in range(N_ITEMS)])
    with student.training_step():
        assert float(distiller.ranked_loss(items, item_lists, distiller.item_lists.k, "item")) == pytest.approx(
            expected_items, rel=1e-4)
    assert not torch.allclose(ego_u @ ego_i.T, prop_u @ prop_i.T)  # the two readouts do differ here


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_stage_one_starts_from_the_given_student_and_leaves_it_alone(tmp_path) -> None:
    """``kd_init: student``: stage 1 starts from M_k's weights (what M_k knows of idle users survives), not
    from a random student; M_k itself is untouched."""
    stream = load_stream("synthetic", n_users=60, n_items=40, n_blocks=1)
    cfg = resolve_stream_config(overrides=[
        "student.embedding_dim=4", "kd_train.epochs=1", "kd_train.eval_every=1", "kd_train.learning_rate=1e-9",
        "kd.n_topk=8", "kd.n_interesting=8", "kd.n_uninteresting=10", "kd.n_item_topk=8",
        "kd.n_item_interesting=8", "kd.n_item_uninteresting=10", "device=cpu"])
    ctx = Context(cfg, stream, 0, tmp_path, lambda m: None, progress=False)
    nu, ni = stream.sizes(1)
    teacher = build_model({"name": "bpr", "embedding_dim": 8}, nu, ni, ctx.graph(1), 0, ctx.device)
    start = build_model({"name": "bpr", "embedding_dim": 4, "init_std": 0.5}, nu, ni, ctx.graph(1), 7, ctx.device)
    before = _flat(start).clone()
    warm, _ = distil_student(ctx, [teacher], stream.view(1), 1, start=start)
    fresh, _ = distil_student(ctx, [teacher], stream.view(1), 1)
    assert torch.equal(_flat(start), before)
    assert torch.allclose(_flat(warm), before, atol=1e-6)  # one epoch at lr 1e-9: still M_k's weights
    assert not torch.allclose(_flat(fresh), before, atol=1e-2)


def _small_stream_context(tmp_path, overrides: list[str]) -> Context:
    """A two-block synthetic stream with one BPR teacher and one epoch per stage."""
    stream = load_stream("synthetic", n_users=60, n_items=40, n_blocks=2)
    base = ["student.embedding_dim=4", "teachers=[{name: bpr, embedding_dim: 8, seed: 0}]",
            "teacher_train.epochs=1", "kd_train.epochs=1", "student_update.train.epochs=1",
            "teacher_update.train.epochs=1", "kd.n_topk=8", "kd.n_interesting=8", "kd.n_uninteresting=10",
            "kd.n_item_topk=8", "kd.n_item_interesting=8", "kd.n_item_uninteresting=10",
            "hard_negatives_top=0", "device=cpu"]
    cfg = resolve_stream_config(overrides=[*base, *overrides])
    return Context(cfg, stream, 0, tmp_path, lambda m: None, progress=False)


@pytest.mark.parametrize(("kd_init", "start"), [("fresh", "distilled"), ("student", "deployed"),
                                               ("both", "distilled")])
def test_ccd_starts_its_students_where_configured(kd_init: str, start: str, monkeypatch, tmp_path) -> None:
    """Stage 1 from a random student (the authors'), from M_k, or both (``kd_init``); stage 2 from D_{k−1}
    (the authors'; the warm D_{k−1} with "both") or from M_{k−1} (``student_update.start``)."""
    import copy

    from distillrec.continual import methods

    starts, previous = [], {}
    real_distil, real_update = methods.distil_students, methods._update

    def spy_distil(ctx, teachers, view, k, hard, students):
        starts.extend(students.values())  # stage 1's students, in the order they are distilled
        return real_distil(ctx, teachers, view, k, hard, students)

    def spy_update(ctx, prev, k, name, **kw):
        previous[name] = prev
        return real_update(ctx, prev, k, name, **kw)

    monkeypatch.setattr(methods, "distil_students", spy_distil)
    monkeypatch.setattr(methods, "_update", spy_update)
    ctx = _small_stream_context(tmp_path, [f"kd_init={kd_init}", f"student_update.start={start}"])
    state, _ = methods.base_block(ctx)
    state.student = copy.deepcopy(state.student)  # M_0 and D_0 as two objects, as they are from block 1 on
    starts.clear()
    passes = []
    real_knowledge = knowledge_module.compute_knowledge

    def counted_knowledge(*args, **kw):
        passes.append(1)
        return real_knowledge(*args, **kw)

    monkeypatch.setattr(knowledge_module, "compute_knowledge", counted_knowledge)
    new_state, _ = methods.update_block(ctx, "ccd", state, 1)
    assert len(passes) == 1  # one teacher-knowledge pass, however many students stage 1 distils
    assert previous["student"] is (state.student if start == "deployed" else state.distilled)
    assert starts == {"fresh": [None], "student": [new_state.student], "both": [None, new_state.student]}[kd_init]
    assert (new_state.warm is not None) == (kd_init == "both") and new_state.distilled is not new_state.warm
    methods.update_block(ctx, "ccd", new_state, 2)
    # block 2's stage 2 starts from D_1 (fresh), M_1 (deployed) or the warm D_1 (both)
    assert previous["student"] is {"fresh": new_state.distilled, "student": new_state.student,
                                   "both": new_state.warm}[kd_init]


@pytest.mark.parametrize("method", ["ccd", "finetune", "lwckd"])
@pytest.mark.parametrize("student_mode", [None, "random"])
def test_the_student_can_grow_with_its_own_initialisation(method: str, student_mode: str | None, monkeypatch,
                                                          tmp_path) -> None:
    """``init.student_mode`` sets how the student's new rows start in every method; teachers keep ``mode``."""
    from distillrec.continual import methods

    inits: dict[str, str] = {}
    real_update = methods._update

    def spy_update(ctx, prev, k, name, **kw):
        inits[name] = kw["init"]
        return real_update(ctx, prev, k, name, **kw)

    monkeypatch.setattr(methods, "_update", spy_update)
    extra = [f"init.student_mode={student_mode}"] if student_mode else []
    ctx = _small_stream_context(tmp_path, extra)
    state, _ = methods.base_block(ctx)
    methods.update_block(ctx, method, state, 1)
    default = "random" if method == "finetune" else "ccd"
    assert inits["student"] == (student_mode or default)
    assert inits["teacher0-bpr"] == default


def test_the_warm_student_survives_a_saved_state(tmp_path) -> None:
    """``kd_init: both`` carries a second student between blocks: the block state keeps it (resume), and a
    state written without one loads as before."""
    from distillrec.continual import methods
    from distillrec.continual.driver import load_state, save_state

    ctx = _small_stream_context(tmp_path, ["kd_init=both"])
    state, _ = methods.base_block(ctx)
    state, _ = methods.update_block(ctx, "ccd", state, 1)
    save_state(tmp_path / "block1.pt", state, 1)
    loaded = load_state(ctx, tmp_path / "block1.pt")
    assert loaded.warm is not None and torch.equal(_flat(loaded.warm), _flat(state.warm))
    assert not torch.equal(_flat(loaded.warm), _flat(loaded.distilled))
    state.warm = None
    save_state(tmp_path / "plain.pt", state, 1)
    assert load_state(ctx, tmp_path / "plain.pt").warm is None
