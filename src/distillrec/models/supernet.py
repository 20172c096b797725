"""AdaRec's search space: candidate operations, cells, the weight-sharing super-net and the derived student.

A cell has one input node (the previous cell's output) and ``n_nodes`` intermediate nodes; node n receives one
edge from every earlier node, so 3 nodes give 6 edges. Every edge applies ReLU, then a mix of candidate ops
weighted by a (hard, straight-through) Gumbel-softmax sample of the architecture logits ``alpha``. All cells
share ``alpha`` (one cell type) but own their op weights. Cell output = x + ReLU(LN(Σ_n softmax(a)_n·node_n)).

Causality (spec §10): the authors' std/dilated convolutions and pools are symmetric, so during all-positions
next-item training the output at t sees x[t+1], its own label. The default op set is causal (left padding
only); the authors' ten ops exist behind ``faithful: true``, which warns. Padding positions are zeroed after
every node, so outputs at real positions do not depend on how much left padding precedes them (faithful mode:
the authors' unmasked padding, see ``_CellNet``).

The operations and their measured costs (:func:`measure_op_costs`, forward hooks at the configured width, no
hard-coded table) live in :mod:`distillrec.models.seq_ops`.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from distillrec.models.base import ModelConfig
from distillrec.models.registry import register_model
from distillrec.models.sasrec import SequentialRecommender
from distillrec.models.seq_ops import (  # noqa: F401  (re-exported: the search space's public names)
    CAUSAL_OPS,
    FAITHFUL_OPS,
    OPS,
    ConvOp,
    OpSpec,
    PoolOp,
    Zero,
    count_macs,
    make_op,
    measure_op_costs,
)
from distillrec.utils import DistillrecError


def edge_list(n_nodes: int) -> list[tuple[int, int]]:
    """(source, target) node of every edge, in the order of the rows of ``alpha``; node 0 is the cell input."""
    return [(j, n) for n in range(1, n_nodes + 1) for j in range(n)]


# -- Gumbel straight-through ----------------------------------------------------------------------------------
def gumbel_softmax_st(logits: Tensor, tau: float, generator: torch.Generator | None = None) -> Tensor:
    """Hard Gumbel-softmax: an exact one-hot sample in the forward pass, the soft sample's gradient backward.

    (models/ may not import distill/, whose ``gumbel`` module holds the soft version; this adds the hard
    straight-through step the search needs.)
    """
    if tau <= 0:
        raise ValueError(f"Gumbel-softmax temperature must be positive, got {tau}")
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    g = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
    soft = torch.softmax((logits + g) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft  # zeros stay exact zeros; the selected entry is 1 up to rounding


# -- cells ----------------------------------------------------------------------------------------------------
class MixedEdge(nn.Module):
    """Σ_o w_o·op_o on the ReLU of the edge's source node (the cell applies it once per node). Without gradients
    only the ops with a non-zero weight run (evaluation)."""

    def __init__(self, names: list[str], channels: int, norm: str) -> None:
        super().__init__()
        self.names = list(names)
        self.ops = nn.ModuleDict({n: make_op(n, channels, norm) for n in names})
        self.is_zero = self.names == ["none"]  # a derived edge that adds exact zeros

    def forward(self, h: Tensor, weights: Tensor | None) -> Tensor:
        if weights is None:  # a derived edge: its single op
            return next(iter(self.ops.values()))(h)
        if not (torch.is_grad_enabled() and weights.requires_grad):
            idx = weights.nonzero().flatten().tolist()
            out = sum(weights[i] * self.ops[self.names[i]](h) for i in idx)
            return out if idx else torch.zeros_like(h)
        # every op runs: the straight-through gradient of an unselected op's weight is <grad, op(x)>
        return sum(weights[i] * op(h) for i, op in enumerate(self.ops.values()))


class Cell(nn.Module):
    def __init__(self, edge_ops: list[list[str]], n_nodes: int, channels: int, norm: str) -> None:
        super().__init__()
        self.n_nodes = n_nodes
        self.edges = nn.ModuleList(MixedEdge(names, channels, norm) for names in edge_ops)
        self.node_attn = nn.Parameter(torch.randn(n_nodes) * 0.01)  # an ordinary weight, not architecture
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor, real: Tensor, arch: Tensor | None) -> Tensor:
        """x [B, L, C]; real [B, L, 1] (0 at padding); arch [n_edges, n_ops] or None (derived cell)."""
        nodes = [x]
        acts: list[Tensor | None] = [None] * (self.n_nodes + 1)  # each node's ReLU, shared by its out-edges
        e = 0
        for n in range(1, self.n_nodes + 1):
            s = None
            for j in range(n):
                edge, weights = self.edges[e], None if arch is None else arch[e]
                e += 1
                if weights is None and edge.is_zero:
                    continue
                if acts[j] is None:
                    acts[j] = torch.relu(nodes[j])
                out = edge(acts[j], weights)
                s = out if s is None else s + out
            nodes.append(torch.zeros_like(x) if s is None else s * real)
        w = torch.softmax(self.node_attn, 0)
        mix = sum(w[i] * nodes[i + 1] for i in range(self.n_nodes))
        return (x + torch.relu(self.norm(mix))) * real


# -- networks -------------------------------------------------------------------------------------------------
class SuperNetConfig(ModelConfig):
    embedding_dim: int = Field(64, ge=1)
    n_cells: int = Field(4, ge=1)
    n_nodes: int = Field(3, ge=1)
    ops: list[str] | None = None  # None: CAUSAL_OPS, or FAITHFUL_OPS with faithful
    faithful: bool = False  # the authors' non-causal ops, BatchNorm, and a sampled architecture at evaluation
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    max_len: int = Field(50, ge=1)
    loss_type: Literal["ce"] = "ce"

    @model_validator(mode="after")
    def _check_ops(self) -> SuperNetConfig:
        for name in self.op_names:
            if name not in OPS:
                raise ValueError(f"unknown operation {name!r} in ops; known: {', '.join(OPS)}")
            if not OPS[name].causal and not self.faithful:
                raise ValueError(f"operation {name!r} sees future positions (it would leak the next-item label); "
                                 "use a causal op or set faithful: true to reproduce the authors' search space")
        return self

    @property
    def op_names(self) -> list[str]:
        return list(self.ops) if self.ops is not None else list(FAITHFUL_OPS if self.faithful else CAUSAL_OPS)

    @property
    def n_edges(self) -> int:
        return self.n_nodes * (self.n_nodes + 1) // 2


class StudentConfig(SuperNetConfig):
    genotype: list[str] = Field(min_length=1)  # one op name per edge, in edge_list order

    @model_validator(mode="after")
    def _check_genotype(self) -> StudentConfig:
        if len(self.genotype) != self.n_edges:
            raise ValueError(f"genotype has {len(self.genotype)} ops but {self.n_nodes} nodes have {self.n_edges} "
                             "edges")
        for name in self.genotype:
            if name not in OPS:
                raise ValueError(f"unknown operation {name!r} in genotype; known: {', '.join(OPS)}")
            if not OPS[name].causal and not self.faithful:
                raise ValueError(f"genotype op {name!r} sees future positions; set faithful: true to use it")
        return self


class _CellNet(SequentialRecommender):
    """Embedding (item + position counted from the newest item) → cells → Linear; tied item scores.

    Faithful mode is the authors' network (spec §3.2): padding is never zeroed (its position embeddings flow
    through the cells, so outputs depend on the left padding and every sequence keeps max_len columns), no
    final Linear, and an untied output layer Linear(d, n_items + 1) with a bias scores the items. Their positions
    count from the left of the max_len window, ours from the newest item: with every sequence left-padded to
    max_len the two index the same learned table in reverse, so that difference is a relabelling."""

    config: SuperNetConfig

    def __init__(self, n_users: int, n_items: int, config: SuperNetConfig, edge_ops: list[list[str]]) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.faithful:
            warnings.warn("supernet faithful mode: non-causal operations see future positions and leak the "
                          "next-item label during training; BatchNorm mixes positions (AdaRec spec §10)",
                          UserWarning, stacklevel=3)
        d = c.embedding_dim
        self.norm_kind = "batch" if c.faithful else "layer"
        self.item_embedding = nn.Embedding(n_items + 1, d, padding_idx=n_items)
        self.position_embedding = nn.Embedding(c.max_len, d)
        self.dropout = nn.Dropout(c.dropout)
        self.cells = nn.ModuleList(Cell(edge_ops, c.n_nodes, d, self.norm_kind) for _ in range(c.n_cells))
        # the authors' head (an item table of its own, scored with a bias) stands in for our Linear + tied items
        self.padding_is_inert = not c.faithful
        if c.faithful:
            self.head = nn.Linear(d, n_items + 1)
        else:
            self.final_layer = nn.Linear(d, d)
        nn.init.normal_(self.item_embedding.weight, std=d**-0.5)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        with torch.no_grad():
            self.item_embedding.weight[self.pad_id].zero_()

    def arch_weights(self) -> Tensor | None:
        return None

    def encode(self, input_seq: Tensor, arch: Tensor | None = None) -> list[Tensor]:
        """[embedding output, cell 1, ..., cell n], each [B, L, d]; ``arch`` overrides the architecture."""
        if arch is None:
            arch = self.arch_weights()
        x, real = self._embed(input_seq)
        states = [x]
        for cell in self.cells:
            x = cell(x, real, arch)
            states.append(x)
        return states

    def _embed(self, input_seq: Tensor) -> tuple[Tensor, Tensor]:
        """(item + position embeddings [B, L, d] zeroed at padding, real [B, L, 1]: 0 at padding; faithful: all 1,
        so nothing is zeroed)."""
        n = input_seq.shape[1]
        real = self._real(input_seq)
        if not self.padding_is_inert:  # faithful: padding keeps its (position) embeddings
            real = torch.ones_like(real)
        positions = torch.arange(n - 1, -1, -1, device=input_seq.device)  # last column = position 0
        return self.dropout(self.item_embedding(input_seq) + self.position_embedding(positions)) * real, real

    def output(self, hidden: Tensor) -> Tensor:
        hidden = self.dropout(hidden)
        return hidden if self.config.faithful else self.final_layer(hidden)

    def output_items(self) -> tuple[Tensor, Tensor | None]:
        if self.config.faithful:
            return self.head.weight[: self.n_items], self.head.bias[: self.n_items]
        return super().output_items()

    def item_repr(self, items: Tensor) -> Tensor:
        # what a user representation is dotted with (the faithful head's bias is left out)
        return self.head.weight[items] if self.config.faithful else super().item_repr(items)

    def non_embedding_parameters(self) -> int:
        """Parameters outside the item and position tables (and the faithful head, an item table too)."""
        skip = {id(self.item_embedding.weight), id(self.position_embedding.weight)}
        if self.config.faithful:
            skip |= {id(self.head.weight), id(self.head.bias)}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)


@register_model("supernet")
class SuperNet(_CellNet):
    """The weight-sharing super-net of the search. ``alpha`` [n_edges, n_ops] is shared by every cell.

    Training mode: one hard Gumbel sample per forward pass at temperature ``tau`` (shared across the batch and
    the cells). Evaluation: the argmax architecture (faithful: a fresh sample, as the authors validate).
    """

    Config: ClassVar[type[ModelConfig]] = SuperNetConfig

    def __init__(self, n_users: int, n_items: int, config: SuperNetConfig | None = None) -> None:
        config = config if config is not None else SuperNetConfig()
        names = config.op_names
        super().__init__(n_users, n_items, config, [names] * config.n_edges)
        self.op_names = names
        self.alpha = nn.Parameter(torch.randn(config.n_edges, len(names)) * 1e-2)
        self.tau = 1.0
        costs = measure_op_costs(names, config.embedding_dim, config.max_len, self.norm_kind)
        self.register_buffer("op_params", torch.tensor([costs[n]["params"] for n in names], dtype=torch.float64),
                             persistent=False)
        self.register_buffer("op_macs", torch.tensor([costs[n]["macs"] for n in names], dtype=torch.float64),
                             persistent=False)

    def set_temperature(self, tau: float) -> None:
        if tau <= 0:
            raise ValueError(f"Gumbel temperature must be positive, got {tau}")
        self.tau = float(tau)

    def sample_arch(self) -> Tensor:
        return gumbel_softmax_st(self.alpha, self.tau)

    def argmax_arch(self) -> Tensor:
        return F.one_hot(self.alpha.detach().argmax(-1), self.alpha.shape[1]).to(self.alpha.dtype)

    def arch_weights(self) -> Tensor:
        if self.training or self.config.faithful:
            return self.sample_arch()
        return self.argmax_arch()

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p is not self.alpha]

    def derive(self) -> list[str]:
        """The discrete architecture: the argmax op of every edge (all edges kept, as the authors do)."""
        return [self.op_names[i] for i in self.alpha.detach().argmax(-1).tolist()]

    def arch_probs(self) -> Tensor:
        return torch.softmax(self.alpha.detach(), -1)


@register_model("adarec")
class AdaRecStudent(_CellNet):
    """The derived student: the super-net's cells with one op per edge (``genotype``), no architecture weights.

    Its parameter names match the super-net's, so :meth:`warm_start` copies the searched weights.
    """

    Config: ClassVar[type[ModelConfig]] = StudentConfig
    config: StudentConfig

    def __init__(self, n_users: int, n_items: int, config: StudentConfig | None = None) -> None:
        if config is None:
            raise DistillrecError("adarec: a genotype (one op name per edge) is required")
        super().__init__(n_users, n_items, config, [[name] for name in config.genotype])

    def cell_reach(self) -> int | None:
        """How many older positions a cell's output at t reads: the summed window widths along the cell's longest
        path (a Beauty cell conv_3 → max_pool_3 → avg_pool_3: 6). None with a non-causal (faithful) op."""
        specs = [OPS[name] for name in self.config.genotype]
        if not all(s.causal for s in specs):
            return None
        reach = [0] * (self.config.n_nodes + 1)
        for (src, dst), s in zip(edge_list(self.config.n_nodes), specs, strict=True):
            if s.kind != "zero":  # a none edge carries nothing from its source, so none of its reach
                reach[dst] = max(reach[dst], reach[src] + s.window)
        return max(reach)

    def context_length(self) -> int | None:
        """The newest output never reads an older position than 1 + n_cells × the cell's reach (a Beauty batch's
        50 columns shrink to 25). Non-causal (faithful) ops: no trimming."""
        reach = self.cell_reach()
        return None if reach is None else 1 + self.config.n_cells * reach

    def last_hidden(self, input_seq: Tensor) -> Tensor:
        # each cell reads only what the newest output still needs: 25, 19, 13 and 7 columns for the Beauty cell
        reach = self.cell_reach()
        if reach is None:
            return super().last_hidden(input_seq)
        x, real = self._embed(input_seq)
        return self.newest_through(x, real, [(partial(cell, arch=None), reach) for cell in self.cells])

    def warm_start(self, supernet: SuperNet) -> int:
        """Copy every weight whose name and shape match from a trained super-net; returns how many tensors."""
        own = self.state_dict()
        take = {k: v for k, v in supernet.state_dict().items() if k in own and own[k].shape == v.shape}
        self.load_state_dict(take, strict=False)
        return len(take)
