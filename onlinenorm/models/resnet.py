"""ImageNet-style ResNet-18 / ResNet-50 with a stem that suits the input size.

Stages of 64, 128, 256, 512 base channels with projection (option B)
shortcuts. The stem keeps the first stage at a useful resolution: a 3x3
convolution for inputs up to 32 px, plus a 2x max-pool up to 96 px (e.g.
64 px downsampled ImageNet), and the standard 7x7/2 convolution with a 2x
max-pool above that.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..norms import NormLayer
from .blocks import BasicBlock, Bottleneck, conv3x3, init_convolutions, projection, residual_stages

STAGE_CHANNELS = (64, 128, 256, 512)
SMALL_INPUT = 32  # at most this: 3x3 stem, no pooling
MEDIUM_INPUT = 96  # at most this: 3x3 stem and a 2x max-pool
ARCHITECTURES = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def stem(image_size: int, in_channels: int, norm_layer: NormLayer) -> nn.Sequential:
    """(N, in_channels, S, S) -> (N, 64, S', S') with S' = S, S / 2 or S / 4 by input size."""
    channels = STAGE_CHANNELS[0]
    if image_size <= MEDIUM_INPUT:
        layers = [conv3x3(in_channels, channels), norm_layer(channels), nn.ReLU()]
        return nn.Sequential(*layers, *([nn.MaxPool2d(3, 2, 1)] if image_size > SMALL_INPUT else []))
    conv = nn.Conv2d(in_channels, channels, 7, stride=2, padding=3, bias=False)
    return nn.Sequential(conv, norm_layer(channels), nn.ReLU(), nn.MaxPool2d(3, 2, 1))


class ResNet(nn.Module):
    """(N, C, S, S) images -> (N, num_classes) logits."""

    def __init__(
        self, arch: str, num_classes: int, norm_layer: NormLayer, image_size: int = 224, in_channels: int = 3
    ) -> None:
        super().__init__()
        block, counts = ARCHITECTURES[arch]
        self.stem = stem(image_size, in_channels, norm_layer)
        self.blocks, channels = residual_stages(
            block, STAGE_CHANNELS, counts, STAGE_CHANNELS[0], norm_layer, projection
        )
        self.fc = nn.Linear(channels, num_classes)
        init_convolutions(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))
