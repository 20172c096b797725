"""Scoring latency of sequential teachers and AdaRec students: the plain all-positions pass against the
newest-position shortcuts of ``SequentialRecommender.user_repr``, and student ÷ teacher, in one process.

Each model scores every item for the first ``--users`` test users in batches of ``--batch`` and takes the
top-20 (``report.latency``'s work), best of the rounds. Three forms per model, alternated round by round so
background load hits all alike: ``full pass`` runs the encoder on every column of the batch's histories and scores
the newest position (the code before session 13); ``context`` runs every layer on the columns inside the receptive
field (session 13); ``shortcut`` is ``full_scores`` now — SASRec attends from the newest query alone in its last
block, NextItNet and the AdaRec student run each layer on only the columns the newest output still needs (fewer at
every layer, session 17). All give the same scores (checked here). Latency does not depend on the weights, so
untrained models of the benchmarked architectures (the Beauty teacher presets and the searched student cells of
BENCHMARKS.md) stand in for the trained runs.

    DISTILLREC_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/seq_latency.py --dataset beauty
"""

from __future__ import annotations

import argparse
import time

import torch

from distillrec.data import load_dataset
from distillrec.models import get_model_class
from distillrec.models.sasrec import SequentialRecommender

# the architectures of BENCHMARKS.md's AdaRec sections (teachers: configs/beauty/sasrec.yaml,
# configs/adarec/teacher_*; students: the searched cells at width 32, 4 cells)
MODELS = {
    "beauty": {
        "teacher SASRec 64 × 2": ("sasrec", {"hidden_size": 64, "n_layers": 2, "n_heads": 2, "inner_size": 256}),
        "teacher NextItNet 256 × 16": ("nextitnet", {"embedding_dim": 256, "dilations": [1, 4], "n_blocks": 8,
                                                     "rezero": True}),
        "student AdaRec (searched cell)": ("adarec", {"embedding_dim": 32, "n_cells": 4, "genotype": [
            "conv_3", "max_pool_3", "max_pool_3", "skip_connect", "skip_connect", "avg_pool_3"]}),
    },
    "lastfm": {
        "teacher SASRec 128 × 8": ("sasrec", {"hidden_size": 128, "n_layers": 8, "n_heads": 4, "inner_size": 512}),
        "teacher NextItNet 64 × 4": ("nextitnet", {"embedding_dim": 64, "dilations": [1, 4], "n_blocks": 2}),
        "student AdaRec (searched cell)": ("adarec", {"embedding_dim": 32, "n_cells": 4, "genotype": [
            "conv_3", "skip_connect", "avg_pool_3", "max_pool_3", "skip_connect", "none"]}),
        # searched with the NextItNet-64 teacher (configs/adarec/lastfm-nextitnet64.yaml, session 17)
        "student AdaRec (NextItNet-teacher cell)": ("adarec", {"embedding_dim": 32, "n_cells": 4, "genotype": [
            "none", "dil_conv_3", "max_pool_3", "none", "skip_connect", "avg_pool_3"]}),
    },
}


def full_pass(model: SequentialRecommender, users: torch.Tensor, receptive_field: bool = False) -> torch.Tensor:
    """Every layer on every column of the batch's histories (the code before session 13); with
    ``receptive_field``, on the receptive field's columns only (the session-13 shortcut, no per-layer trimming)."""
    seq = model.eval_seq[users]
    width = max(1, int((seq != model.pad_id).sum(1).max()))
    if receptive_field:
        width = min(width, model.context_length() or width)
    h = model.output(model.encode(seq[:, -width:])[-1][:, -1])
    return h @ model.item_embedding.weight[: model.n_items].T


def context_pass(model: SequentialRecommender, users: torch.Tensor) -> torch.Tensor:
    return full_pass(model, users, receptive_field=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="beauty", choices=sorted(MODELS))
    ap.add_argument("--users", type=int, default=512)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default=None, help="comma-separated subset of the names (default: all)")
    args = ap.parse_args()
    torch.manual_seed(0)
    ds = load_dataset(args.dataset)
    users = torch.arange(min(args.users, ds.n_users))
    batches = list(users.split(args.batch))
    chosen = MODELS[args.dataset]
    if args.models:
        chosen = {k: v for k, v in chosen.items() if k in args.models.split(",")}
    models = {}
    for label, (name, hp) in chosen.items():
        cls = get_model_class(name)
        m = cls(ds.n_users, ds.n_items, cls.Config(**hp)).eval()
        m.prepare_eval(ds, "test")
        models[label] = m
    forms = {"full pass": full_pass, "context": context_pass, "shortcut": lambda m, u: m.full_scores(u)}
    times = {(label, f): [] for label in models for f in forms}
    with torch.no_grad():
        for label, m in models.items():  # warm-up and the equality check
            a = full_pass(m, batches[0])
            for f, fn in forms.items():
                assert torch.allclose(a, fn(m, batches[0]), atol=1e-4, rtol=1e-4), f"{label}: {f} changed the scores"
        for _ in range(args.rounds):
            for label, m in models.items():
                for f, fn in forms.items():
                    t0 = time.perf_counter()
                    for u in batches:
                        torch.topk(fn(m, u), 20, dim=1)
                    times[(label, f)].append(1000 * (time.perf_counter() - t0) / len(users))
    med = {k: min(v) for k, v in times.items()}  # best of the rounds, as report.latency (robust to load spikes)
    print(f"{ds.name}: {ds.n_items:,} items, {len(users)} test users in batches of {args.batch}, top-20; "
          f"best of {args.rounds} alternated rounds, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print("| model | non-embedding parameters | full pass ms / user | context ms / user | shortcut ms / user | "
          "speed-up |")
    print("|---|---|---|---|---|---|")
    for label, m in models.items():
        emb = {id(m.item_embedding.weight)} | ({id(m.position_embedding.weight)}
                                               if hasattr(m, "position_embedding") else set())
        n = sum(p.numel() for p in m.parameters() if id(p) not in emb)
        full, ctx, short = med[(label, "full pass")], med[(label, "context")], med[(label, "shortcut")]
        print(f"| {label} | {n:,} | {full:.3f} | {ctx:.3f} | {short:.3f} | {full / short:.2f}× |")
    students = [k for k in models if k.startswith("student")]
    for s in students:
        for t in (k for k in models if k.startswith("teacher")):
            print(f"{t} ÷ {s}: " + ", ".join(f"{f} {med[(t, f)] / med[(s, f)]:.2f}×" for f in forms))


if __name__ == "__main__":
    main()
