"""A plain stream stage (base teachers, retraining) survives an interruption: cut short, it resumes from its
last epoch and ends with the uninterrupted weights; finished, it is reused until the block state is saved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distillrec.config import TrainConfig
from distillrec.continual import load_stream, resolve_stream_config
from distillrec.continual.stages import Context, build_model, fit
from distillrec.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

SPEC = {"name": "bpr", "embedding_dim": 8, "init_std": 0.1}


def _train(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 4, "eval_every": 1, "patience": 10, "learning_rate": 0.02, "batch_size": 64,
                          "valid_metric": "recall@20", "topk": [20], "seed": 3, "device": "cpu", **kw})


def _weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_a_plain_stage_resumes_and_is_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = load_stream("synthetic", n_users=60, n_items=40, n_blocks=1)
    msgs: list[str] = []
    ctx = Context(resolve_stream_config(overrides=["device=cpu"]), stream, 0, tmp_path, msgs.append, progress=False)
    nu, ni = stream.sizes(0)
    view = stream.view(0)

    def fresh():
        return build_model(SPEC, nu, ni, ctx.graph(0), 3, ctx.device)

    full = fresh()
    info_full = fit(ctx, full, view, _train(), tmp_path / "full")

    save_last = Trainer._save_last

    def save_then_die(self, state):
        save_last(self, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    stage = tmp_path / "stage"
    monkeypatch.setattr(Trainer, "_save_last", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit(ctx, fresh(), view, _train(), stage)
    monkeypatch.undo()
    assert (stage / "checkpoints" / "last.pt").exists() and not (stage / "done.pt").exists()

    resumed = fresh()
    info = fit(ctx, resumed, view, _train(), stage)
    assert any(m.endswith("resuming after epoch 2") for m in msgs)
    assert torch.equal(_weights(resumed), _weights(full))
    assert info["best_epoch"] == info_full["best_epoch"] and info["epochs"] == 4
    assert (stage / "done.pt").exists() and not (stage / "checkpoints").exists()

    again = fresh()
    assert fit(ctx, again, view, _train(), stage) == info
    assert torch.equal(_weights(again), _weights(full)) and any("reusing the finished stage" in m for m in msgs)

    # other settings: the finished stage is not theirs, it is trained again from scratch
    msgs.clear()
    other = fresh()
    assert fit(ctx, other, view, _train(learning_rate=0.05), stage)["epochs"] == 4
    assert not any("reusing" in m or "resuming" in m for m in msgs)
    assert not torch.equal(_weights(other), _weights(full))
