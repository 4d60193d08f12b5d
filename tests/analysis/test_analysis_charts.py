"""Every chart is drawn from the fixtures, titled and labelled, written as PNG;
panels, scales and axes follow what the sweep varied (grid or sampled)."""

from __future__ import annotations

import fake_experiment as fx
import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import PathCollection, QuadMesh
from matplotlib.colors import LogNorm
from matplotlib.ticker import LogFormatterSciNotation

import analysis
from analysis import charts, tables


@pytest.fixture(scope="module")
def one_pair(tmp_path_factory):
    """One decay-factor pair, five clamp values, both baselines, two seeds."""
    return analysis.load(fx.one_decay_pair_experiment(tmp_path_factory.mktemp("one_pair")))


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """A random search: 12 sampled (c, alpha_fwd, alpha_bkw) points x 2 seeds."""
    return analysis.load(fx.sampled_experiment(tmp_path_factory.mktemp("sampled")))


def panels(figure):
    """The chart's panels: its axes less colour bars."""
    return [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]


def colorbars(figure):
    return [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]


def legend_labels(figure):
    return [t.get_text() for legend in figure.legends for t in legend.get_texts()]


def test_every_chart_written_non_empty(results, report):
    chart_dir = report.parent / "charts"
    assert sorted(p.name for p in chart_dir.iterdir()) == sorted(f"{name}.png" for name in charts.CHARTS)
    for name in charts.CHARTS:
        assert (chart_dir / f"{name}.png").stat().st_size > 1000, name


@pytest.mark.slow
def test_charts_drawn_in_two_processes_match_one_process(one_pair, tmp_path):
    serial = charts.save_all(one_pair, tmp_path / "serial", workers=1)
    with charts.saving(one_pair, tmp_path / "forked", workers=2) as drawn:
        forked = drawn()
    assert {name: [p.name for p in files] for name, files in forked.items()} == {
        name: [f"{name}.png"] for name in charts.CHARTS
    }
    for name in charts.CHARTS:  # the same pixels, whichever process drew them
        assert forked[name][0].read_bytes() == serial[name][0].read_bytes(), name


@pytest.mark.slow
@pytest.mark.parametrize("frames", ["results", "one_pair", "sampled"])
def test_charts_are_cropped_as_savefig_tight_crops_them(frames, request, tmp_path):
    """The report measures each chart's tight box without savefig's extra draw: the same pixels."""
    results = request.getfixturevalue(frames)
    for name, chart in charts.CHARTS.items():
        figure = chart(results)  # measured first, before anything has drawn it
        figure.savefig(tmp_path / "measured.png", dpi=charts.DPI, bbox_inches=charts.tight_bbox(figure))
        figure.savefig(tmp_path / "tight.png", dpi=charts.DPI, bbox_inches="tight")
        plt.close(figure)
        assert (tmp_path / "measured.png").read_bytes() == (tmp_path / "tight.png").read_bytes(), name


@pytest.mark.parametrize("name", list(charts.CHARTS))
def test_chart_has_title_and_axis_labels(results, name):
    figure = charts.CHARTS[name](results)
    assert figure.get_suptitle()
    assert any(ax.get_xlabel() for ax in figure.axes) and any(ax.get_ylabel() for ax in figure.axes)
    plt.close(figure)


def test_accuracy_chart_has_a_point_per_trial_and_the_baselines(results):
    figure = charts.accuracy_vs_clamp_fraction(results)
    points = sum(len(c.get_offsets()) for ax in figure.axes for c in ax.collections if isinstance(c, PathCollection))
    assert points == 16  # the finished clamping trials; the diverged one has a zero fraction (log x)
    assert {"BatchNorm median 0.65", "OnlineNorm (Layer Scaling) median 0.64", "c = 1", "c = 2"} <= set(
        legend_labels(figure)
    )
    # 2 x 2 decay pairs on a grid: a panel each, titled with the pair as 1 - 10^-k
    assert len(panels(figure)) == 4
    assert "α_fwd = 1-1e-3, α_bkw = 1-1e-2" in [ax.get_title() for ax in panels(figure)]
    assert all(ax.get_xscale() == "log" for ax in panels(figure))
    plt.close(figure)


def test_one_decay_pair_gives_one_wide_panel_and_a_legend_beside_it(one_pair):
    figure = charts.accuracy_vs_clamp_fraction(one_pair)
    (ax,) = panels(figure)
    assert ax.get_title() == ""  # no facet title over the axis
    assert figure.get_figwidth() >= 6 and ax.get_xlabel() and ax.get_ylabel()
    assert [f"c = {c:g}" for c in fx.ONE_PAIR_CLAMPS] == legend_labels(figure)[:5]
    figure.canvas.draw()
    legend, axes_box = figure.legends[0].get_window_extent(), ax.get_window_extent()
    assert axes_box.x1 <= legend.x0 < axes_box.x1 + 0.1 * figure.bbox.width  # right beside the panel, not far off
    plt.close(figure)


def test_sensitivity_with_one_decay_pair_shows_accuracy_against_c(one_pair):
    figure = charts.sensitivity_heatmaps(one_pair)
    (ax,) = panels(figure)
    assert ax.get_xlabel() == charts.C and ax.get_xscale() == "linear"
    assert "fixed: α_fwd = 1-2^-10, α_bkw = 1-2^-7" in figure.get_suptitle()
    points = sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
    assert points == 10  # 5 clamp values x 2 seeds
    (median,) = ax.get_lines()
    assert list(median.get_xdata()) == list(fx.ONE_PAIR_CLAMPS)
    plt.close(figure)


