"""Every chart is drawn from the fixture, titled and labelled, and written as PNG and SVG."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import PathCollection

from analysis import charts


def test_every_chart_written_non_empty(results, report):
    chart_dir = report.parent / "charts"
    for name in charts.CHARTS:
        for ext in ("png", "svg"):
            path = chart_dir / f"{name}.{ext}"
            assert path.stat().st_size > 1000, path


@pytest.mark.parametrize("name", list(charts.CHARTS))
def test_chart_has_title_and_axis_labels(results, name):
    figure = charts.CHARTS[name](results)
    assert figure._suptitle.get_text()
    assert any(ax.get_xlabel() for ax in figure.axes) and any(ax.get_ylabel() for ax in figure.axes)
    plt.close(figure)


def test_accuracy_chart_has_a_point_per_trial_and_the_baselines(results):
    figure = charts.accuracy_vs_clamp_fraction(results)
    points = sum(len(c.get_offsets()) for ax in figure.axes for c in ax.collections if isinstance(c, PathCollection))
    assert points == 16  # the finished clamping trials; the diverged one has a zero fraction (log x)
    labels = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert {"BatchNorm median 0.65", "OnlineNorm (Layer Scaling) median 0.64", "1.0", "2.0"} <= set(labels)
    plt.close(figure)


def test_a_chart_without_data_says_why(results):
    baselines_only = results.where(results.trials["baseline"])
    with pytest.raises(charts.NoData, match="no complete clamping trial"):
        charts.sensitivity_heatmaps(baselines_only)
    assert len(baselines_only.trials) == 4 and set(baselines_only.epochs["trial_id"]) == set(
        baselines_only.trials["trial_id"])
