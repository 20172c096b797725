import json

import pytest
import torch
import yaml

from distillrec.config import resolve_config
from distillrec.train.checkpoint import load_checkpoint
from distillrec.train.runs import build_model, load_run, train
from distillrec.train.trainer import Trainer
from distillrec.utils import DistillrecError
from tests.helpers import planted_dataset

FAST = ["model.embedding_dim=16", "train.epochs=12", "train.batch_size=256", "train.learning_rate=0.02",
        "train.valid_metric=recall@10", "train.patience=50"]


def _cfg(*extra):
    return resolve_config(dataset="planted", model="bpr", overrides=[*FAST, *extra])


def test_training_writes_run_dir_and_beats_pop(tmp_path):
    ds = planted_dataset()
    train(ds, config=_cfg(), out=tmp_path / "bpr", progress=False)
    for name in ("config.yaml", "log.jsonl", "results.json", "checkpoints/best.pt", "checkpoints/last.pt",
                 "learning_curve.png"):
        assert (tmp_path / "bpr" / name).exists(), name
    log = [json.loads(line) for line in (tmp_path / "bpr" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 13))
    assert log[-1]["loss"]["base"] < log[0]["loss"]["base"]
    results = json.loads((tmp_path / "bpr" / "results.json").read_text())
    pop = train(ds, config=resolve_config(dataset="planted", model="pop", overrides=FAST[2:]), progress=False)
    assert results["test"]["recall@10"] > pop.evaluate("test")["recall@10"] + 0.1
    assert results["parameters"] == (160 + 100) * 16
    assert results["train"]["best_epoch"] >= 1 and results["latency_ms_per_user"] > 0


class _Killed(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    ds = planted_dataset()
    full = train(ds, config=_cfg(), out=tmp_path / "full", progress=False)

    cfg = _cfg()
    torch.manual_seed(cfg.train.seed)
    trainer = Trainer(build_model(cfg, ds), ds, cfg.train, out_dir=tmp_path / "cut", run_config=cfg.to_plain(),
                      progress=False)
    calls = {"n": 0}
    objective = trainer._objective

    def dying(batch):  # the process "dies" in the middle of epoch 6
        calls["n"] += 1
        if calls["n"] == trainer.batches.n_batches() * 5 + 3:
            raise _Killed
        return objective(batch)

    trainer._objective = dying
    with pytest.raises(_Killed):
        trainer.fit()
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["epoch"] == 5
    trainer2 = Trainer(build_model(cfg, ds), ds, cfg.train, out_dir=tmp_path / "cut", run_config=cfg.to_plain(),
                       progress=False)
    result = trainer2.fit(resume=True)
    assert result.epochs_run == 12
    trainer2.model.load_state_dict(load_checkpoint(tmp_path / "cut" / "checkpoints" / "best.pt")["model"])
    assert trainer2.evaluate("test") == full.evaluate("test")
    log = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 13))


def test_resuming_a_run_that_stopped_early_trains_nothing_more(tmp_path):
    ds = planted_dataset()
    cfg = _cfg("train.epochs=60", "train.patience=1", "train.learning_rate=0.05")
    first = Trainer(build_model(cfg, ds), ds, cfg.train, out_dir=tmp_path / "run", run_config=cfg.to_plain(),
                    progress=False).fit()
    assert first.stopped_early and first.epochs_run < 60
    again = Trainer(build_model(cfg, ds), ds, cfg.train, out_dir=tmp_path / "run", run_config=cfg.to_plain(),
                    progress=False).fit(resume=True)
    assert (again.epochs_run, again.best_epoch, again.stopped_early) == (first.epochs_run, first.best_epoch, True)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, first.epochs_run + 1))


def test_adam_is_fused_and_stays_fused_when_resuming_an_older_checkpoint(tmp_path):
    ds = planted_dataset()
    cfg = _cfg("train.epochs=4")
    torch.manual_seed(cfg.train.seed)
    trainer = Trainer(build_model(cfg, ds), ds, cfg.train, out_dir=tmp_path / "r", run_config=cfg.to_plain(),
                      progress=False)
    assert trainer.optimizer.param_groups[0]["fused"] is True
    # a checkpoint from before the fused step: its optimiser was torch's per-tensor default
    params = trainer.optimizer.param_groups[0]["params"]
    trainer.optimizer = torch.optim.Adam(params, lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay,
                                         foreach=False)
    trainer.fit()
    saved = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["optimizer"]
    assert not saved["param_groups"][0].get("fused")
    longer = _cfg("train.epochs=6")
    trainer2 = Trainer(build_model(longer, ds), ds, longer.train, out_dir=tmp_path / "r",
                       run_config=longer.to_plain(), progress=False)
    result = trainer2.fit(resume=True)
    assert result.epochs_run == 6 and trainer2.optimizer.param_groups[0]["fused"] is True
    state = trainer2.optimizer.state[trainer2.optimizer.param_groups[0]["params"][0]]
    assert float(state["step"]) == 6 * trainer2.batches.n_batches()  # the old moments were carried on


