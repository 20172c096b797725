"""Top-K recommendations for many users at once, in external ids: what a deployed student is asked for.

Users are scored in batches (``batch_size`` × n_items scores at a time, the evaluation's memory budget), each
user's training items are set to −inf before the top-K, and the result is a long table ``user, rank, item,
score`` (rank 1 = best). Ties are broken by internal item id, as in evaluation. A user with fewer than K unseen
items gets fewer rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from distillrec.data.dataset import Dataset
from distillrec.evaluate.protocols import batch_offsets, default_batch_size
from distillrec.evaluate.topk import topk
from distillrec.models.base import Recommender
from distillrec.utils import DistillrecError, atomic_write

OUTPUT_FORMATS = (".csv", ".parquet", ".jsonl")


def internal_users(dataset: Dataset, users: Iterable[str | int] | None, source: str = "") -> np.ndarray:
    """Internal ids of external user ids (all users when None). ``source`` names where the ids came from
    (say ``users.txt``), so that an unknown id is reported with its line."""
    if users is None:
        return np.arange(dataset.n_users, dtype=np.int64)
    out = []
    for line, user in enumerate(users, 1):
        try:
            out.append(dataset.user_index(user))
        except KeyError as e:
            where = f"{source}, line {line}: " if source else ""
            raise DistillrecError(f"{where}{e.args[0]}") from None
    return np.asarray(out, dtype=np.int64)


def read_user_file(path: str | Path) -> list[str]:
    """External user ids, one per line; blank lines and lines starting with '#' are skipped."""
    text = Path(path).read_text()
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


@torch.no_grad()
def top_items(model: Recommender, dataset: Dataset, users: np.ndarray, k: int, split: str = "test",
              batch_size: int | None = None,
              progress: bool | None = None) -> Iterator[tuple[np.ndarray, Tensor, Tensor]]:
    """Yield (internal users [B], items [B, k], scores [B, k]) batch by batch; masked slots score −inf."""
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    k = min(k, dataset.n_items)
    was_training = model.training
    model.eval()
    model.prepare_eval(dataset, split)
    dev = model.device
    bs = max(1, min(int(batch_size or default_batch_size(dataset.n_items, dev)), max(1, len(users))))
    try:
        # every training item of the users as flat offsets into a [bs, n_items] block, once (as evaluate_full)
        seen_ptr, seen_flat = batch_offsets(dataset.train[users], bs, dev)
        for s in tqdm(range(0, len(users), bs), desc="recommending", unit="batch", leave=False,
                      disable=None if progress is None else not progress, mininterval=0.5):
            batch = users[s : s + bs]
            scores = model.full_scores(torch.from_numpy(batch).to(dev)).float().contiguous()
            scores.view(-1).index_fill_(0, seen_flat[seen_ptr[s] : seen_ptr[s + len(batch)]], float("-inf"))
            values, items = topk(scores, k)
            yield batch, items.cpu(), values.cpu()
    finally:
        if was_training:
            model.train()


def recommendations(model: Recommender, dataset: Dataset, users: np.ndarray, k: int, split: str = "test",
                    batch_size: int | None = None, progress: bool | None = None) -> pd.DataFrame:
    """The long table ``user, rank, item, score`` (external ids) for the internal ``users``, in their order."""
    parts = []
    for batch, items, values in top_items(model, dataset, users, k, split, batch_size, progress):
        keep = torch.isfinite(values).numpy()
        ranks = np.broadcast_to(np.arange(1, items.shape[1] + 1), items.shape)
        parts.append(pd.DataFrame({
            "user": np.repeat(dataset.user_ids[batch], items.shape[1]).reshape(items.shape)[keep],
            "rank": ranks[keep],
            "item": dataset.item_ids[items.numpy()][keep],
            "score": values.numpy()[keep],
        }))
    if not parts:
        return pd.DataFrame({"user": [], "rank": [], "item": [], "score": []})
    return pd.concat(parts, ignore_index=True)


def write_recommendations(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the table atomically as CSV, Parquet or JSON lines, chosen by the file's suffix."""
    check_output_path(path)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return atomic_write(path, lambda fh: fh.write(frame.to_csv(index=False).encode()))
    if suffix == ".parquet":
        return atomic_write(path, lambda fh: frame.to_parquet(fh, index=False))
    return atomic_write(path, lambda fh: fh.write(frame.to_json(orient="records", lines=True).encode()))


def check_output_path(path: str | Path) -> None:
    """Fail before any scoring when the output format is unknown (a long run should not end in this error)."""
    if Path(path).suffix.lower() not in OUTPUT_FORMATS:
        raise DistillrecError(f"{path}: unknown output format {Path(path).suffix!r}; "
                              f"use one of {', '.join(OUTPUT_FORMATS)}")

