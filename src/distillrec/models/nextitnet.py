"""NextItNet (Yuan et al., WSDM'19): stacked residual blocks of causal dilated 1-D convolutions.

Each residual block is, as in the authors' code (``fajieyuan/WSDM2019-nextitnet``, ``ops.py``) and RecBole:
causal conv (kernel k, dilation d) → LayerNorm → ReLU → causal conv (kernel k, dilation 2d) → LayerNorm →
ReLU, then ``x + F(x)`` (or ``x + ε·F(x)`` with a learnable ε initialised to 0 when ``rezero``, as in
AdaRec's teacher). ``dilations=[1, 4]`` therefore gives convolutions with dilations 1, 2, 4, 8 — the paper's
{1, 2, 4, 8} stack — and ``n_blocks`` repeats it. Defaults: 64 channels, kernel 3, 2 repeats (4 residual
blocks, receptive field 61 ≥ max_len 50), full softmax (CE) over all items, scores tied to the item
embeddings through a final linear layer (RecBole's layout).

Causality: convolutions are padded on the left only, so position t never sees t+1, t+2, …. Padding
positions are zeroed after every convolution, so a padding token behaves exactly like the convolution's own
zero padding: the output at a real position does not depend on how much left padding precedes it.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distillrec.models.base import ModelConfig
from distillrec.models.registry import register_model
from distillrec.models.sasrec import SequentialRecommender


class NextItNetConfig(ModelConfig):
    embedding_dim: int = Field(64, ge=1)
    dilations: list[int] = Field(default_factory=lambda: [1, 4])  # per residual block; its 2nd conv uses 2d
    n_blocks: int = Field(2, ge=1)  # how many times the dilation list is repeated
    kernel_size: int = Field(3, ge=1)
    rezero: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # on the embedding output (the paper uses none)
    max_len: int = Field(50, ge=1)
    loss_type: Literal["ce", "bce"] = "ce"


class _CausalConv(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.left = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:  # x: [B, d, L]
        return self.conv(F.pad(x, (self.left, 0)))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int, rezero: bool) -> None:
        super().__init__()
        self.conv1 = _CausalConv(channels, kernel_size, dilation)
        self.ln1 = nn.LayerNorm(channels)
        self.conv2 = _CausalConv(channels, kernel_size, 2 * dilation)
        self.ln2 = nn.LayerNorm(channels)
        self.eps = nn.Parameter(torch.zeros(1)) if rezero else None
        self.reach = self.conv1.left + self.conv2.left  # the output at t reads inputs t − reach … t: (k − 1)·3d

    def forward(self, x: Tensor, real: Tensor) -> Tensor:
        """x: [B, L, d]; real: [B, L, 1] float, 0 at padding positions."""
        h = torch.relu(self.ln1(self.conv1(x.transpose(1, 2)).transpose(1, 2))) * real
        h = torch.relu(self.ln2(self.conv2(h.transpose(1, 2)).transpose(1, 2))) * real
        return x + (self.eps * h if self.eps is not None else h)


@register_model("nextitnet")
class NextItNet(SequentialRecommender):
    Config: ClassVar[type[ModelConfig]] = NextItNetConfig
    config: NextItNetConfig

    def __init__(self, n_users: int, n_items: int, config: NextItNetConfig | None = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if not c.dilations or min(c.dilations) < 1:
            raise ValueError(f"nextitnet: dilations must be a non-empty list of positive ints, got {c.dilations}")
        d = c.embedding_dim
        self.item_embedding = nn.Embedding(n_items + 1, d, padding_idx=n_items)
        self.dropout = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            _ResidualBlock(d, c.kernel_size, dil, c.rezero) for _ in range(c.n_blocks) for dil in c.dilations
        )
        self.final_layer = nn.Linear(d, d)
        # RecBole's initialisation: uniform ±1/sqrt(d) embeddings, Xavier-normal linear/conv weights
        nn.init.uniform_(self.item_embedding.weight, -(d**-0.5), d**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[self.pad_id].zero_()
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Conv1d):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def receptive_field(self) -> int:
        """How many positions (the current one included) the last layer sees."""
        return 1 + sum(block.reach for block in self.blocks)

    def context_length(self) -> int:
        return self.receptive_field

    def last_hidden(self, input_seq: Tensor) -> Tensor:
        # each block adds its reach, so the last blocks need far fewer columns than the first
        return self.newest_through(*self._embed(input_seq), [(block, block.reach) for block in self.blocks])

    def _embed(self, input_seq: Tensor) -> tuple[Tensor, Tensor]:
        """(item embeddings [B, L, d] zeroed at padding, real [B, L, 1]: 0 at padding)."""
        real = self._real(input_seq)
        return self.dropout(self.item_embedding(input_seq)) * real, real

    def encode(self, input_seq: Tensor) -> list[Tensor]:
        x, real = self._embed(input_seq)
        states = [x]
        for block in self.blocks:
            x = block(x, real)
            states.append(x)
        return states

    def output(self, hidden: Tensor) -> Tensor:
        return self.final_layer(hidden)
