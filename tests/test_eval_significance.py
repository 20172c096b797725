"""Paired significance tests: alignment by user id, agreement with scipy, degenerate cases."""

import numpy as np
import pytest
from scipy import stats

from distillrec.evaluate import EvalResult, paired_test

A = np.array([0.10, 0.25, 0.30, 0.05, 0.50, 0.45, 0.20, 0.35])
B = np.array([0.12, 0.20, 0.10, 0.00, 0.40, 0.30, 0.25, 0.15])


def test_t_and_wilcoxon_match_scipy():
    users = np.arange(8)
    t = paired_test((users, A), (users, B), test="t")
    ref = stats.ttest_rel(A, B)
    assert t.statistic == pytest.approx(ref.statistic) and t.p_value == pytest.approx(ref.pvalue)
    assert t.mean_diff == pytest.approx(np.mean(A - B)) and t.n == 8
    # by hand: d = A - B, t = mean(d) / (sd(d) / sqrt(n))
    d = A - B
    assert t.statistic == pytest.approx(d.mean() / (d.std(ddof=1) / np.sqrt(8)))
    w = paired_test((users, A), (users, B), test="wilcoxon")
    ref = stats.wilcoxon(A, B)
    assert w.statistic == pytest.approx(ref.statistic) and w.p_value == pytest.approx(ref.pvalue)
    # W = the smaller of the rank sums of |d| over negative and positive d; all 8 ranks sum to 8·9/2 = 36
    neg = sum(stats.rankdata(np.abs(d))[d < 0])
    assert w.statistic == pytest.approx(min(neg, 36 - neg))


def test_alignment_by_user_id():
    # b lists the users in another order, lacks user 0 and has an extra user 99
    ua = np.arange(8)
    perm = np.array([5, 3, 7, 1, 2, 6, 4])
    ub = np.concatenate([perm, [99]])
    vb = np.concatenate([B[perm], [1.0]])
    res = paired_test((ua, A), (ub, vb))
    ref = stats.ttest_rel(A[1:], B[1:])
    assert res.n == 7 and res.p_value == pytest.approx(ref.pvalue)


def _result(users, values, key="ndcg@20") -> EvalResult:
    values = np.asarray(values, dtype=np.float64)
    return EvalResult("full", "test", (20,), {key: float(values.mean())}, np.asarray(users), {key: values},
                      len(users), 0)


def test_eval_results_and_degenerate_cases():
    a, b = _result(np.arange(8), A), _result(np.arange(8), B)
    res = paired_test(a, b, metric="ndcg@20", test="wilcoxon")
    assert res.metric == "ndcg@20" and res.p_value == pytest.approx(stats.wilcoxon(A, B).pvalue)
    same = paired_test(a, _result(np.arange(8), A), metric="ndcg@20")
    assert (same.statistic, same.p_value, same.mean_diff) == (0.0, 1.0, 0.0)
    assert res.to_dict()["n"] == 8
    with pytest.raises(ValueError, match="metric= is required"):
        paired_test(a, b)
    with pytest.raises(ValueError, match="no per-user values for 'recall@20'"):
        paired_test(a, b, metric="recall@20")
    with pytest.raises(ValueError, match="at least 2 common users"):
        paired_test((np.array([0, 1]), A[:2]), (np.array([1, 5]), B[:2]))
    with pytest.raises(ValueError, match="not unique"):
        paired_test((np.array([0, 0]), A[:2]), (np.array([0, 1]), B[:2]))
    with pytest.raises(ValueError, match="unknown test"):
        paired_test(a, b, metric="ndcg@20", test="anova")
