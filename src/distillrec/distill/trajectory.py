"""Teacher trajectories for HetComp: a few checkpoints' ranking knowledge, recorded while a teacher trains.

A trajectory holds, for V checkpoints of one teacher (the last one is the converged = best model):

- ``topk`` int32 [V, n_users, K_e]: each user's top-K_e *unobserved* items, in rank order (position = rank);
- ``rank_std`` float16 [V, n_users, K_e]: the standard deviation of each listed item's rank over a queue of
  the teacher's most recent recorded epochs (ConCF's "consistency", HetComp Eq. 8; spec §A.4);
- ``observed_rank`` int32 [V, nnz] and ``observed_std`` float16 [V, nnz]: the rank of each training
  interaction among its user's training items (CSR order of ``dataset.train``) and its std over the queue,
  from which the ensemble orders the observed list P_u.

Never a users × items matrix: V · (n_users · K_e + nnz) · 6 bytes in all (``store_bytes``). The authors ship
dense U × I importance pickles instead (12.6 GB for CiteULike).

Rank variability: an item's rank in an earlier queued epoch is read from that epoch's top-``queue_topk``
list (default 2·K_e); an item missing there gets the censored rank ``queue_topk``. Ranks of the observed
items are exact (all of them are kept per queued epoch).

``TrajectoryRecorder`` is a trainer callback (``on_epoch_end`` / ``on_fit_end``): every ``every`` epochs
(and at every validation) it ranks all items for all users in user chunks, pushes the lists into the queue
and keeps the epoch's snapshot in a bounded pool (when the pool overflows, every other snapshot is dropped
and the recording stride doubles, so the pool stays spread evenly over training). At the end of training
the best epoch's snapshot becomes the last checkpoint and the V − 1 earlier ones are spread evenly over the
path to it: by default at 1/V, 2/V, … of the way (like saving every best/V epochs), so checkpoint 0 is a
partly trained model; ``start="first"`` puts checkpoint 0 at the first recorded epoch instead. That almost
untrained model ranks like popularity, and a small student that first fits it collapses onto one direction
and then barely moves (ml-100k, MF dim 6: valid Recall@50 stuck at 0.26-0.32 for 50 epochs after the switch,
against 0.57 when the curriculum starts one checkpoint later). The result is saved atomically as
``trajectory.pt`` in the run directory. The recorder's own state (queue, pool, best) travels in the trainer's
``last.pt`` (``state_dict`` / ``load_state_dict``), so a teacher cut short resumes with its trajectory.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.distill.knowledge import block_pairs, csr_tensors, top_lists
from distillrec.models.base import Recommender
from distillrec.utils import DistillrecError, atomic_torch_save

FORMAT = "distillrec-trajectory/1"
FILENAME = "trajectory.pt"
BYTES_PER_ENTRY = 4 + 2  # int32 item (or rank) + float16 std


def train_hash(train: sp.csr_matrix) -> str:
    """Short hash of the training pattern: observed ranks are aligned with it, and lists exclude it."""
    h = hashlib.sha256(np.asarray(train.indptr, dtype=np.int64).tobytes())
    h.update(np.asarray(train.indices, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def store_bytes(n_users: int, n_train: int, n_checkpoints: int, topk: int) -> int:
    """Tensor bytes of one teacher's trajectory: V · (n_users · K_e + nnz) · (int32 + float16)."""
    return n_checkpoints * (n_users * topk + n_train) * BYTES_PER_ENTRY


