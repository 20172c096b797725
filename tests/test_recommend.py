"""Batch recommendation (``Run.recommend_many``, ``distillrec recommend``): the top-K against a brute-force
ranking, training items excluded, external ids, batching that does not change the answer, the output files,
and the errors that name the file and line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from distillrec.cli import cli
from distillrec.config import resolve_config
from distillrec.train.recommend import write_recommendations
from distillrec.train.runs import train
from distillrec.utils import DistillrecError
from tests.helpers import planted_dataset

FAST = ["model.embedding_dim=8", "train.epochs=3", "train.batch_size=256", "train.valid_metric=recall@10"]


@pytest.fixture(scope="module")
def run():
    ds = planted_dataset()
    return train(ds, config=resolve_config(dataset="planted", model="bpr", overrides=FAST), progress=False)


def _brute_force(run, user: int, k: int) -> list[str]:
    with torch.no_grad():
        scores = run.model.full_scores(torch.tensor([user]))[0].numpy().astype(np.float64)
    scores[run.dataset.train[user].indices] = -np.inf
    order = np.lexsort((np.arange(len(scores)), -scores))  # best first, ties by lower internal id
    return [run.dataset.item_ids[i] for i in order[:k] if np.isfinite(scores[i])]


def test_top_k_matches_brute_force_and_excludes_training_items(run):
    table = run.recommend_many(["u0", "u7", "u42"], k=5, progress=False)
    assert list(table.columns) == ["user", "rank", "item", "score"]
    assert table["user"].tolist() == ["u0"] * 5 + ["u7"] * 5 + ["u42"] * 5
    assert table["rank"].tolist() == [1, 2, 3, 4, 5] * 3
    for ext, internal in (("u0", 0), ("u7", 7), ("u42", 42)):
        rows = table[table["user"] == ext]
        assert rows["item"].tolist() == _brute_force(run, internal, 5)
        seen = {f"i{i}" for i in run.dataset.train[internal].indices}
        assert not seen & set(rows["item"])
        assert np.all(np.diff(rows["score"].to_numpy()) <= 0)


def test_batching_does_not_change_the_answer_and_all_users_are_covered(run):
    whole = run.recommend_many(None, k=4, progress=False)
    assert len(whole) == 4 * run.dataset.n_users
    pieces = run.recommend_many(None, k=4, batch_size=7, progress=False)
    pd.testing.assert_frame_equal(whole, pieces)


def test_fewer_rows_when_fewer_unseen_items_than_k(run):
    n_unseen = run.dataset.n_items - run.dataset.train[3].nnz
    table = run.recommend_many(["u3"], k=run.dataset.n_items, progress=False)
    assert len(table) == n_unseen and np.isfinite(table["score"]).all()
    assert run.recommend("u3", k=run.dataset.n_items) == list(zip(table["item"], table["score"].astype(float)))


def test_unknown_user_names_its_source_line(run):
    with pytest.raises(DistillrecError, match=r"users.txt, line 2: user 'nobody' is not in"):
        run.recommend_many(["u1", "nobody"], source="users.txt")


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_output_files_round_trip(run, tmp_path, suffix):
    table = run.recommend_many(["u1", "u2"], k=3, progress=False)
    path = write_recommendations(table, tmp_path / f"recs{suffix}")
    back = {".csv": lambda p: pd.read_csv(p, dtype={"user": str, "item": str}),
            ".parquet": pd.read_parquet,
            ".jsonl": lambda p: pd.read_json(p, lines=True, dtype={"user": str, "item": str})}[suffix](path)
    assert back["user"].tolist() == table["user"].tolist() and back["item"].tolist() == table["item"].tolist()
    assert back["rank"].tolist() == table["rank"].tolist()
    np.testing.assert_allclose(back["score"].to_numpy(), table["score"].to_numpy(), rtol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == [f"recs{suffix}"]  # no temporary file left behind
    with pytest.raises(DistillrecError, match=r"recs.txt: unknown output format '.txt'"):
        write_recommendations(table, tmp_path / "recs.txt")


def test_cli_one_user_a_file_and_every_user(tmp_path):
    runner = CliRunner()
    out = tmp_path / "r"
    res = runner.invoke(cli, ["train", "--dataset", "synthetic", "--model", "bpr", "--out", str(out),
                              "--set", "dataset.n_users=60", "--set", "dataset.n_items=40", "--set", "train.epochs=2"])
    assert res.exit_code == 0, res.output

    res = runner.invoke(cli, ["recommend", "--run", str(out), "--user", "3", "--k", "4", "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.output)) == 4

    users = tmp_path / "users.txt"
    users.write_text("# users to serve\n3\n\n5\n")
    res = runner.invoke(cli, ["recommend", "--run", str(out), "--users-file", str(users), "-k", "2"])
    assert res.exit_code == 0, res.output
    pairs = [line.split("\t")[:2] for line in res.output.splitlines()]
    assert pairs == [["3", "1"], ["3", "2"], ["5", "1"], ["5", "2"]]

    csv = tmp_path / "all.csv"
    res = runner.invoke(cli, ["recommend", "--run", str(out), "--all-users", "-k", "3", "--out", str(csv)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(csv)
    assert len(table) == 3 * 60 and table["user"].nunique() == 60

    users.write_text("3\nghost\n")
    res = runner.invoke(cli, ["recommend", "--run", str(out), "--users-file", str(users)])
    assert res.exit_code != 0 and f"{users}, line 2: user 'ghost'" in str(res.exception)
    res = runner.invoke(cli, ["recommend", "--run", str(out), "--user", "3", "--all-users"])
    assert res.exit_code != 0 and "one of them" in res.output