def test_resume_through_train_api(tmp_path):
    ds = planted_dataset()
    first = train(ds, config=_cfg("train.epochs=4"), out=tmp_path / "r", progress=False)
    with pytest.raises(DistillrecError, match="already holds a run"):
        train(ds, config=_cfg("train.epochs=4"), out=tmp_path / "r", progress=False)
    with pytest.raises(DistillrecError, match="finished under another budget"):
        train(ds, config=_cfg("train.epochs=6"), out=tmp_path / "r", progress=False, resume=True)
    with pytest.raises(DistillrecError, match="another config"):
        train(ds, config=_cfg("train.epochs=4", "train.learning_rate=0.05"), out=tmp_path / "r", progress=False,
              resume=True)
    again = train(ds, config=_cfg("train.epochs=4"), out=tmp_path / "r", progress=False, resume=True)
    assert again.evaluate("test") == first.evaluate("test")


def test_interrupted_run_resumes_with_a_new_budget(tmp_path):
    """epochs and patience only decide when to stop: an interrupted run may continue under a longer budget and
    then equals a run given that budget from the start; any other change is refused."""
    ds = planted_dataset()
    full = train(ds, config=_cfg("train.epochs=8"), out=tmp_path / "full", progress=False)
    train(ds, config=_cfg("train.epochs=5"), out=tmp_path / "r", progress=False)
    (tmp_path / "r" / "results.json").unlink()  # as if the 5-epoch run had been cut short after its last epoch
    with pytest.raises(DistillrecError, match="another config"):
        train(ds, config=_cfg("train.epochs=8", "train.batch_size=32"), out=tmp_path / "r", progress=False,
              resume=True)
    messages = []
    longer = train(ds, config=_cfg("train.epochs=8"), out=tmp_path / "r", progress=False, resume=True,
                   echo=messages.append)
    assert any("new budget (train.epochs: 5 → 8)" in m for m in messages)
    assert longer.result.epochs_run == 8
    assert longer.evaluate("test") == full.evaluate("test")
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["train"]["epochs"] == 8


