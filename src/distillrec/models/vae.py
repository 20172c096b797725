"""Mult-VAE (user-based) and its item-based twin ``iae``.

Reference: D. Liang, R. G. Krishnan, M. D. Hoffman, T. Jebara. "Variational Autoencoders for Collaborative
Filtering." WWW 2018 (code: github.com/dawenl/vae_cf). The encoder reads an L2-normalised, dropped-out
interaction vector and outputs (μ, log σ²); the decoder maps z to logits over the outputs; the loss is the
multinomial log-likelihood plus β·KL, β rising linearly to ``anneal_cap`` over ``total_anneal_steps`` updates.
The step count is a persistent buffer, so a resumed run continues the schedule. At evaluation z = μ.

``vae`` encodes a user's training row and scores items. ``iae`` (HetComp's item-based autoencoder, "I-AE") runs
the same network over item columns: it encodes an item's column of users and its decoder scores users, so a
user's score for item i is the decoder logit of that user given i's code; ``prepare_eval`` caches the decoder's
last hidden layer for every item.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.models.base import ModelConfig, Recommender
from distillrec.models.registry import register_model
from distillrec.utils import DistillrecError


def normalized_rows(indptr: Tensor, indices: Tensor, idx: Tensor, n_cols: int) -> Tensor:
    """Rows ``idx`` [B] of a binary CSR matrix (indptr, indices), each scaled to unit L2 norm (the encoder's input
    normalisation), as a sparse COO tensor [B, n_cols]: the encoder's first layer then costs nnz × hidden."""
    starts = indptr[idx]
    counts = indptr[idx + 1] - starts
    row = torch.repeat_interleave(torch.arange(len(idx), device=idx.device), counts)
    first = torch.cumsum(counts, 0) - counts  # where each row's entries begin in the flattened batch
    pos = torch.arange(len(row), device=idx.device) - first[row] + starts[row]
    values = counts[row].float().rsqrt()
    return torch.sparse_coo_tensor(
        torch.stack([row, indices[pos]]), values, (len(idx), n_cols), is_coalesced=True, check_invariants=False
    )


