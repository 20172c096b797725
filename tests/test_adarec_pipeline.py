"""AdaRec losses and the search → derive → retrain → evaluate pipeline on tiny synthetic sequences."""

import json
import math

import pytest
import torch
import yaml
from matplotlib.figure import Figure

from distillrec import nas
from distillrec.data import load_dataset
from distillrec.data.sequences import sequence_batches
from distillrec.distill.adarec import AdaRecConfig, AdaRecDistiller, logit_kd
from distillrec.models.nextitnet import NextItNet, NextItNetConfig
from distillrec.models.supernet import AdaRecStudent, StudentConfig, SuperNet, SuperNetConfig
from distillrec.train.runs import load_run, train
from distillrec.utils import DistillrecError

MAX_LEN = 10


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def data():
    # 10 fixed negatives per user: the report's sampled-protocol table (the registry's sequence data sets: 100)
    return load_dataset("synthetic", sequences=True, n_users=80, n_items=40, seed=1, n_candidates=10)


def _teacher(data, seed: int = 0) -> NextItNet:
    torch.manual_seed(seed)
    return NextItNet(data.n_users, data.n_items, NextItNetConfig(embedding_dim=16, max_len=MAX_LEN)).eval()


def _supernet(data, **kw) -> SuperNet:
    torch.manual_seed(0)
    return SuperNet(data.n_users, data.n_items, SuperNetConfig(embedding_dim=8, max_len=MAX_LEN, dropout=0.0, **kw))


def _batch(data, size: int = 16) -> dict:
    return next(iter(sequence_batches(data, MAX_LEN, size, torch.Generator().manual_seed(0))))


def test_logit_kd_hand_values():
    z_s, z_t = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]])
    # p_t = (3/4, 1/4), p_s = (1/2, 1/2)
    assert float(logit_kd(z_s, z_t)) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)
    q = math.sqrt(3) / (1 + math.sqrt(3))  # softmax(ln3/2, 0) at T = 2
    want = 4 * (q * math.log(2 * q) + (1 - q) * math.log(2 * (1 - q)))
    assert float(logit_kd(z_s, z_t, temperature=2.0)) == pytest.approx(want, abs=1e-6)
    reverse = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # the authors' KL(p_s ‖ p_t)
    assert float(logit_kd(z_s, z_t, reverse=True)) == pytest.approx(reverse, abs=1e-6)


def test_search_terms_cost_and_parameters(data):
    net, teacher = _supernet(data), _teacher(data)
    d = AdaRecDistiller(net, teacher, AdaRecConfig(beta=2.0))
    torch.manual_seed(5)
    terms = d.loss(_batch(data))
    assert set(terms) == {"ce", "emb", "hid", "logit", "cost"}
    torch.manual_seed(5)  # the same Gumbel draw as inside loss()
    arch = net.sample_arch()
    assert float(terms["cost"].detach()) == pytest.approx(2.0 * float((arch.detach() * d.op_cost).sum()), rel=1e-5)
    # the teacher is frozen and not part of the distiller; projections are the only extra parameters
    assert not any(k.startswith("teacher") for k in d.state_dict())
    assert {id(p) for p in d.extra_parameters()} == {id(p) for p in [*d.emb_proj.parameters(),
                                                                       *d.hid_proj.parameters()]}
    before = [p.clone() for p in teacher.parameters()]
    opt = d.optimizer(1e-2, 0.0)
    sum(terms.values()).backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    assert opt.param_groups[1]["params"] == [net.alpha] and opt.param_groups[1]["lr"] == 2e-5
    assert net.alpha.grad is not None and float(net.alpha.grad.abs().sum()) > 0
    # cost-attention moved the EMD weights, which stay on the simplex
    assert float(d.mapper.w_student.sum()) == pytest.approx(1.0) and not torch.allclose(
        d.mapper.w_student, torch.full((4,), 0.25, dtype=torch.float64))


def test_temperature_and_gamma_schedule(data):
    d = AdaRecDistiller(_supernet(data), _teacher(data), AdaRecConfig(gamma_decay=0.1))
    taus = []
    for epoch in (1, 5, 6, 11):
        d.on_epoch_start(epoch)
        taus.append(d.student.tau)
    assert taus == pytest.approx([1.0, 1.0, 0.8, 0.64])
    assert d.gamma_e == pytest.approx(0.5 * 0.9**10)
    assert d.stats()["tau"] == pytest.approx(0.64) and len(d.stats()["genotype"]) == 6


