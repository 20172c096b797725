"""Exact resume of distilled runs: a KD run killed in the middle of an epoch and resumed from ``last.pt`` ends
with the same student (bit for bit) and the same metrics as the run that was never interrupted."""

import warnings

import pytest
import torch

from distillrec.config import resolve_config
from distillrec.distill import get_method
from distillrec.train.checkpoint import load_checkpoint
from distillrec.train.runs import build_model, train
from distillrec.train.trainer import Trainer
from tests.helpers import planted_dataset

FAST = ["train.epochs=8", "train.batch_size=256", "train.learning_rate=0.02", "train.eval_every=4",
        "train.patience=50", "train.valid_metric=recall@10"]
# DCD: killed in epoch 6, between the refreshes of epochs 4 and 7, so the resumed run must sample from the
# student ranks saved with the checkpoint. DE-RRD: Gumbel expert choice per batch + RRD lists per epoch.
CASES = [("dcd", {"n_topk": 40, "n_item_topk": 40, "n_samples": 8, "n_item_samples": 5}),
         ("de-rrd", {"n_topk": 40, "n_interesting": 8, "n_uninteresting": 8, "n_experts": 4})]


class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def setting():
    ds = planted_dataset()
    teacher_cfg = resolve_config(dataset="planted", model="bpr", overrides=["model.embedding_dim=16", *FAST])
    teacher = train(ds, config=teacher_cfg, progress=False)
    cfg = resolve_config(dataset="planted", model="bpr", overrides=["model.embedding_dim=4", *FAST])
    return ds, teacher, cfg


def kd_trainer(setting, method, hparams, out):
    ds, teacher, cfg = setting
    torch.manual_seed(cfg.train.seed)
    student = build_model(cfg, ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lists cut on this 100-item catalogue
        distiller = get_method(method).from_teacher(student, teacher.model, ds, hparams, seed=cfg.train.seed)
    return Trainer(student, ds, cfg.train, out_dir=out, distiller=distiller, run_config=cfg.to_plain(),
                   progress=False)


@pytest.mark.parametrize(("method", "hparams"), CASES)
def test_kd_run_resumed_mid_epoch_matches_uninterrupted_run(setting, tmp_path, method, hparams):
    full = kd_trainer(setting, method, hparams, tmp_path / "full")
    full.fit()

    cut = kd_trainer(setting, method, hparams, tmp_path / "cut")
    calls = {"n": 0}
    objective = cut._objective

    def dying(batch):  # the process "dies" in the middle of epoch 6
        calls["n"] += 1
        if calls["n"] == cut.batches.n_batches() * 5 + 3:
            raise _Killed
        return objective(batch)

    cut._objective = dying
    with pytest.raises(_Killed):
        cut.fit()
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["epoch"] == 5

    resumed = kd_trainer(setting, method, hparams, tmp_path / "cut")
    assert resumed.fit(resume=True).epochs_run == 8
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert resumed.evaluate("test") == full.evaluate("test")
