"""The analysis reads what real Ray Tune writes, an errored trial included.

Runs a 3-trial ``tune.Tuner`` (one trial raises) in a subprocess, so Ray never
starts inside the test process. The analysis of a real ``onlinenorm sweep``
directory is tested beside the sweep itself, in ``tests/test_sweep_ray.py``.
"""

from __future__ import annotations

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
    ray.shutdown()
""")


@pytest.mark.slow
def test_reads_a_real_ray_tune_experiment(tmp_path):
    pytest.importorskip("ray")
    run = subprocess.run([sys.executable, "-c", TUNER_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = analysis.load(tmp_path / "real")
    assert results.warnings == []
    trials = results.trials.set_index("clamp_value")
    assert trials["state"].to_dict() == {1.0: "finished", 3.0: "errored", 5.0: "finished"}
    assert trials["ray_status"].to_dict() == {1.0: "TERMINATED", 3.0: "ERROR", 5.0: "TERMINATED"}
    assert "RuntimeError: boom at epoch 2" in trials.loc[3.0, "error"]
    assert trials.loc[5.0, "best_val_acc"] == pytest.approx(0.35) and trials.loc[5.0, "best_epoch"] == 3
    assert trials.loc[3.0, "epochs_done"] == 1
    layers = results.layers.drop_duplicates("layer").set_index("layer")["depth"].to_dict()
    assert layers == {"layer1.0.norm1": 0, "layer0.norm": 1}  # the order reported, not sorted
    assert len(results.epochs) == 3 + 1 + 3
