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
plus scans over ``(N, C)`` numbers (``onlinenorm.kernels.scan``). Substituting the
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

from onlinenorm.constants import KERNEL_CHOICES
from onlinenorm.kernels.scan import decay_operators, geometric_scan, linear_scan
from onlinenorm.kernels.types import BackwardCall, Counters, ForwardCall, ForwardStats, Settings, StreamState


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _channel_affine(
    x3: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
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


def _forward_math(
    x3,
    weight,
    bias,
    mu,
    var,
    fwd_operators,
    alpha_fwd: float,
    eps: float,
    clamp: tuple[float, float] | None,
    ls_eps: float | None,
):
    """Training forward over ``x3`` ``(N, C, M)`` in the compute dtype; no side effects.

    ``clamp`` is ``(clamp_value, _pass_bound(clamp_value))`` for activation
    clamping, ``ls_eps`` a float for layer scaling; at most one is given.
    Returns ``out``, the clamped-element count (or None), the next ``mu`` and
    ``var``, and the statistics backward needs (:class:`ForwardStats`, without
    the per-row clamp flags: the mask is recomputed everywhere).

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
    return out, count, mu_history[-1], var_history[-1], ForwardStats(mean, s2, mu_prev, invstd, scale, shift, ls_scale)


def _backward_math(
    grad, x3, weight, bias, u, v, stats, bkw_operators, alpha_bkw: float, eps: float, clamp: tuple[float, float] | None
):
    """Training backward: the control process over ``grad`` ``(N, C, M)``; no side effects.

    Returns the input gradient, the weight and bias gradients (the sums over
    samples and positions of ``g' * y`` and ``g'``, ``g'`` the gradient at
    ``y'``; ``(C,)``), and the next ``u``, ``v``.
    """
    mean, s2, mu_prev, invstd, scale, shift, ls_scale, _ = stats
    n, c, positions = x3.shape
    if clamp is not None:  # zero where the forward clamped
        bound = clamp[1]
        pre_clamp = _channel_affine(x3, scale, shift)
        grad = torch.ops.aten.hardtanh_backward.grad_input(grad, pre_clamp, -bound, bound, grad_input=pre_clamp)

    # Per (sample, channel): sum(grad * y) and sum(grad) in one fused pass,
    # by viewing each (n, c) pair as a channel of batch norm's backward.
    _, sum_grad_y, sum_grad = torch.ops.aten.native_batch_norm_backward(
        grad.view(1, n * c, positions),
        x3.view(1, n * c, positions),
        None,
        None,
        None,
        mu_prev.reshape(-1),
        invstd.reshape(-1),
        True,
        eps,
        [False, True, True],
    )
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
        sum_grad_y, sum_grad = (
            ls_scale * sum_grad_y + y_coef * positions * mean_y_sq + const_coef * sum_y,
            ls_scale * sum_grad + y_coef * sum_y + const_coef * positions,
        )

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
    """The layer's training math in PyTorch ops, run eagerly or through ``torch.compile``.

    Each ``kernels`` choice of the layer and of :func:`online_norm` is one object, a :class:`Kernels` or a
    :class:`FusedKernels`, built on first use of its name and shared by every layer. Both offer the same two
    methods, :meth:`forward` and :meth:`backward`, over ``(N, C, M)`` views of the activations, which
    :class:`_OnlineNormTrain` (the layer's one autograd node) calls: this class is that interface's
    reference implementation, and the fallback of the fused kernels for the calls they do not cover.

    Compiled, inductor fuses each direction's passes over the activations
    (statistics in one read; normalize, affine, clamp and count in one
    read-write; the backward's two reductions in one read of ``grad`` and
    ``x``; its output in one more), at the cost of a compile on first use of
    each shape in each process. Eager needs no compiler.

    Args:
        compiled: run the math through ``torch.compile`` (one kernel specialised per activation shape;
            this sets dynamo's process-wide ``recompile_limit`` to at least :data:`MAX_COMPILED_SHAPES`),
            else eagerly.
        fallback: kernels to switch to, for good and with a ``RuntimeWarning``, when compiling fails
            (no C++ compiler for CPU, no Triton for CUDA); without one the error is raised. Default: ``None``
    """

    def __init__(self, compiled: bool, fallback: Kernels | None = None):
        def wrap(fn):
            return fn

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

    def forward(
        self,
        x3: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        state: StreamState,
        settings: Settings,
        counters: Counters,
    ) -> tuple[torch.Tensor, ForwardStats]:
        """Training forward of ``x3`` ``(N, C, M)``: the output (in the compute dtype) and the statistics for
        :meth:`backward`; advances ``mu``, ``var`` and adds to ``counters``."""
        dtype = _compute_dtype(x3.dtype)
        x3 = x3.to(dtype)
        operators = decay_operators(x3.shape[0], settings.alpha_fwd, x3.device, dtype)
        out, count, mu_next, var_next, stats = self._run(
            "_forward",
            x3,
            _cast(weight, dtype),
            _cast(bias, dtype),
            state.mu.to(dtype),
            state.var.to(dtype),
            operators,
            settings.alpha_fwd,
            settings.eps,
            _clamp_spec(settings.clamp_value, dtype),
            settings.ls_eps,
        )
        state.mu.copy_(mu_next)
        state.var.copy_(var_next)
        if counters.clamp_count is not None and count is not None:
            counters.clamp_count.add_(count)
        if counters.seen_count is not None:
            counters.seen_count.add_(x3.numel())
        return out, stats

    def backward(
        self,
        grad3: torch.Tensor,
        x3: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        state: StreamState,
        stats: ForwardStats,
        settings: Settings,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training backward over ``grad3`` ``(N, C, M)``: the input gradient (in the compute dtype) and the
        weight and bias gradients ``(C,)``; advances ``u``, ``v``."""
        dtype = stats.mean.dtype
        operators = decay_operators(x3.shape[0], settings.alpha_bkw, x3.device, dtype)
        grad_x, grad_weight, grad_bias, u_next, v_next = self._run(
            "_backward",
            grad3.to(dtype),
            x3.to(dtype),
            _cast(weight, dtype),
            _cast(bias, dtype),
            state.u.to(dtype),
            state.v.to(dtype),
            stats,
            operators,
            settings.alpha_bkw,
            settings.eps,
            _clamp_spec(settings.clamp_value, dtype),
        )
        state.u.copy_(u_next)
        state.v.copy_(v_next)
        return grad_x, grad_weight, grad_bias

    def _run(self, direction: str, *args):
        try:
            return getattr(self, direction)(*args)
        except torch._dynamo.exc.BackendCompilerFailed as err:  # the math is pure: rerunning it is safe
            if self._fallback is None:
                raise
            warnings.warn(
                f"onlinenorm: compiling the layer's kernels failed, running them eagerly from now on "
                f"(set ONLINENORM_KERNELS=eager to skip the attempt): {str(err).splitlines()[0]}",
                RuntimeWarning,
                stacklevel=4,
            )
            self._forward, self._backward, self._fallback = self._fallback._forward, self._fallback._backward, None
            return getattr(self, direction)(*args)


class FusedKernels:
    """Hand-written fused kernels where they cover a call, ``fallback`` elsewhere.

    The ``kernels="native"``, ``"triton"`` and ``"auto"`` choices: the same :meth:`forward` and
    :meth:`backward` interface as :class:`Kernels`, each direction one call of a fused kernel. A call goes
    to the kernels when its input is on ``device_type`` (if given), the backend covers it, and the state
    is contiguous float32 (a layer's buffers are, unless the module was cast); every other call goes to
    ``fallback``. Under ``torch.compile`` they are called as custom ops (:mod:`onlinenorm.kernels.ops`),
    which the compiled graph keeps; eagerly, directly: the Python custom-op dispatch (argument binding,
    autograd and version-counter wrappers) costs several times what the C kernels take at small shapes.

    Args:
        backend: ``"native"`` (the C kernels of :mod:`onlinenorm.kernels.native`: float32 on the CPU) or
            ``"triton"`` (:mod:`onlinenorm.kernels.triton_kernels`: float32, bfloat16, float16 on CUDA).
        fallback: the kernels for the calls these do not cover (a :class:`Kernels`, or another
            :class:`FusedKernels` to chain backends).
        optional: if the kernels cannot run here (no C compiler, no triton), warn once and use
            ``fallback`` for every call; with ``False``, raise.
        device_type: only inputs on that device go to the kernels; ``None``: any device the backend covers
            (``"auto"`` passes ``"cuda"`` for the Triton kernels, so CPU tensors never go through Triton's
            interpreter). Default: ``None``
    """

    _TITLES = {"native": "C kernels", "triton": "Triton kernels"}

    def __init__(self, backend: str, fallback: Kernels | FusedKernels, optional: bool, device_type: str | None = None):
        self._backend = backend
        self._device_type = device_type
        self._fallback = fallback
        self._optional = optional
        self._available: bool | None = None  # unknown until the first covered call

    def _use(self, x3: torch.Tensor, state: StreamState) -> bool:
        from onlinenorm.kernels import ops

        if (
            self._device_type not in (None, x3.device.type)
            or not ops.BACKENDS[self._backend].covers(x3)
            or any(t.dtype != torch.float32 or not t.is_contiguous() for t in state)
        ):
            return False
        if self._available is None:
            self._available = _backend_available(self._backend, self._optional)
        return self._available

    def forward(self, x3, weight, bias, state: StreamState, settings: Settings, counters: Counters):
        """Training forward of ``x3``: the output and the statistics for :meth:`backward`.

        Advances ``state.mu`` and ``state.var`` in place and adds to ``counters``, as :meth:`Kernels.forward`.

        Args:
            x3: the activations, ``(N, C, M)``: ``M`` positions per sample and channel.
            weight: the affine weight, or ``None``.
            bias: the affine bias, or ``None``.
            state: the layer's :class:`StreamState`; ``mu`` and ``var`` advance, ``u`` and ``v`` are not touched.
            settings: the call's :class:`Settings` (``alpha_fwd``, ``eps`` and the ECM).
            counters: the clamp telemetry (:class:`Counters`), incremented by the clamped and by all elements
                where not ``None``.

        Returns:
            ``(out, stats)``: ``out`` the normalized, affine and compensated activations, in ``x3``'s dtype
            from the fused kernels (in the compute dtype, float32 or float64, from ``fallback``);
            ``stats`` the :class:`ForwardStats` that :meth:`backward` takes.

        Raises:
            onlinenorm.kernels.native.NativeUnavailable, onlinenorm.kernels.triton_kernels.TritonUnavailable:
                on the first call the kernels cover, when they cannot run here and ``optional`` is ``False``.

        Shape:
            - x3: ``(N, C, M)``; weight, bias and each state tensor: ``(C,)``
            - out: ``(N, C, M)``; stats: ``(N, C)`` each (``ls_scale``: ``(N, 1)``)
        """
        if not self._use(x3, state):
            return self._fallback.forward(x3, weight, bias, state, settings, counters)
        from onlinenorm.kernels import ops

        call = ForwardCall(  # its fields are also the custom op's arguments, in order
            x3,
            weight,
            bias,
            state.mu,
            state.var,
            settings.alpha_fwd,
            settings.eps,
            settings.clamp_value,
            settings.ls_eps,
            *counters,
        )
        if torch.compiler.is_compiling():
            out, *stats = ops.OPS[self._backend].forward(*call)
            return out, ForwardStats(*stats[:6], *map(ops.present, stats[6:]))
        out, stats = ops.BACKENDS[self._backend].forward(call)
        _advanced(state.mu, state.var)
        return out, stats

    def backward(self, grad3, x3, weight, bias, state: StreamState, stats: ForwardStats, settings: Settings):
        """Training backward, the gradient control process over ``grad3``: the input, weight and bias gradients.

        Advances ``state.u`` and ``state.v`` in place, as :meth:`Kernels.backward`. The call goes to the fused
        kernels or to ``fallback`` by the same test as :meth:`forward`.

        Args:
            grad3: the gradient at the output, ``(N, C, M)``.
            x3: the forward's input, ``(N, C, M)``.
            weight: the affine weight, or ``None``.
            bias: the affine bias, or ``None``.
            state: the layer's :class:`StreamState`; ``u`` and ``v`` advance, ``mu`` and ``var`` are not touched.
            stats: the :class:`ForwardStats` the forward of ``x3`` returned.
            settings: the call's :class:`Settings` (``alpha_bkw`` and the ECM).

        Returns:
            ``(grad_x, grad_weight, grad_bias)``: the input gradient, in ``grad3``'s dtype from the fused
            kernels (in the compute dtype from ``fallback``), and the sums over samples and positions of
            ``g' * y`` and of ``g'`` (``g'`` the gradient at ``y'``), float32 from the fused kernels.

        Shape:
            - grad3, x3: ``(N, C, M)``; weight, bias and each state tensor: ``(C,)``
            - grad_x: ``(N, C, M)``; grad_weight, grad_bias: ``(C,)``
        """
        if not self._use(x3, state):
            return self._fallback.backward(grad3, x3, weight, bias, state, stats, settings)
        from onlinenorm.kernels import ops

        if torch.compiler.is_compiling():
            return ops.OPS[self._backend].backward(
                grad3, x3, weight, bias, state.u, state.v, *ops.carried(stats), settings.alpha_bkw, settings.clamp_value
            )
        grads = ops.BACKENDS[self._backend].backward(
            BackwardCall(grad3, x3, weight, bias, state.u, state.v, stats, settings.alpha_bkw, settings.clamp_value)
        )
        _advanced(state.u, state.v)
        return grads


def _advanced(*states: torch.Tensor) -> None:
    """Move the version counters of state buffers a kernel advanced in place, as an in-place op (or the custom
    op) would, so autograd still refuses a backward through values saved before the update."""
    for state in states:
        torch.autograd.graph.increment_version(state)


@torch.compiler.assume_constant_result
def _backend_available(backend: str, optional: bool) -> bool:
    """Whether ``backend``'s kernels can run here (built or found; raises where they cannot and are not
    ``optional``, else warns). Run before tracing, its answer a constant of a compiled graph."""
    from onlinenorm.kernels import native, triton_kernels

    check, unavailable = {
        "native": (native.library, native.NativeUnavailable),
        "triton": (triton_kernels.check_available, triton_kernels.TritonUnavailable),
    }[backend]
    try:
        check()
        return True
    except unavailable as err:
        if not optional:
            raise
        title = FusedKernels._TITLES[backend]
        warnings.warn(
            f"onlinenorm: the {title} are unavailable ({err}); using the compiled ones", RuntimeWarning, stacklevel=6
        )
        return False


MAX_COMPILED_SHAPES = 64


def default_kernels() -> str:
    """Return the default ``kernels`` choice: ``ONLINENORM_KERNELS`` if set, else ``"auto"``.

    Read whenever a layer is built with ``kernels=None``, so a change to the environment variable applies
    to the layers built after it.

    Returns:
        The environment variable's value, unchecked (:func:`check_kernels` checks it), or ``"auto"``.
    """
    return os.environ.get("ONLINENORM_KERNELS", "auto")


def check_kernels(name: str) -> str:
    """Check a ``kernels`` choice.

    Args:
        name: the choice, from an argument or ``ONLINENORM_KERNELS``.

    Returns:
        ``name`` itself.

    Raises:
        ValueError: ``name`` is not one of ``KERNEL_CHOICES`` (``"auto"``, ``"eager"``, ``"compiled"``,
            ``"native"``, ``"triton"``); the message lists them.
    """
    if name not in KERNEL_CHOICES:
        raise ValueError(
            f"kernels must be one of {', '.join(map(repr, KERNEL_CHOICES))}; got {name!r}"
            " (from the argument or the ONLINENORM_KERNELS environment variable)"
        )
    return name


_BUILT_KERNELS: dict[str, Kernels | FusedKernels] = {}


def _kernels(name: str) -> Kernels | FusedKernels:
    """Built on first use, so importing the layer never imports the compiler.

    ``native`` and ``triton`` are those fused kernels, with the compiled ones (themselves falling back
    to eager) for the calls they do not cover; ``auto`` is the C kernels, then the Triton kernels, then
    compiled, where either fused kernel failing to build is a warning, not an error.
    """
    if name not in _BUILT_KERNELS:
        check_kernels(name)
        if name in ("eager", "compiled"):
            _BUILT_KERNELS[name] = Kernels(compiled=name == "compiled")
        else:
            compiled = Kernels(compiled=True, fallback=_kernels("eager"))
            if name == "auto":
                triton_then_compiled = FusedKernels("triton", fallback=compiled, optional=True, device_type="cuda")
                _BUILT_KERNELS[name] = FusedKernels("native", fallback=triton_then_compiled, optional=True)
            else:
                _BUILT_KERNELS[name] = FusedKernels(name, fallback=compiled, optional=False)
    return _BUILT_KERNELS[name]


class _OnlineNormTrain(torch.autograd.Function):
    """Training-mode normalizer + affine + ECM, the one autograd node of every kernel choice; updates the
    state in place.

    ``mu``/``var`` advance in ``forward``, ``u``/``v`` in ``backward``.
    Saves only ``x`` and per-(sample, channel) statistics for backward: the
    clamp mask is recomputed from ``x``, as batch norm recomputes its
    normalized input.
    """

    @staticmethod
    def forward(
        ctx,
        x,
        weight,
        bias,
        state: StreamState,
        settings: Settings,
        counters: Counters,
        kernels: Kernels | FusedKernels,
    ):
        n, c = x.shape[:2]
        out, stats = kernels.forward(x.reshape(n, c, -1), weight, bias, state, settings, counters)
        ctx.save_for_backward(x, weight, bias, *stats)
        # u, v are the live control state, read and advanced by whichever
        # backward runs next, so they are held by reference, not saved.
        ctx.state, ctx.settings, ctx.kernels = state, settings, kernels
        # A view of a tensor made inside a Function may not be modified in
        # place later (ReLU(inplace=True) after the layer); detach() returns
        # the same storage as a plain, non-view tensor.
        return out.to(x.dtype).view(x.shape).detach()

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias, *saved = ctx.saved_tensors
        n, c = x.shape[:2]
        grad_x, grad_weight, grad_bias = ctx.kernels.backward(
            grad_out.reshape(n, c, -1), x.reshape(n, c, -1), weight, bias, ctx.state, ForwardStats(*saved), ctx.settings
        )
        grad_weight = grad_weight.to(weight.dtype) if ctx.needs_input_grad[1] else None
        grad_bias = grad_bias.to(bias.dtype) if ctx.needs_input_grad[2] else None
        return grad_x.to(x.dtype).view(x.shape), grad_weight, grad_bias, None, None, None, None


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
            ``"native"`` (the C kernels of :mod:`onlinenorm.kernels.native`, float32
            on the CPU, compiled elsewhere), ``"triton"`` (the Triton kernels
            of :mod:`onlinenorm.kernels.triton_kernels` on CUDA, compiled elsewhere)
            or ``"auto"`` (native on the CPU, triton on CUDA, switching for
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
                raise ValueError(
                    f"{name} must be a torch.int64 tensor on the input's device ({x.device}); "
                    f"got {counter.dtype} on {counter.device}"
                )
        return _OnlineNormTrain.apply(
            x,
            weight,
            bias,
            StreamState(mu, var, u, v),
            Settings(alpha_fwd, alpha_bkw, eps, clamp_value, ls_eps),
            Counters(clamp_count, seen_count),
            _kernels(kernels),
        )
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
