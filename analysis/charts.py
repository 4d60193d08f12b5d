"""The sensitivity charts: each a function of ``Results`` returning a figure.

Each chart is one seaborn call on a tidy frame whose columns are renamed to
what the reader should see (legend and facet titles name the variable).
A chart with nothing to show raises ``NoData`` with the reason. Nothing
here picks a matplotlib backend: notebooks show the figures inline, and
``onlinenorm report`` selects Agg.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from analysis.frames import KEYS, clamping, complete
from analysis.results import Results

C = "clamp value c"
A_FWD = "alpha_fwd (forward decay)"
A_BKW = "alpha_bkw (backward decay)"
NORMALIZER = "normalizer / ECM"
FRACTION = "fraction of activations clamped"
HEATMAP_CMAP = "viridis"
BASELINE_LINESTYLES = ["--", ":", "-.", (0, (5, 1))]
SIZE = 3.2  # inches per facet


class NoData(Exception):
    """The results hold nothing this chart can show; the message says why."""


def accuracy_vs_clamp_fraction(results: Results) -> Figure:
    """Best val_acc against mean clamp fraction (log x), one point per trial,
    hue by clamp value, facets by decay factors; crosses show mean +- sd over
    seeds; baselines are horizontal lines at their median best accuracy."""
    trials = complete(results.trials)
    data = trials[clamping(trials) & trials["clamp_fraction_mean"].gt(0)]
    _require(data, "no complete clamping trial with a positive clamp fraction")
    unit = _accuracy_unit(data["best_val_acc"])
    g = sns.relplot(data=_readable(data), x="clamp_fraction_mean", y="best_val_acc", hue=C, palette="viridis",
                    col=A_FWD, row=A_BKW, kind="scatter", height=SIZE, facet_kws={"margin_titles": True},
                    **_point_style(len(data)))
    g.map_dataframe(_seed_spread, x="clamp_fraction_mean", y="best_val_acc")
    g.set(xscale="log")
    g.tick_params(axis="x", which="minor", labelsize="x-small", labelrotation=45)
    g.set_axis_labels("mean clamp fraction (log scale)", f"best val. accuracy ({unit})")
    baselines = complete(results.trials).query("baseline").groupby("normalizer")["best_val_acc"].median()
    handles = [Line2D([], [], color="black", marker="+", markersize=10, linestyle="", label="mean ± sd over seeds")]
    for (name, value), style in zip(baselines.items(), BASELINE_LINESTYLES):
        g.refline(y=value, color="0.3", linestyle=style)
        handles.append(Line2D([], [], color="0.3", linestyle=style, label=f"{name} median {value:.3g}"))
    return _finish(g, "Accuracy vs fraction of clamped activations", handles, "reference")


def measured_vs_predicted_clamp_fraction(results: Results) -> Figure:
    """Mean measured clamp fraction per clamp value (line through the median,
    bars from min to max over trials) with the Gaussian prediction erfc(c / sqrt 2)."""
    trials = complete(results.trials)
    measured = trials[clamping(trials)].dropna(subset=["clamp_value", "clamp_fraction_mean"])
    _require(measured, "no complete clamping trial reported a clamp fraction")
    c = np.linspace(0.9 * measured["clamp_value"].min(), 1.1 * measured["clamp_value"].max(), 200)
    data = pd.concat([
        pd.DataFrame({C: measured["clamp_value"], FRACTION: measured["clamp_fraction_mean"],
                      "source": "measured (mean over training)"}),
        pd.DataFrame({C: c, FRACTION: np.vectorize(math.erfc)(c / math.sqrt(2)),
                      "source": "Gaussian prediction erfc(c/√2)"}),
    ], ignore_index=True)
    g = sns.relplot(data=data, x=C, y=FRACTION, hue="source", style="source", kind="line",
                    markers={"measured (mean over training)": "o", "Gaussian prediction erfc(c/√2)": ","},
                    estimator="median", errorbar=("pi", 100), err_style="bars", height=SIZE * 1.3, aspect=1.4)
    g.ax.set_yscale("log", nonpositive="mask")
    g.ax.set_ylim(bottom=0.1 * measured["clamp_fraction_mean"].where(lambda f: f > 0).min())
    g.set_axis_labels(f"{C} (units of the normalized activation's std)", f"{FRACTION} (log scale)")
    return _finish(g, "Measured vs predicted clamp fraction")


def sensitivity_heatmaps(results: Results) -> Figure:
    """Median best val_acc over alpha_fwd x alpha_bkw, one panel per clamp value."""
    trials = complete(results.trials)
    data = trials[clamping(trials)].dropna(subset=["alpha_fwd", "alpha_bkw", "clamp_value", "best_val_acc"])
    _require(data, "no complete clamping trial with decay factors and an accuracy")
    unit = _accuracy_unit(data["best_val_acc"])
    g = _heatmap_grid(_readable(data), facet=C, index=A_FWD, columns=A_BKW, values="best_val_acc",
                      label=f"median best validation accuracy ({unit})", fmt=".3f")
    return _finish(g, "Sensitivity of best accuracy to the decay factors, per clamp value")


def clamp_fraction_by_layer(results: Results) -> Figure:
    """Median clamp fraction per layer (rows, in model order) and epoch, one panel per clamp value."""
    clamped = results.trials[clamping(results.trials)][KEYS + ["clamp_value"]]
    data = results.layers.merge(clamped, on=KEYS)
    _require(data, "no clamping trial reported per-layer clamp fractions")
    width = len(str(data["depth"].max()))
    data["layer (depth)"] = data["depth"].astype(str).str.zfill(width) + " " + data["layer"]
    g = _heatmap_grid(_readable(data), facet=C, index="layer (depth)", columns="epoch", values="clamp_fraction",
                      label=f"median {FRACTION}", fmt=".2g")
    return _finish(g, "Where clamping fires: clamp fraction per layer over epochs")


def unclamped_vs_clamped_accuracy(results: Results) -> Figure:
    """val_acc with the clamp removed at inference against val_acc with it,
    at each trial's best epoch; points on the identity line lost nothing."""
    trials = complete(results.trials)
    data = trials[clamping(trials)].dropna(subset=["best_val_acc", "val_acc_unclamped_at_best"])
    _require(data, "no complete clamping trial reported val_acc_unclamped")
    unit = _accuracy_unit(data["best_val_acc"])
    g = sns.relplot(data=_readable(data), x="best_val_acc", y="val_acc_unclamped_at_best", hue=C,
                    palette="viridis", kind="scatter", height=SIZE * 1.3, **_point_style(len(data)))
    g.ax.axline((data["best_val_acc"].min(),) * 2, slope=1, color="0.3", linestyle="--")
    g.set_axis_labels(f"validation accuracy, clamped ({unit})", f"validation accuracy, clamp removed ({unit})")
    identity = Line2D([], [], color="0.3", linestyle="--", label="identity: no change")
    return _finish(g, "Removing the clamp at inference (at each trial's best epoch)", [identity], "reference")


