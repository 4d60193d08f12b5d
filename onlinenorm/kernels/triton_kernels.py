"""The fused GPU kernels, written in Triton (:mod:`onlinenorm.kernels.triton_jit`), launched from here.

They do what the C kernels (:mod:`onlinenorm.kernels.native`) do on the CPU, in the same three steps per
direction (per-row reductions, scans over the ``(N, C)`` numbers, one elementwise pass), for
float32, bfloat16 and float16 activations with float32 statistics and state, on CUDA tensors. Under
``TRITON_INTERPRET=1`` (read by Triton when it is imported) Triton's interpreter runs them on CPU
tensors instead: that is how the test suite checks them on a machine without a GPU.

On a GPU, Triton compiles each kernel on first use and builds its launcher with a C compiler,
which must therefore be on the machine (the GPU image carries one).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil

import torch

from onlinenorm.kernels.types import BackwardCall, ForwardCall, ForwardStats

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
BLOCK_C = 32  # channels per program of the scans
MAX_BLOCK = 1024  # activations per step of a row's loop


class TritonUnavailable(RuntimeError):
    """The Triton kernels cannot run here (``triton`` not installed, or no C compiler for its launcher)."""


def covers(x3: torch.Tensor) -> bool:
    """Whether the Triton kernels run this call: one of :data:`DTYPES` on CUDA, or on the CPU in the interpreter."""
    return x3.dtype in DTYPES and (x3.device.type == "cuda" or (INTERPRET and x3.device.type == "cpu"))


@functools.cache
def check_available() -> None:
    """Raise :class:`TritonUnavailable` where the kernels cannot run: no ``triton``, or (outside the
    interpreter) no C compiler for the launcher Triton builds on first use."""
    if importlib.util.find_spec("triton") is None:
        raise TritonUnavailable("the triton package is not installed (pip install triton)")
    if not INTERPRET and not any(shutil.which(cc) for cc in (os.environ.get("CC"), "gcc", "clang", "cc") if cc):
        raise TritonUnavailable("no C compiler found for Triton's launcher (set CC, or install gcc)")


@functools.cache
def _jit():
    from onlinenorm.kernels import triton_jit

    return triton_jit


def _row_block(m: int) -> int:
    return min(max(1 << (m - 1).bit_length(), 16), MAX_BLOCK)


def _warps(block: int) -> int:
    return max(1, min(8, block // 256))


def forward(call: ForwardCall) -> tuple[torch.Tensor, ForwardStats]:
    """Training forward of ``call.x3`` ``(N, C, M)``: returns the output (``x3``'s dtype) and the statistics.

    Advances ``mu`` and ``var`` in place, and adds the clamped and all elements to ``clamp_count`` and
    ``seen_count`` (either may be None). With clamping the statistics end with a uint8 flag per row, whether
    the forward clamped anything in it.
    """
    jit = _jit()
    call, out, stats = call.prepared()
    x3, weight, bias, mu, var, alpha_fwd, eps, clamp_value, ls_eps, clamp_count, seen_count = call
    n, c, m = x3.shape
    mean, s2, mu_prev, invstd, scale, shift, ls_scale, clamped = stats
    block = _row_block(m)
    rows = (n * c,)
    jit.forward_row_moments[rows](x3, mean, s2, m, BLOCK=block, num_warps=_warps(block))
    jit.forward_scan[(_cdiv(c, BLOCK_C),)](
        mean,
        s2,
        _or(weight, mean),
        _or(bias, mean),
        mu,
        var,
        mu_prev,
        invstd,
        scale,
        shift,
        _or(seen_count, mean),
        n,
        c,
        n * c * m,
        alpha_fwd,
        eps,
        HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None,
        COUNT_SEEN=seen_count is not None,
        BLOCK_C=BLOCK_C,
    )
    if ls_eps is not None:
        jit.forward_layer_scale[(n,)](
            mean, s2, mu_prev, scale, _or(bias, mean), ls_scale, c, ls_eps, HAS_BIAS=bias is not None, BLOCK_C=BLOCK_C
        )
    jit.forward_output[rows](
        x3,
        out,
        scale,
        shift,
        _or(ls_scale, mean),
        _or(clamped, mean),
        _or(clamp_count, mean),
        c,
        m,
        0.0 if clamp_value is None else clamp_value,
        LAYER_SCALING=ls_eps is not None,
        CLAMP=clamp_value is not None,
        COUNT=clamp_count is not None and clamp_value is not None,
        BLOCK=block,
        num_warps=_warps(block),
    )
    return out, stats


def backward(call: BackwardCall) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training backward (the control process) over ``call.grad`` ``(N, C, M)`` with :func:`forward`'s statistics:
    returns the input gradient (``grad``'s dtype) and the weight and bias gradients (float32 ``(C,)``, the sums
    over the batch); advances ``u`` and ``v`` in place."""
    jit = _jit()
    call, grad_x, grad_weight, grad_bias = call.prepared()
    grad, x3, weight, bias, u, v, stats, alpha_bkw, clamp_value = call
    n, c, m = x3.shape
    device = x3.device
    row_sum_grad, row_sum_grad_y, grad_coef, x_coef, constant = torch.empty(
        (5, n, c), dtype=torch.float32, device=device
    )
    layer_scaling = stats.ls_scale is not None
    clamping = clamp_value is not None
    clamp = 0.0 if clamp_value is None else clamp_value
    block = _row_block(m)
    rows = (n * c,)
    jit.backward_row_sums[rows](
        grad,
        x3,
        stats.scale,
        stats.shift,
        stats.mu_prev,
        stats.invstd,
        _or(stats.clamped, stats.mean),
        row_sum_grad,
        row_sum_grad_y,
        m,
        clamp,
        CLAMP=clamping,
        BLOCK=block,
        num_warps=_warps(block),
    )
    r3k = torch.empty(n, dtype=torch.float64, device=device) if layer_scaling else None
    # what the layer-scaling step and the scan both read: parameters, row statistics, r and r^3 K, row sums
    row_inputs = (
        _or(weight, stats.mean),
        _or(bias, stats.mean),
        stats.mean,
        stats.s2,
        stats.mu_prev,
        stats.invstd,
        _or(stats.ls_scale, stats.mean),
        _or(r3k, stats.mean),
        row_sum_grad,
        row_sum_grad_y,
    )
    if layer_scaling:
        jit.backward_layer_scale[(n,)](
            *row_inputs, c, m, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, BLOCK_C=BLOCK_C
        )
    jit.backward_scan[(_cdiv(c, BLOCK_C),)](
        *row_inputs,
        u,
        v,
        grad_coef,
        x_coef,
        constant,
        grad_weight,
        grad_bias,
        n,
        c,
        m,
        alpha_bkw,
        HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None,
        LAYER_SCALING=layer_scaling,
        BLOCK_C=BLOCK_C,
    )
    jit.backward_grad_x[rows](
        grad,
        x3,
        grad_x,
        stats.scale,
        stats.shift,
        _or(stats.clamped, stats.mean),
        grad_coef,
        x_coef,
        constant,
        m,
        clamp,
        CLAMP=clamping,
        BLOCK=block,
        num_warps=_warps(block),
    )
    return grad_x, grad_weight, grad_bias


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _or(t: torch.Tensor | None, stand_in: torch.Tensor) -> torch.Tensor:
    """``t``, or for an absent one a tensor the kernel never reads (its flag says so): Triton takes no None."""
    return stand_in if t is None else t
