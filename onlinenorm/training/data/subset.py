"""Class selection and stratified, seeded training subsets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from .errors import DatasetError

T = TypeVar("T")


def select_classes(available: Sequence[T], classes: int | Sequence[T] | None, source: Path | str) -> list[T]:
    """The first ``classes`` of ``available`` (an int), the listed ones (a list), or all (``None``)."""
    if classes is None:
        return list(available)
    if isinstance(classes, int):
        if not 1 <= classes <= len(available):
            raise DatasetError(f"{source}: asked for the first {classes} classes but {len(available)} are present")
        return list(available)[:classes]
    missing = [c for c in classes if c not in set(available)]
    if missing:
        raise DatasetError(f"{source}: classes {missing[:5]} not found (present: {list(available)[:5]}...)")
    return list(classes)


def stratified_subset(labels: np.ndarray, subset: float | int | None, seed: int) -> np.ndarray:
    """Sorted indices of a per-class sample of ``labels`` (N,).

    ``subset``: ``None`` keeps everything; a float in (0, 1] keeps that
    fraction of each class (at least one sample); an int keeps that many per
    class (or all of a smaller class). The draw depends only on ``seed`` and
    the labels, so every trial of a sweep sees the same subset.
    """
    if subset is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, round(subset * len(members))) if isinstance(subset, float) else min(subset, len(members))
        keep.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(keep))