def training_curves(results: Results) -> Figure:
    """val_acc and train_loss over epochs by normalizer/ECM (median line, band
    from the 25th to the 75th percentile over trials)."""
    metrics = {"val_acc": f"validation accuracy ({_accuracy_unit(results.epochs['val_acc'])})",
               "train_loss": "training loss (cross-entropy)"}
    data = (results.epochs.merge(results.trials[KEYS + ["normalizer"]], on=KEYS)
                          .melt(id_vars=["epoch", "normalizer"], value_vars=list(metrics), var_name="metric")
                          .dropna(subset=["value"])
                          .assign(metric=lambda d: d["metric"].map(metrics)))
    _require(data, "no trial reported val_acc or train_loss")
    g = sns.relplot(data=_readable(data), x="epoch", y="value", hue=NORMALIZER, col="metric", kind="line",
                    estimator="median", errorbar=("pi", 50), height=SIZE, aspect=1.3,
                    facet_kws={"sharey": False})
    g.set_titles("{col_name}")
    for name, ax in g.axes_dict.items():
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    g.set_xlabels("epoch")
    return _finish(g, "Training curves by normalizer")


CHARTS = {
    "accuracy_vs_clamp_fraction": accuracy_vs_clamp_fraction,
    "measured_vs_predicted_clamp_fraction": measured_vs_predicted_clamp_fraction,
    "sensitivity_heatmaps": sensitivity_heatmaps,
    "clamp_fraction_by_layer": clamp_fraction_by_layer,
    "unclamped_vs_clamped_accuracy": unclamped_vs_clamped_accuracy,
    "training_curves": training_curves,
}


