"""The ``distillrec`` command."""

from __future__ import annotations

import sys

import click

from distillrec import __version__
from distillrec.utils import DistillrecError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="distillrec")
def cli() -> None:
    """Knowledge distillation for recommender systems."""


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
