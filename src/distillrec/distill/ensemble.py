"""The ensemble of heterogeneous teachers that HetComp's student imitates (spec §A.4, HetComp Eq. 8).

Teacher x at checkpoint v gives user u's item i the importance (ConCF's "position + consistency")

    W^{x,v}_{ui} = exp(−r̃/τ₁) + exp(−σ̃/τ₂),   r̃ = r^{x,v}_{ui}, σ̃ = σ^{x,v}_{ui} if r < K_e, else 10000,

with r the item's 0-based rank among the user's unobserved items and σ its rank std over the teacher's
recent epochs (``trajectory``). The ensemble score is e_ui = Σ_x W^{x, v_ux}_{ui} for a per-(user, teacher)
checkpoint selection v (the converged models by default). Items outside every selected top-K_e list get
≈ 0 (exp(−100) at most), so a user's top-K (K ≤ K_e) lies among the M·K_e listed items: the ensemble is
computed by merging those lists — duplicates summed, ties to the lower item id — in user chunks, with
memory chunk × M·K_e and no dependence on n_items. ``scorer`` gives dense rows only for evaluation.

The observed list P_u ranks the user's training items by the same importance, with r and σ their rank (and
its std) among the user's training items at the selected checkpoint (the final one by default).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.distill.trajectory import Trajectory
from distillrec.utils import DistillrecError

MANIFEST = "teacher_set.json"
FAR = 10000.0  # the authors' stand-in rank (and std) for an item outside the top-K_e


def importance(positions: Tensor, rank_std: Tensor, topk: int, tau1: float = 10.0, tau2: float = 100.0) -> Tensor:
    """W = exp(−r̃/τ₁) + exp(−σ̃/τ₂) with r̃ = r, σ̃ = σ where r < ``topk``, else both 10000 (float32)."""
    far = positions >= topk
    r = torch.where(far, FAR, positions.float())
    s = torch.where(far, FAR, rank_std.float())
    return torch.exp(-r / tau1) + torch.exp(-s / tau2)


def merge_lists(items: Tensor, weights: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per row, sum the weights of repeated items of ``items`` [B, L] and return the ``k`` items with the
    largest sums ([B, k] ids, [B, k] sums), ties broken by the lower item id. Rows need ≥ k distinct items."""
    s_items, perm = items.sort(dim=1, stable=True)
    s_w = weights.gather(1, perm)
    new = torch.ones_like(s_items, dtype=torch.bool)
    new[:, 1:] = s_items[:, 1:] != s_items[:, :-1]
    group = new.long().cumsum(1) - 1  # group index of each entry; groups are in ascending item order
    sums = torch.zeros_like(s_w).scatter_add_(1, group, s_w)
    ids = torch.zeros_like(s_items).scatter_(1, group, s_items)
    n_groups = new.sum(1, keepdim=True)
    if int(n_groups.min()) < k:
        raise DistillrecError(f"the teachers' lists hold fewer than {k} distinct items for some user")
    sums.masked_fill_(torch.arange(sums.shape[1], device=sums.device) >= n_groups, float("-inf"))
    # Stable descending sort: among equal sums the group of the lower item id stays first.
    order = torch.sort(sums, dim=1, descending=True, stable=True).indices[:, :k]
    return ids.gather(1, order), sums.gather(1, order)


