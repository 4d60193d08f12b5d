"""The Triton kernels of :mod:`onlinenorm.kernels.triton_kernels` (which launches them); imports ``triton``.

Each direction is the C kernels' three steps (``csrc/online_norm.c``), one launch each:

1. a reduction over each ``(sample, channel)`` row of ``M`` activations, one program per row;
2. the recurrences over the batch as sequential scans of the resulting ``(N, C)`` numbers, one
   program per block of channels, the state carried in float64 (with layer scaling, one more
   launch per sample between 1 and 2 couples a sample's channels);
3. the elementwise pass over the rows, one program per row.

Activations are read in their own dtype (float32, bfloat16, float16) and summed in float32;
per-row statistics and the state are float32 in memory.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _clamp_outside(y, clamp_value):
    """Clamped iff ``|y'| > c``; a NaN is not (as in the other kernels)."""
    return tl.abs(y) > clamp_value


@triton.jit
def _load_f64(ptr, at, live):
    """``ptr[at]`` in float64, 0 where not ``live``."""
    return tl.load(ptr + at, mask=live, other=0.0).to(tl.float64)


@triton.jit
def _channel_block(first, channels, BLOCK_C: tl.constexpr):
    """Channels ``first`` to ``first + BLOCK_C - 1``, and which of them exist (``< channels``)."""
    ch = first + tl.arange(0, BLOCK_C)
    return ch, ch < channels


@triton.jit
def _sample_moments(mean_ptr, s2_ptr, mu_prev_ptr, at, live):
    """The forward's statistics of the rows at ``at``, in float64: ``mu_prev`` (the state before the sample),
    ``dev = mean - mu_prev`` and ``s2``."""
    mu_prev = _load_f64(mu_prev_ptr, at, live)
    return mu_prev, _load_f64(mean_ptr, at, live) - mu_prev, _load_f64(s2_ptr, at, live)


