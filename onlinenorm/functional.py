"""The math of Online Normalization (Chiley et al., 2019) as functions on tensors.

Shapes: ``x`` is ``(N, C, *spatial)``; per-channel state ``mu``, ``var``,
``u``, ``v`` is ``(C,)``. Per sample ``t`` (in batch order) and channel, with
``m_t``, ``s2_t`` the mean and biased variance of ``x_t`` over its spatial
positions (``s2_t = 0`` when there are none):

Forward (normalizer)::

    y_t   = (x_t - mu_{t-1}) / sqrt(var_{t-1} + eps)
    var_t = a_f var_{t-1} + (1 - a_f) s2_t + a_f (1 - a_f) (m_t - mu_{t-1})^2
    mu_t  = a_f mu_{t-1} + (1 - a_f) m_t

Backward (the control process, not the autograd derivative), for the
gradient ``g_t`` arriving at ``y_t``::

    g~_t = g_t - (1 - a_b) v_{t-1} y_t          v_t = v_{t-1} + mean(g~_t y_t)
    h_t  = g~_t / sqrt(var_{t-1} + eps)
    dx_t = h_t - (1 - a_b) u_{t-1}              u_t = u_{t-1} + mean(dx_t)

Every state update is a first-order linear recurrence over ``t`` with
per-sample inputs that need one reduction over the activations, so the layer
costs a reduction pass and an elementwise pass each way (like batch norm)
plus scans over ``(N, C)`` numbers (``onlinenorm.scan``). Substituting the
definitions gives the forms the code evaluates::

    v_t = (1 - (1 - a_b) mean(y_t^2)) v_{t-1} + mean(g_t y_t)
    u_t = a_b u_{t-1} + (mean(g_t) - (1 - a_b) v_{t-1} mean(y_t)) / sqrt(var_{t-1} + eps)

where ``mean(y_t) = (m_t - mu_{t-1}) / sqrt(var_{t-1} + eps)`` and
``mean(y_t^2) = (s2_t + (m_t - mu_{t-1})^2) / (var_{t-1} + eps)`` come from
the forward statistics without touching the activations again.

After the normalizer: the optional affine ``y' = weight * y + bias``, then an
error compensation mechanism, both inside the same autograd node:

- activation clamping ``z = clamp(y', -c, c)``, gradient zero where clamped
  (the mask is recomputed from ``x`` in backward rather than stored);
- layer scaling ``z = r_n y'`` with ``r_n = 1 / sqrt(mean(y'^2 over C, M) + ls_eps)``
  per sample. ``mean(y'^2)`` of each (sample, channel) is
  ``scale^2 s2 + (scale (m - mu_prev) + bias)^2`` with ``scale = weight / sqrt(var_prev + eps)``,
  so ``r_n`` costs no pass, and its gradient
  ``dL/dy' = r_n g - r_n^3 y' mean(g y')`` folds into the same per-(sample,
  channel) coefficients as the control process: layer scaling costs what no ECM costs.

Statistics and control state are kept in float32 (float64 for float64
inputs); the output has the input's dtype.
"""

from __future__ import annotations

import functools
import math
import os
import warnings

import torch
import torch.nn.functional as F

