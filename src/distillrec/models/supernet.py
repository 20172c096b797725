"""AdaRec's search space: candidate operations, cells, the weight-sharing super-net and the derived student.

A cell has one input node (the previous cell's output) and ``n_nodes`` intermediate nodes; node n receives one
edge from every earlier node, so 3 nodes give 6 edges. Every edge applies ReLU, then a mix of candidate ops
weighted by a (hard, straight-through) Gumbel-softmax sample of the architecture logits ``alpha``. All cells
share ``alpha`` (one cell type) but own their op weights. Cell output = x + ReLU(LN(Σ_n softmax(a)_n·node_n)).

Causality (spec §10): the authors' std/dilated convolutions and pools are symmetric, so during all-positions
next-item training the output at t sees x[t+1], its own label. The default op set is causal (left padding
only); the authors' ten ops exist behind ``faithful: true``, which warns. Padding positions are zeroed after
every node, so outputs at real positions do not depend on how much left padding precedes them.

Costs: :func:`measure_op_costs` builds each op at the configured width and counts its parameters and its
multiply-accumulates on a length-``max_len`` sequence with forward hooks (no hard-coded table).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from distillrec.models.base import ModelConfig
from distillrec.models.registry import register_model
from distillrec.models.sasrec import SequentialRecommender
from distillrec.utils import DistillrecError


@dataclass(frozen=True)
class OpSpec:
    kind: Literal["conv", "max", "avg", "skip", "zero"]
    kernel: int = 1
    dilation: int = 1
    causal: bool = True


OPS: dict[str, OpSpec] = {
    # causal ops (the corrected search space)
    "conv_3": OpSpec("conv", 3, 1),
    "conv_5": OpSpec("conv", 5, 1),
    "dil_conv_3": OpSpec("conv", 3, 2),
    "dil_conv_5": OpSpec("conv", 5, 2),
    "max_pool_3": OpSpec("max", 3),
    "avg_pool_3": OpSpec("avg", 3),
    "skip_connect": OpSpec("skip"),
    "none": OpSpec("zero"),
    # the authors' ops (faithful mode); cau_cnn_* are causal but dilated (d=2), as in their code
    "std_cnn_3": OpSpec("conv", 3, 1, causal=False),
    "dil_cnn_3": OpSpec("conv", 3, 2, causal=False),
    "cau_cnn_3": OpSpec("conv", 3, 2),
    "std_cnn_5": OpSpec("conv", 5, 1, causal=False),
    "dil_cnn_5": OpSpec("conv", 5, 2, causal=False),
    "cau_cnn_5": OpSpec("conv", 5, 2),
    "max_pool": OpSpec("max", 3, causal=False),
    "avg_pool": OpSpec("avg", 3, causal=False),
}
CAUSAL_OPS = ("conv_3", "conv_5", "dil_conv_3", "dil_conv_5", "max_pool_3", "avg_pool_3", "skip_connect", "none")
FAITHFUL_OPS = ("std_cnn_3", "dil_cnn_3", "cau_cnn_3", "std_cnn_5", "dil_cnn_5", "cau_cnn_5", "max_pool", "avg_pool",
                "skip_connect", "none")


def edge_list(n_nodes: int) -> list[tuple[int, int]]:
    """(source, target) node of every edge, in the order of the rows of ``alpha``; node 0 is the cell input."""
    return [(j, n) for n in range(1, n_nodes + 1) for j in range(n)]


# -- operations -------------------------------------------------------------------------------------------
# Ops work on [B, L, C] directly: a convolution is one GEMM over the k shifted copies of the sequence, a pool
# is k − 1 element-wise ops on shifted slices. PyTorch's Conv1d/MaxPool1d/AvgPool1d want [B, C, L]; the
# transposes, the copies they force and the CPU pooling kernels made the derived student's encoder slower
# than a SASRec teacher's (a 128-sequence batch of the Beauty student: avg_pool 2.9 ms a call). Values equal
# the PyTorch layers' (tests/test_adarec_supernet.py).
def _pad(x: Tensor, width: int, causal: bool) -> Tensor:
    """Zero-pad the length axis of x [B, L, C]: left only (causal) or both sides."""
    left = width if causal else width // 2
    return F.pad(x, (0, 0, left, width - left))


def _taps(x: Tensor, kernel: int, dilation: int, causal: bool) -> list[Tensor]:
    """The k shifted views [B, L, C] a window op combines at every position (oldest first)."""
    n = x.shape[1]
    xp = _pad(x, (kernel - 1) * dilation, causal)
    return [xp[:, j * dilation : j * dilation + n] for j in range(kernel)]


class ConvOp(nn.Module):
    """Conv1d over positions (bias) + a norm: LayerNorm over channels (default; per position, so it is causal)
    or the authors' BatchNorm1d (faithful; its batch statistics mix positions). The ``nn.Conv1d`` holds the
    weights (checkpoints keep their names); the forward pass is one GEMM on the concatenated taps."""

    def __init__(self, channels: int, kernel: int, dilation: int, causal: bool, norm: str) -> None:
        super().__init__()
        self.causal, self.kernel, self.dilation = causal, kernel, dilation
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation)
        self.norm = nn.BatchNorm1d(channels) if norm == "batch" else nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:  # [B, L, C]
        taps = torch.cat(_taps(x, self.kernel, self.dilation, self.causal), dim=-1)  # [B, L, k·C], tap-major
        w = self.conv.weight.permute(0, 2, 1).reshape(self.conv.out_channels, -1)  # [C_out, k·C_in], tap-major
        h = F.linear(taps, w, self.conv.bias)
        if isinstance(self.norm, nn.BatchNorm1d):
            return self.norm(h.transpose(1, 2)).transpose(1, 2)
        return self.norm(h)

    def macs(self, out: Tensor) -> int:
        return out.numel() * (self.conv.in_channels * self.kernel + 1)


class PoolOp(nn.Module):
    """Stride-1 max/avg pooling; inputs are ReLU outputs (≥ 0), so zero padding equals PyTorch's -inf padding
    for max, and the average counts the padding (the authors' ``count_include_pad``)."""

    def __init__(self, kind: str, kernel: int, causal: bool) -> None:
        super().__init__()
        self.kind, self.kernel, self.causal = kind, kernel, causal

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "max" and torch.is_grad_enabled():
            # training: PyTorch's kernel (its backward routes a window's gradient to one argmax, where chained
            # maxima would split ties — frequent on ReLU zeros — and take 1.5× longer)
            xp = _pad(x, self.kernel - 1, self.causal).transpose(1, 2)
            return F.max_pool1d(xp, self.kernel, stride=1).transpose(1, 2)
        taps = _taps(x, self.kernel, 1, self.causal)
        out = taps[0]
        for t in taps[1:]:
            out = torch.maximum(out, t) if self.kind == "max" else out + t
        return out if self.kind == "max" else out / self.kernel

    def macs(self, out: Tensor) -> int:
        return out.numel() * self.kernel


class Zero(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


def make_op(name: str, channels: int, norm: str = "layer") -> nn.Module:
    if name not in OPS:
        raise DistillrecError(f"unknown operation {name!r}; known: {', '.join(OPS)}")
    s = OPS[name]
    if s.kind == "conv":
        op: nn.Module = ConvOp(channels, s.kernel, s.dilation, s.causal, norm)
    elif s.kind in ("max", "avg"):
        op = PoolOp(s.kind, s.kernel, s.causal)
    else:
        op = nn.Identity() if s.kind == "skip" else Zero()
    op.causal = s.causal
    return op


# -- measured costs -----------------------------------------------------------------------------------------
def count_macs(module: nn.Module, run: Callable[[], object]) -> int:
    """Multiply-accumulates of ``run()`` counted by forward hooks on the layers that do arithmetic:
    Conv1d and ConvOp out·(C_in/groups·k + 1 bias), Linear out·(in + 1), Layer/BatchNorm 2·out (normalise + affine),
    pooling out·k. Element-wise activations and attention products are not counted."""
    total = [0]

    def hook(m: nn.Module, inp, out) -> None:
        n = out.numel()
        if isinstance(m, ConvOp | PoolOp):  # they run their arithmetic themselves (not through a Conv1d call)
            total[0] += m.macs(out)
        elif isinstance(m, nn.Conv1d):
            total[0] += n * (m.in_channels // m.groups * m.kernel_size[0] + (m.bias is not None))
        elif isinstance(m, nn.Linear):
            total[0] += n * (m.in_features + (m.bias is not None))
        elif isinstance(m, nn.LayerNorm | nn.BatchNorm1d):
            total[0] += 2 * n
        elif isinstance(m, nn.MaxPool1d | nn.AvgPool1d):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            total[0] += n * k

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return total[0]


def measure_op_costs(names: list[str] | tuple[str, ...], channels: int, length: int,
                     norm: str = "layer") -> dict[str, dict[str, int]]:
    """Parameters and MACs (one sequence of ``length`` positions) of each op built at width ``channels``."""
    out = {}
    for name in names:
        op = make_op(name, channels, norm).eval()
        x = torch.ones(1, length, channels)
        out[name] = {"params": sum(p.numel() for p in op.parameters()), "macs": count_macs(op, partial(op, x))}
    return out


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
    """ReLU, then Σ_o w_o·op_o. Without gradients only the ops with a non-zero weight run (evaluation)."""

    def __init__(self, names: list[str], channels: int, norm: str) -> None:
        super().__init__()
        self.names = list(names)
        self.ops = nn.ModuleDict({n: make_op(n, channels, norm) for n in names})

    def forward(self, x: Tensor, weights: Tensor | None) -> Tensor:
        h = torch.relu(x)
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
        e = 0
        for n in range(1, self.n_nodes + 1):
            s = 0
            for j in range(n):
                s = s + self.edges[e](nodes[j], None if arch is None else arch[e])
                e += 1
            nodes.append(s * real)
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
    """Embedding (item + position counted from the newest item) → cells → Linear; tied item scores."""

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
        n = input_seq.shape[1]
        real = (input_seq != self.pad_id).unsqueeze(-1).to(self.item_embedding.weight.dtype)
        positions = torch.arange(n - 1, -1, -1, device=input_seq.device)  # last column = position 0
        x = self.dropout(self.item_embedding(input_seq) + self.position_embedding(positions)) * real
        states = [x]
        for cell in self.cells:
            x = cell(x, real, arch)
            states.append(x)
        return states

    def output(self, hidden: Tensor) -> Tensor:
        return self.final_layer(self.dropout(hidden))

    def non_embedding_parameters(self) -> int:
        skip = {id(self.item_embedding.weight), id(self.position_embedding.weight)}
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

    def context_length(self) -> int | None:
        """1 + the summed window widths along the longest path through every cell: all its ops are causal, so
        the newest output never reads an older position (a Beauty batch's 50 columns shrink to 25 for the
        searched cell conv_3 → max_pool_3 → avg_pool_3). Non-causal (faithful) ops: no trimming."""
        specs = [OPS[name] for name in self.config.genotype]
        if not all(s.causal for s in specs):
            return None
        reach = [0] * (self.config.n_nodes + 1)
        for (src, dst), s in zip(edge_list(self.config.n_nodes), specs, strict=True):
            width = (s.kernel - 1) * s.dilation if s.kind in ("conv", "max", "avg") else 0
            reach[dst] = max(reach[dst], reach[src] + width)
        return 1 + self.config.n_cells * max(reach)

    def warm_start(self, supernet: SuperNet) -> int:
        """Copy every weight whose name and shape match from a trained super-net; returns how many tensors."""
        own = self.state_dict()
        take = {k: v for k, v in supernet.state_dict().items() if k in own and own[k].shape == v.shape}
        self.load_state_dict(take, strict=False)
        return len(take)
