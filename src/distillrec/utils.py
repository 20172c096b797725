"""Small shared helpers: devices, seeds, atomic writes, the data directory."""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

DATA_DIR_ENV = "DISTILLREC_DATA_DIR"


class DistillrecError(Exception):
    """An error whose message is meant for the user: the CLI prints it without a traceback."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for explicit sampling."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002  (third-party code may use the global RNG)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where data sets live: the argument, else $DISTILLREC_DATA_DIR, else the user cache dir."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "distillrec" / "data"


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray | torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def fusable(params: list[torch.Tensor]) -> bool:
    """Whether Adam's fused kernel applies. On CPU torch defaults to one Python-level update per parameter
    (its ``foreach`` path is CUDA-only by default): for a 25k × 20 embedding table that step cost 7 ms against
    0.4 ms fused, more than the rest of a BPR batch. Same update rule; only the order of float operations
    differs."""
    return bool(params) and all(
        p.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16)
        and p.device.type in ("cpu", "cuda") and not p.is_sparse for p in params)