def test_kd_terms_ignore_padding_unless_faithful(data):
    student = AdaRecStudent(data.n_users, data.n_items, StudentConfig(
        embedding_dim=8, max_len=MAX_LEN, dropout=0.0, genotype=["conv_3", "skip_connect", "avg_pool_3", "none",
                                                                 "dil_conv_5", "conv_5"]))
    teacher = _teacher(data)
    batch = _batch(data)
    n = batch["input_seq"].shape[1]
    assert n < MAX_LEN  # room for one more column of padding
    wider = {k: torch.cat([torch.full((v.shape[0], 1), data.n_items), v], 1) for k, v in batch.items()
             if k in ("input_seq", "target_seq")}
    d = AdaRecDistiller(student, teacher)
    d.mapper.eval()  # keep the EMD weights fixed between the two calls
    a, b = d.loss(batch), d.loss(wider)
    assert set(a) == {"ce", "emb", "hid", "logit"}  # a derived student has no cost term
    for k in a:
        assert float(a[k].detach()) == pytest.approx(float(b[k].detach()), rel=1e-4), k
    with pytest.warns(UserWarning, match="faithful"):
        f = AdaRecDistiller(student, teacher, AdaRecConfig(faithful=True))
    f.mapper.eval()
    fa, fb = f.loss(batch), f.loss(wider)
    assert float(fa["logit"].detach()) != pytest.approx(float(fb["logit"].detach()), rel=1e-4)
    assert set(AdaRecDistiller(student, teacher, AdaRecConfig(kd=False)).loss(batch)) == {"ce"}


def test_kd_brings_the_student_closer_to_the_teacher(data):
    teacher = _teacher(data, seed=3)
    torch.manual_seed(1)
    student = NextItNet(data.n_users, data.n_items, NextItNetConfig(embedding_dim=8, max_len=MAX_LEN))
    d = AdaRecDistiller(student, teacher, AdaRecConfig(gamma=0.9))
    opt = d.optimizer(1e-2, 0.0)
    batch = _batch(data, 64)
    first = None
    for _ in range(30):
        terms = d.loss(batch)
        first = first or {k: float(v.detach()) for k, v in terms.items()}
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    last = {k: float(v.detach()) for k, v in d.loss(batch).items()}
    assert last["logit"] < 0.5 * first["logit"] and last["hid"] < first["hid"]