class _AutoEncoder(Recommender):
    """The shared Mult-VAE network over "entities" (rows of ``matrix``) with ``n_out`` outputs each."""

    vector_key: str = ""  # batch key of the entities' interaction vectors
    eval_chunk = 4096  # entities encoded at once when caching every code (iae)

    class Config(ModelConfig):
        # vae_cf notebook: p_dims = [200, 600, n_items] (latent 200, one hidden layer of 600, tanh), input
        # dropout 0.5, β annealed to 0.2 over 200,000 updates. Its L2 (λ = 0.01) is the optimiser's weight decay.
        embedding_dim: int = Field(200, gt=0)  # latent size
        hidden_dims: list[PositiveInt] = Field(default_factory=lambda: [600])
        dropout: float = Field(0.5, ge=0, lt=1)
        anneal_cap: float = Field(0.2, ge=0)
        total_anneal_steps: int = Field(200_000, ge=0)  # 0 = β fixed at anneal_cap

    def __init__(self, n_users: int, n_items: int, config: ModelConfig | None = None) -> None:
        super().__init__(n_users, n_items, config)
        cfg = self.config
        self.n_entities, self.n_out = self._sizes()
        enc = [self.n_out, *cfg.hidden_dims, 2 * cfg.embedding_dim]
        dec = [cfg.embedding_dim, *reversed(cfg.hidden_dims), self.n_out]
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(enc))
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dec))
        for layer in (*self.encoder, *self.decoder):
            nn.init.xavier_uniform_(layer.weight)  # vae_cf: Xavier weights, N(0, 0.001) biases
            nn.init.normal_(layer.bias, std=0.001)
        self.register_buffer("anneal_step", torch.zeros((), dtype=torch.long))
        self.register_buffer("in_indptr", None, persistent=False)
        self.register_buffer("in_indices", None, persistent=False)

    def _sizes(self) -> tuple[int, int]:
        raise NotImplementedError

    def _matrix(self, train: sp.spmatrix) -> sp.csr_matrix:
        raise NotImplementedError

    @classmethod
    def from_dataset(cls, dataset: Dataset, **hparams: Any) -> _AutoEncoder:
        model = cls(dataset.n_users, dataset.n_items, cls.Config(**hparams))
        model.set_interactions(dataset.train)
        return model

    def set_interactions(self, train: sp.spmatrix) -> None:
        """The users × items training matrix whose rows (vae) or columns (iae) are the evaluation input."""
        if train.shape != (self.n_users, self.n_items):
            raise ValueError(f"training matrix has shape {train.shape}, expected ({self.n_users}, {self.n_items})")
        m = self._matrix(train)
        m.sort_indices()
        device = self.anneal_step.device
        self.in_indptr = torch.from_numpy(m.indptr.astype("int64")).to(device)
        self.in_indices = torch.from_numpy(m.indices.astype("int64")).to(device)
        self.clear_cache()

    def _inputs(self, ids: Tensor) -> Tensor:
        if self.in_indptr is None:
            raise DistillrecError(
                f"{type(self).__name__} needs the training matrix: build it with from_dataset(dataset) "
                "or call set_interactions()"
            )
        return normalized_rows(self.in_indptr, self.in_indices, ids, self.n_out)

    # -- the network -----------------------------------------------------------------------------------------
    @property
    def beta(self) -> float:
        """The KL weight for the next update: min(anneal_cap, step / total_anneal_steps)."""
        cfg = self.config
        if cfg.total_anneal_steps == 0:
            return cfg.anneal_cap
        return min(cfg.anneal_cap, int(self.anneal_step) / cfg.total_anneal_steps)

    def _beta_tensor(self) -> Tensor:
        """``beta`` computed on the device (no host sync per training step)."""
        cfg = self.config
        if cfg.total_anneal_steps == 0:
            return torch.full((), cfg.anneal_cap, device=self.anneal_step.device)
        return (self.anneal_step.float() / cfg.total_anneal_steps).clamp(max=cfg.anneal_cap)

    def encode(self, x: Tensor, dropout: float = 0.0) -> tuple[Tensor, Tensor]:
        """(μ, log σ²) of dense interaction vectors x [B, n_out]."""
        h = F.dropout(F.normalize(x, dim=-1), p=dropout, training=dropout > 0)
        return self._encoder_tail(self.encoder[0](h))

    def _encoder_tail(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder after its first linear layer."""
        for layer in self.encoder[1:]:
            h = layer(torch.tanh(h))
        return h.chunk(2, dim=-1)

    def decode_hidden(self, z: Tensor) -> Tensor:
        """The decoder up to (not including) its output layer."""
        for layer in self.decoder[:-1]:
            z = torch.tanh(layer(z))
        return z

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder[-1](self.decode_hidden(z))

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        x = batch[self.vector_key].float()
        mu, logvar = self.encode(x, self.config.dropout if self.training else 0.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        nll = -(F.log_softmax(self.decode(z), dim=-1) * x).sum(-1).mean()
        kl = (0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1)).sum(-1).mean()
        beta = self._beta_tensor()
        if self.training and torch.is_grad_enabled():
            self.anneal_step += 1
        return nll + beta * kl

    def encode_ids(self, ids: Tensor) -> Tensor:
        """Encoder mean μ of the stored training vectors of entities ``ids`` (sparse first layer)."""
        first = self.encoder[0]
        return self._encoder_tail(torch.sparse.mm(self._inputs(ids), first.weight.T) + first.bias)[0]

    @property
    def out_layer(self) -> nn.Linear:
        return self.decoder[-1]


@register_model("vae")
class MultVAE(_AutoEncoder):
    input_type = "user"
    vector_key = "rows"

    def _sizes(self) -> tuple[int, int]:
        return self.n_users, self.n_items

    def _matrix(self, train: sp.spmatrix) -> sp.csr_matrix:
        return sp.csr_matrix(train, dtype="float32")

    def full_scores(self, users: Tensor) -> Tensor:
        return self.decode(self.encode_ids(users))

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        h = self.decode_hidden(self.encode_ids(users))  # [B, h]
        w, b = self.out_layer.weight[items], self.out_layer.bias[items]  # [B, (N,) h], [B, (N)]
        if items.dim() == 1:
            return (h * w).sum(-1) + b
        return torch.bmm(w, h.unsqueeze(-1)).squeeze(-1) + b

    def user_repr(self, users: Tensor) -> Tensor:
        return self.encode_ids(users)

    def item_repr(self, items: Tensor) -> Tensor:
        return self.out_layer.weight[items]


@register_model("iae")
class ItemAE(_AutoEncoder):
    input_type = "item"
    vector_key = "cols"

    def __init__(self, n_users: int, n_items: int, config: ModelConfig | None = None) -> None:
        super().__init__(n_users, n_items, config)
        self._hidden_cache: Tensor | None = None

    def _sizes(self) -> tuple[int, int]:
        return self.n_items, self.n_users

    def _matrix(self, train: sp.spmatrix) -> sp.csr_matrix:
        return sp.csr_matrix(train, dtype="float32").T.tocsr()

    def item_hidden(self, items: Tensor) -> Tensor:
        """The decoder's last hidden layer for items [M] (their code's image), encoded in chunks."""
        return torch.cat([self.decode_hidden(self.encode_ids(c)) for c in items.split(self.eval_chunk)])

    def _all_hidden(self) -> Tensor:
        if self._hidden_cache is not None and not (self.training and torch.is_grad_enabled()):
            return self._hidden_cache
        hidden = self.item_hidden(torch.arange(self.n_items, device=self.anneal_step.device))
        if not self.training and not torch.is_grad_enabled():
            self._hidden_cache = hidden  # frozen model in eval mode: keep until train()
        return hidden

    def prepare_eval(self, dataset: Dataset, split: str) -> None:
        with torch.no_grad():
            self._hidden_cache = self.item_hidden(torch.arange(self.n_items, device=self.anneal_step.device))

    def clear_cache(self) -> None:
        self._hidden_cache = None

    def full_scores(self, users: Tensor) -> Tensor:
        hidden = self._all_hidden()  # [n_items, h]
        return self.out_layer.weight[users] @ hidden.T + self.out_layer.bias[users].unsqueeze(1)

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        if self._hidden_cache is not None and not (self.training and torch.is_grad_enabled()):
            hidden = self._hidden_cache[items]
        else:
            uniq, inverse = items.unique(return_inverse=True)
            hidden = self.item_hidden(uniq)[inverse]  # [B, (N,) h]
        w, b = self.out_layer.weight[users], self.out_layer.bias[users]
        if items.dim() == 1:
            return (hidden * w).sum(-1) + b
        return torch.bmm(hidden, w.unsqueeze(-1)).squeeze(-1) + b.unsqueeze(1)

    def user_repr(self, users: Tensor) -> Tensor:
        return self.out_layer.weight[users]

    def item_repr(self, items: Tensor) -> Tensor:
        return self.encode_ids(items)
