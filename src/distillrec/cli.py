"""The ``distillrec`` command."""

from __future__ import annotations

import json
import os
import sys

import click

from distillrec import __version__
from distillrec.pipeline import DEFAULT_METHODS, HETERO_METHODS
from distillrec.utils import DATA_DIR_ENV, DistillrecError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="distillrec")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help=f"where data sets live (default: ${DATA_DIR_ENV}, else ~/.cache/distillrec/data)")
def cli(data_dir: str | None) -> None:
    """Knowledge distillation for recommender systems."""
    if data_dir:
        os.environ[DATA_DIR_ENV] = data_dir


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


def _print_metrics(title: str, metrics: dict) -> None:
    click.echo(title)
    for k, v in metrics.items():
        if not k.startswith("_"):
            click.echo(f"  {k:<14} {v:.4f}" if isinstance(v, float) else f"  {k:<14} {v}")


@cli.command("train")
@click.option("--dataset", "-d", help="registered data set name (see `distillrec data list`)")
@click.option("--model", "-m", help="model name: bpr, lightgcn, neumf, cml, vae, iae, sasrec, nextitnet, pop")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a config key (train.epochs=50, model.embedding_dim=20, or a bare key)")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="run directory to write")
@click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint")
def train_cmd(dataset, model, config_file, overrides, out, resume) -> None:
    """Train one model (teacher or student) and write its run directory."""
    from distillrec.train.runs import train

    run = train(dataset, model, out=out, config_file=config_file, overrides=overrides, resume=resume, echo=_echo)
    results = json.loads((run.path / "results.json").read_text())
    _print_metrics(f"{run.model.name} on {run.dataset.name}: test ({results['protocol']})", results.get("test", {}))
    click.echo(f"run directory: {out}")


@cli.command("distill")
@click.option("--teacher", "-t", type=click.Path(exists=True, file_okay=False),
              help="the teacher's run directory (from `distillrec train`)")
@click.option("--teachers", "teacher_set", type=click.Path(exists=True, file_okay=False),
              help="a teacher-set directory (from `distillrec teachers`): hetcomp, or another method distilling "
                   "the ensemble's ranking")
@click.option("--method", required=True, help="rd, cd, de, rrd, de-rrd, ir-rrd, dcd, hetcomp (`distillrec methods`)")
@click.option("--student", default=None, help="student model name (default: the teacher's; bpr with --teachers)")
@click.option("--student-dim", type=click.IntRange(min=1), default=None,
              help="student size (default: a tenth of the teacher's, φ = 0.1; 6 with --teachers)")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a config key (distill.lambda_rrd=0.1, train.epochs=200, ...)")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="run directory to write")
@click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint")
def distill_cmd(teacher, teacher_set, method, student, student_dim, config_file, overrides, out, resume) -> None:
    """Distil a trained teacher (or a teacher set) into a small student; the checkpoint holds only the student."""
    if (teacher is None) == (teacher_set is None):
        raise click.UsageError("give exactly one of --teacher RUN_DIR (one teacher) and --teachers SET_DIR "
                               "(a teacher set from `distillrec teachers`)")
    if teacher_set is None and method == "hetcomp":
        raise click.UsageError("hetcomp distils a teacher set: train one with `distillrec teachers` and pass "
                               "--teachers SET_DIR")
    if teacher_set is not None:
        from distillrec.teachers import distill_from_teacher_set

        run = distill_from_teacher_set(teacher_set, method=method, out=out, student=student or "bpr",
                                       student_dim=student_dim or 6, config_file=config_file, overrides=overrides,
                                       resume=resume, echo=_echo)
    else:
        from distillrec.train.runs import distill

        run = distill(teacher, method, out=out, student=student, student_dim=student_dim, config_file=config_file,
                      overrides=overrides, resume=resume, echo=_echo)
    results = json.loads((run.path / "results.json").read_text())
    _print_metrics(f"{method} student ({run.model.num_parameters():,} parameters) on {run.dataset.name}: test",
                   results.get("test", {}))
    click.echo(f"run directory: {out}")


@cli.command("methods")
def methods_cmd() -> None:
    """List the distillation methods and models."""
    from distillrec.distill import list_methods
    from distillrec.models import list_models

    click.echo("methods: " + ", ".join(list_methods()))
    click.echo("models:  " + ", ".join(list_models()))


@cli.command("run")
@click.option("--dataset", "-d", default=None, help="registered data set (default: synthetic, or the teacher set's)")
@click.option("--teacher", "-t", default=None,
              help="MODEL:DIM to train (or reuse, by config hash), or a teacher's run directory [default: bpr:64]")
@click.option("--teachers", default=None, metavar="NAMES|DIR",
              help="heterogeneous teachers instead of --teacher: model names (mf,cml,neumf,lightgcn,vae,iae) "
                   "trained into OUT/teachers, or a teacher-set directory from `distillrec teachers`")
@click.option("--teachers-config", type=click.Path(dir_okay=False),
              help="teacher-set YAML for --teachers names (configs/hetcomp/*-teachers.yaml)")
