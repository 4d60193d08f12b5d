"""Clamp fraction against the Gaussian prediction: if the normalized
activations were standard normal, clamping at ``c`` would clamp a fraction

    p(c) = P(|y| > c) = erfc(c / sqrt(2))

of them. Per clamp value (and per layer depth where layers were recorded):
the ratio measured / p(c) of each run's mean clamp fraction over training,
averaged over runs, with its interval. A ratio above 1 means heavier tails
than Gaussian.

Verdicts: ``heavier`` (interval above ``TOLERANCE``), ``lighter`` (below
``1 / TOLERANCE``), ``gaussian`` (inside both), else ``inconclusive``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.frames import KEYS, trial_positions
from analysis.questions import stats
from analysis.questions.rows import no_clamping_run, number
from analysis.questions.rows import runs as count
from analysis.questions.stats import INCONCLUSIVE

QUESTION = "Is the clamp fraction what a Gaussian predicts?"
TOLERANCE = 1.25


def gaussian_tails(runs: pd.DataFrame, layers: pd.DataFrame, confidence: float) -> list[dict]:
    """Finding rows: kind ``gaussian`` per clamp value, ``gaussian_depth`` per clamp value and depth."""
    clamped = runs[runs["clamping"]].dropna(subset=["clamp_value", "clamp_fraction_mean"])
    if clamped.empty:
        return no_clamping_run(
            "Cannot compare clamp fractions with the Gaussian prediction",
            "no complete clamping run reported a clamp fraction",
            kind="gaussian",
            question=QUESTION,
        )
    per_run = clamped[KEYS + ["clamp_value", "clamp_fraction_mean"]].assign(depth=-1, layer="")
    by_layer = _layer_means(layers, clamped)
    measured = pd.concat([per_run, by_layer], ignore_index=True)
    predicted = {c: predicted_fraction(c) for c in measured["clamp_value"].unique()}  # one call per clamp value
    measured["ratio"] = measured["clamp_fraction_mean"] / measured["clamp_value"].map(predicted)
    measured["per_layer"] = measured["depth"].ge(0)  # the overall rows first, then per depth
    groups = [(key[1:], group) for key, group in measured.groupby(["per_layer", "clamp_value", "depth"], sort=True)]
    figures = stats.intervals([(group["ratio"].to_numpy(),) for _, group in groups], confidence)
    rows = []
    for ((c, depth), group), (ratio, low, high) in zip(groups, figures, strict=False):
        where = f"c={c:g}" if depth < 0 else f"c={c:g}, depth {depth} ({group['layer'].mode().iloc[0]})"
        predicted = predicted_fraction(c)
        verdict = _verdict(low, high)
        interval = "no interval" if np.isnan(low) else f"{confidence:.0%} CI [{number(low)}, {number(high)}]"
        rows.append(
            {
                "kind": "gaussian" if depth < 0 else "gaussian_depth",
                "question": QUESTION,
                "subject": where,
                "against": "erfc(c/sqrt(2))",
                "metric": "measured / predicted clamp fraction",
                "estimate": ratio,
                "ci_low": low,
                "ci_high": high,
                "n_runs": len(group),
                "verdict": verdict,
                "reason": "a single run gives no interval" if len(group) < 2 else None,
                "sentence": f"{where}: measured clamp fraction {number(group['clamp_fraction_mean'].mean())} against "
                f"the Gaussian {number(predicted)}: {number(ratio)}x ({interval}, {count(len(group))}): "
                f"{verdict}.",
            }
        )
    return rows


def predicted_fraction(c: float) -> float:
    """erfc(c / sqrt 2): the fraction of a standard normal beyond +-c."""
    return math.erfc(c / math.sqrt(2))


def _layer_means(layers: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Mean clamp fraction over epochs per run of ``runs`` and depth, with
    the run's KEYS and clamp value and the layer's name (as the first trial
    to report that depth named it).

    One ``np.bincount`` over integer keys instead of a groupby on string keys:
    ``layers`` has a row per trial, epoch and layer (millions in a large sweep).
    """
    position = trial_positions(layers, runs)
    shown = position >= 0
    depth = layers["depth"].to_numpy(dtype=np.int64)[shown]
    depths = int(depth.max()) + 1 if len(depth) else 0
    key = position[shown] * depths + depth
    count = np.bincount(key, minlength=len(runs) * depths)
    total = np.bincount(key, weights=layers["clamp_fraction"].to_numpy(dtype=float)[shown], minlength=len(count))
    present = np.flatnonzero(count)
    run, depth_of = np.divmod(present, depths) if depths else (present, present)
    first = layers["depth"][shown].drop_duplicates()
    names = pd.Series(layers.loc[first.index, "layer"].to_numpy(), index=first.to_numpy())
    means = runs[KEYS + ["clamp_value"]].iloc[run].reset_index(drop=True)
    return means.assign(
        depth=depth_of, layer=names.reindex(depth_of).to_numpy(), clamp_fraction_mean=total[present] / count[present]
    )


def _verdict(low: float, high: float) -> str:
    if np.isnan(low):
        return INCONCLUSIVE
    if low > TOLERANCE:
        return "heavier"
    if high < 1 / TOLERANCE:
        return "lighter"
    if low >= 1 / TOLERANCE and high <= TOLERANCE:
        return "gaussian"
    return INCONCLUSIVE
