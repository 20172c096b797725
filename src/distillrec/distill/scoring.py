"""Student scores of rows against lists of columns ([R] rows, [R, N] columns → [R, N] scores): the inner loop
of RRD, IR-RRD, DCD, CD and RD, written two ways: generic, and fast for students whose scores are dot products
of representation tables (``Recommender.repr_tables``: BPR-MF's embeddings, LightGCN's propagated ones).

- ``side_scores``: any model, through ``score`` (the item side in pair form: one (user, item) pair per entry);
- ``table_side_scores``, lists that are a small share of the table (RRD's 40 + 40 of 25k items): a sampled
  dense-dense product (``torch.sparse.sampled_addmm``: only the R·N wanted entries of rows @ tableᵀ); the
  backward pass is a weighted embedding bag for the rows and a transposed sparse × dense product for the
  table. This never materialises the [R, N, d] gathered representations nor sends 56k indices through an
  embedding backward (which on CPU costs ~3× a plain ``index_put_``): about half the time of gathering the
  reprs and multiplying them for RRD's 700 users × 80 items per batch. The table's gradient is the floor of
  this path: 56k random rows of a 2 MB table per batch, ~1.5–2 ms on one core.
- ``table_side_scores``, lists that cover much of the table (CCD's bags: 10,000 of ~15,000 items per user,
  11,500 of ~12,200 users per item): the full product rows @ tableᵀ and a gather, 4–5× faster than either
  per-entry form there (``benchmarks/list_scoring.py``).

``ListScorer`` picks the fastest form a model admits, checked numerically on a few pairs.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from distillrec.models.base import Recommender
from distillrec.utils import DistillrecError


def side_scores(model: Recommender, rows: Tensor, cols: Tensor, side: str) -> Tensor:
    """Scores [B, N] of each row with its list: user side s(rows[b], cols[b, n]); item side s(cols[b, n], rows[b])
    (through the pair form of ``score``)."""
    if side == "user":
        return model.score(rows, cols)
    if side == "item":
        b, n = cols.shape
        return model.score(cols.reshape(-1), rows.repeat_interleave(n)).view(b, n)
    raise ValueError(f"side must be 'user' or 'item', got {side!r}")


def _pattern(cols: Tensor, values: Tensor, n_table: int) -> Tensor:
    """CSR [R, n_table] with row r holding columns cols[r] (duplicates allowed) and the given values."""
    r, n = cols.shape
    crow = torch.arange(0, r * n + 1, n, device=cols.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta": the ops used here are stable
        return torch.sparse_csr_tensor(crow, cols.reshape(-1), values.reshape(-1), size=(r, n_table),
                                       check_invariants=False)


class _TableDot(torch.autograd.Function):
    """scores[r, n] = ⟨row_repr[r], table[cols[r, n]]⟩ without gathering the table rows."""

    @staticmethod
    def forward(ctx, row_repr: Tensor, table: Tensor, cols: Tensor) -> Tensor:
        row_repr = row_repr.contiguous()
        zeros = torch.zeros(cols.numel(), dtype=row_repr.dtype, device=row_repr.device)
        pattern = _pattern(cols, zeros, table.shape[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = torch.sparse.sampled_addmm(pattern, row_repr, table.T, beta=0.0).values()
        ctx.save_for_backward(row_repr, table, cols)
        return scores.view(cols.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        row_repr, table, cols = ctx.saved_tensors
        grad_rows = grad_table = None
        if ctx.needs_input_grad[0]:  # Σ_n g[r, n]·table[cols[r, n]]: a weighted embedding bag per row
            grad_rows = F.embedding_bag(cols, table, per_sample_weights=grad.contiguous(), mode="sum")
        if ctx.needs_input_grad[1]:  # table[c] += g[r, n]·row_repr[r] for every (r, n) with cols[r, n] = c
            if cols.numel() >= 2 * table.shape[0]:  # long lists (RRD, DCD): the transposed CSR product
                grad_table = _transposed_product(cols, grad, row_repr, table.shape[0])
            else:  # short ones (RD, CD): Gᵀ's per-column work would cost more than a scatter of the products
                per_entry = (grad.unsqueeze(2) * row_repr.unsqueeze(1)).view(-1, row_repr.shape[1])
                grad_table = torch.zeros_like(table).index_put_((cols.reshape(-1),), per_entry, accumulate=True)
        return grad_rows, grad_table, None


def _transposed_product(cols: Tensor, grad: Tensor, row_repr: Tensor, n_table: int) -> Tensor:
    """Gᵀ·row_repr [n_table, d], G [R, n_table] holding grad[r, n] at (r, cols[r, n]) (repeats add up): Gᵀ
    built in CSR by sorting the entries by column, then one sparse × dense product. Inside RRD's training
    step (56k entries into a 25k-row table) ~15 % faster on CPU than scattering the [R·N, d] products
    ``grad[r, n]·row_repr[r]`` with ``index_put_(accumulate=True)``; slower for short lists (it does
    O(table rows) work), so only used when the entries outnumber the table rows twice."""
    n_cols = cols.shape[1]
    # 32-bit keys and CSR indices whenever they fit: the sort, the division and the product's index reads are
    # memory-bound, and halving them took the 680k-entry item side of IR-RRD from ~40 to ~25 ms (session 15)
    idx = torch.int32 if max(cols.numel(), n_table) < 2**31 else torch.long
    flat_cols, order = cols.reshape(-1).to(idx).sort()
    crow = torch.zeros(n_table + 1, dtype=idx, device=cols.device)
    torch.cumsum(torch.bincount(flat_cols, minlength=n_table), 0, out=crow[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        g_t = torch.sparse_csr_tensor(crow, torch.div(order.to(idx), n_cols, rounding_mode="floor"),
                                      grad.reshape(-1)[order], size=(n_table, cols.shape[0]), check_invariants=False)
        return torch.sparse.mm(g_t, row_repr.contiguous())


# From this share of the table on, one dense product + gather beats per-entry work (at 12 % they tie).
DENSE_FRACTION = 0.2


def table_side_scores(tables: tuple[Tensor, Tensor], rows: Tensor, cols: Tensor, side: str) -> Tensor:
    """``side_scores`` from ``tables`` = (user reprs, item reprs) whose dot products are the scores."""
    users, items = tables
    if side == "user":
        row_repr, table = users[rows], items
    elif side == "item":
        row_repr, table = items[rows], users
    else:
        raise ValueError(f"side must be 'user' or 'item', got {side!r}")
    if cols.shape[1] >= DENSE_FRACTION * table.shape[0]:  # also lists longer than the table, which CSR refuses
        return (row_repr @ table.T).gather(1, cols)
    return _TableDot.apply(row_repr, table, cols)


@torch.no_grad()
def _probe(model: Recommender) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    users = torch.randint(0, model.n_users, (8,), generator=g).to(model.device)
    items = torch.randint(0, model.n_items, (8, 3), generator=g).to(model.device)
    return users, items


@torch.no_grad()
def has_repr_tables(model: Recommender) -> bool:
    """Whether ``model.repr_tables()`` gives tables whose dot products are its scores (checked on a few pairs)."""
    try:
        tables = model.repr_tables()
    except (NotImplementedError, RuntimeError, DistillrecError):  # e.g. a LightGCN without its graph
        return False
    if tables is None:
        return False
    user_table, item_table = tables
    if user_table.shape[0] != model.n_users or item_table.shape[0] != model.n_items:
        return False
    users, items = _probe(model)
    dots = (item_table[items] * user_table[users].unsqueeze(1)).sum(-1)
    return torch.allclose(dots, model.score(users, items), rtol=1e-4, atol=1e-6)


class ListScorer:
    """Scores rows against lists with the fastest form ``model`` admits (tables, else generic)."""

    def __init__(self, model: Recommender) -> None:
        self.model = model
        self.kind = "table" if has_repr_tables(model) else "generic"

    def __call__(self, rows: Tensor, cols: Tensor, side: str) -> Tensor:
        if self.kind == "table":
            return table_side_scores(self.model.repr_tables(), rows, cols, side)
        return side_scores(self.model, rows, cols, side)
