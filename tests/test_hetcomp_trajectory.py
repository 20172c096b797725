"""HetComp teacher trajectories: rank lists, the rank-std queue, the recorder in the training loop, the store."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from distillrec.config import TrainConfig
from distillrec.data.dataset import Dataset
from distillrec.distill.trajectory import (
    FILENAME,
    Trajectory,
    TrajectoryRecorder,
    _Snapshot,
    queue_rank_std,
    rank_lists,
    store_bytes,
    train_hash,
)
from distillrec.models.bpr import BPR
from distillrec.train.trainer import Trainer
from distillrec.utils import DistillrecError
from tests.helpers import planted_dataset


def tiny() -> Dataset:
    train = sp.csr_matrix(np.array([[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 0]], np.float32))
    return Dataset("tiny", 3, 6, train=train, test=sp.csr_matrix((3, 6)))


def fixed_bpr(ds: Dataset, scores: np.ndarray) -> BPR:
    """A BPR whose full scores equal ``scores`` (user embedding = one-hot rows, item embedding = scores.T)."""
    model = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=ds.n_users))
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.eye(ds.n_users))
        model.item_emb.weight.copy_(torch.as_tensor(scores, dtype=torch.float32).T)
    return model


def test_rank_lists_exclude_train_items_and_rank_observed_items():
    ds = tiny()
    scores = np.array([[5.0, 1.0, 9.0, 3.0, 3.0, 0.0],   # train {0, 2}: top unobserved 3, 4 (tie → lower id), 1
                       [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],   # train {5}
                       [0.0, 7.0, 1.0, 1.0, 2.0, 2.0]])  # train {1}
    top, obs = rank_lists(fixed_bpr(ds, scores), ds, 3)
    assert top.dtype == torch.int32
    assert top.tolist() == [[3, 4, 1], [4, 3, 2], [4, 5, 2]]
    # CSR order: (0,0) (0,2) (1,5) (2,1); user 0 ranks item 2 (9.0) above item 0 (5.0)
    assert obs.tolist() == [1, 0, 0, 0]
    with pytest.raises(DistillrecError, match="unobserved"):
        rank_lists(fixed_bpr(ds, scores), ds, 5)  # user 0 has only 4 unobserved items


def test_queue_rank_std_against_hand_values():
    top = torch.tensor([[7, 3]])
    queue = [torch.tensor([[7, 3, 1]]), torch.tensor([[3, 1, 7]]), torch.tensor([[1, 2, 4]])]
    std = queue_rank_std(top, queue, censor=3)
    # item 7: ranks 0, 2, censored 3 → std of (0, 2, 3); item 3: ranks 1, 0, 3
    assert std[0, 0].item() == pytest.approx(np.std([0, 2, 3]), abs=1e-6)
    assert std[0, 1].item() == pytest.approx(np.std([1, 0, 3]), abs=1e-6)


def random_trajectory(ds: Dataset, v: int, k: int, seed: int = 0) -> Trajectory:
    g = torch.Generator().manual_seed(seed)
    return Trajectory(
        topk=torch.randint(0, ds.n_items, (v, ds.n_users, k), generator=g, dtype=torch.int32),
        rank_std=torch.rand(v, ds.n_users, k, generator=g).half(),
        observed_rank=torch.randint(0, 5, (v, ds.train.nnz), generator=g, dtype=torch.int32),
        observed_std=torch.rand(v, ds.train.nnz, generator=g).half(), epochs=list(range(1, v + 1)),
        queue_len=5, queue_topk=2 * k, dataset_fingerprint=ds.fingerprint(), train_hash=train_hash(ds.train))


def test_store_round_trip_and_size_proportional_to_users_topk_checkpoints(tmp_path):
    sizes = {}
    for n_users, k, v in [(100, 20, 2), (200, 20, 2), (100, 40, 2), (100, 20, 4)]:
        ds = planted_dataset(n_users=n_users, n_items=60, per_user=6, seed=1)
        traj = random_trajectory(ds, v, k)
        path = traj.save(tmp_path / f"t{n_users}-{k}-{v}.pt")
        back = Trajectory.load(path, ds)
        assert torch.equal(back.topk, traj.topk) and torch.equal(back.rank_std, traj.rank_std)
        assert torch.equal(back.observed_rank, traj.observed_rank) and back.epochs == traj.epochs
        assert traj.nbytes() == store_bytes(n_users, ds.train.nnz, v, k)
        sizes[(n_users, k, v)] = (path.stat().st_size, traj.nbytes())
    for file_bytes, tensor_bytes in sizes.values():
        assert tensor_bytes <= file_bytes < tensor_bytes + 8_000  # the tensors plus a small zip header
    # users × K_e × V: doubling any of them doubles the list part (the observed part follows nnz and V)
    lists = {key: key[0] * key[1] * key[2] * 6 for key in sizes}
    assert lists[(200, 20, 2)] == lists[(100, 40, 2)] == lists[(100, 20, 4)] == 2 * lists[(100, 20, 2)]
    # the brief's target: 6 teachers × 4 checkpoints on CiteULike (5,219 users, 100,966 train pairs, K_e=100)
    assert 6 * store_bytes(5219, 100_966, 4, 100) < 200e6


def test_store_rejects_other_data_and_foreign_files(tmp_path):
    ds = planted_dataset(n_users=50, n_items=40, per_user=6)
    path = random_trajectory(ds, 2, 5).save(tmp_path / FILENAME)
    other = planted_dataset(n_users=50, n_items=40, per_user=6, seed=3)  # same ids, another training split
    with pytest.raises(DistillrecError, match="another training split"):
        Trajectory.load(path, other)
    torch.save({"format": "something else"}, tmp_path / "x.pt")
    with pytest.raises(DistillrecError, match="not a distillrec trajectory"):
        Trajectory.load(tmp_path / "x.pt")
    with pytest.raises(DistillrecError, match="not found"):
        Trajectory.load(tmp_path / "missing.pt")


def test_recorder_in_the_training_loop_keeps_k_checkpoints_ending_at_the_best_epoch(tmp_path):
    ds = planted_dataset(n_users=120, n_items=80, per_user=12)
    torch.manual_seed(0)
    model = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=8, init_std=0.1))
    recorder = TrajectoryRecorder(ds, k_checkpoints=3, topk=10, queue_len=3, pool_size=4, start="first")
    cfg = TrainConfig(epochs=9, learning_rate=0.05, batch_size=256, eval_every=1, patience=20, device="cpu")
    result = Trainer(model, ds, cfg, out_dir=tmp_path, progress=False, callbacks=[recorder]).fit()
    traj = Trajectory.load(tmp_path / FILENAME, ds)
    assert traj.n_checkpoints == 3 and traj.topk_len == 10 and traj.queue_topk == 20
    assert traj.epochs[-1] == result.best_epoch
    assert traj.epochs == sorted(set(traj.epochs)) and traj.epochs[0] == 1
    # the pool was thinned (9 records, room for 4): the kept epochs lie on the doubled grid 1, 3, 5, ...
    assert all((e - 1) % 2 == 0 for e in traj.epochs[:-1])
    # no listed item is a training item of its user; rows have distinct items; stds are finite and ≥ 0
    train = torch.as_tensor(ds.train.toarray() > 0)
    listed = traj.topk.long()
    assert not train.gather(1, listed.permute(1, 0, 2).reshape(ds.n_users, -1)).any()
    assert all(len(set(row)) == 10 for row in listed[-1].tolist())
    assert bool((traj.rank_std.float() >= 0).all()) and bool(torch.isfinite(traj.rank_std.float()).all())
    assert traj.rank_std[0].float().max() == 0  # the first recorded epoch had a queue of one
    assert traj.rank_std[-1].float().max() > 0
    # the last checkpoint is the best model: its lists are the best checkpoint's top-10
    best = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=8, init_std=0.1))
    best.load_state_dict(torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)["model"])
    assert torch.equal(rank_lists(best, ds, 10)[0], traj.topk[-1])


def test_an_interrupted_run_resumes_with_the_same_trajectory(tmp_path):
    """Cut a recorded run after epoch 5 (the pool thins at epoch 5); resuming from last.pt gives the very
    trajectory of the uninterrupted run, queue and pool included."""
    ds = planted_dataset(n_users=120, n_items=80, per_user=12)
    cfg = TrainConfig(epochs=9, learning_rate=0.05, batch_size=256, eval_every=1, patience=20, device="cpu")

    class Cut:
        def on_epoch_end(self, trainer, epoch, record):
            if epoch == 6:
                raise KeyboardInterrupt  # last.pt is written after the callbacks: it holds epoch 5

    def run(out, callbacks=(), resume=False):
        torch.manual_seed(0)
        model = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=8, init_std=0.1))
        recorder = TrajectoryRecorder(ds, k_checkpoints=3, topk=10, queue_len=3, pool_size=4)
        Trainer(model, ds, cfg, out_dir=out, progress=False, callbacks=[recorder, *callbacks]).fit(resume=resume)
        return Trajectory.load(out / FILENAME, ds)

    whole = run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", [Cut()])
    assert torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 5
    resumed = run(tmp_path / "cut", resume=True)
    assert resumed.epochs == whole.epochs
    for field in ("topk", "rank_std", "observed_rank", "observed_std"):
        assert torch.equal(getattr(resumed, field), getattr(whole, field)), field
    # other settings than the checkpoint's: a clear error instead of a silently different trajectory
    model = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=8, init_std=0.1))
    other = TrajectoryRecorder(ds, k_checkpoints=3, topk=12, queue_len=3, pool_size=4)
    with pytest.raises(DistillrecError, match="trajectory settings"):
        Trainer(model, ds, cfg, out_dir=tmp_path / "cut", progress=False, callbacks=[other]).fit(resume=True)


def test_default_checkpoints_sit_at_v_over_V_of_the_way_to_the_best_epoch():
    ds = planted_dataset(n_users=30, n_items=40, per_user=6)
    empty = torch.zeros(ds.n_users, 5, dtype=torch.int32)
    snap = lambda e: _Snapshot(e, empty, empty.half(), torch.zeros(ds.train.nnz, dtype=torch.int32),  # noqa: E731
                               torch.zeros(ds.train.nnz).half())
    for start, want in (("interval", [5, 10, 15, 20]), ("first", [1, 7, 14, 20])):
        recorder = TrajectoryRecorder(ds, k_checkpoints=4, topk=5, start=start)
        recorder._pool = [(e - 1, snap(e)) for e in range(1, 20)]  # epochs 1..19 recorded, 20 is the best
        assert recorder.build(snap(20)).epochs == want
    # the fewest records that allow V checkpoints: all of them are used, in order
    recorder = TrajectoryRecorder(ds, k_checkpoints=4, topk=5)
    recorder._pool = [(e - 1, snap(e)) for e in (2, 4, 6)]
    assert recorder.build(snap(8)).epochs == [2, 4, 6, 8]
    with pytest.raises(DistillrecError, match="start"):
        TrajectoryRecorder(ds, topk=5, start="middle")


def test_recorder_needs_enough_epochs_before_the_best():
    ds = planted_dataset(n_users=60, n_items=50, per_user=8)
    model = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4))
    recorder = TrajectoryRecorder(ds, k_checkpoints=4, topk=5)
    cfg = TrainConfig(epochs=2, eval_every=1, device="cpu")
    with pytest.raises(DistillrecError, match="recorded epoch"):
        Trainer(model, ds, cfg, progress=False, callbacks=[recorder]).fit()
    with pytest.raises(DistillrecError, match="topk"):
        TrajectoryRecorder(ds, topk=49)


def test_a_teacher_set_resumes_a_teacher_cut_short(tmp_path, monkeypatch):
    from distillrec.teachers import train_teacher_set

    ds = planted_dataset(n_users=120, n_items=80, per_user=12)
    teachers = {"MF": {"model": {"name": "bpr", "embedding_dim": 8, "init_std": 0.1}}}
    train = {"epochs": 7, "learning_rate": 0.05, "batch_size": 256, "eval_every": 1, "patience": 20,
             "valid_metric": "recall@20", "device": "cpu"}
    kwargs = {"teachers": teachers, "train": train, "trajectory": {"k_checkpoints": 3, "topk": 10, "queue_len": 2}}
    whole = train_teacher_set(ds, tmp_path / "whole", **kwargs)

    record = TrajectoryRecorder.on_epoch_end

    def cut(self, trainer, epoch, rec):
        if epoch == 4:
            raise KeyboardInterrupt
        record(self, trainer, epoch, rec)

    monkeypatch.setattr(TrajectoryRecorder, "on_epoch_end", cut)
    with pytest.raises(KeyboardInterrupt):
        train_teacher_set(ds, tmp_path / "cut", **kwargs)
    monkeypatch.setattr(TrajectoryRecorder, "on_epoch_end", record)
    said = []
    resumed = train_teacher_set(ds, tmp_path / "cut", echo=said.append, **kwargs)
    assert any("resuming" in line for line in said)
    first = [json.loads(line)["epoch"] for line in (tmp_path / "cut" / "MF" / "log.jsonl").read_text().splitlines()]
    assert first == list(range(1, 8))  # epochs 1–3 kept, 4–7 run once
    a, b = (Trajectory.load(t.path / "MF" / FILENAME, ds) for t in (whole, resumed))
    assert a.epochs == b.epochs and torch.equal(a.topk, b.topk) and torch.equal(a.rank_std, b.rank_std)
