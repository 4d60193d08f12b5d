"""Residual blocks shared by the CIFAR and ImageNet ResNets (He et al. 2016)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..norms import NormLayer


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Parameter-free shortcut (option A): subsample by ``stride``, zero-pad new channels."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))


def pad_shortcut(in_channels: int, out_channels: int, stride: int, norm_layer: NormLayer) -> nn.Module:
    """Parameter-free shortcut (option A), as a :data:`Shortcut`."""
    return PadShortcut(out_channels - in_channels, stride)


def projection(in_channels: int, out_channels: int, stride: int, norm_layer: NormLayer) -> nn.Module:
    """Projection shortcut (option B): 1x1 convolution and norm."""
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), norm_layer(out_channels))


# (in_channels, out_channels, stride, norm_layer) -> the shortcut of a block that changes shape
Shortcut = Callable[[int, int, int, NormLayer], nn.Module]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions: (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""

    expansion = 1

    def __init__(
        self, in_channels: int, channels: int, stride: int, norm_layer: NormLayer, shortcut: nn.Module
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.norm1 = norm_layer(channels)
        self.conv2 = conv3x3(channels, channels)
        self.norm2 = norm_layer(channels)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand: (N, C_in, H, W) -> (N, 4 * channels, H / stride, W / stride)."""

    expansion = 4

    def __init__(
        self, in_channels: int, channels: int, stride: int, norm_layer: NormLayer, shortcut: nn.Module
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_channels, channels)
        self.norm1 = norm_layer(channels)
        self.conv2 = conv3x3(channels, channels, stride)
        self.norm2 = norm_layer(channels)
        self.conv3 = conv1x1(channels, channels * self.expansion)
        self.norm3 = norm_layer(channels * self.expansion)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def residual_stages(
    block: type[BasicBlock | Bottleneck],
    widths: Sequence[int],
    counts: Sequence[int],
    in_channels: int,
    norm_layer: NormLayer,
    shortcut: Shortcut,
) -> tuple[nn.Sequential, int]:
    """Stage ``i``: ``counts[i]`` blocks of base width ``widths[i]``, the first of every stage but the first with
    stride 2; a block that changes shape (stride or channels) gets ``shortcut``, the others the identity.

    Returns:
        The blocks in order, mapping ``(N, in_channels, H, W)`` to ``(N, C_out, H', W')``, and ``C_out``
        (``widths[-1] * block.expansion``; ``H' = H / 2 ** (len(widths) - 1)``).
    """
    blocks = []
    channels = in_channels
    for stage, (base, count) in enumerate(zip(widths, counts, strict=True)):
        for index in range(count):
            stride = 2 if stage > 0 and index == 0 else 1
            out_channels = base * block.expansion
            changes = stride > 1 or channels != out_channels
            path = shortcut(channels, out_channels, stride, norm_layer) if changes else nn.Identity()
            blocks.append(block(channels, base, stride, norm_layer, path))
            channels = out_channels
    return nn.Sequential(*blocks), channels


def init_convolutions(model: nn.Module) -> None:
    """He (Kaiming) normal initialization of every convolution of ``model``, for the ReLUs that follow."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
