"""Experiments on object storage (``s3://``, ``gs://``, ...), read through pyarrow's filesystems.

The readers in :mod:`analysis.layout` work on a folder. For a storage URI the
files they read (``experiment_state-*.json``, ``spec.yaml`` and each trial's
``params.json``, ``result.json``, ``error.txt``/``error.pkl``; never the
checkpoints) are copied, after one recursive listing, into a private
temporary folder laid out like the experiment, and read from there. Nothing
is written to the storage.

The URI is resolved by ``pyarrow.fs.FileSystem.from_uri``, as Ray Tune resolves
its ``storage_path``: an S3-compatible server (MinIO, Ceph) is reached with
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) in the environment, or with
the endpoint in the URI: ``s3://bucket/sweeps/quick?endpoint_override=http://host:9000``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import tempfile
from collections.abc import Iterator
from pathlib import Path

from analysis.layout import ERROR_FILES, EXPERIMENT_STATE_GLOB, SPEC_FILE

TRIAL_FILES = ("params.json", "result.json", *ERROR_FILES)
COPY_CHUNK_BYTES = 1 << 20


def is_uri(path: object) -> bool:
    """``s3://...``, ``gs://...``, ``file://...``: anything pyarrow resolves as a URI, not a local path."""
    return "://" in str(path)


def uri_name(uri: str) -> str:
    """The last path segment of a URI, its query left out: the experiment's (or storage root's) name."""
    return uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _in_checkpoint(relative: str) -> bool:
    return "/checkpoint_" in f"/{relative}"


def _read_by_analysis(relative: str) -> bool:
    """Whether the analysis reads the file at ``relative`` (a path under the copied root)."""
    name = relative.rsplit("/", 1)[-1]
    return (
        name == SPEC_FILE
        or fnmatch.fnmatch(name, EXPERIMENT_STATE_GLOB)
        or (name in TRIAL_FILES and not _in_checkpoint(relative))
    )


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A temporary local folder named like ``uri``'s last segment, holding the files of the experiment
    (or storage root holding several) at ``uri`` that the analysis reads; deleted on exit.

    Raises:
        FileNotFoundError: nothing is stored at ``uri``.
        ValueError: ``uri`` names no filesystem pyarrow knows, or lacks a bucket.
    """
    import pyarrow.fs

    filesystem, root = pyarrow.fs.FileSystem.from_uri(uri)
    root = root.rstrip("/")
    if filesystem.get_file_info(root).type != pyarrow.fs.FileType.Directory:
        raise FileNotFoundError(f"{uri}: no such experiment directory in the storage")
    listing = filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
    with tempfile.TemporaryDirectory(prefix="onlinenorm-storage-") as folder:
        local = Path(folder) / uri_name(uri)
        local.mkdir()
        for info in listing:
            relative = info.path[len(root) :].lstrip("/")
            if info.type == pyarrow.fs.FileType.Directory and not _in_checkpoint(relative):
                (local / relative).mkdir(parents=True, exist_ok=True)
            elif info.type == pyarrow.fs.FileType.File and _read_by_analysis(relative):
                target = local / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with filesystem.open_input_stream(info.path) as source, target.open("wb") as sink:
                    while chunk := source.read(COPY_CHUNK_BYTES):
                        sink.write(chunk)
        yield local
