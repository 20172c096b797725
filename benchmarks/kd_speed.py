"""Distillation cost: each method's training-epoch time ÷ the plain student's, and the teacher-knowledge
precomputation ÷ one plain epoch, all measured in one process.

Setting (DE-RRD's): CiteULike leave-one-out split, BPR teacher dim 200 (trained for a few epochs and cached:
the cost of a KD epoch does not depend on how good the teacher is), BPR student dim 20, Adam, batch 1024.
Every variant trains its own student through the real training loop (``Trainer``) on the same batches:
epoch e of every variant uses the batches of epoch e. Epochs are interleaved — in each round the plain
student runs before and after every method (P, m1, P, m2, P, …) and a method's ratio for that round is its
time ÷ the mean of the two plain epochs around it — so background load hits both sides alike; the table
shows the median over rounds, of wall-clock time and of the process's CPU time (which, with one torch
thread, leaves out the time the process waited for a core on a shared machine). Epoch times include the
per-epoch hook (``on_epoch_start``: refreshing samples) and exclude evaluation. The teacher knowledge (a one-off
step, wall-clock time) runs on every core unless ``--knowledge-threads`` says otherwise.

    DISTILLREC_DATA_DIR=../shared/data .venv/bin/python benchmarks/kd_speed.py [--epochs N] [--device auto] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from distillrec.config import TrainConfig
from distillrec.data import load_dataset
from distillrec.distill import get_method
from distillrec.distill.knowledge import compute_knowledge
from distillrec.models.bpr import BPR
from distillrec.train.trainer import Trainer
from distillrec.utils import resolve_device

# name → (method, config overrides); the "-top" rows are the authors' later no-sampling variants; the DE
# rows with a suffix use the opt-in speed-ups (bf16 expert matmuls, a 256-entity subset per DE part),
# except "-late", the exact method late in its temperature schedule.
FAST_DE = {"expert_dtype": "bfloat16", "de_entities": 256}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "rd": ("rd", {}),
    "cd": ("cd", {}),
    "de": ("de", {}),
    "de-bf16": ("de", {"expert_dtype": "bfloat16"}),
    "de-sub256": ("de", {"de_entities": 256}),
    # τ as at epoch 250 of the authors' schedule (10^-2.5), where their runs stop: the selection is hard, so
    # sparse routing computes ~1 expert per entity (exact; DE's early epochs, τ near 1, stay dense).
    "de-late": ("de", {"tau_start": 10 ** -2.5}),
    "de-bf16-sub256": ("de", FAST_DE),
    "rrd": ("rrd", {}),
    "rrd-top": ("rrd", {"sampling": "top"}),
    "de-rrd": ("de-rrd", {}),
    "de-rrd-bf16-sub256": ("de-rrd", FAST_DE),
    "de-rrd-late": ("de-rrd", {"tau_start": 10 ** -2.5}),
    "de-rrd-top": ("de-rrd", {"sampling": "top"}),
    "ir-rrd": ("ir-rrd", {}),
    "ir-rrd-pos": ("ir-rrd", {"item_rows": "positives"}),  # item side on the batch's positives (before session 15)
    "ir-rrd-top": ("ir-rrd", {"sampling": "top"}),
    # the item side with each batch's rows gathered and their structure built per batch (before session 16),
    # instead of all rows against a structure built once per epoch (Distiller.ranked_loss_of)
    "ir-rrd-gathered": ("ir-rrd", {}),
    "dcd": ("dcd", {}),
    "dcd-top": ("dcd", {"sampling": "top"}),
}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def train_config(args: argparse.Namespace, epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=args.batch_size, learning_rate=1e-3, weight_decay=1e-3,
                       device=str(args.device), seed=args.seed)


def teacher_model(ds, args: argparse.Namespace) -> BPR:
    """A BPR teacher trained for ``--teacher-epochs`` (lr 1e-2), cached as a plain state_dict."""
    path = Path(args.cache) / f"teacher-{ds.name}-bpr{args.teacher_dim}-e{args.teacher_epochs}-s{args.seed}.pt"
    torch.manual_seed(args.seed)
    teacher = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=args.teacher_dim))
    if path.exists():
        teacher.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return teacher.to(args.device).eval()
    cfg = train_config(args, args.teacher_epochs).model_copy(update={"learning_rate": 1e-2})
    trainer = Trainer(teacher, ds, cfg, progress=False)
    for epoch in range(1, args.teacher_epochs + 1):
        trainer._train_epoch(epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(teacher.state_dict(), path)
    return teacher.to(args.device).eval()


def student(ds, args: argparse.Namespace) -> BPR:
    torch.manual_seed(args.seed + 1)
    return BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=args.student_dim)).to(args.device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="citeulike-loo")
    ap.add_argument("--methods", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    ap.add_argument("--epochs", type=int, default=5, help="timed rounds (one epoch of every variant each)")
    ap.add_argument("--teacher-dim", type=int, default=200)
    ap.add_argument("--student-dim", type=int, default=20)
    ap.add_argument("--teacher-epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: per-core cost)")
    ap.add_argument("--knowledge-threads", type=int, default=None,
                    help="threads of the one-off teacher-knowledge step (default: every core)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default="/tmp/distillrec-kd-speed", help="where the trained teacher is cached")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when present)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args()
    args.device = resolve_device(args.device)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in VARIANTS]
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]

    ds = load_dataset(args.dataset)
    teacher = teacher_model(ds, args)
    runs: dict[str, Trainer] = {"plain": Trainer(student(ds, args), ds, train_config(args, args.epochs),
                                                 progress=False)}
    prep: dict[str, dict[str, float]] = {}
    for name in names:
        method, overrides = VARIANTS[name]
        cls = get_method(method)
        config = cls.make_config(overrides)
        t0 = time.perf_counter()
        knowledge = compute_knowledge(teacher, ds, cls.knowledge_spec(config), threads=args.knowledge_threads)
        t1 = time.perf_counter()
        net = student(ds, args)
        distiller = cls(net, knowledge, ds, config, seed=args.seed)
        if name.endswith("-gathered"):
            distiller.PLAN_FRACTION = float("inf")
        t2 = time.perf_counter()
        prep[name] = {"knowledge_s": t1 - t0, "setup_s": t2 - t1}
        runs[name] = Trainer(net, ds, train_config(args, args.epochs), distiller=distiller, progress=False)

    def sync() -> None:  # CUDA runs asynchronously: time what the device did, not what was queued
        if args.device.type == "cuda":
            torch.cuda.synchronize(args.device)

    def epoch_time(name: str, epoch: int) -> tuple[float, float]:
        """(wall, CPU) seconds of one training epoch."""
        sync()
        t, c = time.perf_counter(), time.process_time()
        runs[name]._train_epoch(epoch)
        sync()
        return time.perf_counter() - t, time.process_time() - c

    epoch_time("plain", 1)  # warm-up: allocator, thread pool, first-touch of the embedding tables
    times: dict[str, list[float]] = {n: [] for n in ["plain", *names]}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    cpu_ratios: dict[str, list[float]] = {n: [] for n in names}
    for epoch in range(1, args.epochs + 1):
        before = epoch_time("plain", epoch)
        times["plain"].append(before[0])
        for name in names:
            t = epoch_time(name, epoch)
            after = epoch_time("plain", epoch)
            times[name].append(t[0])
            times["plain"].append(after[0])
            ratios[name].append(t[0] / (0.5 * (before[0] + after[0])))
            cpu_ratios[name].append(t[1] / (0.5 * (before[1] + after[1])))
            before = after
    plain_s = statistics.median(times["plain"])

    rows = []
    for name in names:
        p = prep[name]
        rows.append({
            "method": name,
            "epoch_s": statistics.median(times[name]),
            "ratio": statistics.median(ratios[name]),
            "ratio_min": min(ratios[name]),
            "ratio_max": max(ratios[name]),
            "cpu_ratio": statistics.median(cpu_ratios[name]),
            "knowledge_s": p["knowledge_s"],
            "setup_s": p["setup_s"],
            "prep_ratio": (p["knowledge_s"] + p["setup_s"]) / plain_s,
        })
    out = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "device": torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "cpu",
                    "knowledge_threads": args.knowledge_threads or os.cpu_count(),
                    "torch": torch.__version__, "load_avg_start": round(load_start, 2),
                    "load_avg_end": round(os.getloadavg()[0], 2)},
        "setting": {"dataset": ds.name, "n_users": ds.n_users, "n_items": ds.n_items, "train_nnz": int(ds.train.nnz),
                    "teacher_dim": args.teacher_dim, "student_dim": args.student_dim,
                    "batch_size": args.batch_size, "rounds": args.epochs},
        "plain_epoch_s": plain_s,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    m = out["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, device {m['device']}, torch {m['torch']} with "
          f"{m['torch_threads']} thread(s) "
          f"({m['knowledge_threads']} for the teacher knowledge); load average {m['load_avg_start']} → "
          f"{m['load_avg_end']}")
    s = out["setting"]
    print(f"{s['dataset']}: {s['n_users']} users × {s['n_items']} items, {s['train_nnz']} training pairs; "
          f"BPR teacher dim {s['teacher_dim']} → student dim {s['student_dim']}, batch {s['batch_size']}, "
          f"{s['rounds']} rounds")
    print(f"plain student epoch: {plain_s:.3f} s (median)\n")
    print("| method | KD epoch (s) | KD ÷ plain (wall) | range | KD ÷ plain (CPU) | knowledge (s) | setup (s) "
          "| prep ÷ plain epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['epoch_s']:.3f} | {r['ratio']:.2f} | {r['ratio_min']:.2f}–{r['ratio_max']:.2f} | "
              f"{r['cpu_ratio']:.2f} | {r['knowledge_s']:.3f} | {r['setup_s']:.3f} | {r['prep_ratio']:.2f} |")


if __name__ == "__main__":
    main()
