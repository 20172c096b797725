"""AdaRec's candidate operations on [B, L, C] sequences and their measured costs.

Causal ops pad on the left only, so the output at position t reads positions ≤ t; the authors' symmetric ops
(``causal=False``) exist for the faithful mode. Costs are measured, not tabulated: :func:`measure_op_costs`
builds each op at the configured width and counts parameters and multiply-accumulates with forward hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillrec.utils import DistillrecError


@dataclass(frozen=True)
class OpSpec:
    kind: Literal["conv", "max", "avg", "skip", "zero"]
    kernel: int = 1
    dilation: int = 1
    causal: bool = True

    @property
    def window(self) -> int:
        """How many earlier positions the op reads besides the current one ((k − 1)·d; 0 for skip and zero)."""
        return (self.kernel - 1) * self.dilation


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
    PoolOp out·k. Element-wise activations and attention products are not counted."""
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
