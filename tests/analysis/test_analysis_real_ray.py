"""The analysis reads what real Ray Tune writes, an errored trial and a trial
stopped by ASHA included, and draws its findings from it.

Runs a 3-trial ``tune.Tuner`` (one trial raises) and a 2-trial one under ASHA
in a subprocess, so Ray never starts inside the test process. The analysis of a real ``onlinenorm sweep``
directory is tested beside the sweep itself, in ``tests/test_sweep_ray.py``.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest

import analysis

TUNER_SCRIPT = textwrap.dedent("""
    import sys, tempfile, pathlib
    import ray
    from ray import tune
    from ray.tune import Checkpoint, FailureConfig, RunConfig

    def trainable(config):
        for epoch in range(1, config["epochs"] + 1):
            if config["clamp_value"] == 3.0 and epoch == 2:
                raise RuntimeError("boom at epoch 2")
            with tempfile.TemporaryDirectory() as d:
                pathlib.Path(d, "state.txt").write_text(str(epoch))
                acc = 0.1 * epoch + config["clamp_value"] / 100
                tune.report({"epoch": epoch, "val_acc": acc, "val_acc_unclamped": acc, "val_loss": 1 - acc,
                             "train_loss": 1.0 / epoch, "clamp_fraction": 0.1 / config["clamp_value"],
                             "clamp_fraction/layer1.0.norm1": 0.2 / config["clamp_value"],
                             "clamp_fraction/layer0.norm": 0.0, "diverged": False},
                            checkpoint=Checkpoint.from_directory(d))

    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never join another Ray on this machine
    tune.Tuner(
        trainable,
        param_space={"norm": "online", "ecm": "ac", "alpha_fwd": 0.999, "alpha_bkw": 0.99, "seed": 0,
                     "epochs": 3, "clamp_value": tune.grid_search([1.0, 3.0, 5.0])},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=RunConfig(storage_path=sys.argv[1], name="real", verbose=0,
                             failure_config=FailureConfig(max_failures=0)),
    ).fit()
    # ASHA stops the second trial at its first rung: it is below the first trial there.
    tune.Tuner(
        trainable,
        param_space={"norm": "online", "ecm": "ac", "alpha_fwd": 0.999, "alpha_bkw": 0.99, "seed": 0,
                     "epochs": 3, "clamp_value": tune.grid_search([5.0, 1.0])},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, scheduler=tune.schedulers.ASHAScheduler(
            metric="val_acc", mode="max", grace_period=1, max_t=3)),
        run_config=RunConfig(storage_path=sys.argv[1], name="asha", verbose=0),
    ).fit()
    ray.shutdown()
""")


@pytest.mark.slow
def test_reads_a_real_ray_tune_experiment(tmp_path):
    pytest.importorskip("ray")
    run = subprocess.run(
        [sys.executable, "-c", TUNER_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = analysis.load(tmp_path / "real")
    assert results.warnings == []
    for name in ("real", "asha"):  # Ray's own progress.csv holds its result.json rows: the faster file is read
        read = analysis.layout.read_experiment(tmp_path / name, name)
        assert [trial.rows_file for trial in read.trials] == ["progress.csv"] * len(read.trials)
    trials = results.trials.set_index("clamp_value")
    assert trials["state"].to_dict() == {1.0: "finished", 3.0: "errored", 5.0: "finished"}
    assert trials["ray_status"].to_dict() == {1.0: "TERMINATED", 3.0: "ERROR", 5.0: "TERMINATED"}
    assert "RuntimeError: boom at epoch 2" in trials.loc[3.0, "error"]
    assert trials.loc[5.0, "best_val_acc"] == pytest.approx(0.35) and trials.loc[5.0, "best_epoch"] == 3
    assert trials.loc[3.0, "epochs_done"] == 1
    layers = results.layers.drop_duplicates("layer").set_index("layer")["depth"].to_dict()
    assert layers == {"layer1.0.norm1": 0, "layer0.norm": 1}  # the order reported, not sorted
    assert len(results.epochs) == 3 + 1 + 3

    found = analysis.findings(results).set_index(["kind", "subject"])
    assert found.loc["baseline", "reason"].tolist() == [
        "no complete BatchNorm run",
        "no complete OnlineNorm (Layer Scaling) run",
    ]
    assert found.loc[("gaussian", "c=1"), "estimate"] == pytest.approx(0.1 / math.erfc(1 / math.sqrt(2)))
    assert found.loc[("gaussian_depth", "c=5, depth 0 (layer1.0.norm1)"), "estimate"] == pytest.approx(
        0.04 / math.erfc(5 / math.sqrt(2))
    )
    removal = found.loc["removal"]
    assert removal["estimate"].tolist() == [0, 0] and removal["verdict"].eq("inconclusive").all()
    assert found.loc["knob", "reason"].tolist() == ["fewer than three complete clamping runs"]

    asha = analysis.load(tmp_path / "asha")
    assert asha.trials.set_index("clamp_value")[["state", "epochs_done"]].to_dict("index") == {
        5.0: {"state": "finished", "epochs_done": 3},
        1.0: {"state": "stopped", "epochs_done": 1},
    }
    stopped = analysis.findings(asha).query("kind == 'stopped'")["sentence"].tolist()
    assert stopped == [
        "1 of 2 trials were stopped early by the scheduler (1 at epoch 1; "
        "OnlineNorm (Activation Clamping)) and are left out of every comparison, table and chart."
    ]
