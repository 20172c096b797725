"""Exact top-N by threshold (teacher lists): equal to a stable descending sort, on every path."""

import numpy as np
import pytest
import torch

from distillrec.distill.topn import select_topk, threshold_chunk
from distillrec.evaluate.topk import topk


def stable_reference(scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Descending by value, equal values by lower column: a stable sort of the negated rows."""
    order = np.argsort(-scores.numpy(), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores.numpy(), order, axis=1), order


def test_threshold_chunk_choice():
    assert threshold_chunk(25182, 500) == 6  # 25182 // 4000: 4197 maxima compete for 500 places
    assert threshold_chunk(5220, 500) == 2
    assert threshold_chunk(10**6, 10) == 64


@pytest.mark.parametrize(("n", "k"), [(25182, 500), (5220, 500), (4099, 300), (3001, 64), (50, 10)])
def test_matches_a_stable_sort_with_ties_masks_and_a_ragged_tail(n, k):
    g = torch.Generator().manual_seed(n + k)
    scores = torch.randn(40, n, generator=g)
    scores[:, torch.randperm(n, generator=g)[: n // 4]] = float("-inf")  # training items
    scores[0, : n // 2] = 0.5  # a long run of ties across the cut-off
    scores[1] = torch.randint(0, 5, (n,), generator=g).float()  # ties everywhere
    scores[2, k // 2:] = float("-inf")  # fewer than k finite entries: the topk fallback
    scores[3, n - 1] = 10.0  # the best entry in the ragged tail (n mod c columns)
    values, indices = select_topk(scores, k)
    ref_values, ref_indices = stable_reference(scores, k)
    np.testing.assert_array_equal(values.numpy(), ref_values)
    np.testing.assert_array_equal(indices.numpy(), ref_indices)
    assert int(indices[3, 0]) == n - 1


def test_same_result_as_evaluate_topk_on_teacher_like_scores():
    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(64, 16, generator=g), torch.randn(9000, 16, generator=g)
    scores = users @ items.T
    for k in (10, 100, 700):  # the small-k path (evaluate.topk) and the threshold path
        v, i = select_topk(scores, k)
        rv, ri = topk(scores, k)
        assert torch.equal(i, ri) and torch.equal(v, rv)


def test_nan_rows_behave_as_topk_and_bad_k_is_an_error():
    scores = torch.randn(3, 6000)
    scores[1, 17] = float("nan")
    values, indices = select_topk(scores, 700)
    assert int(indices[1, 0]) == 17 and torch.isnan(values[1, 0])
    np.testing.assert_array_equal(indices[0].numpy(), stable_reference(scores[[0]], 700)[1][0])
    with pytest.raises(ValueError, match="k=0"):
        select_topk(scores, 0)
