"""Models that take a ``norm_layer`` (see :mod:`onlinenorm.norms`) and never branch on its name.

``create_model(name, num_classes, norm_layer, image_shape)`` builds any of
:data:`MODELS`; :data:`NORM_DIMS` says whether a model wants the 2d (images)
or 1d (vectors) norm layers.
"""

from __future__ import annotations

from math import prod

from torch import nn

from ..constants import MODELS
from ..norms import NormLayer
from .cifar_resnet import CifarResNet
from .mlp import MLP
from .resnet import ARCHITECTURES, ResNet

NORM_DIMS = {name: 1 if name == "mlp" else 2 for name in MODELS}


def create_model(
    name: str,
    num_classes: int,
    norm_layer: NormLayer,
    image_shape: tuple[int, int, int] = (3, 32, 32),
    shortcut: str = "pad",
) -> nn.Module:
    """Model ``name`` for inputs of ``image_shape`` (C, H, W) and ``num_classes`` outputs.

    Args:
        name: one of :data:`MODELS` (CIFAR ResNets ``resnet20`` ... ``resnet110``,
            ImageNet-style ``resnet18`` / ``resnet50``, or ``mlp``).
        num_classes: outputs of the classifier.
        norm_layer: ``num_features -> nn.Module`` (see :func:`onlinenorm.norms.create_norm`),
            of the dimensionality ``NORM_DIMS[name]``.
        image_shape: ``(C, H, W)`` of one input image.
        shortcut: ``pad`` or ``projection``, the CIFAR ResNets' shortcut where a
            stage changes width; ImageNet ResNets always project, the MLP has none.

    Returns:
        The model, mapping ``(N, C, H, W)`` images to ``(N, num_classes)`` logits.
    """
    channels, height, _ = image_shape
    if name == "mlp":
        return MLP(prod(image_shape), num_classes, norm_layer)
    if name in ARCHITECTURES:
        return ResNet(name, num_classes, norm_layer, image_size=height, in_channels=channels)
    if name in MODELS:
        return CifarResNet(
            int(name.removeprefix("resnet")), num_classes, norm_layer, in_channels=channels, shortcut=shortcut
        )
    raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}")


__all__ = ["MODELS", "NORM_DIMS", "CifarResNet", "MLP", "ResNet", "create_model"]
