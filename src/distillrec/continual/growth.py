"""Growing a model's user/item tables as new entities arrive, keeping every learned row.

:func:`grow_model` builds a fresh model of the new size with the same config (so the new rows get the model's
own initialisation) and copies every state tensor of the old model into the leading corner of the new one:
embedding tables grow along rows, the Mult-VAE's input layer along columns and its output layer along rows —
no per-model code. ``new_rows="zero"`` zeroes whatever was added instead (a model that has never seen an
entity scores it 0). Graph-based and autoencoder models also need their interaction matrix re-attached for
the new size (:func:`attach_interactions`).
"""

from __future__ import annotations

import copy

import scipy.sparse as sp
import torch
from torch import Tensor, nn

from distillrec.models.base import Recommender
from distillrec.utils import DistillrecError


@torch.no_grad()
def grow_model(model: Recommender, n_users: int, n_items: int, new_rows: str = "init",
               interactions: sp.spmatrix | None = None) -> Recommender:
    """A copy of ``model`` sized ``n_users × n_items`` (≥ the old sizes) whose old rows/columns are unchanged.

    ``new_rows``: ``"init"`` — the model's own random initialisation (draws from torch's global RNG);
    ``"zero"`` — zeros. ``interactions`` (``n_users × n_items``) is attached to graph/autoencoder models.
    """
    if new_rows not in ("init", "zero"):
        raise ValueError(f"new_rows must be 'init' or 'zero', got {new_rows!r}")
    if n_users < model.n_users or n_items < model.n_items:
        raise DistillrecError(f"cannot shrink {type(model).__name__} from {model.n_users}×{model.n_items} "
                              f"to {n_users}×{n_items}")
    grown = type(model)(n_users, n_items, copy.deepcopy(model.config))
    new_state = grown.state_dict()
    for name, old in model.state_dict().items():
        target = new_state[name]
        if old.shape == target.shape:
            target.copy_(old)
            continue
        if old.dim() != target.dim() or any(a > b for a, b in zip(old.shape, target.shape)):
            raise DistillrecError(f"{type(model).__name__}.{name}: cannot grow shape {tuple(old.shape)} into "
                                  f"{tuple(target.shape)}")
        if new_rows == "zero":
            target.zero_()
        target[tuple(slice(0, s) for s in old.shape)] = old.to(target.dtype)
    grown.load_state_dict(new_state)
    grown.to(model.device)
    if interactions is not None:
        attach_interactions(grown, interactions)
    return grown


def attach_interactions(model: nn.Module, train: sp.spmatrix) -> None:
    """Give graph models their adjacency and autoencoders their input rows (no-op for the others)."""
    members = getattr(model, "members", None)
    if members is not None:  # an ensemble: every member
        for m in members:
            attach_interactions(m, train)
        return
    if hasattr(model, "set_graph"):
        model.set_graph(train)
    elif hasattr(model, "set_interactions"):
        model.set_interactions(train)


def embedding_tables(model: nn.Module) -> tuple[nn.Embedding, nn.Embedding] | None:
    """The (user, item) ID-embedding tables of a model that has them (BPR, LightGCN's ego layer, CML, …)."""
    u, i = getattr(model, "user_emb", None), getattr(model, "item_emb", None)
    if isinstance(u, nn.Embedding) and isinstance(i, nn.Embedding):
        return u, i
    return None


def frozen_copy(model: Recommender) -> Recommender:
    """A detached copy in eval mode with gradients off (previous models, proxies, references)."""
    twin = copy.deepcopy(model)
    twin.eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def all_reprs(model: Recommender, n_users: int, n_items: int) -> tuple[Tensor, Tensor]:
    """User and item representations of the first ``n_users`` / ``n_items`` entities, with gradients.

    A graph model is propagated once (``propagate``) instead of once per call."""
    if hasattr(model, "propagate"):
        users, items = model.propagate()
        return users[:n_users], items[:n_items]
    device = model.device
    return (model.user_repr(torch.arange(n_users, device=device)),
            model.item_repr(torch.arange(n_items, device=device)))


def has_reprs(model: Recommender) -> bool:
    """Whether the model exposes per-entity representations (LWC-KD needs them)."""
    try:
        one = torch.zeros(1, dtype=torch.long, device=model.device)
        with torch.no_grad():
            model.user_repr(one)
            model.item_repr(one)
    except (NotImplementedError, DistillrecError, AttributeError):
        return False
    return True
