"""One driver per experiment: the lock itself, and two real `sweep run` with the same name at once.

The second test is also the check of what a user reads: the winner's whole
output for a sweep of several rounds of trials (6 trials, two at a time) is a
status table, one line per trial event and the outcome.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sweep_ray import write_spec

from sweeps.lock import ExperimentBusyError, experiment_lock, lock_path

TABLE_HEADER = (
    "== Status ==",
    "Current time:",
    "Using FIFO",
    "Logical resource usage:",
    "Result logdir:",
    "Number of trials:",
)
HOLD = """
import sys, time
from sweeps.lock import experiment_lock
with experiment_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    experiment = str(tmp_path / "results" / "exp")
    with subprocess.Popen([sys.executable, "-c", HOLD, experiment], stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout.readline().strip() == "held"
            busy = f"in use by another sweep driver \\(pid {holder.pid}\\)"
            with pytest.raises(ExperimentBusyError, match=busy), experiment_lock(experiment):
                pass
            assert not Path(experiment).exists()  # beside the experiment, not inside it
        finally:
            holder.send_signal(signal.SIGKILL)
    with experiment_lock(experiment):  # the kernel released it with the killed holder
        assert lock_path(experiment).read_text() == str(os.getpid())


def test_object_storage_experiments_lock_in_the_runtime_folder():
    path = lock_path("s3://bucket/sweeps/exp")
    assert path.suffix == ".lock" and "s3:" not in str(path)
    assert lock_path("s3://bucket/sweeps/exp/") == path != lock_path("s3://bucket/sweeps/other")


@pytest.mark.slow
def test_two_sweep_runs_with_one_name_at_once(tmp_path):
    """Exactly one runs (exit 0), the other exits 2 with one line; the experiment is whole; the output is short."""
    import analysis

    trials, epochs = 6, 1  # three rounds of two one-CPU trials: some pending, some running, some done
    spec = write_spec(tmp_path, "twice", {"clamp_value": [1, 3, 13], "seed": [0, 1]}, epochs=epochs, images=60)
    command = [
        sys.executable,
        "-m",
        "onlinenorm.cli",
        "sweep",
        "run",
        str(spec),
        "--storage",
        str(tmp_path / "results"),
    ]
    environment = os.environ | {"OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    drivers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
        for _ in range(2)
    ]
    ended = sorted((d.wait(timeout=600), *d.communicate()) for d in drivers)  # (exit code, stdout, stderr)
    minutes = (time.monotonic() - started) / 60
    assert [code for code, _, _ in ended] == [0, 2], [(code, out[-2000:], err[-2000:]) for code, out, err in ended]
    (_, out, _), (_, lost_out, lost_err) = ended
    assert len(lost_err.strip().splitlines()) == 1 and "in use by another sweep driver" in lost_err, lost_err
    assert lost_out == ""

    experiment = tmp_path / "results" / "twice"
    results = analysis.load(experiment)
    assert results.warnings == [] and len(results.trials) == trials
    assert results.trials["state"].eq("finished").all() and results.trials["epochs_done"].eq(epochs).all()

    lines = out.splitlines()
    print(out)
    tables = out.count("== Status ==")  # Ray Tune's status table: at the start, every minute, at the end
    assert 2 <= tables <= 2 + minutes, f"{tables} status tables in {minutes:.1f} minutes"
    others = [line for line in lines if line.strip() and not line.startswith(("|", "+", *TABLE_HEADER))]
    assert len(others) <= 2 * trials + 2, others  # data ready, a start and an end per trial, the summary
    assert "╭" not in out and "started with configuration" not in out  # Ray's per-trial boxes
    assert sum(" started (" in line for line in lines) == trials
    assert sum(f" finished {epochs} epochs" in line for line in lines) == trials
    assert "clamp_value=13.0 seed=1" in out
    header = [line for line in lines if "Trial name" in line][-1]
    assert "clamp_value" in header and "seed" in header and "val_acc" in header
    assert lines[-1].startswith(f"sweep twice: {trials} trials: {trials} TERMINATED")