@triton.jit
def _affine(weight_ptr, bias_ptr, ch, live, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """``gamma``, ``beta`` of channels ``ch`` in float64 (1 and 0 without the affine)."""
    gamma = tl.load(weight_ptr + ch, mask=live, other=1.0).to(tl.float64) if HAS_WEIGHT else 1.0
    beta = _load_f64(bias_ptr, ch, live) if HAS_BIAS else 0.0
    return gamma, beta


@triton.jit
def _program_row(scale_ptr, shift_ptr, m):
    """This program's row (one program per row), where its ``m`` activations start, and its ``scale`` and
    ``shift`` (``y' = scale x + shift``)."""
    row = tl.program_id(0)
    return row, row.to(tl.int64) * m, tl.load(scale_ptr + row), tl.load(shift_ptr + row)


@triton.jit
def forward_row_moments(x_ptr, mean_ptr, s2_ptr, m, BLOCK: tl.constexpr):
    """(1) Per row: mean and biased variance of its ``m`` values."""
    row = tl.program_id(0)
    base = x_ptr + row.to(tl.int64) * m
    total = tl.zeros([BLOCK], dtype=tl.float32)
    total_sq = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, m, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        xv = tl.load(base + offsets, mask=offsets < m, other=0.0).to(tl.float32)
        total += xv
        total_sq += xv * xv
    mean = tl.sum(total, axis=0).to(tl.float64) / m
    s2 = tl.maximum(tl.sum(total_sq, axis=0).to(tl.float64) / m - mean * mean, 0.0)
    tl.store(mean_ptr + row, mean.to(tl.float32))
    tl.store(s2_ptr + row, s2.to(tl.float32))


@triton.jit
def forward_scan(
    mean_ptr,
    s2_ptr,
    weight_ptr,
    bias_ptr,
    mu_ptr,
    var_ptr,
    mu_prev_ptr,
    invstd_ptr,
    scale_ptr,
    shift_ptr,
    seen_ptr,
    n,
    channels,
    numel,
    alpha,
    eps,
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    COUNT_SEEN: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """(2) ``mu_t``, ``var_t`` over the samples in order, this program's channels side by side; each sample's
    scale and shift from the state before it. Advances ``mu``, ``var`` in place."""
    pid = tl.program_id(0)
    ch, live = _channel_block(pid * BLOCK_C, channels, BLOCK_C)
    mu = _load_f64(mu_ptr, ch, live)
    var = tl.load(var_ptr + ch, mask=live, other=1.0).to(tl.float64)
    gamma, beta = _affine(weight_ptr, bias_ptr, ch, live, HAS_WEIGHT, HAS_BIAS)
    for t in range(0, n):
        at = t * channels + ch
        mean, s2 = _load_f64(mean_ptr, at, live), _load_f64(s2_ptr, at, live)
        invstd = 1.0 / tl.sqrt(var + eps)
        dev = mean - mu
        tl.store(mu_prev_ptr + at, mu.to(tl.float32), mask=live)
        tl.store(invstd_ptr + at, invstd.to(tl.float32), mask=live)
        tl.store(scale_ptr + at, (invstd * gamma).to(tl.float32), mask=live)
        tl.store(shift_ptr + at, (beta - mu * invstd * gamma).to(tl.float32), mask=live)
        var = alpha * var + (1.0 - alpha) * s2 + alpha * (1.0 - alpha) * dev * dev
        mu = alpha * mu + (1.0 - alpha) * mean
    tl.store(mu_ptr + ch, mu.to(tl.float32), mask=live)
    tl.store(var_ptr + ch, var.to(tl.float32), mask=live)
    if COUNT_SEEN:
        if pid == 0:
            tl.atomic_add(seen_ptr, tl.cast(numel, tl.int64))


@triton.jit
def forward_layer_scale(
    mean_ptr,
    s2_ptr,
    mu_prev_ptr,
    scale_ptr,
    bias_ptr,
    ls_scale_ptr,
    channels,
    ls_eps,
    HAS_BIAS: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """(2b) Per sample ``r_t = 1 / sqrt(mean over (C, M) of y'^2 + ls_eps)``, from the row statistics:
    the mean over ``M`` of ``y'^2`` is ``scale^2 s2 + (scale (m - mu_prev) + beta)^2``."""
    t = tl.program_id(0)
    total = tl.zeros([BLOCK_C], dtype=tl.float64)
    for c0 in range(0, channels, BLOCK_C):
        ch, live = _channel_block(c0, channels, BLOCK_C)
        at = t * channels + ch
        scale = _load_f64(scale_ptr, at, live)
        beta = _load_f64(bias_ptr, ch, live) if HAS_BIAS else 0.0
        _, dev, s2 = _sample_moments(mean_ptr, s2_ptr, mu_prev_ptr, at, live)
        mean_y = scale * dev + beta
        total += tl.where(live, scale * scale * s2 + mean_y * mean_y, 0.0)
    r = 1.0 / tl.sqrt(tl.sum(total, axis=0) / channels + ls_eps)
    tl.store(ls_scale_ptr + t, r.to(tl.float32))


@triton.jit
def forward_output(
    x_ptr,
    out_ptr,
    scale_ptr,
    shift_ptr,
    ls_scale_ptr,
    clamped_ptr,
    count_ptr,
    channels,
    m,
    clamp_value,
    LAYER_SCALING: tl.constexpr,
    CLAMP: tl.constexpr,
    COUNT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """(3) ``z = r (scale x + shift)`` (``r = 1`` without layer scaling); with clamping, clamped, counted and
    each row flagged if anything in it was clamped."""
    row, base, scale, shift = _program_row(scale_ptr, shift_ptr, m)
    if LAYER_SCALING:
        r = tl.load(ls_scale_ptr + row // channels)
        scale = scale * r
        shift = shift * r
    clamped = tl.zeros([BLOCK], dtype=tl.int32)
    for start in range(0, m, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        live = offsets < m
        y = tl.fma(tl.load(x_ptr + base + offsets, mask=live, other=0.0).to(tl.float32), scale, shift)
        if CLAMP:
            clamped += (_clamp_outside(y, clamp_value) & live).to(tl.int32)
            y = tl.where(y < -clamp_value, -clamp_value, y)  # two selects keep a NaN
            y = tl.where(y > clamp_value, clamp_value, y)
        tl.store(out_ptr + base + offsets, y.to(out_ptr.dtype.element_ty), mask=live)
    if CLAMP:
        row_count = tl.sum(clamped, axis=0)
        tl.store(clamped_ptr + row, (row_count > 0).to(tl.uint8))
        if COUNT:
            if row_count > 0:
                tl.atomic_add(count_ptr, row_count.to(tl.int64))


@triton.jit
def _row_flagged(clamped_ptr, row, CLAMP: tl.constexpr):
    """Whether the forward clamped anything in ``row`` (never without clamping: no flags are read)."""
    if CLAMP:
        return tl.load(clamped_ptr + row) != 0
    else:
        return False


@triton.jit
def _masked_grad_and_x(grad_row, x_row, offsets, live, scale, shift, clamp_value, MASKED: tl.constexpr):
    """One step of a row's loop in the backward: ``g'`` (``g``, zero where the forward clamped if ``MASKED``) and
    ``x``, as float32."""
    g = tl.load(grad_row + offsets, mask=live, other=0.0).to(tl.float32)
    xv = tl.load(x_row + offsets, mask=live, other=0.0).to(tl.float32)
    if MASKED:
        g = tl.where(_clamp_outside(tl.fma(xv, scale, shift), clamp_value), 0.0, g)
    return g, xv


@triton.jit
def _row_grad_sums(grad_row, x_row, m, scale, shift, mu_prev, clamp_value, MASKED: tl.constexpr, BLOCK: tl.constexpr):
    """``sum(g')`` and ``sum(g' (x - mu_prev))`` over one row, ``g' = g`` where the forward did not clamp, else 0.
    ``MASKED`` recomputes the mask (rows the forward flagged); other rows never look at the clamp."""
    total = tl.zeros([BLOCK], dtype=tl.float32)
    total_x = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, m, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        live = offsets < m
        g, xv = _masked_grad_and_x(grad_row, x_row, offsets, live, scale, shift, clamp_value, MASKED)
        total += g
        total_x += tl.where(live, g * (xv - mu_prev), 0.0)
    return tl.sum(total, axis=0), tl.sum(total_x, axis=0)


@triton.jit
def backward_row_sums(
    grad_ptr,
    x_ptr,
    scale_ptr,
    shift_ptr,
    mu_prev_ptr,
    invstd_ptr,
    clamped_ptr,
    row_sum_grad_ptr,
    row_sum_grad_y_ptr,
    m,
    clamp_value,
    CLAMP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """(1) Per row, ``g'`` the gradient at ``y'`` (zero where clamped): ``sum(g')`` and ``sum(g' y)``."""
    row, base, scale, shift = _program_row(scale_ptr, shift_ptr, m)
    mu_prev = tl.load(mu_prev_ptr + row)
    if _row_flagged(clamped_ptr, row, CLAMP):
        sum_g, sum_gx = _row_grad_sums(
            grad_ptr + base, x_ptr + base, m, scale, shift, mu_prev, clamp_value, True, BLOCK
        )
    else:
        sum_g, sum_gx = _row_grad_sums(
            grad_ptr + base, x_ptr + base, m, scale, shift, mu_prev, clamp_value, False, BLOCK
        )
    tl.store(row_sum_grad_ptr + row, sum_g)
    tl.store(row_sum_grad_y_ptr + row, sum_gx * tl.load(invstd_ptr + row))


@triton.jit
def backward_layer_scale(
    weight_ptr,
    bias_ptr,
    mean_ptr,
    s2_ptr,
    mu_prev_ptr,
    invstd_ptr,
    ls_scale_ptr,
    r3k_ptr,
    row_sum_grad_ptr,
    row_sum_grad_y_ptr,
    channels,
    m,
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """(1b) Per sample: ``dL/dy' = r g - r^3 y' K``, so the gradient at ``y'`` is ``r g + y_coef y + const_coef``
    per row (``y_coef = -r^3 K gamma``, ``const_coef = -r^3 K beta``); stores ``r^3 K`` and rewrites the row sums
    of ``g`` into those of the gradient at ``y'``."""
    t = tl.program_id(0)
    total = tl.zeros([BLOCK_C], dtype=tl.float64)
    for c0 in range(0, channels, BLOCK_C):
        ch, live = _channel_block(c0, channels, BLOCK_C)
        at = t * channels + ch
        gamma, beta = _affine(weight_ptr, bias_ptr, ch, live, HAS_WEIGHT, HAS_BIAS)
        sum_gy, sum_g = _load_f64(row_sum_grad_y_ptr, at, live), _load_f64(row_sum_grad_ptr, at, live)
        total += tl.where(live, gamma * sum_gy + beta * sum_g, 0.0)
    r = tl.load(ls_scale_ptr + t).to(tl.float64)
    r3k = r * r * r * tl.sum(total, axis=0) / (channels * m)
    tl.store(r3k_ptr + t, r3k)
    for c0 in range(0, channels, BLOCK_C):
        ch, live = _channel_block(c0, channels, BLOCK_C)
        at = t * channels + ch
        gamma, beta = _affine(weight_ptr, bias_ptr, ch, live, HAS_WEIGHT, HAS_BIAS)
        invstd = _load_f64(invstd_ptr, at, live)
        _, dev, s2 = _sample_moments(mean_ptr, s2_ptr, mu_prev_ptr, at, live)
        sum_y = m * dev * invstd
        sum_y_sq = m * (s2 + dev * dev) * invstd * invstd
        sum_gy, sum_g = _load_f64(row_sum_grad_y_ptr, at, live), _load_f64(row_sum_grad_ptr, at, live)
        y_coef = -r3k * gamma
        const_coef = -r3k * beta
        tl.store(
            row_sum_grad_y_ptr + at, (r * sum_gy + y_coef * sum_y_sq + const_coef * sum_y).to(tl.float32), mask=live
        )
        tl.store(row_sum_grad_ptr + at, (r * sum_g + y_coef * sum_y + const_coef * m).to(tl.float32), mask=live)


@triton.jit
def backward_scan(
    weight_ptr,
    bias_ptr,
    mean_ptr,
    s2_ptr,
    mu_prev_ptr,
    invstd_ptr,
    ls_scale_ptr,
    r3k_ptr,
    row_sum_grad_ptr,
    row_sum_grad_y_ptr,
    u_ptr,
    v_ptr,
    grad_coef_ptr,
    x_coef_ptr,
    constant_ptr,
    grad_weight_ptr,
    grad_bias_ptr,
    n,
    channels,
    m,
    alpha,
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    LAYER_SCALING: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """(2) ``v_t = (1 - leak mean(y^2)) v_{t-1} + mean(g y)``, ``u_t = a_b u_{t-1} + mean(h_t)`` (``g = gamma g'``)
    over the samples in order; each row's ``dx = grad_coef g' + x_coef x + constant`` from the state before the
    sample. Advances ``u``, ``v`` in place; the weight and bias gradients are the sums over the samples."""
    pid = tl.program_id(0)
    ch, live = _channel_block(pid * BLOCK_C, channels, BLOCK_C)
    leak = 1.0 - alpha
    u, v = _load_f64(u_ptr, ch, live), _load_f64(v_ptr, ch, live)
    gamma, beta = _affine(weight_ptr, bias_ptr, ch, live, HAS_WEIGHT, HAS_BIAS)
    grad_weight = tl.zeros([BLOCK_C], dtype=tl.float64)
    grad_bias = tl.zeros([BLOCK_C], dtype=tl.float64)
    for t in range(0, n):
        at = t * channels + ch
        invstd = _load_f64(invstd_ptr, at, live)
        mu_prev, dev, s2 = _sample_moments(mean_ptr, s2_ptr, mu_prev_ptr, at, live)
        mean_y_sq = (s2 + dev * dev) * invstd * invstd
        if LAYER_SCALING:
            r = tl.load(ls_scale_ptr + t).to(tl.float64)
            k = tl.load(r3k_ptr + t)
        else:
            r = 1.0
            k = 0.0
        slope = (-gamma * k * gamma - leak * v) * invstd * invstd
        tl.store(grad_coef_ptr + at, (gamma * r * invstd).to(tl.float32), mask=live)
        tl.store(x_coef_ptr + at, slope.to(tl.float32), mask=live)
        tl.store(constant_ptr + at, (-slope * mu_prev - gamma * k * beta * invstd - leak * u).to(tl.float32), mask=live)
        sum_gy, sum_g = _load_f64(row_sum_grad_y_ptr, at, live), _load_f64(row_sum_grad_ptr, at, live)
        u = alpha * u + (gamma * sum_g / m - leak * v * dev * invstd) * invstd
        v = (1.0 - leak * mean_y_sq) * v + gamma * sum_gy / m
        grad_weight += sum_gy
        grad_bias += sum_g
    tl.store(u_ptr + ch, u.to(tl.float32), mask=live)
    tl.store(v_ptr + ch, v.to(tl.float32), mask=live)
    tl.store(grad_weight_ptr + ch, grad_weight.to(tl.float32), mask=live)
    tl.store(grad_bias_ptr + ch, grad_bias.to(tl.float32), mask=live)


@triton.jit
def _row_grad_x(
    grad_row, x_row, out_row, m, scale, shift, clamp_value, a, b, k, MASKED: tl.constexpr, BLOCK: tl.constexpr
):
    """``dx = a g' + b x + k`` over one row, ``g'`` as in :func:`_row_grad_sums`."""
    for start in range(0, m, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        live = offsets < m
        g, xv = _masked_grad_and_x(grad_row, x_row, offsets, live, scale, shift, clamp_value, MASKED)
        tl.store(out_row + offsets, tl.fma(g, a, tl.fma(xv, b, k)).to(out_row.dtype.element_ty), mask=live)


@triton.jit
def backward_grad_x(
    grad_ptr,
    x_ptr,
    grad_x_ptr,
    scale_ptr,
    shift_ptr,
    clamped_ptr,
    grad_coef_ptr,
    x_coef_ptr,
    constant_ptr,
    m,
    clamp_value,
    CLAMP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """(3) The input gradient, row by row."""
    row, base, scale, shift = _program_row(scale_ptr, shift_ptr, m)
    a = tl.load(grad_coef_ptr + row)
    b = tl.load(x_coef_ptr + row)
    k = tl.load(constant_ptr + row)
    if _row_flagged(clamped_ptr, row, CLAMP):
        _row_grad_x(
            grad_ptr + base, x_ptr + base, grad_x_ptr + base, m, scale, shift, clamp_value, a, b, k, True, BLOCK
        )
    else:
        _row_grad_x(
            grad_ptr + base, x_ptr + base, grad_x_ptr + base, m, scale, shift, clamp_value, a, b, k, False, BLOCK
        )