@click.option("--adarec-config", type=click.Path(dir_okay=False), help="NAS YAML for --methods adarec")
@click.option("--student-dim", type=click.IntRange(min=1), default=None,
              help="student size (default: a tenth of the teacher's, at least 4; 6 with --teachers)")
@click.option("--methods", default=None,
              help="comma-separated: student (trained alone), distillation methods, hetcomp (with --teachers), "
                   f"adarec (sequential data) [default: {','.join(DEFAULT_METHODS)}; with --teachers: "
                   f"{','.join(HETERO_METHODS)}]")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(min=1), help="seeds per student")
@click.option("--first-seed", default=1, show_default=True, type=click.IntRange(min=1),
              help="number of the first seed (--seeds 1 --first-seed 3 adds seed 3 to a table)")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config for every model")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a config key everywhere; prefixed with a method (rrd.distill.lambda_rrd=0.01), "
                   "teacher., teachers., trajectory. or adarec. only there")
@click.option("--out", "-o", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
def run_cmd(dataset, teacher, teachers, teachers_config, adarec_config, student_dim, methods, seeds, first_seed,
            config_file, overrides, out) -> None:
    """The main job: teacher(s) → student alone → each KD method → one comparison table, report and plots."""
    from pathlib import Path

    from distillrec.pipeline import Job, JobConfig

    if teacher and teachers:
        raise click.UsageError("give --teacher (one teacher) or --teachers (a teacher set), not both")
    names = tuple(m.strip() for m in methods.split(",") if m.strip()) if methods else None
    cfg = JobConfig(dataset=dataset, teacher=teacher or "bpr:64", student_dim=student_dim, methods=names, seeds=seeds,
                    first_seed=first_seed,
                    out=Path(out), config_file=config_file, overrides=tuple(overrides), teachers=teachers,
                    teachers_config=teachers_config, adarec_config=adarec_config)
    Job(cfg, echo=click.echo).run()


@cli.command("evaluate")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--dataset", "-d", default=None, help="evaluate on another registered data set (same id maps)")
@click.option("--protocol", type=click.Choice(["full", "sampled"]), default=None)
@click.option("--split", type=click.Choice(["test", "valid"]), default="test")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def evaluate_cmd(run_dir, dataset, protocol, split, as_json) -> None:
    """Evaluate a trained run's best checkpoint."""
    from distillrec.train.runs import load_run

    run = load_run(run_dir, dataset=dataset)
    metrics = run.evaluate(split, protocol)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        _print_metrics(f"{run.model.name} on {run.dataset.name} ({split})", metrics)


@cli.command("recommend")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--user", "-u", "users", multiple=True, help="external user id (as in the data file); repeatable")
@click.option("--users-file", type=click.Path(exists=True, dir_okay=False),
              help="a file of external user ids, one per line")
@click.option("--all-users", is_flag=True, help="every user of the data set")
@click.option("--k", "-k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--out", "-o", type=click.Path(dir_okay=False),
              help="write the table user, rank, item, score to a .csv, .parquet or .jsonl file (atomically)")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="users scored at a time")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def recommend_cmd(run_dir, users, users_file, all_users, k, out, batch_size, as_json) -> None:
    """Top-K items per user, in external ids, training items excluded: one user, a list, or every user."""
    from distillrec.train.recommend import check_output_path, read_user_file
    from distillrec.train.runs import load_run

    if sum((bool(users), users_file is not None, all_users)) != 1:
        raise click.UsageError("give --user (repeatable), --users-file or --all-users (one of them)")
    if out:
        check_output_path(out)
    source = ""
    if users_file is not None:
        users, source = read_user_file(users_file), users_file
        if not users:
            raise click.UsageError(f"{users_file}: no user ids in the file")
    run = load_run(run_dir)
    table = run.recommend_many(None if all_users else users, k, batch_size=batch_size, source=source)
    if out:
        from distillrec.train.recommend import write_recommendations

        write_recommendations(table, out)
        click.echo(f"{len(table):,} recommendations for {table['user'].nunique():,} users → {out}", err=True)
    elif as_json:
        click.echo(json.dumps([{"user": u, "item": i, "score": float(s)}
                               for u, i, s in zip(table["user"], table["item"], table["score"])]))
    elif len(users) == 1 and not all_users:
        for rank, item, score in zip(table["rank"], table["item"], table["score"]):
            click.echo(f"{rank:3d}  {item}  {score:.4f}")
    else:
        for user, rank, item, score in zip(table["user"], table["rank"], table["item"], table["score"]):
            click.echo(f"{user}\t{rank}\t{item}\t{score:.4f}")


from distillrec.commands.search import search_cmd  # noqa: E402
from distillrec.commands.stream import stream_cmd  # noqa: E402
from distillrec.commands.teachers import teachers_cmd  # noqa: E402
from distillrec.data.commands import data as data_group  # noqa: E402

for command in (data_group, teachers_cmd, stream_cmd, search_cmd):
    cli.add_command(command)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except DistillrecError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
