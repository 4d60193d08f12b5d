"""Chaos: repeated, combined faults on a multi-node cluster, and nothing lost, nothing changed, nothing run twice.

A sweep of 8 small trials, checkpointing every epoch, runs on a
``ray.cluster_utils.Cluster`` (a head and two worker nodes, one CPU each)
while the test removes a random worker node every few seconds and adds a
fresh one, and the test SIGKILLs the driver (``onlinenorm sweep run
--address``) twice, each time followed by ``onlinenorm sweep resume``.

The schedule (intervals, which node, at what progress the driver dies) comes
from one seed, printed first; replay a failure with ONLINENORM_CHAOS_SEED=<seed>.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_sweep_leftovers import stop
from test_sweep_ray import POLL_S, kill_process_tree, trials_on_disk, write_spec

from sweeps.embedded import processes_of

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("ONLINENORM_CHAOS_SEED", "17"))
EPOCHS = 3
GRID = {"clamp_value": [1, 2, 3, 4], "seed": [0, 1]}
NODE_KILL_EVERY_S = (10.0, 20.0)  # uniform range between two worker-node kills
DRIVER_KILLS_AT = ((0.2, 0.35), (0.5, 0.65))  # fractions of all epochs reported when the driver dies
RUN_TIMEOUT_S = 480  # per driver; a few minutes on an idle 2-core machine
WORKERS = 2  # worker nodes besides the head, one CPU each
TIMING = {"samples_per_s"}  # the one metric that differs between identical runs


class Chaos:
    """Removes a random worker node every few seconds and adds a fresh one, never twice without an epoch
    reported in between (so the sweep progresses however slow the machine). Runs in the main thread: Ray's
    ``Cluster.add_node`` installs signal handlers."""

    def __init__(self, cluster, rng: random.Random, log) -> None:
        self.cluster, self.rng, self.log = cluster, rng, log
        self.next_kill = time.monotonic() + rng.uniform(*NODE_KILL_EVERY_S)
        self.kills = 0
        self.epochs_at_last_kill = 0

    def add_worker(self) -> None:
        """A fresh one-CPU worker node; a raylet that misses Ray's 30 s start deadline (a loaded machine) is
        logged, and the next tick tries again."""
        try:
            self.cluster.add_node(num_cpus=1)
        except Exception as err:
            self.log(f"a fresh worker node failed to start: {err}")

    def tick(self, epochs_reported: int) -> None:
        if len(self.cluster.worker_nodes) < WORKERS:
            self.add_worker()
        if (
            time.monotonic() < self.next_kill
            or epochs_reported <= self.epochs_at_last_kill
            or not self.cluster.worker_nodes
        ):
            return
        self.epochs_at_last_kill = epochs_reported
        victim = self.rng.choice(sorted(self.cluster.worker_nodes, key=lambda node: node.unique_id))
        self.log(f"remove the worker node of raylet pid {victim.all_processes['raylet'][0].process.pid}")
        self.cluster.remove_node(victim, allow_graceful=False)
        self.kills += 1
        self.next_kill = time.monotonic() + self.rng.uniform(*NODE_KILL_EVERY_S)


def reference_rows(config: dict) -> dict[int, dict]:
    """Epoch -> metric row of ``config`` trained uninterrupted in this process, timings left out."""
    from onlinenorm.training.train import run

    threads, rows = torch.get_num_threads(), {}
    try:
        run(config, lambda metrics, _: rows.update({metrics["epoch"]: metrics}))
    finally:
        torch.set_num_threads(threads)
    return {epoch: {k: v for k, v in row.items() if k not in TIMING} for epoch, row in rows.items()}


def epochs_reported(experiment: Path) -> int:
    return sum(len(rows) for _, rows in trials_on_disk(experiment).values())


def terminated(experiment: Path) -> dict[str, list[dict]]:
    """Trial directory -> rows, for the trials Ray's saved state calls TERMINATED."""
    from analysis.layout import read_experiment

    raw = read_experiment(experiment, experiment.name)
    done = {trial.directory.name for trial in raw.trials if trial.ray_status == "TERMINATED"}
    return {name: rows for name, (_, rows) in trials_on_disk(experiment).items() if name in done}


