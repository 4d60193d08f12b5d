"""``onlinenorm bench report``: its generated experiment reads back as written; bad arguments are usage errors."""

from __future__ import annotations

import pytest

import analysis
from analysis.bench import format_report_bench, write_experiment


def test_generated_experiment_loads_as_written(tmp_path):
    path = write_experiment(tmp_path / "bench", trials=16, epochs=4, layers=5)
    results = analysis.load(path)
    assert results.warnings == []
    assert len(results.trials) == 16 and (results.trials["state"] == "finished").all()
    assert results.trials["baseline"].sum() == 2  # one in eight: batch norm, then layer scaling
    assert len(results.epochs) == 16 * 4
    clamping = results.trials[results.trials["ecm"] == "ac"]
    assert len(results.layers) == (16 - 1) * 4 * 5  # every online trial; the batch-norm one reports none
    assert results.layers["clamp_fraction"].between(0, 1).all()
    assert results.layers.groupby("trial_id")["depth"].max().eq(4).all()
    assert sorted(clamping["clamp_value"].unique()) == [0.5, 1.0, 2.0, 3.0, 5.0]
    assert (
        clamping["alpha_fwd"]
        .map(lambda a: analysis.charts.format_decay(a))
        .isin(["1-2^-10", "1-2^-7", "1-2^-12"])
        .all()
    )
    # settings and findings name the decay factors as the recipes choose them, not as 0.9990234375
    first = clamping.iloc[0]
    assert first["alpha_fwd"] == 1 - 2.0**-10 and first["alpha_bkw"] == 1 - 2.0**-7
    assert first["setting"] == "alpha_bkw=1-2^-7, alpha_fwd=1-2^-10, clamp_value=0.5"
    sentences = " ".join(analysis.findings(results)["sentence"].dropna())
    assert "alpha_fwd=1-2^-10" in sentences and "0.9990234375" not in sentences


def test_format_names_every_stage_and_the_target():
    text = format_report_bench(
        [("onlinenorm report (fresh process, all stages)", 4.0, 6.0), ("analysis.load", 1.0, 1.5)],
        "generated experiment",
    )
    assert text.splitlines()[0] == "generated experiment"
    assert "analysis.load" in text and text.endswith("whole report: 4.00 s = 0.80 x the 5 s target")


@pytest.mark.parametrize("argument", ["--trials=0", "--rounds=0", "--workers=0", "--experiment=/nonexistent/dir"])
def test_bad_arguments_are_usage_errors(argument, capsys):
    from onlinenorm.cli import main

    assert main(["bench", "report", argument]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bench" in err
