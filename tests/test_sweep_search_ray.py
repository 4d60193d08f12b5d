"""Sampled and Bayesian sweeps on a real embedded Ray, logged to real trackers.

A random search and an Optuna search over the clamp value and both decay
factors, each point run at two seeds, MLflow (an SQLite store, and a real
``mlflow server`` on loopback) and W&B (offline run files) switched on from the
spec; Ray Tune's TensorBoard event files; each search stopped with Ctrl-C and
resumed (the Optuna one with its trackers on). One embedded Ray serves the module.
Sized like ``test_sweep_ray``: an MLP on a few hundred generated images.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from ray import tune
from test_sweep_ray import canonical, completed_in_saved_state, kill_process_tree, trials_on_disk, wait_for

from onlinenorm.cli import main
from sweeps.run import resume_sweep, run_sweep
from sweeps.spec import load_spec
from sweeps.status import experiment_counts

pytestmark = pytest.mark.slow

EPOCHS = 2
SPACE = {
    "clamp_value": {"loguniform": [0.5, 8]},
    "alpha_fwd": {"decay": [0.99, 0.9999]},
    "alpha_bkw": {"decay": [0.9, 0.999]},
}
SAMPLED = ("clamp_value", "alpha_fwd", "alpha_bkw")
WANDB = {"project": "clamp-study", "mode": "offline"}
WANDB_HEADER, WANDB_BLOCK = 7, 32768


def write_spec(
    folder: Path, name: str, search: dict, *, tracking: dict, epochs: int = EPOCHS, images: int = 200, **extra
) -> Path:
    """A tiny sampled sweep: MLP on synthetic CIFAR-10 generated on first use, each point at seeds 0 and 1."""
    raw = {
        "name": name,
        "dataset": {"name": "cifar10", "data_dir": str(folder / "data"), "synthetic": {"train": images, "test": 100}},
        "model": "mlp",
        "train": {"epochs": epochs, "batch_size": 20, "lr": 0.02, "milestones": [], "augment": False, "ecm": "ac"},
        "search": search,
        "space": SPACE,
        "grid": {"seed": [0, 1]},
        "tracking": tracking,
        "resources": {"cpu": 1, "gpu": 0},
        **extra,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One fresh embedded Ray for the module (``address="local"``: never a cluster left by ``ray start``).

    W&B keeps its settings and cache in a temporary folder; the variables are set before Ray starts, so
    its workers inherit them. ``WANDB_MODE`` is cleared: the spec's ``mode: offline`` must take effect.
    """
    import ray

    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as patch:
        for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            patch.setenv(variable, str(home))
        patch.setenv("WANDB_SILENT", "true")
        patch.delenv("WANDB_MODE", raising=False)
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
        try:
            yield
        finally:
            ray.shutdown()


