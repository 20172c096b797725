"""``distillrec data …``: look at data sets from the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from distillrec.data.registry import REGISTRY, list_datasets, load_dataset, load_file


@click.group("data")
def data() -> None:
    """Data sets: list them, describe them."""


@data.command("list")
def list_cmd() -> None:
    """The named data sets."""
    for name in list_datasets():
        click.echo(f"{name:16s} {REGISTRY[name].description}")


@data.command("describe")
@click.argument("dataset")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding the data sets (default: $DISTILLREC_DATA_DIR).")
def describe(dataset: str, as_json: bool, data_dir: Path | None) -> None:
    """Users, items, interactions per split, density and per-user counts of DATASET (a registry name or a
    path to an interaction file)."""
    start = time.perf_counter()
    if dataset not in REGISTRY and Path(dataset).is_file():
        ds = load_file(dataset)
    else:
        ds = load_dataset(dataset, data_dir=data_dir)
    stats = ds.stats()
    stats["load_seconds"] = round(time.perf_counter() - start, 3)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
    else:
        click.echo(format_stats(stats, ds.meta.get("description", ""), ds.citation))


def format_stats(s: dict[str, Any], description: str = "", citation: str = "") -> str:
    lines = [f"{s['name']}" + (f" — {description}" if description else "")]
    lines.append(f"  users {s['n_users']:,}   items {s['n_items']:,}   interactions {s['n_interactions']:,}"
                 f"   density {s['density']:.6f}   protocol {s['protocol']}")
    for split in ("train", "valid", "test"):
        if f"n_{split}" in s:
            lines.append(f"  {split:5s} {s[f'n_{split}']:>12,} interactions   {s[f'n_users_{split}']:>9,} users")
    pu = s["train_per_user"]
    lines.append(f"  train items per user: min {pu['min']}  median {pu['median']:g}  mean {pu['mean']:.2f}"
                 f"  max {pu['max']}   items with train data {s['n_items_train']:,}")
    if "raw" in s:
        raw = s["raw"]
        lines.append(f"  raw input: {raw['n_rows']:,} rows, {raw['n_users']:,} users, {raw['n_items']:,} items"
                     + (f", ratings {raw['ratings']}" if "ratings" in raw else ""))
    if "candidates" in s:
        lines.append(f"  sampled candidates: {s['candidates']}")
    for b in s.get("blocks", []):
        rows = b.get("n_rows") or {}
        lines.append(
            f"  {b['name']}: train/valid/test {b['n_train']:,} / {b['n_valid']:,} / {b['n_test']:,} pairs"
            f" ({rows.get('train', 0):,} / {rows.get('valid', 0):,} / {rows.get('test', 0):,} rows),"
            f" {b['n_users_train']:,} users and {b['n_items_train']:,} items with train data"
        )
    if citation:
        lines.append(f"  cite: {citation}")
    lines.append(f"  loaded in {s['load_seconds']:.2f} s")
    return "\n".join(lines)
