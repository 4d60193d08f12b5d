"""Models that take a ``norm_layer`` (see :mod:`onlinenorm.norms`) and never branch on its name.

``create_model(name, num_classes, norm_layer, image_shape)`` builds any of
:data:`MODELS`; :data:`NORM_DIMS` says whether a model wants the 2d (images)
or 1d (vectors) norm layers.
"""

from __future__ import annotations

from math import prod

from torch import nn

from ..norms import NormLayer
from .cifar_resnet import CIFAR_DEPTHS, CifarResNet
from .mlp import MLP
from .resnet import ARCHITECTURES, ResNet

MODELS = (*(f"resnet{d}" for d in CIFAR_DEPTHS), "resnet18", "resnet50", "mlp")
NORM_DIMS = {name: 1 if name == "mlp" else 2 for name in MODELS}


def create_model(
    name: str, num_classes: int, norm_layer: NormLayer, image_shape: tuple[int, int, int] = (3, 32, 32)
) -> nn.Module:
    """Model ``name`` for inputs of ``image_shape`` (C, H, W) and ``num_classes`` outputs.

    Args:
        name: one of :data:`MODELS` (CIFAR ResNets ``resnet20`` ... ``resnet110``,
            ImageNet-style ``resnet18`` / ``resnet50``, or ``mlp``).
        num_classes: outputs of the classifier.
        norm_layer: ``num_features -> nn.Module`` (see :func:`onlinenorm.norms.create_norm`),
            of the dimensionality ``NORM_DIMS[name]``.
        image_shape: ``(C, H, W)`` of one input image.

    Returns:
        The model, mapping ``(N, C, H, W)`` images to ``(N, num_classes)`` logits.
    """
    channels, height, _ = image_shape
    if name == "mlp":
        return MLP(prod(image_shape), num_classes, norm_layer)
    if name in ARCHITECTURES:
        return ResNet(name, num_classes, norm_layer, image_size=height, in_channels=channels)
    if name in MODELS:
        return CifarResNet(int(name.removeprefix("resnet")), num_classes, norm_layer, in_channels=channels)
    raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}")


__all__ = ["MODELS", "NORM_DIMS", "CifarResNet", "MLP", "ResNet", "create_model"]