class TeacherEnsemble(nn.Module):
    """M teachers' trajectories (V checkpoints each) as one ensemble; buffers move with ``.to(device)``."""

    def __init__(self, trajectories: Sequence[Trajectory], names: Sequence[str], dataset: Dataset,
                 tau1: float = 10.0, tau2: float = 100.0, members: Sequence[dict[str, Any]] | None = None,
                 chunk_elems: int = 1 << 22) -> None:
        super().__init__()
        if not trajectories or len(trajectories) != len(names):
            raise DistillrecError(f"an ensemble needs one trajectory per teacher name, got {len(trajectories)} "
                                  f"trajectories for {len(names)} names")
        shapes = {tuple(t.topk.shape) for t in trajectories}
        if len(shapes) != 1:
            raise DistillrecError(f"all teachers need the same trajectory shape [V, n_users, K_e]; got "
                                  f"{dict(zip(names, (tuple(t.topk.shape) for t in trajectories)))}")
        for name, t in zip(names, trajectories):
            t.check_dataset(dataset, f"trajectory of teacher {name!r}")
        if tau1 <= 0 or tau2 <= 0:
            raise DistillrecError(f"tau1 and tau2 must be positive, got {tau1}, {tau2}")
        self.names = list(names)
        self.dataset = dataset
        self.tau1, self.tau2 = float(tau1), float(tau2)
        self.members = [dict(m) for m in members] if members is not None else [{} for _ in names]
        self.epochs = [list(t.epochs) for t in trajectories]
        self.chunk_elems = chunk_elems
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        buf = {"lists": torch.stack([t.topk for t in trajectories]),  # int32 [M, V, U, K_e]
               "rank_std": torch.stack([t.rank_std for t in trajectories]),  # float16 [M, V, U, K_e]
               "observed_rank": torch.stack([t.observed_rank for t in trajectories]),  # int32 [M, V, nnz]
               "observed_std": torch.stack([t.observed_std for t in trajectories]),
               "train_indptr": torch.from_numpy(dataset.train.indptr.astype(np.int64)),
               "train_indices": torch.from_numpy(dataset.train.indices.astype(np.int64))}
        for name, tensor in buf.items():
            self.register_buffer(name, tensor, persistent=False)

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_teacher_set(cls, path: str | Path, dataset: Dataset, tau1: float = 10.0, tau2: float = 100.0,
                         teachers: Iterable[str] | None = None) -> TeacherEnsemble:
        """Load a teacher-set directory (``teacher_set.json`` + one run directory per teacher)."""
        manifest = read_manifest(path)
        entries = manifest["teachers"]
        if teachers is not None:
            wanted = list(teachers)
            have = {e["name"]: e for e in entries}
            unknown = [t for t in wanted if t not in have]
            if unknown:
                raise DistillrecError(f"{Path(path) / MANIFEST}: no teacher(s) {', '.join(unknown)}; "
                                      f"the set has {', '.join(have)}")
            entries = [have[t] for t in wanted]
        trajs = [Trajectory.load(Path(path) / e["trajectory"], dataset) for e in entries]
        return cls(trajs, [e["name"] for e in entries], dataset, tau1, tau2, members=entries)

    # -- shapes -------------------------------------------------------------------------------------------
    @property
    def n_teachers(self) -> int:
        return int(self.lists.shape[0])

    @property
    def n_checkpoints(self) -> int:
        return int(self.lists.shape[1])

    @property
    def topk_len(self) -> int:
        return int(self.lists.shape[3])

    @property
    def device(self) -> torch.device:
        return self.lists.device

    def final_selection(self) -> Tensor:
        """The converged checkpoint of every teacher for every user: Long [n_users, M] filled with V − 1."""
        return torch.full((self.n_users, self.n_teachers), self.n_checkpoints - 1, dtype=torch.long,
                          device=self.device)

    # -- the lists ----------------------------------------------------------------------------------------
    def member_lists(self, users: Tensor, selection: Tensor) -> Tensor:
        """Each teacher's top-K_e list at the selected checkpoint: Long [B, M, K_e] for ``users`` [B] and
        ``selection`` [B, M] (checkpoint per user and teacher)."""
        m = torch.arange(self.n_teachers, device=self.device)
        return self.lists[m.unsqueeze(0), selection, users.unsqueeze(1)].long()

    def candidates(self, users: Tensor, selection: Tensor) -> tuple[Tensor, Tensor]:
        """The selected lists' items and importances, flattened over teachers: ([B, M·K_e], [B, M·K_e])."""
        m = torch.arange(self.n_teachers, device=self.device)
        idx = (m.unsqueeze(0), selection, users.unsqueeze(1))
        positions = torch.arange(self.topk_len, device=self.device)
        w = importance(positions, self.rank_std[idx], self.topk_len, self.tau1, self.tau2)
        return self.lists[idx].long().flatten(1), w.flatten(1)

    def _chunks(self, users: Tensor) -> Iterable[Tensor]:
        step = max(1, self.chunk_elems // (self.n_teachers * self.topk_len))
        return users.split(step)

    @torch.no_grad()
    def topk(self, k: int, selection: Tensor | None = None, users: Tensor | None = None) -> Tensor:
        """The ensemble's top-``k`` unobserved items per user (Long [n, k], ensemble order) under
        ``selection`` [n_users, M] (default: every teacher converged). ``k`` ≤ K_e."""
        if not 0 < k <= self.topk_len:
            raise DistillrecError(f"the ensemble's top-k needs k in [1, {self.topk_len}] (the trajectories' K_e)")
        selection = self.final_selection() if selection is None else selection.to(self.device)
        users = torch.arange(self.n_users, device=self.device) if users is None else users.to(self.device)
        parts = []
        for chunk in self._chunks(users):
            items, w = self.candidates(chunk, selection[chunk])
            parts.append(merge_lists(items, w, k)[0])
        return torch.cat(parts) if parts else torch.zeros(0, k, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def observed_lists(self, k: int, checkpoint: int = -1) -> tuple[Tensor, Tensor]:
        """Each user's training items ranked by the ensemble at ``checkpoint`` (default: converged), the
        first ``k``: items Long [n_users, k] (padded with 0) and lengths Long [n_users] = min(|O_u|, k)."""
        v = checkpoint % self.n_checkpoints
        w = importance(self.observed_rank[:, v], self.observed_std[:, v], self.topk_len, self.tau1,
                       self.tau2).sum(0)  # [nnz]
        indptr = self.train_indptr
        counts = indptr[1:] - indptr[:-1]
        rows = torch.repeat_interleave(torch.arange(self.n_users, device=self.device), counts)
        order = torch.sort(w, descending=True, stable=True).indices  # ties: CSR order = lower item id first
        order = order[torch.sort(rows[order], stable=True).indices]
        pos = torch.arange(w.numel(), device=self.device) - indptr[rows[order]]
        keep = pos < k
        items = torch.zeros(self.n_users, k, dtype=torch.long, device=self.device)
        items[rows[order][keep], pos[keep]] = self.train_indices[order][keep]
        return items, counts.clamp(max=k)

    # -- accuracy and cost --------------------------------------------------------------------------------
    def scorer(self, selection: Tensor | None = None) -> Callable[[Tensor], Tensor]:
        """``users [B] -> scores [B, n_items]`` (the ensemble's e_ui; 0 outside every list), for evaluation."""
        sel = self.final_selection() if selection is None else selection.to(self.device)

        def score(users: Tensor) -> Tensor:
            users = users.to(self.device)
            items, w = self.candidates(users, sel[users])
            return torch.zeros(len(users), self.n_items, device=self.device).scatter_add_(1, items, w)

        return score

    def evaluate(self, split: str = "test", ks: Iterable[int] = (10, 50), selection: Tensor | None = None,
                 batch_size: int | None = None) -> Any:
        """Full-ranking accuracy of the ensemble (an ``EvalResult``)."""
        from distillrec.evaluate import evaluate_full

        return evaluate_full(self.scorer(selection), self.dataset, split, ks=ks, batch_size=batch_size,
                             device=self.device)

    def cost(self) -> dict[str, Any]:
        """Serving cost: the sum of the members' parameters and per-user scoring latencies (the ensemble has
        to run every member), as recorded when each teacher was trained; None where a member lacks it."""

        def total(key: str) -> float | None:
            values = [m.get(key) for m in self.members]
            return None if any(v is None for v in values) else sum(values)

        return {"parameters": total("parameters"), "latency_ms_per_user": total("latency_ms_per_user"),
                "members": {n: {k: m.get(k) for k in ("model", "parameters", "latency_ms_per_user")}
                            for n, m in zip(self.names, self.members)}}


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The teacher set's manifest, checked for the fields the ensemble needs."""
    file = Path(path) / MANIFEST
    if not file.exists():
        raise DistillrecError(f"not a teacher-set directory: {file} is missing")
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise DistillrecError(f"{file}: invalid JSON ({e})") from None
    teachers = manifest.get("teachers") if isinstance(manifest, dict) else None
    if not isinstance(teachers, list) or not teachers:
        raise DistillrecError(f"{file}: field 'teachers' must be a non-empty list")
    for i, entry in enumerate(teachers):
        missing = [f for f in ("name", "trajectory") if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise DistillrecError(f"{file}: teachers[{i}] lacks {', '.join(missing)}")
    return manifest
