"""The HetComp, CCD and AdaRec commands end to end on tiny synthetic data, through the command line:
``teachers``, ``distill --teachers``, ``run --teachers`` / ``run --methods adarec``, ``stream``, ``search``,
and their error cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from distillrec.cli import cli
from distillrec.distill.knowledge import KnowledgeSpec
from distillrec.pipeline import split_sets, teacher_specs
from distillrec.teachers import best_member, ensemble_knowledge, load_teacher_set
from distillrec.utils import DistillrecError

# 200 users × 150 items, BPR-MF and LightGCN teachers of dim 16, 2-checkpoint trajectories of top-20 lists.
DATA = ["dataset.n_users=200", "dataset.n_items=150"]
TRAIN = ["train.epochs=3", "train.eval_every=1", "train.batch_size=512"]
TRAJECTORY = ["trajectory.topk=20", "trajectory.k_checkpoints=2", "trajectory.queue_len=2"]
SEQ = ["dataset.sequences=true", "dataset.n_users=80", "dataset.n_items=40", "train.epochs=2", "train.eval_every=1"]


def sets(*groups: list[str]) -> list[str]:
    return [arg for group in groups for s in group for arg in ("--set", s)]


def invoke(*args: str) -> object:
    res = CliRunner().invoke(cli, [str(a) for a in args])
    return res


def ok(*args: str) -> object:
    res = invoke(*args)
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    return res


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# -- helpers of the job -------------------------------------------------------------------------------------
def test_set_routing_and_teacher_names():
    common, routed = split_sets(["train.epochs=3", "rrd.distill.lambda_rrd=0.1", "teachers.model.embedding_dim=16",
                                 "epochs=2", "trajectory.topk=20"], ("rrd", "teachers", "trajectory"))
    assert common == ["train.epochs=3", "epochs=2"]
    assert routed == {"rrd": ["distill.lambda_rrd=0.1"], "teachers": ["model.embedding_dim=16"],
                      "trajectory": ["topk=20"]}
    assert teacher_specs(["mf", "cml"]) == {"mf": {"model": {"name": "bpr"}}, "cml": {"model": {"name": "cml"}}}
    preset = yaml.safe_load(Path("configs/hetcomp/synthetic-teachers.yaml").read_text())["teachers"]
    picked = teacher_specs(["mf", "gnn", "vae"], preset)  # by model (mf = bpr, vae) or by the preset's name
    assert list(picked) == ["MF", "GNN", "AE"] and picked["GNN"]["model"]["n_layers"] == 2
    with pytest.raises(DistillrecError, match="no teacher 'sasrec'"):
        teacher_specs(["sasrec"], preset)
    with pytest.raises(DistillrecError, match="twice"):
        teacher_specs(["mf", "mf"])


# -- HetComp: the main job with a teacher set, then the set's other uses -------------------------------------
@pytest.fixture(scope="module")
def hetero_job(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hetero") / "job"
    # no --methods: with --teachers the default is HetComp's comparison, student,rrd,dcd,hetcomp
    ok("run", "--teachers", "mf,lightgcn", "--student-dim", "4", "--out", out,
       *sets(DATA, TRAIN, TRAJECTORY, ["teachers.model.embedding_dim=16", "hetcomp.distill.dkc_every=1"]))
    return out


def test_run_with_a_teacher_set(hetero_job: Path):
    summary = json.loads((hetero_job / "results.json").read_text())
    rows = {r["name"]: r for r in summary["rows"]}
    assert list(rows) == ["teacher:mf", "teacher:lightgcn", "ensemble", "student", "rrd@best", "rrd", "dcd",
                          "hetcomp"]
    assert summary["metrics"] == ["recall@10", "ndcg@10", "recall@50", "ndcg@50"]  # HetComp's K = 10, 50
    assert rows["teacher:mf"]["parameters"] == rows["teacher:lightgcn"]["parameters"] == (200 + 150) * 16
    assert rows["ensemble"]["parameters"] == 2 * (200 + 150) * 16  # serving cost: every member
    assert rows["ensemble"]["of_teacher"] == 1.0  # "% teacher" is relative to the ensemble
    for name in ("student", "rrd@best", "rrd", "dcd", "hetcomp"):
        assert rows[name]["parameters"] == (200 + 150) * 4
        assert 0 < rows[name]["recall@50"] <= 1
    assert "vs_student" in rows["hetcomp"] and "vs_student" not in rows["ensemble"]
    manifest = json.loads((hetero_job / "teachers" / "teacher_set.json").read_text())
    assert [t["name"] for t in manifest["teachers"]] == ["mf", "lightgcn"] and manifest["trajectory"]["topk"] == 20
    rrd = yaml.safe_load((hetero_job / "rrd" / "seed-1" / "config.yaml").read_text())
    assert rrd["distill"]["sampling"] == "top" and rrd["model"] == {"name": "bpr", "embedding_dim": 4}
    hetcomp = yaml.safe_load((hetero_job / "hetcomp" / "seed-1" / "config.yaml").read_text())
    assert hetcomp["distill"]["n_topk"] == 20  # capped at the set's K_e
    report = (hetero_job / "report.md").read_text()
    assert "| hetcomp |" in report and "share of the ensemble's" in report


def test_single_teacher_kd_takes_the_best_teacher_on_valid(hetero_job: Path):
    ts = load_teacher_set(hetero_job / "teachers")
    valid = {m["name"]: m["valid"]["recall@50"] for m in ts.manifest["teachers"]}
    best = best_member(ts, "recall@50")["name"]
    assert valid[best] == max(valid.values())
    # rrd@best read its lists from that teacher alone (its knowledge cache), not from the ensemble
    assert list((hetero_job / "teachers" / best / "knowledge").glob("*"))
    other = next(n for n in valid if n != best)
    assert not (hetero_job / "teachers" / other / "knowledge").exists()
    with pytest.raises(DistillrecError, match="no validation hit@3"):
        best_member(ts, "hit@3")


def test_ensemble_knowledge_is_the_ensembles_ranking(hetero_job: Path):
    ts = load_teacher_set(hetero_job / "teachers")
    ensemble = ts.ensemble()
    known = ensemble_knowledge(ensemble, KnowledgeSpec(n_user_topk=15, n_item_topk=10))
    scores = ensemble.scorer()(torch.arange(ts.dataset.n_users))
    train = torch.from_numpy(ts.dataset.train.toarray()).bool()
    scores[train] = float("-inf")
    # the lists hold the top scores of the ensemble (ties aside): compare the values, not the ids
    assert torch.allclose(scores.gather(1, known.user_topk), scores.topk(15, dim=1).values)
    assert torch.allclose(scores.T.gather(1, known.item_topk), scores.T.topk(10, dim=1).values)
    with pytest.raises(DistillrecError, match="representations"):
        ensemble_knowledge(ensemble, KnowledgeSpec(reprs=True))


def test_distill_from_the_teacher_set(hetero_job: Path, tmp_path: Path):
    common = ["--teachers", hetero_job / "teachers", "--student-dim", "4", *sets(TRAIN)]
    ok("distill", "--method", "dcd", "--out", tmp_path / "dcd", *common)
    results = json.loads((tmp_path / "dcd" / "results.json").read_text())
    assert results["parameters"] == (200 + 150) * 4 and 0 < results["test"]["recall@50"] <= 1
    res = ok("distill", "--method", "hetcomp", "--out", tmp_path / "hetcomp", *common,
             *sets(["distill.n_topk=20", "distill.n_ranked=20", "distill.discrepancy_k=20"]))
    assert "hetcomp student (1,400 parameters)" in res.output
    assert json.loads((tmp_path / "hetcomp" / "results.json").read_text())["model"] == "bpr"


def test_distill_needs_exactly_one_teacher_source(hetero_job: Path, tmp_path: Path):
    run_dir = hetero_job / "teachers" / "mf"
    both = invoke("distill", "--teacher", run_dir, "--teachers", hetero_job / "teachers", "--method", "rrd",
                  "--out", tmp_path / "x")
    assert both.exit_code == 2 and "exactly one of --teacher" in both.output
    neither = invoke("distill", "--method", "rrd", "--out", tmp_path / "x")
    assert neither.exit_code == 2 and "exactly one of --teacher" in neither.output
    single = invoke("distill", "--teacher", run_dir, "--method", "hetcomp", "--out", tmp_path / "x")
    assert single.exit_code == 2 and "--teachers SET_DIR" in single.output
    assert not (tmp_path / "x").exists()


def test_teachers_command_and_resume(tmp_path: Path):
    out = tmp_path / "set"
    args = ["teachers", "--dataset", "synthetic", "--teachers", "mf,lightgcn", "--out", out,
            *sets(DATA, ["train.epochs=2", "train.batch_size=512", "model.embedding_dim=8"], TRAJECTORY)]
    res = ok(*args)
    assert "ensemble" in res.output and "valid ndcg@20" in res.output
    summary = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in summary["rows"]] == ["mf", "lightgcn", "ensemble"]
    assert summary["rows"][0]["parameters"] == (200 + 150) * 8
    assert summary["rows"][2]["parameters"] == 2 * (200 + 150) * 8
    assert 0 < summary["rows"][2]["test"]["recall@20"] <= 1
    for name in ("teacher_set.json", "report.md", "mf/trajectory.pt", "lightgcn/checkpoints/best.pt"):
        assert (out / name).exists(), name
    again = invoke(*args)
    assert isinstance(again.exception, DistillrecError) and "--resume" in str(again.exception)
    resumed = ok(*args, "--resume")
    assert resumed.output.count("reusing") == 2


def test_run_refuses_misplaced_methods(tmp_path: Path):
    res = invoke("run", "--methods", "student,hetcomp", "--out", tmp_path / "job", *sets(DATA))
    assert isinstance(res.exception, DistillrecError) and "--teachers" in str(res.exception)
    res = invoke("run", "--teachers", "mf,cml", "--methods", "student,de", "--out", tmp_path / "job", *sets(DATA))
    assert isinstance(res.exception, DistillrecError) and "representations" in str(res.exception)
    res = invoke("run", "--methods", "student,rrd@best", "--out", tmp_path / "job", *sets(DATA))
    assert isinstance(res.exception, DistillrecError) and "best teacher of a teacher set" in str(res.exception)
    res = invoke("run", "--teachers", "mf,cml", "--methods", "hetcomp@best", "--out", tmp_path / "job", *sets(DATA))
    assert isinstance(res.exception, DistillrecError) and "only a distillation method" in str(res.exception)
    res = invoke("run", "--teacher", "bpr:16", "--teachers", "mf,cml", "--out", tmp_path / "job")
    assert res.exit_code == 2 and "not both" in res.output
    assert not (tmp_path / "job").exists()  # every refusal comes before any training


# -- AdaRec ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seq_job(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seq") / "job"
    ok("run", "--dataset", "synthetic", "--teacher", "nextitnet:16", "--methods", "student,adarec",
       "--student-dim", "8", "--out", out, *sets(SEQ, ["teacher.model.max_len=10", "adarec.model.n_cells=2"]))
    return out


def test_run_adarec_on_sequences(seq_job: Path):
    rows = {r["name"]: r for r in json.loads((seq_job / "results.json").read_text())["rows"]}
    assert list(rows) == ["teacher", "student", "adarec"]
    assert 0 < rows["adarec"]["ndcg@20"] <= 1 and "vs_student" in rows["adarec"]
    assert rows["adarec"]["parameters"] < rows["teacher"]["parameters"]
    arch = json.loads((seq_job / "adarec" / "seed-1" / "architecture.json").read_text())
    assert len(arch["genotype"]) == len(arch["edges"]) == 6  # 3 intermediate nodes: 1 + 2 + 3 edges
    nas_cfg = yaml.safe_load((seq_job / "adarec" / "seed-1" / "config.yaml").read_text())
    assert nas_cfg["model"]["embedding_dim"] == 8 and nas_cfg["search"]["epochs"] == 2  # train.* reach both stages
    # the same job again reuses the search; another cost weight for it is refused, not answered with the old row
    args = ["run", "--dataset", "synthetic", "--teacher", "nextitnet:16", "--methods", "adarec", "--student-dim", "8",
            "--out", seq_job, *sets(SEQ, ["teacher.model.max_len=10", "adarec.model.n_cells=2"])]
    assert "adarec (dim 8, seed 1): reusing" in ok(*args).output
    res = invoke(*args, "--set", "adarec.method.beta=0.5")
    assert isinstance(res.exception, DistillrecError) and "method.beta: 1.0 → 0.5" in str(res.exception)


def test_search_command(seq_job: Path, tmp_path: Path):
    teacher = next(seq_job.glob("teacher-nextitnet-*"))
    res = ok("search", "--teacher", teacher, "--out", tmp_path / "nas",
             *sets(["search.epochs=1", "retrain.epochs=1", "model.n_cells=2", "model.embedding_dim=8"]))
    assert "discovered architecture:" in res.output and "node 3 =" in res.output
    text = (tmp_path / "nas" / "architecture.txt").read_text()
    assert text.startswith("cell (shared by 2 cells)")
    assert (tmp_path / "nas" / "cells.png").stat().st_size > 1000
    rows = json.loads((tmp_path / "nas" / "results.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["teacher", "adarec"] and 0 <= rows[1]["test"]["ndcg@10"] <= 1


def test_adarec_needs_sequences(tmp_path: Path):
    res = invoke("run", "--teacher", "bpr:16", "--methods", "student,adarec", "--out", tmp_path / "job", *sets(DATA))
    assert isinstance(res.exception, DistillrecError) and "sequential teacher" in str(res.exception)
    res = invoke("run", "--teacher", "nextitnet:16", "--methods", "adarec", "--out", tmp_path / "job", *sets(DATA))
    assert isinstance(res.exception, DistillrecError) and "sequential data set" in str(res.exception)
    assert not (tmp_path / "job").exists()  # refused before any training


# -- CCD ------------------------------------------------------------------------------------------------------
TINY_STREAM = [
    "teachers=[{name: bpr, embedding_dim: 16, seed: 0}, {name: bpr, embedding_dim: 16, seed: 1}]",
    "student.embedding_dim=4", "teacher_train.epochs=2", "teacher_train.learning_rate=0.01",
    "teacher_train.eval_every=2", "kd_train.epochs=1", "kd.n_topk=10", "kd.n_interesting=10",
    "kd.n_uninteresting=20", "kd.n_item_topk=10", "kd.n_item_interesting=10", "kd.n_item_uninteresting=20",
    "student_update.train.epochs=1", "teacher_update.train.epochs=1", "teacher_update.lwckd.n_clusters=3",
    "eval.ks=[10, 20]", "device=cpu", "stream.n_blocks=2", "stream.dataset={n_users: 120, n_items: 80}",
]


def test_stream_command(tmp_path: Path):
    out = tmp_path / "streams" / "ccd"
    args = ["stream", "--dataset", "synthetic", "--method", "ccd", "--out", out, *sets(TINY_STREAM)]
    res = ok(*args)
    assert res.output.count("block D") >= 3 and "H-mean" in res.output
    results = json.loads((out / "results.json").read_text())
    assert results["n_blocks"] == results["blocks_done"] == 3 and len(results["timing"]) == 3
    for role in ("teacher", "student"):
        r = results["models"][role]["r"]["recall@20"]
        assert [len(row) for row in r] == [1, 2, 3]  # after block k: blocks 0..k
        assert all(0 <= v <= 1 for row in r for v in row)
    for name in ("report.md", "r_heatmap.png", "la_ra.png", "state.json"):
        assert (out / name).exists(), name
    assert (tmp_path / "streams" / "_base").is_dir()  # block 0 shared with sibling methods
    again = invoke(*args)
    assert isinstance(again.exception, DistillrecError) and "--resume" in str(again.exception)
    resumed = ok(*args, "--resume")  # every block done: nothing retrained, the same table
    assert json.loads((out / "results.json").read_text())["models"] == results["models"]
    assert "resuming ccd after block D2" in resumed.output


def test_stream_rejects_unknown_method(tmp_path: Path):
    res = invoke("stream", "--dataset", "synthetic", "--method", "distil-everything", "--out", tmp_path / "s")
    assert res.exit_code == 2 and "unknown stream method 'distil-everything'" in res.output
    assert "ccd, finetune, retrain, lwckd, once" in res.output
