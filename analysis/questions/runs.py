"""The runs the questions compare: complete trials, labelled, with the runs
that failed to learn marked.

A run *failed to learn* when its best accuracy is below ``FAILED_RATIO`` times
the median best accuracy of the other complete runs of its setting (a setting
with a single run has no peers, so its run is never marked). A setting whose
runs all fail is not an outlier: the comparisons call it ``worse``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.frames import clamping, complete, config_columns

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
    shared = [c for c in config_columns(runs) if c not in PER_NORMALIZER_KEYS
              and runs[c].nunique(dropna=False) > 1]
    context = runs[shared].astype(object).apply(lambda row: ", ".join(f"{k}={v}" for k, v in row.items()), axis=1)
    runs = runs.assign(
        subject=np.where(runs["setting"].eq(""), runs["normalizer"], runs["normalizer"] + ", " + runs["setting"]),
        context=context.reindex(runs.index).fillna("").astype(str),
        clamping=clamping(runs),
        removal=runs["val_acc_unclamped_at_best"] - runs["best_val_acc"],
    )
    if "seed" not in runs:
        runs["seed"] = np.nan
    runs["peers_median"] = runs.groupby("subject")["best_val_acc"].transform(_median_of_others)
    runs["failed"] = (runs["best_val_acc"] < FAILED_RATIO * runs["peers_median"]).fillna(False)
    return runs


def swept(runs: pd.DataFrame) -> list[str]:
    """The config keys that take more than one value among ``runs``."""
    return [c for c in config_columns(runs) if c not in ADDED_COLUMNS and runs[c].nunique() > 1]


def best_subject(runs: pd.DataFrame) -> str | None:
    """The subject with the highest median best accuracy among ``runs`` (None if empty)."""
    if runs.empty:
        return None
    return runs.groupby("subject")["best_val_acc"].median().idxmax()


def _median_of_others(values: pd.Series) -> pd.Series:
    array = values.to_numpy(dtype=float)
    if len(array) < 2:
        return pd.Series(np.nan, index=values.index)
    others = np.array([np.nanmedian(np.delete(array, i)) for i in range(len(array))])
    return pd.Series(others, index=values.index)
