"""Batches of normalized tensors from a decoded in-memory split."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from .split import Split

# augment(images (N, C, H, W) uint8 on the device, generator) -> (N, C, H, W) in [0, 255]
Augment = Callable[[Tensor, torch.Generator], Tensor]
DEVICE_RESIDENT_BYTES = 4 << 30  # splits up to this size live on the GPU (CIFAR: 150 MB)


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for one epoch's order and augmentation, independent of earlier epochs."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class BatchLoader:
    """Iterate over ``split`` as ``(x, y)``: x (B, C, H, W) float32, y (B,) int64, on ``device``.

    Each batch is a gather of uint8 rows (on the GPU when the split fits in
    :data:`DEVICE_RESIDENT_BYTES`, else on the host followed by one copy), then
    batched augmentation and ``(x / 255 - mean) / std`` on the device. With
    ``shuffle`` the order and the augmentation of epoch ``e`` depend only on
    ``(seed, e)`` (see :meth:`set_epoch`), which makes resuming exact. With
    ``drop_last`` a trailing partial batch is skipped unless it is the only one.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device | str = "cpu",
        augment: Augment | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        self.split = split
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.augment = augment
        self.shuffle = shuffle
        self.drop_last = drop_last and len(split) >= batch_size
        self.seed = seed
        self.generator = torch.Generator()
        self.set_epoch(0)
        scale = 255.0 * torch.tensor(std, dtype=torch.float32)
        self._offset = (255.0 * torch.tensor(mean, dtype=torch.float32)).view(1, -1, 1, 1).to(self.device)
        self._scale = scale.view(1, -1, 1, 1).to(self.device)
        self._resident = None
        if self.device.type == "cuda" and split.images.nbytes <= DEVICE_RESIDENT_BYTES:
            images = torch.from_numpy(np.ascontiguousarray(split.images)).to(self.device)
            self._resident = (images, torch.from_numpy(split.labels).to(self.device))

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(epoch_seed(self.seed, epoch))

    def __len__(self) -> int:
        full, rest = divmod(len(self.split), self.batch_size)
        return full + (rest > 0 and not self.drop_last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            images, labels = self._gather(index)
            if self.augment is not None:
                images = self.augment(images, self.generator)
            yield (images.float() - self._offset) / self._scale, labels

    def _gather(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 images (B, C, H, W) and labels (B,) at ``index``, on the device."""
        if self._resident is not None:
            on_device = index.to(self.device)
            return self._resident[0][on_device], self._resident[1][on_device]
        rows = index.numpy()
        images = torch.from_numpy(np.take(self.split.images, rows, axis=0))
        labels = torch.from_numpy(self.split.labels[rows])
        return images.to(self.device), labels.to(self.device)
