"""First-order linear recurrences over the batch dimension, without a loop over samples.

Every recurrence of Online Normalization has the form

    h_t = a_t * h_{t-1} + b_t,        t = 1..N,   h_0 given,

run independently for each channel: ``b`` is ``(N, C)`` and ``h_0`` is ``(C,)``.
Both functions return the inclusive sequence ``h_1..h_N`` as ``(N, C)``.

Neither divides by a running product ``prod(a_1..a_t)``: such products
underflow for small decay factors or large batches (``0.5 ** 128`` is below
float32's range), so every product here spans at most one window of the
sequence and a vanishing one simply contributes nothing.
"""

from __future__ import annotations

import functools
import math

import torch


@functools.lru_cache(maxsize=64)
def _decay_matrix(n: int, a: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Lower-triangular ``L[t, k] = a ** (t - k)`` for ``k <= t``, else 0; shape ``(n, n)``.

    Built in float64 as ``exp((t - k) * log a)`` so each entry is accurate on
    its own (no repeated multiplication), then cast.
    """
    t = torch.arange(n, dtype=torch.float64)
    lag = t[:, None] - t[None, :]
    powers = torch.exp(lag.clamp_min(0) * math.log(a))
    return torch.where(lag >= 0, powers, 0.0).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _decay_powers(n: int, a: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``a ** t`` for ``t = 1..n`` as an ``(n, 1)`` column."""
    t = torch.arange(1, n + 1, dtype=torch.float64)
    return torch.exp(t * math.log(a)).to(device=device, dtype=dtype)[:, None]


def geometric_scan(b: torch.Tensor, a: float, h0: torch.Tensor) -> torch.Tensor:
    """Constant coefficient: ``h_t = a * h_{t-1} + b_t``, with ``0 < a < 1``.

    Closed form ``h_t = a^t h_0 + sum_{k<=t} a^(t-k) b_k``: one ``(N, N) @ (N, C)``
    matrix product with a cached decay matrix, which costs far less than one
    pass over the activations for the batch sizes used in training.
    """
    n = b.shape[0]
    decay = _decay_matrix(n, float(a), b.device, b.dtype)
    powers = _decay_powers(n, float(a), b.device, b.dtype)
    return torch.addmm(powers * h0, decay, b)


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Varying coefficient: ``h_t = a_t * h_{t-1} + b_t``; ``a``, ``b`` are ``(N, C)``.

    Hillis-Steele scan over the associative composition
    ``(a2, b2) o (a1, b1) = (a2 * a1, a2 * b1 + b2)``: ``ceil(log2 N)`` rounds,
    each combining every element with the one ``d`` places before it.
    """
    n = b.shape[0]
    coef = a.clone()
    acc = b.clone()
    acc[0] += a[0] * h0
    d = 1
    while d < n:
        acc = torch.cat((acc[:d], torch.addcmul(acc[d:], coef[d:], acc[:-d])))
        coef = torch.cat((coef[:d], coef[d:] * coef[:-d]))
        d *= 2
    return acc


def previous(h: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """The state each step starts from: ``(h_0, h_1, ..., h_{N-1})`` from the inclusive ``h``."""
    return torch.cat((h0[None], h[:-1]))
