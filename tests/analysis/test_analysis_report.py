"""The HTML report, the Parquet export and ``onlinenorm report``."""

from __future__ import annotations

import re
import time

import pandas as pd
import pytest

import analysis
import fake_experiment as fx

SECTIONS = ("summary", "spec", "charts", "tables", "trials", "unreadable")


def run_cli(capsys, *args):
    """``onlinenorm report ARGS`` through the real dispatcher: (exit code, stdout, stderr)."""
    from onlinenorm.cli import main

    code = main(["report", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_report_has_every_section(report):
    page = report.read_text()
    for section in SECTIONS:
        assert f"<section id='{section}'>" in page
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 6  # self-contained
    assert "clamp_value: [1.0, 2.0]" in page  # the spec
    assert "RuntimeError: CUDA out of memory" in page  # the errored trial
    assert "result.json: line 2 is not valid JSON" in page  # what could not be read
    assert "OnlineNorm (Activation Clamping)" in page and "Run-to-run variability" in page


def test_parquet_round_trip(results, report):
    for name in ("trials", "epochs", "layers"):
        pd.testing.assert_frame_equal(pd.read_parquet(report.parent / f"{name}.parquet"), getattr(results, name),
                                      check_dtype=False)


def test_export_returns_the_paths(results, tmp_path):
    paths = analysis.export(results, tmp_path / "frames")
    assert sorted(paths) == ["epochs", "layers", "trials"]
    assert len(pd.read_parquet(paths["layers"])) == len(results.layers)


def test_cli_missing_directory(tmp_path, capsys):
    code, out, err = run_cli(capsys, tmp_path / "absent")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("onlinenorm report: error: ") and "no such directory" in err


def test_cli_directory_without_trials_writes_nothing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run_cli(capsys, empty)
    assert code == 2 and err.count("\n") == 1 and "no trials found" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_cli_refuses_to_write_into_the_experiment(experiment, capsys):
    code, out, err = run_cli(capsys, experiment, "--out", experiment / "report")
    assert code == 2 and err.count("\n") == 1 and "never written into an experiment" in err
    assert not (experiment / "report").exists()


def test_cli_writes_the_report_beside_the_experiment(tmp_path, capsys):
    small = fx.write_experiment(tmp_path / "small", [
        fx.FakeTrial(fx.config(clamp_value=c, seed=s), fx.rows(fx.curve(0.6 + c / 100), (0.3, 0.2, 0.1)))
        for c in (1.0, 2.0) for s in (0, 1)])
    code, out, err = run_cli(capsys, small)
    assert code == 0, err
    assert out.strip() == str(tmp_path / "small_report" / "report.html") and err == ""
    assert sorted(p.name for p in (tmp_path / "small_report").iterdir()) == [
        "charts", "epochs.parquet", "layers.parquet", "report.html", "trials.parquet"]
    assert "report" not in {p.name for p in small.iterdir()}


@pytest.mark.slow
def test_hundreds_of_trials_in_seconds(tmp_path, capsys):
    path = fx.many_trials_experiment(tmp_path, n_trials=300, epochs=30)
    start = time.perf_counter()
    results = analysis.load(path)
    loaded = time.perf_counter()
    analysis.write_report(results, tmp_path / "report")
    done = time.perf_counter()
    with capsys.disabled():
        print(f"\n300 trials x 30 epochs: load {loaded - start:.2f} s, report {done - loaded:.2f} s")
    assert len(results.trials) == 300 and (results.trials["state"] == "finished").all()
    assert len(results.layers) == 300 * 30 * 3
