"""Batched augmentation on whole uint8 batches (no per-sample Python).

Random parameters are drawn from a CPU ``torch.Generator`` so the same seed
gives the same augmentation on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

RESIZED_CROP_SCALE = (0.25, 1.0)
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)


def _flips(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    return (torch.rand(n, generator=generator) < 0.5).to(device)


def pad_crop_flip(images: Tensor, generator: torch.Generator, padding: int) -> Tensor:
    """Random ``padding``-pixel translation (zero fill) and horizontal flip.

    ``images``: (N, C, H, W) of any dtype; returns the same shape and dtype.
    One gather does crop and flip together.
    """
    n, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator).to(device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator).to(device)
    rows = dy + torch.arange(h, device=device)  # (N, H)
    cols = dx + torch.arange(w, device=device)  # (N, W)
    cols = torch.where(_flips(n, generator, device)[:, None], cols.flip(1), cols)
    return padded[
        torch.arange(n, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def resized_crop_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random resized crop (Inception-style area and aspect jitter) and flip.

    ``images``: (N, C, H, W) uint8 or float; returns float (N, C, H, W) in the
    input's value range, resampled bilinearly back to H x W.
    """
    n, _, _, _ = images.shape
    device = images.device
    area = torch.empty(n).uniform_(*RESIZED_CROP_SCALE, generator=generator)
    log_ratio = torch.empty(n).uniform_(*map(math.log, RESIZED_CROP_RATIO), generator=generator)
    ratio = log_ratio.exp()
    width = (area * ratio).sqrt().clamp(max=1.0)  # fractions of the full side
    height = (area / ratio).sqrt().clamp(max=1.0)
    center_x = (torch.rand(n, generator=generator) * 2 - 1) * (1 - width)
    center_y = (torch.rand(n, generator=generator) * 2 - 1) * (1 - height)
    sign = 1 - 2 * (torch.rand(n, generator=generator) < 0.5).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = width * sign
    theta[:, 0, 2] = center_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = center_y
    grid = F.affine_grid(theta.to(device), list(images.shape), align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