def test_checkpoint_errors(tmp_path):
    ds = planted_dataset()
    train(ds, config=_cfg("train.epochs=2"), out=tmp_path / "r", progress=False)
    other = planted_dataset(seed=1, name="other")
    other.item_ids = other.item_ids[::-1].copy()
    with pytest.raises(DistillrecError, match="other user/item id maps"):
        load_run(tmp_path / "r", dataset=other)
    best = tmp_path / "r" / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    with pytest.raises(DistillrecError, match="not a readable distillrec checkpoint"):
        load_run(tmp_path / "r", dataset=ds)
    with pytest.raises(DistillrecError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_recommend_excludes_seen_items_and_maps_ids(tmp_path):
    ds = planted_dataset()
    run = train(ds, config=_cfg(), out=tmp_path / "r", progress=False)
    recs = run.recommend("u3", k=10)
    assert len(recs) == 10 and all(item.startswith("i") for item, _ in recs)
    seen = {f"i{i}" for i in ds.train[3].indices}
    assert not seen & {item for item, _ in recs}
    assert [s for _, s in recs] == sorted((s for _, s in recs), reverse=True)
    with pytest.raises(DistillrecError, match="user 'nobody' is not in"):
        run.recommend("nobody")


@pytest.mark.parametrize("name", ["bpr", "lightgcn", "neumf", "cml", "vae", "iae", "pop"])
def test_every_cf_model_trains_through_the_loop(name):
    ds = planted_dataset()
    cfg = resolve_config(dataset="planted", model=name, overrides=[
        "train.epochs=2", "train.batch_size=64", "train.valid_metric=recall@10", *(
            ["model.hidden_dims=[32]", "model.embedding_dim=8"] if name in ("vae", "iae") else [])])
    run = train(ds, config=cfg, progress=False)
    metrics = run.evaluate("test")
    assert 0.0 <= metrics["recall@10"] <= 1.0
    if name != "pop":
        assert run.result.epochs_run == 2 and run.result.history[0]["loss"]["base"] > 0


def test_sequential_model_trains_through_the_loop():
    from distillrec.data import load_dataset

    ds = load_dataset("synthetic", sequences=True, n_users=200, n_items=150)
    cfg = resolve_config(dataset="synthetic", model="sasrec", overrides=[
        "train.epochs=2", "train.batch_size=64", "model.max_len=20", "model.hidden_size=16"])
    run = train(ds, config=cfg, progress=False)
    history = run.result.history
    assert history[1]["loss"]["base"] < history[0]["loss"]["base"]
    assert 0.0 <= run.evaluate("test")["ndcg@10"] <= 1.0


def test_callbacks_see_every_epoch_and_the_end():
    seen = []

    class Recorder:
        def on_epoch_end(self, trainer, epoch, record):
            seen.append((epoch, "valid" in record))

        def on_fit_end(self, trainer, result):
            seen.append(("end", result.epochs_run))

    ds = planted_dataset()
    cfg = _cfg("train.epochs=3", "train.eval_every=2")
    Trainer(build_model(cfg, ds), ds, cfg.train, callbacks=[Recorder()], progress=False).fit()
    assert seen == [(1, False), (2, True), (3, True), ("end", 3)]


def test_a_collapsed_bpr_loss_is_reported_with_the_rescaling_rule(tmp_path):
    """Adam's coupled L2 pulling every embedding to 0 leaves BPR at exactly ln 2: the loop says why."""
    ds = planted_dataset()
    msgs: list[str] = []
    cfg = _cfg("train.epochs=6", "train.weight_decay=10.0", "model.init_std=0.1")
    torch.manual_seed(0)
    trainer = Trainer(build_model(cfg, ds), ds, cfg.train, progress=False, echo=msgs.append)
    with pytest.warns(RuntimeWarning, match="collapsed to 0"):
        trainer.fit()
    warned = [m for m in msgs if m.startswith("warning")]
    assert len(warned) == 1 and "λ / 256" in warned[0]  # batch 256 × 1 negative

    healthy = _cfg("train.epochs=3")
    torch.manual_seed(0)
    msgs.clear()
    Trainer(build_model(healthy, ds), ds, healthy.train, progress=False, echo=msgs.append).fit()
    assert not [m for m in msgs if m.startswith("warning")]


def test_neumf_starts_from_a_bpr_run_and_students_do_not_inherit_it(tmp_path):
    ds = planted_dataset()
    bpr = train(ds, config=_cfg(), out=tmp_path / "bpr", progress=False)
    assert "init_from" not in _cfg().to_plain()  # unset: earlier configs and their hashes are unchanged
    neumf_sets = ["model.embedding_dim=16", "model.mlp_layers=[16, 8]", "train.epochs=0"]
    cfg = resolve_config(dataset="planted", model="neumf", overrides=[*neumf_sets, f"init_from={tmp_path / 'bpr'}"])
    assert cfg.to_plain()["init_from"] == str(tmp_path / "bpr")
    run = train(ds, config=cfg, out=tmp_path / "neumf", progress=False)  # 0 epochs: the start itself is kept
    nmf = run.model
    assert torch.equal(nmf.user_gmf.weight, bpr.model.user_emb.weight)
    assert torch.equal(nmf.item_gmf.weight, bpr.model.item_emb.weight)
    assert nmf.predict.weight[0, :16].eq(1).all()
    # the GMF half scores as the MF: the model starts as the BPR-MF plus a small MLP term
    users, items = torch.arange(5), torch.arange(7)
    gmf = (nmf.user_gmf(users).unsqueeze(1) * nmf.item_gmf(items).unsqueeze(0)).sum(-1)
    torch.testing.assert_close(gmf, bpr.model.full_scores(users)[:, :7])
    from distillrec.train.runs import distill

    student = distill(run, "rd", student_dim=4, overrides=["train.epochs=0"], progress=False)
    assert student.config.init_from is None  # the teacher's start is not the student's
    # what the main job's student alone starts from (pipeline._student) and distill() above: no init_from
    assert "init_from" not in run.config.derived_base() and run.config.derived_base()["model"]["name"] == "neumf"
    with pytest.raises(DistillrecError, match="starts only from a BPR-MF run of the same size"):
        train(ds, config=resolve_config(dataset="planted", model="neumf",
                                        overrides=["model.embedding_dim=8", "train.epochs=0",
                                                   f"init_from={tmp_path / 'bpr'}"]), progress=False)
    with pytest.raises(DistillrecError, match="cannot be initialised from"):
        train(ds, config=_cfg(f"init_from={tmp_path / 'bpr'}"), progress=False)
