"""HetComp's teacher ensemble: the importance formula, list merging, top-K, observed lists, accuracy and cost."""

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from distillrec.data.dataset import Dataset
from distillrec.distill.ensemble import MANIFEST, TeacherEnsemble, importance, merge_lists
from distillrec.distill.trajectory import Trajectory, train_hash
from distillrec.utils import DistillrecError


def toy() -> Dataset:
    """2 users × 8 items; user 0 observed {0, 1, 2}, user 1 observed {3}; user 0's test item is 5."""
    train = sp.csr_matrix(np.array([[1, 1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0]], np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1]], np.float32))
    return Dataset("toy", 2, 8, train=train, test=test)


def traj(ds: Dataset, lists, std, obs_rank, obs_std) -> Trajectory:
    return Trajectory(topk=torch.tensor(lists, dtype=torch.int32), rank_std=torch.tensor(std).half(),
                      observed_rank=torch.tensor(obs_rank, dtype=torch.int32),
                      observed_std=torch.tensor(obs_std).half(), epochs=list(range(1, len(lists) + 1)),
                      queue_len=3, queue_topk=6, dataset_fingerprint=ds.fingerprint(), train_hash=train_hash(ds.train))


def two_teachers(ds: Dataset) -> list[Trajectory]:
    # V = 2 checkpoints, K_e = 3. Observed CSR order: (0,0) (0,1) (0,2) (1,3).
    a = traj(ds, lists=[[[3, 4, 5], [0, 1, 2]], [[5, 4, 3], [7, 6, 5]]],
             std=[[[0, 0, 0], [0, 0, 0]], [[0, 0, 50], [0, 10, 0]]],
             obs_rank=[[0, 1, 2, 0], [2, 1, 0, 0]], obs_std=[[0, 0, 0, 0], [0, 0, 0, 0]])
    b = traj(ds, lists=[[[6, 7, 3], [4, 5, 6]], [[4, 6, 7], [6, 7, 4]]],
             std=[[[0, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]],
             obs_rank=[[0, 1, 2, 0], [1, 2, 0, 0]], obs_std=[[0, 0, 0, 0], [0, 0, 0, 0]])
    return [a, b]


def w(r: float, s: float = 0.0) -> float:
    return math.exp(-r / 10) + math.exp(-s / 100)


def test_importance_formula_against_hand_values():
    pos = torch.tensor([0, 1, 4, 3, 7])
    std = torch.tensor([0.0, 20.0, 5.0, 1.0, 0.0])
    got = importance(pos, std, topk=4, tau1=10, tau2=100)
    want = [w(0, 0), w(1, 20), math.exp(-1000) + math.exp(-100), w(3, 1), math.exp(-1000) + math.exp(-100)]
    assert got.tolist() == pytest.approx(want, rel=1e-6, abs=1e-30)
    assert importance(pos, std, topk=4, tau1=50, tau2=100)[1].item() == pytest.approx(
        math.exp(-1 / 50) + math.exp(-0.2), rel=1e-6)


def test_merge_lists_sums_duplicates_and_breaks_ties_by_lower_item():
    items = torch.tensor([[9, 4, 2, 4, 7, 2]])
    weights = torch.tensor([[1.0, 0.5, 0.25, 0.75, 1.0, 1.0]])  # sums: 9→1, 4→1.25, 2→1.25, 7→1
    ids, sums = merge_lists(items, weights, 4)
    assert ids.tolist() == [[2, 4, 7, 9]] and sums.tolist() == [[1.25, 1.25, 1.0, 1.0]]
    with pytest.raises(DistillrecError, match="distinct"):
        merge_lists(items, weights, 5)


def test_ensemble_topk_follows_the_selection():
    ds = toy()
    ens = TeacherEnsemble(two_teachers(ds), ["A", "B"], ds)
    final = ens.topk(3)
    # converged, user 0: A: 5→w(0), 4→w(1), 3→w(2, 50); B: 4→w(0), 6→w(1), 7→w(2)
    e0 = {5: w(0), 4: w(1) + w(0), 3: w(2, 50), 6: w(1), 7: w(2)}
    assert final[0].tolist() == sorted(e0, key=lambda i: (-e0[i], i))[:3]
    # user 1: A: 7→w(0), 6→w(1, 10), 5→w(2); B: 6→w(0), 7→w(1), 4→w(2)
    e1 = {7: w(0) + w(1), 6: w(1, 10) + w(0), 5: w(2), 4: w(2)}
    assert final[1].tolist() == sorted(e1, key=lambda i: (-e1[i], i))[:3]
    # user 0 on teacher A's first checkpoint, B converged: A: 3→w(0), 4→w(1), 5→w(2)
    sel = torch.tensor([[0, 1], [1, 1]])
    e0 = {3: w(0), 4: w(1) + w(0), 5: w(2), 6: w(1), 7: w(2)}
    assert ens.topk(3, sel)[0].tolist() == sorted(e0, key=lambda i: (-e0[i], i))[:3]
    # the dense scorer agrees with the lists
    scores = ens.scorer()(torch.tensor([0, 1]))
    assert scores.shape == (2, 8) and scores[0, 4].item() == pytest.approx(w(1) + w(0), rel=1e-5)
    assert scores[0, :3].abs().max() == 0  # observed items never listed
    with pytest.raises(DistillrecError, match="K_e"):
        ens.topk(4)


def test_observed_lists_are_ranked_by_the_converged_ensemble():
    ds = toy()
    ens = TeacherEnsemble(two_teachers(ds), ["A", "B"], ds)
    items, lengths = ens.observed_lists(2)
    # converged observed ranks of items 0, 1, 2: A (2, 1, 0), B (1, 2, 0) → item 2 first, then 0 = 1 (tie → 0)
    assert items[0].tolist() == [2, 0] and lengths.tolist() == [2, 1]
    assert items[1, 0].item() == 3
    items, _ = ens.observed_lists(3, checkpoint=0)  # first checkpoint: both teachers rank 0, 1, 2
    assert items[0].tolist() == [0, 1, 2]


def test_accuracy_cost_and_teacher_set_loading(tmp_path):
    ds = toy()
    trajs = two_teachers(ds)
    for name, t in zip("AB", trajs):
        t.save(tmp_path / name / "trajectory.pt")
    members = [{"name": "A", "trajectory": "A/trajectory.pt", "model": "bpr", "parameters": 100,
                "latency_ms_per_user": 0.5},
               {"name": "B", "trajectory": "B/trajectory.pt", "model": "vae", "parameters": 300,
                "latency_ms_per_user": 1.5}]
    (tmp_path / MANIFEST).write_text(json.dumps({"teachers": members}))
    ens = TeacherEnsemble.from_teacher_set(tmp_path, ds)
    assert ens.n_teachers == 2 and ens.n_checkpoints == 2 and ens.topk_len == 3
    cost = ens.cost()
    assert cost["parameters"] == 400 and cost["latency_ms_per_user"] == pytest.approx(2.0)
    result = ens.evaluate("test", ks=(1, 2))
    # converged ensemble: user 0 ranks 4, 5, 6, … (test item 5), user 1 ranks 7, 6, … (test item 7)
    assert result.per_user["recall@1"].tolist() == [0.0, 1.0]
    assert result.per_user["recall@2"].tolist() == [1.0, 1.0]
    only_b = TeacherEnsemble.from_teacher_set(tmp_path, ds, teachers=["B"])
    assert only_b.names == ["B"]
    with pytest.raises(DistillrecError, match="no teacher"):
        TeacherEnsemble.from_teacher_set(tmp_path, ds, teachers=["C"])
    (tmp_path / MANIFEST).write_text(json.dumps({"teachers": [{"name": "A"}]}))
    with pytest.raises(DistillrecError, match=r"teachers\[0\] lacks trajectory"):
        TeacherEnsemble.from_teacher_set(tmp_path, ds)
    with pytest.raises(DistillrecError, match=r"teacher_set\.json is missing"):
        TeacherEnsemble.from_teacher_set(tmp_path / "A", ds)
