"""CCD's stability and plasticity proxies: parameter-level EMAs of the successive distilled students (§B.6b).

    θ^X_{k−1} = w_X · θ^X_{k−2} + (1 − w_X) · D_{k−1}        (X ∈ {S, P}; θ^S_0 = θ^P_0 = D_0)

over the rows both models have; rows of entities new to D_{k−1} come from D_{k−1} alone. A large w_S keeps
the stability proxy close to the old students, a small w_P keeps the plasticity proxy close to the latest one.
Proxies are frozen: they only score items for the replay sampler.
"""

from __future__ import annotations

import torch

from distillrec.continual.growth import frozen_copy
from distillrec.models.base import Recommender
from distillrec.utils import DistillrecError


@torch.no_grad()
def ema_model(proxy: Recommender | None, distilled: Recommender, weight: float) -> Recommender:
    """w · proxy + (1 − w) · distilled on the shared leading rows; the rest from ``distilled``. Frozen.

    ``proxy=None`` (the first block) gives a frozen copy of ``distilled``."""
    if not 0.0 <= weight <= 1.0:
        raise DistillrecError(f"proxy EMA weight must be in [0, 1], got {weight}")
    out = frozen_copy(distilled)
    if proxy is None:
        return out
    if type(proxy) is not type(distilled):
        raise DistillrecError(f"proxy is a {type(proxy).__name__} but the student a {type(distilled).__name__}")
    state = out.state_dict()
    for name, old in proxy.state_dict().items():
        new = state[name]
        if not new.is_floating_point():
            continue  # counters (e.g. an annealing step) follow the latest student
        if old.dim() != new.dim() or any(a > b for a, b in zip(old.shape, new.shape)):
            raise DistillrecError(f"proxy tensor {name} {tuple(old.shape)} is larger than the student's "
                                  f"{tuple(new.shape)}")
        region = tuple(slice(0, s) for s in old.shape)
        new[region] = weight * old.to(new.device, new.dtype) + (1.0 - weight) * new[region]
    out.load_state_dict(state)
    return out
