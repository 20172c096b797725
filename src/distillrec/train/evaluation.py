"""The trainer's bridge to ``distillrec.evaluate``: one protocol name in, a flat dict of mean metrics out."""

from __future__ import annotations

from typing import Any

from distillrec.config import TrainConfig
from distillrec.data.dataset import Dataset
from distillrec.models.base import Recommender


def evaluate_model(model: Recommender, dataset: Dataset, split: str, protocol: str, cfg: TrainConfig,
                   per_user: bool = False) -> dict[str, Any]:
    from distillrec.evaluate import evaluate_full, evaluate_sampled

    if protocol == "sampled":
        ks = sorted(set(cfg.topk) | {5, 10, 20})
        result = evaluate_sampled(model, dataset, split=split, ks=ks, batch_size=cfg.eval_batch_size)
    else:
        result = evaluate_full(model, dataset, split=split, ks=cfg.topk, batch_size=cfg.eval_batch_size)
    out = {k: round(float(v), 6) for k, v in result.means.items()}
    if per_user:
        out["_result"] = result
    return out
