"""The sensitivity charts: each a function of ``Results`` returning a figure.

Each chart aggregates with pandas first (a median per clamp value, epoch or
layer), then draws the few resulting points with matplotlib, so its cost does
not grow with the number of epochs reported. A chart with nothing to show
raises ``NoData`` with the reason. Nothing here picks a matplotlib backend:
notebooks show the figures inline, and ``onlinenorm report`` selects Agg.

Grid or sampled: a swept parameter is drawn as categories (one colour, panel
or heatmap cell per value) when the sweep repeats a few values, and on a
continuous axis (c linear, ``1 - alpha`` on a log axis, c as a log colour
scale) when it is sampled (named under ``space:`` in the spec, or more than
``CATEGORY_LIMIT`` distinct values). Decay factors are written as
``1-2^-10`` when ``1 - alpha`` is a power of two, else as ``1-1e-3``.
"""

from __future__ import annotations

import contextlib
import gc
import math
import multiprocessing
import re
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogFormatterSciNotation,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    NullLocator,
)
from matplotlib.transforms import Bbox

from analysis.frames import DECAY_KEYS, KEYS, clamping, complete, power_of_two_decay_text, trial_positions
from analysis.questions.gaussian import predicted_fraction
from analysis.results import Results

C = "clamp value c"
FRACTION = "fraction of activations clamped"
DECAYS = dict(zip(DECAY_KEYS, ("α_fwd", "α_bkw"), strict=True))  # decay key -> its symbol
CMAP = "viridis"
BASELINE_LINESTYLES = ["--", ":", "-.", (0, (5, 1))]
CATEGORY_LIMIT = 8  # more distinct values than this: a continuous axis
PANEL = (4.8, 3.6)  # inches per panel
DPI = 100
MINOR_TICK_DECADES = 3  # a log axis spanning more decades than this gets no minor ticks


class NoData(Exception):
    """The results hold nothing this chart can show; the message says why."""


def format_decay(alpha: float) -> str:
    """A decay factor as a reader thinks of it, for tick labels and titles.

    Args:
        alpha: the decay factor.

    Returns:
        ``1-2^-10`` when ``1 - alpha`` is a power of two; else ``1-1e-3``, ``1 - alpha``
        with two significant digits at most; ``alpha`` as ``{:g}`` when ``1 - alpha``
        is not in (0, 1).
    """
    gap = 1.0 - float(alpha)
    if not 0.0 < gap < 1.0:
        return f"{alpha:g}"
    if text := power_of_two_decay_text(alpha):
        return text
    mantissa, power = f"{gap:.1e}".split("e")
    return f"1-{mantissa.rstrip('0').rstrip('.')}e{int(power)}"


def is_sampled(results: Results, trials: pd.DataFrame, column: str) -> bool:
    """Whether ``column`` was sampled rather than taken from a few grid values.

    Args:
        results: the results whose specs say which keys were sampled.
        trials: the trials the chart draws.
        column: a config key, e.g. ``"clamp_value"``.

    Returns:
        True when a spec names ``column`` under ``space:``, or ``trials[column]`` takes
        more than ``CATEGORY_LIMIT`` distinct values.
    """
    return column in _sampled_keys(results) or trials[column].nunique() > CATEGORY_LIMIT


