"""One entry point per dataset: load it, subset it, and know how to augment it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from onlinenorm.constants import DATASETS

from .augment import pad_crop_flip, resized_crop_flip
from .cifar import CIFAR_LAYOUTS, load_cifar, write_cifar
from .download import download_archive
from .errors import DatasetError
from .imagefolder import load_imagefolder, write_imagefolder
from .loader import Augment
from .npz import load_imagenet_npz, write_imagenet_npz
from .split import Split
from .subset import stratified_subset
from .synth import synthesize

PAD_FRACTION = 8  # pad-crop translates by up to 1/8 of the side: 4 px at 32 px
STATS_CHUNK = 4096  # images per pass when computing mean/std (bounds memory on memory maps)
SYNTH_DEFAULTS = {  # format -> (classes, image size) written by `data synth`
    "cifar10": (10, 32),
    "cifar100": (100, 32),
    "imagefolder": (10, 48),
    "imagenet-npz": (10, 32),
}


@dataclass(frozen=True)
class Dataset:
    """Train and validation splits in memory, with their normalization and augmentation.

    ``mean``/``std`` are per channel on the [0, 1] scale, measured on ``train``;
    ``augment`` is applied to training batches only.
    """

    train: Split
    val: Split
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), on the [0, 1] scale."""
    total = np.zeros(images.shape[1])
    squares = np.zeros(images.shape[1])
    for start in range(0, len(images), STATS_CHUNK):
        chunk = np.asarray(images[start : start + STATS_CHUNK], dtype=np.float64) / 255.0
        total += chunk.sum(axis=(0, 2, 3))
        squares += np.square(chunk).sum(axis=(0, 2, 3))
    count = max(1, len(images) * images.shape[2] * images.shape[3])
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
    return tuple(mean.tolist()), tuple(std.tolist())


def load_dataset(
    name: str,
    data_dir: str | Path,
    *,
    subset: float | int | None = None,
    subset_seed: int = 0,
    download: bool = False,
    image_size: int = 64,
    classes: int | list | None = None,
    max_per_class: int | None = None,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Load ``name`` (one of :data:`DATASETS`) from ``data_dir``.

    ``subset`` (a fraction, or a per-class count) draws a stratified training
    subset seeded by ``subset_seed``. ``download`` fetches CIFAR when absent.
    ImageNet options: ``image_size`` (ImageFolder decode size), ``classes``
    (first K, or a list of names / 1-based npz labels), ``max_per_class``
    (cap on training images per class), ``cache_dir`` (ImageFolder cache).
    """
    root = Path(data_dir)
    if name in CIFAR_LAYOUTS:
        if download and not (root / CIFAR_LAYOUTS[name].folder).is_dir():
            download_archive(name, root)
        train, val, names = load_cifar(root, name)
    elif name == "imagefolder":
        train, val, names = load_imagefolder(root, image_size, classes, max_per_class, cache_dir and Path(cache_dir))
    elif name == "imagenet-npz":
        train, val, names = load_imagenet_npz(root, classes, max_per_class)
    else:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    train = train.take(stratified_subset(train.labels, subset, subset_seed)) if subset is not None else train
    if len(train) == 0 or len(val) == 0:
        raise DatasetError(
            f"{root}: the chosen classes and subset leave {len(train)} training and {len(val)} validation images"
        )
    mean, std = channel_stats(train.images)
    side = train.images.shape[-1]
    augment = resized_crop_flip if name == "imagefolder" else partial(pad_crop_flip, padding=side // PAD_FRACTION)
    return Dataset(train, val, names, mean, std, augment)


def write_synthetic(
    fmt: str,
    out: str | Path,
    *,
    num_train: int = 5000,
    num_test: int = 1000,
    seed: int = 0,
    num_classes: int | None = None,
    image_size: int | None = None,
) -> Path:
    """Write a synthetic dataset in the real file layout of ``fmt``; returns the folder written."""
    if fmt not in SYNTH_DEFAULTS:
        raise DatasetError(f"unknown format {fmt!r}; choose one of {', '.join(SYNTH_DEFAULTS)}")
    default_classes, default_size = SYNTH_DEFAULTS[fmt]
    num_classes = num_classes or default_classes
    size = image_size or default_size
    if fmt in CIFAR_LAYOUTS and (num_classes, size) != (default_classes, default_size):
        raise DatasetError(
            f"format {fmt} has exactly {default_classes} classes of {default_size}x{default_size} images"
        )
    train, test = synthesize(num_classes, num_train, num_test, size, seed)
    root = Path(out)
    if fmt in CIFAR_LAYOUTS:
        return write_cifar(root, fmt, train, test, [f"class_{i:03d}" for i in range(num_classes)])
    if fmt == "imagefolder":
        names = [f"n{i:08d}" for i in range(num_classes)]
        return write_imagefolder(root, train, test, names, np.random.default_rng([seed, 3]))
    return write_imagenet_npz(root, train, test)
