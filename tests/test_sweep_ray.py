"""Real Ray Tune sweeps (no mocks): a local sweep, a diverging trial, a killed driver, a lost node.

Sized for a shared 2-core machine: an MLP on a few hundred generated 32x32
images, one torch thread and one CPU per trial, at most 2 trials at a time.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from analysis.layout import read_experiment
from onlinenorm.cli import main
from onlinenorm.constants import METRICS
from sweeps.run import SPEC_FILE, resume_sweep, run_sweep
from sweeps.spec import load_spec

pytestmark = pytest.mark.slow

DIVERGING = {"norm": "none", "lr": 1.0e6}  # no normalizer and a huge step: the loss overflows in epoch 1
POLL_S = 0.05
WAIT_S = 240


def write_spec(folder: Path, name: str, grid: dict, *, epochs: int, images: int, extra_trials=()) -> Path:
    """A tiny sweep spec: MLP on synthetic CIFAR-10 generated on first use into ``folder/data``."""
    raw = {
        "name": name,
        "dataset": {"name": "cifar10", "data_dir": str(folder / "data"), "synthetic": {"train": images, "test": 100}},
        "model": "mlp",
        "train": {
            "epochs": epochs,
            "batch_size": 20,
            "lr": 0.02,
            "milestones": [],
            "ecm": "ac",
            "alpha_fwd": 0.99,
            "alpha_bkw": 0.9,
            "augment": False,
        },
        "grid": grid,
        "extra_trials": list(extra_trials),
        "resources": {"cpu": 1, "gpu": 0},
        "max_failures": 2,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@contextlib.contextmanager
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)  # never a leftover cluster
    try:
        yield
    finally:
        ray.shutdown()


def read_rows(path: Path) -> list[dict]:
    """result.json rows; a line still being written is skipped."""
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError):
            rows.append(json.loads(line))
    return rows


def read_params(path: Path) -> dict | None:
    """params.json's config, or None while Ray is still writing it (the file exists before its text)."""
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def trials_on_disk(experiment: Path) -> dict[str, tuple[dict, list[dict]]]:
    """Trial directory name -> (params.json config, result rows), for the trials whose params.json is whole.

    Tests poll this while a sweep runs, so a trial caught mid-creation is left out until the next poll;
    once the sweep has ended every trial's params.json is whole and the grid assertions see all of them.
    """
    trials = {}
    for params in sorted(experiment.glob("*/params.json")):
        config = read_params(params)
        if config is not None:
            trials[params.parent.name] = (config, read_rows(params.parent / "result.json"))
    return trials


def canonical(configs) -> list[str]:
    return sorted(json.dumps(config, sort_keys=True) for config in configs)


