"""``analysis.prefetch``: experiments read in a forked process come back as
read in this one; a child that fails leaves the reading to the caller."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import replace

import pandas as pd
import pytest

import analysis.prefetch
from analysis.layout import read_experiments
from analysis.prefetch import Prefetch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Prefetch forks on Linux only")


def test_what_the_child_reads_comes_back_unchanged(experiment, tmp_path):
    """Two experiments of the same name (named by their parents), trials with
    warnings, a half-written line, pending trials: all as read here."""
    for parent in ("a", "b"):
        shutil.copytree(experiment, tmp_path / parent / "sweep")
    roots = [tmp_path / "a", tmp_path / "b", tmp_path]  # the last holds no experiment itself: a warning

    fetched = Prefetch(roots).result()

    assert fetched is not None
    here = read_experiments(roots)
    assert [e.name for e in fetched[0]] == ["a/sweep", "b/sweep"] and fetched[1] == here[1] != []
    assert _without_rows(fetched[0]) == _without_rows(here[0])
    for fetched_trial, trial in zip(_trials(fetched[0]), _trials(here[0]), strict=True):
        assert fetched_trial.rows.schema == trial.rows.schema  # column order and types, metadata included
        pd.testing.assert_frame_equal(fetched_trial.rows.to_pandas(), trial.rows.to_pandas())  # NaN equals NaN


def _trials(experiments):
    return [t for e in experiments for t in e.trials]


def _without_rows(experiments):
    return [replace(e, trials=[replace(t, rows=None) for t in e.trials]) for e in experiments]


def test_the_reading_runs_in_another_process(monkeypatch, tmp_path):
    monkeypatch.setattr(analysis.prefetch, "read_experiments", lambda roots: ([], [f"read by {os.getpid()}"]))
    fetched = Prefetch([tmp_path]).result()
    assert fetched is not None
    experiments, [line] = fetched
    assert experiments == [] and line.startswith("read by ") and line != f"read by {os.getpid()}"


def _raise(roots):
    raise ValueError("broken file")


def _killed(roots):
    os._exit(9)


@pytest.mark.parametrize("child", [_raise, _killed], ids=["raises", "killed"])
def test_a_child_that_does_not_answer_gives_none(child, monkeypatch, tmp_path, capfd):
    monkeypatch.setattr(analysis.prefetch, "read_experiments", child)
    assert Prefetch([tmp_path]).result() is None
    assert capfd.readouterr().err == ""  # no traceback from the child: the caller reads again and reports


def test_an_answer_that_cannot_be_read_gives_none(experiment, monkeypatch):
    def damaged(experiment):
        return replace(experiment, trials=[replace(t, rows=b"not an Arrow stream") for t in experiment.trials])

    monkeypatch.setattr(analysis.prefetch, "_with_streams", damaged)
    assert Prefetch([experiment]).result() is None


def test_report_cli_reads_in_its_own_process_when_the_child_fails(experiment, tmp_path, monkeypatch, capsys):
    from onlinenorm.cli import main

    assert main(["report", str(experiment), "--out", str(tmp_path / "fetched")]) == 0
    fetched = capsys.readouterr().out
    monkeypatch.setattr(analysis.prefetch, "read_experiments", _raise)
    assert main(["report", str(experiment), "--out", str(tmp_path / "here")]) == 0
    here = capsys.readouterr().out
    assert "Findings" in here and here.replace("here", "fetched") == fetched
    assert (tmp_path / "here" / "report.html").exists()
