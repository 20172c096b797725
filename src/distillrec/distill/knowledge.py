"""Teacher knowledge, computed once and cached: top-N lists per user and per item, and representations.

- user side: per user, the teacher's top-N items among those the user has *not* interacted with in train
  (train scores set to −inf before ``topk``), with the teacher scores, in teacher order;
- item side: per item, the top-N users that have not interacted with it. When the teacher's score is a dot
  product of ``user_repr`` and ``item_repr`` (checked numerically on a few pairs), items are chunked and
  scored against all user representations; otherwise the user chunks of ``full_scores`` are streamed and a
  running per-item top-N is merged chunk by chunk;
- representations: ``user_repr`` / ``item_repr`` of every entity (DE).

Everything runs in chunks on the teacher's device, bounded by ``chunk_elems`` scores at a time: never a dense
users × items matrix. The cache is one ``torch.save`` of a dict of tensors (written atomically, read with
``weights_only=True``) named by a hash of the teacher's state_dict, the list lengths and the data set
(id-map fingerprint and the training pattern).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.models.base import Recommender
from distillrec.utils import DistillrecError, atomic_torch_save

FORMAT_VERSION = 1
DEFAULT_CHUNK_ELEMS = 1 << 24  # 16M scores (64 MB of float32) per chunk


@dataclass(frozen=True)
class KnowledgeSpec:
    """What a method needs: list lengths (0 = none) and whether representations are needed."""

    n_user_topk: int = 0
    n_item_topk: int = 0
    reprs: bool = False

    def merge(self, other: KnowledgeSpec) -> KnowledgeSpec:
        return KnowledgeSpec(max(self.n_user_topk, other.n_user_topk), max(self.n_item_topk, other.n_item_topk),
                             self.reprs or other.reprs)


@dataclass
class TeacherKnowledge:
    user_topk: Tensor | None = None  # Long [n_users, N]: unobserved items, teacher order
    user_topk_scores: Tensor | None = None  # Float [n_users, N]
    item_topk: Tensor | None = None  # Long [n_items, N]: non-interacting users, teacher order
    item_topk_scores: Tensor | None = None  # Float [n_items, N]
    user_repr: Tensor | None = None  # Float [n_users, d_t]
    item_repr: Tensor | None = None  # Float [n_items, d_t]
    key: str = ""
    from_cache: bool = False

    def tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), Tensor)}

    def to(self, device: torch.device | str) -> TeacherKnowledge:
        moved = {name: t.to(device) for name, t in self.tensors().items()}
        return TeacherKnowledge(**moved, key=self.key, from_cache=self.from_cache)

    def save(self, path: str | Path) -> Path:
        blob = {name: t.detach().cpu().contiguous() for name, t in self.tensors().items()}
        blob["key"] = self.key
        blob["format"] = FORMAT_VERSION
        return atomic_torch_save(path, blob)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> TeacherKnowledge:
        blob = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: not a distillrec teacher-knowledge file (format {FORMAT_VERSION})")
        names = {f.name for f in fields(cls)} - {"key", "from_cache"}
        tensors = {k: v for k, v in blob.items() if k in names}
        return cls(**tensors, key=str(blob.get("key", "")), from_cache=True)


# -- hashing ------------------------------------------------------------------------------------------------
def state_dict_hash(model: torch.nn.Module) -> str:
    """sha256 over the class name and every state_dict entry (name, dtype, shape, raw bytes)."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def knowledge_key(teacher: Recommender, dataset: Dataset, spec: KnowledgeSpec) -> str:
    h = hashlib.sha256(state_dict_hash(teacher).encode())
    h.update(f"|{dataset.fingerprint()}|{spec.n_user_topk}|{spec.n_item_topk}|{spec.reprs}|v{FORMAT_VERSION}".encode())
    # The fingerprint covers ids only; two splits of one data set must not share lists.
    h.update(dataset.train.indptr.tobytes())
    h.update(dataset.train.indices.tobytes())
    return h.hexdigest()[:24]


# -- computation --------------------------------------------------------------------------------------------
def _clip(n: int, n_cols: int, max_row_nnz: int, side: str) -> int:
    limit = n_cols - max_row_nnz
    if n > limit:
        warnings.warn(f"{side} top-N list cut from {n} to {limit}: some row has only {limit} unobserved entries",
                      stacklevel=3)
    return max(0, min(n, limit))


def _mask_train(scores: Tensor, indptr: Tensor, indices: Tensor, r0: int, r1: int) -> None:
    """Set scores[r − r0, c] = −inf for every training pair (r, c) with r0 ≤ r < r1, in place."""
    start, end = int(indptr[r0]), int(indptr[r1])
    if end == start:
        return
    lengths = indptr[r0 + 1:r1 + 1] - indptr[r0:r1]
    rows = torch.repeat_interleave(torch.arange(r1 - r0, device=scores.device), lengths)
    scores[rows, indices[start:end]] = float("-inf")


def _csr_tensors(m: sp.csr_matrix, device: torch.device) -> tuple[Tensor, Tensor]:
    return (torch.from_numpy(m.indptr.astype(np.int64)).to(device),
            torch.from_numpy(m.indices.astype(np.int64)).to(device))


