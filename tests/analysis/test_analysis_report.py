"""The HTML report, the Parquet export and ``onlinenorm report``."""

from __future__ import annotations

import html
import re

import fake_experiment as fx
import pandas as pd
import pytest

import analysis

SECTIONS = ("findings", "charts", "tables", "summary", "spec", "trials", "unreadable")  # in this order


def run_cli(capsys, *args):
    """``onlinenorm report ARGS`` through the real dispatcher: (exit code, stdout, stderr)."""
    from onlinenorm.cli import main

    code = main(["report", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_report_has_every_section(report):
    page = report.read_text()
    positions = [page.index(f"<section id='{section}'>") for section in SECTIONS]
    assert positions == sorted(positions)  # findings first, then charts, then tables
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 6  # self-contained
    assert "clamp_value: [1.0, 2.0]" in page  # the spec
    assert "RuntimeError: CUDA out of memory" in page  # the errored trial
    assert "result.json: line 2 is not valid JSON" in page  # what could not be read
    assert "OnlineNorm (Activation Clamping)" in page and "Run-to-run variability" in page


def test_findings_open_the_report_and_read_back_from_json(results, report):
    page = report.read_text()
    findings = pd.read_json(report.parent / "findings.json")
    assert len(findings) == len(analysis.findings(results))
    assert list(findings.columns) == analysis.questions.COLUMNS
    assert findings.loc[0, "sentence"] == analysis.findings(results).loc[0, "sentence"]
    first = page.index("<section id='findings'>")
    for sentence in findings["sentence"]:
        assert html.escape(sentence) in page
    assert first < page.index(html.escape(findings["sentence"].iloc[0])) < page.index("<section id='charts'>")


def test_an_experiment_without_the_sweep_keys_gets_a_report(tmp_path, capsys):
    """A Tune experiment another program wrote: no clamp_value, decay factors or seed in its configs."""
    foreign = [{"dataset": "synth", "model": "resnet8", "norm": "batch", "lr": 0.1}] * 3
    trials = [fx.FakeTrial(config, fx.rows([0.5, 0.6, 0.7 + i / 100])) for i, config in enumerate(foreign)]
    experiment = fx.write_experiment(tmp_path / "foreign", trials)
    results = analysis.load(experiment)
    assert results.trials[["clamp_value", "alpha_fwd", "alpha_bkw", "seed"]].isna().all().all()
    code, out, err = run_cli(capsys, experiment, "--out", tmp_path / "report")
    assert (code, err) == (0, "")
    assert "Cannot tell whether removing the clamp is safe: no complete clamping run." in out
    assert (tmp_path / "report" / "report.html").is_file()


def test_removal_collapse_is_named_in_the_first_lines(tmp_path):
    from analysis.report import findings_html

    found = analysis.findings(analysis.load(fx.planted_experiment(tmp_path)))
    section = findings_html(found, margin=0.01, confidence=0.95)
    headlines = re.findall(r"<p class='headline'>(.*?)</p>", section)
    assert headlines[0] == (
        "Removing the clamp at inference is NOT safe at: "
        "OnlineNorm (Activation Clamping), clamp_value=1.0 (\u221269.8 points)"
    )
    assert "1 of 4 runs failed to learn" in headlines[1] and "stopped early by the scheduler" in headlines[2]
    assert section.index(headlines[0]) < section.index("<h3>")  # before any question's sentences


def test_parquet_round_trip(results, report):
    for name in ("trials", "epochs", "layers"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(report.parent / f"{name}.parquet"), getattr(results, name), check_dtype=False
        )


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


def test_cli_prints_findings_and_writes_the_report_beside_the_experiment(tmp_path, capsys):
    small = fx.write_experiment(
        tmp_path / "small",
        [
            fx.FakeTrial(fx.config(clamp_value=c, seed=s), fx.rows(fx.curve(0.6 + c / 100), (0.3, 0.2, 0.1)))
            for c in (1.0, 2.0)
            for s in (0, 1)
        ],
    )
    code, out, err = run_cli(capsys, small, "--margin", "0.02")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Findings (95% bootstrap intervals over runs; equivalent = within \u00b12.0 points)"
    assert lines[-1] == f"Report: {tmp_path / 'small_report' / 'report.html'}" and err == ""
    assert "  - Cannot compare against BatchNorm: no complete BatchNorm run." in lines
    assert sorted(p.name for p in (tmp_path / "small_report").iterdir()) == [
        "charts",
        "epochs.parquet",
        "findings.json",
        "layers.parquet",
        "report.html",
        "trials.parquet",
    ]
    written = pd.read_json(tmp_path / "small_report" / "findings.json")
    printed = [line.removeprefix("  - ") for line in lines if line.startswith("  - ")]
    assert printed and set(printed) <= set(written["sentence"])
    removal = written[written["kind"].eq("removal")]  # both settings: -0.5 points, inside the 2-point margin
    assert removal["verdict"].tolist() == ["equivalent", "equivalent"]
    assert "report" not in {p.name for p in small.iterdir()}


@pytest.mark.parametrize("margin", ["abc", "0", "1.5", "-0.01"])
def test_cli_bad_margin_is_one_line_and_exit_2(experiment, tmp_path, capsys, margin):
    code, out, err = run_cli(capsys, experiment, "--out", tmp_path / "out", "--margin", margin)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"onlinenorm report: error: --margin {margin}: give an accuracy difference between 0 and 1")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_report_of_hundreds_of_trials(tmp_path):
    """Scale, not speed (``onlinenorm bench report`` times it): every trial loads and the report is written."""
    path = fx.many_trials_experiment(tmp_path, n_trials=300, epochs=30)
    results = analysis.load(path)
    assert analysis.write_report(results, tmp_path / "report").exists()
    assert len(results.trials) == 300 and (results.trials["state"] == "finished").all()
    assert len(results.layers) == 300 * 30 * 3
