"""Peak memory of each distillation method on Gowalla: every method in its own fresh process, which loads the
data, computes the teacher knowledge, builds the distiller, trains ``--batches`` batches through the real
objective (the per-epoch refresh included) and evaluates the student by full ranking (the validation split, or
test where there is none); the figure is the process's peak resident set size (``ru_maxrss``), so it counts
everything the method keeps alive, not only tensors.

Setting: Gowalla (29,858 users × 40,981 items, 810,128 training pairs), BPR teacher dim 200 → BPR student dim 20
(DE-RRD's φ = 0.1), batch 1024. The teacher is freshly initialised, not trained: the memory of the lists and
samplers does not depend on how good the teacher is. Target (issue 4): below 4 GiB for every method, i.e. no
users × items matrix anywhere (one dense float32 users × items matrix alone would be 4.9 GB here).

    DISTILLREC_DATA_DIR=../shared/data .venv/bin/python benchmarks/kd_memory.py [--methods rd,dcd] [--batches 20]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

METHODS = ("plain", "rd", "cd", "de", "rrd", "de-rrd", "ir-rrd", "dcd")
LIMIT_GIB = 4.0


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def one(method: str, args: argparse.Namespace) -> dict:
    import torch

    from distillrec.config import TrainConfig
    from distillrec.data import load_dataset
    from distillrec.distill import get_method
    from distillrec.distill.knowledge import compute_knowledge
    from distillrec.models.bpr import BPR
    from distillrec.train.batches import epoch_generator
    from distillrec.train.evaluation import evaluate_model
    from distillrec.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ds = load_dataset(args.dataset)
    after_data = peak_gib()
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, learning_rate=1e-3, device="cpu", topk=[10, 20])
    net = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=args.student_dim))
    distiller = None
    if method != "plain":
        teacher = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=args.teacher_dim, init_std=0.1)).eval()
        cls = get_method(method)
        config = cls.make_config({})
        knowledge = compute_knowledge(teacher, ds, cls.knowledge_spec(config))
        distiller = cls(net, knowledge, ds, config, seed=0)
        del teacher  # a real run keeps only the knowledge (the teacher's representations, for DE, are in it)
    after_knowledge = peak_gib()
    trainer = Trainer(net, ds, cfg, distiller=distiller, progress=False)
    if distiller is not None:
        distiller.on_epoch_start(1)
    g = epoch_generator(0, 1)
    n = 0
    for batch in trainer.batches.epoch(g):
        terms = trainer._objective(batch)
        loss = sum(terms.values())
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        n += 1
        if n >= args.batches:
            break
    after_train = peak_gib()
    split = "valid" if getattr(ds, "valid", None) is not None else "test"  # gowalla ships train/test only
    metrics = evaluate_model(net, ds, split, "full", cfg).metrics
    return {"method": method, "peak_gib": peak_gib(), "after_data_gib": after_data,
            "after_knowledge_gib": after_knowledge, "after_train_gib": after_train, "batches": n,
            "seconds": time.perf_counter() - t0, "eval_recall@20": float(metrics["recall@20"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="gowalla")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--teacher-dim", type=int, default=200)
    ap.add_argument("--student-dim", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args)))
        return
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    rows = []
    for name in names:
        passed = [arg for k, v in vars(args).items() if k not in ("one", "json", "methods")
                  for arg in (f"--{k.replace('_', '-')}", str(v))]
        cmd = [sys.executable, __file__, "--one", name, *passed]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if out.returncode != 0:
            raise SystemExit(f"{name}: failed\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{name}: peak {r['peak_gib']:.2f} GiB ({r['seconds']:.0f} s)", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.dataset}, BPR teacher dim {args.teacher_dim} → student dim {args.student_dim}, batch "
          f"{args.batch_size}, {args.batches} batches + one full-ranking evaluation; peak RSS per fresh process\n")
    print("| method | peak RSS (GiB) | after data | after knowledge | after training | < 4 GiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['peak_gib']:.2f} | {r['after_data_gib']:.2f} | {r['after_knowledge_gib']:.2f} "
              f"| {r['after_train_gib']:.2f} | {'yes' if r['peak_gib'] < LIMIT_GIB else 'NO'} |")


if __name__ == "__main__":
    main()
