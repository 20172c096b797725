"""Behaviour: a 3-teacher set trained with trajectories, then a small HetComp student that agrees more with the
ensemble's top-10 than the same student trained alone (same loop, same epochs)."""

import json

import torch

from distillrec.config import resolve_config
from distillrec.data import load_dataset
from distillrec.distill.trajectory import rank_lists
from distillrec.teachers import distill_from_teacher_set, load_teacher_set, train_teacher_set
from distillrec.train.runs import train

TRAIN = {"epochs": 8, "learning_rate": 0.02, "batch_size": 512, "eval_every": 1, "patience": 20,
         "valid_metric": "recall@20", "device": "cpu"}
STUDENT = ["train.epochs=18", "train.learning_rate=0.02", "train.batch_size=512", "train.eval_every=4",
           "train.patience=20", "train.valid_metric=recall@20", "train.topk=[10, 20]", "train.device=cpu"]


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean share of each user's top-10 that the two lists have in common."""
    return (a.unsqueeze(2) == b.unsqueeze(1)).any(dim=2).float().mean().item()


def test_hetcomp_student_agrees_more_with_the_ensemble_than_the_student_alone(tmp_path, one_thread):
    ds = load_dataset("synthetic", n_users=240, n_items=150, n_clusters=6, mean_per_user=16)
    teachers = {"MF": {"model": {"name": "bpr", "embedding_dim": 16, "init_std": 0.1}},
                "GNN": {"model": {"name": "lightgcn", "embedding_dim": 16, "n_layers": 1}},
                "AE": {"model": {"name": "vae", "embedding_dim": 16, "hidden_dims": [32], "total_anneal_steps": 0}}}
    ts = train_teacher_set(ds, tmp_path / "set", teachers=teachers, train=TRAIN,
                           trajectory={"k_checkpoints": 3, "topk": 20, "queue_len": 2})
    manifest = json.loads((tmp_path / "set" / "teacher_set.json").read_text())
    assert ts.manifest == manifest
    assert [t["name"] for t in manifest["teachers"]] == ["MF", "GNN", "AE"]
    for entry in manifest["teachers"]:
        assert len(entry["checkpoint_epochs"]) == 3 and entry["checkpoint_epochs"][-1] == entry["best_epoch"]
        assert (tmp_path / "set" / entry["run_dir"] / "results.json").exists()
    # a second call reuses every finished teacher
    again = train_teacher_set(ds, tmp_path / "set", teachers=teachers, train=TRAIN,
                              trajectory={"k_checkpoints": 3, "topk": 20, "queue_len": 2})
    assert again.manifest["teachers"] == manifest["teachers"]

    ensemble = load_teacher_set(tmp_path / "set", ds).ensemble()
    target = ensemble.topk(10)
    cost = ensemble.cost()
    assert cost["parameters"] == sum(t["parameters"] for t in manifest["teachers"])
    assert ensemble.evaluate("test", ks=(10,)).metrics["recall@10"] > 0

    hetcomp = distill_from_teacher_set(
        tmp_path / "set", dataset=ds, student_dim=4,
        overrides=[*STUDENT, "distill.n_topk=20", "distill.n_ranked=20", "distill.discrepancy_k=20",
                   "distill.dkc_every=3", "distill.alpha=1.0"])
    phases = [r["distill"]["phase"] for r in hetcomp.result.history]
    assert phases[0] == 1 and phases[-1] == 2  # the curriculum reached the permutation phase
    assert "overall" in hetcomp.result.history[0]["loss"] and "rank" in hetcomp.result.history[-1]["loss"]

    cfg = resolve_config(base={"dataset": {"name": ds.name}, "model": {"name": "bpr", "embedding_dim": 4}},
                         overrides=STUDENT)
    alone = train(ds, config=cfg)
    with_kd = agreement(rank_lists(hetcomp.model, ds, 10)[0].long(), target)
    without = agreement(rank_lists(alone.model, ds, 10)[0].long(), target)
    assert with_kd > without + 0.05, (with_kd, without)
