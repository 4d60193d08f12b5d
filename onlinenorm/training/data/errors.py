"""The one error type for unreadable or inconsistent dataset files."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """A dataset file is missing, corrupt, truncated or inconsistent.

    The message always names the file and says what to do about it.
    """


def check_arrays(images: np.ndarray, labels: np.ndarray, num_classes: int, path: Path | str) -> None:
    """Raise :class:`DatasetError` naming ``path`` unless the arrays are a valid split.

    ``images``: (N, C, H, W) uint8; ``labels``: (N,) integers in ``[0, num_classes)``.
    """
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DatasetError(f"{path}: expected uint8 images of shape (N, C, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DatasetError(f"{path}: {len(images)} images but labels of shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(
            f"{path}: labels must lie in [0, {num_classes}), found range [{labels.min()}, {labels.max()}]"
        )
