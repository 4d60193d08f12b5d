"""CIFAR ResNets of depth 6n + 2 (He et al. 2016, section 4.2).

Three stages of n basic blocks with 16, 32, 64 channels on 32x32, 16x16, 8x8
maps. Where a stage changes width the shortcut is parameter-free (``pad``,
option A: subsample and zero-pad channels; ResNet-20 has 0.27M parameters) or
a ``projection`` (option B: 1x1 convolution and norm, as in the Online
Normalization authors' scripts).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..constants import CIFAR_DEPTHS, SHORTCUTS
from ..norms import NormLayer
from .blocks import BasicBlock, conv3x3, init_convolutions, pad_shortcut, projection, residual_stages

STAGE_CHANNELS = (16, 32, 64)


class CifarResNet(nn.Module):
    """(N, C, H, W) images -> (N, num_classes) logits."""

    def __init__(
        self, depth: int, num_classes: int, norm_layer: NormLayer, in_channels: int = 3, shortcut: str = "pad"
    ) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (e.g. {CIFAR_DEPTHS}), got {depth}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {', '.join(SHORTCUTS)}, got {shortcut!r}")
        blocks_per_stage = (depth - 2) // 6
        self.conv = conv3x3(in_channels, STAGE_CHANNELS[0])
        self.norm = norm_layer(STAGE_CHANNELS[0])
        counts = (blocks_per_stage,) * len(STAGE_CHANNELS)
        make_shortcut = {"pad": pad_shortcut, "projection": projection}[shortcut]
        self.blocks, channels = residual_stages(
            BasicBlock, STAGE_CHANNELS, counts, STAGE_CHANNELS[0], norm_layer, make_shortcut
        )
        self.fc = nn.Linear(channels, num_classes)
        init_convolutions(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(F.relu(self.norm(self.conv(x))))
        return self.fc(x.mean(dim=(2, 3)))
