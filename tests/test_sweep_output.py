"""What a sweep prints at each output level, on a real one-trial sweep (the quiet level's check on a sweep
of several rounds of trials, through the real command, is in test_sweep_lock.py)."""

from __future__ import annotations

import os

import pytest
from test_sweep_ray import local_ray, write_spec

from sweeps.progress import QUIET, QUIET_ENVIRONMENT, SILENT, VERBOSE
from sweeps.run import run_sweep
from sweeps.spec import load_spec

pytestmark = pytest.mark.slow


def test_each_output_level(tmp_path, capfd):
    spec = write_spec(tmp_path, "levels", {"clamp_value": [1]}, epochs=1, images=40)
    printed = {}
    with local_ray():
        for level in (SILENT, QUIET, VERBOSE):
            outcome = run_sweep(
                load_spec(spec, name=f"levels-{level}"), storage=str(tmp_path / "results"), verbose=level
            )
            assert outcome.counts == {"TERMINATED": 1}
            printed[level] = capfd.readouterr().out
    assert not set(QUIET_ENVIRONMENT) & set(os.environ)  # the quiet levels' settings end with the sweep

    assert "Trial name" not in printed[SILENT] and "started" not in printed[SILENT]

    quiet = printed[QUIET]
    assert "╭" not in quiet
    assert quiet.count("trial ") == 2 and " started\n" in quiet and " finished 1 epochs, val_acc " in quiet
    headers = [line for line in quiet.splitlines() if "Trial name" in line]  # no swept key: no parameter column
    assert headers and "status" in headers[-1] and "val_acc" in headers[-1]

    verbose = printed[VERBOSE]
    assert "started with configuration" in verbose and "╭" in verbose  # Ray Tune's boxes
    assert "alpha_bkw" in verbose  # the whole configuration, not only the swept keys
    assert " started\n" not in verbose
