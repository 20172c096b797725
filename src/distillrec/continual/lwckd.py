"""LWC-KD with personalised imitation weights (PIW): the teacher-side continual-learning terms (spec §B.7.2).

LWC-KD (Wang et al., CIKM'21) keeps a model's new embeddings consistent with the previous model's graph
structure through four contrastive terms. For anchors x of a batch and their neighbours N(x) in the old data:

    L_XY = − mean_x  w_x · (1/|N(x)|) Σ_{y ∈ N(x)} log softmax_{y'} ( e^old_x · e^new_{y'} / τ )

with the softmax over all old entities y' of the neighbour type: UI (user → its old items), IU (item → its old
users), UU and II (k-nearest neighbours by cosine similarity of the old interaction rows/columns; the
authors threshold a similarity graph to an average degree of about 10, here exactly ``n_neighbors`` per
entity, built in chunks, never a dense entities × entities matrix).

PIW weights the user-anchored terms (UI, UU): w_u = softplus(MLP((G^old_u − G^new_u)²)), rescaled to batch
mean 1, where G_u = softmax_c(e_u W_c μ_c) scores an embedding against ``n_clusters`` learnable centres μ_c
through a learned bilinear map W_c (spec §B.7.2); ``L_cluster`` = KL(P ‖ Q) over the DEC-style Student-t
assignment Q to the same centres, with P its sharpened target. Centres, W_c and the MLP are the extra
parameters.

For LightGCN the authors apply the losses per layer and average them "over the first num_layer layer outputs"
(spec §B.7.2). Which outputs that means is not certain, so ``layers`` names the reading: ``ego`` = E⁰..E^{L−1}
(the first L of the L + 1 outputs, the ego embeddings first), ``propagated`` = E¹..E^L, ``readout`` = the
layer-mean embeddings the model scores with (no per-layer terms). Every term, the PIW weights and the cluster
loss included, is computed on each chosen layer (old layer l against new layer l) and the layers are
averaged. Models without layers ignore it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from distillrec.continual.growth import all_reprs
from distillrec.models.base import Recommender


class LWCKDConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The authors' λ_LWC = 0.01 and λ_cl = 1 sit next to a BPR loss summed over the batch's 2,048 pairs (spec
    # §B.7.2), while L_XY is already a mean over the batch's anchors there (the spec's mean_x; the cluster KL is
    # taken as one too). Our BPR is a batch mean, so the whole objective is the authors' ÷ 2,048: λ / 2,048,
    # the convention of the stream presets' weight decay (1e-4 → 5e-8). Left at 0.01 the four terms weigh
    # ~2,000× more against BPR than in the authors' code.
    lambda_lwc: float = Field(0.01 / 2048, ge=0)  # weight of the four contrastive terms (≈ 4.9e-6)
    lambda_cluster: float = Field(1.0 / 2048, ge=0)  # ≈ 4.9e-4
    temperature: float = Field(5.0, gt=0)  # τ
    n_clusters: int = Field(10, ge=1)
    n_neighbors: int = Field(10, ge=1)  # UU / II graph degree
    graph_terms: bool = True  # the UU and II terms
    piw: bool = True
    layers: Literal["readout", "ego", "propagated"] = "readout"  # LightGCN: which layer outputs (module docstring)


def layer_reprs(model: Recommender, n_users: int, n_items: int, layers: str = "readout") -> list[tuple[Tensor, Tensor]]:
    """(users, items) of the first ``n_users`` / ``n_items`` entities for each layer the terms use."""
    if layers == "readout" or not hasattr(model, "layer_outputs"):
        return [all_reprs(model, n_users, n_items)]
    outputs = model.layer_outputs()
    chosen = outputs[:-1] if layers == "ego" else outputs[1:]
    if not chosen:  # a 0-layer LightGCN is MF: its one output
        chosen = outputs
    return [(e[:n_users], e[model.n_users: model.n_users + n_items]) for e in chosen]


def knn_graph(matrix: sp.spmatrix, n_neighbors: int, chunk_elems: int = 1 << 22) -> sp.csr_matrix:
    """Each row's ``n_neighbors`` most cosine-similar other rows (similarity > 0), as a binary CSR matrix."""
    m = sp.csr_matrix(matrix, dtype=np.float32)
    n = m.shape[0]
    norms = np.sqrt(np.asarray(m.multiply(m).sum(1)).ravel())
    m = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ m
    mt = m.T.tocsr()
    k = min(n_neighbors, n - 1)
    rows, cols = [], []
    step = max(1, chunk_elems // max(1, n))
    for s in range(0, n, step):
        sim = torch.from_numpy((m[s:s + step] @ mt).toarray())
        sim[torch.arange(sim.shape[0]), torch.arange(s, s + sim.shape[0])] = -1.0  # not its own neighbour
        val, idx = sim.topk(k, dim=1) if k > 0 else (sim[:, :0], sim[:, :0].long())
        keep = val > 0
        rows.append((torch.arange(s, s + sim.shape[0])[:, None].expand_as(idx))[keep].numpy())
        cols.append(idx[keep].numpy())
    r, c = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n, n))


