"""Command groups of the ``distillrec`` CLI beyond the core (train, distill, run, …), one module per group:
``teachers`` (HetComp teacher sets), ``stream`` (CCD and the continual baselines), ``search`` (AdaRec).
``distillrec.cli`` registers them; heavy imports stay inside the command functions."""

from __future__ import annotations

import click


def echo_err(msg: str) -> None:
    """Progress and log lines go to stderr; tables and results to stdout."""
    click.echo(msg, err=True)


def format_table(head: list[str], body: list[list[str]]) -> str:
    """A plain aligned table: first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *map(line, body)])


def markdown(head: list[str], body: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *("| " + " | ".join(row) + " |" for row in body)])


def num(v: object, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if isinstance(v, int | float) else "–"
