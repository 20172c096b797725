"""Checkpoints: plain dicts of tensors and plain data, written atomically, read with ``weights_only=True``.

``last.pt`` holds everything needed to resume (optimizer, counters, distiller state); ``best.pt`` holds the
deployable model only: weights, model name and hyper-parameters, the resolved config and the data set's
fingerprint, so a checkpoint can never be scored against another data set's id maps.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from distillrec.utils import DistillrecError, atomic_torch_save

FORMAT = "distillrec-checkpoint/1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    return atomic_torch_save(path, {"format": FORMAT, **payload})


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise DistillrecError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as e:
        raise DistillrecError(f"{path}: not a readable distillrec checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise DistillrecError(f"{path}: not a distillrec checkpoint (missing format tag {FORMAT!r})")
    return ckpt


def check_fingerprint(ckpt: dict[str, Any], dataset_fingerprint: str, path: str | Path, dataset_name: str) -> None:
    have = ckpt.get("dataset_fingerprint")
    if have != dataset_fingerprint:
        trained = ckpt.get("dataset_name", "?")
        raise DistillrecError(
            f"{path}: the checkpoint was trained on data set {trained!r} with other user/item id maps "
            f"(fingerprint {have}) than {dataset_name!r} ({dataset_fingerprint}); its scores would be meaningless"
        )
