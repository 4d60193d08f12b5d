"""The norm factory: a normalizer name and its options -> ``norm_layer(num_features)``.

Models take ``norm_layer`` and call it once per normalized layer, so they
never branch on normalizer names (the timm ``create_norm`` habit)::

    norm_layer = create_norm("online", ecm="ac", clamp_value=5.0)
    model = resnet20(num_classes=10, norm_layer=norm_layer)

``dim=2`` layers take (N, C, H, W); ``dim=1`` layers take (N, C) (the MLP).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from .constants import DEFAULT_CLAMP_VALUE, DEFAULT_GROUP_SIZE, ECMS, NORMS
from .layers import OnlineNorm1d, OnlineNorm2d

__all__ = ["ECMS", "NORMS", "NormLayer", "create_norm"]

NormLayer = Callable[[int], nn.Module]


def _group_norm(num_features: int, group_size: int, eps: float) -> nn.GroupNorm:
    if num_features % group_size:
        raise ValueError(f"group_size={group_size} does not divide {num_features} channels; pick a divisor")
    return nn.GroupNorm(num_features // group_size, num_features, eps=eps)


def _identity(num_features: int) -> nn.Identity:
    return nn.Identity()


def create_norm(
    norm: str,
    *,
    dim: int = 2,
    ecm: str = "ac",
    alpha_fwd: float = 0.999,
    alpha_bkw: float = 0.99,
    clamp_value: float = DEFAULT_CLAMP_VALUE,
    eps: float = 1e-5,
    ls_eps: float = 1e-5,
    group_size: int = DEFAULT_GROUP_SIZE,
    kernels: str | None = None,
) -> NormLayer:
    """Return a factory ``num_features -> nn.Module`` for the normalizer ``norm``.

    Models call the factory once per normalized layer (``norm_layer(C)``), so they never branch on
    normalizer names. Options that do not apply to ``norm`` are ignored; the chosen layer checks its own
    options when the factory builds it.

    Args:
        norm: one of :data:`NORMS`. ``"online"``: :class:`~onlinenorm.OnlineNorm1d` or
            :class:`~onlinenorm.OnlineNorm2d` (by ``dim``) with ``ecm``, ``alpha_fwd``, ``alpha_bkw``,
            ``eps``, ``clamp_value``, ``ls_eps`` and ``kernels``; ``"batch"``: ``BatchNorm1d`` or
            ``BatchNorm2d``; ``"group"``: ``GroupNorm`` with ``group_size`` channels per group;
            ``"layer"``: statistics over all non-batch dims (``GroupNorm(1, C)`` for images,
            ``LayerNorm(C)`` for vectors); ``"instance"``: ``InstanceNorm2d`` with affine parameters
            (images only, ``dim=2``); ``"none"``: ``nn.Identity``.
        dim: 2 for layers taking ``(N, C, H, W)``, 1 for layers taking ``(N, C)`` (the MLP). Default: 2
        ecm: the online layer's error compensation mechanism: ``"ac"`` clamping at ``clamp_value``,
            ``"ls"`` layer scaling, or ``"none"``. Default: ``"ac"``
        alpha_fwd: the online layer's forward decay factor. Default: 0.999
        alpha_bkw: the online layer's backward decay factor. Default: 0.99
        clamp_value: the online layer's clamp for ``ecm="ac"``. Default: 5.0
        eps: added to the variance by every normalizer but ``"none"``. Default: 1e-5
        ls_eps: the online layer's layer-scaling ``eps`` for ``ecm="ls"``. Default: 1e-5
        group_size: channels per group of ``"group"``; it must divide each layer's channel count, else
            building that layer raises a ``ValueError``. Default: 8
        kernels: the online layer's ``kernels`` (:class:`~onlinenorm.OnlineNorm2d`). Default: ``None``
            (``ONLINENORM_KERNELS``, else ``"auto"``)

    Returns:
        A callable taking ``num_features`` and returning a new module (a :class:`NormLayer`).

    Raises:
        ValueError: ``dim`` is not 1 or 2, or ``norm`` is not a normalizer for that ``dim``.
    """
    if dim not in (1, 2):
        raise ValueError(f"dim must be 1 (N, C) or 2 (N, C, H, W), got {dim}")
    if norm == "online":
        return partial(
            OnlineNorm2d if dim == 2 else OnlineNorm1d,
            alpha_fwd=alpha_fwd,
            alpha_bkw=alpha_bkw,
            eps=eps,
            ecm=ecm,
            clamp_value=clamp_value,
            ls_eps=ls_eps,
            kernels=kernels,
        )
    factories: dict[str, NormLayer] = {
        "batch": partial(nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d, eps=eps),
        "group": partial(_group_norm, group_size=group_size, eps=eps),
        "layer": partial(nn.GroupNorm, 1, eps=eps) if dim == 2 else partial(nn.LayerNorm, eps=eps),
        "none": _identity,
    }
    if dim == 2:
        factories["instance"] = partial(nn.InstanceNorm2d, eps=eps, affine=True)
    if norm not in factories:
        allowed = NORMS if dim == 2 else tuple(n for n in NORMS if n in factories or n == "online")
        raise ValueError(f"norm must be one of {', '.join(allowed)} for dim={dim}, got {norm!r}")
    return factories[norm]
