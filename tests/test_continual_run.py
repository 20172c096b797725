"""End to end: a tiny 3-block CCD stream writes its outputs; resuming between blocks reproduces the
uninterrupted run; the baselines run; ``stream`` aggregates seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from distillrec.continual import load_stream, resolve_stream_config, run_stream, stream
from distillrec.continual.stream import Stream
from distillrec.utils import DistillrecError

# Small everything: two heterogeneous teachers (LightGCN + Mult-VAE: both update paths), a dim-4 student,
# two epochs per stage, short teacher lists and bags.
TINY = [
    "teachers=[{name: lightgcn, embedding_dim: 16, n_layers: 1, seed: 0}, "
    "{name: vae, embedding_dim: 8, hidden_dims: [16], total_anneal_steps: 0}]",
    "student.embedding_dim=4",
    "teacher_train.epochs=3", "teacher_train.learning_rate=0.01", "teacher_train.eval_every=3",
    "kd_train.epochs=2", "kd_train.eval_every=1", "kd_train.learning_rate=0.01",
    "kd.n_topk=10", "kd.n_interesting=10", "kd.n_uninteresting=20",
    "kd.n_item_topk=10", "kd.n_item_interesting=10", "kd.n_item_uninteresting=20",
    "student_update.train.epochs=2", "student_update.train.eval_every=1",
    "teacher_update.train.epochs=2", "teacher_update.train.eval_every=1", "teacher_update.lwckd.n_clusters=3",
    "student_update.replay.resample_every=1",
    "eval.ks=[10, 20]", "device=cpu",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def tiny_stream() -> Stream:
    return load_stream("synthetic", n_users=120, n_items=80, n_blocks=2)


@pytest.fixture(scope="module")
def ccd_run(tiny_stream: Stream, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    root = tmp_path_factory.mktemp("ccd")
    cfg = resolve_stream_config(overrides=TINY)
    res = run_stream(tiny_stream, "ccd", root / "ccd", cfg, seed=0, base_dir=root / "_base", progress=False,
                     echo=lambda m: None)
    return res, root / "ccd", root


def test_ccd_stream_end_to_end(ccd_run, tiny_stream: Stream) -> None:
    _, out, _ = ccd_run
    for name in ("results.json", "report.md", "r_heatmap.png", "la_ra.png", "state.json", "config.yaml",
                 "state/block2.pt", "blocks/D1/student/log.jsonl", "blocks/D2/teacher1-vae/log.jsonl"):
        assert (out / name).exists(), name
    assert not (out / "state" / "block1.pt").exists()  # only the latest block's models are kept
    assert not list(out.glob("blocks/*/*/done.pt"))  # finished-stage weights go once the block state is saved
    saved = json.loads((out / "results.json").read_text())
    assert saved["method"] == "ccd" and saved["blocks_done"] == 3
    for role in ("teacher", "student"):
        e = saved["models"][role]
        assert [len(row) for row in e["r"]["recall@20"]] == [1, 2, 3]
        assert all(0.0 <= v <= 1.0 for row in e["r"]["ndcg@10"] for v in row)
        s = e["summary"]["recall@20"]
        assert 0.0 < s["LA"] <= 1.0 and 0.0 < s["RA"] <= 1.0
        assert s["H"] == pytest.approx(2 * s["LA"] * s["RA"] / (s["LA"] + s["RA"]))
        assert e["new_users"]["recall@20"][0] is None and e["new_users"]["recall@20"][2] is not None
    nu, ni = tiny_stream.sizes(2)
    assert saved["models"]["student"]["parameters"][-1] == (nu + ni) * 4  # grown with the stream
    assert saved["models"]["student"]["parameters"][0] == sum(tiny_stream.sizes(0)) * 4
    stages = json.loads((out / "state.json").read_text())["blocks"][1]["stages"]
    assert stages["student"]["n_replay"] > 0 and stages["teachers"]["teacher0-lightgcn"]["n_replay"] > 0
    log = [json.loads(x) for x in (out / "blocks/D1/teacher0-lightgcn/log.jsonl").read_text().splitlines()]
    assert {"base", "lwc", "cluster", "replay"} <= set(log[0]["loss"])
    vae_log = json.loads((out / "blocks/D1/teacher1-vae/log.jsonl").read_text().splitlines()[0])
    assert "kl_prev" in vae_log["loss"]
    assert "| student |" in (out / "report.md").read_text()


def test_resume_between_blocks(ccd_run, tiny_stream: Stream) -> None:
    full, _, root = ccd_run
    cfg = resolve_stream_config(overrides=TINY)
    out = root / "interrupted"
    part = run_stream(tiny_stream, "ccd", out, cfg, seed=0, base_dir=root / "_base", stop_after=1, progress=False,
                      echo=lambda m: None)
    assert part["blocks_done"] == 2 and not (out / "results.json").exists()
    with pytest.raises(DistillrecError, match="resume"):
        run_stream(tiny_stream, "ccd", out, cfg, seed=0, echo=lambda m: None)
    with pytest.raises(DistillrecError, match="another method"):
        run_stream(tiny_stream, "finetune", out, cfg, seed=0, resume=True, echo=lambda m: None)
    res = run_stream(tiny_stream, "ccd", out, cfg, seed=0, base_dir=root / "_base", resume=True, progress=False,
                     echo=lambda m: None)
    assert res["blocks_done"] == 3 and (out / "results.json").exists()
    for role in ("teacher", "student"):
        assert res["models"][role]["r"] == full["models"][role]["r"]  # resumed = uninterrupted


@pytest.mark.parametrize("method", ["finetune", "lwckd", "retrain", "once"])
def test_baselines(method: str, ccd_run, tiny_stream: Stream) -> None:
    full, _, root = ccd_run
    cfg = resolve_stream_config(overrides=TINY)
    # blocks D0 (shared with the ccd run) and D1: every code path of the method, half the time
    res = run_stream(tiny_stream, method, root / method, cfg, seed=0, base_dir=root / "_base", progress=False,
                     echo=lambda m: None, stop_after=1)
    blocks = json.loads((root / method / "state.json").read_text())["blocks"]
    assert "reused_from" in blocks[0]["stages"]
    for role in ("teacher", "student"):
        r = res["models"][role]["r"]["recall@20"]
        assert r[0] == full["models"][role]["r"]["recall@20"][0]
        assert [len(row) for row in r] == [1, 2]
        assert all(math.isfinite(v) for row in r for v in row)
    if method == "once":
        assert blocks[1]["stages"] == {}
    if method == "retrain":  # everything retrained on D0 ∪ D1
        assert set(blocks[1]["stages"]) == {"teacher0-lightgcn", "teacher1-vae", "kd"}
    if method == "lwckd":
        log = (root / method / "blocks/D1/student/log.jsonl").read_text()
        assert '"lwc"' in log and '"replay"' not in log


def test_stream_function_aggregates_seeds(tmp_path: Path) -> None:
    over = [*TINY, "stream.n_blocks=2", "stream.dataset={n_users: 100, n_items: 60}", "teacher_train.epochs=1",
            "kd.n_uninteresting=10", "kd.n_item_uninteresting=10",
            "kd_train.epochs=1"]
    agg = stream("synthetic", "once", seeds=2, out=tmp_path / "once", overrides=over, echo=lambda m: None,
                 progress=False)
    assert agg["seeds"] == [0, 1]
    s = agg["models"]["student"]["recall@20"]
    assert set(s) == {"LA", "RA", "H", "r_mean"} and s["LA"]["std"] >= 0
    assert (tmp_path / "once" / "seed1" / "results.json").exists() and (tmp_path / "_base").is_dir()
    assert "± " in (tmp_path / "once" / "report.md").read_text()
    with pytest.raises(DistillrecError, match="unknown stream method"):
        stream("synthetic", "nope", out=tmp_path / "x", overrides=over)
