"""Training objectives of the continual stages, shaped as the trainer's ``distiller`` (``loss(batch) -> dict``,
``on_epoch_start``, ``extra_parameters``, ``stats``), so every stage runs through the one training loop.

- :class:`UpdateObjective` — a pairwise model (BPR-MF, LightGCN, …) on the new block: its own loss, plus
  LWC-KD/PIW terms against its previous version, plus the annealed replay term

      L_rep = λ_rep · exp(−e / T_a) · BCEWithLogits(s_ui, y_ui)     (e = 0-based epoch)

  on the replay triples. The authors take a separate Adam step for the replay pass; here each batch of the
  block carries the next slice of the replay set and one step covers both (the set is covered once per
  epoch), the library's single-step loop. Losses are means, not the authors' sums. With ``negatives``, the
  batch's BPR negatives are redrawn outside the stage's hard set (CCD: the top-N of the teacher system and the
  proxies, spec §B.6d, §B.7.4; continual/negatives.py).
- :class:`VAEUpdateObjective` — a Mult-VAE teacher: its own ELBO on the new block, a KL to the previous
  model's output distribution (old users, old items), and replay as pseudo-labels R_ui ← max(R_ui, 0.1).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillrec.continual.lwckd import LWCKD
from distillrec.continual.negatives import NegativeSampler
from distillrec.continual.replay import ReplayBuffer
from distillrec.models.base import Recommender


class UpdateObjective:
    def __init__(self, model: Recommender, *, lwckd: LWCKD | None = None, replay: ReplayBuffer | None = None,
                 lambda_replay: float = 0.5, anneal_epochs: float = 10.0, resample_every: int = 5,
                 negatives: NegativeSampler | None = None, seed: int = 0) -> None:
        self.model = model
        self.negatives = negatives.to(model.device) if negatives is not None else None
        self.seed = seed
        self._generator: torch.Generator | None = None
        self.lwckd = lwckd.to(model.device) if lwckd is not None else None
        self.replay = replay
        self.lambda_replay = lambda_replay
        self.anneal_epochs = anneal_epochs
        self.resample_every = resample_every
        self.epoch_index = 0

    @property
    def replay_weight(self) -> float:
        if self.anneal_epochs <= 0:
            return self.lambda_replay
        return self.lambda_replay * math.exp(-self.epoch_index / self.anneal_epochs)

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch_index = max(0, epoch - 1)
        self._generator = self._negatives_generator(epoch)
        if self.replay is not None:
            if self.epoch_index == 0 or (self.resample_every and self.epoch_index % self.resample_every == 0):
                self.replay.resample(epoch)
            self.replay.new_epoch(epoch)

    def _negatives_generator(self, epoch: int) -> torch.Generator:
        # the negatives' draws: a function of (seed, epoch), apart from the trainer's stream
        return torch.Generator(device=self.model.device).manual_seed(self.seed * 1_000_003 + 104_729 * epoch)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.negatives is not None and "neg_items" in batch:
            if self._generator is None:
                self._generator = self._negatives_generator(1)
            batch = {**batch, "neg_items": self.negatives.draw(batch["users"], batch["neg_items"], self._generator)}
        with self.model.training_step():  # LightGCN: one propagation for all three terms
            terms = {"base": self.model.loss(batch)}
            if self.lwckd is not None:
                terms.update(self.lwckd.terms(self.model, batch["users"], batch["pos_items"]))
            if self.replay is not None and self.lambda_replay:
                part = self.replay.next_slice()
                if part is not None and len(part):
                    logits = self.model.score(part.users, part.items)
                    bce = F.binary_cross_entropy_with_logits(logits, part.labels.to(logits.dtype))
                    terms["replay"] = self.replay_weight * bce
        return terms

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.lwckd.parameters()) if self.lwckd is not None else []

    def stats(self) -> dict[str, Any]:
        if self.replay is None:
            return {}
        return {"replay_weight": round(self.replay_weight, 6), "n_replay": len(self.replay.data)}


class VAEUpdateObjective:
    """Mult-VAE continual update: ELBO + KL to the previous model + pseudo-label replay."""

    def __init__(self, model: Recommender, previous: Recommender | None, *, kl_lambda: float = 1.0,
                 replay: ReplayBuffer | None = None, pseudo_label: float = 0.1, resample_every: int = 5) -> None:
        self.model = model
        self.previous = previous
        self.kl_lambda = kl_lambda
        self.replay = replay
        self.pseudo_label = pseudo_label
        self.resample_every = resample_every
        self._pairs: sp.csr_matrix | None = None

    def on_epoch_start(self, epoch: int) -> None:
        e = max(0, epoch - 1)
        if self.replay is not None and (e == 0 or (self.resample_every and e % self.resample_every == 0)):
            self.replay.resample(epoch)
            d = self.replay.data
            self._pairs = sp.csr_matrix(
                (np.ones(len(d), np.float32), (d.users.cpu().numpy(), d.items.cpu().numpy())),
                shape=(self.model.n_users, self.model.n_items))

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        users, rows = batch["users"], batch["rows"].float()
        if self._pairs is not None and self._pairs.nnz:
            extra = torch.from_numpy(self._pairs[users.cpu().numpy()].toarray()).to(rows.device)
            rows = torch.maximum(rows, self.pseudo_label * extra)
        terms = {"base": self.model.loss({"users": users, "rows": rows})}
        prev = self.previous
        if prev is not None and self.kl_lambda:
            old = users < prev.n_users
            if bool(old.any()):
                x = rows[old]
                n_old = prev.n_items
                with torch.no_grad():
                    p_old = F.softmax(prev.decode(prev.encode(x[:, :n_old])[0]), dim=1)
                log_q = F.log_softmax(self.model.decode(self.model.encode(x)[0])[:, :n_old], dim=1)
                kl = (p_old * (p_old.clamp(min=1e-12).log() - log_q)).sum(1).mean()
                terms["kl_prev"] = self.kl_lambda * kl
        return terms

    def extra_parameters(self) -> list[nn.Parameter]:
        return []

    def stats(self) -> dict[str, Any]:
        return {"n_replay": int(self._pairs.nnz)} if self._pairs is not None else {}
