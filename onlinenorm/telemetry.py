"""Model-level views of the clamp: how often it fires, and switching it off.

Each ``ac`` layer counts, on its own device, the activations the clamp
changed (``|y'| > c``) and the activations it saw while training; these
functions read or reset those counters across a model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from onlinenorm.layers import _OnlineNorm


def _clamping_layers(model: nn.Module) -> Iterator[tuple[str, _OnlineNorm]]:
    for name, module in model.named_modules():
        if isinstance(module, _OnlineNorm) and module.ecm == "ac":
            yield name, module


def clamp_fractions(model: nn.Module) -> dict[str, float]:
    """Fraction of activations clamped since the last ``reset_clamp_stats``.

    Reads every counter in one device transfer.

    Args:
        model: a module holding ``ecm="ac"`` Online Normalization layers
            (a single layer counts too; its name is ``""``).

    Returns:
        ``{layer_name: clamped / seen, ..., "all": total clamped / total seen}``
        over the model's ``ecm="ac"`` layers (``"all"`` is weighted by element
        count; a model with no such layer gives ``{}``). A layer that has seen
        nothing reports ``nan``.
    """
    layers = list(_clamping_layers(model))
    if not layers:
        return {}
    counts = torch.stack([torch.stack((m.clamp_count, m.seen_count)) for _, m in layers]).cpu()
    clamped, seen = counts[:, 0].tolist(), counts[:, 1].tolist()
    fractions = {name: (c / s if s else float("nan")) for (name, _), c, s in zip(layers, clamped, seen, strict=False)}
    fractions["all"] = sum(clamped) / sum(seen) if sum(seen) else float("nan")
    return fractions


def reset_clamp_stats(model: nn.Module) -> None:
    """Zero the clamp counters of every ``ecm="ac"`` layer in ``model``.

    Sets each such layer's ``clamp_count`` and ``seen_count`` to 0, on its device, so that
    :func:`clamp_fractions` counts from here on.

    Args:
        model: a module holding Online Normalization layers (or one layer); layers with another ``ecm``
            are left as they are.
    """
    for _, module in _clamping_layers(model):
        module.clamp_count.zero_()
        module.seen_count.zero_()


@contextlib.contextmanager
def clamp_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` with activation clamping removed in every layer; restore it on exit.

    For the "remove the clamp at inference" evaluation: inside the block
    ``ac`` layers output the unclamped ``y'``. Restores each layer's previous
    setting on exit, including when the block raises.

    Args:
        model: a module holding Online Normalization layers (or one layer).

    Yields:
        ``model`` itself, its ``ac`` layers unclamped until the block exits.
    """
    layers = [module for _, module in _clamping_layers(model)]
    saved = [module.clamp_enabled for module in layers]
    for module in layers:
        module.clamp_enabled = False
    try:
        yield model
    finally:
        for module, enabled in zip(layers, saved, strict=False):
            module.clamp_enabled = enabled
