"""Paired significance tests between two runs' per-user metric values (aligned by user id)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from distillrec.evaluate.result import EvalResult

TESTS = ("t", "wilcoxon")


@dataclass(frozen=True)
class PairedTestResult:
    test: str  # "t" (paired t-test) or "wilcoxon" (signed-rank)
    metric: str
    statistic: float
    p_value: float
    mean_diff: float  # mean over common users of (a - b)
    n: int  # users present in both runs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _values(run: EvalResult | tuple, metric: str | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(run, EvalResult):
        if metric is None:
            raise ValueError("metric= is required when comparing EvalResult objects")
        if metric not in run.per_user:
            raise ValueError(f"run {name} has no per-user values for {metric!r}; "
                             f"available: {', '.join(run.per_user) or 'none (saved without per_user?)'}")
        users, values = run.users, run.per_user[metric]
    else:
        users, values = run
    users = np.asarray(users).astype(np.int64).ravel()
    values = np.asarray(values, dtype=np.float64).ravel()
    if users.shape != values.shape:
        raise ValueError(f"run {name}: {users.size} user ids but {values.size} values")
    if np.unique(users).size != users.size:
        raise ValueError(f"run {name}: user ids are not unique")
    return users, values


def paired_test(
    a: EvalResult | tuple,
    b: EvalResult | tuple,
    metric: str | None = None,
    test: str = "t",
) -> PairedTestResult:
    """Paired test of ``a`` against ``b`` on the users present in both.

    ``a`` / ``b`` are ``EvalResult`` objects (then ``metric`` names the per-user key, e.g. ``"ndcg@20"``) or
    ``(user_ids, values)`` pairs. ``test="t"`` uses ``scipy.stats.ttest_rel``, ``"wilcoxon"``
    ``scipy.stats.wilcoxon`` (zero differences dropped, scipy's default). When every difference is zero the
    runs are indistinguishable: statistic 0, p-value 1.
    """
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; expected one of {', '.join(TESTS)}")
    ua, va = _values(a, metric, "a")
    ub, vb = _values(b, metric, "b")
    _, ia, ib = np.intersect1d(ua, ub, assume_unique=True, return_indices=True)
    n = int(ia.size)
    if n < 2:
        raise ValueError(f"a paired test needs at least 2 common users, got {n}")
    x, y = va[ia], vb[ib]
    diff = x - y
    name = metric or "value"
    if not np.any(diff):
        return PairedTestResult(test, name, 0.0, 1.0, 0.0, n)
    res = stats.ttest_rel(x, y) if test == "t" else stats.wilcoxon(x, y)
    return PairedTestResult(test, name, float(res.statistic), float(res.pvalue), float(diff.mean()), n)
