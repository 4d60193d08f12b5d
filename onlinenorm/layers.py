"""``OnlineNorm1d`` and ``OnlineNorm2d``: thin modules over ``onlinenorm.functional``.

A module holds the streaming state as buffers (``mu``, ``var``, ``u``, ``v``,
saved with ``state_dict``), the affine parameters ``weight`` and ``bias`` (as
in ``torch.nn.BatchNorm2d``) and the clamp telemetry counters
(``clamp_count``, ``seen_count``: device tensors, not part of ``state_dict``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from onlinenorm.constants import DEFAULT_CLAMP_VALUE, ECMS
from onlinenorm.functional import check_kernels, default_kernels, online_norm


def _check_open_unit(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a number in the open interval (0, 1); got {value!r}")
    return float(value)


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive, finite number; got {value!r}")
    return float(value)


class _OnlineNorm(nn.Module):
    """Online Normalization over channel ``C`` of ``(N, C, *spatial)`` inputs.

    Args:
        num_features: ``C``.
        alpha_fwd: forward decay factor ``a_f`` in (0, 1) of the running mean and variance.
        alpha_bkw: backward decay factor ``a_b`` in (0, 1) of the gradient control process.
        eps: added to the variance before the square root.
        affine: learn a per-channel ``weight`` and ``bias`` applied after normalizing.
        ecm: error compensation mechanism after the affine: ``"ac"`` activation
            clamping ``clamp(y', -clamp_value, clamp_value)``, ``"ls"`` layer
            scaling ``y' / sqrt(mean(y'^2 over non-batch dims) + ls_eps)``, or ``"none"``.
        clamp_value: ``c`` for ``ecm="ac"``, > 0.
        ls_eps: ``eps`` of layer scaling, > 0.
        kernels: how training mode runs: ``"native"`` (hand-written C
            kernels for float32 on the CPU, built once per machine in about
            a second; other calls run compiled), ``"triton"`` (hand-written
            Triton kernels for float32, bfloat16 and float16 on CUDA; other
            calls run compiled), ``"compiled"`` (``torch.compile``-fused
            passes, a few seconds to compile per input shape and process),
            ``"eager"`` (no compiler needed) or ``"auto"`` (native on the
            CPU, triton on CUDA, falling back with a warning to compiled and
            then eager where a compiler is missing); default from
            ``ONLINENORM_KERNELS``, else auto. The fused kernels keep the
            state in float32: a module cast to another dtype runs compiled.

    Shape:
        - Input: ``(N, C)`` (``OnlineNorm1d``) or ``(N, C, H, W)`` (``OnlineNorm2d``)
        - Output: same shape as the input
    """

    input_rank: int  # the rank the subclass accepts
    input_layout: str

    def __init__(
        self,
        num_features: int,
        alpha_fwd: float = 0.999,
        alpha_bkw: float = 0.99,
        eps: float = 1e-5,
        affine: bool = True,
        ecm: str = "ac",
        clamp_value: float = DEFAULT_CLAMP_VALUE,
        ls_eps: float = 1e-5,
        kernels: str | None = None,
    ):
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive integer; got {num_features!r}")
        if ecm not in ECMS:
            raise ValueError(f"ecm must be one of {', '.join(map(repr, ECMS))}; got {ecm!r}")
        self.num_features = num_features
        self.alpha_fwd = _check_open_unit("alpha_fwd", alpha_fwd)
        self.alpha_bkw = _check_open_unit("alpha_bkw", alpha_bkw)
        self.eps = _check_positive("eps", eps)
        self.affine = bool(affine)
        self.ecm = ecm
        self.clamp_value = _check_positive("clamp_value", clamp_value)
        self.ls_eps = _check_positive("ls_eps", ls_eps)
        self.clamp_enabled = True  # switched off by onlinenorm.clamp_disabled
        self.kernels = check_kernels(default_kernels() if kernels is None else kernels)

        if self.affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("mu", torch.zeros(num_features))
        self.register_buffer("var", torch.ones(num_features))
        self.register_buffer("u", torch.zeros(num_features))
        self.register_buffer("v", torch.zeros(num_features))
        self.register_buffer("clamp_count", torch.zeros((), dtype=torch.int64), persistent=False)
        self.register_buffer("seen_count", torch.zeros((), dtype=torch.int64), persistent=False)

    def reset_state(self) -> None:
        """Restart the stream: ``mu = 0``, ``var = 1``, ``u = v = 0``."""
        self.mu.zero_()
        self.var.fill_(1.0)
        self.u.zero_()
        self.v.zero_()

    @property
    def clamps(self) -> bool:
        """Whether this layer currently applies activation clamping."""
        return self.ecm == "ac" and self.clamp_enabled

    def _check_input(self, x: torch.Tensor) -> None:
        name = type(self).__name__
        if x.dim() != self.input_rank:
            raise ValueError(
                f"{name} expects a {self.input_rank}-d input {self.input_layout}; got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{name}({self.num_features}) expects {self.num_features} channels in dim 1; got shape {tuple(x.shape)}"
            )

    def _ecm_arguments(self) -> tuple[float | None, float | None, torch.Tensor | None, torch.Tensor | None]:
        """What this layer passes ``online_norm`` for its ECM in its current mode: ``clamp_value`` (None
        unless it clamps), ``ls_eps`` (None unless it scales), and ``clamp_count``, ``seen_count`` (the
        telemetry counters while it trains and clamps, else None)."""
        clamps = self.clamps
        counting = self.training and clamps
        return (
            self.clamp_value if clamps else None,
            self.ls_eps if self.ecm == "ls" else None,
            self.clamp_count if counting else None,
            self.seen_count if counting else None,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        clamp_value, ls_eps, clamp_count, seen_count = self._ecm_arguments()
        return online_norm(
            x,
            self.mu,
            self.var,
            self.u,
            self.v,
            self.weight,
            self.bias,
            training=self.training,
            alpha_fwd=self.alpha_fwd,
            alpha_bkw=self.alpha_bkw,
            eps=self.eps,
            clamp_value=clamp_value,
            ls_eps=ls_eps,
            clamp_count=clamp_count,
            seen_count=seen_count,
            kernels=self.kernels,
        )

    def extra_repr(self) -> str:
        text = (
            f"{self.num_features}, alpha_fwd={self.alpha_fwd}, alpha_bkw={self.alpha_bkw}, "
            f"eps={self.eps}, affine={self.affine}, ecm={self.ecm!r}"
        )
        if self.ecm == "ac":
            text += f", clamp_value={self.clamp_value}"
        if self.ecm == "ls":
            text += f", ls_eps={self.ls_eps}"
        return text


class OnlineNorm1d(_OnlineNorm):
    """Online Normalization of ``(N, C)`` inputs (each sample's mean is itself, its variance 0)."""

    input_rank = 2
    input_layout = "(N, C)"


class OnlineNorm2d(_OnlineNorm):
    """Online Normalization of ``(N, C, H, W)`` inputs, statistics over ``H, W`` per sample."""

    input_rank = 4
    input_layout = "(N, C, H, W)"
