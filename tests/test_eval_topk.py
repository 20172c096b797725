"""Top-K: torch.topk's values, ties broken by item index (as a stable sort would), edge cases."""

import numpy as np
import pytest
import torch

from distillrec.evaluate.topk import chunk_size, topk


def _check(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    values, indices = topk(scores, k)
    ref = torch.topk(scores, k, dim=1).values
    torch.testing.assert_close(values, ref, equal_nan=True, rtol=0, atol=0)
    assert indices.min() >= 0 and indices.max() < scores.shape[1]
    assert torch.equal(scores.gather(1, indices), values) or torch.isnan(values).any()
    if not torch.isnan(scores).any():  # the tie rule: exactly a stable sort by descending score
        ref_idx = np.argsort(-scores.numpy(), axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(indices.numpy(), ref_idx)
    return values, indices


def test_chunk_size_choice():
    assert chunk_size(40981, 20) == 64  # 40981 // (8 · 20) = 256, capped at 64: 640 maxima, 1,280 candidates
    assert chunk_size(5003, 20) == 31  # 5003 // 160
    assert chunk_size(256, 5) == 0  # short rows: plain topk
    assert chunk_size(1000, 100) == 0  # fewer than 2 columns per chunk
    assert chunk_size(100_000, 1) == 64


@pytest.mark.parametrize(("n", "k"), [(5000, 20), (4099, 7), (1031, 1), (3000, 50), (40981, 20), (40981, 100)])
def test_matches_torch_topk_on_random_rows(n, k):
    g = torch.Generator().manual_seed(n + k)
    scores = torch.randn(16, n, generator=g)
    scores[:, torch.randperm(n, generator=g)[: n // 3]] = float("-inf")  # masked items
    _check(scores, k)


@pytest.mark.parametrize("n", [100, 2000, 5003, 40981])  # plain topk, then 2, 3 and 4 stages
def test_ties_broken_by_lower_item_index(n):
    k = 20
    g = torch.Generator().manual_seed(n)
    _check(torch.randint(0, 4, (8, n), generator=g).float(), k)  # heavy ties everywhere
    _check(torch.zeros(2, n), k)  # one big tie: items 0..19
    scores = torch.randn(6, n, generator=g)
    scores[:, 7] = scores[:, 3] = scores[:, n - 1] = 10.0  # equal leaders: 3, 7, n-1 in that order
    scores[:, 500 % n] = scores[:, 11] = scores[:, 1] = 9.0
    scores[1, :] = torch.randint(0, 100, (n,), generator=g).float()  # ties around the cut-off
    _, indices = _check(scores, k)
    assert indices[0, :3].tolist() == [3, 7, n - 1]


def test_tie_inside_one_chunk_at_the_cut_off():
    # 19 distinct leaders in distinct chunks, then two equal scores in one chunk for the last place: the chunk
    # choice is clear, the candidate choice is not, and the lower index must win
    n, k = 5003, 20
    c = chunk_size(n, k)
    scores = torch.rand(1, n) * 0.1
    scores[0, torch.arange(19) * 3 * c] = torch.arange(100.0, 119.0)
    scores[0, 40 * c + 5] = scores[0, 40 * c + 2] = 50.0
    _, indices = _check(scores, k)
    assert indices[0, -1] == 40 * c + 2


def test_mostly_masked_rows():
    n, k = 2000, 20
    scores = torch.full((3, n), float("-inf"))
    scores[0, 1999] = 1.0  # the ragged tail chunk holds the only finite score
    scores[1, :5] = 2.0
    values, indices = _check(scores, k)  # fewer than k finite scores: the rest are -inf, indices valid
    assert indices[0, 0] == 1999 and set(indices[1, :5].tolist()) == {0, 1, 2, 3, 4}
    assert torch.isinf(values[0, 1:]).all()


def test_nan_surfaces_and_bad_k():
    scores = torch.randn(2, 3000)
    scores[1, 1234] = float("nan")
    values, indices = topk(scores, 10)
    assert torch.isnan(values[1, 0]) and indices[1, 0] == 1234 and not torch.isnan(values[0]).any()
    with pytest.raises(ValueError, match="k=0"):
        topk(scores, 0)


def test_thread_setting_is_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        topk(torch.randn(4, 40981), 20)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