@contextlib.contextmanager
def mlflow_server(folder: Path):
    """A real ``mlflow server`` on a free loopback port with an SQLite store; yields its URI."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'server.db'}",
            "--default-artifact-root",
            str(folder / "art"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "server.log").open("w"),
    )

    def healthy():
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{uri}/health", timeout=1) as response:
            return response.status == 200
        assert server.poll() is None, (folder / "server.log").read_text()[-2000:]
        return False

    try:
        wait_for(healthy, "mlflow server to answer /health")
        yield uri
    finally:
        kill_process_tree(server.pid)


def run_sampled(folder: Path, name: str, search: dict, tracking: dict, **extra):
    spec = load_spec(write_spec(folder, name, search, tracking=tracking, **extra))
    return spec, run_sweep(spec, storage=str(folder / "results"), verbose=0)


@pytest.fixture(scope="module")
def random_sweep(local_ray, tmp_path_factory):
    folder = tmp_path_factory.mktemp("random-search")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    spec, outcome = run_sampled(
        folder,
        "random-clamp",
        {"type": "random", "num_samples": 2, "seed": 0},
        {"mlflow": {"tracking_uri": store}, "wandb": WANDB},
    )
    return spec, outcome, store


@pytest.fixture(scope="module")
def optuna_sweep(local_ray, tmp_path_factory):
    folder = tmp_path_factory.mktemp("optuna-search")
    with mlflow_server(folder) as uri:
        spec, outcome = run_sampled(
            folder,
            "optuna-clamp",
            {"type": "optuna", "num_samples": 2, "seed": 0, "metric": "val_acc"},
            {"mlflow": {"tracking_uri": uri}, "wandb": WANDB},
            scheduler={"type": "asha", "metric": "val_acc", "grace_period": 1},
        )
        yield spec, outcome, uri


def configs(outcome) -> list[dict]:
    return [result.config for result in outcome.results]


def point(config: dict) -> tuple:
    return tuple(config[key] for key in SAMPLED)


def mlflow_runs(uri: str, experiment: str):
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(experiment_names=[experiment]), mlflow.MlflowClient(uri)
    finally:
        mlflow.set_tracking_uri(None)


def check_mlflow(uri: str, outcome) -> None:
    """One MLflow run per trial, its config as params and every epoch's val_acc as a history."""
    runs, client = mlflow_runs(uri, outcome.name)
    assert len(runs) == len(outcome.results)
    by_point = {(float(run["params.clamp_value"]), int(run["params.seed"])): run for _, run in runs.iterrows()}
    for result in outcome.results:
        run = by_point[(result.config["clamp_value"], result.config["seed"])]
        assert float(run["params.alpha_fwd"]) == result.config["alpha_fwd"]
        assert run["params.model"] == "mlp" and run["status"] == "FINISHED"
        history = client.get_metric_history(run["run_id"], "val_acc")
        rows = result.metrics_dataframe
        assert [m.step for m in history] == list(rows["training_iteration"]) == list(rows["epoch"])
        assert [m.value for m in history] == pytest.approx(list(rows["val_acc"]))


def wandb_run_files(trial_dir: Path) -> list[Path]:
    """The offline W&B run files in ``trial_dir``, oldest first."""
    return sorted(trial_dir.glob("wandb/offline-run-*/run-*.wandb"))


def wandb_records(run_file: Path) -> list:
    """The records of an offline W&B run file, as W&B's own ``Record`` protobufs.

    A ``.wandb`` file is a LevelDB-style log: a 7-byte ``:W&B`` header, then 32 KiB blocks of chunks,
    each with a 7-byte header (crc32, length, type: 1 whole record, 2 first, 3 middle, 4 last part);
    a block's tail shorter than a header is zero padding. (W&B ships no Python reader for it.)
    """
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    position, record, records = WANDB_HEADER, b"", []
    while position + WANDB_HEADER <= len(data):
        left_in_block = WANDB_BLOCK - position % WANDB_BLOCK
        _, length, kind = struct.unpack("<IHB", data[position : position + WANDB_HEADER])
        if left_in_block < WANDB_HEADER or kind == 0:
            position += left_in_block
            continue
        record += data[position + WANDB_HEADER : position + WANDB_HEADER + length]
        position += WANDB_HEADER + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(record))
            record = b""
    return records


