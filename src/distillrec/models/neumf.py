"""NeuMF: generalised matrix factorisation (GMF) and an MLP tower, fused by one output layer.

Reference: X. He, L. Liao, H. Zhang, L. Nie, X. Hu, T.-S. Chua. "Neural Collaborative Filtering." WWW 2017
(code: github.com/hexiangnan/neural_collaborative_filtering). Trained pointwise with binary cross-entropy: the
positive is labelled 1 and every sampled negative 0 (the paper samples 4 negatives per positive); ``loss_type:
bpr`` trains the same network pairwise instead. Trained from scratch by default; ``init_from`` (a run config
key) starts the GMF half from a BPR-MF run of the same size, the GMF side of the paper's pre-training.

Scoring every item for a batch of users runs the MLP on B × n_items pairs; ``full_scores`` processes items in
chunks so the hidden activations never exceed ``chunk_elements`` floats.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from distillrec.models.base import ModelConfig, Recommender
from distillrec.models.bpr import bpr_loss
from distillrec.models.registry import register_model
from distillrec.utils import DistillrecError


@register_model("neumf")
class NeuMF(Recommender):
    input_type = "pairwise"
    # cap on B × chunk × hidden activations in full_scores (16 MiB of float32): the tower is memory-bound, and
    # 64 MiB chunks ran 1.7× slower than 16 MiB ones (CiteULike, 600 users × 25,181 items, 1 thread; 4 MiB
    # and 1 MiB were no faster, 256 KiB slower again)
    chunk_elements = 1 << 22

    class Config(ModelConfig):
        # NCF code defaults (NeuMF.py): 8 predictive factors, MLP layers [64, 32, 16, 8], where the first entry
        # is the concatenated user+item MLP embedding (32 each); N(0, 0.01) embedding init.
        embedding_dim: int = Field(8, gt=0)  # GMF factors
        mlp_layers: list[int] = Field(default_factory=lambda: [64, 32, 16, 8])
        init_std: float = Field(0.01, gt=0)
        # "bce": NCF's pointwise log loss (positive 1, each sampled negative 0); "bpr": the pairwise BPR loss
        # on the same logits, the ranking objective of the distillation papers' BPR base model
        loss_type: Literal["bce", "bpr"] = "bce"

        @field_validator("mlp_layers")
        @classmethod
        def _check_layers(cls, v: list[int]) -> list[int]:
            if len(v) < 2 or any(x <= 0 for x in v) or v[0] % 2:
                raise ValueError("mlp_layers needs ≥ 2 positive sizes, the first even (user half + item half)")
            return v

    def __init__(self, n_users: int, n_items: int, config: Config | None = None) -> None:
        super().__init__(n_users, n_items, config)
        cfg = self.config
        mlp_dim = cfg.mlp_layers[0] // 2
        self.user_gmf = nn.Embedding(n_users, cfg.embedding_dim)
        self.item_gmf = nn.Embedding(n_items, cfg.embedding_dim)
        self.user_mlp = nn.Embedding(n_users, mlp_dim)
        self.item_mlp = nn.Embedding(n_items, mlp_dim)
        for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            nn.init.normal_(emb.weight, std=cfg.init_std)
        # The first MLP layer acts on [p_u; q_i]; it is split into its user and item halves so that scoring all
        # items computes W_u p_u once per user and W_i q_i once per item, then broadcasts the sum.
        self.mlp_user_in = nn.Linear(mlp_dim, cfg.mlp_layers[1])
        self.mlp_item_in = nn.Linear(mlp_dim, cfg.mlp_layers[1], bias=False)
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(cfg.mlp_layers[1:]))
        self.predict = nn.Linear(cfg.embedding_dim + cfg.mlp_layers[-1], 1)

    def _logits(self, users: Tensor, items: Tensor, dedupe: bool = False) -> Tensor:
        """Logits for users [B] and items [B, N] or [1, N] (broadcast over users) -> [B, N]. ``dedupe``: project
        each distinct item once (candidate lists of many users share most items: the sampled protocol's
        256 × 500 candidates hold ~25k distinct items, and the item half of the first layer is then
        computed 5× less; 1.45× faster scoring for the 15M-parameter CiteULike teacher)."""
        w_gmf, w_mlp = self._output_weights()
        # GMF part: w_gmfᵀ (p_u ⊙ q_i) = (p_u ⊙ w_gmf)ᵀ q_i, one matmul
        gmf = torch.matmul((self.user_gmf(users) * w_gmf).unsqueeze(1), self.item_gmf(items).transpose(1, 2))
        if dedupe:
            distinct, inverse = items.unique(return_inverse=True)
            item_in = self.mlp_item_in(self.item_mlp(distinct))[inverse]
        else:
            item_in = self.mlp_item_in(self.item_mlp(items))
        h = (self.mlp_user_in(self.user_mlp(users)).unsqueeze(1) + item_in).relu_()
        return gmf.squeeze(1) + self._tower(h) @ w_mlp + self.predict.bias

    def _output_weights(self) -> tuple[Tensor, Tensor]:
        """The output layer's weights on the GMF half and on the tower's output."""
        w = self.predict.weight[0]
        return w[: self.config.embedding_dim], w[self.config.embedding_dim :]

    def _tower(self, h: Tensor) -> Tensor:
        # In place: every op here is memory-bound (the hidden widths are ≤ 30), and a Linear's backward needs
        # its input, never its output, so autograd allows it.
        for layer in self.mlp:
            h = layer(h).relu_()
        return h

    def _pair_logits(self, users: Tensor, items: Tensor) -> Tensor:
        """Logits of P (user, item) pairs [P] -> [P]. With more pairs than a table has rows (DCD's item-side
        re-ranking: a million pairs over 5,220 users), that table is projected through its half of the first
        layer once and the projections are gathered, instead of projecting a gathered row per pair: 1.5–1.9×
        faster on the CiteULike student (BENCHMARKS.md, session 14), same values."""
        w_gmf, w_mlp = self._output_weights()
        h = self._first_layer_half(users, self.user_mlp, self.mlp_user_in)
        h = h.add_(self._first_layer_half(items, self.item_mlp, self.mlp_item_in)).relu_()
        gmf = (self.user_gmf(users) * self.item_gmf(items)) @ w_gmf
        return torch.addmv(gmf + self.predict.bias, self._tower(h), w_mlp)

    @staticmethod
    def _first_layer_half(ids: Tensor, emb: nn.Embedding, proj: nn.Linear) -> Tensor:
        """proj(emb(ids)) [P, hidden], projecting the whole table first when that is the smaller product."""
        if ids.numel() > emb.num_embeddings:
            return F.embedding(ids, proj(emb.weight))
        return proj(emb(ids))

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        items = torch.cat([batch["pos_items"].unsqueeze(1), batch["neg_items"]], dim=1)
        logits = self._logits(batch["users"], items)
        if self.config.loss_type == "bpr":
            return bpr_loss(logits[:, 0], logits[:, 1:])
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(logits, labels)

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        if items.dim() == 1:
            return self._pair_logits(users, items)
        return self._logits(users, items, dedupe=items.shape[0] > 1)

    def full_scores(self, users: Tensor) -> Tensor:
        width = max(self.config.mlp_layers[1:])
        chunk = max(1, self.chunk_elements // max(1, len(users) * width))
        all_items = torch.arange(self.n_items, device=users.device).unsqueeze(0)
        return torch.cat([self._logits(users, c) for c in all_items.split(chunk, dim=1)], dim=1)

    @torch.no_grad()
    def init_from(self, other: Recommender) -> None:
        """NCF's pre-training with a BPR-MF run of the GMF size: its embeddings become the GMF half and the
        output weights on that half 1, so the model starts as that MF plus the (small, freshly initialised) MLP
        tower's contribution; the tower trains from there."""
        from distillrec.models.bpr import BPR

        if not isinstance(other, BPR) or other.config.embedding_dim != self.config.embedding_dim \
                or (other.n_users, other.n_items) != (self.n_users, self.n_items):
            raise DistillrecError(
                f"NeuMF (GMF {self.config.embedding_dim}, {self.n_users} × {self.n_items}) starts only from a BPR-MF "
                f"run of the same size, not {type(other).__name__} "
                f"{getattr(other.config, 'embedding_dim', '?')} ({other.n_users} × {other.n_items})")
        self.user_gmf.weight.copy_(other.user_emb.weight)
        self.item_gmf.weight.copy_(other.item_emb.weight)
        self.predict.weight[0, : self.config.embedding_dim] = 1.0

    def user_repr(self, users: Tensor) -> Tensor:
        return torch.cat([self.user_gmf(users), self.user_mlp(users)], dim=-1)

    def item_repr(self, items: Tensor) -> Tensor:
        return torch.cat([self.item_gmf(items), self.item_mlp(items)], dim=-1)
