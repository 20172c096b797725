"""Loss terms shared by the distillation methods, written once.

The central piece is the relaxed Plackett-Luce (ListMLE) kernel used by RRD, IR-RRD, DCD and HetComp: a list
``ordered`` [B, K] must be ranked in that order, and every one of its entries must beat every entry of an
unordered ``bag`` [B, L]. Per row the negative log-likelihood is

    Σ_k [ logsumexp(ordered[k:] ∪ bag) − ordered[k] ]

Within a row the K terms are always summed (together they are the NLL of one permutation); ``reduction``
says how rows are combined: ``"mean"`` (the library default), ``"sum"`` (the authors' code) or ``"none"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_row: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_row.mean() if per_row.numel() else per_row.sum()
    if reduction == "sum":
        return per_row.sum()
    if reduction == "none":
        return per_row
    raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")


def relaxed_pl_loss(ordered: Tensor, bag: Tensor | None = None, reduction: str = "mean",
                    bag_logsumexp: Tensor | None = None) -> Tensor:
    """Relaxed Plackett-Luce NLL: ``ordered`` [B, K] ranked in order, above every entry of ``bag`` [B, L].

    ``bag=None`` (or L = 0) is plain ListMLE. When the bag is too large to materialise (HetComp's tail of all
    unobserved items), pass its per-row ``bag_logsumexp`` [B] instead (computed in chunks by the caller).
    Stable for any score range: each row's maximum is subtracted before exponentiating, and the suffix sums
    are a reversed ``logcumsumexp``.
    """
    if ordered.dim() != 2:
        raise ValueError(f"ordered scores must be [B, K], got shape {tuple(ordered.shape)}")
    if bag is not None and bag_logsumexp is not None:
        raise ValueError("pass either bag or bag_logsumexp, not both")
    if bag is not None:
        if bag.dim() != 2 or bag.shape[0] != ordered.shape[0]:
            raise ValueError(f"bag scores must be [B, L] with B = {ordered.shape[0]}, got shape {tuple(bag.shape)}")
        if bag.shape[1] > 0:
            bag_logsumexp = torch.logsumexp(bag, dim=1)  # itself max-shifted, so stable
    row_max = ordered.max(dim=1, keepdim=True).values
    if bag_logsumexp is not None:
        bag_logsumexp = bag_logsumexp.reshape(-1, 1)
        row_max = torch.maximum(row_max, bag_logsumexp)
    # The max is a constant shift: detaching it changes no gradient and keeps autograd simple.
    row_max = row_max.detach()
    shifted = ordered - row_max
    # suffix[k] = Σ_{l ≥ k} exp(shifted[l]) (+ the bag): a reversed cumsum of exponentials, 5–7× faster on CPU
    # than logcumsumexp (forward + backward). Every term is ≤ 1 after the shift; only when a suffix falls
    # below ~1e-30 (scores spread by ≳ 70 within a row) does precision suffer, and then the exact
    # log-space scan takes over.
    exp_shifted = shifted.exp()
    suffix = exp_shifted.flip(1).cumsum(1).flip(1)
    if bag_logsumexp is not None:
        suffix = suffix + (bag_logsumexp - row_max).exp()
    if suffix.numel() and float(suffix.detach().min()) < torch.finfo(suffix.dtype).tiny * 1e8:
        log_suffix = torch.logcumsumexp(shifted.flip(1), dim=1).flip(1)
        if bag_logsumexp is not None:
            log_suffix = torch.logaddexp(log_suffix, bag_logsumexp - row_max)
    else:
        log_suffix = suffix.log()
    return _reduce((log_suffix - shifted).sum(dim=1), reduction)


def _list_pl_parts(scores: Tensor, k: int) -> tuple[Tensor, Tensor] | None:
    """(per-row loss, gradient) of the relaxed PL loss of ``scores[:, :k]`` above ``scores[:, k:]``, the
    gradient in closed form. With M the row maximum, e = exp(s − M), B = Σ_bag e, D_k = Σ_{l ≥ k} e_l + B:

        loss = Σ_k [log D_k − (s_k − M)],  ∂/∂s_m = e_m·Σ_{k ≤ m} 1/D_k − 1 (m ≤ K),  ∂/∂b_j = e_j·Σ_k 1/D_k.

    Each e_m / D_k with k ≤ m is ≤ 1, so nothing overflows; None when some D_k underflows (scores spread by
    ≳ 70 within a row), for the log-space kernel to handle."""
    shifted = scores - scores.amax(dim=1, keepdim=True)
    e = shifted.exp()
    suffix = e[:, :k].flip(1).cumsum(1).flip(1) + e[:, k:].sum(dim=1, keepdim=True)  # D_k
    if suffix.numel() and float(suffix.min()) < torch.finfo(suffix.dtype).tiny * 1e8:
        return None
    per_row = (suffix.log() - shifted[:, :k]).sum(dim=1)
    prefix = suffix.reciprocal_().cumsum(1)  # Σ_{k' ≤ m} 1/D_k'
    grad = e  # reused in place: [R, K + L]
    grad[:, :k].mul_(prefix).sub_(1.0)
    grad[:, k:].mul_(prefix[:, -1:])
    return per_row, grad


class _ListPL(torch.autograd.Function):
    """One autograd node for the whole kernel (instead of ~15): the gradient is computed with the loss."""

    @staticmethod
    def forward(ctx, scores: Tensor, per_row: Tensor, grad: Tensor) -> Tensor:
        ctx.save_for_backward(grad)
        return per_row.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:
        (grad,) = ctx.saved_tensors
        return grad * grad_out.unsqueeze(1), None, None


def ranked_list_loss(scores: Tensor, k: int, reduction: str = "mean") -> Tensor:
    """``relaxed_pl_loss(scores[:, :k], scores[:, k:], reduction)`` for a [R, K + L] block of list scores
    (the ordered K first, then the bag), about twice as fast forward + backward on CPU: the gradient is
    written in closed form (``_list_pl_parts``). Falls back to ``relaxed_pl_loss`` where a suffix sum
    underflows."""
    if scores.dim() != 2 or not 0 < k <= scores.shape[1]:
        raise ValueError(f"scores must be [R, K + L] with 0 < k ≤ K + L, got shape {tuple(scores.shape)}, k={k}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")
    with torch.no_grad():
        parts = _list_pl_parts(scores.detach(), k)
    if parts is None:
        return relaxed_pl_loss(scores[:, :k], scores[:, k:], reduction)
    per_row, grad = parts
    if scores.requires_grad:
        per_row = _ListPL.apply(scores, per_row, grad)
    return _reduce(per_row, reduction)


def listmle_loss(ordered: Tensor, reduction: str = "mean") -> Tensor:
    """Plain ListMLE: the relaxed PL kernel with an empty bag."""
    return relaxed_pl_loss(ordered, None, reduction)


def set_softmax_loss(top: Tensor, rest: Tensor, reduction: str = "mean") -> Tensor:
    """Top-set membership NLL (HetComp's phase-1 "overall" loss): each entry of ``top`` [B, K] must beat the
    whole bag ``rest`` [B, L], order inside ``top`` ignored: per row Σ_k [log(e^{top_k} + Σ_j e^{rest_j}) − top_k].
    """
    row_max = torch.maximum(top.max(dim=1, keepdim=True).values, rest.max(dim=1, keepdim=True).values).detach()
    rest_lse = torch.logsumexp(rest - row_max, dim=1, keepdim=True)
    shifted = top - row_max
    per_row = (torch.logaddexp(shifted, rest_lse) - shifted).sum(dim=1)
    return _reduce(per_row, reduction)


def soft_bce_loss(
    logits: Tensor, targets: Tensor, weights: Tensor | None = None, reduction: str = "mean", row_reduce: str = "mean"
) -> Tensor:
    """Point-wise BCE of student ``logits`` [B, N] against soft (or hard) ``targets`` in [0, 1].

    ``weights`` [B, N] (or [N]) scale each entry, e.g. RD's rank weights. Entries of a row are combined by
    ``row_reduce`` ("mean" or "sum"), rows by ``reduction``. Targets are detached: labels never get gradients.
    """
    per_entry = F.binary_cross_entropy_with_logits(logits, targets.detach().to(logits.dtype), reduction="none")
    if weights is not None:
        per_entry = per_entry * weights.detach()
    if row_reduce == "mean":
        per_row = per_entry.mean(dim=-1)
    elif row_reduce == "sum":
        per_row = per_entry.sum(dim=-1)
    else:
        raise ValueError(f"row_reduce must be 'mean' or 'sum', got {row_reduce!r}")
    return _reduce(per_row, reduction)


def squared_error_loss(target: Tensor, pred: Tensor, reduction: str = "mean") -> Tensor:
    """Per row ‖target − pred‖² summed over the last dimension (DE's reconstruction error), rows reduced."""
    per_row = (target.detach() - pred).pow(2).sum(dim=-1)
    return _reduce(per_row, reduction)
