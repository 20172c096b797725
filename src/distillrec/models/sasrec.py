"""SASRec (Kang & McAuley, ICDM'18): causal self-attention over the item sequence, next-item prediction.

Layout follows RecBole/S3-Rec (post-LN blocks, GELU feed-forward, output tied to the item embeddings), whose
SASRec gives the published Beauty full-ranking numbers (HR@10 0.0605, NDCG@10 0.0318). Defaults are the
S3-Rec/RecBole Beauty settings: hidden 64, 2 layers, 2 heads, inner 256, dropout 0.5, max_len 50.

Position embeddings count back from the most recent item (the last column is position 0). For a fixed
``max_len`` this is the usual learned absolute position table read right-to-left; it makes the output at a
real position independent of how much left padding precedes the sequence.

This module also holds :class:`SequentialRecommender`, the part shared with NextItNet: the next-item loss,
``prepare_eval`` (the users' padded histories as a non-persistent buffer) and scoring from the last position.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.data.sequences import pad_left
from distillrec.models.base import ModelConfig, Recommender
from distillrec.models.registry import register_model
from distillrec.utils import DistillrecError


class SequentialRecommender(Recommender):
    """Next-item models over left-padded sequences (pad id = n_items). Subclasses implement ``encode``.

    ``encode(input_seq)`` returns ``[embedding output, layer 1, ..., layer n]``, each [B, L, d];
    ``output(hidden)`` maps the last layer to the space of the (tied) item embeddings.
    """

    input_type: ClassVar[str] = "sequence"
    # the output at a real position does not depend on how much left padding precedes it (every model here,
    # except the AdaRec super-net/student in faithful mode, whose padding carries position embeddings)
    padding_is_inert: bool = True
    item_embedding: nn.Embedding
    eval_seq: Tensor | None

    def __init__(self, n_users: int, n_items: int, config: ModelConfig | None = None) -> None:
        super().__init__(n_users, n_items, config)
        self.pad_id = n_items
        # per-user padded histories for ranking; not in the state_dict (they depend on the split)
        self.register_buffer("eval_seq", None, persistent=False)

    # -- to implement -------------------------------------------------------------------------------------
    def encode(self, input_seq: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def output(self, hidden: Tensor) -> Tensor:
        return hidden

    def context_length(self) -> int | None:
        """How many of the newest positions the last position's output depends on (None: all of them)."""
        return None

    # -- sequence API (AdaRec distils these) --------------------------------------------------------------
    def hidden_states(self, input_seq: Tensor, include_embedding: bool = False) -> list[Tensor]:
        """Per-layer outputs [B, L, d]; with ``include_embedding`` the embedding output comes first."""
        states = self.encode(self._check_seq(input_seq))
        return states if include_embedding else states[1:]

    def seq_output(self, input_seq: Tensor) -> Tensor:
        """The representation at every position [B, L, d] that is dotted with the item embeddings."""
        return self.output(self.encode(self._check_seq(input_seq))[-1])

    def logits(self, input_seq: Tensor) -> Tensor:
        """Next-item scores at every position [B, L, n_items] (B·L·n_items floats: keep batches small)."""
        return self.item_logits(self.seq_output(input_seq))

    def output_items(self) -> tuple[Tensor, Tensor | None]:
        """(weights [n_items, d], bias [n_items] or None) scoring an output representation against every item:
        the item embeddings themselves (tied) unless a model has an output layer of its own."""
        return self.item_embedding.weight[: self.n_items], None

    def item_logits(self, output: Tensor) -> Tensor:
        """Scores over all items [..., n_items] of output representations [..., d]."""
        weight, bias = self.output_items()
        scores = output @ weight.T
        return scores if bias is None else scores + bias

    def _item_scores(self, output: Tensor, items: Tensor) -> Tensor:
        """Scores of one item per output row: output [..., d], items [...] → [...]."""
        weight, bias = self.output_items()
        scores = (output * weight[items]).sum(-1)
        return scores if bias is None else scores + bias[items]

    # -- the Recommender contract -------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        target = batch["target_seq"]
        h = self.seq_output(batch["input_seq"])
        valid = target != self.pad_id
        if not bool(valid.any()):
            raise ValueError("sequence batch has no target: every target_seq entry is the padding id")
        hv, tv = h[valid], target[valid]  # only real positions: logits are [n_targets, n_items], not B·L·I
        if self.config.loss_type == "ce":
            return F.cross_entropy(self.item_logits(hv), tv)
        pos = self._item_scores(hv, tv)
        neg = self._item_scores(hv, batch["neg_seq"][valid])
        return F.softplus(-pos).mean() + F.softplus(neg).mean()  # = BCE(pos, 1) + BCE(neg, 0)

    def prepare_eval(self, dataset: Dataset, split: str) -> None:
        if dataset.n_items != self.n_items:
            raise DistillrecError(f"data set {dataset.name!r} has {dataset.n_items} items, model has {self.n_items}")
        self.eval_seq = pad_left(dataset.history(split), self.config.max_len, self.pad_id).to(self.device)

    def clear_cache(self) -> None:
        self.eval_seq = None

    def user_repr(self, users: Tensor) -> Tensor:
        """The last-position representation of each user's prepared history [B, d]."""
        if self.eval_seq is None:
            raise DistillrecError(f"{self.name}: call prepare_eval(dataset, split) before scoring users")
        seq = self.eval_seq[users.to(self.eval_seq.device)]
        # Most histories are far shorter than max_len: drop the batch's leading all-padding columns where the
        # outputs do not depend on left padding, and a model with a finite receptive field needs even fewer.
        width = max(1, int((seq != self.pad_id).sum(1).max())) if self.padding_is_inert else seq.shape[1]
        width = min(width, self.context_length() or width)
        return self.output(self.last_hidden(self._check_seq(seq[:, -width:])))

    def last_hidden(self, input_seq: Tensor) -> Tensor:
        """The last layer's output at the newest position [B, d] (what scoring needs)."""
        return self.encode(input_seq)[-1][:, -1]

    @staticmethod
    def newest_through(x: Tensor, real: Tensor, layers: list[tuple[Callable[[Tensor, Tensor], Tensor], int]]) -> Tensor:
        """The newest position's output [B, d] of ``layers`` — (layer(x, real), reach) pairs of causal layers whose
        output at t reads inputs t − reach … t — run on x [B, L, d] (real [B, L, 1]: 0 at padding), each layer on
        only the columns the newest output still needs: the last layer reads 1 + its reach, the one before that
        its own reach more, and so on. Exact: a column dropped at a layer's left edge changes only outputs that
        no later layer reads."""
        need = [1]
        for _, reach in reversed(layers):
            need.append(need[-1] + reach)
        for (layer, _), width in zip(layers, reversed(need[1:]), strict=True):
            x, real = x[:, -width:], real[:, -width:]
            x = layer(x, real)
        return x[:, -1]

    def item_repr(self, items: Tensor) -> Tensor:
        return self.item_embedding(items)

    def full_scores(self, users: Tensor) -> Tensor:
        return self.item_logits(self.user_repr(users))

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        h = self.user_repr(users)
        items = items.to(h.device)
        return self._item_scores(h if items.dim() == 1 else h.unsqueeze(1), items)

    # -- helpers ------------------------------------------------------------------------------------------
    def _real(self, input_seq: Tensor) -> Tensor:
        """[B, L, 1] in the embeddings' dtype: 1 at real items, 0 at padding (the convolutional models' mask)."""
        return (input_seq != self.pad_id).unsqueeze(-1).to(self.item_embedding.weight.dtype)

    def _check_seq(self, input_seq: Tensor) -> Tensor:
        if input_seq.dim() != 2:
            raise ValueError(f"input_seq must be [batch, length], got shape {tuple(input_seq.shape)}")
        if input_seq.shape[1] > self.config.max_len:
            raise ValueError(f"input_seq has length {input_seq.shape[1]} > max_len {self.config.max_len}")
        return input_seq.to(self.device)


