"""A test-split learning curve for a preset that has no validation split (e.g. Gowalla, given train/test).

The trainer itself only validates; LightGCN's published Gowalla numbers come from evaluating the test split every
few epochs. This script runs the real ``Trainer.fit`` on a preset with an epoch-end callback that ranks the test
split every ``--test-every`` epochs (outside the epoch's timed section), and stops once ``--minutes`` of training
time are spent (or ``--epochs``). It writes ``curve.json`` (per evaluated epoch: seconds so far, test metrics)
next to the trainer's ``log.jsonl`` and checkpoints in ``--out``, and prints the curve as a Markdown table.

    DISTILLREC_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_curve.py \
        --config configs/gowalla/lightgcn.yaml --out runs/gowalla/lightgcn --minutes 10 --test-every 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from distillrec.config import resolve_config
from distillrec.train.runs import build_model, load_data
from distillrec.train.trainer import Trainer
from distillrec.utils import atomic_write_json, seed_everything


class _Budget(Exception):
    """Raised from the epoch-end hook once the time budget is spent (after that epoch is saved)."""


class TestCurve:
    def __init__(self, every: int, seconds: float, path: Path) -> None:
        self.every, self.seconds, self.path = every, seconds, path
        self.points: list[dict[str, Any]] = []
        self.train_seconds = 0.0

    def on_epoch_end(self, trainer: Trainer, epoch: int, record: dict[str, Any]) -> None:
        self.train_seconds += record["seconds"]
        spent = self.train_seconds >= self.seconds
        if epoch % self.every == 0 or spent or epoch == trainer.config.epochs:
            t = time.perf_counter()
            metrics = trainer.evaluate("test")
            self.points.append({"epoch": epoch, "train_seconds": round(self.train_seconds, 1),
                                "eval_seconds": round(time.perf_counter() - t, 1), "loss": record["loss"],
                                "test": metrics})
            atomic_write_json(self.path, self.points)
            print(f"epoch {epoch:4d}  {self.train_seconds:7.1f}s  " + "  ".join(
                f"{k}={v:.4f}" for k, v in metrics.items() if k.endswith("@20")), flush=True)
        if spent:
            raise _Budget


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--minutes", type=float, default=10.0, help="training-time budget (evaluation excluded)")
    ap.add_argument("--test-every", type=int, default=1)
    args = ap.parse_args()

    cfg = resolve_config(config_file=args.config, overrides=args.overrides)
    seed_everything(cfg.train.seed)
    data = load_data(cfg)
    model = build_model(cfg, data)
    args.out.mkdir(parents=True, exist_ok=True)
    curve = TestCurve(args.test_every, args.minutes * 60, args.out / "curve.json")
    trainer = Trainer(model, data, cfg.train, out_dir=args.out, run_config=cfg.to_plain(), progress=False,
                      callbacks=[curve])
    print(f"{data.name}: {model.name} {model.hparams()}, {model.num_parameters():,} parameters, "
          f"{trainer.batches.n_batches()} batches/epoch; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    try:
        trainer.fit()
    except _Budget:
        pass
    pts = curve.points
    print("| epoch | train s | " + " | ".join(pts[-1]["test"]) + " |")
    print("|---|---|" + "---|" * len(pts[-1]["test"]))
    for p in pts:
        print(f"| {p['epoch']} | {p['train_seconds']:.0f} | " + " | ".join(f"{v:.4f}" for v in p["test"].values())
              + " |")
    print(f"seconds per epoch: {curve.train_seconds / max(1, pts[-1]['epoch']):.1f}")
    print(json.dumps({"epochs": pts[-1]["epoch"], "train_seconds": round(curve.train_seconds, 1),
                      "final_test": pts[-1]["test"]}))


if __name__ == "__main__":
    main()
