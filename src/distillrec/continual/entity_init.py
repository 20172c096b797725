"""CCD's entity embedding initialisation for users and items that arrive with a new block (spec §B.6a).

For a new user u, with R the new block's training matrix:

    e_u = ½ · ( mean_{i ∈ N_old(u)} e_i  +  mean_{v ∈ H_u} e_v )

- 1-hop: the old items u interacted with in the block (0 when there are none — CCD then halves the 2-hop
  term; kept as in the authors' code, ``one_hop_only`` drops the 2-hop term instead);
- 2-hop, "prominent entity trends": H_u = the ``topk`` old users that share an item with u in the block,
  ranked by their number of interactions in the block (ties: lower id); fewer than ``topk`` are filled up
  with the block's most active old users, so a user with no such neighbour gets the ``topk`` most active.

Items are the same with the roles swapped (R transposed): 1-hop over old users, 2-hop over old items that
share a user. Everything is sparse products, one lexsort and one gather: no loop over entities.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from distillrec.continual.growth import embedding_tables
from distillrec.models.base import Recommender


def neighbour_init(R: sp.spmatrix, n_old_rows: int, n_old_cols: int, row_emb: Tensor, col_emb: Tensor,
                   topk: int = 20, one_hop_only: bool = False) -> Tensor:
    """Embeddings [n_rows − n_old_rows, d] for the new rows of ``R`` (rows = the side being initialised).

    ``row_emb`` holds at least the ``n_old_rows`` old row embeddings, ``col_emb`` the ``n_old_cols`` old
    column embeddings (only those are read).
    """
    R = sp.csr_matrix(R, dtype=np.float32)
    R.data[:] = 1.0
    n_rows = R.shape[0]
    n_new = n_rows - n_old_rows
    dim = row_emb.shape[1]
    device, dtype = row_emb.device, row_emb.dtype
    if n_new <= 0:
        return torch.zeros(0, dim, device=device, dtype=dtype)
    new_part = R[n_old_rows:]
    # 1-hop: mean embedding of the old columns each new row touched
    to_old = new_part[:, :n_old_cols]
    deg = np.asarray(to_old.sum(1)).ravel()
    if n_old_cols:
        one_hop = _sparse_mm(to_old, col_emb[:n_old_cols])
        one_hop = one_hop / torch.as_tensor(np.maximum(deg, 1), device=device, dtype=dtype)[:, None]
    else:
        one_hop = torch.zeros(n_new, dim, device=device, dtype=dtype)
    if one_hop_only or n_old_rows == 0:
        return one_hop
    hop_ids = two_hop_neighbours(R, n_old_rows, topk)
    two_hop = row_emb[torch.as_tensor(hop_ids, device=device)].mean(1)
    return 0.5 * (one_hop + two_hop)


def two_hop_neighbours(R: sp.csr_matrix, n_old_rows: int, topk: int, chunk: int = 4096) -> np.ndarray:
    """[n_new, min(topk, n_old_rows)] old rows per new row: co-occurring old rows by block activity, then
    the most active old rows (each row's list is distinct). New rows are handled ``chunk`` at a time so the
    co-occurrence matrix stays bounded."""
    k = min(topk, n_old_rows)
    old_t = R[:n_old_rows].T.tocsr()
    activity = np.diff(R[:n_old_rows].indptr)  # interactions in the block
    popular = np.lexsort((np.arange(n_old_rows), -activity))[: 2 * k]
    parts = []
    for s in range(n_old_rows, R.shape[0], chunk):
        co = (R[s:s + chunk] @ old_t).tocsr()  # [c, n_old]: shares a column
        parts.append(_pick(co, activity, popular, k))
    return np.concatenate(parts)


def _pick(co: sp.csr_matrix, activity: np.ndarray, popular: np.ndarray, k: int) -> np.ndarray:
    n_new = co.shape[0]
    rows = np.repeat(np.arange(n_new), np.diff(co.indptr))
    cols = co.indices.astype(np.int64)
    order = np.lexsort((cols, -activity[cols], rows))  # per row: most active first, ties by lower id
    rows, cols = rows[order], cols[order]
    rank = np.arange(len(rows)) - co.indptr[rows]
    keep = rank < k
    chosen = np.full((n_new, k), -1, dtype=np.int64)
    chosen[rows[keep], rank[keep]] = cols[keep]
    # fill-up: at most k of the globally most active old rows can clash with a row's own k choices
    clash = (popular[None, :, None] == chosen[:, None, :]).any(-1)  # [n_new, |popular|]
    cand = np.concatenate([chosen, np.broadcast_to(popular, (n_new, len(popular)))], axis=1)
    bad = np.concatenate([chosen < 0, clash], axis=1)
    first = np.argsort(bad, axis=1, kind="stable")[:, :k]  # valid entries first, in order
    return np.take_along_axis(cand, first, axis=1)


def _sparse_mm(m: sp.csr_matrix, dense: Tensor) -> Tensor:
    coo = m.tocoo()
    index = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64)).to(dense.device)
    values = torch.from_numpy(coo.data).to(dense.device, dense.dtype)
    sparse = torch.sparse_coo_tensor(index, values, coo.shape, check_invariants=False)
    return torch.sparse.mm(sparse, dense)


@torch.no_grad()
def init_new_entities(model: Recommender, R: sp.spmatrix, n_old_users: int, n_old_items: int, topk: int = 20,
                      one_hop_only: bool = False) -> bool:
    """Overwrite the rows of users ≥ ``n_old_users`` and items ≥ ``n_old_items`` of a grown model's ID tables
    with the CCD initialisation; ``R`` is the new block's train matrix at the model's size. Returns False
    (and leaves the model's own initialisation) for models without ID-embedding tables."""
    tables = embedding_tables(model)
    if tables is None:
        return False
    user_emb, item_emb = tables
    R = sp.csr_matrix(R)
    if R.shape != (user_emb.num_embeddings, item_emb.num_embeddings):
        raise ValueError(f"R has shape {R.shape}, the model {user_emb.num_embeddings}×{item_emb.num_embeddings}")
    u_old, i_old = user_emb.weight[:n_old_users].clone(), item_emb.weight[:n_old_items].clone()
    users = neighbour_init(R, n_old_users, n_old_items, u_old, i_old, topk, one_hop_only)
    items = neighbour_init(R.T.tocsr(), n_old_items, n_old_users, i_old, u_old, topk, one_hop_only)
    user_emb.weight[n_old_users:] = users
    item_emb.weight[n_old_items:] = items
    return True
