"""Which knob matters: the share of the variance of best accuracy that each
swept parameter explains over the complete clamping runs (its main effect,
the correlation ratio eta^2):

    share(p) = sum_v n_v (mean_v - mean)^2 / sum_i (y_i - mean)^2

where ``v`` runs over the values of ``p``, ``n_v`` and ``mean_v`` are the
number and mean best accuracy of the runs at ``v``. In a balanced grid the
shares of independent parameters add up, with the rest left to interactions;
``seed`` is reported too, as run-to-run noise. The interval resamples runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.questions import stats
from analysis.questions.rows import runs as count
from analysis.questions.rows import unsupported
from analysis.questions.runs import swept

QUESTION = "Which knob matters?"


def knob_shares(runs: pd.DataFrame, confidence: float) -> list[dict]:
    """Finding rows (kind ``knob``), one per swept parameter, largest share first."""
    clamped = runs[runs["clamping"]].dropna(subset=["best_val_acc"])
    parameters = swept(clamped)
    accuracy = clamped["best_val_acc"].to_numpy(dtype=float)
    if len(clamped) < 3 or not parameters or accuracy.var() == 0:
        reason = (
            "fewer than three complete clamping runs"
            if len(clamped) < 3
            else "no parameter varies among the clamping runs"
            if not parameters
            else "every clamping run reached the same best accuracy"
        )
        return [
            unsupported(reason, "Cannot tell which knob matters", kind="knob", question=QUESTION, subject="clamping")
        ]
    shares = _shares(clamped, parameters, confidence)
    n_failed = int(clamped["failed"].sum())
    without = _shares(clamped[~clamped["failed"]], parameters, confidence) if n_failed else {}
    rows = []
    for parameter in sorted(parameters, key=lambda p: -shares[p][0]):
        share, low, high = shares[parameter]
        what = "seed (run-to-run noise)" if parameter == "seed" else parameter
        row = {
            "kind": "knob",
            "question": QUESTION,
            "subject": parameter,
            "metric": "share of variance of best_val_acc",
            "estimate": share,
            "ci_low": low,
            "ci_high": high,
            "n_runs": len(clamped),
            "verdict": "measured",
            "n_failed": n_failed,
            "sentence": f"{what} explains {share:.0%} of the variance of best accuracy over "
            f"{count(len(clamped), 'clamping run')} ({confidence:.0%} CI [{low:.0%}, {high:.0%}])",
        }
        if n_failed:
            share, low, high = without[parameter]
            row |= {
                "estimate_without_failed": share,
                "ci_low_without_failed": low,
                "ci_high_without_failed": high,
                "verdict_without_failed": "measured",
            }
            row["sentence"] += (
                f"; without the {count(n_failed)} that failed to learn: {share:.0%} ([{low:.0%}, {high:.0%}])"
            )
        rows.append(row | {"sentence": row["sentence"] + "."})
    return rows


def _shares(runs: pd.DataFrame, parameters: list[str], confidence: float) -> dict[str, np.ndarray]:
    """``{parameter: (share, ci_low, ci_high)}`` over ``runs``."""
    accuracy = runs["best_val_acc"].to_numpy(dtype=float)
    return {
        p: stats.intervals(
            [(accuracy, pd.factorize(runs[p].astype(str))[0].astype(float))],
            confidence,
            statistic=eta_squared,
            paired=True,
        )[0]
        for p in parameters
    }


def eta_squared(accuracy: np.ndarray, codes: np.ndarray, axis: int = -1) -> np.ndarray:
    """Share of the variance of ``accuracy`` explained by the groups ``codes`` (integers as floats).

    Shape: ``accuracy`` and ``codes`` are ``(..., n)`` along ``axis=-1``; returns ``(...)``.
    """
    groups = int(codes.max()) + 1
    batch = accuracy.shape[:-1]
    flat_y = accuracy.reshape(-1, accuracy.shape[-1])
    # One bincount for every row at once: row r's group g lands in bin r * groups + g.
    bins = (codes.reshape(flat_y.shape).astype(np.int64) + groups * np.arange(len(flat_y))[:, None]).ravel()
    counts = np.bincount(bins, minlength=groups * len(flat_y)).reshape(-1, groups)
    sums = np.bincount(bins, weights=flat_y.ravel(), minlength=groups * len(flat_y)).reshape(-1, groups)
    grand = flat_y.mean(axis=-1, keepdims=True)
    between = (sums**2 / np.maximum(counts, 1)).sum(axis=-1) - counts.sum(axis=-1) * grand[:, 0] ** 2
    total = ((flat_y - grand) ** 2).sum(axis=-1)
    # No variance to explain (every run equal, as a resample can be): no share either.
    share = np.divide(between, total, out=np.zeros_like(total), where=total > 0)
    return share.reshape(batch)
