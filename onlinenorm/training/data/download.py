"""Fetch and checksum-verify the official CIFAR archives (needs internet)."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetError

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str


ARCHIVES = {
    "cifar10": Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": Archive("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def download_archive(name: str, root: Path) -> None:
    """Download the archive for ``name``, verify its MD5 and extract it under ``root``.

    The archive is fetched and extracted in a temporary folder under ``root``
    and moved into place with a rename, so an interrupted or corrupted
    download never leaves a half-written dataset behind, and nodes that share
    ``root`` (a sweep prepares data on every node at once) never see each
    other's partial files.
    """
    archive = ARCHIVES[name]
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        path = Path(tmp) / Path(archive.url).name
        try:
            with urllib.request.urlopen(archive.url) as response, open(path, "wb") as f:
                shutil.copyfileobj(response, f, CHUNK_BYTES)
        except OSError as err:
            raise DatasetError(
                f"{archive.url}: download failed ({err}); fetch it by hand and extract it into {root}"
            ) from None
        found = md5sum(path)
        if found != archive.md5:
            raise DatasetError(
                f"{archive.url}: checksum mismatch (md5 {found}, expected {archive.md5}); download again"
            )
        staging = Path(tmp) / "extracted"
        with tarfile.open(path, "r:gz") as tar:
            tar.extractall(staging, filter="data")
        for entry in staging.iterdir():  # e.g. cifar-10-batches-py
            try:  # atomic on one filesystem: of nodes sharing ``root``, the first to finish wins
                entry.rename(root / entry.name)
            except OSError:
                if not (root / entry.name).is_dir():
                    raise
