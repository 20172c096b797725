"""Every method through the real training loop (``distillrec.train.runs.train`` → ``distill``) on a catalogue of
200 items, where the default lists (N = 500, K = L = 40) do not fit and must be cut with warnings."""

import json
import math
import warnings

import pytest

from distillrec.config import resolve_config
from distillrec.data import load_dataset
from distillrec.train.runs import distill, train

FAST = ["train.epochs=2", "train.batch_size=1024", "train.eval_every=2", "train.learning_rate=0.01"]
CASES = [
    ("rd", [], {"rd"}),
    ("cd", [], {"cd"}),
    ("de", [], {"de"}),
    ("rrd", [], {"rrd"}),
    ("rrd", ["distill.sampling=top"], {"rrd"}),
    ("de-rrd", [], {"de", "rrd"}),
    ("ir-rrd", [], {"rrd", "ir_rrd"}),
    ("dcd", [], {"ucd", "icd"}),
    ("dcd", ["distill.sampling=top", "distill.lambda_rkd=1e-3"], {"ucd", "icd", "rrd"}),
]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    ds = load_dataset("synthetic", n_users=300, n_items=200)
    assert ds.n_items == 200 and ds.train.getnnz(axis=1).max() > 200 - 500
    cfg = resolve_config(dataset="synthetic", model="bpr", overrides=["model.embedding_dim=16", *FAST])
    return train(ds, config=cfg, out=tmp_path_factory.mktemp("teacher"), progress=False)


@pytest.mark.parametrize(("method", "sets", "terms"), CASES)
def test_every_method_trains_on_a_200_item_catalogue(teacher, tmp_path, method, sets, terms):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = distill(teacher, method, student_dim=4, overrides=[*FAST, *sets], out=tmp_path / method,
                      progress=False)
    if "rrd" in terms:  # a bag of 40 outside train ∪ top-500 cannot fit 200 items: the lists are cut, and said so
        assert any("cut" in str(w.message) for w in caught), [str(w.message) for w in caught]
    log = [json.loads(line) for line in (tmp_path / method / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert set(log[-1]["loss"]) == {"base"} | terms
    assert all(math.isfinite(v) for r in log for v in r["loss"].values())
    assert run.evaluate("test")["ndcg@20"] > 0
