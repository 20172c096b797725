"""Evaluation: full-ranking and sampled protocols, ranking metrics, paired significance tests."""

from distillrec.evaluate.metrics import METRICS, rank_metrics, ranking_metrics
from distillrec.evaluate.protocols import evaluate_full, evaluate_sampled
from distillrec.evaluate.result import EvalResult
from distillrec.evaluate.significance import PairedTestResult, paired_test

__all__ = [
    "METRICS",
    "EvalResult",
    "PairedTestResult",
    "evaluate_full",
    "evaluate_sampled",
    "paired_test",
    "rank_metrics",
    "ranking_metrics",
]