def check_wandb(outcome, group: str) -> None:
    """Every trial, the last included, has its offline W&B run in the sweep's group, with the trial's
    config and the per-epoch history of its metrics."""
    assert len(outcome.results) == 4
    for result in outcome.results:
        (run_file,) = wandb_run_files(Path(result.path))
        records = wandb_records(run_file)
        (run,) = [r.run for r in records if r.HasField("run")]
        assert run.project == WANDB["project"] and run.run_group == group and run.run_id == result.metrics["trial_id"]
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert {key: config[key] for key in result.config} == json.loads(json.dumps(result.config))
        history = [
            {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in records
            if r.HasField("history")
        ]
        history = [row for row in history if "epoch" in row]  # W&B's own rows (runtime) left out
        rows = result.metrics_dataframe
        assert len(rows) >= 1
        assert [row["epoch"] for row in history] == list(rows["epoch"])
        for metric in ("val_acc", "clamp_fraction"):
            assert [row[metric] for row in history] == pytest.approx(list(rows[metric])), metric
        assert any(r.HasField("exit") for r in records), "the run was not finished"


# --- random search ----------------------------------------------------------------------------------------


def test_random_search_runs_the_sampled_points_at_every_seed(random_sweep):
    spec, outcome, _ = random_sweep
    assert outcome.counts == {"TERMINATED": 4} and len(outcome.results) == 4
    assert canonical({k: c[k] for k in spec.trials[0]} for c in configs(outcome)) == canonical(spec.trials)
    points = {point(c) for c in configs(outcome)}
    assert len(points) == 2
    assert all(sorted(c["seed"] for c in configs(outcome) if point(c) == p) == [0, 1] for p in points)


def test_run_sweep_returns_rays_result_grid(random_sweep):
    _, outcome, _ = random_sweep
    assert isinstance(outcome.results, tune.ResultGrid)
    best = outcome.results.get_best_result(metric="val_acc", mode="max")
    assert best.metrics["val_acc"] == max(r.metrics["val_acc"] for r in outcome.results)
    again = tune.ExperimentAnalysis(outcome.path)  # the same experiment read back by Ray from its files
    assert sorted(c["clamp_value"] for c in again.get_all_configs().values()) == sorted(
        c["clamp_value"] for c in configs(outcome)
    )


def test_tensorboard_event_files_hold_the_epoch_metrics(random_sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, outcome, _ = random_sweep
    for result in outcome.results:
        events = EventAccumulator(result.path)
        events.Reload()
        rows = result.metrics_dataframe
        for metric in ("val_acc", "clamp_fraction"):
            scalars = events.Scalars(f"ray/tune/{metric}")
            assert [s.step for s in scalars] == list(rows["training_iteration"])
            assert [s.value for s in scalars] == pytest.approx(list(rows[metric]), rel=1e-6)


def test_analysis_loads_a_sampled_experiment(random_sweep):
    import analysis

    spec, outcome, _ = random_sweep
    results = analysis.load(outcome.path)
    assert results.warnings == []
    trials = results.trials
    assert len(trials) == 4 and (trials["state"] == "finished").all()
    assert sorted(trials["clamp_value"]) == sorted(t["clamp_value"] for t in spec.trials)
    assert len(results.epochs) == 4 * EPOCHS
    assert len(analysis.tables.setting_medians(trials)) == 2  # two sampled settings, two seeds each
    assert len(analysis.tables.best_settings(trials)) == 2
    assert analysis.tables.comparison(trials)["runs"].tolist() == [2]


# --- optuna search ----------------------------------------------------------------------------------------


def test_optuna_runs_each_suggested_point_at_every_seed(optuna_sweep):
    spec, outcome, _ = optuna_sweep
    assert sum(outcome.counts.values()) == 4 and outcome.counts.get("TERMINATED") == 4
    points = {point(c) for c in configs(outcome)}
    assert len(points) == 2
    for p in points:
        assert sorted(c["seed"] for c in configs(outcome) if point(c) == p) == [0, 1]
        clamp_value, alpha_fwd, alpha_bkw = p
        assert 0.5 <= clamp_value <= 8 and 0.99 <= alpha_fwd <= 0.9999 and 0.9 <= alpha_bkw <= 0.999
    template = {k: v for k, v in spec.trials[0].items() if k not in (*SAMPLED, "seed")}
    assert all({k: c[k] for k in template} == template for c in configs(outcome))


def test_optuna_is_told_the_mean_over_seeds(optuna_sweep):
    """The searcher state Ray saved: one Optuna trial per point, valued at the mean last val_acc of its seeds."""
    _, outcome, _ = optuna_sweep
    (state,) = Path(outcome.path).glob("searcher-state-*.pkl")
    study = pickle.loads(state.read_bytes())["_ot_study"]
    told = {t.params["clamp_value"]: t.value for t in study.trials}
    assert len(told) == 2
    for clamp_value, value in told.items():
        last = [r.metrics["val_acc"] for r in outcome.results if r.config["clamp_value"] == clamp_value]
        assert len(last) == 2 and value == pytest.approx(np.mean(last))


# --- both searches' trackers: the random one logs to an MLflow SQLite store, the Optuna one to a real
# MLflow server; both write offline W&B runs grouped under the sweep's name ------------------------------

SEARCHES = ["random_sweep", "optuna_sweep"]


@pytest.mark.parametrize("sweep", SEARCHES)
def test_search_logs_every_trial_to_mlflow(sweep, request):
    _, outcome, tracking_uri = request.getfixturevalue(sweep)
    check_mlflow(tracking_uri, outcome)


@pytest.mark.parametrize("sweep", SEARCHES)
def test_search_writes_offline_wandb_runs(sweep, request):
    spec, outcome, _ = request.getfixturevalue(sweep)
    check_wandb(outcome, group=spec.name)


# --- an interrupted random search, resumed --------------------------------------------------------------


class InterruptAtFirstCompletion(tune.Callback):
    """Presses Ctrl-C (SIGINT to the driver) once, when the first trial completes.

    Tune saves its callbacks with the experiment and restores them on resume: the class-level flag
    keeps the restored copy from interrupting the resumed sweep.
    """

    fired = False

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not InterruptAtFirstCompletion.fired:
            InterruptAtFirstCompletion.fired = True
            os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupted_random_search_resumes_its_own_points(local_ray, tmp_path):
    path = write_spec(tmp_path, "stopped-random", {"type": "random", "num_samples": 2, "seed": 5}, tracking={})
    spec = load_spec(path)
    stopped = run_sweep(spec, storage=str(tmp_path / "results"), verbose=0, callbacks=[InterruptAtFirstCompletion()])
    saved = experiment_counts(stopped.path)  # the states Tune saved when interrupted
    assert saved["TERMINATED"] >= 1 and sum(saved.values()) - saved["TERMINATED"] >= 1, saved
    before = trials_on_disk(Path(stopped.path))
    finished_before = completed_in_saved_state(Path(stopped.path))

    outcome = resume_sweep(stopped.path)

    after = trials_on_disk(Path(stopped.path))
    assert outcome.counts == {"TERMINATED": 4}
    assert canonical(config for config, _ in after.values()) == canonical(spec.trials)  # the same 4, once each
    assert finished_before
    for name, (_, rows) in after.items():
        assert {row["epoch"] for row in rows} == set(range(1, EPOCHS + 1)), name
        if name in finished_before:
            assert rows == before[name][1], f"{name} finished before the interruption and ran again"


# --- an interrupted Optuna search, resumed with `onlinenorm sweep resume`, trackers on ---------------------
# TPE suggests two points, each run at seeds 0 and 1 for two epochs; Ctrl-C comes when the first trial completes.

STOPPED_OPTUNA = "stopped-optuna"


def studies(experiment: Path) -> list:
    """The Optuna study in each searcher state Ray saved (one per session), oldest first."""
    return [pickle.loads(path.read_bytes())["_ot_study"] for path in sorted(experiment.glob("searcher-state-*.pkl"))]


def mlflow_by_trial(store: str) -> dict:
    """Trial name -> (status, [(step, val_acc)]) of every MLflow run of the sweep."""
    runs, client = mlflow_runs(store, STOPPED_OPTUNA)
    names = list(runs["tags.trial_name"])
    assert len(names) == len(set(names)), f"more than one MLflow run for a trial: {sorted(names)}"
    return {
        run["tags.trial_name"]: (
            run["status"],
            [(m.step, m.value) for m in client.get_metric_history(run["run_id"], "val_acc")],
        )
        for _, run in runs.iterrows()
    }


def trial_name(folder: str) -> str:
    """``train_trial_<id>`` (Ray's trial name, MLflow's ``trial_name`` tag) of a trial folder's name."""
    return "_".join(folder.split("_")[:3])


def test_a_stopped_optuna_search_resumes_its_study_with_one_tracker_run_per_trial(local_ray, tmp_path, monkeypatch):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    search = {"type": "optuna", "num_samples": 2, "seed": 0, "metric": "val_acc"}
    path = write_spec(tmp_path, STOPPED_OPTUNA, search, tracking={"mlflow": {"tracking_uri": store}, "wandb": WANDB})
    monkeypatch.setattr(InterruptAtFirstCompletion, "fired", False)  # armed here, as it was after
    stopped = run_sweep(
        load_spec(path), storage=str(tmp_path / "results"), verbose=0, callbacks=[InterruptAtFirstCompletion()]
    )
    experiment = Path(stopped.path)
    saved = experiment_counts(stopped.path)
    assert saved["TERMINATED"] >= 1 and sum(saved.values()) - saved["TERMINATED"] >= 1, saved
    before = trials_on_disk(experiment)
    finished_before = completed_in_saved_state(experiment)
    runs_before = mlflow_by_trial(store)
    for name in before:
        status = runs_before.get(trial_name(name), ("none",))[0]
        assert status in (("FINISHED",) if name in finished_before else ("KILLED", "none")), (name, status)
    wandb_before = {name: len(wandb_run_files(experiment / name)) for name in before}

    assert main(["sweep", "resume", stopped.path]) == 0

    after = trials_on_disk(experiment)
    assert len(after) == 4
    configs = [config for config, _ in after.values()]
    points = {point(config) for config in configs}
    assert len(points) == 2
    assert all(sorted(c["seed"] for c in configs if point(c) == p) == [0, 1] for p in points)

    # The study went on where it stopped: the points suggested before the stop, then the rest; none twice.
    first, last = studies(experiment)
    assert len(last.trials) == 2 and [t.state.name for t in last.trials] == ["COMPLETE", "COMPLETE"]
    assert [t.params for t in first.trials] == [t.params for t in last.trials][: len(first.trials)]
    for told in last.trials:
        finals = [rows[-1]["val_acc"] for c, rows in after.values() if c["clamp_value"] == told.params["clamp_value"]]
        assert len(finals) == 2 and told.value == pytest.approx(np.mean(finals))

    runs = mlflow_by_trial(store)
    assert sorted(runs) == sorted(trial_name(name) for name in after)
    for name, (_, rows) in after.items():
        status, history = runs[trial_name(name)]
        assert status == "FINISHED"
        assert {row["epoch"] for row in rows} == set(range(1, EPOCHS + 1)), name
        last_values = {row["training_iteration"]: row["val_acc"] for row in rows}
        assert dict(history) == pytest.approx(last_values), name  # every epoch, the latest value of each
        if name in finished_before:  # not one that had reported its last epoch but not completed (see above)
            assert rows == before[name][1], f"{name} had finished before the stop and ran again"
            assert history == runs_before[trial_name(name)][1], f"{name}'s finished MLflow run was logged again"

        # W&B: a run per session that ran the trial (its id each time), every one complete.
        files = wandb_run_files(experiment / name)
        started_again = name not in finished_before
        assert len(files) == wandb_before.get(name, 0) + started_again, (name, files)
        for run_file in files:
            records = wandb_records(run_file)
            (run,) = [r.run for r in records if r.HasField("run")]
            config = {item.key: json.loads(item.value_json) for item in run.config.update}
            assert run.run_id == rows[0]["trial_id"] and config["seed"] == after[name][0]["seed"]
            assert any(r.HasField("exit") for r in records), f"{run_file} was not finished"
