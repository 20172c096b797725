"""Data-pipeline overhead of the training loop: a BPR epoch through the real ``Trainer._train_epoch`` divided by
the same optimiser steps on pre-built batches.

Both sides run the identical batches of the same epoch (the trainer derives them from (seed, epoch); the
baseline materialises that epoch's batches before its clock starts) and the identical step: loss, zero_grad,
backward, Adam step. What the ratio charges to the trainer is everything else: the per-epoch shuffle and
negative draw, slicing batches out of the epoch tensors, the progress bar, reading each loss term back.
The two are alternated (trainer, baseline, trainer, ...) so that background load hits both alike; the figure
is median(trainer) / median(baseline). Target: ratio <= 1.2.

The same run also times the pieces of the pipeline on their own (medians): the whole batch stream of an epoch
with no training step, and the vectorised negative draw inside it, so a ratio above target says where the
time goes.

    DISTILLREC_DATA_DIR=../shared/data .venv/bin/python benchmarks/train_pipeline_overhead.py [--dim 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from distillrec.config import TrainConfig
from distillrec.data import load_dataset
from distillrec.data.sampling import sample_negatives
from distillrec.models import get_model_class
from distillrec.train.batches import epoch_generator
from distillrec.train.trainer import Trainer


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bare_steps(trainer: Trainer, batches: list[dict[str, torch.Tensor]]) -> None:
    """The optimiser steps of an epoch and nothing else (what ``_train_epoch`` does per batch, minus the loop)."""
    model, opt = trainer.model, trainer.optimizer
    model.train()
    for batch in batches:
        loss = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="citeulike")
    ap.add_argument("--model", default="bpr")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--n-negatives", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7, help="timed epochs per side (median reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--progress", action="store_true", help="let the trainer draw its progress bar (tqdm)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ds = load_dataset(args.dataset)
    cfg = TrainConfig(batch_size=args.batch_size, n_negatives=args.n_negatives, learning_rate=1e-3, device="cpu")
    model = get_model_class(args.model).from_dataset(ds, embedding_dim=args.dim)
    trainer = Trainer(model, ds, cfg, progress=args.progress)
    epoch = 1

    def prebuilt() -> list[dict[str, torch.Tensor]]:
        return list(trainer.batches.epoch(epoch_generator(cfg.seed, epoch)))

    def negatives() -> None:
        g = epoch_generator(cfg.seed, epoch)
        sample_negatives(ds.train, trainer.batches.users, args.n_negatives, g)

    trainer._train_epoch(epoch)  # warm-up: allocator, thread pool, Adam state
    bare_steps(trainer, prebuilt())
    t_train, t_bare, t_stream, t_neg = [], [], [], []
    for _ in range(args.repeats):  # alternated, so that background load hits both alike
        t_train.append(timed(lambda: trainer._train_epoch(epoch)))
        batches = prebuilt()  # built outside the baseline's clock
        t_bare.append(timed(partial(bare_steps, trainer, batches)))
        t_stream.append(timed(prebuilt))
        t_neg.append(timed(negatives))

    med = statistics.median
    out = {
        "dataset": ds.name,
        "model": args.model,
        "embedding_dim": args.dim,
        "n_interactions": int(ds.train.nnz),
        "batches_per_epoch": trainer.batches.n_batches(),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "trainer_epoch_s": round(med(t_train), 4),
        "bare_steps_s": round(med(t_bare), 4),
        "ratio": round(med(t_train) / med(t_bare), 3),
        "batch_stream_s": round(med(t_stream), 4),
        "negative_draw_s": round(med(t_neg), 4),
        "trainer_epochs_s": [round(t, 4) for t in t_train],
        "bare_epochs_s": [round(t, 4) for t in t_bare],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"{ds.name}: {args.model} dim {args.dim}, {out['n_interactions']:,} positives, "
          f"{out['batches_per_epoch']} batches of {args.batch_size}; {out['threads']} threads, {out['cpu']}")
    print(f"trainer epoch (median of {args.repeats})   {out['trainer_epoch_s']:.3f} s")
    print(f"same steps on pre-built batches   {out['bare_steps_s']:.3f} s")
    print(f"ratio                             {out['ratio']:.3f}   (target <= 1.2)")
    print(f"  batch stream alone              {out['batch_stream_s']:.3f} s  "
          f"(of which the negative draw {out['negative_draw_s']:.3f} s)")


if __name__ == "__main__":
    main()