def _is_dot_product(teacher: Recommender, n_users: int, n_items: int, device: torch.device) -> bool:
    g = torch.Generator().manual_seed(0)
    users = torch.randint(0, n_users, (64,), generator=g).to(device)
    items = torch.randint(0, n_items, (64,), generator=g).to(device)
    try:
        ur, ir, s = teacher.user_repr(users), teacher.item_repr(items), teacher.score(users, items)
    except Exception:  # no usable representations: the generic full_scores path works for any model
        return False
    if ur.dim() != 2 or ur.shape != ir.shape:
        return False
    return torch.allclose(s.float().reshape(-1), (ur * ir).sum(-1).float(), rtol=1e-4, atol=1e-5)


def _all_reprs(fn, n: int, chunk: int, device: torch.device) -> Tensor:
    return torch.cat([fn(torch.arange(i, min(i + chunk, n), device=device)).float()
                      for i in range(0, n, chunk)])


@torch.no_grad()
def compute_knowledge(
    teacher: Recommender, dataset: Dataset, spec: KnowledgeSpec, chunk_elems: int = DEFAULT_CHUNK_ELEMS,
    item_side: str = "auto",
) -> TeacherKnowledge:
    """Compute ``spec``'s knowledge with ``teacher`` on its own device. ``item_side``: auto | dot | full_scores."""
    if item_side not in ("auto", "dot", "full_scores"):
        raise ValueError(f"item_side must be 'auto', 'dot' or 'full_scores', got {item_side!r}")
    device = teacher.device
    teacher.eval()
    teacher.prepare_eval(dataset, "valid")
    n_users, n_items = dataset.n_users, dataset.n_items
    train = dataset.train
    train_t = train.T.tocsr()
    n_u = _clip(spec.n_user_topk, n_items, int(np.diff(train.indptr).max(initial=0)), "user-side")
    n_i = _clip(spec.n_item_topk, n_users, int(np.diff(train_t.indptr).max(initial=0)), "item-side")
    out = TeacherKnowledge()
    dot = n_i > 0 and item_side != "full_scores" and (
        item_side == "dot" or _is_dot_product(teacher, n_users, n_items, device))
    stream_items = n_i > 0 and not dot

    if n_u > 0 or stream_items:
        indptr, indices = _csr_tensors(train, device)
        chunk = max(1, chunk_elems // n_items)
        top_ids, top_scores = [], []
        best_s = torch.full((n_items, n_i), float("-inf"), device=device) if stream_items else None
        best_u = torch.full((n_items, n_i), -1, dtype=torch.long, device=device) if stream_items else None
        for r0 in range(0, n_users, chunk):
            r1 = min(r0 + chunk, n_users)
            users = torch.arange(r0, r1, device=device)
            scores = teacher.full_scores(users).float()
            _mask_train(scores, indptr, indices, r0, r1)
            if n_u > 0:
                s, i = scores.topk(n_u, dim=1)
                top_ids.append(i)
                top_scores.append(s)
            if stream_items:
                # Merge this chunk's users into every item's running top-N.
                cand_s = torch.cat([best_s, scores.T], dim=1)
                cand_u = torch.cat([best_u, users.expand(n_items, -1)], dim=1)
                best_s, pos = cand_s.topk(n_i, dim=1)
                best_u = cand_u.gather(1, pos)
        if n_u > 0:
            out.user_topk, out.user_topk_scores = torch.cat(top_ids), torch.cat(top_scores)
        if stream_items:
            out.item_topk, out.item_topk_scores = best_u, best_s
    if dot:
        indptr_t, indices_t = _csr_tensors(train_t, device)
        users_repr = _all_reprs(teacher.user_repr, n_users, max(1, chunk_elems // 512), device)
        chunk = max(1, chunk_elems // n_users)
        ids, vals = [], []
        for c0 in range(0, n_items, chunk):
            c1 = min(c0 + chunk, n_items)
            scores = teacher.item_repr(torch.arange(c0, c1, device=device)).float() @ users_repr.T
            _mask_train(scores, indptr_t, indices_t, c0, c1)
            s, u = scores.topk(n_i, dim=1)
            ids.append(u)
            vals.append(s)
        out.item_topk, out.item_topk_scores = torch.cat(ids), torch.cat(vals)
    if spec.reprs:
        chunk = max(1, chunk_elems // 512)
        try:
            out.user_repr = _all_reprs(teacher.user_repr, n_users, chunk, device)
            out.item_repr = _all_reprs(teacher.item_repr, n_items, chunk, device)
        except NotImplementedError:
            raise DistillrecError(f"teacher {type(teacher).__name__} has no user_repr/item_repr, which "
                                  "representation distillation (DE) needs") from None
    return out


def load_or_compute_knowledge(
    teacher: Recommender, dataset: Dataset, spec: KnowledgeSpec, cache_dir: str | Path | None = None,
    chunk_elems: int = DEFAULT_CHUNK_ELEMS, item_side: str = "auto",
) -> TeacherKnowledge:
    """The cached knowledge when ``cache_dir`` holds it for this exact teacher, spec and data; else compute
    (and write it there). ``from_cache`` on the result tells which happened."""
    key = knowledge_key(teacher, dataset, spec)
    path = Path(cache_dir) / f"teacher-knowledge-{key}.pt" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            known = TeacherKnowledge.load(path, teacher.device)
            if known.key == key:
                return known
            warnings.warn(f"{path}: key mismatch, recomputing", stacklevel=2)
        except Exception as exc:  # a truncated or foreign file is a cache miss, not a crash
            warnings.warn(f"{path}: unreadable teacher-knowledge cache ({exc}); recomputing", stacklevel=2)
    known = compute_knowledge(teacher, dataset, spec, chunk_elems=chunk_elems, item_side=item_side)
    known.key = key
    if path is not None:
        known.save(path)
    return known
