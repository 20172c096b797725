"""DE's sparse expert routing late in training: one product per expert in use vs one padded bmm.

Once the Gumbel selection is hard (τ ≲ 0.05 in the authors' schedule) each entity keeps ~1 expert, and the
experts' loads are skewed by the trained selection network. This benchmark continues a real DE / DE-RRD run
from its ``last.pt`` (trained selection, real τ) for a few epochs twice, in two scratch copies, alternating
epoch by epoch: once with the padded bmm that pads every expert in use to the busiest one's pair count
(distillrec up to session 6, kept here as the baseline) and once with the library's per-expert loop. Both are
exact; epoch seconds are the trainer's (training only, no evaluation), medians over rounds.

    DISTILLREC_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/de_routing.py \
        --run runs/citeulike-loo/kd/de-rrd/seed-1 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
from pathlib import Path

import torch
import yaml
from torch import Tensor

from distillrec.distill.experts import _NEGLIGIBLE, ExpertMixture
from distillrec.train.checkpoint import load_checkpoint
from distillrec.train.runs import distill


def padded_sparse(self: ExpertMixture, x: Tensor, s: Tensor, tau: float) -> Tensor | None:
    """The session-6 routing: the kept pairs as [A, busiest expert's pairs] padded bmm over the A experts."""
    keep = s > _NEGLIGIBLE * min(tau, 1.0)
    rows, experts = keep.nonzero(as_tuple=True)
    counts = torch.bincount(experts, minlength=self.n_experts)
    active = counts.nonzero().squeeze(1)
    width = int(counts.max())
    if 2 * len(active) * width > s.numel():
        return None
    self.last_density = len(rows) / max(1, s.numel())
    order = torch.argsort(experts, stable=True)
    rows, experts = rows[order], experts[order]
    slot = torch.arange(len(rows), device=x.device) - (torch.cumsum(counts, 0) - counts)[experts]
    group = (torch.cumsum(counts > 0, 0) - 1)[experts]
    d_s, h, d_t = self.student_dim, self.hidden_dim, self.teacher_dim
    xs = x.new_zeros(len(active), width, d_s).index_put((group, slot), x[rows])
    w1 = self.w1.view(d_s, self.n_experts, h).index_select(1, active).transpose(0, 1)
    b1 = self.b1.view(self.n_experts, h).index_select(0, active).unsqueeze(1)
    z = torch.baddbmm(b1, xs, w1).relu_()
    o = torch.bmm(z, self.w2.view(self.n_experts, h, d_t).index_select(0, active))
    contrib = o[group, slot] * s[rows, experts].unsqueeze(1).to(o.dtype)
    return (s @ self.b2).to(contrib.dtype).index_add(0, rows, contrib)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a DE or DE-RRD run directory with checkpoints/last.pt")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    start = int(load_checkpoint(run / "checkpoints" / "last.pt")["epoch"])
    library = ExpertMixture._sparse
    impls = {"padded bmm": padded_sparse, "per-expert loop": library}
    seconds: dict[str, list[float]] = {k: [] for k in impls}
    density: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {}
        for i, name in enumerate(impls):
            d = Path(tmp) / f"copy{i}"
            (d / "checkpoints").mkdir(parents=True)
            for f in ("last.pt", "best.pt"):
                shutil.copy(run / "checkpoints" / f, d / "checkpoints" / f)
            shutil.copy(run / "config.yaml", d / "config.yaml")
            dirs[name] = d
        cfg_file = Path(tmp) / "config.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
        for r in range(1, args.rounds + 1):
            for name, impl in impls.items():
                ExpertMixture._sparse = impl
                (dirs[name] / "results.json").unlink(missing_ok=True)  # each round "finishes" its 1-epoch budget
                try:
                    distill(cfg["distill"]["teacher"], cfg["distill"]["method"], out=dirs[name], config_file=cfg_file,
                            overrides=[f"train.epochs={start + r}"], resume=True, progress=False,
                            echo=lambda _m: None)
                finally:
                    ExpertMixture._sparse = library
                last = json.loads((dirs[name] / "log.jsonl").read_text().splitlines()[-1])
                seconds[name].append(float(last["seconds"]))
                density.append(float(last.get("distill", {}).get("expert_density", float("nan"))))
                print(f"round {r} epoch {last['epoch']} {name}: {last['seconds']:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    result = {"run": str(run), "from_epoch": start, "tau": cfg.get("distill", {}).get("tau_start"),
              "rounds": args.rounds, "median_seconds": med, "speedup": med["padded bmm"] / med["per-expert loop"],
              "expert_density": statistics.median(density), "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{run} from epoch {start}, {args.rounds} rounds, expert density {result['expert_density']:.3f}")
        for k, v in med.items():
            print(f"  {k}: {v:.2f} s / epoch")
        print(f"  padded ÷ loop: {result['speedup']:.2f}×")


if __name__ == "__main__":
    main()
