"""analysis.load: frame contents, trial states, catalogs, unreadable files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import fake_experiment as fx
import pandas as pd
import pytest

import analysis
from analysis import frames
from onlinenorm.constants import METRICS


def trial(results, **config):
    rows = results.trials
    for key, value in config.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, config
    return rows.iloc[0]


def test_one_row_per_trial_and_epoch(results):
    assert len(results.trials) == 24
    # 16 grid + 4 baselines with 3 epochs, running 1, errored 1, diverged 2, pending 0
    assert len(results.epochs) == 20 * 3 + 1 + 1 + 2
    assert not results.epochs.duplicated(["experiment", "trial_id", "epoch"]).any()
    assert set(results.trials["experiment"]) == {"sweep_a"}


def test_trial_states(results):
    assert results.trials["state"].value_counts().to_dict() == {
        "finished": 20,
        "running": 1,
        "errored": 1,
        "diverged": 1,
        "pending": 1,
    }
    assert trial(results, clamp_value=3.0, seed=0)["state"] == "running"
    errored = trial(results, clamp_value=3.0, seed=1)
    assert errored["state"] == "errored" and errored["error"] == "RuntimeError: CUDA out of memory"
    assert trial(results, clamp_value=8.0, seed=0)["state"] == "diverged"
    assert trial(results, clamp_value=8.0, seed=1)["state"] == "pending"


def test_best_and_final_values_of_a_grid_trial(results):
    row = trial(results, norm="online", ecm="ac", clamp_value=2.0, alpha_fwd=0.999, alpha_bkw=0.99, seed=0)
    # best = 0.60 + 0.02 + 0.03 + 0.01 + 0.01 at epoch 2 of [best - 0.1, best, best - 0.05]
    assert row["best_val_acc"] == pytest.approx(0.67)
    assert row["best_epoch"] == 2
    assert row["final_val_acc"] == pytest.approx(0.62)
    assert row["best_val_loss"] == pytest.approx(1.5 - 0.67)
    assert row["final_val_loss"] == pytest.approx(1.5 - 0.62)
    assert row["val_acc_unclamped_at_best"] == pytest.approx(0.665)
    # layer fractions (0.06, 0.04, 0.02) / epoch, overall their mean 0.04 / epoch
    assert row["clamp_fraction_at_best"] == pytest.approx(0.02)
    assert row["clamp_fraction_mean"] == pytest.approx(0.04 * (1 + 1 / 2 + 1 / 3) / 3)
    assert row["epochs_done"] == 3
    assert row["normalizer"] == "OnlineNorm (Activation Clamping)"
    assert row["setting"] == "alpha_bkw=0.99, alpha_fwd=0.999, clamp_value=2.0"
    assert not row["baseline"]


def test_diverged_trial_keeps_its_nan_loss(results):
    row = trial(results, clamp_value=8.0, seed=0)
    assert row["best_val_acc"] == pytest.approx(0.3) and row["best_epoch"] == 1
    assert row["final_val_acc"] == pytest.approx(0.1)
    assert row["final_val_loss"] != row["final_val_loss"]  # NaN at the diverged epoch
    assert row["best_val_loss"] == pytest.approx(1.2)


def test_baselines_ignore_clamp_value_in_their_setting(results):
    batch = results.trials[results.trials["norm"] == "batch"]
    assert batch["baseline"].all() and (batch["normalizer"] == "BatchNorm").all()
    assert set(batch["setting"]) == {""}  # clamp_value 5.0 and the decay factors do not apply
    assert batch["clamp_fraction_mean"].isna().all()
    ls = results.trials[results.trials["ecm"] == "ls"]
    assert ls["baseline"].all() and set(ls["setting"]) == {"alpha_bkw=0.99, alpha_fwd=0.999"}
    assert (ls["normalizer"] == "OnlineNorm (Layer Scaling)").all()


def test_epochs_frame_has_every_metric(results):
    expected = {*METRICS, "time_total_s"}
    assert expected <= set(results.epochs.columns)
    assert results.epochs[list(expected)].notna().any().all()  # read from the files, not only columns added
    assert not any(c.startswith("clamp_fraction/") for c in results.epochs.columns)
    assert "config" not in results.epochs.columns and "hostname" not in results.epochs.columns
    first = results.trials.iloc[0]["trial_id"]
    rows = results.epochs[results.epochs["trial_id"] == first]
    assert rows["epoch"].tolist() == [1, 2, 3]
    assert rows["lr"].tolist() == pytest.approx([0.1, 0.1, 0.01])  # the metric, not the config key
    assert rows["val_acc"].tolist() == pytest.approx([0.51, 0.61, 0.56])


def test_layers_frame_depth_is_model_order(results):
    first = results.trials.iloc[0]["trial_id"]  # clamp 1.0: fractions (0.3, 0.2, 0.1) / epoch
    layers = results.layers[results.layers["trial_id"] == first]
    assert len(layers) == 3 * 3
    epoch2 = layers[layers["epoch"] == 2].set_index("layer")
    assert epoch2["depth"].to_dict() == {"stem.norm": 0, "layer1.0.norm1": 1, "layer1.0.norm2": 2}
    assert epoch2["clamp_fraction"].to_dict() == pytest.approx(
        {"stem.norm": 0.15, "layer1.0.norm1": 0.1, "layer1.0.norm2": 0.05}
    )
    batch_ids = results.trials.loc[results.trials["norm"] == "batch", "trial_id"]
    assert not results.layers["trial_id"].isin(batch_ids).any()


def test_half_written_line_is_a_warning_not_a_failure(results):
    assert len(results.warnings) == 1
    assert "result.json: line 2 is not valid JSON" in results.warnings[0]
    assert trial(results, clamp_value=3.0, seed=0)["epochs_done"] == 1


def test_spec_is_read(results):
    assert results.specs == {"sweep_a": fx.SPEC_TEXT}


def test_load_never_writes(experiment):
    before = {p: p.stat().st_mtime_ns for p in experiment.rglob("*")}
    analysis.load(experiment)
    assert {p: p.stat().st_mtime_ns for p in experiment.rglob("*")} == before


def test_catalog_of_several_experiments(experiment, tmp_path):
    other = fx.write_experiment(
        tmp_path / "sweep_b", [fx.FakeTrial(fx.config(clamp_value=1.0), fx.rows(fx.curve(0.7), (0.3, 0.2, 0.1)))]
    )
    both = analysis.load([experiment, other])
    assert both.trials.groupby("experiment").size().to_dict() == {"sweep_a": 24, "sweep_b": 1}
    assert set(both.epochs["experiment"]) == {"sweep_a", "sweep_b"}
    assert set(both.specs) == {"sweep_a"}
    # a storage path holding several experiments loads them all
    shutil.copytree(experiment, tmp_path / "sweep_a")
    assert set(analysis.load(tmp_path).trials["experiment"]) == {"sweep_a", "sweep_b"}


def test_unreadable_files_are_reported_and_the_rest_loads(experiment, tmp_path):
    copy = shutil.copytree(experiment, tmp_path / "sweep_a")
    trial_dirs = sorted(p for p in copy.iterdir() if (p / "params.json").exists())
    (trial_dirs[0] / "params.json").write_text("{not json")
    state_file = next(copy.glob("experiment_state-*.json"))
    state_file.write_text("{truncated")
    loaded = analysis.load(copy)
    assert len(loaded.trials) == 23  # the pending trial was known only from experiment_state
    assert any(str(state_file) in w and "inferred from the trial files" in w for w in loaded.warnings)
    assert any("params.json: not valid JSON" in w for w in loaded.warnings)
    assert loaded.trials["ray_status"].isna().all()
    # states from the files alone: epochs reached, error.txt, diverged flag
    assert loaded.trials["state"].value_counts().to_dict() == {
        "finished": 20,
        "running": 1,
        "errored": 1,
        "diverged": 1,
    }
    # without params.json nor experiment_state, the config comes from Ray's copy in result.json
    broken = loaded.trials[loaded.trials["trial_dir"] == str(trial_dirs[0])].iloc[0]
    assert broken["clamp_value"] == 1.0 and broken["best_val_acc"] == pytest.approx(0.61)


def test_resumed_trial_keeps_the_latest_report_of_each_epoch(tmp_path):
    rows = fx.rows([0.5, 0.6, 0.7])
    rerun = dict(rows[2], val_acc=0.75)  # restored from the epoch-2 checkpoint, epoch 3 reported again
    path = fx.write_experiment(tmp_path / "resumed", [fx.FakeTrial(fx.config(), rows + [rerun])])
    loaded = analysis.load(path)
    assert loaded.epochs["epoch"].tolist() == [1, 2, 3]
    assert loaded.trials.iloc[0]["best_val_acc"] == pytest.approx(0.75)


def test_progress_csv_and_result_json_give_the_same_frames(experiment, tmp_path):
    """Rows are read from Ray's progress.csv (no config copy: a third of the bytes) where it holds
    result.json's rows; without it they come from result.json, and every frame is the same
    (a diverged trial's NaN, a half-written line, a pending and an errored trial included)."""
    copy = shutil.copytree(experiment, tmp_path / "json_only" / experiment.name)
    read = analysis.layout.read_experiment(experiment, "x")
    assert {t.rows_file for t in read.trials if t.rows.num_rows} == {"progress.csv"}
    for csv_file in copy.glob("*/progress.csv"):
        csv_file.unlink()
    with_csv, json_only = analysis.load(experiment), analysis.load(copy)
    json_only.trials["trial_dir"] = json_only.trials["trial_dir"].str.replace(str(copy), str(experiment))
    for name in ("trials", "epochs", "layers"):
        pd.testing.assert_frame_equal(getattr(with_csv, name), getattr(json_only, name))


def _middle_value_changed(path, key, value):
    """Changes ``key`` in the middle result line of the trial's result.json (not in progress.csv)."""
    result = next(path.glob("*/result.json"))
    lines = [json.loads(line) for line in result.read_text().splitlines()]
    lines[1][key] = value
    result.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_rows_come_from_progress_csv_when_it_agrees_with_result_json(tmp_path):
    path = fx.write_experiment(tmp_path / "agree", [fx.FakeTrial(fx.config(), fx.rows([0.5, 0.6, 0.7]))])
    _middle_value_changed(path, "val_acc", 0.66)
    assert analysis.load(path).epochs["val_acc"].tolist() == pytest.approx([0.5, 0.6, 0.7])  # progress.csv's
    next(path.glob("*/progress.csv")).unlink()
    assert analysis.load(path).epochs["val_acc"].tolist() == pytest.approx([0.5, 0.66, 0.7])  # result.json's


def _shift_last_row(lines):
    """Ray resuming a trial whose first result after the restore lists its keys in another order:
    the appended row's cells follow that order, the header the old one."""
    header = lines[0].split(",")
    cells = dict(zip(header, lines[-1].split(","), strict=True))
    cells["val_acc"], cells["val_loss"] = cells["val_loss"], cells["val_acc"]
    return lines[:-1] + [",".join(cells[name] for name in header)]


def _without_column(lines, name="val_acc_unclamped"):
    drop = lines[0].split(",").index(name)
    return [",".join(cell for i, cell in enumerate(line.split(",")) if i != drop) for line in lines]


@pytest.mark.parametrize(
    "disagreement",
    [
        pytest.param(_shift_last_row, id="resumed-in-another-column-order"),
        pytest.param(lambda lines: lines[:-1], id="a-row-missing"),
        pytest.param(_without_column, id="a-column-missing"),
        pytest.param(lambda lines: lines[:2] + ["not,a,row"] + lines[3:], id="a-row-unlike-its-json-line"),
        pytest.param(lambda lines: [lines[0], '"a cell over', 'two lines"', *lines[3:]], id="a-cell-over-lines"),
    ],
)
def test_a_progress_csv_unlike_result_json_is_not_read(tmp_path, disagreement):
    """Where progress.csv does not hold result.json's rows, the rows come from result.json."""
    path = fx.write_experiment(
        tmp_path / "disagree", [fx.FakeTrial(fx.config(), fx.rows([0.5, 0.6, 0.7, 0.8], layer_fractions=[0.1]))]
    )
    _middle_value_changed(path, "val_acc", 0.66)
    progress = next(path.glob("*/progress.csv"))
    progress.write_text("\r\n".join(disagreement(progress.read_text().splitlines())) + "\r\n")
    loaded = analysis.load(path)
    assert loaded.warnings == []
    assert loaded.epochs["val_acc"].tolist() == pytest.approx([0.5, 0.66, 0.7, 0.8])
    assert loaded.epochs["val_loss"].tolist() == pytest.approx([1.0, 0.9, 0.8, 0.7])


def _cell_over_two_lines_mid_file(lines):
    """Rows 2 and 3 become one row whose trial_id cell spans both lines: as many lines, one row fewer."""
    header = lines[0].split(",")
    cells = lines[2].split(",")
    cells[header.index("trial_id")] = '"one id over\ntwo lines"'
    return lines[:2] + ",".join(cells).split("\n") + lines[4:]  # joined by the caller's line ends


@pytest.mark.parametrize(
    "disagreement",
    [
        pytest.param(lambda lines: lines[:2] + ["not,a,row"] + lines[3:], id="a-middle-row-pyarrow-cannot-parse"),
        pytest.param(_cell_over_two_lines_mid_file, id="fewer-rows-than-lines"),
    ],
)
def test_one_bad_progress_csv_among_many_is_read_from_result_json(tmp_path, disagreement):
    """progress.csv files of one header are parsed together; one whose rows do not come out as its
    lines (past the first and last row checks) is read from result.json, and the others still from
    their progress.csv, each with its own rows."""
    accuracies = {seed: [0.5 + seed / 100, 0.6, 0.7, 0.8] for seed in range(3)}
    path = fx.write_experiment(
        tmp_path / "many", [fx.FakeTrial(fx.config(seed=seed), fx.rows(accuracies[seed])) for seed in accuracies]
    )
    for result in path.glob("*/result.json"):  # result.json's middle row differs from progress.csv's
        lines = [json.loads(line) for line in result.read_text().splitlines()]
        lines[1]["val_acc"] = 0.66
        result.write_text("".join(json.dumps(line) + "\n" for line in lines))
    broken = sorted(path.glob("*/progress.csv"))[1]
    broken.write_bytes(("\r\n".join(disagreement(broken.read_text().splitlines())) + "\r\n").encode())  # as Ray

    read = analysis.layout.read_experiment(path, "many")
    loaded = analysis.load(path)

    assert [t.rows_file for t in read.trials] == ["progress.csv", "result.json", "progress.csv"]
    by_seed = loaded.epochs.merge(loaded.trials[["trial_id", "seed"]]).groupby("seed")["val_acc"].agg(list)
    assert by_seed[0] == pytest.approx(accuracies[0]) and by_seed[2] == pytest.approx(accuracies[2])
    assert by_seed[1] == pytest.approx([0.51, 0.66, 0.7, 0.8])  # result.json's
    assert loaded.warnings == []


def test_what_result_json_lacks_is_still_listed_when_read_after_a_bad_progress_csv(tmp_path):
    """A progress.csv that passes the row checks but cannot be parsed sends its trial to result.json;
    a line there that is not JSON is skipped and listed, as when result.json is read first."""
    path = fx.write_experiment(tmp_path / "both", [fx.FakeTrial(fx.config(), fx.rows([0.5, 0.6, 0.7, 0.8]))])
    result, progress = next(path.glob("*/result.json")), next(path.glob("*/progress.csv"))
    lines = result.read_text().splitlines()
    result.write_text("\n".join([lines[0], "not json", *lines[2:]]) + "\n")
    rows = progress.read_text().splitlines()
    progress.write_bytes(("\r\n".join([*rows[:2], "not,a,row", *rows[3:]]) + "\r\n").encode())

    loaded = analysis.load(path)

    assert loaded.epochs["val_acc"].tolist() == pytest.approx([0.5, 0.7, 0.8])
    assert loaded.warnings == [f"{result}: line 2 is not valid JSON; skipped"]


def test_where_keeps_the_kept_trials_rows(results):
    clamping = results.trials["norm"].eq("online") & results.trials["ecm"].eq("ac")
    kept = results.where(clamping)
    assert kept.trials["trial_id"].tolist() == results.trials.loc[clamping, "trial_id"].tolist()
    for name in ("epochs", "layers"):
        rows = getattr(results, name)
        expected = rows[rows["trial_id"].isin(kept.trials["trial_id"])].reset_index(drop=True)
        pd.testing.assert_frame_equal(getattr(kept, name), expected)
    assert results.where(results.trials["trial_id"].notna()) is results  # every trial kept: nothing to filter


def test_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such experiment directory"):
        analysis.load(tmp_path / "absent")


def test_import_needs_neither_torch_nor_ray():
    code = (
        "import sys, analysis, analysis.charts, analysis.report, analysis.cli; "
        "assert all(callable(f) for f in (analysis.load, analysis.export, analysis.write_report)); "
        "print(json.dumps(sorted(m for m in sys.modules if m.partition('.')[0] in "
        "('torch', 'ray', 'onlinenorm', 'sweeps') "
        "and m not in ('onlinenorm', 'onlinenorm.constants', 'onlinenorm.lazy', 'onlinenorm.cli'))))"
    )  # of onlinenorm, only its torch-free constants and lazy-import helper, and for analysis.cli the command's helpers
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_cli_module_imports_no_pandas():
    code = "import sys, analysis.cli; print('pandas' in sys.modules or 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def files_state(path):
    """Every file and directory under ``path`` with its size, mtime and content."""
    return {p: (p.stat().st_mtime_ns, p.is_file() and p.read_bytes()) for p in [path, *path.rglob("*")]}


@pytest.mark.slow
def test_a_running_sweep_is_read_as_a_snapshot_and_never_written(experiment, tmp_path, capsys):
    """Files caught mid-write (a result line, params.json, experiment_state) are skipped and listed;
    neither load nor ``onlinenorm report`` changes anything in the experiment."""
    from onlinenorm.cli import main

    copy = shutil.copytree(experiment, tmp_path / "running")
    trial_dirs = sorted(p for p in copy.iterdir() if (p / "result.json").exists())
    (trial_dirs[1] / "params.json").write_text('{"clamp_value": 1.0, "no')  # half-written
    with (trial_dirs[2] / "result.json").open("a") as f:
        f.write('{"epoch": 4, "val_acc": 0.9')  # a fourth epoch being written
    state = next(copy.glob("experiment_state-*.json"))
    state.write_text(state.read_text()[:100])
    before = files_state(copy)
    loaded = analysis.load(copy)
    assert files_state(copy) == before
    assert len(loaded.trials) == 23  # the pending trial was known only from experiment_state
    assert (
        f"{trial_dirs[2] / 'result.json'}: line 4 is not valid JSON (still being written?); skipped" in loaded.warnings
    )
    assert any(w.startswith(f"{trial_dirs[1] / 'params.json'}: not valid JSON") for w in loaded.warnings)
    assert any(w.startswith(f"{state}: unreadable") for w in loaded.warnings)
    assert len(loaded.warnings) == 4  # and the running trial's half-written line
    growing = loaded.trials[loaded.trials["trial_dir"] == str(trial_dirs[2])].iloc[0]
    assert growing["epochs_done"] == 3
    half_config = loaded.trials[loaded.trials["trial_dir"] == str(trial_dirs[1])].iloc[0]
    assert half_config["clamp_value"] == 1.0 and half_config["alpha_bkw"] == 0.9  # Ray's copy in result.json
    assert main(["report", str(copy), "--out", str(tmp_path / "report")]) == 0
    assert files_state(copy) == before
    assert "4 file(s) could not be read" in capsys.readouterr().err


def test_a_corrupt_line_mid_file_is_skipped_and_listed(tmp_path):
    path = fx.write_experiment(tmp_path / "corrupt", [fx.FakeTrial(fx.config(), fx.rows([0.5, 0.6, 0.7]))])
    result = next(path.glob("*/result.json"))
    lines = result.read_text().splitlines(keepends=True)
    result.write_text(lines[0] + "{garbage\n" + "".join(lines[1:]))
    loaded = analysis.load(path)
    assert loaded.warnings == [f"{result}: line 2 is not valid JSON; skipped"]
    assert loaded.epochs["val_acc"].tolist() == pytest.approx([0.5, 0.6, 0.7])


def test_metrics_of_other_types_or_first_seen_mid_run_are_kept(tmp_path):
    """The fast schema comes from a trial's first and last line; other lines that do not fit it
    (a string where a number was, a list) are read with inferred types instead of dropped."""
    rows = fx.rows([0.5, 0.6, 0.7])
    rows[1] = rows[1] | {"note": "lr restarted", "lr": "warm"}
    rows[2] = rows[2] | {"milestones": [2, 3]}
    path = fx.write_experiment(tmp_path / "mixed", [fx.FakeTrial(fx.config(), rows)])
    loaded = analysis.load(path)
    assert loaded.warnings == []
    assert loaded.epochs["note"].tolist()[1] == "lr restarted"
    assert loaded.epochs["val_acc"].tolist() == pytest.approx([0.5, 0.6, 0.7])
    assert loaded.trials.iloc[0]["best_val_acc"] == pytest.approx(0.7)


def test_trial_that_recovered_from_a_failure_is_finished(tmp_path):
    """A lost node leaves error.txt in a trial that then finished from its checkpoint: Ray's state decides."""
    recovered = fx.FakeTrial(
        fx.config(), fx.rows([0.5, 0.6, 0.7]), status="TERMINATED", error="ray.exceptions.NodeDiedError"
    )
    failed = fx.FakeTrial(fx.config(seed=1), fx.rows([0.5]), status="ERROR", error="RuntimeError: boom")
    loaded = analysis.load(fx.write_experiment(tmp_path / "recovered", [recovered, failed]))
    assert loaded.trials.sort_values("seed")["state"].tolist() == ["finished", "errored"]


def test_trial_positions_locate_each_rows_trial_across_experiments():
    trials = pd.DataFrame({"experiment": ["a", "a", "b"], "trial_id": ["t1", "t2", "t1"]})
    rows = pd.DataFrame(
        {"experiment": ["b", "a", "a", "c", "b", "a"], "trial_id": ["t1", "t1", "t2", "t1", "t9", "t1"]}
    )
    assert frames.trial_positions(rows, trials).tolist() == [2, 0, 1, -1, -1, 0]
    one_experiment = rows[rows["experiment"].eq("a")]
    assert frames.trial_positions(one_experiment, trials).tolist() == [0, 1, 0]
    assert frames.trial_positions(rows.iloc[:0], trials).tolist() == []