def wait_for(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")


# --- a local sweep with one trial forced to diverge ---------------------------------------------------


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("local-sweep")
    path = write_spec(
        folder, "local", {"clamp_value": [1, 3], "seed": [0, 1]}, epochs=2, images=200, extra_trials=[DIVERGING]
    )
    spec = load_spec(path)
    with local_ray():
        outcome = run_sweep(spec, storage=str(folder / "results"), verbose=0)
    return spec, outcome, Path(outcome.path)


def test_local_sweep_runs_every_trial_to_the_end(local_sweep):
    spec, outcome, experiment = local_sweep
    trials = trials_on_disk(experiment)
    assert canonical(config for config, _ in trials.values()) == canonical(spec.trials)
    for config, rows in trials.values():
        assert rows and all(row.keys() >= set(METRICS) for row in rows)
        if config["lr"] < DIVERGING["lr"]:
            assert [row["epoch"] for row in rows] == [1, 2]


def test_diverged_trial_is_recorded_while_the_others_finish(local_sweep, capsys):
    _, outcome, experiment = local_sweep
    assert outcome.counts == {"TERMINATED": 4, "DIVERGED": 1} and not outcome.failed
    diverged = [rows for config, rows in trials_on_disk(experiment).values() if config["lr"] == DIVERGING["lr"]]
    assert len(diverged) == 1 and diverged[0][-1]["diverged"] is True
    assert main(["sweep", "status", str(experiment)]) == 0
    assert capsys.readouterr().out.strip().endswith("5 trials: 4 TERMINATED, 1 DIVERGED")


def test_experiment_directory_holds_the_spec(local_sweep):
    spec, outcome, experiment = local_sweep
    assert load_spec(experiment / SPEC_FILE).trials == spec.trials
    assert outcome.summary().endswith(f"chart them with: onlinenorm report {experiment}")


def test_analysis_reads_the_real_sweep(local_sweep, tmp_path, capsys):
    """The analysis on what the sweep service really wrote: frames, states, and the report command."""
    import analysis

    spec, _, experiment = local_sweep
    results = analysis.load(experiment)
    assert results.warnings == []
    read = analysis.layout.read_experiment(experiment, "x")  # Ray's progress.csv holds result.json's rows
    assert [trial.rows_file for trial in read.trials] == ["progress.csv"] * 5
    trials = results.trials
    assert len(trials) == len(spec.trials) == 5
    assert sorted(trials["state"]) == ["diverged", "finished", "finished", "finished", "finished"]
    assert trials.loc[trials["state"] == "diverged", "norm"].tolist() == ["none"]
    clamping = trials[trials["norm"] == "online"]
    assert sorted(clamping["clamp_value"]) == [1, 1, 3, 3] and clamping["epochs_done"].eq(2).all()
    assert clamping["best_val_acc"].between(0, 1).all() and clamping["clamp_fraction_mean"].between(0, 1).all()
    assert len(results.epochs[results.epochs["trial_id"].isin(clamping["trial_id"])]) == 4 * 2
    assert not results.layers.empty and results.layers["depth"].min() == 0

    out = tmp_path / "report"
    assert main(["report", str(experiment), "--out", str(out)]) == 0
    assert (out / "report.html").stat().st_size > 0 and str(out / "report.html") in capsys.readouterr().out


# --- driver killed mid-sweep, then `sweep resume` -------------------------------------------------------


def kill_process_tree(pid: int) -> None:
    """SIGKILL a process and everything it started (the embedded Ray with it), as a crash or reboot would."""
    import psutil

    parent = psutil.Process(pid)
    family = [parent, *parent.children(recursive=True)]
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(family, timeout=30)


def completed_in_saved_state(experiment: Path) -> set[str]:
    """The directories of the trials Tune's saved state marks complete (TERMINATED): a resume must not run
    them again. A trial may have reported its last epoch, yet not be complete when the sweep stopped: the
    resume starts it again, from that epoch's checkpoint, so having every epoch on disk is not the test.
    Empty before the sweep has created ``experiment``."""
    if not experiment.is_dir():
        return set()
    trials = read_experiment(experiment, experiment.name).trials
    return {t.directory.name for t in trials if t.ray_status == "TERMINATED"}


def storage_quiet(experiment: Path, quiet_s: float = 0.3) -> bool:
    """No state or result file of ``experiment`` changed for ``quiet_s``. Ray copies the driver's logs and its
    experiment state into storage file by file; a driver killed in the middle of a copy can leave a state that
    names a checkpoint whose result rows were not copied yet (the rows since the previous copy are then
    lost, a limitation of Ray). Polling storage sees a copy as it happens, so the kill waits for it to end."""

    def snapshot() -> dict:
        files = {}
        for path in [*experiment.glob("experiment_state-*.json"), *experiment.glob("*/result.json")]:
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                files[path] = (stat.st_size, stat.st_mtime_ns)
        return files

    first = snapshot()
    time.sleep(quiet_s)
    return snapshot() == first


def start_sweep_driver(spec: Path, storage: Path) -> subprocess.Popen:
    """``onlinenorm sweep run SPEC --storage STORAGE`` as a process of its own (a driver to kill), output discarded."""
    return subprocess.Popen(
        [sys.executable, "-m", "onlinenorm.cli", "sweep", "run", str(spec), "--storage", str(storage)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_resume_after_the_driver_is_killed_runs_the_grid_exactly_once(tmp_path):
    epochs = 6
    path = write_spec(tmp_path, "killed", {"clamp_value": [1, 2, 3], "seed": [0, 1]}, epochs=epochs, images=400)
    experiment = tmp_path / "results" / "killed"
    driver = start_sweep_driver(path, tmp_path / "results")
    try:

        def some_done_some_midway():
            counts = [len(rows) for _, rows in trials_on_disk(experiment).values()]
            return completed_in_saved_state(experiment) and any(2 <= c < epochs for c in counts) and counts

        wait_for(some_done_some_midway, "a trial complete in Tune's saved state and one at least 2 epochs in")
        wait_for(lambda: storage_quiet(experiment), "a moment between two of Ray's copies into storage")
    finally:
        kill_process_tree(driver.pid)
    before = trials_on_disk(experiment)
    finished_before = completed_in_saved_state(experiment)

    with local_ray():
        outcome = resume_sweep(str(experiment))

    after = trials_on_disk(experiment)
    assert outcome.counts == {"TERMINATED": 6}
    assert canonical(config for config, _ in after.values()) == canonical(load_spec(path).trials)
    assert finished_before
    for name, (_, rows) in after.items():
        assert {row["epoch"] for row in rows} == set(range(1, epochs + 1)), name  # nothing lost
        reported = len(before.get(name, ({}, []))[1])
        if name in finished_before:
            assert rows == before[name][1], f"{name} finished before the kill and ran again"
        elif reported >= 2:  # Ray snapshots its state at least every CHECKPOINTS_KEPT checkpoints
            assert rows[reported]["epoch"] > 1, f"{name} restarted at epoch 1 instead of resuming from its checkpoint"


# --- a 2-node cluster losing its worker node ------------------------------------------------------------


def descendants(pid: int) -> set[int]:
    import psutil

    return {process.pid for process in psutil.Process(pid).children(recursive=True)}


def test_cluster_sweep_survives_losing_a_node(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    # An epoch of 1,000 images takes about half a second here: a trial caught at most half-way has
    # seconds left when its node goes, more than result.json lags behind the trial and remove_node takes.
    epochs = 10
    path = write_spec(tmp_path, "cluster", {"clamp_value": [1, 2], "seed": [0, 1]}, epochs=epochs, images=1000)
    health = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, "_system_config": health}
    )
    worker = cluster.add_node(num_cpus=1)
    experiment = tmp_path / "results" / "cluster"
    nodes_seen: dict[int, str] = {}  # trial pid -> node
    caught: list[str] = []  # trial directories half-way on the worker when it was removed

    def kill_worker_mid_trial():
        on_worker = descendants(worker.all_processes["raylet"][0].process.pid)
        on_head = descendants(cluster.head_node.all_processes["raylet"][0].process.pid)
        trials = trials_on_disk(experiment)
        for row in (row for _, rows in trials.values() for row in rows):
            if row["pid"] in on_worker | on_head:
                nodes_seen[row["pid"]] = "worker" if row["pid"] in on_worker else "head"
        if "head" not in nodes_seen.values():
            return None  # kill only once trials have run on both nodes
        caught.extend(
            name
            for name, (_, rows) in trials.items()
            if 2 <= len(rows) <= epochs // 2 and nodes_seen.get(rows[-1]["pid"]) == "worker"
        )
        if caught:
            cluster.remove_node(worker, allow_graceful=False)
        return caught

    try:
        ray.init(address=cluster.address)
        killer = threading.Thread(target=wait_for, args=(kill_worker_mid_trial, "a trial half-way on the worker"))
        killer.start()
        outcome = run_sweep(load_spec(path), storage=str(tmp_path / "results"), verbose=0)
        killer.join()
    finally:
        ray.shutdown()
        cluster.shutdown()

    assert caught, "the worker node was never removed"
    assert {"head", "worker"} <= set(nodes_seen.values())  # trials spread over both nodes
    assert outcome.counts == {"TERMINATED": 4}
    trials = trials_on_disk(experiment)
    for name, (_, rows) in trials.items():
        assert {row["epoch"] for row in rows} == set(range(1, epochs + 1)), name
        assert [row["epoch"] for row in rows] == sorted(row["epoch"] for row in rows), name
    moves = {  # trial -> its first row reported off the removed node
        name: next((row for row in trials[name][1] if nodes_seen.get(row["pid"]) != "worker"), None) for name in caught
    }
    assert any(moves.values()), f"no trial caught on the worker moved to the head: {caught}"
    for name, row in moves.items():
        if row is not None:
            assert row["epoch"] > 1, f"{name} restarted at epoch 1 instead of resuming from its checkpoint"


def test_ray_client_connection_is_tried_again_when_the_head_cannot_start_its_server(monkeypatch, capsys):
    """Ray Client's head starts a server per client, and under load that start fails now and then."""
    import ray

    from sweeps import run

    calls = []

    def init(address, **kwargs):
        calls.append(address)
        if calls.count(address) < 3:
            raise ConnectionAbortedError(
                "Initialization failure from server:\nRuntimeError: Starting Ray client server failed."
            )

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    run._connect("ray://head:10001", wait_s=0)
    assert calls == ["ray://head:10001", "shutdown", "ray://head:10001", "shutdown", "ray://head:10001"]
    err = capsys.readouterr().err
    assert err.count("connecting again") == 2 and "Starting Ray client server failed." in err

    calls.clear()
    with pytest.raises(ConnectionAbortedError):  # not Ray Client: no second try
        run._connect("10.0.0.1:6379", wait_s=0)
    assert calls == ["10.0.0.1:6379"]
    calls.clear()
    with pytest.raises(ConnectionAbortedError):  # the last failure is the user's error
        run._connect("ray://head:10001", attempts=2, wait_s=0)
    assert calls == ["ray://head:10001", "shutdown", "ray://head:10001"]
