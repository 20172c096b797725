"""``distillrec search``: AdaRec — search a student architecture under distillation, derive it, retrain it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from distillrec.commands import echo_err, format_table, num


@click.command("search")
@click.option("--dataset", "-d", default=None, help="registered data set (default: the teacher's)")
@click.option("--teacher", "-t", required=True, type=click.Path(exists=True, file_okay=False),
              help="a sequential teacher's run directory (sasrec or nextitnet, from `distillrec train`)")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="NAS YAML (configs/adarec/*.yaml)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a NAS key: model.embedding_dim=64, method.beta=0, search.epochs=20, kd=false, "
                   "ablations=[random]")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="output folder; a finished stage in it is reused, an interrupted one resumed")
def search_cmd(dataset, teacher, config_file, overrides, out) -> None:
    """Search, derive and retrain an AdaRec student; print and save the discovered architecture."""
    from distillrec.nas import search

    summary = search(dataset, teacher, out, list(overrides), config_file=config_file, echo=echo_err)
    out_dir = Path(out)
    click.echo("discovered architecture:")
    click.echo(summary["architecture"])
    click.echo("")
    click.echo(_table(summary))
    written = [f for f in ("architecture.txt", "architecture.json", "cells.png", "results.json", "report.md")
               if (out_dir / f).exists()]
    click.echo(f"written: {out_dir}/{{{','.join(written)}}}; the deployable student: {out_dir / 'retrain'}")


def _table(summary: dict[str, Any]) -> str:
    rows = summary["rows"]
    metrics = [m for m in ("hit@10", "ndcg@10", "hit@20", "ndcg@20") if m in rows[0]["test"]]
    head = ["model", *metrics, "params", "non-emb params", "ms/user"]
    body = [[r["name"], *(num(r["test"].get(m)) for m in metrics), f"{r['parameters']:,}",
             f"{r['non_embedding_parameters']:,}", num(r["latency_ms_per_user"], 3)] for r in rows]
    return f"{summary['dataset']}: test, {summary['protocol']} ranking\n" + format_table(head, body)