def accuracy_vs_clamp_fraction(results: Results) -> Figure:
    """Best val_acc against mean clamp fraction, one point per clamping trial.

    The x axis is logarithmic. Points are coloured by clamp value (a log colour
    bar when c was sampled), with one panel per decay-factor pair where the
    sweep ran several on a grid; crosses show mean +- sd over the seeds of each
    setting run more than once; baselines (batch norm, online norm with layer
    scaling) are horizontal lines at their median best accuracy.

    Args:
        results: the loaded results; the chart uses the complete trials of ``trials``
            (online norm with activation clamping, a positive ``clamp_fraction_mean``,
            ``best_val_acc``; baselines when there are some).

    Returns:
        The figure.

    Raises:
        NoData: no complete clamping trial has a positive mean clamp fraction.
    """
    trials = complete(results.trials)
    data = trials[clamping(trials) & trials["clamp_fraction_mean"].gt(0)]
    _require(data, "no complete clamping trial with a positive clamp fraction")
    panels = _decay_panels(results, data)
    fig, axes = _panels(len(panels), share=True, scale=1.3 if len(panels) == 1 else 1.0)
    colors, legend = _clamp_colors(results, data, fig, axes)
    for ax, (title, rows) in zip(axes, panels, strict=False):
        ax.scatter(
            rows["clamp_fraction_mean"], rows["best_val_acc"], c=list(colors[rows.index]), **_point_style(len(data))
        )
        _seed_spread(ax, rows, "clamp_fraction_mean", "best_val_acc")
        _log_scale(ax, "x")
        _panel_title(ax, title)
    baselines = trials.query("baseline").groupby("normalizer")["best_val_acc"].median()
    legend.append(Line2D([], [], color="black", marker="+", markersize=10, linestyle="", label="mean ± sd over seeds"))
    for (name, value), style in zip(baselines.items(), BASELINE_LINESTYLES, strict=False):
        for ax in axes:
            ax.axhline(value, color="0.3", linestyle=style, linewidth=1)
        legend.append(Line2D([], [], color="0.3", linestyle=style, label=f"{name} median {value:.3g}"))
    _labels(
        fig, axes, "mean clamp fraction (log scale)", f"best val. accuracy ({_accuracy_unit(data['best_val_acc'])})"
    )
    return _finish(fig, "Accuracy vs fraction of clamped activations", legend)


def measured_vs_predicted_clamp_fraction(results: Results) -> Figure:
    """Measured clamp fraction per clamp value, against the Gaussian prediction erfc(c / sqrt 2).

    The measured fraction is each trial's mean over training: the median over
    trials with a bar from min to max for grid values, one point per trial
    for sampled c. The y axis is logarithmic (zero fractions are not drawn).

    Args:
        results: the loaded results; the chart uses the complete clamping trials of
            ``trials`` with a ``clamp_value`` and a ``clamp_fraction_mean``.

    Returns:
        The figure: one panel, measured and predicted fraction against c.

    Raises:
        NoData: no complete clamping trial reported a clamp fraction.
    """
    trials = complete(results.trials)
    measured = trials[clamping(trials)].dropna(subset=["clamp_value", "clamp_fraction_mean"])
    _require(measured, "no complete clamping trial reported a clamp fraction")
    fig, (ax,) = _panels(1, scale=1.3)
    if is_sampled(results, measured, "clamp_value"):
        ax.scatter(
            measured["clamp_value"],
            measured["clamp_fraction_mean"].where(lambda f: f > 0),
            color="C0",
            label="measured (mean over training), one point per trial",
            **_point_style(len(measured)),
        )
    else:
        spread = measured.groupby("clamp_value")["clamp_fraction_mean"].agg(["median", "min", "max"])
        ax.errorbar(
            spread.index,
            spread["median"],
            yerr=[spread["median"] - spread["min"], spread["max"] - spread["median"]],
            fmt="o-",
            color="C0",
            capsize=3,
            label="measured (mean over training): median, min-max over trials",
        )
    c = np.linspace(0.9 * measured["clamp_value"].min(), 1.1 * measured["clamp_value"].max(), 200)
    ax.plot(c, [predicted_fraction(v) for v in c], color="C1", label="Gaussian prediction erfc(c/√2)")
    _log_scale(ax, "y", nonpositive="mask")
    positive = measured["clamp_fraction_mean"].where(lambda f: f > 0).min()
    if positive == positive:
        ax.set_ylim(bottom=0.1 * positive)
    ax.legend(loc="lower left", frameon=False, fontsize="small")
    _labels(fig, [ax], f"{C} (units of the normalized activation's std)", f"{FRACTION} (log scale)")
    return _finish(fig, "Measured vs predicted clamp fraction")


