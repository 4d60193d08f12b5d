"""No leftovers: `sweep resume` stops what a killed driver's embedded Ray left running, and nothing else.

A user's own `ray start` cluster runs on the same machine (in its own temp
folder) and must come through untouched, and unused: an embedded sweep never
attaches to it. The resume's output is checked too: no metrics-fetch noise
for pending trials, and the swept keys in its status table.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from test_sweep_ray import start_sweep_driver, trials_on_disk, wait_for, write_spec

from sweeps.embedded import processes_of

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(processes) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(processes, timeout=30)


@pytest.fixture
def user_cluster():
    """A `ray start --head` cluster in its own short temp folder; stopped by its own processes, never `ray stop`."""
    temp = tempfile.mkdtemp(prefix="ray-user-", dir="/tmp")  # Ray's socket paths must stay short
    try:
        subprocess.run(
            [
                RAY,
                "start",
                "--head",
                f"--temp-dir={temp}",
                f"--port={free_port()}",
                "--num-cpus=1",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ],
            check=True,
            timeout=120,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes = wait_for(lambda: processes_of(temp), "the user's cluster processes")
        yield Path(temp), processes
    finally:
        stop(processes_of(temp))
        shutil.rmtree(temp, ignore_errors=True)


def alive(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    return False


def test_resume_reaps_the_killed_drivers_ray_and_spares_the_users(tmp_path, user_cluster):
    user_temp, user_processes = user_cluster
    epochs = 3
    spec = write_spec(tmp_path, "orphaned", {"clamp_value": [1, 2, 3]}, epochs=epochs, images=200)
    experiment = tmp_path / "results" / "orphaned"
    driver = start_sweep_driver(spec, tmp_path / "results")
    try:
        wait_for(lambda: any(rows for _, rows in trials_on_disk(experiment).values()), "a trial's first epoch")
        embedded = psutil.Process(driver.pid).children(recursive=True)
    finally:
        driver.send_signal(signal.SIGKILL)  # the driver alone, as a crash would
        driver.wait()
    try:
        time.sleep(2)
        assert any(alive(p) for p in embedded), "expected Ray processes to outlive their killed driver"

        resumed = subprocess.run(
            [sys.executable, "-m", "onlinenorm.cli", "sweep", "resume", str(experiment)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        stop(embedded)  # only if the resume failed to
    print(resumed.stdout, resumed.stderr)
    assert resumed.returncode == 0
    assert not [p.name() for p in embedded if alive(p)], "processes of the dead driver's Ray remain"
    assert all(alive(p) for p in user_processes), "the user's own Ray cluster was stopped"
    assert not list(user_temp.glob("session_*/logs/python-core-driver-*")), "a sweep attached to the user's cluster"

    output = resumed.stdout + resumed.stderr
    assert "processes of the local Ray of a sweep driver that was killed" in resumed.stdout
    assert "Failed to fetch metrics" not in output and "FileNotFoundError" not in output
    table_header = next(line for line in resumed.stdout.splitlines() if "Trial name" in line)
    assert "clamp_value" in table_header and "status" in table_header
    assert resumed.stdout.splitlines()[-1].startswith("sweep orphaned: 3 trials: 3 TERMINATED")
    for _, rows in trials_on_disk(experiment).values():
        assert {row["epoch"] for row in rows} == set(range(1, epochs + 1))