def test_nas_config_overrides_and_errors(tmp_path):
    cfg = nas.resolve_nas_config(overrides=["search.epochs=3", "method.beta=0", "kd=false", "model.n_cells=2",
                                            "ablations=[random]"])
    assert cfg.search.epochs == 3 and cfg.search.learning_rate == 5e-3  # the rest of the section keeps defaults
    assert cfg.method.beta == 0 and not cfg.kd and cfg.model == {"n_cells": 2} and cfg.ablations == ["random"]
    with pytest.raises(DistillrecError, match=r"method\.betta: unknown key"):
        nas.resolve_nas_config(overrides=["method.betta=1"])
    with pytest.raises(DistillrecError, match="unknown NAS config section"):
        nas.resolve_nas_config(overrides=["train.epochs=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("ablations: [random, nothing]\n")
    with pytest.raises(DistillrecError, match=r"bad\.yaml"):
        nas.resolve_nas_config(bad)


def test_render_and_draw():
    text = nas.render_architecture(["conv_3", "none", "skip_connect"], 2, 4)
    assert text.splitlines()[1:3] == ["  node 1 = conv_3(node 0)", "  node 2 = skip_connect(node 1)"]
    fig = nas.draw_cells(["conv_3", "none", "skip_connect"], 2, torch.rand(3, 8).numpy(), [str(i) for i in range(8)])
    assert isinstance(fig, Figure) and len(fig.axes) == 3  # cell, heat map, colour bar


def test_search_derive_retrain_end_to_end(data, tmp_path):
    train(data, "nextitnet", out=tmp_path / "teacher", overrides=[
        "embedding_dim=16", f"max_len={MAX_LEN}", "epochs=2", "batch_size=64", "learning_rate=0.01",
        "topk=[5,10]", "valid_metric=ndcg@10"])
    out = tmp_path / "nas"
    over = ["model.embedding_dim=8", "model.n_cells=2", "search.epochs=2", "search.batch_size=40",
            "retrain.epochs=1", "retrain.batch_size=40", "search.topk=[5,10]", "retrain.topk=[5,10]",
            "warm_start=true", "ablations=[random,fixed_student,no_kd]"]
    messages = []
    res = nas.search(data, tmp_path / "teacher", out, over, echo=messages.append)
    genotype = res["genotype"]
    assert len(genotype) == 6 and [r["name"] for r in res["rows"]] == ["teacher", "adarec", "random",
                                                                        "fixed_student", "no_kd"]
    # derive = argmax of the searched alpha, read back from the super-net's best checkpoint
    search_run = load_run(out / "search", data)
    assert search_run.model.derive() == genotype
    assert json.loads((out / "architecture.json").read_text())["genotype"] == genotype
    assert all(op in (out / "architecture.txt").read_text() for op in genotype if op != "none")
    assert (out / "cells.png").stat().st_size > 0 and "| adarec |" in (out / "report.md").read_text()
    assert any("warm start" in m for m in messages)
    # the retrained student is a normal run directory with the derived genotype; it is smaller than the teacher
    student = load_run(out / "retrain", data)
    assert student.model.config.genotype == genotype
    rows = {r["name"]: r for r in res["rows"]}
    assert rows["adarec"]["non_embedding_parameters"] == student.model.num_parameters() - (
        student.model.item_embedding.weight.numel() + student.model.position_embedding.weight.numel())
    assert 0 <= rows["adarec"]["test"]["ndcg@10"] <= 1 and rows["adarec"]["macs_per_sequence"] > 0
    # the sampled protocol beside the full one: 1 + 10 candidates, so hit@10 misses only a target ranked last
    assert res["sampled_negatives"] == 10 and all("test_sampled" in r for r in res["rows"])
    assert rows["adarec"]["test_sampled"]["hit@10"] >= rows["adarec"]["test"]["hit@10"]
    report = (out / "report.md").read_text()
    assert "against 10 fixed negatives" in report and report.count("| teacher |") == 2
    assert "100.0 %" in report  # the teacher's share of its own NDCG@10
    log = [json.loads(line) for line in (out / "search" / "log.jsonl").read_text().splitlines()]
    assert set(log[0]["loss"]) == {"ce", "emb", "hid", "logit", "cost"} and "w_teacher" in log[0]["distill"]
    assert len(rows["fixed_student"]["dilations"]) >= 1
    # no_kd: the same architecture and size as adarec's student, retrained without the distiller's loss terms
    assert rows["no_kd"]["genotype"] == genotype
    assert rows["no_kd"]["non_embedding_parameters"] == rows["adarec"]["non_embedding_parameters"]
    no_kd_log = [json.loads(line) for line in (out / "ablations" / "no_kd" / "retrain" / "log.jsonl").read_text()
                 .splitlines()]
    assert set(no_kd_log[0]["loss"]) == {"base"}
    # a second call reuses every finished stage
    messages.clear()
    again = nas.search(data, tmp_path / "teacher", out, over, echo=messages.append)
    assert again["genotype"] == genotype and sum("reused" in m for m in messages) == 5
    with pytest.raises(DistillrecError, match="finished under another budget"):
        nas.search(data, tmp_path / "teacher", out, [*over, "search.epochs=3"])
    # the stage configs record the AdaRec settings: another cost weight is refused, not silently reused
    with pytest.raises(DistillrecError, match=r"search.*another config"):
        nas.search(data, tmp_path / "teacher", out, [*over, "method.beta=0.25"])
    assert yaml.safe_load((out / "retrain" / "config.yaml").read_text())["distill"]["warm_start"] is True


@pytest.mark.parametrize("name", ["beauty", "lastfm", "faithful"])
def test_shipped_configs_resolve(name, data):
    from pathlib import Path

    from distillrec.config import resolve_config

    root = Path(__file__).resolve().parents[1] / "configs" / "adarec"
    cfg = nas.resolve_nas_config(root / f"{name}.yaml", ["model.embedding_dim=8", f"model.max_len={MAX_LEN}",
                                                                 "method.teacher_layers=null"])
    faithful = name == "faithful"
    ctx = pytest.warns(UserWarning) if faithful else _no_warning()
    with ctx:
        net = SuperNet.from_dataset(data, **cfg.model)
        AdaRecDistiller(net, _teacher(data), cfg.method)
    assert net.config.faithful == faithful and cfg.kd != faithful
    for teacher_cfg in root.glob("teacher_*.yaml"):
        resolve_config(config_file=teacher_cfg)


class _no_warning:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)