def sensitivity_heatmaps(results: Results) -> Figure:
    """Median best val_acc over what the sweep varied among c, alpha_fwd and alpha_bkw.

    With both decay factors on a grid of several values (and c on a grid): an
    alpha_fwd x alpha_bkw heatmap per clamp value, one colour scale. Otherwise
    (one decay factor varied, none, or sampled values): best accuracy against
    each varied parameter, one panel each (c linear, ``1 - alpha`` log), a
    point per trial and the median per grid value; the parameters held fixed
    are named in the title.

    Args:
        results: the loaded results; the chart uses the complete clamping trials of
            ``trials`` with a ``clamp_value`` and a ``best_val_acc``.

    Returns:
        The figure.

    Raises:
        NoData: no complete clamping trial has a clamp value and an accuracy, or
            they all ran a single clamp value and decay pair.
    """
    trials = complete(results.trials)
    data = trials[clamping(trials)].dropna(subset=["clamp_value", "best_val_acc"])
    _require(data, "no complete clamping trial with a clamp value and an accuracy")
    unit = _accuracy_unit(data["best_val_acc"])
    decays = [d for d in DECAYS if d in data and data[d].nunique() > 1]
    if (
        len(decays) == 2
        and not any(is_sampled(results, data, d) for d in decays)
        and not is_sampled(results, data, "clamp_value")
    ):
        return _decay_heatmaps(data, unit)
    varied = [p for p in ["clamp_value", *DECAYS] if p in data and data[p].nunique() > 1]
    if not varied:
        raise NoData("the clamping trials ran a single clamp value and decay pair")
    fig, axes = _panels(len(varied), scale=1.3 if len(varied) == 1 else 1.0)
    for ax, parameter in zip(axes, varied, strict=False):
        x = data[parameter] if parameter == "clamp_value" else 1 - data[parameter]
        ax.scatter(x, data["best_val_acc"], color="C0", **_point_style(len(data)))
        if not is_sampled(results, data, parameter):
            medians = data["best_val_acc"].groupby(x).median()
            ax.plot(medians.index, medians.to_numpy(), "o-", color="C1", label="median over runs")
        if parameter == "clamp_value":
            ax.set_xlabel(C)
        else:
            _log_scale(ax, "x")
            ax.set_xlabel(f"1 - {DECAYS[parameter]} (log scale)")
            ax.xaxis.set_minor_formatter(NullFormatter())
            if not is_sampled(results, data, parameter):
                ax.xaxis.set_major_locator(FixedLocator(sorted(x.unique())))
                ax.xaxis.set_minor_locator(NullLocator())
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_decay(1 - v).removeprefix("1-")))
    fixed = [
        f"{DECAYS.get(p, 'c')} = {format_decay(data[p].iloc[0]) if p in DECAYS else f'{data[p].iloc[0]:g}'}"
        for p in ["clamp_value", *DECAYS]
        if p in data and p not in varied
    ]
    axes[0].set_ylabel(f"best val. accuracy ({unit})")
    handles = axes[0].get_legend_handles_labels()[0]
    title = "Sensitivity of best accuracy to what the sweep varied" + (
        f"\n(fixed: {', '.join(fixed)})" if fixed else ""
    )
    return _finish(fig, title, handles)


