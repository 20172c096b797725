"""``distillrec stream``: one continual method (CCD or a baseline) over a stream of data blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from distillrec.commands import echo_err, format_table, num


def _method(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from distillrec.continual.methods import METHODS

    if value not in METHODS:
        raise click.BadParameter(f"unknown stream method {value!r}; expected one of {', '.join(METHODS)}")
    return value


@click.command("stream")
@click.option("--dataset", "-d", required=True,
              help="a stream data set (yelp-stream, gowalla-stream) or a time-stamped one cut into blocks (ml-100k)")
@click.option("--method", "-m", required=True, callback=_method, help="ccd, finetune, retrain, lwckd or once")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="stream YAML (configs/ccd/*.yaml)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a stream config key (kd_train.epochs=5, teachers.0.embedding_dim=32, stream.n_blocks=3)")
@click.option("--seed", "seeds", multiple=True, type=int,
              help="seed (default 0); repeated, each seed runs in OUT/seed<N> and OUT gets the mean ± std")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="run directory to write")
@click.option("--resume", is_flag=True, help="continue a run in --out after its last finished block")
def stream_cmd(dataset, method, config_file, overrides, seeds, out, resume) -> None:
    """Run a continual method block by block; r(k, j) heat-map, LA/RA/H plot, results.json and report.md.

    Block D0 (the base teachers and student) is shared by the methods whose output folders are siblings
    (through OUT/../_base)."""
    from distillrec.continual import resolve_stream_config, run_stream, stream

    out_dir = Path(out)
    seed_list = list(seeds) or [0]
    if len(seed_list) == 1:
        cfg = resolve_stream_config(config_file, overrides)
        results = run_stream(dataset, method, out_dir, cfg, seed=seed_list[0], resume=resume,
                             base_dir=out_dir.parent / "_base", echo=echo_err)
        click.echo(_table(results))
        click.echo(f"written: {out_dir}/results.json, report.md, r_heatmap.png, la_ra.png")
        return
    agg = stream(dataset, method, seeds=seed_list, out=out_dir, config_file=config_file, overrides=overrides,
                 resume=resume, echo=echo_err)
    click.echo(_table_seeds(agg))
    click.echo(f"written: {out_dir}/results.json, report.md; per seed: {out_dir}/seed<N>/")


def _table(results: dict[str, Any]) -> str:
    """LA/RA/H-mean of the primary metric after the last block, and r(k, k) per block, per model."""
    metric = results["primary"]
    n = results["blocks_done"]
    head = ["model", "LA", "RA", "H-mean", *(f"r(D{k},D{k})" for k in range(n)), "params"]
    body = []
    for role, e in results["models"].items():
        s = e["summary"][metric]
        diag = [row[k] if k < len(row) else None for k, row in enumerate(e["r"][metric])]
        body.append([role, num(s["LA"]), num(s["RA"]), num(s["H"]), *map(num, diag), f"{e['parameters'][-1]:,}"])
    title = f"{results['dataset']}: {results['method']} (seed {results['seed']}), {metric} after block D{n - 1}"
    return title + "\n" + format_table(head, body)


def _table_seeds(agg: dict[str, Any]) -> str:
    metric = agg["primary"]
    head = ["model", "LA", "RA", "H-mean", "params"]
    body = [[role, *(f"{num(e[metric][x]['mean'])} ± {num(e[metric][x]['std'])}" for x in ("LA", "RA", "H")),
             f"{e['parameters']:,}"] for role, e in agg["models"].items()]
    return f"{agg['dataset']}: {agg['method']}, seeds {agg['seeds']}, {metric}\n" + format_table(head, body)