def test_sweep_survives_node_and_driver_kills(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    import analysis

    rng = random.Random(SEED)
    started = time.monotonic()
    schedule: list[str] = []

    def log(event: str) -> None:
        schedule.append(f"{time.monotonic() - started:6.1f}s {event}")
        print(schedule[-1], flush=True)

    kill_points = [rng.uniform(*bounds) for bounds in DRIVER_KILLS_AT]
    log(
        f"chaos seed {SEED} (replay: ONLINENORM_CHAOS_SEED={SEED}); driver dies at "
        + ", ".join(f"{point:.0%}" for point in kill_points)
        + " of all epochs"
    )
    spec = write_spec(tmp_path, "chaos", GRID, epochs=EPOCHS, images=60)
    # Every node kill costs the trials on that node a retry.
    spec.write_text(yaml.safe_dump(yaml.safe_load(spec.read_text()) | {"max_failures": 20}))
    experiment = tmp_path / "results" / "chaos"
    total_epochs = EPOCHS * len(GRID["clamp_value"]) * len(GRID["seed"])

    health = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, "_system_config": health}
    )
    ray._common.utils.reset_ray_address()  # Cluster advertises itself to every ray.init() on the machine
    finished_at_kill: list[dict[str, list[dict]]] = []
    drivers = []
    try:
        chaos = Chaos(cluster, rng, log)
        for _ in range(WORKERS):
            chaos.add_worker()
        for attempt in range(3):
            action = (
                ["run", str(spec), "--storage", str(tmp_path / "results")]
                if attempt == 0
                else ["resume", str(experiment)]
            )
            with open(tmp_path / f"driver-{attempt}.log", "w") as out:
                driver = subprocess.Popen(
                    [sys.executable, "-m", "onlinenorm.cli", "sweep", *action, "--address", cluster.address],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            drivers.append(driver)
            log(f"driver {attempt}: sweep {action[0]} (pid {driver.pid})")
            threshold = kill_points[attempt] * total_epochs if attempt < len(kill_points) else None
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while driver.poll() is None and time.monotonic() < deadline:
                progress = epochs_reported(experiment)
                if threshold is not None and progress >= threshold:
                    kill_process_tree(driver.pid)
                    finished_at_kill.append(terminated(experiment))
                    log(f"SIGKILL driver {attempt}; {len(finished_at_kill[-1])} trials finished")
                    break
                chaos.tick(progress)
                time.sleep(POLL_S)
            assert threshold is None or finished_at_kill[attempt:], (
                f"driver {attempt} ended ({driver.poll()}) before {threshold:.0f} epochs were reported"
            )
            if threshold is None:
                assert driver.poll() is not None, f"the last driver did not end within {RUN_TIMEOUT_S} s"
                log(f"driver {attempt} exited with {driver.returncode}")
    finally:
        for driver in drivers:
            if driver.poll() is None:
                kill_process_tree(driver.pid)
        session = cluster.head_node.get_session_dir_path()
        cluster.shutdown()
        stop(processes_of(session))  # processes of a node whose start timed out: Cluster does not know them
        print("\n".join(["fault schedule:", *schedule]))

    final_log = (tmp_path / "driver-2.log").read_text()
    assert drivers[-1].returncode == 0, final_log[-3000:]
    assert chaos.kills >= 2, "the chaos thread removed fewer than two nodes"

    results = analysis.load(experiment)
    assert results.warnings == []
    assert len(results.trials) == total_epochs // EPOCHS and results.trials["state"].eq("finished").all()
    for trial_id, epochs in results.epochs.groupby("trial_id"):
        assert epochs["epoch"].tolist() == list(range(1, EPOCHS + 1)), trial_id  # each epoch exactly once

    trials = trials_on_disk(experiment)
    for finished in finished_at_kill:
        for name, rows in finished.items():
            assert trials[name][1] == rows, f"{name} had finished before a driver kill and ran again"
    for name, (config, rows) in trials.items():
        reference = reference_rows(config)
        for row in rows:  # every row ever reported, re-reported epochs included
            expected = reference[row["epoch"]]
            assert {key: row[key] for key in expected} == expected, f"{name} epoch {row['epoch']} differs"
