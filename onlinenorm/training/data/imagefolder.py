"""ImageNet-style ImageFolder trees, decoded once into a cached uint8 array.

Layout: ``root/train/<class>/*.JPEG`` and ``root/val/<class>/*.JPEG``. The
chosen classes and files are decoded with Pillow (shorter side resized to
``image_size``, centre crop) into ``(N, 3, S, S)`` uint8 and saved as ``.npy``
next to the data (or in ``cache_dir``); labels follow from the file list. The cache name hashes everything that
determines its content (file list with sizes and mtimes, classes, size), so
later runs and every trial of a sweep memory-map it instead of decoding.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DatasetError, check_arrays
from .split import Split
from .subset import select_classes

SPLIT_FOLDERS = ("train", "val")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}
CACHE_FOLDER = ".onlinenorm-cache"
CACHE_VERSION = 1  # bump when the decoding below changes
JPEG_QUALITY = 90


def _class_files(folder: Path, names: list[str], max_per_class: int | None) -> list[tuple[Path, int]]:
    """(file, label) pairs in sorted order, at most ``max_per_class`` per class."""
    pairs = []
    for label, name in enumerate(names):
        files = sorted(p for p in (folder / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        pairs += [(path, label) for path in files[:max_per_class]]
    return pairs


def _decode(path: Path, size: int) -> np.ndarray:
    """One image as (3, size, size) uint8: shorter side to ``size``, centre crop."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # lets JPEG decode at a reduced scale
            image = image.convert("RGB")
            scale = size / min(image.size)
            width, height = (max(size, round(d * scale)) for d in image.size)
            image = image.resize((width, height), Image.Resampling.BILINEAR)
            left, top = (width - size) // 2, (height - size) // 2
            pixels = np.asarray(image.crop((left, top, left + size, top + size)))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"{path}: cannot decode image ({err}); replace or remove the file") from None
    return pixels.transpose(2, 0, 1)


def _cache_key(pairs: list[tuple[Path, int]], names: list[str], size: int) -> str:
    stats = [(str(p), label, p.stat().st_size, p.stat().st_mtime_ns) for p, label in pairs]
    payload = json.dumps([CACHE_VERSION, size, names, stats]).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def _save_atomic(path: Path, array: np.ndarray) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as f:
        np.save(f, array)
    os.replace(temporary, path)


def _load_split(
    root: Path, split: str, names: list[str], size: int, max_per_class: int | None, cache_dir: Path
) -> Split:
    pairs = _class_files(root / split, names, max_per_class)
    if not pairs:
        raise DatasetError(f"{root / split}: no images found for the chosen classes")
    images_path = cache_dir / f"{split}-{size}px-{_cache_key(pairs, names, size)}.images.npy"
    labels = np.array([label for _, label in pairs], dtype=np.int64)
    if images_path.exists():
        try:
            images = np.load(images_path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise DatasetError(f"{images_path}: unreadable cache ({err}); delete it to rebuild") from None
        if images.shape != (len(pairs), 3, size, size):
            raise DatasetError(
                f"{images_path}: cache holds {images.shape}, expected {(len(pairs), 3, size, size)}; delete it"
            )
    else:
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            images = np.stack(list(pool.map(lambda pair: _decode(pair[0], size), pairs)))
        cache_dir.mkdir(parents=True, exist_ok=True)
        _save_atomic(images_path, images)
    check_arrays(images, labels, len(names), images_path)
    return Split(images, labels)


def load_imagefolder(
    root: Path,
    image_size: int,
    classes: int | list[str] | None = None,
    max_per_class: int | None = None,
    cache_dir: Path | None = None,
) -> tuple[Split, Split, list[str]]:
    """(train, val, class names) of an ImageFolder tree; ``max_per_class`` caps the training split."""
    train_folder = root / SPLIT_FOLDERS[0]
    if not train_folder.is_dir():
        raise DatasetError(
            f"{train_folder}: not found. Expected {root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG, "
            f"or write synthetic data with `onlinenorm data synth --format imagefolder --out {root}`"
        )
    names = select_classes(sorted(p.name for p in train_folder.iterdir() if p.is_dir()), classes, train_folder)
    cache = cache_dir or root / CACHE_FOLDER
    train = _load_split(root, SPLIT_FOLDERS[0], names, image_size, max_per_class, cache)
    val = _load_split(root, SPLIT_FOLDERS[1], names, image_size, None, cache)
    return train, val, names


def write_imagefolder(root: Path, train: Split, test: Split, names: list[str], rng: np.random.Generator) -> Path:
    """Write splits as JPEG trees; each image is stretched to a random size up to 1.5x (exercises resizing)."""
    for folder, split in zip(SPLIT_FOLDERS, (train, test), strict=True):
        for name in names:
            (root / folder / name).mkdir(parents=True, exist_ok=True)
        for i, (pixels, label) in enumerate(zip(split.images, split.labels, strict=True)):
            size = pixels.shape[-1]
            image = Image.fromarray(pixels.transpose(1, 2, 0))
            image = image.resize(tuple(int(size * f) for f in rng.uniform(1.0, 1.5, 2)), Image.Resampling.BILINEAR)
            image.save(root / folder / names[label] / f"{names[label]}_{i:06d}.JPEG", quality=JPEG_QUALITY)
    return root
