"""Teacher knowledge, computed once and cached: top-N lists per user and per item, and representations.

- user side: per user, the teacher's top-N items among those the user has *not* interacted with in train
  (train scores set to −inf before the selection), with the teacher scores, in teacher order;
- item side: per item, the top-N users that have not interacted with it;
- representations: ``user_repr`` / ``item_repr`` of every entity (DE).

Both sides are blocks of rows (users, or items) scored against every column, masked and cut by
``topn.select_topk`` (exact; equal scores ordered by the lower id, so a list does not depend on the block
size, the thread count or the device, and the top-10 list is the first 10 entries of the top-500 list). When
the teacher's score is the dot product of ``user_repr`` and ``item_repr`` (checked numerically on a few
pairs) a block is one matmul of representations; otherwise users go through ``full_scores`` and items
through the list form of ``score``. On a CPU the blocks run side by side, one thread each, on every core.

Cost (CiteULike, 5,220 × 25,182, BPR dim 200; 2-core shared machine): the user side's matmuls are 52 GFLOP
(~1.2 s on one thread); the selection of 500 of 25,182 per user adds ~0.6 s (``torch.topk``: ~1.2 s); the
item side (500 of 5,220 users per item) is another ~0.9 s of matmul and ~1.7 s of selection. With both cores:
~1 s for the user side, ~2.6 s for both.

Everything runs in chunks on the teacher's device, bounded by ``chunk_elems`` scores at a time (per thread):
never a dense users × items matrix. The cache is one ``torch.save`` of a dict of tensors (written atomically,
read with ``weights_only=True``) named by a hash of the teacher's state_dict and the data set (id-map
fingerprint and the training pattern) plus the list lengths; a file with longer lists serves shorter ones
(RD's top-10 from RRD's top-500: a prefix, by the tie rule).
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from tqdm.auto import tqdm

from distillrec.data.dataset import Dataset
from distillrec.distill.topn import select_topk
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


def _source_key(teacher: Recommender, dataset: Dataset) -> str:
    """The teacher and the data, without the list lengths."""
    h = hashlib.sha256(state_dict_hash(teacher).encode())
    h.update(f"|{dataset.fingerprint()}|v{FORMAT_VERSION}".encode())
    # The fingerprint covers ids only; two splits of one data set must not share lists.
    h.update(dataset.train.indptr.tobytes())
    h.update(dataset.train.indices.tobytes())
    return h.hexdigest()[:24]


def knowledge_key(teacher: Recommender, dataset: Dataset, spec: KnowledgeSpec) -> str:
    return f"{_source_key(teacher, dataset)}-u{spec.n_user_topk}-i{spec.n_item_topk}-r{int(spec.reprs)}"


_KEY = re.compile(r"^(?P<source>[0-9a-f]{24})-u(?P<u>\d+)-i(?P<i>\d+)-r(?P<r>[01])$")


def _covers(key: str, spec: KnowledgeSpec, source: str) -> bool:
    """Whether a file of ``key`` holds ``spec``'s knowledge (same source, lists at least as long)."""
    m = _KEY.match(key)
    return bool(m) and m["source"] == source and int(m["u"]) >= spec.n_user_topk \
        and int(m["i"]) >= spec.n_item_topk and (m["r"] == "1" or not spec.reprs)


def restrict(known: TeacherKnowledge, spec: KnowledgeSpec) -> TeacherKnowledge:
    """``spec``'s part of longer lists: their first entries. Exact, because equal scores are ordered by id, so
    the top-10 list is the top-500 list's first 10 entries."""
    out = TeacherKnowledge(key=known.key, from_cache=known.from_cache)
    if spec.n_user_topk and known.user_topk is not None:
        out.user_topk = known.user_topk[:, :spec.n_user_topk].contiguous()
        out.user_topk_scores = known.user_topk_scores[:, :spec.n_user_topk].contiguous()
    if spec.n_item_topk and known.item_topk is not None:
        out.item_topk = known.item_topk[:, :spec.n_item_topk].contiguous()
        out.item_topk_scores = known.item_topk_scores[:, :spec.n_item_topk].contiguous()
    if spec.reprs:
        out.user_repr, out.item_repr = known.user_repr, known.item_repr
    return out


# -- computation --------------------------------------------------------------------------------------------
def _clip(n: int, n_cols: int, max_row_nnz: int, side: str) -> int:
    limit = n_cols - max_row_nnz
    if n > limit:
        warnings.warn(f"{side} top-N list cut from {n} to {limit}: some row has only {limit} unobserved entries",
                      stacklevel=3)
    return max(0, min(n, limit))


def block_pairs(indptr: Tensor, indices: Tensor, r0: int, r1: int) -> tuple[Tensor, Tensor]:
    """(rows − r0, cols) of the CSR pattern's pairs with r0 ≤ row < r1, in CSR order."""
    start, end = int(indptr[r0]), int(indptr[r1])
    lengths = indptr[r0 + 1:r1 + 1] - indptr[r0:r1]
    return torch.repeat_interleave(torch.arange(r1 - r0, device=indptr.device), lengths), indices[start:end]


