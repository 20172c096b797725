"""Copy the small result files of a `distillrec run` directory into the repository, so a table can grow
across sessions even when the run directories (checkpoints, caches) do not survive.

For every finished sub-run (``METHOD/seed-N/`` and ``teacher-*/`` with a ``results.json``) the resolved
``config.yaml`` and ``results.json`` are copied to ``DEST`` under the same relative path; checkpoints, logs
and caches are not. ``benchmarks/run_table.py DEST`` then reads the archive as it reads a run directory.
An archived seed is never overwritten by a different one: a mismatch is reported and the copy refused.

    .venv/bin/python benchmarks/archive_results.py runs/citeulike/kd benchmarks/results/citeulike-kd
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
from pathlib import Path

from distillrec.report.summary import seed_dirs

FILES = ("results.json", "config.yaml")


def finished_runs(root: Path) -> list[Path]:
    runs = [p for method_dir in root.iterdir() for p in seed_dirs(method_dir).values()
            if (p / "results.json").exists()] if root.is_dir() else []
    runs += [p.parent for p in root.glob("teacher-*/results.json")]
    return sorted(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="a `distillrec run` output directory")
    ap.add_argument("dest", type=Path, help="the archive directory (benchmarks/results/NAME)")
    args = ap.parse_args()
    copied = clashes = 0
    for run in finished_runs(args.root):
        target = args.dest / run.relative_to(args.root)
        for name in FILES:
            src, dst = run / name, target / name
            if not src.exists():
                continue
            if dst.exists():
                if not filecmp.cmp(src, dst, shallow=False):
                    print(f"refused: {dst} exists and differs from {src}")
                    clashes += 1
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            copied += 1
    print(f"{copied} file(s) copied to {args.dest}, {clashes} refused")
    raise SystemExit(1 if clashes else 0)


if __name__ == "__main__":
    main()