class SASRecConfig(ModelConfig):
    hidden_size: int = Field(64, ge=1)
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(2, ge=1)
    inner_size: int = Field(256, ge=1)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)  # embeddings, residual branches
    attn_dropout: float = Field(0.5, ge=0.0, lt=1.0)  # attention probabilities
    hidden_act: Literal["gelu", "relu"] = "gelu"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    max_len: int = Field(50, ge=1)
    loss_type: Literal["ce", "bce"] = "ce"


class _Block(nn.Module):
    """Post-LN transformer block: x = LN(x + attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, c: SASRecConfig) -> None:
        super().__init__()
        if c.hidden_size % c.n_heads:
            raise ValueError(f"hidden_size {c.hidden_size} is not divisible by n_heads {c.n_heads}")
        self.n_heads = c.n_heads
        self.attn_dropout = c.attn_dropout
        self.qkv = nn.Linear(c.hidden_size, 3 * c.hidden_size)
        self.attn_out = nn.Linear(c.hidden_size, c.hidden_size)
        self.ln_attn = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.ffn = nn.Sequential(
            nn.Linear(c.hidden_size, c.inner_size),
            nn.GELU() if c.hidden_act == "gelu" else nn.ReLU(),
            nn.Linear(c.inner_size, c.hidden_size),
        )
        self.ln_ffn = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x: Tensor, attn_mask: Tensor, newest_only: bool = False) -> Tensor:
        """``newest_only``: queries (and the output) at the last position alone, [B, 1, d]; keys stay all."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if newest_only:
            q, attn_mask, x, n = q[:, :, -1:], attn_mask[:, :, -1:], x[:, -1:], 1
        p = self.attn_dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        a = a.transpose(1, 2).reshape(b, n, d)
        x = self.ln_attn(x + self.dropout(self.attn_out(a)))
        return self.ln_ffn(x + self.dropout(self.ffn(x)))


