"""First-order linear recurrences over the batch dimension, without a loop over samples.

Every recurrence of Online Normalization has the form

    h_t = a_t * h_{t-1} + b_t,        t = 1..N,   h_0 given,

run independently for each channel: ``b`` is ``(N, C)`` and ``h_0`` is ``(C,)``.
Both scans return the whole history ``h_0, h_1, ..., h_N`` as ``(N + 1, C)``:
``history[:-1]`` is the state each sample starts from and ``history[-1]``
the state carried to the next batch.

Neither divides by a running product ``prod(a_1..a_t)``: such products
underflow for small decay factors or large batches (``0.5 ** 200`` is below
float32's range), so every product here spans at most one window of the
sequence and a vanishing one simply contributes nothing.
"""

from __future__ import annotations

import functools
import math

import torch


def decay_operators(n: int, a: float, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``E[t, k] = a ** (t - 1 - k)`` for ``k < t`` (else 0), ``(n + 1, n)``; ``q[t] = a ** t``, ``(n + 1, 1)``.

    Cached per ``(n, a, device, dtype)`` in eager mode; under ``torch.compile``
    they are built inside the graph (which cannot hold a Python cache).
    """
    if torch.compiler.is_compiling():
        return _build_decay_operators(n, a, device, dtype)
    return _cached_decay_operators(n, a, device, dtype)


def _build_decay_operators(
    n: int, a: float, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Built in float64 as ``exp(power * log a)`` so each entry is accurate on
    its own (no repeated multiplication), then cast."""
    t = torch.arange(n + 1, dtype=torch.float64)[:, None]
    lag = t - 1 - torch.arange(n, dtype=torch.float64)[None, :]
    log_a = math.log(a)
    decay = torch.where(lag >= 0, torch.exp(lag.clamp_min(0) * log_a), 0.0)
    return decay.to(device=device, dtype=dtype), torch.exp(t * log_a).to(device=device, dtype=dtype)


_cached_decay_operators = functools.lru_cache(maxsize=64)(_build_decay_operators)


def geometric_scan(b: torch.Tensor, h0: torch.Tensor, operators: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Constant coefficient ``0 < a < 1``: ``h_t = a h_{t-1} + b_t``; returns ``(N + 1, C)``.

    ``operators`` is ``decay_operators(N, a, ...)``. Closed form
    ``h_t = a^t h_0 + sum_{k<=t} a^(t-k) b_k``: one ``(N+1, N) @ (N, C)``
    matrix product, which costs far less than one pass over the activations
    for the batch sizes used in training.
    """
    decay, powers = operators
    return torch.addmm(powers * h0, decay, b)


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Varying coefficient: ``h_t = a_t h_{t-1} + b_t``, ``a`` and ``b`` ``(N, C)``; returns ``(N + 1, C)``.

    Hillis-Steele scan over the associative composition
    ``(a2, b2) o (a1, b1) = (a2 a1, a2 b1 + b2)``: ``ceil(log2(N + 1))``
    rounds, each combining every element with the one ``d`` places before
    it. ``h_0`` enters as element 0 with coefficient 0.
    """
    coef = torch.cat((torch.zeros_like(h0)[None], a))
    acc = torch.cat((h0[None], b))
    d = 1
    while d < acc.shape[0]:
        acc = torch.cat((acc[:d], torch.addcmul(acc[d:], coef[d:], acc[:-d])))
        if 2 * d < acc.shape[0]:
            coef = torch.cat((coef[:d], coef[d:] * coef[:-d]))
        d *= 2
    return acc
