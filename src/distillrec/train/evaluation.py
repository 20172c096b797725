"""The trainer's bridge to ``distillrec.evaluate``: one protocol name in, an ``EvalResult`` out."""

from __future__ import annotations

from typing import Any

from distillrec.config import TrainConfig
from distillrec.data.dataset import Dataset
from distillrec.models.base import Recommender


def evaluate_model(model: Recommender, dataset: Dataset, split: str, protocol: str, cfg: TrainConfig) -> Any:
    from distillrec.evaluate import evaluate_full, evaluate_sampled

    if protocol == "sampled":
        # The DE-RRD papers report H/N/M at 5, 10 and 20 whatever the training config's list says.
        ks = sorted(set(cfg.topk) | {5, 10, 20})
        return evaluate_sampled(model, dataset, split=split, ks=ks, batch_size=cfg.eval_batch_size)
    return evaluate_full(model, dataset, split=split, ks=cfg.topk, batch_size=cfg.eval_batch_size)


def rounded(metrics: dict[str, float], digits: int = 6) -> dict[str, float]:
    return {k: round(float(v), digits) for k, v in metrics.items()}