def clamp_fraction_by_layer(results: Results) -> Figure:
    """Median clamp fraction per layer and epoch, one heatmap panel per clamp value.

    Rows are layers in model order (depth 0 on top), columns epochs; a panel per
    clamp value, or per quartile range of c when c was sampled; a log colour
    scale, grey where no activation was clamped. Unlike the other charts it
    does not itself leave out incomplete trials: pass ``results.where(...)`` to
    restrict it (``write_report`` passes the complete trials only).

    Args:
        results: the loaded results; the chart uses the clamping trials of ``trials``
            with a ``clamp_value``, and their rows of ``layers``.

    Returns:
        The figure.

    Raises:
        NoData: no clamping trial has a clamp value, none reported per-layer clamp
            fractions, or every such fraction is zero.
    """
    clamped = results.trials.loc[clamping(results.trials), KEYS + ["clamp_value"]].dropna()
    _require(clamped, "no clamping trial with a clamp value")
    if is_sampled(results, clamped, "clamp_value"):
        ranges = pd.qcut(clamped["clamp_value"], 4, duplicates="drop")
        clamped["panel"] = ranges.cat.rename_categories(
            [f"c in ({r.left:.2g}, {r.right:.2g}]" for r in ranges.cat.categories]
        )
    else:
        values = sorted(clamped["clamp_value"].unique())
        clamped["panel"] = pd.Categorical(clamped["clamp_value"], categories=values).rename_categories(
            [f"c = {v:g}" for v in values]
        )
    layers = results.layers
    position = trial_positions(layers, clamped)
    shown = position >= 0
    data = pd.DataFrame(  # integer keys: a groupby over millions of rows
        {
            "panel": clamped["panel"].array.take(position[shown]),
            "depth": layers["depth"].to_numpy()[shown],
            "epoch": layers["epoch"].to_numpy()[shown],
            "clamp_fraction": layers["clamp_fraction"].to_numpy()[shown],
        }
    )
    _require(data, "no clamping trial reported per-layer clamp fractions")
    medians = data.groupby(["panel", "depth", "epoch"], observed=True)["clamp_fraction"].median()
    first = layers["depth"][shown].drop_duplicates()
    names = pd.Series(layers.loc[first.index, "layer"].to_numpy(), index=first.to_numpy()).sort_index()
    positive = medians[medians > 0]
    _require(positive, "every per-layer clamp fraction is zero")
    norm = LogNorm(positive.min(), positive.max() if positive.max() > positive.min() else positive.min() * 10)
    cmap = plt.get_cmap(CMAP).with_extremes(bad="0.85", under="0.85")
    panels = [p for p in clamped["panel"].cat.categories if p in medians.index.unique("panel")]
    # The layer names label the first column only; the other panels get no y ticks at all (a tick is
    # two lines and two texts: with 20 layers, unlabelled ticks were half of this chart's drawing).
    fig, axes = _panels(len(panels), share=True, share_y=False)
    for ax, panel in zip(axes, panels, strict=False):
        table = medians.loc[panel].unstack("epoch").reindex(names.index)  # every depth: the same rows
        mesh = ax.pcolormesh(
            table.columns,
            np.arange(len(table.index)),
            table.where(table > 0).to_numpy(),
            cmap=cmap,
            norm=norm,
            shading="nearest",
            rasterized=True,
        )
        if ax.get_subplotspec().is_first_col():
            step = max(1, len(table.index) // 20)
            ax.set_yticks(
                np.arange(0, len(table.index), step),
                [f"{d} {names.get(d, '')}" for d in table.index[::step]],
                fontsize="x-small",
            )
        else:
            ax.yaxis.set_major_locator(NullLocator())
        ax.set_ylim(len(table.index) - 0.5, -0.5)  # depth 0 on top
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        _panel_title(ax, panel)
    _labels(fig, axes, "epoch", "layer (depth, name)")
    bar = fig.colorbar(mesh, ax=axes, label=f"median {FRACTION} (log scale; grey: none)", shrink=0.8)
    _log_ticks(bar.ax.yaxis)
    return _finish(fig, "Where clamping fires: clamp fraction per layer over epochs")


def unclamped_vs_clamped_accuracy(results: Results) -> Figure:
    """val_acc with the clamp removed at inference against val_acc with it.

    One point per trial at its best epoch, coloured by clamp value; points on
    the identity line lost nothing by removing the clamp.

    Args:
        results: the loaded results; the chart uses the complete clamping trials of
            ``trials`` with ``best_val_acc`` and ``val_acc_unclamped_at_best``.

    Returns:
        The figure: one panel, unclamped against clamped accuracy.

    Raises:
        NoData: no complete clamping trial reported ``val_acc_unclamped``.
    """
    trials = complete(results.trials)
    data = trials[clamping(trials)].dropna(subset=["best_val_acc", "val_acc_unclamped_at_best"])
    _require(data, "no complete clamping trial reported val_acc_unclamped")
    unit = _accuracy_unit(data["best_val_acc"])
    fig, (ax,) = _panels(1, scale=1.3)
    colors, legend = _clamp_colors(results, data, fig, [ax])
    ax.scatter(
        data["best_val_acc"], data["val_acc_unclamped_at_best"], c=list(colors[data.index]), **_point_style(len(data))
    )
    ax.axline((data["best_val_acc"].min(),) * 2, slope=1, color="0.3", linestyle="--")
    legend.append(Line2D([], [], color="0.3", linestyle="--", label="identity: no change"))
    _labels(fig, [ax], f"validation accuracy, clamped ({unit})", f"validation accuracy, clamp removed ({unit})")
    return _finish(fig, "Removing the clamp at inference (at each trial's best epoch)", legend)


def training_curves(results: Results) -> Figure:
    """val_acc and train_loss over epochs by normalizer/ECM.

    Two panels, one line per normalizer: the median over trials, with a band
    from the 25th to the 75th percentile. Unlike the other charts it does not
    itself leave out incomplete trials: pass ``results.where(...)`` to
    restrict it (``write_report`` passes the complete trials only).

    Args:
        results: the loaded results; the chart uses ``epochs`` (``val_acc``,
            ``train_loss``) and the ``normalizer`` column of ``trials``.

    Returns:
        The figure.

    Raises:
        NoData: no trial reported val_acc or train_loss.
    """
    metrics = {
        "val_acc": f"validation accuracy ({_accuracy_unit(results.epochs['val_acc'])})",
        "train_loss": "training loss (cross-entropy)",
    }
    data = results.epochs[KEYS + ["epoch", *metrics]].merge(results.trials[KEYS + ["normalizer"]], on=KEYS)
    quantiles = data.groupby(["normalizer", "epoch"])[list(metrics)].quantile([0.25, 0.5, 0.75]).unstack()
    quantiles = quantiles.dropna(how="all")
    _require(quantiles, "no trial reported val_acc or train_loss")
    fig, axes = _panels(2, scale=1.0)
    for ax, (metric, label) in zip(axes, metrics.items(), strict=False):
        for color, (normalizer, rows) in enumerate(quantiles.groupby(level="normalizer")):
            epochs = rows.index.get_level_values("epoch")
            ax.plot(epochs, rows[(metric, 0.5)], color=f"C{color}", label=normalizer)
            ax.fill_between(
                epochs, rows[(metric, 0.25)], rows[(metric, 0.75)], color=f"C{color}", alpha=0.2, linewidth=0
            )
        _panel_title(ax, label)
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _labels(fig, axes, "epoch", None)
    return _finish(
        fig, "Training curves by normalizer (median, 25-75th percentile band)", axes[0].get_legend_handles_labels()[0]
    )


CHARTS = {
    "accuracy_vs_clamp_fraction": accuracy_vs_clamp_fraction,
    "measured_vs_predicted_clamp_fraction": measured_vs_predicted_clamp_fraction,
    "sensitivity_heatmaps": sensitivity_heatmaps,
    "clamp_fraction_by_layer": clamp_fraction_by_layer,
    "unclamped_vs_clamped_accuracy": unclamped_vs_clamped_accuracy,
    "training_curves": training_curves,
}

COSTLIEST = ("clamp_fraction_by_layer", "accuracy_vs_clamp_fraction")  # most panels and text


def save_all(results: Results, out_dir: Path, workers: int = 1) -> dict[str, list[Path] | str]:
    """Write every chart of ``CHARTS`` as ``<name>.png``.

    Args:
        results: the results to draw.
        out_dir: the folder to write into; created, with its parents, if needed.
        workers: how many forked processes draw the charts (default 1: this
            process); see ``saving``.

    Returns:
        Chart name -> a list holding its PNG's path, or the ``NoData`` message that
        says why it was not drawn.
    """
    with saving(results, out_dir, workers) as drawn:
        return drawn()


@contextlib.contextmanager
def saving(results: Results, out_dir: Path, workers: int = 1) -> Iterator[Callable[[], dict[str, list[Path] | str]]]:
    """Start writing every chart, and let the caller work meanwhile.

    ``workers > 1`` draws the charts in that many forked processes, started
    on entry: each inherits ``results`` without copying it, so the caller's own
    work (the findings, the tables) runs beside them. Off Linux (macOS's
    system libraries are not fork-safe, Windows cannot fork), or with
    ``workers <= 1``, the charts are drawn in this process when the yielded
    function is called. On exit the processes are waited for.

    Args:
        results: the results to draw.
        out_dir: the folder to write into; created, with its parents, on entry.
        workers: how many forked processes draw the charts (default 1: none).

    Yields:
        A function that waits for the charts and returns what ``save_all`` returns:
        chart name -> a list holding its PNG's path, or why it was not drawn.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if workers <= 1 or not sys.platform.startswith("linux"):
        yield lambda: {name: _save(results, name, out_dir) for name in CHARTS}
        return
    global _FORKED_RESULTS
    _FORKED_RESULTS = results
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            order = sorted(CHARTS, key=lambda name: name not in COSTLIEST)  # the slowest two start first
            gc.freeze()  # the workers fork at the first submit: their collections skip what they inherit
            try:
                pending = {name: pool.submit(_save_forked, name, out_dir) for name in order}
            finally:
                gc.unfreeze()
            yield lambda: {name: pending[name].result() for name in CHARTS}
    finally:
        _FORKED_RESULTS = None


_FORKED_RESULTS: Results | None = None


def _save_forked(name: str, out_dir: Path) -> list[Path] | str:
    return _save(_FORKED_RESULTS, name, out_dir)


def _save(results: Results, name: str, out_dir: Path) -> list[Path] | str:
    try:
        figure = CHARTS[name](results)
    except NoData as reason:
        return str(reason)
    path = out_dir / f"{name}.png"
    figure.savefig(path, dpi=DPI, bbox_inches=tight_bbox(figure))
    plt.close(figure)
    return [path]


def tight_bbox(figure: Figure) -> Bbox:
    """The box that ``savefig(bbox_inches="tight")`` crops to, measured without a full draw.

    savefig's tight box first runs a full draw (rendering switched off) to
    settle layout engines and automatic title positions, which these charts do
    not use: measuring directly gives the same pixels for a fifteenth less work.
    Sets the figure's dpi to ``DPI`` first.

    Args:
        figure: a figure drawn by this module (no layout engine, fixed titles).

    Returns:
        The box in inches, padded by ``rcParams["savefig.pad_inches"]``: pass it as
        ``savefig(..., bbox_inches=tight_bbox(figure))``.
    """
    figure.set_dpi(DPI)
    return figure.get_tightbbox(figure.canvas.get_renderer()).padded(plt.rcParams["savefig.pad_inches"])


def _decay_heatmaps(data: pd.DataFrame, unit: str) -> Figure:
    """One alpha_fwd x alpha_bkw heatmap of median best accuracy per clamp value, one colour scale."""
    medians = data.groupby(["clamp_value", "alpha_fwd", "alpha_bkw"])["best_val_acc"].median()
    norm = plt.Normalize(medians.min(), medians.max())
    clamp_values = list(medians.index.unique("clamp_value"))
    forward, backward = sorted(data["alpha_fwd"].unique()), sorted(data["alpha_bkw"].unique())
    fig, axes = _panels(len(clamp_values), share=True)
    for ax, c in zip(axes, clamp_values, strict=False):
        table = medians.loc[c].unstack("alpha_bkw").reindex(index=forward, columns=backward)  # shared axes
        mesh = ax.imshow(table.to_numpy(), cmap=CMAP, norm=norm, aspect="auto")
        ax.set_xticks(range(len(table.columns)), [format_decay(a) for a in table.columns], fontsize="small")
        ax.set_yticks(range(len(table.index)), [format_decay(a) for a in table.index], fontsize="small")
        for (i, j), value in np.ndenumerate(table.to_numpy()):
            if value == value and table.size <= 36:
                ax.text(
                    j,
                    i,
                    f"{value:.3f}",
                    ha="center",
                    va="center",
                    fontsize="x-small",
                    color="white" if norm(value) < 0.5 else "black",
                )
        _panel_title(ax, f"c = {c:g}")
    _labels(fig, axes, f"{DECAYS['alpha_bkw']} (backward decay)", f"{DECAYS['alpha_fwd']} (forward decay)")
    fig.colorbar(mesh, ax=axes, label=f"median best val. accuracy ({unit})", shrink=0.8)
    return _finish(fig, "Sensitivity of best accuracy to the decay factors, per clamp value")


def _decay_panels(results: Results, data: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, trials) per decay-factor pair when the sweep ran several on a grid; else one panel."""
    decays = [d for d in DECAYS if d in data]
    if len(decays) < 2 or any(is_sampled(results, data, d) for d in decays) or len(data.groupby(decays).size()) < 2:
        return [("", data)]
    return [
        (f"{DECAYS['alpha_fwd']} = {format_decay(f)}, {DECAYS['alpha_bkw']} = {format_decay(b)}", rows)
        for (f, b), rows in data.groupby(decays)
    ]


def _clamp_colors(results: Results, data: pd.DataFrame, fig: Figure, axes) -> tuple[pd.Series, list]:
    """A colour per trial by clamp value, and the legend handles: one per grid
    value, or a log colour bar when c was sampled."""
    c = data["clamp_value"]
    cmap = plt.get_cmap(CMAP)
    if is_sampled(results, data, "clamp_value"):
        norm = LogNorm(c.min(), c.max() if c.max() > c.min() else c.min() * 2)
        bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label=f"{C} (log scale)", shrink=0.8)
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        return pd.Series(list(cmap(norm(c.to_numpy()))), index=data.index), []
    values = sorted(c.unique())
    palette = {v: cmap(i / max(1, len(values) - 1)) for i, v in enumerate(values)}
    handles = [Line2D([], [], color=palette[v], marker="o", linestyle="", label=f"c = {v:g}") for v in values]
    return c.map(palette), handles