@register_model("sasrec")
class SASRec(SequentialRecommender):
    Config: ClassVar[type[ModelConfig]] = SASRecConfig
    config: SASRecConfig

    def __init__(self, n_users: int, n_items: int, config: SASRecConfig | None = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        self.item_embedding = nn.Embedding(n_items + 1, c.hidden_size, padding_idx=n_items)
        self.position_embedding = nn.Embedding(c.max_len, c.hidden_size)
        self.ln_emb = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(_Block(c) for _ in range(c.n_layers))
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=self.config.initializer_range)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()

    def encode(self, input_seq: Tensor) -> list[Tensor]:
        x, attn_mask = self._embed(input_seq)
        states = [x]
        for block in self.blocks:
            x = block(x, attn_mask)
            states.append(x)
        return states

    def last_hidden(self, input_seq: Tensor) -> Tensor:
        # Only the newest position is scored: the last block's other queries (their attention rows, output
        # projection and FFN) feed nothing. Exact; on a Beauty batch it saves ~40 % of a 2-block encoder.
        x, attn_mask = self._embed(input_seq)
        for block in self.blocks[:-1]:
            x = block(x, attn_mask)
        return self.blocks[-1](x, attn_mask, newest_only=True)[:, -1]

    def _embed(self, input_seq: Tensor) -> tuple[Tensor, Tensor]:
        n = input_seq.shape[1]
        real = input_seq != self.pad_id  # [B, L]
        positions = torch.arange(n - 1, -1, -1, device=input_seq.device)  # last column = position 0
        x = self.dropout(self.ln_emb(self.item_embedding(input_seq) + self.position_embedding(positions)))
        # query t may attend key s <= t if s is a real item; a padding query attends only itself (no empty row)
        causal = torch.ones(n, n, dtype=torch.bool, device=input_seq.device).tril()
        eye = torch.eye(n, dtype=torch.bool, device=input_seq.device)
        attn_mask = (causal & (real[:, None, :] | eye))[:, None]  # [B, 1, L, L]
        return x, attn_mask
