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


# The text OnlineNorm1d and OnlineNorm2d share in their docstrings, written once: the math and state, and the
# arguments. Each class composes its own complete docstring from these (help() shows it in full for both).
_STATE_DOC = """In training mode the layer runs the streaming recurrences of Online Normalization (Chiley et al.,
    2019) over the samples of each batch, in batch order, with ``m_t``, ``s2_t`` the mean and biased variance
    of sample ``t`` over its positions (per channel)::

        y_t   = (x_t - mu_{t-1}) / sqrt(var_{t-1} + eps)
        var_t = a_f var_{t-1} + (1 - a_f) s2_t + a_f (1 - a_f) (m_t - mu_{t-1})^2
        mu_t  = a_f mu_{t-1} + (1 - a_f) m_t

    The backward is the gradient control process with state ``u``, ``v`` and decay ``a_b``, not the
    autograd derivative; :mod:`onlinenorm.functional` states its equations and
    :func:`onlinenorm.functional.online_norm` is the functional form of this layer. After the normalizer
    comes the optional affine ``y' = weight * y + bias``, then the error compensation mechanism (ECM).

    The streaming state lives in the buffers ``mu``, ``var`` (forward; initially 0 and 1) and ``u``, ``v``
    (backward; initially 0). It carries over from batch to batch, is saved by ``state_dict()``, and
    :meth:`reset_state` restarts it. ``mu``, ``var`` advance in the forward, ``u``, ``v`` in the backward.
    In eval mode the layer computes ``(x - mu) / sqrt(var + eps)`` with the current state, then the affine
    and the ECM, and updates no buffer. With ``ecm="ac"`` it counts, while training, the elements it clamped
    and all elements it saw in the 0-d int64 buffers ``clamp_count`` and ``seen_count`` (on the layer's
    device, not in ``state_dict``; read by :func:`onlinenorm.clamp_fractions`)."""

_ARGS_DOC = """Args:
        num_features: ``C``, the number of channels; a positive integer.
        alpha_fwd: forward decay factor ``a_f`` in (0, 1) of the running mean and variance.
            Default: 0.999
        alpha_bkw: backward decay factor ``a_b`` in (0, 1) of the gradient control process.
            Default: 0.99
        eps: added to the variance before the square root; > 0. Default: 1e-5
        affine: learn a per-channel ``weight`` (initially 1) and ``bias`` (initially 0) applied after
            normalizing; ``False`` leaves both ``None``. Default: ``True``
        ecm: error compensation mechanism after the affine: ``"ac"`` activation
            clamping ``clamp(y', -clamp_value, clamp_value)`` (gradient zero where clamped), ``"ls"`` layer
            scaling ``y' / sqrt(mean(y'^2 over non-batch dims) + ls_eps)`` per sample, or ``"none"``.
            :func:`onlinenorm.clamp_disabled` switches the clamp off for a block. Default: ``"ac"``
        clamp_value: ``c`` for ``ecm="ac"``; > 0 (checked whatever ``ecm`` is). Default: 5.0
        ls_eps: ``eps`` of layer scaling (``ecm="ls"``); > 0. Default: 1e-5
        kernels: how training mode runs: ``"native"`` (hand-written C
            kernels for float32 on the CPU, built once per machine in about
            a second; other calls run compiled), ``"triton"`` (hand-written
            Triton kernels for float32, bfloat16 and float16 on CUDA; other
            calls run compiled), ``"compiled"`` (``torch.compile``-fused
            passes, a few seconds to compile per input shape and process),
            ``"eager"`` (no compiler needed) or ``"auto"`` (native on the
            CPU, triton on CUDA, falling back with a warning to compiled and
            then eager where a compiler is missing). The fused kernels keep the
            state in float32: a module cast to another dtype runs compiled.
            Default: ``None``, which reads ``ONLINENORM_KERNELS`` when the layer is built, else ``"auto"``

    Raises:
        ValueError: an argument outside the range stated above, an unknown ``ecm`` or ``kernels`` (the
            latter also when it comes from ``ONLINENORM_KERNELS``)."""


class _OnlineNorm(nn.Module):
    """Online Normalization over channel ``C`` of ``(N, C, *spatial)`` inputs: the base of
    :class:`OnlineNorm1d` and :class:`OnlineNorm2d`, which document its arguments.

    A subclass sets ``input_rank`` and ``input_layout``, the input rank it accepts and how its
    messages write that layout.
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
        """Normalize ``x``, then apply the affine and the ECM.

        In training mode this advances ``mu``, ``var`` now and ``u``, ``v`` when the backward runs; in eval
        mode it uses the current state and changes no buffer.

        Args:
            x: the input, ``(N, C)`` for :class:`OnlineNorm1d` or ``(N, C, H, W)`` for :class:`OnlineNorm2d`.

        Returns:
            A tensor of ``x``'s shape and dtype.

        Raises:
            ValueError: ``x`` does not have the layer's rank, or its dim 1 is not ``num_features``.
        """
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
    __doc__ = f"""Applies Online Normalization over a 2-d input ``(N, C)``.

    Each sample is a single position per channel, so its mean ``m_t`` is the sample itself and its
    variance ``s2_t`` is 0: the running variance follows the spread across samples only.

    {_STATE_DOC}

    {_ARGS_DOC}

    Shape:
        - Input: ``(N, C)``
        - Output: ``(N, C)`` (same shape as input)

    Examples::

        >>> norm = onlinenorm.OnlineNorm1d(64, ecm="ls")
        >>> y = norm(torch.randn(32, 64))
    """

    input_rank = 2
    input_layout = "(N, C)"


class OnlineNorm2d(_OnlineNorm):
    __doc__ = f"""Applies Online Normalization over a 4-d input ``(N, C, H, W)``.

    Statistics are taken per sample and channel over ``H, W`` (``m_t``, ``s2_t`` below), and the state
    is per channel, as in :class:`torch.nn.BatchNorm2d`, but it is updated sample by sample rather than
    computed from the batch.

    {_STATE_DOC}

    {_ARGS_DOC}

    Shape:
        - Input: ``(N, C, H, W)``
        - Output: ``(N, C, H, W)`` (same shape as input)

    Examples::

        >>> norm = onlinenorm.OnlineNorm2d(16, ecm="ac", clamp_value=5.0)
        >>> y = norm(torch.randn(8, 16, 32, 32))
        >>> onlinenorm.clamp_fractions(norm)["all"]  # the share of outputs clamped, about 0 here
    """

    input_rank = 4
    input_layout = "(N, C, H, W)"
