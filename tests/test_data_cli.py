import json

from click.testing import CliRunner

from distillrec.data.commands import data
from distillrec.utils import DistillrecError


def test_describe_json_matches_source_counts(data_dir):
    result = CliRunner().invoke(data, ["describe", "lastfm", "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert (stats["n_users"], stats["n_items"], stats["n_interactions"]) == (1090, 3646, 52551)
    assert stats["n_test"] == stats["n_valid"] == 1090 and stats["load_seconds"] >= 0


def test_describe_text_and_list(data_dir):
    result = CliRunner().invoke(data, ["describe", "gowalla-stream", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "users 29,858   items 40,988" in result.output
    assert "gowalla-stream/D0: train/valid/test 417,977 / 47,398 / 47,409 pairs" in result.output
    listing = CliRunner().invoke(data, ["list"])
    assert listing.exit_code == 0 and "citeulike-loo" in listing.output


def test_describe_a_file_and_an_unknown_name(tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text("user,item\n" + "\n".join(f"u{u},i{i}" for u in range(5) for i in range(u, u + 6)) + "\n")
    result = CliRunner().invoke(data, ["describe", str(f), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n_interactions"] == 30
    result = CliRunner().invoke(data, ["describe", "nope"])
    assert isinstance(result.exception, DistillrecError) and "known data sets" in str(result.exception)


def test_registered_in_the_main_cli():
    from distillrec.cli import cli

    assert "data" in cli.commands