def _seed_spread(ax, data: pd.DataFrame, x: str, y: str) -> None:
    """Mean +- sd cross for each setting run with more than one seed."""
    spread = data.groupby("setting")[[x, y]].agg(["mean", "std", "count"])
    spread = spread[spread[(x, "count")] > 1]
    ax.errorbar(
        spread[(x, "mean")],
        spread[(y, "mean")],
        xerr=spread[(x, "std")],
        yerr=spread[(y, "std")],
        fmt="+",
        color="black",
        markersize=10,
        capsize=2,
        linewidth=0.8,
    )


def _sampled_keys(results: Results) -> set[str]:
    """The keys the experiments' specs sample (their ``space:`` section)."""
    keys = set()
    for text in results.specs.values():
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if isinstance(spec, dict) and isinstance(spec.get("space"), dict):
            keys |= set(spec["space"])
    return keys


def _log_scale(ax, which: str, **options) -> None:
    """Put the ``which`` ("x" or "y") axis of ``ax`` on a log scale, with ``_log_ticks``."""
    getattr(ax, f"set_{which}scale")("log", **options)
    _log_ticks(getattr(ax, f"{which}axis"))


def _log_ticks(axis) -> None:
    """Log-axis ticks that are cheap to draw: matplotlib's labels written in
    Unicode instead of mathtext, and minor ticks only over a few decades."""
    axis.set_major_formatter(_UnicodeLogLabels())
    axis.set_minor_formatter(_UnicodeLogLabels(labelOnlyBase=False))
    axis.set_minor_locator(_FewDecadesMinorTicks())


_SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_MATHTEXT_POWER = re.compile(r"\^\{(-?\d+)\}")


class _UnicodeLogLabels(LogFormatterSciNotation):
    """matplotlib's log-axis labels (``10⁻³``, ``2×10⁻¹``, ``1``), as the same
    text in Unicode: each mathtext label costs a parse and a layout of its own,
    about a third of the time a figure with log axes takes to save."""

    def __call__(self, x, pos=None) -> str:
        text = super().__call__(x, pos).removeprefix("$\\mathdefault{").removesuffix("}$")
        text = _MATHTEXT_POWER.sub(lambda power: power.group(1).translate(_SUPERSCRIPTS), text)
        return text.replace("\\times", "×").replace("-", "−")


class _FewDecadesMinorTicks(LogLocator):
    """Minor ticks at 2..9 x 10^k while the axis spans at most ``MINOR_TICK_DECADES``
    decades; none beyond, where they would crowd into a grey band."""

    def __init__(self):
        super().__init__(subs="auto")

    def tick_values(self, vmin: float, vmax: float) -> np.ndarray:
        low, high = sorted((vmin, vmax))
        if low > 0 and high / low > 10.0**MINOR_TICK_DECADES:
            return np.array([])
        return super().tick_values(vmin, vmax)


def _panels(
    n: int, columns: int = 3, scale: float = 1.0, share: bool = False, share_y: bool | None = None
) -> tuple[Figure, list]:
    """A figure of ``n`` panels, ``columns`` to a row, spaced for their tick
    labels and titles (fixed spacing: a third cheaper to draw than a layout
    engine); ``share``: one x and one y scale, ticks labelled on the outer
    panels only (``share_y=False``: one x scale only, spaced the same: the
    caller gives the panels the same y limits and labels the first column).
    Titles and the legend lie outside the panels' box, so save with
    ``bbox_inches="tight"`` (as notebooks show figures)."""
    cols = min(n, columns)
    rows = math.ceil(n / cols)
    width, height = PANEL[0] * scale, PANEL[1] * scale
    share_y = share if share_y is None else share_y
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, height * rows), squeeze=False, sharex=share, sharey=share_y
    )
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1, wspace=0.12 if share else 0.3, hspace=0.3)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.remove()
    for ax in flat[n - cols : n]:  # the lowest panel of each column shows its x ticks
        ax.xaxis.set_tick_params(labelbottom=True)
    return fig, flat[:n]


