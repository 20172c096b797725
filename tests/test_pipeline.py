"""``distillrec run`` end to end on a small synthetic data set, through the command line."""

import json

from click.testing import CliRunner

from distillrec.cli import cli

SMALL = ["dataset.n_users=300", "dataset.n_items=800", "train.epochs=4", "train.eval_every=1",
         "train.batch_size=512"]


def test_run_end_to_end_and_reuse(tmp_path):
    out = tmp_path / "job"
    args = ["run", "--methods", "student,rrd", "--student-dim", "4", "--teacher", "bpr:16", "--out", str(out)]
    for s in SMALL:
        args += ["--set", s]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "significantly better than the student alone" in res.output
    summary = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in summary["rows"]]
    assert names == ["teacher", "student", "rrd"]
    rows = {r["name"]: r for r in summary["rows"]}
    assert rows["teacher"]["parameters"] == (300 + 800) * 16
    assert rows["student"]["parameters"] == rows["rrd"]["parameters"] == (300 + 800) * 4
    assert {"p_t", "p_wilcoxon", "mean_diff"} <= set(rows["rrd"]["vs_student"])
    assert rows["rrd"]["epoch_time_vs_student"] > 0
    for f in ("report.md", "accuracy_vs_parameters.png", "learning_curves.png"):
        assert (out / f).exists(), f
    assert "| rrd |" in (out / "report.md").read_text()

    # A second invocation reuses every finished model instead of training again.
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert again.exit_code == 0
    assert again.output.count("reusing") == 3
    assert json.loads((out / "results.json").read_text())["rows"][2]["ndcg@20"] == rows["rrd"]["ndcg@20"]

    # A finished student is only reused under the settings it was trained with: another λ for RRD (routed to
    # that method) must not come back as the old row; the error names the run and the key.
    changed = CliRunner().invoke(cli, [*args, "--set", "rrd.distill.lambda_rrd=0.5"])
    assert changed.exit_code != 0
    assert "rrd/seed-1" in str(changed.exception) and "distill.lambda_rrd: (unset) → 0.5" in str(changed.exception)
    assert "student (dim 4, seed 1): reusing" in changed.output  # the student's own settings did not change

    # --first-seed adds one seed to an existing table: the teacher is reused, only student/seed-2 is trained.
    more = ["run", "--methods", "student", "--student-dim", "4", "--teacher", "bpr:16", "--out", str(out),
            "--first-seed", "2", "--set", "dcd.distill.lambda_user=0.01"]  # a table's command, a subset of its methods:
    for s in SMALL:  # the settings routed to a method not run this time are accepted and unused
        more += ["--set", s]
    added = CliRunner().invoke(cli, more, catch_exceptions=False)
    assert added.exit_code == 0, added.output
    assert (out / "student" / "seed-2" / "results.json").exists()
    assert added.output.count("reusing") == 1  # the teacher
    # The table covers every finished sub-run of --out trained under these settings, not only this call's:
    # student seed 1 and rrd seed 1 join it (another process writing to the same --out loses no rows either).
    assert "also in the table: rrd seed 1" in added.output
    assert [(r["name"], r["seeds"]) for r in json.loads((out / "results.json").read_text())["rows"]] == [
        ("teacher", 1), ("student", 2), ("rrd", 1)]
    # One trained under settings other than this call's stays out of it, and the output says why.
    other = CliRunner().invoke(cli, [*more, "--set", "rrd.distill.lambda_rrd=0.5"], catch_exceptions=False)
    assert other.exit_code == 0, other.output
    assert "left out of the table" in other.output and "distill.lambda_rrd: (unset) → 0.5" in other.output
    assert [(r["name"], r["seeds"]) for r in json.loads((out / "results.json").read_text())["rows"]] == [
        ("teacher", 1), ("student", 2)]


def test_seed_dirs_reads_only_numbered_seed_directories(tmp_path):
    from distillrec.report.summary import seed_dirs

    method = tmp_path / "rrd"
    for name in ("seed-10", "seed-2", "seed-x", "seeds-3", "best"):
        (method / name).mkdir(parents=True)
    (method / "seed-4").write_text("a file, not a sub-run")
    found = seed_dirs(method)
    assert list(found) == [2, 10]  # numeric order, not string order
    assert found[10] == method / "seed-10"
    assert seed_dirs(tmp_path / "missing") == {}
