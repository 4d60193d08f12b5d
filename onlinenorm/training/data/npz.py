"""Downsampled ImageNet (Chrabaszcz et al. 2017) in its ``.npz`` batches.

Layout: ``train_data_batch_*.npz`` and ``val_data.npz``, each with ``data``
(N, 3*S*S) uint8 in channel-major order (S = 32 or 64) and ``labels`` (N,),
1-based. Classes are label numbers 1..1000; a subset keeps the first K or a
listed set, filtered file by file so the full training set is never in memory.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .split import Split
from .subset import select_classes

TRAIN_GLOB = "train_data_batch_*.npz"
VAL_FILE = "val_data.npz"
NUM_CLASSES = 1000


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, S, S) uint8, 1-based labels (N,)) of one file."""
    try:
        # The file is ours to close: np.load leaves the one it opened open when the archive is unreadable.
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as archive:
            data, labels = archive["data"], np.asarray(archive["labels"], dtype=np.int64).reshape(-1)
    except KeyError as err:
        raise DatasetError(f"{path}: missing array {err}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{path}: not a readable .npz file ({err})") from None
    size = int(round((data.shape[-1] / 3) ** 0.5)) if data.ndim == 2 else 0
    if data.dtype != np.uint8 or size == 0 or 3 * size * size != data.shape[1]:
        raise DatasetError(f"{path}: 'data' must be uint8 (N, 3*S*S), found {data.dtype} {data.shape}")
    return data.reshape(-1, 3, size, size), labels


def _rank_within_class(labels: np.ndarray) -> np.ndarray:
    """For each sample (N,), how many earlier samples share its label."""
    order = np.argsort(labels, kind="stable")
    ordered = labels[order]
    rank = np.empty_like(labels)
    rank[order] = np.arange(len(labels)) - np.searchsorted(ordered, ordered, side="left")
    return rank


def _filtered(path: Path, lookup: np.ndarray, remaining: np.ndarray | None) -> Split:
    """The samples of one file whose class is kept, relabelled by ``lookup`` (1001,) (-1 drops).

    ``remaining`` (K,): how many more samples each kept class may take, or ``None`` for all.
    """
    images, labels = _read(path)
    if len(labels) != len(images) or (len(labels) and not (labels.min() >= 1 and labels.max() <= NUM_CLASSES)):
        raise DatasetError(f"{path}: labels must be 1..{NUM_CLASSES}, one per image")
    mapped = lookup[labels]
    chosen = mapped >= 0
    if remaining is not None:
        chosen &= _rank_within_class(mapped) < remaining[mapped.clip(min=0)]
    return Split(images[chosen], mapped[chosen])


def load_imagenet_npz(
    root: Path, classes: int | list[int] | None = None, max_per_class: int | None = None
) -> tuple[Split, Split, list[str]]:
    """(train, val, class names) with labels remapped to 0..K-1; ``max_per_class`` caps the training split."""
    train_files = sorted(root.glob(TRAIN_GLOB), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if not train_files or not (root / VAL_FILE).exists():
        raise DatasetError(
            f"{root}: expected {TRAIN_GLOB} and {VAL_FILE} (downsampled ImageNet .npz files), or write "
            f"synthetic ones with `onlinenorm data synth --format imagenet-npz --out {root}`"
        )
    kept = select_classes(range(1, NUM_CLASSES + 1), classes, root)
    lookup = np.full(NUM_CLASSES + 1, -1, dtype=np.int64)
    lookup[kept] = np.arange(len(kept))
    remaining = None if max_per_class is None else np.full(len(kept), max_per_class)
    train_parts = []
    for path in train_files:
        train_parts.append(_filtered(path, lookup, remaining))
        if remaining is not None:
            remaining -= np.bincount(train_parts[-1].labels, minlength=len(kept))
    train = Split.concat(train_parts)
    val = _filtered(root / VAL_FILE, lookup, None)
    if train.images.shape[1:] != val.images.shape[1:]:
        raise DatasetError(
            f"{root / VAL_FILE}: image shape {val.images.shape[1:]} differs from training {train.images.shape[1:]}"
        )
    return train, val, [str(label) for label in kept]


def write_imagenet_npz(root: Path, train: Split, test: Split, num_files: int = 2) -> Path:
    """Write splits as ``train_data_batch_1..num_files.npz`` and ``val_data.npz`` (1-based labels)."""
    root.mkdir(parents=True, exist_ok=True)
    flat = train.images.reshape(len(train), -1)
    mean = flat.mean(axis=0) if len(train) else np.zeros(flat.shape[1])
    for i, index in enumerate(np.array_split(np.arange(len(train)), num_files), start=1):
        np.savez(
            root / f"train_data_batch_{i}.npz", data=flat[index], labels=(train.labels[index] + 1).tolist(), mean=mean
        )
    np.savez(root / VAL_FILE, data=test.images.reshape(len(test), -1), labels=(test.labels + 1).tolist())
    return root