@dataclass
class Trajectory:
    topk: Tensor  # int32 [V, n_users, K_e]
    rank_std: Tensor  # float16 [V, n_users, K_e]
    observed_rank: Tensor  # int32 [V, nnz]
    observed_std: Tensor  # float16 [V, nnz]
    epochs: list[int]
    queue_len: int
    queue_topk: int
    dataset_fingerprint: str
    train_hash: str
    model_name: str = ""

    @property
    def n_checkpoints(self) -> int:
        return int(self.topk.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.topk.shape[1])

    @property
    def topk_len(self) -> int:
        return int(self.topk.shape[2])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.topk, self.rank_std, self.observed_rank,
                                                           self.observed_std))

    def save(self, path: str | Path) -> Path:
        blob: dict[str, Any] = {
            "format": FORMAT, "topk": self.topk.contiguous(), "rank_std": self.rank_std.contiguous(),
            "observed_rank": self.observed_rank.contiguous(), "observed_std": self.observed_std.contiguous(),
            "epochs": list(map(int, self.epochs)), "queue_len": int(self.queue_len),
            "queue_topk": int(self.queue_topk), "dataset_fingerprint": self.dataset_fingerprint,
            "train_hash": self.train_hash, "model_name": self.model_name,
        }
        return atomic_torch_save(path, blob)

    @classmethod
    def load(cls, path: str | Path, dataset: Dataset | None = None) -> Trajectory:
        path = Path(path)
        if not path.exists():
            raise DistillrecError(f"trajectory file not found: {path}")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated or foreign file
            raise DistillrecError(f"{path}: not a readable trajectory file ({type(e).__name__}: {e})") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise DistillrecError(f"{path}: not a distillrec trajectory (missing format tag {FORMAT!r})")
        fields = ("topk", "rank_std", "observed_rank", "observed_std", "epochs", "queue_len", "queue_topk",
                  "dataset_fingerprint", "train_hash", "model_name")
        missing = [f for f in fields if f not in blob]
        if missing:
            raise DistillrecError(f"{path}: trajectory lacks field(s) {', '.join(missing)}")
        traj = cls(**{f: blob[f] for f in fields})
        traj.validate(path)
        if dataset is not None:
            traj.check_dataset(dataset, path)
        return traj

    def validate(self, where: str | Path = "trajectory") -> None:
        v = self.topk.shape[0] if self.topk.dim() == 3 else 0
        if self.topk.dim() != 3 or self.rank_std.shape != self.topk.shape:
            raise DistillrecError(f"{where}: topk / rank_std must both be [V, n_users, K_e], got "
                                  f"{tuple(self.topk.shape)} and {tuple(self.rank_std.shape)}")
        if self.observed_rank.dim() != 2 or self.observed_rank.shape[0] != v \
                or self.observed_std.shape != self.observed_rank.shape:
            raise DistillrecError(f"{where}: observed_rank / observed_std must be [V={v}, nnz], got "
                                  f"{tuple(self.observed_rank.shape)} and {tuple(self.observed_std.shape)}")
        if len(self.epochs) != v:
            raise DistillrecError(f"{where}: {len(self.epochs)} epochs listed for {v} checkpoints")

    def check_dataset(self, dataset: Dataset, where: str | Path = "trajectory") -> None:
        if self.dataset_fingerprint != dataset.fingerprint():
            raise DistillrecError(f"{where}: recorded on another data set (id-map fingerprint "
                                  f"{self.dataset_fingerprint}) than {dataset.name!r} ({dataset.fingerprint()})")
        if self.train_hash != train_hash(dataset.train):
            raise DistillrecError(f"{where}: recorded on another training split of {dataset.name!r}; the "
                                  "observed ranks would not line up")
        if self.n_users != dataset.n_users or self.observed_rank.shape[1] != dataset.train.nnz:
            raise DistillrecError(f"{where}: shapes do not match {dataset.name!r} ({dataset.n_users} users, "
                                  f"{dataset.train.nnz} training interactions)")


# -- ranking one model ----------------------------------------------------------------------------------------
def unobserved_limit(dataset: Dataset) -> int:
    """The longest list of unobserved items every user has."""
    return dataset.n_items - int(np.diff(dataset.train.indptr).max(initial=0))


@torch.no_grad()
def rank_lists(model: Recommender, dataset: Dataset, k: int, chunk_elems: int = 1 << 24) -> tuple[Tensor, Tensor]:
    """The model's top-``k`` unobserved items per user (int32 [n_users, k], rank order, ties → lower item id)
    and the rank of every training interaction among its user's training items (int32 [nnz], CSR order).

    Users are scored in chunks of ``chunk_elems // n_items`` by ``knowledge.top_lists`` (the teacher-knowledge
    pass); the model is put in eval mode for this and its training mode restored afterwards."""
    if not 0 < k <= unobserved_limit(dataset):
        raise DistillrecError(f"a top-{k} list of unobserved items needs k in [1, {unobserved_limit(dataset)}] "
                              f"on {dataset.name!r}")
    was_training = model.training
    model.eval()
    try:
        model.prepare_eval(dataset, "valid")
        device = model.device
        indptr, indices = csr_tensors(dataset.train, device)
        obs: list[Tensor] = []

        def block_scores(users: Tensor) -> Tensor:
            # the observed items' ranks come from the raw block, before top_lists masks those items out
            scores = model.full_scores(users).float()
            r0, r1 = int(users[0]), int(users[-1]) + 1
            rows, cols = block_pairs(indptr, indices, r0, r1)
            obs.append(_ranks_within_rows(scores[rows, cols], rows, indptr[r0:r1] - indptr[r0]))
            return scores

        (items, values), _ = top_lists(block_scores, dataset.n_users, dataset.n_items, dataset.train, k,
                                       chunk_elems, device)
        if torch.isnan(values).any():
            raise DistillrecError(f"{type(model).__name__} produced NaN scores while recording its trajectory")
        return items.to(torch.int32).cpu(), torch.cat(obs) if obs else torch.zeros(0, dtype=torch.int32)
    finally:
        model.train(was_training)


