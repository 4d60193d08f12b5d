"""A split: decoded images and labels held in memory (or memory-mapped)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """``images``: (N, C, H, W) uint8, ``labels``: (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> Split:
        """The samples at ``index`` (a copy, so memory maps are read once)."""
        return Split(np.ascontiguousarray(self.images[index]), self.labels[index])

    @staticmethod
    def concat(splits: list[Split]) -> Split:
        return Split(np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits]))