def save_all(results: Results, out_dir: Path) -> dict[str, list[Path] | str]:
    """Write every chart as PNG and SVG; returns the files per chart, or why it was skipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path] | str] = {}
    for name, chart in CHARTS.items():
        try:
            figure = chart(results)
        except NoData as reason:
            written[name] = str(reason)
            continue
        written[name] = [out_dir / f"{name}.{ext}" for ext in ("png", "svg")]
        for path in written[name]:
            figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
    return written


def _heatmap_grid(data: pd.DataFrame, facet: str, index: str, columns: str, values: str,
                  label: str, fmt: str) -> sns.FacetGrid:
    """One heatmap panel per value of ``facet``, sharing one colour scale."""
    color_scale = Normalize(data[values].min(), data[values].max())
    g = sns.FacetGrid(data, col=facet, col_wrap=min(data[facet].nunique(), 4), height=SIZE, aspect=1.2,
                      sharex=False, sharey=False)
    g.map_dataframe(_heatmap_panel, index=index, columns=columns, values=values, norm=color_scale, fmt=fmt)
    g.set_axis_labels(columns, index)
    g.figure.colorbar(ScalarMappable(norm=color_scale, cmap=HEATMAP_CMAP), ax=g.axes.ravel().tolist(), label=label)
    return g


def _heatmap_panel(data: pd.DataFrame, index: str, columns: str, values: str, norm: Normalize, fmt: str,
                   **_facet_kws) -> None:
    table = data.pivot_table(index=index, columns=columns, values=values, aggfunc="median")
    rows, columns = table.shape
    sns.heatmap(table, ax=plt.gca(), cmap=HEATMAP_CMAP, vmin=norm.vmin, vmax=norm.vmax, cbar=False,
                annot=table.size <= 36, fmt=fmt,
                xticklabels=max(1, columns // 5), yticklabels=max(1, rows // 24))  # every k-th label


def _seed_spread(data: pd.DataFrame, x: str, y: str, **_facet_kws) -> None:
    """Mean +- sd cross for each setting run with more than one seed."""
    spread = data.groupby("setting")[[x, y]].agg(["mean", "std", "count"])
    spread = spread[spread[(x, "count")] > 1]
    plt.gca().errorbar(spread[(x, "mean")], spread[(y, "mean")], xerr=spread[(x, "std")], yerr=spread[(y, "std")],
                       fmt="+", color="black", markersize=10, capsize=2, linewidth=0.8)


def _readable(data: pd.DataFrame) -> pd.DataFrame:
    """Columns renamed for the reader; clamp values as ordered categories (one colour each)."""
    readable = data.rename(columns={"clamp_value": C, "alpha_fwd": A_FWD, "alpha_bkw": A_BKW,
                                    "normalizer": NORMALIZER})
    if C in readable:
        readable[C] = pd.Categorical(readable[C], categories=sorted(readable[C].dropna().unique()), ordered=True)
    return readable


def _point_style(n: int) -> dict:
    """Markers that stay readable from 2 points to 500."""
    return {"s": 60, "alpha": 0.9} if n <= 50 else {"s": 18, "alpha": 0.5, "linewidth": 0}


def _accuracy_unit(values: pd.Series) -> str:
    return "%" if values.max() > 1.5 else "fraction correct"


def _require(data: pd.DataFrame, reason: str) -> None:
    if data.empty:
        raise NoData(reason)


def _finish(g: sns.FacetGrid, title: str, handles: list | None = None, handles_title: str = "") -> Figure:
    g.figure.suptitle(title, y=1.02, fontsize="large")
    if handles:
        g.figure.legend(handles=handles, title=handles_title, loc="upper left", bbox_to_anchor=(1.0, 0.35),
                        frameon=False)
    return g.figure