def _ranks_within_rows(values: Tensor, rows: Tensor, row_start: Tensor) -> Tensor:
    """0-based rank of each entry among the entries of its row, by value descending (ties keep the input
    order, i.e. the lower item id first). ``rows`` ascending, ``row_start[r]`` = offset of row r's first entry."""
    order = torch.sort(values, descending=True, stable=True).indices
    order = order[torch.sort(rows[order], stable=True).indices]  # grouped by row, value order inside
    pos = torch.arange(values.numel(), device=values.device) - row_start[rows[order]]
    ranks = torch.empty(values.numel(), dtype=torch.int32, device=values.device)
    ranks[order] = pos.to(torch.int32)
    return ranks.cpu()


def queue_rank_std(top: Tensor, queue: list[Tensor], censor: int) -> Tensor:
    """Population std [n_users, K] of each item of ``top`` [n_users, K] over its rank in every list of
    ``queue`` (each [n_users, K_q], rank order); an item absent from a list has the censored rank ``censor``."""
    top = top.long()
    ranks = []
    for lists in queue:  # one pass per queued epoch (≤ queue_len), vectorised over users
        srt, idx = lists.long().sort(dim=1)
        pos = torch.searchsorted(srt, top).clamp_(max=srt.shape[1] - 1)
        found = srt.gather(1, pos) == top
        ranks.append(torch.where(found, idx.gather(1, pos), torch.full_like(pos, censor)))
    return torch.stack(ranks).float().std(dim=0, unbiased=False)


# -- the recorder ---------------------------------------------------------------------------------------------
@dataclass
class _Snapshot:
    epoch: int
    topk: Tensor
    rank_std: Tensor
    observed_rank: Tensor
    observed_std: Tensor


