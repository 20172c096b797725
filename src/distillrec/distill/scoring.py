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

``ListPlan``: when a batch's rows cover most of an epoch's fixed list matrix (IR-RRD's item side under the
authors' rule: ~17,000 of 25,181 items per CiteULike batch), scoring *every* row against a structure built once
per epoch beats building it per batch: no gather of the rows' lists or representations, and no sort of the
entries by column for the table's gradient (the per-batch sort of ~700k entries was a third of that step).
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
    crow = torch.arange(0, r * n + 1, n, dtype=cols.dtype, device=cols.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta": the ops used here are stable
        return torch.sparse_csr_tensor(crow, cols.reshape(-1), values.reshape(-1), size=(r, n_table),
                                       check_invariants=False)


class ListPlan:
    """A list matrix ``cols`` [R, N] into a table of ``n_table`` rows, with what scoring all R rows needs built
    once: the forward's CSR pattern and Gᵀ's structure (the entries sorted by column) for the table's gradient.
    Only the gradient's values change from one use to the next."""

    def __init__(self, cols: Tensor, n_table: int) -> None:
        self.cols, self.n_table, self.version = cols, n_table, cols._version
        n = cols.shape[1]
        # 32-bit keys and CSR indices whenever they fit: the sort, the division and the product's index reads
        # are memory-bound, and halving them took IR-RRD's 680k-entry item side from ~40 to ~25 ms (session 15)
        idx = torch.int32 if max(cols.numel(), n_table) < 2**31 else torch.long
        self.flat = cols.reshape(-1).to(idx)
        sorted_cols, order = self.flat.sort()
        self.t_crow = torch.zeros(n_table + 1, dtype=idx, device=cols.device)
        torch.cumsum(torch.bincount(sorted_cols, minlength=n_table), 0, out=self.t_crow[1:])
        self.t_order = order.to(idx)
        self.t_rows = torch.div(self.t_order, n, rounding_mode="floor")
        self._patterns: dict[torch.dtype, Tensor] = {}

    def pattern(self, dtype: torch.dtype) -> Tensor:
        """The forward's CSR pattern (zero values), built on first use per dtype: sampled_addmm only reads it."""
        if dtype not in self._patterns:
            zeros = torch.zeros(self.flat.numel(), dtype=dtype, device=self.flat.device)
            self._patterns[dtype] = _pattern(self.flat.view(self.cols.shape), zeros, self.n_table)
        return self._patterns[dtype]

    def transposed_product(self, grad: Tensor, row_repr: Tensor) -> Tensor:
        """Gᵀ·row_repr [n_table, d], G [R, n_table] holding grad[r, n] at (r, cols[r, n]) (repeats add up)."""
        values = grad.reshape(-1).index_select(0, self.t_order)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g_t = torch.sparse_csr_tensor(self.t_crow, self.t_rows, values, size=(self.n_table, self.cols.shape[0]),
                                          check_invariants=False)
            return torch.sparse.mm(g_t, row_repr.contiguous())


class _TableDot(torch.autograd.Function):
    """scores[r, n] = ⟨row_repr[r], table[cols[r, n]]⟩ without gathering the table rows; ``plan``: a
    ``ListPlan`` of ``cols``, reused instead of rebuilt."""

    @staticmethod
    def forward(ctx, row_repr: Tensor, table: Tensor, cols: Tensor, plan: ListPlan | None = None) -> Tensor:
        row_repr = row_repr.contiguous()
        if plan is not None:
            pattern = plan.pattern(row_repr.dtype)
        else:
            pattern = _pattern(cols, torch.zeros(cols.numel(), dtype=row_repr.dtype, device=row_repr.device),
                               table.shape[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = torch.sparse.sampled_addmm(pattern, row_repr, table.T, beta=0.0).values()
        ctx.save_for_backward(row_repr, table, cols)
        ctx.plan = plan
        return scores.view(cols.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        row_repr, table, cols = ctx.saved_tensors
        grad_rows = grad_table = None
        if ctx.needs_input_grad[0]:  # Σ_n g[r, n]·table[cols[r, n]]: a weighted embedding bag per row
            grad_rows = F.embedding_bag(cols, table, per_sample_weights=grad.contiguous(), mode="sum")
        if ctx.needs_input_grad[1]:  # table[c] += g[r, n]·row_repr[r] for every (r, n) with cols[r, n] = c
            if ctx.plan is not None:
                grad_table = ctx.plan.transposed_product(grad, row_repr)
            elif cols.numel() >= 2 * table.shape[0]:  # long lists (RRD, DCD): the transposed CSR product
                grad_table = ListPlan(cols, table.shape[0]).transposed_product(grad, row_repr)
            else:  # short ones (RD, CD): Gᵀ's per-column work would cost more than a scatter of the products
                per_entry = (grad.unsqueeze(2) * row_repr.unsqueeze(1)).view(-1, row_repr.shape[1])
                grad_table = torch.zeros_like(table).index_put_((cols.reshape(-1),), per_entry, accumulate=True)
        return grad_rows, grad_table, None, None


# From this share of the table on, one dense product + gather beats per-entry work (at 12 % they tie).
DENSE_FRACTION = 0.2


def side_tables(tables: tuple[Tensor, Tensor], side: str) -> tuple[Tensor, Tensor]:
    """(the rows' table, the lists' table) of a side: users against items, or items against users."""
    if side == "user":
        return tables
    if side == "item":
        return tables[1], tables[0]
    raise ValueError(f"side must be 'user' or 'item', got {side!r}")


def table_side_scores(tables: tuple[Tensor, Tensor], rows: Tensor, cols: Tensor, side: str) -> Tensor:
    """``side_scores`` from ``tables`` = (user reprs, item reprs) whose dot products are the scores."""
    row_table, table = side_tables(tables, side)
    row_repr = row_table[rows]
    if cols.shape[1] >= DENSE_FRACTION * table.shape[0]:  # also lists longer than the table, which CSR refuses
        return (row_repr @ table.T).gather(1, cols)
    return _TableDot.apply(row_repr, table, cols)


def planned_side_scores(tables: tuple[Tensor, Tensor], plan: ListPlan, side: str) -> Tensor:
    """Scores [R, N] of *every* row of the side's table against ``plan.cols`` (R = that table's rows)."""
    row_repr, table = side_tables(tables, side)
    if plan.cols.shape[0] != row_repr.shape[0] or plan.n_table != table.shape[0]:
        raise ValueError(f"plan of {tuple(plan.cols.shape)} lists into {plan.n_table} rows does not fit the "
                         f"{side} side's tables ({row_repr.shape[0]} rows, {table.shape[0]} columns)")
    return _TableDot.apply(row_repr, table, plan.cols, plan)


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

    def tables(self) -> tuple[Tensor, Tensor] | None:
        """The model's representation tables when its scores are their dot products, else None."""
        return self.model.repr_tables() if self.kind == "table" else None

    def __call__(self, rows: Tensor, cols: Tensor, side: str, tables: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Scores [R, N]; ``tables`` overrides the model's own (e.g. a LightGCN's layer-0 embeddings)."""
        tables = tables if tables is not None else self.tables()
        if tables is not None:
            return table_side_scores(tables, rows, cols, side)
        return side_scores(self.model, rows, cols, side)
