"""The fused kernels as ``torch.library`` custom ops, so that ``torch.compile`` calls them instead of tracing.

Per backend (``native``: the C kernels of :mod:`onlinenorm.kernels.native`; ``triton``: the kernels of
:mod:`onlinenorm.kernels.triton_kernels`; each a ``forward`` over a :class:`~onlinenorm.kernels.types.ForwardCall`
and a ``backward`` over a :class:`~onlinenorm.kernels.types.BackwardCall`) two ops, each with a fake kernel (the
shapes of its outputs, for tracing) and ``mutates_args`` naming the state it advances in place:

- ``onlinenorm::<backend>_forward_v<SIGNATURE_VERSION>(x, weight, bias, mu!, var!, alpha_fwd, eps, clamp_value, ls_eps,
  clamp_count!, seen_count!)``: the training forward of ``x`` ``(N, C, M)``; returns the output and the eight
  :class:`~onlinenorm.kernels.types.ForwardStats` (an absent ``ls_scale`` or ``clamped`` as an empty
  tensor, see :func:`present`).
- ``onlinenorm::<backend>_backward_v<SIGNATURE_VERSION>(grad, x, weight, bias, u!, v!, *stats, alpha_bkw,
  clamp_value)``: returns the input, weight and bias gradients (the latter two float32 ``(C,)``).

Their autograd formula is :class:`onlinenorm.functional._OnlineNormTrain`, the layer's one autograd node
around whichever kernels run: ``torch.library`` registers autograd formulas only for ops that mutate
nothing, and these advance the layer's state in place (as batch norm advances its running statistics).
A model compiled whole (``torch.compile(model, fullgraph=True)``) keeps these calls in its graph.
"""

from types import SimpleNamespace

import torch
from torch import Tensor

from onlinenorm.kernels import native, triton_kernels
from onlinenorm.kernels.types import BackwardCall, ForwardCall, ForwardStats

BACKENDS = {"native": native, "triton": triton_kernels}
# In every op's name. torch.compile's on-disk caches (inductor's, under /tmp/torchinductor_<user>) can hand back
# code compiled against an op's earlier signature under the same name, which then fails with "Expected a value
# of type ... for argument": bump this whenever an op's arguments change, so new names miss the old entries.
SIGNATURE_VERSION = 2


def present(t: Tensor) -> Tensor | None:
    """An optional statistic as the ops carry it (empty when absent) back to None."""
    return t if t.numel() else None


def carried(stats: ForwardStats) -> tuple[Tensor, ...]:
    """``stats`` as the ops carry them: the eight tensors, an absent ``ls_scale`` or ``clamped`` empty."""
    empty = stats.mean.new_empty(0)
    return (
        *stats[:6],
        empty if stats.ls_scale is None else stats.ls_scale,
        empty.to(torch.uint8) if stats.clamped is None else stats.clamped,
    )


def _define(name: str, backend) -> SimpleNamespace:
    """Register ``onlinenorm::<name>_forward_v<N>`` and ``onlinenorm::<name>_backward_v<N>`` over ``backend``'s
    ``forward`` and ``backward``; returns them as ``.forward`` and ``.backward``."""

    @torch.library.custom_op(
        f"onlinenorm::{name}_forward_v{SIGNATURE_VERSION}", mutates_args=("mu", "var", "clamp_count", "seen_count")
    )
    def forward(
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        mu: Tensor,
        var: Tensor,
        alpha_fwd: float,
        eps: float,
        clamp_value: float | None,
        ls_eps: float | None,
        clamp_count: Tensor | None,
        seen_count: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        call = ForwardCall(x, weight, bias, mu, var, alpha_fwd, eps, clamp_value, ls_eps, clamp_count, seen_count)
        out, stats = backend.forward(call)
        return (out, *carried(stats))

    @forward.register_fake
    def _(x, weight, bias, mu, var, alpha_fwd, eps, clamp_value, ls_eps, clamp_count, seen_count):
        n, c, _ = x.shape
        rows = [x.new_empty((n, c), dtype=torch.float32) for _ in range(6)]
        ls_scale = x.new_empty((n, 1) if ls_eps is not None else (0,), dtype=torch.float32)
        clamped = x.new_empty((n, c) if clamp_value is not None else (0,), dtype=torch.uint8)
        return (torch.empty_like(x), *rows, ls_scale, clamped)

    @torch.library.custom_op(f"onlinenorm::{name}_backward_v{SIGNATURE_VERSION}", mutates_args=("u", "v"))
    def backward(
        grad: Tensor,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        u: Tensor,
        v: Tensor,
        mean: Tensor,
        s2: Tensor,
        mu_prev: Tensor,
        invstd: Tensor,
        scale: Tensor,
        shift: Tensor,
        ls_scale: Tensor,
        clamped: Tensor,
        alpha_bkw: float,
        clamp_value: float | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        stats = ForwardStats(mean, s2, mu_prev, invstd, scale, shift, present(ls_scale), present(clamped))
        return backend.backward(BackwardCall(grad, x, weight, bias, u, v, stats, alpha_bkw, clamp_value))

    @backward.register_fake
    def _(
        grad, x, weight, bias, u, v, mean, s2, mu_prev, invstd, scale, shift, ls_scale, clamped, alpha_bkw, clamp_value
    ):
        c = x.shape[1]
        return torch.empty_like(grad), x.new_empty(c, dtype=torch.float32), x.new_empty(c, dtype=torch.float32)

    return SimpleNamespace(forward=forward, backward=backward)


OPS = {name: _define(name, backend) for name, backend in BACKENDS.items()}