from onlinenorm import native
from onlinenorm.constants import KERNEL_CHOICES
from onlinenorm.scan import decay_operators, geometric_scan, linear_scan


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _channel_affine(x3: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """``x3 * scale[..., None] + shift[..., None]`` for ``x3`` ``(N, C, M)``, ``scale``/``shift`` ``(N, C)``.

    Runs batch norm's inference kernel on the ``(1, N*C, M)`` view, one
    "channel" per (sample, channel) pair, with mean 0 and variance 1: the
    same arithmetic as the broadcasting ``addcmul``, measured ~1.7x faster on CPU.
    ``out`` (contiguous, ``x3``'s shape; may be ``x3`` itself) receives the
    result instead of a new tensor.
    """
    n, c, m = x3.shape
    flat_scale = scale.reshape(-1)
    unit = torch.ones_like(flat_scale)
    args = (x3.view(1, n * c, m), flat_scale, shift.reshape(-1), torch.zeros_like(flat_scale), unit, False, 0.0, 0.0)
    if out is None:
        return torch.native_batch_norm(*args)[0].view(n, c, m)
    empty = flat_scale.new_empty(0)
    torch.ops.aten.native_batch_norm.out(*args, out=out.view(1, n * c, m), save_mean=empty, save_invstd=empty.clone())
    return out


def _count_outside(y: torch.Tensor, bound: float) -> torch.Tensor:
    """Number of elements of ``y`` ``(N, C, M)`` outside ``(-bound, bound)``, as a 0-d int64 tensor.

    ``hardtanh_backward`` of ones gives the inside indicator in one pass, and
    per-row float sums (each at most ``M``, exact) are added up as integers:
    about 2.5x cheaper on CPU than counting a boolean ``|y| > c`` mask.
    """
    ones = torch.ones((), dtype=y.dtype, device=y.device).expand_as(y)
    inside = torch.ops.aten.hardtanh_backward(ones, y, -bound, bound).sum(2)
    return y.numel() - inside.to(torch.int64).sum()


def _pass_bound(clamp_value: float, dtype: torch.dtype) -> float:
    """Smallest value of ``dtype`` (float32 or float64) above ``clamp_value`` as that dtype stores it.

    ``hardtanh_backward`` passes the gradient where ``-b < y' < b``; with this
    ``b`` that is exactly ``|y'| <= clamp_value``, the unclamped elements.
    Plain ``math``, so ``torch.compile`` folds it to a constant.
    """
    if dtype == torch.float64:
        return math.nextafter(clamp_value, math.inf)
    ulp = 2.0 ** (math.frexp(clamp_value)[1] - 24)  # float32 spacing at clamp_value
    c32 = round(clamp_value / ulp) * ulp  # clamp_value rounded to float32
    return c32 + 2.0 ** (math.frexp(c32)[1] - 24)


def _clamp_spec(clamp_value: float | None, dtype: torch.dtype) -> tuple[float, float] | None:
    """The kernels' ``clamp`` argument: ``(clamp_value, _pass_bound(clamp_value, dtype))``, or None
    without clamping."""
    return None if clamp_value is None else (clamp_value, _pass_bound(clamp_value, dtype))


def _forward_math(x3, weight, bias, mu, var, fwd_operators, alpha_fwd: float, eps: float,
                  clamp: tuple[float, float] | None, ls_eps: float | None):
    """Training forward over ``x3`` ``(N, C, M)`` in the compute dtype; no side effects.

    ``clamp`` is ``(clamp_value, _pass_bound(clamp_value))`` for activation
    clamping, ``ls_eps`` a float for layer scaling; at most one is given.
    Returns ``out``, the clamped-element count (or None), the next ``mu`` and
    ``var``, and the statistics backward needs (``(N, C)`` tensors and, for
    layer scaling, ``r`` as ``(N, 1)``).

    ``s2 = mean(x^2) - mean(x)^2`` takes one read for both sums; its relative
    error is about ``1e-7 * (1 + m^2 / s2)`` in float32, negligible unless a
    sample's mean exceeds its spread ~1000-fold (then pass float64 inputs).
    """
    positions = x3.shape[2]
    mean = x3.sum(2) / positions
    mean_sq = torch.linalg.vector_norm(x3, dim=2).square() / positions
    s2 = (mean_sq - mean.square()).clamp_min(0)

    mu_history = geometric_scan((1 - alpha_fwd) * mean, mu, fwd_operators)
    mu_prev = mu_history[:-1]
    dev = mean - mu_prev
    var_history = geometric_scan((1 - alpha_fwd) * (s2 + alpha_fwd * dev.square()), var, fwd_operators)
    invstd = torch.rsqrt(var_history[:-1] + eps)

    scale = invstd if weight is None else invstd * weight
    beta = 0.0 if bias is None else bias
    shift = beta - mu_prev * scale
    count, ls_scale = None, None
    if ls_eps is not None:
        mean_out_sq = scale.square() * s2 + (scale * dev + beta).square()  # mean over M of y'^2
        ls_scale = torch.rsqrt(mean_out_sq.mean(1, keepdim=True) + ls_eps)
        out = _channel_affine(x3, scale * ls_scale, shift * ls_scale)
    else:
        out = _channel_affine(x3, scale, shift)
    if clamp is not None:
        clamp_value, bound = clamp
        count = _count_outside(out, bound)
        out.clamp_(-clamp_value, clamp_value)
    stats = (mean, s2, mu_prev, invstd, scale, shift, ls_scale)
    return out, count, mu_history[-1], var_history[-1], stats


def _backward_math(grad, x3, weight, bias, u, v, stats, bkw_operators, alpha_bkw: float, eps: float,
                   clamp: tuple[float, float] | None):
    """Training backward: the control process over ``grad`` ``(N, C, M)``; no side effects.

    Returns the input gradient, the weight and bias gradients (the sums over
    samples and positions of ``g' * y`` and ``g'``, ``g'`` the gradient at
    ``y'``; ``(C,)``), and the next ``u``, ``v``.
    """
    mean, s2, mu_prev, invstd, scale, shift, ls_scale = stats
    n, c, positions = x3.shape
    if clamp is not None:  # zero where the forward clamped
        bound = clamp[1]
        pre_clamp = _channel_affine(x3, scale, shift)
        grad = torch.ops.aten.hardtanh_backward.grad_input(grad, pre_clamp, -bound, bound, grad_input=pre_clamp)

    # Per (sample, channel): sum(grad * y) and sum(grad) in one fused pass,
    # by viewing each (n, c) pair as a channel of batch norm's backward.
    _, sum_grad_y, sum_grad = torch.ops.aten.native_batch_norm_backward(
        grad.view(1, n * c, positions), x3.view(1, n * c, positions), None, None, None,
        mu_prev.reshape(-1), invstd.reshape(-1), True, eps, [False, True, True])
    sum_grad_y, sum_grad = sum_grad_y.view(n, c), sum_grad.view(n, c)

    gamma = 1.0 if weight is None else weight
    beta = 0.0 if bias is None else bias
    dev = mean - mu_prev
    sum_y = positions * dev * invstd
    mean_y_sq = (s2 + dev.square()) * invstd.square()
    # The gradient at y' is grad_scale * grad + y_coef * y + const_coef (per sample, channel).
    grad_scale, y_coef, const_coef = 1.0, 0.0, 0.0
    if ls_scale is not None:
        # g' = r g - r^3 y' K, K = mean over (C, M) of g y' = sum_c (gamma sum(g y) + beta sum(g)) / (C M)
        r3k = ls_scale.pow(3) * (gamma * sum_grad_y + beta * sum_grad).sum(1, keepdim=True) / (c * positions)
        grad_scale, y_coef, const_coef = ls_scale, -r3k * gamma, -r3k * beta
        sum_grad_y, sum_grad = (ls_scale * sum_grad_y + y_coef * positions * mean_y_sq + const_coef * sum_y,
                                ls_scale * sum_grad + y_coef * sum_y + const_coef * positions)

    leak = 1 - alpha_bkw
    # v_t = (1 - leak * mean(y^2)) v_{t-1} + mean(g y), g = gamma g' the gradient at y.
    v_history = linear_scan(1 - leak * mean_y_sq, gamma * sum_grad_y / positions, v)
    v_prev = v_history[:-1]
    # u_t = a_b u_{t-1} + mean(h_t)
    mean_h = (gamma * sum_grad / positions - leak * v_prev * dev * invstd) * invstd
    u_history = geometric_scan(mean_h, u, bkw_operators)

    # dx = (gamma g' - leak * v_prev * y) * invstd - leak * u_prev, y = (x - mu_prev) * invstd
    x_coef = (gamma * y_coef - leak * v_prev) * invstd.square()
    const = -x_coef * mu_prev + gamma * const_coef * invstd - leak * u_history[:-1]
    grad_coef = gamma * grad_scale * invstd
    if clamp is not None:  # grad is the masked copy made above: grad_x goes over it, no new buffer
        grad_x = _channel_affine(grad, grad_coef, const, out=grad).addcmul_(x3, x_coef[..., None])
    else:
        grad_x = _channel_affine(x3, x_coef, const).addcmul_(grad, grad_coef[..., None])
    return grad_x, sum_grad_y.sum(0), sum_grad.sum(0), u_history[-1], v_history[-1]


class Kernels:
    """The forward and backward math, run eagerly or through ``torch.compile``.

    Compiled, inductor fuses each direction's passes over the activations
    (statistics in one read; normalize, affine, clamp and count in one
    read-write; the backward's two reductions in one read of ``grad`` and
    ``x``; its output in one more), at the cost of a compile on first use of
    each shape in each process. Eager needs no compiler.

    ``fallback``: kernels to switch to, for good, when compiling fails
    (no C++ compiler for CPU, no Triton for CUDA); without one the error is raised.
    """

    def __init__(self, compiled: bool, fallback: Kernels | None = None):
        wrap = (lambda fn: fn)
        if compiled:
            # One kernel specialised per activation shape: kernels for dynamic
            # shapes measured ~2x slower. A model has a few distinct layer
            # shapes (plus those of a last, smaller batch), more than
            # dynamo's default of 8 recompiles per function allows.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, MAX_COMPILED_SHAPES)
            wrap = functools.partial(torch.compile, dynamic=False)
        self._forward = wrap(_forward_math)
        self._backward = wrap(_backward_math)
        self._fallback = fallback

    def forward(self, x3, weight, bias, mu, var, alpha_fwd, eps, clamp, ls_eps, counters):
        """``_forward_math``'s results less the count, which goes into ``counters``: ``(clamp_count,
        seen_count)``, 0-d int64 tensors (either may be None) incremented by the clamped and all elements."""
        operators = decay_operators(x3.shape[0], alpha_fwd, x3.device, x3.dtype)
        out, count, mu_next, var_next, stats = self._run(
            "_forward", x3, weight, bias, mu, var, operators, alpha_fwd, eps, clamp, ls_eps)
        clamp_count, seen_count = counters
        if clamp_count is not None and count is not None:
            clamp_count += count
        if seen_count is not None:
            seen_count += x3.numel()
        return out, mu_next, var_next, stats

    def backward(self, grad, x3, weight, bias, u, v, stats, alpha_bkw, eps, clamp):
        operators = decay_operators(x3.shape[0], alpha_bkw, x3.device, x3.dtype)
        return self._run("_backward", grad, x3, weight, bias, u, v, stats, operators, alpha_bkw, eps, clamp)

    def _run(self, direction: str, *args):
        try:
            return getattr(self, direction)(*args)
        except torch._dynamo.exc.BackendCompilerFailed as err:  # the math is pure: rerunning it is safe
            if self._fallback is None:
                raise
            warnings.warn(f"onlinenorm: compiling the layer's kernels failed, running them eagerly from now on "
                          f"(set ONLINENORM_KERNELS=eager to skip the attempt): {str(err).splitlines()[0]}",
                          RuntimeWarning, stacklevel=4)
            self._forward, self._backward, self._fallback = self._fallback._forward, self._fallback._backward, None
            return getattr(self, direction)(*args)


class NativeKernels:
    """The hand-written C kernels (:mod:`onlinenorm.native`) where they cover a call, ``fallback`` elsewhere.

    They cover float32 on the CPU (any ECM), outside ``torch.compile``
    tracing (a model compiled whole traces ``fallback``'s math instead).
    ``optional``: if the kernels cannot be built (no C compiler), warn once
    and use ``fallback`` for every call; otherwise raise.
    """

    def __init__(self, fallback: Kernels, optional: bool):
        self._fallback = fallback
        self._optional = optional
        self._available: bool | None = None  # unknown until the first covered call

    def _use(self, x3: torch.Tensor) -> bool:
        if torch.compiler.is_compiling() or not native.covers(x3):
            return False
        if self._available is None:
            try:
                native.library()
                self._available = True
            except native.NativeUnavailable as err:
                if not self._optional:
                    raise
                warnings.warn(f"onlinenorm: the C kernels are unavailable ({err}); using the compiled ones",
                              RuntimeWarning, stacklevel=5)
                self._available = False
        return self._available

    def forward(self, x3, weight, bias, mu, var, alpha_fwd, eps, clamp, ls_eps, counters):
        if self._use(x3):
            return native.forward(x3, weight, bias, mu, var, alpha_fwd, eps, clamp, ls_eps, counters)
        return self._fallback.forward(x3, weight, bias, mu, var, alpha_fwd, eps, clamp, ls_eps, counters)

    def backward(self, grad, x3, weight, bias, u, v, stats, alpha_bkw, eps, clamp):
        if self._use(x3):
            return native.backward(grad, x3, weight, bias, u, v, stats, alpha_bkw, clamp)
        # the fallback's statistics are the C forward's less its last (the clamp flags per row)
        return self._fallback.backward(grad, x3, weight, bias, u, v, stats[:7], alpha_bkw, eps, clamp)


MAX_COMPILED_SHAPES = 64


def default_kernels() -> str:
    """``ONLINENORM_KERNELS`` if set, else ``"auto"``; read whenever a layer is built."""
    return os.environ.get("ONLINENORM_KERNELS", "auto")


def check_kernels(name: str) -> str:
    """``name`` if it is one of ``KERNEL_CHOICES``, else a ``ValueError`` saying what is allowed."""
    if name not in KERNEL_CHOICES:
        raise ValueError(f"kernels must be one of {', '.join(map(repr, KERNEL_CHOICES))}; got {name!r}"
                         " (from the argument or the ONLINENORM_KERNELS environment variable)")
    return name


_BUILT_KERNELS: dict[str, Kernels | NativeKernels] = {}


def _kernels(name: str) -> Kernels | NativeKernels:
    """Built on first use, so importing the layer never imports the compiler.

    ``native`` is the C kernels, with the compiled ones (themselves falling
    back to eager) for the calls the C kernels do not cover; ``auto`` is the
    same chain, where the C kernels failing to build is a warning, not an error.
    """
    if name not in _BUILT_KERNELS:
        check_kernels(name)
        if name in ("auto", "native"):
            compiled = Kernels(compiled=True, fallback=_kernels("eager"))
            _BUILT_KERNELS[name] = NativeKernels(fallback=compiled, optional=name == "auto")
        else:
            _BUILT_KERNELS[name] = Kernels(compiled=name == "compiled")
    return _BUILT_KERNELS[name]


class _OnlineNormTrain(torch.autograd.Function):
    """Training-mode normalizer + affine + ECM; updates the state in place.

    ``mu``/``var`` advance in ``forward``, ``u``/``v`` in ``backward``.
    Saves only ``x`` and per-(sample, channel) statistics for backward: the
    clamp mask is recomputed from ``x``, as batch norm recomputes its
    normalized input.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mu, var, u, v, alpha_fwd, alpha_bkw, eps, clamp_value, ls_eps,
                clamp_count, seen_count, kernels):
        n, c = x.shape[:2]
        dtype = _compute_dtype(x.dtype)
        x3 = x.reshape(n, c, -1).to(dtype)
        clamp = _clamp_spec(clamp_value, dtype)
        out, mu_next, var_next, stats = kernels.forward(x3, _cast(weight, dtype), _cast(bias, dtype), mu.to(dtype),
                                                        var.to(dtype), alpha_fwd, eps, clamp, ls_eps,
                                                        (clamp_count, seen_count))
        _advance(mu, mu_next)
        _advance(var, var_next)

        ctx.save_for_backward(x, weight, bias, *stats)
        # u, v are the live control state, read and advanced by whichever
        # backward runs next, so they are held by reference, not saved.
        ctx.control_state = (u, v)
        ctx.hyper = (alpha_bkw, eps, clamp, kernels)
        # A view of a tensor made inside a Function may not be modified in
        # place later (ReLU(inplace=True) after the layer); detach() returns
        # the same storage as a plain, non-view tensor.
        return out.to(x.dtype).view(x.shape).detach()

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias, *stats = ctx.saved_tensors
        u, v = ctx.control_state
        alpha_bkw, eps, clamp, kernels = ctx.hyper
        n, c = x.shape[:2]
        dtype = stats[0].dtype
        grad_x, grad_weight, grad_bias, u_next, v_next = kernels.backward(
            grad_out.reshape(n, c, -1).to(dtype), x.reshape(n, c, -1).to(dtype), _cast(weight, dtype),
            _cast(bias, dtype), u.to(dtype), v.to(dtype), stats, alpha_bkw, eps, clamp)
        _advance(u, u_next)
        _advance(v, v_next)
        grad_weight = grad_weight.to(weight.dtype) if ctx.needs_input_grad[1] else None
        grad_bias = grad_bias.to(bias.dtype) if ctx.needs_input_grad[2] else None
        return (grad_x.to(x.dtype).view(x.shape), grad_weight, grad_bias) + (None,) * 12


def _advance(state: torch.Tensor, new: torch.Tensor) -> None:
    """Make ``new`` the contents of the state buffer ``state``. The C kernels advance a float32 buffer in
    place and return it: then only its version counter moves, as an in-place op would move it, so autograd
    still refuses a backward through values saved before the update."""
    if new is state:
        torch.autograd.graph.increment_version(state)
    else:
        state.copy_(new)


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


def online_norm(
    x: torch.Tensor,
    mu: torch.Tensor,
    var: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = True,
    alpha_fwd: float = 0.999,
    alpha_bkw: float = 0.99,
    eps: float = 1e-5,
    clamp_value: float | None = None,
    ls_eps: float | None = None,
    clamp_count: torch.Tensor | None = None,
    seen_count: torch.Tensor | None = None,
    kernels: str = "auto",
) -> torch.Tensor:
    """Online-normalize ``x`` over its channels, then apply the affine and an ECM.

    Training mode runs the streaming recurrences (the module docstring's
    equations) in batch order and updates ``mu``, ``var`` (forward) and
    ``u``, ``v`` (backward) in place. Eval mode computes
    ``(x - mu) / sqrt(var + eps)`` with the current state and updates nothing
    (its gradient is plain autograd).

    Args:
        x: the input, ``(N, C, *spatial)``.
        mu, var: the forward state, running mean and variance per channel.
        u, v: the backward state of the gradient control process, per channel.
        weight, bias: the affine ``gamma``, ``beta`` per channel, or ``None``.
        training: run the recurrences and update the state (``True``), or
            normalize with the current state (``False``).
        alpha_fwd: forward decay ``a_f`` in (0, 1).
        alpha_bkw: backward decay ``a_b`` in (0, 1).
        eps: added to the variance before the square root.
        clamp_value: ``c`` of activation clamping, ``clamp(y', -c, c)``; or
            ``None``.
        ls_eps: ``eps`` of layer scaling; or ``None``. Give at most one of
            ``clamp_value`` and ``ls_eps``; neither is ``ecm="none"``.
        clamp_count, seen_count: 0-d ``torch.int64`` tensors on ``x``'s device,
            incremented in training mode by the number of elements with
            ``|y'| > clamp_value`` and by ``x.numel()`` (on the device: no host
            synchronisation); or ``None``.
        kernels: how training mode runs the math: ``"eager"`` (no compiler
            needed), ``"compiled"`` (``torch.compile``, fused passes),
            ``"native"`` (the C kernels of :mod:`onlinenorm.native` where they
            apply, compiled elsewhere) or ``"auto"`` (native, switching for
            good to compiled and then eager, with a warning, where a compiler
            is missing).

    Returns:
        The normalized, affine-transformed and compensated tensor, in ``x``'s dtype.

    Shape:
        - x: ``(N, C, *spatial)``; mu, var, u, v, weight, bias: ``(C,)``
        - Output: ``(N, C, *spatial)``, same shape as the input
    """
    if clamp_value is not None and ls_eps is not None:
        raise ValueError("give clamp_value (activation clamping) or ls_eps (layer scaling), not both")
    if training:
        for name, counter in (("clamp_count", clamp_count), ("seen_count", seen_count)):
            if counter is not None and (counter.dtype != torch.int64 or counter.device != x.device):
                raise ValueError(f"{name} must be a torch.int64 tensor on the input's device ({x.device}); "
                                 f"got {counter.dtype} on {counter.device}")
        return _OnlineNormTrain.apply(x, weight, bias, mu, var, u, v, alpha_fwd, alpha_bkw, eps,
                                      clamp_value, ls_eps, clamp_count, seen_count, _kernels(kernels))
    dtype = _compute_dtype(x.dtype)
    out = F.batch_norm(x.to(dtype), mu.to(dtype), var.to(dtype), weight, bias, False, 0.0, eps)
    if clamp_value is not None:
        out = out.clamp(-clamp_value, clamp_value)
    if ls_eps is not None:
        out = layer_scale(out, ls_eps)
    return out.to(x.dtype)


def layer_scale(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Layer scaling ECM: ``x / sqrt(mean(x^2 over all non-batch dims) + eps)``, per sample.

    Args:
        x: the input, a batch of samples.
        eps: added to each sample's mean square before the square root.

    Returns:
        ``x`` with each sample scaled to unit root mean square, in ``x``'s dtype.

    Shape:
        - x: ``(N, *)``
        - Output: ``(N, *)``, same shape as the input
    """
    dims = tuple(range(1, x.dim()))
    xf = x.to(_compute_dtype(x.dtype))
    return (xf * torch.rsqrt(xf.square().mean(dims, keepdim=True) + eps)).to(x.dtype)
