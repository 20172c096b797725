"""Epoch batches for each model ``input_type``, built with tensor ops: one shuffle and one vectorised negative
draw per epoch, then slicing. The per-epoch generator is derived from (seed, epoch), so a resumed run draws
exactly the batches an uninterrupted one would."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from distillrec.data.dataset import Dataset


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class BatchBuilder:
    """Holds the tensors that do not change between epochs; ``epoch(...)`` yields that epoch's batches."""

    def __init__(self, dataset: Dataset, input_type: str, batch_size: int, n_negatives: int = 1,
                 max_len: int | None = None, trim: bool = True) -> None:
        self.dataset = dataset
        self.trim = trim  # sequences: cut each batch to its longest history (False: always max_len columns)
        self.input_type = input_type
        self.batch_size = batch_size
        self.n_negatives = n_negatives
        self.max_len = max_len
        train = dataset.train
        if input_type == "pairwise":
            coo = train.tocoo()
            self.users = torch.from_numpy(coo.row.astype(np.int64))
            self.items = torch.from_numpy(coo.col.astype(np.int64))
        elif input_type == "item":
            self.cols = train.T.tocsr()

    def n_batches(self) -> int:
        n = {
            "pairwise": lambda: len(self.users),
            "user": lambda: self.dataset.n_users,
            "item": lambda: self.dataset.n_items,
            "sequence": lambda: len(self._sequences()),
            "none": lambda: 0,
        }[self.input_type]()
        return -(-n // self.batch_size)

    def epoch(self, generator: torch.Generator) -> Iterator[dict[str, Tensor]]:
        return getattr(self, f"_{self.input_type}")(generator)

    def _pairwise(self, g: torch.Generator) -> Iterator[dict[str, Tensor]]:
        from distillrec.data.sampling import sample_negatives

        perm = torch.randperm(len(self.users), generator=g)
        users, items = self.users[perm], self.items[perm]
        negs = torch.as_tensor(sample_negatives(self.dataset.train, users, self.n_negatives, g), dtype=torch.long)
        negs = negs.reshape(len(users), self.n_negatives)
        for s in range(0, len(users), self.batch_size):
            sl = slice(s, s + self.batch_size)
            yield {"users": users[sl], "pos_items": items[sl], "neg_items": negs[sl]}

    def _user(self, g: torch.Generator) -> Iterator[dict[str, Tensor]]:
        perm = torch.randperm(self.dataset.n_users, generator=g)
        for s in range(0, len(perm), self.batch_size):
            users = perm[s : s + self.batch_size]
            rows = torch.from_numpy(self.dataset.train[users.numpy()].toarray())
            yield {"users": users, "rows": rows}

    def _item(self, g: torch.Generator) -> Iterator[dict[str, Tensor]]:
        perm = torch.randperm(self.dataset.n_items, generator=g)
        for s in range(0, len(perm), self.batch_size):
            items = perm[s : s + self.batch_size]
            cols = torch.from_numpy(self.cols[items.numpy()].toarray())
            yield {"items": items, "cols": cols}

    def _sequences(self):
        from distillrec.data.sequences import train_sequences

        return train_sequences(self.dataset, self.max_len or 50)

    def _sequence(self, g: torch.Generator) -> Iterator[dict[str, Tensor]]:
        yield from self._sequences().batches(self.batch_size, g, trim=self.trim)

    def _none(self, g: torch.Generator) -> Iterator[dict[str, Tensor]]:
        return iter(())


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