def test_sensitivity_on_a_decay_grid_is_one_heatmap_per_clamp_value(results):
    figure = charts.sensitivity_heatmaps(results)
    assert [ax.get_title() for ax in panels(figure)] == ["c = 1", "c = 2", "c = 8"]
    assert [t.get_text() for t in panels(figure)[0].get_yticklabels()] == ["1-1e-2", "1-1e-3"]
    assert len(colorbars(figure)) == 1
    plt.close(figure)


def test_layer_heatmap_uses_a_log_colour_scale(one_pair):
    figure = charts.clamp_fraction_by_layer(one_pair)
    meshes = [c for ax in panels(figure) for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(meshes) == len(fx.ONE_PAIR_CLAMPS) == len(panels(figure))
    assert all(isinstance(mesh.norm, LogNorm) for mesh in meshes)
    # the c = 3 and c = 5 panels (fractions 2.7e-3 and 5.7e-7 times depth factors) get distinct colours
    c3, c5 = (meshes[fx.ONE_PAIR_CLAMPS.index(c)].get_array().mean() for c in (3.0, 5.0))
    assert meshes[0].norm(c5) < 0.2 < meshes[0].norm(c3) < 0.8
    assert [t.get_text() for t in panels(figure)[0].get_yticklabels()] == [
        "0 stem.norm",
        "1 layer1.0.norm1",
        "2 layer1.0.norm2",
    ]
    plt.close(figure)


def test_log_axes_label_decades_in_unicode_and_drop_crowded_minor_ticks(one_pair):
    figure = charts.accuracy_vs_clamp_fraction(one_pair)  # clamp fractions from about 1e-6 to 0.5
    figure.canvas.draw()
    ax = panels(figure)[0]
    low, high = ax.get_xlim()
    decades = [f"10{str(k).translate(charts._SUPERSCRIPTS)}" for k in range(-9, 2) if low <= 10.0**k <= high]
    labels = [t.get_text() for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high]
    assert len(decades) >= 5 and labels == decades  # matplotlib's ticks and text, without mathtext
    assert not ax.xaxis.get_minorticklocs().size  # six decades: minor ticks would be a grey band
    plt.close(figure)

    ticks = [0.1, 0.2, 0.3, 0.5, 1.0]
    labels = {}
    for kind in (charts._UnicodeLogLabels, LogFormatterSciNotation):
        formatter = kind(labelOnlyBase=False)
        formatter.create_dummy_axis()
        formatter.axis.set_view_interval(0.1, 1.0)  # one decade: matplotlib labels some minor ticks too
        formatter.set_locs(ticks)
        labels[kind] = [formatter(v) for v in ticks]
    assert labels[charts._UnicodeLogLabels] == ["10⁻¹", "2×10⁻¹", "3×10⁻¹", "", "10⁰"]
    assert [bool(text) for text in labels[LogFormatterSciNotation]] == [True, True, True, False, True]
    assert charts._FewDecadesMinorTicks().tick_values(0.1, 1.0).size  # one decade keeps its minor ticks


@pytest.mark.parametrize(
    "alpha, text", [(1 - 2**-10, "1-2^-10"), (0.5, "1-2^-1"), (0.999, "1-1e-3"), (0.9985, "1-1.5e-3"), (0.99, "1-1e-2")]
)
def test_decay_factors_are_written_as_one_minus_a_small_number(alpha, text):
    assert charts.format_decay(alpha) == text


def test_sampled_values_get_continuous_axes(sampled):
    assert all(charts.is_sampled(sampled, sampled.trials, key) for key in ("clamp_value", "alpha_fwd", "alpha_bkw"))
    figure = charts.sensitivity_heatmaps(sampled)
    assert [(ax.get_xlabel(), ax.get_xscale()) for ax in panels(figure)] == [
        (charts.C, "linear"),
        ("1 - α_fwd (log scale)", "log"),
        ("1 - α_bkw (log scale)", "log"),
    ]
    assert all(not ax.get_lines() for ax in panels(figure))  # no per-value medians: the values do not repeat
    plt.close(figure)
    figure = charts.accuracy_vs_clamp_fraction(sampled)
    assert len(panels(figure)) == 1 and len(colorbars(figure)) == 1  # c as a log colour scale, not 12 categories
    assert any(isinstance(c.norm, LogNorm) for c in colorbars(figure)[0].collections)
    assert not any(label.startswith("c = ") for label in legend_labels(figure))
    plt.close(figure)
    figure = charts.clamp_fraction_by_layer(sampled)
    assert len(panels(figure)) == 4 and all(ax.get_title().startswith("c in (") for ax in panels(figure))
    plt.close(figure)


def test_many_distinct_values_count_as_sampled_without_a_spec(sampled):
    without_spec = analysis.Results(sampled.trials, sampled.epochs, sampled.layers)
    assert charts.is_sampled(without_spec, sampled.trials, "clamp_value")  # 12 values > CATEGORY_LIMIT
    assert not charts.is_sampled(without_spec, sampled.trials, "seed")


def test_tables_work_on_sampled_values(sampled):
    assert tables.comparison(sampled.trials)["runs"].tolist() == [2]
    variability = tables.variability(sampled.trials)
    assert len(variability) == 12 and (variability["runs"] == 2).all()
    assert len(tables.best_settings(sampled.trials)) == 5
    assert tables.sensitivity(sampled.trials).empty  # no value of one parameter recurs with the others fixed


def test_a_chart_without_data_says_why(results):
    baselines_only = results.where(results.trials["baseline"])
    with pytest.raises(charts.NoData, match="no complete clamping trial"):
        charts.sensitivity_heatmaps(baselines_only)
    assert len(baselines_only.trials) == 4 and set(baselines_only.epochs["trial_id"]) == set(
        baselines_only.trials["trial_id"]
    )