def old_graphs(old_train: sp.spmatrix, n_neighbors: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The user–user and item–item kNN graphs of an interaction matrix."""
    return knn_graph(old_train, n_neighbors), knn_graph(sp.csr_matrix(old_train).T, n_neighbors)


class _Neighbours(nn.Module):
    """A CSR neighbour list as tensors; ``gather(rows)`` → (position in ``rows``, neighbour id) pairs."""

    def __init__(self, m: sp.csr_matrix) -> None:
        super().__init__()
        m = sp.csr_matrix(m)
        m.sort_indices()
        self.register_buffer("indptr", torch.from_numpy(m.indptr.astype(np.int64)), persistent=False)
        self.register_buffer("indices", torch.from_numpy(m.indices.astype(np.int64)), persistent=False)

    def gather(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        starts = self.indptr[rows]
        counts = self.indptr[rows + 1] - starts
        pos = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts)
        first = torch.cumsum(counts, 0) - counts
        flat = torch.arange(len(pos), device=rows.device) - first[pos] + starts[pos]
        return pos, self.indices[flat], counts


def contrastive_term(anchor_old: Tensor, cand_new: Tensor, rows: Tensor, nbrs: _Neighbours, temperature: float,
                     weights: Tensor | None = None) -> Tensor:
    """− mean over anchors with neighbours of w · mean_{y ∈ N(x)} log softmax(e^old_x · e^new / τ)_y."""
    log_p = F.log_softmax(anchor_old @ cand_new.T / temperature, dim=1)  # [B, n_old]
    pos, nbr, counts = nbrs.gather(rows)
    if pos.numel() == 0:
        return anchor_old.sum() * 0.0
    per_row = torch.zeros(len(rows), device=log_p.device).index_add_(0, pos, log_p[pos, nbr])
    per_row = per_row / counts.clamp(min=1)
    if weights is not None:
        per_row = per_row * weights
    has = counts > 0
    return -per_row[has].mean()


class LWCKD(nn.Module):
    """The LWC-KD + PIW terms of one model being updated from its previous version (frozen reprs given)."""

    def __init__(self, old_user: Tensor, old_item: Tensor, old_train: sp.spmatrix, config: LWCKDConfig,
                 seed: int = 0, graphs: tuple[sp.spmatrix, sp.spmatrix] | None = None) -> None:
        """``old_user`` / ``old_item``: the previous model's representations, [n, d], or [n_layers, n, d] per
        layer (``layer_reprs``, stacked). ``graphs``: prebuilt (user–user, item–item) kNN graphs of ``old_train``
        (several teachers share them)."""
        super().__init__()
        self.config = config
        old_user = old_user if old_user.dim() == 3 else old_user[None]
        old_item = old_item if old_item.dim() == 3 else old_item[None]
        self.n_old_users, self.n_old_items = old_user.shape[1], old_item.shape[1]
        old_train = sp.csr_matrix(old_train)[: self.n_old_users, : self.n_old_items]
        self.register_buffer("old_user", old_user.detach().float(), persistent=False)  # [n_layers, n, d]
        self.register_buffer("old_item", old_item.detach().float(), persistent=False)
        self.ui = _Neighbours(old_train)
        self.iu = _Neighbours(old_train.T.tocsr())
        if config.graph_terms:
            uu, ii = graphs if graphs is not None else old_graphs(old_train, config.n_neighbors)
            self.uu, self.ii = _Neighbours(uu), _Neighbours(ii)
        if config.piw:
            g = torch.Generator().manual_seed(seed)
            pick = torch.randperm(self.n_old_users, generator=g)[: config.n_clusters]
            centres = old_user[-1, pick.to(old_user.device)].detach().float().clone()
            if centres.shape[0] < config.n_clusters:  # fewer old users than clusters: jitter copies
                extra = centres[torch.arange(config.n_clusters - centres.shape[0]) % max(1, centres.shape[0])]
                noise = 0.01 * torch.randn(extra.shape, generator=g).to(extra.device)
                centres = torch.cat([centres, extra + noise])
            self.centres = nn.Parameter(centres)
            # W_c starts at the identity, so G starts as a softmax of plain dot products with the centres
            self.w_c = nn.Parameter(torch.eye(centres.shape[1], device=centres.device))
            c = config.n_clusters
            self.mlp = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, 1))

    def soft_assign(self, emb: Tensor) -> Tensor:
        """Student-t assignment q_ic ∝ (1 + ‖e_i − μ_c‖²)⁻¹ (DEC): the clustering loss's Q."""
        q = 1.0 / (1.0 + torch.cdist(emb, self.centres).pow(2))
        return q / q.sum(1, keepdim=True)

    def piw_assign(self, emb: Tensor) -> Tensor:
        """G = softmax_c(e W_c μ_c): the cluster profile whose drift sets the imitation weights."""
        return torch.softmax(emb @ self.w_c @ self.centres.T, dim=1)

    def terms(self, model: Recommender, users: Tensor, items: Tensor) -> dict[str, Tensor]:
        """Weighted terms for the batch's users and (positive) items; only old entities take part."""
        cfg = self.config
        users = users.unique()
        items = items.unique()
        users = users[users < self.n_old_users]
        items = items[items < self.n_old_items]
        new = layer_reprs(model, self.n_old_users, self.n_old_items, cfg.layers)
        if len(new) != self.old_user.shape[0]:
            raise ValueError(f"LWC-KD: {len(new)} layer(s) of the new model against {self.old_user.shape[0]} "
                             "of the old one (build both with layer_reprs and the same layers setting)")
        cluster, lwc = [], []
        for old_u, old_i, (new_u, new_i) in zip(self.old_user, self.old_item, new):
            c, t = self._layer_terms(old_u, old_i, new_u, new_i, users, items)
            cluster.append(c)
            lwc.append(t)
        out: dict[str, Tensor] = {}
        if cfg.piw and users.numel():
            out["cluster"] = cfg.lambda_cluster * torch.stack(cluster).mean()
        out["lwc"] = cfg.lambda_lwc * torch.stack(lwc).mean()
        return out

    def _layer_terms(self, old_u: Tensor, old_i: Tensor, new_u: Tensor, new_i: Tensor, users: Tensor,
                     items: Tensor) -> tuple[Tensor | None, Tensor]:
        """(cluster KL or None, sum of the four contrastive terms) on one layer's representations."""
        cfg = self.config
        weights, cluster = None, None
        if cfg.piw and users.numel():
            g_new = self.piw_assign(new_u[users])
            g_old = self.piw_assign(old_u[users])
            w = F.softplus(self.mlp((g_old - g_new).pow(2))).squeeze(1)
            weights = w / w.mean().clamp(min=1e-12)
            q_new = self.soft_assign(new_u[users])
            p = q_new.pow(2) / q_new.sum(0, keepdim=True)
            p = (p / p.sum(1, keepdim=True)).detach()
            cluster = (p * (p.clamp(min=1e-12).log() - q_new.log())).sum(1).mean()
        tau = cfg.temperature
        lwc = new_u.sum() * 0.0
        if users.numel():
            lwc = lwc + contrastive_term(old_u[users], new_i, users, self.ui, tau, weights)
            if cfg.graph_terms:
                lwc = lwc + contrastive_term(old_u[users], new_u, users, self.uu, tau, weights)
        if items.numel():
            lwc = lwc + contrastive_term(old_i[items], new_u, items, self.iu, tau)
            if cfg.graph_terms:
                lwc = lwc + contrastive_term(old_i[items], new_i, items, self.ii, tau)
        return cluster, lwc
