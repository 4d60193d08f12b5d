"""The named structures the layer passes its kernels (every kernel choice takes and returns these), and the
fused kernels' calls (:class:`ForwardCall`, :class:`BackwardCall`: what each fused backend's ``forward`` and
``backward`` take)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class StreamState(NamedTuple):
    """A layer's streaming state, ``(C,)`` each: ``mu``, ``var`` advance in forward, ``u``, ``v`` in backward."""

    mu: torch.Tensor
    var: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor


class Counters(NamedTuple):
    """The clamp telemetry: 0-d int64 tensors incremented by the clamped and by all elements (either may be None)."""

    clamp_count: torch.Tensor | None
    seen_count: torch.Tensor | None


class Settings(NamedTuple):
    """A training call's hyperparameters: decay factors, ``eps``, and the ECM (``clamp_value`` for activation
    clamping, ``ls_eps`` for layer scaling; at most one is not None)."""

    alpha_fwd: float
    alpha_bkw: float
    eps: float
    clamp_value: float | None
    ls_eps: float | None


class ForwardStats(NamedTuple):
    """What the forward keeps for the backward, per (sample, channel) ``(N, C)`` unless said otherwise.

    ``mean``, ``s2``: the row's mean and biased variance; ``mu_prev``, ``invstd``: the state before the sample,
    ``1 / sqrt(var_prev + eps)``; ``scale``, ``shift``: ``y' = scale x + shift``; ``ls_scale``: ``r`` ``(N, 1)``
    with layer scaling, else None; ``clamped``: with clamping, from the fused kernels, a uint8 flag per row
    saying whether the forward clamped anything in it (the backward recomputes the mask only there), else None.
    """

    mean: torch.Tensor
    s2: torch.Tensor
    mu_prev: torch.Tensor
    invstd: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    ls_scale: torch.Tensor | None
    clamped: torch.Tensor | None = None


class ForwardCall(NamedTuple):
    """A fused training forward's arguments, in the order its custom op (:mod:`onlinenorm.kernels.ops`) takes them.

    ``x3``: the activations ``(N, C, M)``; ``weight``, ``bias``: the affine parameters ``(C,)`` (or None); ``mu``,
    ``var``: the forward state (contiguous float32 ``(C,)``, advanced in place); the settings as in
    :class:`Settings`; ``clamp_count``, ``seen_count``: as in :class:`Counters`.
    """

    x3: torch.Tensor
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    mu: torch.Tensor
    var: torch.Tensor
    alpha_fwd: float
    eps: float
    clamp_value: float | None
    ls_eps: float | None
    clamp_count: torch.Tensor | None
    seen_count: torch.Tensor | None

    def prepared(self) -> tuple[ForwardCall, torch.Tensor, ForwardStats]:
        """This call as the fused kernels read it (``x3`` contiguous, the parameters as :func:`float32_contiguous`
        makes them), with the output (``x3``'s dtype) and the statistics they write, allocated."""
        x3 = self.x3.contiguous()
        call = ForwardCall(x3, float32_contiguous(self.weight), float32_contiguous(self.bias), *self[3:])
        stats = empty_forward_stats(x3, layer_scaling=self.ls_eps is not None, clamping=self.clamp_value is not None)
        return call, torch.empty_like(x3), stats


class BackwardCall(NamedTuple):
    """A fused training backward's arguments: the gradient ``grad`` at the output ``(N, C, M)``, the forward's
    ``x3``, ``weight``, ``bias`` and statistics, the backward state ``u``, ``v`` (contiguous float32 ``(C,)``,
    advanced in place), ``alpha_bkw`` and ``clamp_value`` as in :class:`Settings`."""

    grad: torch.Tensor
    x3: torch.Tensor
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    u: torch.Tensor
    v: torch.Tensor
    stats: ForwardStats
    alpha_bkw: float
    clamp_value: float | None

    def prepared(self) -> tuple[BackwardCall, torch.Tensor, torch.Tensor, torch.Tensor]:
        """This call as the fused kernels read it (``grad`` and ``x3`` contiguous, the parameters as
        :func:`float32_contiguous` makes them), with the gradients they write, allocated: the input gradient
        (``grad``'s dtype) and the weight and bias gradients (float32 ``(C,)``)."""
        grad, x3 = self.grad.contiguous(), self.x3.contiguous()
        call = BackwardCall(grad, x3, float32_contiguous(self.weight), float32_contiguous(self.bias), *self[4:])
        c = grad.shape[1]
        grad_weight = torch.empty(c, dtype=torch.float32, device=grad.device)
        grad_bias = torch.empty(c, dtype=torch.float32, device=grad.device)
        return call, torch.empty_like(grad), grad_weight, grad_bias


def empty_forward_stats(x3: torch.Tensor, layer_scaling: bool, clamping: bool) -> ForwardStats:
    """The statistics a fused forward of ``x3`` ``(N, C, M)`` writes, allocated on its device: float32 ``(N, C)``
    each, ``ls_scale`` ``(N, 1)`` with ``layer_scaling`` and uint8 ``clamped`` ``(N, C)`` with ``clamping``
    (else None). Separate tensors, not views of one: a custom op's outputs may not alias each other."""
    n, c, _ = x3.shape
    rows = (torch.empty((n, c), dtype=torch.float32, device=x3.device) for _ in range(6))
    ls_scale = torch.empty((n, 1), dtype=torch.float32, device=x3.device) if layer_scaling else None
    clamped = torch.empty((n, c), dtype=torch.uint8, device=x3.device) if clamping else None
    return ForwardStats(*rows, ls_scale, clamped)


def float32_contiguous(t: torch.Tensor | None) -> torch.Tensor | None:
    """A per-channel parameter as the fused kernels read it, contiguous float32: itself when it already is (the
    kernels only read its memory, so a parameter that requires grad goes in as it is), else a detached copy."""
    if t is None or (t.dtype == torch.float32 and t.is_contiguous()):
        return t
    return t.detach().to(torch.float32).contiguous()
