"""Sequence tensors for sequential recommenders: left padding and the per-epoch training batches.

Conventions (shared with ``models/sasrec.py`` and ``models/nextitnet.py``): item ids are 0..n_items-1 and the
padding id is ``n_items``; sequences are LEFT-padded so the most recent item is always in the last column.

Training is strictly causal and leakage-free: the batches are built from ``dataset.history("train")`` (each
user's sequence without its valid and test items), with ``input_seq = s[:-1]`` and ``target_seq = s[1:]``, so
position t is trained to predict s[t+1] from s[..t] only. The padded tensors are built once per (data set,
max_len); an epoch only shuffles users and draws one uniform negative per position.

Speed: most users' sequences are much shorter than ``max_len`` (Beauty: mean 5.7 training inputs for
max_len 50), so each batch drops its leading all-padding columns (``trim``, exact: both sequential models give
the same outputs at real positions whatever the amount of left padding). ``bucket=True`` additionally groups
users of similar length into the same batch (sorted within windows of ``BUCKET_WINDOW`` batches, batch order
shuffled), which cuts the encoder's work to roughly the real positions at the price of less random batches.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from distillrec.data.dataset import Dataset

BUCKET_WINDOW = 32  # batches per sorting window when bucketing by length

def pad_left(seqs: Sequence[np.ndarray | Sequence[int]], max_len: int, pad_id: int) -> Tensor:
    """Stack sequences into a LongTensor [n, max_len], keeping the last ``max_len`` items, left-padded."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    n = len(seqs)
    tails = [np.asarray(s, dtype=np.int64)[-max_len:] for s in seqs]  # one-time loop: slicing only
    lengths = np.fromiter((len(t) for t in tails), dtype=np.int64, count=n)
    out = np.full((n, max_len), pad_id, dtype=np.int64)
    if lengths.sum() > 0:
        flat = np.concatenate(tails)
        rows = np.repeat(np.arange(n), lengths)
        # column of each kept item: its offset inside its sequence, shifted right by the padding width
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        cols = np.arange(len(flat)) - starts + np.repeat(max_len - lengths, lengths)
        out[rows, cols] = flat
    return torch.from_numpy(out)


class TrainSequences:
    """The padded next-item training tensors of one data set, built once; ``batches`` serves one epoch.

    Users whose training sequence has fewer than two items have no (input, target) pair and are left out.
    Sequences longer than ``max_len + 1`` contribute their most recent ``max_len`` targets (as SASRec does).
    """

    def __init__(self, dataset: Dataset, max_len: int) -> None:
        if dataset.sequences is None:
            raise ValueError(f"data set {dataset.name!r} has no sequences; sequential models need them")
        if dataset.n_items < 2:
            raise ValueError(f"data set {dataset.name!r} has {dataset.n_items} items; negatives need >= 2")
        self.n_items = dataset.n_items
        self.pad_id = dataset.n_items
        self.max_len = max_len
        history = dataset.history("train")
        lengths = np.fromiter((len(s) for s in history), dtype=np.int64, count=len(history))
        keep = np.flatnonzero(lengths >= 2)
        padded = pad_left([history[u] for u in keep], max_len + 1, self.pad_id)
        bad = (padded < 0) | (padded > self.pad_id)
        if bad.any():
            row = int(bad.any(dim=1).nonzero()[0, 0])
            raise ValueError(
                f"data set {dataset.name!r}: user {int(keep[row])} has an item id outside 0..{self.n_items - 1}"
            )
        self.users = torch.from_numpy(keep)
        self.input_seq = padded[:, :-1].contiguous()
        self.lengths = (self.input_seq != self.pad_id).sum(1)  # real input items per row (>= 1)
        target = padded[:, 1:].clone()
        # where the input is padding, the target (the first item) has no history: not a training target
        target[self.input_seq == self.pad_id] = self.pad_id
        self.target_seq = target

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_targets(self) -> int:
        return int((self.target_seq != self.pad_id).sum())

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def sample_negatives(self, target: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One item per position, uniform over the items other than that position's target; pad stays pad."""
        # draw from n_items - 1 values and skip over the target: uniform on the rest, no rejection loop
        neg = torch.randint(0, self.n_items - 1, target.shape, generator=generator)
        neg += (neg >= target).long()
        neg[target == self.pad_id] = self.pad_id
        return neg

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, *, trim: bool = True, bucket: bool = False
    ) -> Iterator[dict[str, Tensor]]:
        """One epoch of shuffled batches ``{"users", "input_seq", "target_seq", "neg_seq"}`` (CPU tensors).

        Sequences are [B, L] with L = ``max_len``, or with ``trim`` the longest input in the batch.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = torch.randperm(len(self), generator=generator)
        starts = torch.arange(0, len(order), batch_size)
        if bucket:
            # stable sort by (window, length): a shuffled epoch, then sorted by length inside each window
            window = torch.arange(len(order)) // (batch_size * BUCKET_WINDOW)
            key = window * (self.max_len + 1) + self.lengths[order]
            order = order[torch.sort(key, stable=True).indices]
            starts = starts[torch.randperm(len(starts), generator=generator)]
        for start in starts.tolist():
            idx = order[start : start + batch_size]
            width = int(self.lengths[idx].max()) if trim else self.max_len
            target = self.target_seq[idx, -width:]
            yield {
                "users": self.users[idx],
                "input_seq": self.input_seq[idx, -width:],
                "target_seq": target,
                "neg_seq": self.sample_negatives(target, generator),
            }


# One TrainSequences per (data set object, max_len): the padding is done once, however many epochs run.
_CACHE: dict[tuple[int, int], tuple[weakref.ref, TrainSequences]] = {}


def train_sequences(dataset: Dataset, max_len: int) -> TrainSequences:
    """The cached :class:`TrainSequences` of ``dataset`` (rebuilt only for a new data set object or max_len)."""
    key = (id(dataset), max_len)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is dataset:
        return hit[1]
    for k in [k for k, (ref, _) in _CACHE.items() if ref() is None]:
        del _CACHE[k]
    built = TrainSequences(dataset, max_len)
    _CACHE[key] = (weakref.ref(dataset), built)
    return built


def sequence_batches(
    dataset: Dataset,
    max_len: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    trim: bool = True,
    bucket: bool = False,
) -> Iterator[dict[str, Tensor]]:
    """One epoch of next-item training batches for a ``"sequence"`` model (see :class:`TrainSequences`)."""
    return train_sequences(dataset, max_len).batches(batch_size, generator, trim=trim, bucket=bucket)
