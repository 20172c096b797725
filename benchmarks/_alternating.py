"""Shared by the step benchmarks that compare forms of one optimiser step in one process
(``lightgcn_step.py``, ``shared_propagation.py``): each round draws a batch and runs every form on it in turn,
so background load hits all forms alike; the result is the median milliseconds per step of each form."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def median_step_ms(forms: dict[str, Callable[[Any], torch.Tensor]], batch: Callable[[], Any],
                   optimizer: torch.optim.Optimizer, rounds: int) -> dict[str, float]:
    """``forms``: name → loss of a batch. Each timed step is zero_grad, loss, backward, optimiser step."""
    times: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(rounds):
        b = batch()
        for name, loss_fn in forms.items():
            t0 = time.perf_counter()
            optimizer.zero_grad()
            loss_fn(b).backward()
            optimizer.step()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) * 1000 for name, v in times.items()}


def machine_line(rounds: int) -> str:
    return (f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s); {rounds} rounds; loss and gradients agree on batch 1")
