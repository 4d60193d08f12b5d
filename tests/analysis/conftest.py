"""Shared fixtures for the analysis tests: generated experiment directories
in Ray Tune's layout (see fake_experiment.py), loaded once per session."""

from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")

import fake_experiment  # noqa: E402  (tests/analysis is on sys.path: no __init__.py here)


@pytest.fixture(scope="session")
def experiment(tmp_path_factory):
    """The standard 24-trial experiment; read-only, copy it before changing it."""
    return fake_experiment.standard_experiment(tmp_path_factory.mktemp("storage"))


@pytest.fixture(scope="session")
def results(experiment):
    import analysis

    return analysis.load(experiment)


@pytest.fixture(scope="session")
def report(results, tmp_path_factory):
    """The HTML report of the standard experiment: its path."""
    from analysis import write_report

    return write_report(results, tmp_path_factory.mktemp("report"))
