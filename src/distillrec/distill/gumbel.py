"""Gumbel noise, the Gumbel-softmax relaxation and DE's per-epoch temperature annealing.

DE (and HTD) pick one expert per entity with a Gumbel-softmax whose temperature decays exponentially per
epoch: τ(e) = τ0·(τ_end/τ0)^{e/E}. The authors tie E to ``max_epoch`` = 1000, so with early stopping near
epoch 250 τ only reaches ≈ 3e-3; here E is an explicit setting.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

_TINY = 1e-20


def anneal_temperature(epoch: int, tau0: float = 1.0, tau_end: float = 1e-10, n_epochs: int = 1000) -> float:
    """τ(e) = τ0·(τ_end/τ0)^{e/E}, clamped to ≥ τ_end (so epochs past E stay at τ_end)."""
    if tau0 <= 0 or tau_end <= 0:
        raise ValueError(f"temperatures must be positive, got tau0={tau0}, tau_end={tau_end}")
    if n_epochs <= 0:
        raise ValueError(f"n_epochs must be positive, got {n_epochs}")
    if epoch < 0:
        raise ValueError(f"epoch must be ≥ 0, got {epoch}")
    tau = tau0 * (tau_end / tau0) ** (epoch / n_epochs)
    return max(tau, tau_end)


def training_temperature(epoch: int, tau0: float = 1.0, tau_end: float = 1e-10, n_epochs: int = 1000) -> float:
    """τ for the trainer's 1-based ``epoch`` in the authors' loop, which sets τ(e) *after* 0-based epoch e
    (spec §2.3): epochs 1 and 2 train at τ0, epoch n ≥ 2 at τ(n − 2)."""
    return anneal_temperature(max(0, epoch - 2), tau0, tau_end, n_epochs)


_NUMPY_MIN = 1 << 16  # smaller draws: torch's own generator is as fast


def uniform(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None,
            device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """U[0, 1) samples. Large CPU draws come from numpy's PCG64 (~3× faster than torch's Mersenne twister:
    DCD's per-epoch draws take 30M numbers), seeded by one 62-bit draw of ``generator`` (or of torch's
    global generator), so they remain a function of that generator's state: seeded and resumed runs repeat."""
    on_cpu = device is None or torch.device(device).type == "cpu"
    if not on_cpu or math.prod(shape) < _NUMPY_MIN or dtype not in (torch.float32, torch.float64):
        return torch.rand(shape, generator=generator, device=device, dtype=dtype)
    seed = int(torch.randint(0, 1 << 62, (1,), generator=generator))
    draws = np.random.default_rng(seed).random(tuple(shape), dtype=np.float32 if dtype == torch.float32 else None)
    return torch.from_numpy(draws)


def gumbel_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """i.i.d. Gumbel(0, 1) samples: −log(−log U), U ~ Uniform(0, 1) kept away from 0 and 1."""
    u = uniform(shape, generator, device, dtype)
    return u.clamp_(_TINY, 1.0 - 1e-7).log_().neg_().log_().neg_()  # in place: one buffer for all the steps


def gumbel_softmax(log_probs: Tensor, tau: float, generator: torch.Generator | None = None) -> Tensor:
    """Relaxed one-hot sample: softmax((log α + g)/τ) over the last dimension.

    Stable for tiny τ (1e-10): softmax subtracts the row maximum, so the result tends to an exact one-hot.
    """
    if tau <= 0:
        raise ValueError(f"Gumbel-softmax temperature must be positive, got {tau}")
    g = gumbel_noise(log_probs.shape, generator=generator, device=log_probs.device, dtype=log_probs.dtype)
    return torch.softmax((log_probs + g) / tau, dim=-1)
