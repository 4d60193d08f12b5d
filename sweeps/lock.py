"""One driver per experiment: an exclusive, crash-safe lock taken by ``sweep run`` and ``sweep resume``.

The lock is ``fcntl.flock`` on a file beside the experiment directory,
``STORAGE/.NAME.lock`` (beside, not inside, so a ``sweep run`` that loses the
race writes nothing into the experiment). The kernel releases a flock when
its holder exits, however it exits (SIGKILL included), so a lock never
outlives its driver and ``sweep resume`` after a crash just takes it. The
file itself stays, holding the pid of the last driver, for the message a
second driver prints.

Experiments on object storage (``s3://...``) cannot be flocked; their lock
file lives in this machine's per-user runtime folder instead, keyed by the
URI, so it guards against a second driver on the same machine only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from sweeps.runtime import runtime_dir


class ExperimentBusyError(RuntimeError):
    """Another driver holds the experiment's lock."""


def lock_path(experiment: str) -> Path:
    """The lock file of the experiment at ``experiment`` (an absolute local path or a URI)."""
    if "://" in experiment:
        digest = hashlib.sha256(experiment.rstrip("/").encode()).hexdigest()[:16]
        return runtime_dir() / "locks" / f"{digest}.lock"
    folder, name = os.path.split(experiment.rstrip("/"))
    return Path(folder) / f".{name}.lock"


@contextlib.contextmanager
def experiment_lock(experiment: str) -> Iterator[None]:
    """Hold the experiment's lock for the ``with`` block; raise :class:`ExperimentBusyError` if taken."""
    path = lock_path(experiment)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ExperimentBusyError(
                f"{experiment} is in use by another sweep driver (pid {holder}); wait for it to end"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