def _panel_title(ax, text: str) -> None:
    """A panel's title, at a fixed height above it: matplotlib's automatic
    placement measures the panel's tick labels on every draw (a sixth of
    these charts' cost) to clear tick labels these panels never have on top."""
    ax.set_title(text, fontsize="medium", y=1.0)


def _labels(fig: Figure, axes: list, x: str, y: str | None) -> None:
    """Axis labels on the bottom row and the left column only."""
    for ax in axes:
        spec = ax.get_subplotspec()
        ax.set_xlabel(x if ax in axes[-spec.get_gridspec().ncols :] else "")
        if y is not None:
            ax.set_ylabel(y if spec.is_first_col() else "")


def _point_style(n: int) -> dict:
    """Markers that stay readable from 2 points to 1,000."""
    return {"s": 50, "alpha": 0.9} if n <= 50 else {"s": 14, "alpha": 0.5, "linewidth": 0}


def _accuracy_unit(values: pd.Series) -> str:
    return "%" if values.max() > 1.5 else "fraction correct"


def _require(data: pd.DataFrame | pd.Series, reason: str) -> None:
    if data.empty:
        raise NoData(reason)


def _finish(fig: Figure, title: str, handles: list | None = None) -> Figure:
    fig.suptitle(title, fontsize="large", y=1 + 0.35 / fig.get_figheight(), va="bottom")
    if handles:
        right = max(ax.get_position().x1 for ax in fig.axes)  # beside the panels or their colour bar
        gap = 0.7 if any(ax.get_label() == "<colorbar>" for ax in fig.axes) else 0.15  # inches
        fig.legend(
            handles=handles,
            loc="center left",
            bbox_to_anchor=(right + gap / fig.get_figwidth(), 0.5),
            frameon=False,
            fontsize="small",
        )
    return fig