def _mask_train(scores: Tensor, indptr: Tensor, indices: Tensor, r0: int, r1: int) -> None:
    """Set scores[r − r0, c] = −inf for every training pair (r, c) with r0 ≤ r < r1, in place."""
    rows, cols = block_pairs(indptr, indices, r0, r1)
    scores[rows, cols] = float("-inf")


def csr_tensors(m: sp.csr_matrix, device: torch.device) -> tuple[Tensor, Tensor]:
    """(indptr, indices) of ``m`` as int64 tensors on ``device``."""
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


def top_lists(block_scores: Callable[[Tensor], Tensor], n_rows: int, n_cols: int, exclude: sp.csr_matrix,
              k: int, chunk_elems: int, device: torch.device, workers: int = 1, k_cols: int = 0) \
        -> tuple[tuple[Tensor, Tensor] | None, tuple[Tensor, Tensor] | None]:
    """Per row, the k columns of highest score outside ``exclude`` (rows × cols), in teacher order, as
    (ids, values); and with ``k_cols`` > 0, per column the k_cols rows of highest score, from the same pass.

    Blocks of rows are scored by ``block_scores(rows) -> [B, n_cols]``, masked, and cut by
    ``topn.select_topk`` (exact, ties by the lower index). The column side is for teachers whose scores are not
    products of representations (a rank ensemble, NeuMF, an autoencoder): scoring a block of *items* for every
    user costs as much as scoring every item, so each masked block, transposed, extends every column's running
    top-k_cols rows instead. ``workers`` > 1 (CPU): that many threads, each over a contiguous run of blocks; their
    column lists are merged in row order. With one worker the blocks are scored in row order (HetComp's
    ``rank_lists`` relies on it to read each block's raw scores before they are masked)."""
    if not (k or k_cols):
        return None, None
    indptr, indices = csr_tensors(exclude, device)
    ids = torch.empty(n_rows, k, dtype=torch.long, device=device)
    vals = torch.empty(n_rows, k, dtype=torch.float32, device=device)
    step = max(1, chunk_elems // n_cols)
    starts = list(range(0, n_rows, step))
    n_groups = min(workers, len(starts)) if device.type == "cpu" else 1
    groups = [g.tolist() for g in np.array_split(np.array(starts), n_groups)]

    def merge(col_vals: Tensor, col_ids: Tensor) -> tuple[Tensor, Tensor]:
        # The running lists come first and hold lower row ids, and select_topk breaks ties by position,
        # so equal scores stay ordered by row id whatever the blocks.
        top, pos = select_topk(col_vals, min(k_cols, col_vals.shape[1]))
        return top, col_ids.gather(1, pos)

    # minutes for a deep teacher on a large catalogue: a bar on a terminal (tqdm's update is thread-safe)
    bar = tqdm(total=len(starts), desc=f"teacher top-{k or k_cols} lists", unit="block", leave=False,
               disable=None, mininterval=1.0)

    @torch.no_grad()  # grad mode is per thread: the pool's threads do not inherit the caller's no_grad
    def run(group: list[int]) -> tuple[Tensor, Tensor]:
        col_vals = torch.empty(n_cols, 0, device=device)
        col_ids = torch.empty(n_cols, 0, dtype=torch.long, device=device)
        for r0 in group:
            bar.update()
            r1 = min(r0 + step, n_rows)
            scores = block_scores(torch.arange(r0, r1, device=device)).float()
            _mask_train(scores, indptr, indices, r0, r1)
            if k:
                vals[r0:r1], ids[r0:r1] = select_topk(scores, k)
            if k_cols:
                col_vals = torch.cat([col_vals, scores.T], dim=1)
                col_ids = torch.cat([col_ids, torch.arange(r0, r1, device=device).expand(n_cols, -1)], dim=1)
                if col_vals.shape[1] > k_cols:
                    col_vals, col_ids = merge(col_vals, col_ids)
        return col_vals, col_ids

    with bar:
        if n_groups > 1:
            with ThreadPoolExecutor(n_groups) as pool:
                parts = list(pool.map(run, groups))
        else:
            parts = [run(g) for g in groups]
    cols = None
    if k_cols:
        col_vals, col_ids = merge(torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1))
        cols = col_ids, col_vals
    return ((ids, vals) if k else None), cols


