"""An Optuna search stopped with Ctrl-C and resumed with ``onlinenorm sweep resume``, trackers on.

Sized like ``test_sweep_search_ray`` (whose spec, embedded Ray and helpers it shares): TPE suggests
two points, each run at seeds 0 and 1 for two epochs; Ctrl-C comes when the first trial completes.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from test_sweep_ray import trials_on_disk
from test_sweep_search_ray import (  # noqa: F401 (local_ray is a fixture)
    EPOCHS,
    WANDB,
    InterruptAtFirstCompletion,
    local_ray,
    mlflow_runs,
    point,
    wandb_records,
    wandb_run_files,
    write_spec,
)

from analysis.layout import read_experiment
from onlinenorm.cli import main
from sweeps.run import run_sweep
from sweeps.spec import load_spec
from sweeps.status import experiment_counts

pytestmark = pytest.mark.slow

NAME = "stopped-optuna"


def studies(experiment: Path) -> list:
    """The Optuna study in each searcher state Ray saved (one per session), oldest first."""
    return [pickle.loads(path.read_bytes())["_ot_study"] for path in sorted(experiment.glob("searcher-state-*.pkl"))]


def mlflow_by_trial(store: str) -> dict:
    """Trial name -> (status, [(step, val_acc)]) of every MLflow run of the sweep."""
    runs, client = mlflow_runs(store, NAME)
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


@pytest.mark.usefixtures("local_ray")
def test_a_stopped_optuna_search_resumes_its_study_with_one_tracker_run_per_trial(tmp_path, monkeypatch):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    search = {"type": "optuna", "num_samples": 2, "seed": 0, "metric": "val_acc"}
    path = write_spec(tmp_path, NAME, search, tracking={"mlflow": {"tracking_uri": store}, "wandb": WANDB})
    monkeypatch.setattr(InterruptAtFirstCompletion, "fired", False)  # armed here, as it was after
    stopped = run_sweep(
        load_spec(path), storage=str(tmp_path / "results"), verbose=0, callbacks=[InterruptAtFirstCompletion()]
    )
    experiment = Path(stopped.path)
    saved = experiment_counts(stopped.path)
    assert saved["TERMINATED"] >= 1 and sum(saved.values()) - saved["TERMINATED"] >= 1, saved
    before = trials_on_disk(experiment)
    # Completed in Tune's saved state: not run again. (A trial may have reported its last epoch, yet not
    # be complete when Ctrl-C came: the resume starts it again, from that epoch's checkpoint.)
    finished_before = {
        t.directory.name for t in read_experiment(experiment, NAME).trials if t.ray_status == "TERMINATED"
    }
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
        if len(before.get(name, ({}, []))[1]) == EPOCHS:
            assert rows == before[name][1], f"{name} had reported every epoch before the stop and ran again"
        if name in finished_before:
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