class TrajectoryRecorder:
    """Trainer callback that records ``k_checkpoints`` checkpoints of a teacher's ranking knowledge."""

    def __init__(self, dataset: Dataset, k_checkpoints: int = 4, topk: int = 100, queue_len: int = 5,
                 queue_topk: int | None = None, every: int = 1, pool_size: int | None = None,
                 chunk_elems: int = 1 << 24, filename: str = FILENAME, start: str = "interval") -> None:
        for name, value in (("k_checkpoints", k_checkpoints), ("topk", topk), ("queue_len", queue_len),
                            ("every", every)):
            if value < 1:
                raise DistillrecError(f"trajectory {name} must be ≥ 1, got {value}")
        limit = unobserved_limit(dataset)
        if topk > limit:
            raise DistillrecError(f"trajectory topk={topk} exceeds the {limit} unobserved items some user of "
                                  f"{dataset.name!r} has; lower topk")
        if start not in ("interval", "first"):
            raise DistillrecError(f"trajectory start must be 'interval' or 'first', got {start!r}")
        self.dataset = dataset
        self._train_hash = train_hash(dataset.train)  # checked on resume; hashed once, not per saved epoch
        self.start = start
        self.k_checkpoints, self.topk, self.queue_len, self.every = k_checkpoints, topk, queue_len, every
        self.queue_topk = min(max(queue_topk or 2 * topk, topk), limit)
        self.pool_size = max(2, pool_size or 4 * k_checkpoints)
        self.chunk_elems, self.filename = chunk_elems, filename
        self._queue: deque[tuple[Tensor, Tensor]] = deque(maxlen=queue_len)
        self._pool: list[tuple[int, _Snapshot]] = []
        self._stride, self._n_recorded = 1, 0
        self._best: _Snapshot | None = None
        self._best_score: float | None = None
        self._last: _Snapshot | None = None
        self.trajectory: Trajectory | None = None
        self.path: Path | None = None

    # -- resume: the state travels in the trainer's last.pt (plain tensors and numbers: weights_only loads it)
    def _settings(self) -> dict[str, Any]:
        return {"k_checkpoints": self.k_checkpoints, "topk": self.topk, "queue_len": self.queue_len,
                "queue_topk": self.queue_topk, "every": self.every, "pool_size": self.pool_size,
                "start": self.start, "train_hash": self._train_hash}

    def state_dict(self) -> dict[str, Any]:
        snapshots: dict[int, dict[str, Any]] = {}

        def ref(snap: _Snapshot | None) -> int | None:
            if snap is None:
                return None
            snapshots[snap.epoch] = vars(snap)  # pool, best and last share snapshots: stored once
            return snap.epoch

        return {"settings": self._settings(), "queue": [list(q) for q in self._queue],
                "pool": [[i, ref(snap)] for i, snap in self._pool], "stride": self._stride,
                "n_recorded": self._n_recorded, "best": ref(self._best), "best_score": self._best_score,
                "last": ref(self._last), "snapshots": snapshots}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("settings") != self._settings():
            raise DistillrecError(f"trajectory settings or training data differ from the checkpoint's "
                                  f"({state.get('settings')} vs {self._settings()}); start the run over")
        # the trainer maps its checkpoint to the model's device; the recorder keeps its lists on the CPU
        snaps = {e: _Snapshot(**{k: v.cpu() if isinstance(v, Tensor) else v for k, v in d.items()})
                 for e, d in state["snapshots"].items()}
        self._queue = deque((tuple(t.cpu() for t in q) for q in state["queue"]), maxlen=self.queue_len)
        self._pool = [(i, snaps[e]) for i, e in state["pool"]]
        self._stride, self._n_recorded = state["stride"], state["n_recorded"]
        self._best = snaps[state["best"]] if state["best"] is not None else None
        self._best_score = state["best_score"]
        self._last = snaps[state["last"]] if state["last"] is not None else None

    def record(self, model: Recommender, epoch: int) -> _Snapshot:
        """Rank everything with the model now, push it into the queue and return the epoch's snapshot."""
        lists, obs = rank_lists(model, self.dataset, self.queue_topk, self.chunk_elems)
        self._queue.append((lists, obs))
        top = lists[:, :self.topk].contiguous()
        std = queue_rank_std(top, [q[0] for q in self._queue], self.queue_topk)
        obs_std = torch.stack([q[1] for q in self._queue]).float().std(dim=0, unbiased=False)
        snap = _Snapshot(epoch, top, std.half(), obs, obs_std.half())
        self._last = snap
        return snap

    def on_epoch_end(self, trainer: Any, epoch: int, record: dict[str, Any]) -> None:
        evaluated = "valid" in record
        if epoch % self.every and not evaluated:
            return
        snap = self.record(trainer.model, epoch)
        if evaluated:  # the trainer's rule for its best checkpoint: strictly better than every earlier one
            score = record["valid"].get(trainer.config.valid_metric)
            if score is not None and (self._best_score is None or score > self._best_score):
                self._best_score, self._best = float(score), snap
        idx = self._n_recorded
        self._n_recorded += 1
        if idx % self._stride == 0:
            self._pool.append((idx, snap))
            if len(self._pool) > self.pool_size:  # thin: keep an even grid over the whole run
                self._stride *= 2
                self._pool = [(i, s) for i, s in self._pool if i % self._stride == 0]

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        best_epoch = int(result.best_epoch)
        known = [s for s in (self._best, self._last, *(s for _, s in self._pool)) if s is not None]
        final = next((s for s in known if s.epoch == best_epoch), None)
        if final is None and best_epoch == int(result.epochs_run) and best_epoch > 0:
            final = self.record(trainer.model, best_epoch)  # the model in hand is the best one
        if final is None:
            raise DistillrecError(f"trajectory: the best epoch {best_epoch} was not recorded (record every "
                                  "epoch, or at least at every validation)")
        self.trajectory = self.build(final, getattr(trainer.model, "name", ""))
        if getattr(trainer, "out_dir", None) is not None:
            self.path = self.trajectory.save(Path(trainer.out_dir) / self.filename)

    def build(self, final: _Snapshot, model_name: str = "") -> Trajectory:
        """The trajectory: V − 1 snapshots spread evenly along the recorded path towards ``final``."""
        earlier = sorted({s.epoch: s for _, s in self._pool if s.epoch < final.epoch}.values(),
                         key=lambda s: s.epoch)
        need = self.k_checkpoints - 1
        if len(earlier) < need:
            raise DistillrecError(
                f"trajectory: only {len(earlier)} recorded epoch(s) before the best epoch {final.epoch}, "
                f"{need} needed for {self.k_checkpoints} checkpoints; train longer, record more often "
                "(every=1) or ask for fewer checkpoints")
        n = len(earlier)
        if self.start == "first":  # checkpoint v sits v/(V−1) of the way along [first, …, final]
            idx = [round(v * n / need) for v in range(need)]
        else:  # checkpoint v sits (v+1)/V of the way from before the first record to final: spacing ≥ 1
            idx = [min(n - 1, max(0, round((v + 1) * (n + 1) / (need + 1)) - 1)) for v in range(need)]
        picks = [earlier[i] for i in idx]
        snaps = [*picks, final]
        return Trajectory(
            topk=torch.stack([s.topk for s in snaps]), rank_std=torch.stack([s.rank_std for s in snaps]),
            observed_rank=torch.stack([s.observed_rank for s in snaps]),
            observed_std=torch.stack([s.observed_std for s in snaps]), epochs=[s.epoch for s in snaps],
            queue_len=self.queue_len, queue_topk=self.queue_topk, dataset_fingerprint=self.dataset.fingerprint(),
            train_hash=train_hash(self.dataset.train), model_name=model_name)
