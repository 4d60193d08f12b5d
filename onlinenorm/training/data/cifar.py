"""CIFAR-10 / CIFAR-100 in the official python pickle layout.

CIFAR-10: ``cifar-10-batches-py/data_batch_1..5``, ``test_batch`` (dicts with
``data`` (N, 3072) uint8 in channel-major order and ``labels``) and
``batches.meta`` (``label_names``). CIFAR-100: ``cifar-100-python/train``,
``test`` (``data``, ``fine_labels``, ``coarse_labels``) and ``meta``
(``fine_label_names``). Files are read with an unpickler that admits only the
numpy array reconstructors, so a malicious pickle cannot run code.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError, check_arrays
from .split import Split

IMAGE_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its files and which keys hold what."""

    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    coarse_classes: int = 0  # CIFAR-100's 20 superclasses; 0 where there are none


CIFAR_LAYOUTS = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        num_classes=10,
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
        coarse_classes=20,
    ),
}

# (module, name) pairs a CIFAR pickle may reference: numpy's array
# reconstructors under their numpy 1 and numpy 2 module names.
_ALLOWED_GLOBALS = {
    (module, name)
    for package in ("numpy.core", "numpy._core")
    for module, name in ((f"{package}.multiarray", "_reconstruct"), (f"{package}.numeric", "_frombuffer"))
} | {("numpy", "ndarray"), ("numpy", "dtype")}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")
        return super().find_class(module.replace("numpy.core", "numpy._core"), name)


def read_pickle(path: Path) -> dict:
    """One CIFAR pickle as a dict with ``str`` keys; :class:`DatasetError` if unreadable."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayOnlyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file missing; the CIFAR folder is incomplete") from None
    except Exception as err:  # pickle raises many types on truncated or garbled input
        raise DatasetError(f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def write_pickle(path: Path, obj: dict) -> None:
    """Write one CIFAR pickle (the inverse of :func:`read_pickle`)."""
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def _read_batch(path: Path, layout: CifarLayout) -> Split:
    entry = read_pickle(path)
    for key in ("data", layout.label_key):
        if key not in entry:
            raise DatasetError(f"{path}: missing key {key!r}")
    data = np.asarray(entry["data"])
    if data.ndim != 2 or data.shape[1] != np.prod(IMAGE_SHAPE):
        raise DatasetError(f"{path}: 'data' must have shape (N, 3072), found {data.shape}")
    images = data.reshape(-1, *IMAGE_SHAPE)
    labels = np.asarray(entry[layout.label_key], dtype=np.int64)
    check_arrays(images, labels, layout.num_classes, path)
    return Split(images, labels)


def cifar_folder(root: Path, name: str) -> Path:
    """The folder holding the pickles: ``root`` itself or ``root/<official folder>``."""
    layout = CIFAR_LAYOUTS[name]
    return root if (root / layout.meta_file).exists() else root / layout.folder


def load_cifar(root: Path, name: str) -> tuple[Split, Split, list[str]]:
    """Read a CIFAR variant under ``root``: (train split, test split, class names)."""
    layout = CIFAR_LAYOUTS[name]
    folder = cifar_folder(root, name)
    if not folder.is_dir():
        raise DatasetError(
            f"{root / layout.folder}: not found. Put the extracted official archive there, "
            f"pass --download on a machine with internet, or write synthetic data with "
            f"`onlinenorm data synth --format {name} --out {root}`"
        )
    meta_path = folder / layout.meta_file
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in read_pickle(meta_path).get(layout.names_key, [])]
    if len(names) != layout.num_classes:
        raise DatasetError(
            f"{meta_path}: expected {layout.num_classes} names under {layout.names_key!r}, found {len(names)}"
        )
    train = Split.concat([_read_batch(folder / f, layout) for f in layout.train_files])
    test = _read_batch(folder / layout.test_file, layout)
    return train, test, names


def write_cifar(root: Path, name: str, train: Split, test: Split, names: list[str]) -> Path:
    """Write splits in the official layout under ``root``; returns the pickle folder."""
    layout = CIFAR_LAYOUTS[name]
    folder = root / layout.folder
    folder.mkdir(parents=True, exist_ok=True)
    meta = {layout.names_key: list(names)}
    if layout.coarse_classes:
        meta["coarse_label_names"] = [f"superclass_{i:02d}" for i in range(layout.coarse_classes)]
    write_pickle(folder / layout.meta_file, meta)
    chunks = np.array_split(np.arange(len(train)), len(layout.train_files))
    for file_name, index in zip(layout.train_files, chunks, strict=True):
        _write_batch(folder / file_name, layout, train.images[index], train.labels[index])
    _write_batch(folder / layout.test_file, layout, test.images, test.labels)
    return folder


def _write_batch(path: Path, layout: CifarLayout, images: np.ndarray, labels: np.ndarray) -> None:
    entry = {
        "batch_label": path.name,
        "data": images.reshape(len(images), -1),
        layout.label_key: labels.tolist(),
        "filenames": [f"{path.name}_{i:06d}.png" for i in range(len(images))],
    }
    if layout.coarse_classes:
        entry["coarse_labels"] = (labels * layout.coarse_classes // layout.num_classes).tolist()
    write_pickle(path, entry)
