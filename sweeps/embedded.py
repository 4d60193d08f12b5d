"""The embedded Ray of a sweep without ``--address``, and the reaping of one whose driver died.

An embedded instance is started explicitly (``ray.init(address="local")``), so
a sweep without ``--address`` never lands on a cluster someone started with
``ray start`` on the same machine.

Ray's processes outlive a driver killed by SIGKILL (``ray::DashboardAgent`` and
``ray::RuntimeEnvAgent`` at least, adopted by init). Every process of an
instance keeps its logs open in the instance's session folder
(``/tmp/ray/session_<date>_<pid>/logs``), whatever Ray renamed it to; so the
driver records its instance in a file of its own,
``<runtime dir>/embedded/<driver pid>.json``: the driver's pid and start time
(a reused pid is not the same driver) and the session folder. Before each
``sweep run`` or ``sweep resume``, records whose driver is dead are reaped: the
processes with a file open in that session folder are stopped (SIGTERM, then
SIGKILL), then the record is removed. A Ray this service did not start has no
record and is never touched, nor is the instance of a driver still running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

from sweeps.runtime import runtime_dir

STOP_GRACE_S = 2.0  # SIGTERM, then SIGKILL for what is left after this long


def _records() -> Path:
    folder = runtime_dir() / "embedded"
    folder.mkdir(exist_ok=True)
    return folder


def _started(pid: int) -> float | None:
    """The start time of process ``pid``, or None when there is none."""
    import psutil

    try:
        return round(psutil.Process(pid).create_time(), 3)
    except psutil.Error:
        return None


def start_embedded(**init_args) -> None:
    """``ray.init(address="local", **init_args)``, then record the instance as this driver's."""
    import ray

    ray.init(address="local", **init_args)
    session = ray._private.worker._global_node.get_session_dir_path()  # no public accessor in Ray 2.x
    pid = os.getpid()
    record = {"driver_pid": pid, "driver_started": _started(pid), "session_dir": session}
    (_records() / f"{pid}.json").write_text(json.dumps(record))


def forget_embedded() -> None:
    """Drop this driver's record once its instance has been shut down."""
    (_records() / f"{os.getpid()}.json").unlink(missing_ok=True)


def processes_of(session_dir: str) -> list:
    """This user's processes that hold a file open under ``session_dir`` (a Ray session or temp folder)."""
    import psutil

    prefix = session_dir.rstrip("/") + "/"
    uid, found = os.getuid(), []
    for process in psutil.process_iter(["uids"]):
        with contextlib.suppress(psutil.Error):
            if (
                process.info["uids"].real == uid
                and process.pid != os.getpid()
                and any(f.path.startswith(prefix) for f in process.open_files())
            ):
                found.append(process)
    return found


def _stop(processes: list) -> None:
    import psutil

    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=STOP_GRACE_S)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(alive, timeout=STOP_GRACE_S)


def reap_orphans() -> int:
    """Stop what is left of embedded instances whose driver is dead; returns how many processes that was."""
    stopped = 0
    for path in sorted(_records().glob("*.json")):
        try:
            record = json.loads(path.read_text())
            driver_alive = _started(record["driver_pid"]) == record["driver_started"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # another driver is writing or removing it
        if driver_alive:
            continue
        processes = processes_of(record["session_dir"])
        _stop(processes)
        stopped += len(processes)
        path.unlink(missing_ok=True)
    return stopped
