"""Adam's step on CPU: torch's default per-parameter update against the fused kernel the trainer now uses,
measured as whole training epochs of the real loop in one process.

Setting: CiteULike leave-one-out, BPR-MF at dims 20 (the DE-RRD student) and 200 (its teacher), and an RRD
student (dim 20, distilling a briefly trained dim-200 teacher), batch 1024, Adam, 1 torch thread. Each
setting trains two identical students on the same batches, one per optimiser; epochs alternate
(default, fused, default, fused, …) so background load hits both, and the table gives the median epoch time
(evaluation excluded) and the ratio. The last column checks that both students followed the same path: the
largest absolute difference between their embedding tables at the end (float rounding only).

    DISTILLREC_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/optimizer_step.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from distillrec.config import TrainConfig
from distillrec.data import load_dataset
from distillrec.distill import get_method
from distillrec.models.bpr import BPR
from distillrec.train.trainer import Trainer


def make_student(ds, dim: int, seed: int) -> BPR:
    torch.manual_seed(seed)
    return BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=dim))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="citeulike-loo")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.dataset)
    cfg = TrainConfig(epochs=args.epochs, batch_size=1024, learning_rate=1e-3, weight_decay=1e-6, device="cpu",
                      seed=args.seed)

    teacher = make_student(ds, 200, args.seed)
    warm = Trainer(teacher, ds, cfg.model_copy(update={"learning_rate": 1e-2}), progress=False)
    for epoch in range(1, 4):
        warm._train_epoch(epoch)
    teacher.eval()

    def pair(dim: int, method: str | None) -> dict[str, Trainer]:
        out = {}
        for name in ("default", "fused"):
            net = make_student(ds, dim, args.seed + 1)
            distiller = None
            if method is not None:
                cls = get_method(method)
                distiller = cls.from_teacher(net, teacher, ds, cls.make_config({}), seed=args.seed)
            trainer = Trainer(net, ds, cfg, distiller=distiller, progress=False)
            params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
            trainer.optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                                 foreach=False, fused=name == "fused")
            out[name] = trainer
        return out

    print(f"{args.dataset}: {ds.n_users} users × {ds.n_items} items, batch 1024, {args.epochs} rounds, 1 thread")
    print("| setting | default Adam (s / epoch) | fused Adam (s / epoch) | default ÷ fused | max |Δ weights| |")
    print("|---|---|---|---|---|")
    for label, dim, method in (("BPR-MF dim 20", 20, None), ("BPR-MF dim 200", 200, None),
                               ("RRD student dim 20", 20, "rrd")):
        trainers = pair(dim, method)
        times: dict[str, list[float]] = {n: [] for n in trainers}
        for epoch in range(1, args.epochs + 1):
            for name, trainer in trainers.items():
                start = time.perf_counter()
                trainer._train_epoch(epoch)
                times[name].append(time.perf_counter() - start)
        d, f = statistics.median(times["default"]), statistics.median(times["fused"])
        gap = max((a - b).abs().max().item() for a, b in zip(trainers["default"].model.parameters(),
                                                            trainers["fused"].model.parameters(), strict=True))
        print(f"| {label} | {d:.3f} | {f:.3f} | {d / f:.2f} | {gap:.1e} |")


if __name__ == "__main__":
    main()
