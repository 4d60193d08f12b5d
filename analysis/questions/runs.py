"""The runs the questions compare: complete trials, labelled, with the runs
that failed to learn marked.

A run *failed to learn* when its best accuracy is below ``FAILED_RATIO`` times
the median best accuracy of the other complete runs of its setting (a setting
with a single run has no peers, so its run is never marked). A setting whose
runs all fail is not an outlier: the comparisons call it ``worse``.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from analysis.frames import clamping, complete, config_columns, value_text

FAILED_RATIO = 0.5
PER_NORMALIZER_KEYS = ["seed", "norm", "ecm", "clamp_value", "alpha_fwd", "alpha_bkw"]
ADDED_COLUMNS = ["subject", "context", "clamping", "removal", "peers_median", "failed"]


def complete_runs(trials: pd.DataFrame) -> pd.DataFrame:
    """Complete trials with the columns the questions use.

    Added columns: subject (normalizer and setting, e.g. "OnlineNorm
    (Activation Clamping), clamp_value=2.0"), context (the varying config
    keys every normalizer shares, e.g. "lr=0.1"; comparisons stay inside a
    context), clamping (bool), removal (val_acc_unclamped - val_acc at the
    best epoch), peers_median (median best accuracy of the setting's other
    runs), failed (bool, see the module docstring).
    """
    runs = complete(trials).reset_index(drop=True)
    shared = [c for c in config_columns(runs) if c not in PER_NORMALIZER_KEYS and runs[c].nunique(dropna=False) > 1]
    runs = runs.assign(
        subject=np.where(runs["setting"].eq(""), runs["normalizer"], runs["normalizer"] + ", " + runs["setting"]),
        context=label(runs, shared),
        clamping=clamping(runs),
        removal=runs["val_acc_unclamped_at_best"] - runs["best_val_acc"],
    )
    if "seed" not in runs:
        runs["seed"] = np.nan
    runs["peers_median"] = _median_of_others(runs["best_val_acc"], runs["subject"])
    runs["failed"] = (runs["best_val_acc"] < FAILED_RATIO * runs["peers_median"]).fillna(False)
    return runs


def swept(runs: pd.DataFrame) -> list[str]:
    """The config keys that take more than one value among ``runs``."""
    return [c for c in config_columns(runs) if c not in ADDED_COLUMNS and runs[c].nunique() > 1]


def contexts(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """``(context, its runs)`` pairs; one empty context when there are no runs, so questions still get a row."""
    return list(runs.groupby("context", sort=False)) or [("", runs)]


def best_subject(runs: pd.DataFrame) -> str | None:
    """The subject with the highest median best accuracy among ``runs`` (None if empty)."""
    if runs.empty:
        return None
    return runs.groupby("subject")["best_val_acc"].median().idxmax()


def label(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """``"k1=v1, k2=v2"`` per row of ``frame`` over ``keys`` ("" when there are none)."""
    text = pd.Series("", index=frame.index, dtype=object)
    for i, key in enumerate(keys):
        text = text + ("" if i == 0 else ", ") + f"{key}=" + frame[key].map(partial(value_text, key)).astype(object)
    return text.astype(str)


def _median_of_others(values: pd.Series, groups: pd.Series) -> np.ndarray:
    """For each value, the median of the other values of its group (NaN when it is alone).

    Groups of the same size n are stacked into a ``(groups, n)`` array, so the
    work is n medians over arrays rather than a Python call per group.
    """
    codes = pd.factorize(groups)[0]
    position = pd.Series(codes).groupby(codes).cumcount().to_numpy()
    size = np.bincount(codes)[codes]
    out = np.full(len(values), np.nan)
    array = values.to_numpy(dtype=float)
    for n in np.unique(size[size > 1]):
        rows = np.flatnonzero(size == n)
        group_index = pd.factorize(codes[rows])[0]
        matrix = np.full((group_index.max() + 1, n), np.nan)
        matrix[group_index, position[rows]] = array[rows]
        for i in range(n):
            mine = position[rows] == i
            with np.errstate(all="ignore"):
                out[rows[mine]] = np.nanmedian(np.delete(matrix, i, axis=1), axis=1)[group_index[mine]]
    return out