def _score_functions(teacher: Recommender, n_users: int, n_items: int, dot: bool, chunk_elems: int) \
        -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor] | None]:
    """(users → [B, n_items], items → [B, n_users]) teacher scores. ``dot``: products of the representations,
    gathered once; otherwise ``full_scores`` for users and no item function (``top_lists`` builds that side
    from the user pass)."""
    device = teacher.device
    if dot:
        users_repr = _all_reprs(teacher.user_repr, n_users, max(1, chunk_elems // 512), device)
        items_repr = _all_reprs(teacher.item_repr, n_items, max(1, chunk_elems // 512), device)
        users_t, items_t = users_repr.T.contiguous(), items_repr.T.contiguous()
        return (lambda users: users_repr[users] @ items_t), (lambda items: items_repr[items] @ users_t)
    return teacher.full_scores, None


@torch.no_grad()
def compute_knowledge(
    teacher: Recommender, dataset: Dataset, spec: KnowledgeSpec, chunk_elems: int = DEFAULT_CHUNK_ELEMS,
    item_side: str = "auto", threads: int | None = None,
) -> TeacherKnowledge:
    """Compute ``spec``'s knowledge with ``teacher`` on its own device.

    ``item_side`` (kept name; it picks the scoring of both sides): ``"dot"`` — products of the teacher's
    representations (an error if they are not its scores); ``"full_scores"`` — the teacher's own
    ``full_scores``, both sides from one pass over user blocks; ``"auto"`` — dot when a numerical check on a few pairs
    says the scores are those products. ``threads``: torch threads for this one-off step on a CPU (default:
    ``os.cpu_count()``, or the current setting if higher), restored on return."""
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
    saved_threads = torch.get_num_threads()
    workers = max(saved_threads, threads or os.cpu_count() or 1) if device.type == "cpu" else 1
    # Blocks run side by side on one torch thread each: the matmul, the selection's passes and its numpy
    # steps (which ignore torch's thread pool) all scale with the cores, with no fork/join per operation.
    torch.set_num_threads(1 if workers > 1 else saved_threads)
    try:
        if n_u or n_i:
            dot = item_side != "full_scores" and _is_dot_product(teacher, n_users, n_items, device)
            if item_side == "dot" and not dot:
                raise DistillrecError(f"item_side='dot': the scores of teacher {type(teacher).__name__} are not "
                                      "the dot products of its user_repr and item_repr")
            user_scores, item_scores = _score_functions(teacher, n_users, n_items, dot, chunk_elems)
            if dot:  # each side by its own blocks: a block of items costs only its own products
                users = top_lists(user_scores, n_users, n_items, train, n_u, chunk_elems, device, workers)[0]
                items = top_lists(item_scores, n_items, n_users, train_t, n_i, chunk_elems, device, workers)[0]
            else:
                users, items = top_lists(user_scores, n_users, n_items, train, n_u, chunk_elems, device, workers,
                                      k_cols=n_i)
            if users is not None:
                out.user_topk, out.user_topk_scores = users
            if items is not None:
                out.item_topk, out.item_topk_scores = items
        if spec.reprs:
            chunk = max(1, chunk_elems // 512)
            try:
                out.user_repr = _all_reprs(teacher.user_repr, n_users, chunk, device)
                out.item_repr = _all_reprs(teacher.item_repr, n_items, chunk, device)
            except NotImplementedError:
                raise DistillrecError(f"teacher {type(teacher).__name__} has no user_repr/item_repr, which "
                                      "representation distillation (DE) needs") from None
    finally:
        torch.set_num_threads(saved_threads)
    return out


def load_or_compute_knowledge(
    teacher: Recommender, dataset: Dataset, spec: KnowledgeSpec, cache_dir: str | Path | None = None,
    chunk_elems: int = DEFAULT_CHUNK_ELEMS, item_side: str = "auto",
) -> TeacherKnowledge:
    """The cached knowledge when ``cache_dir`` holds it for this teacher and data — written for this spec, or
    for one with longer lists (cut to ``spec``, see ``restrict``) — else compute it (and write it there).
    ``from_cache`` on the result tells which happened."""
    key = knowledge_key(teacher, dataset, spec)
    if cache_dir is not None:
        source = _source_key(teacher, dataset)
        exact = Path(cache_dir) / f"teacher-knowledge-{key}.pt"
        longer = sorted(p for p in Path(cache_dir).glob(f"teacher-knowledge-{source}-*.pt")
                        if p != exact and _covers(p.name[len("teacher-knowledge-"):-3], spec, source))
        for path in [exact, *longer] if exact.exists() else longer:
            try:
                known = TeacherKnowledge.load(path, teacher.device)
            except Exception as exc:  # a truncated or foreign file is a cache miss, not a crash
                warnings.warn(f"{path}: unreadable teacher-knowledge cache ({exc}); recomputing", stacklevel=2)
                continue
            if known.key == path.name[len("teacher-knowledge-"):-3] and _covers(known.key, spec, source):
                cut = restrict(known, spec)
                cut.key = key
                return cut
            warnings.warn(f"{path}: key mismatch, ignored", stacklevel=2)
    known = compute_knowledge(teacher, dataset, spec, chunk_elems=chunk_elems, item_side=item_side)
    known.key = key
    if cache_dir is not None:
        known.save(Path(cache_dir) / f"teacher-knowledge-{key}.pt")
    return known
