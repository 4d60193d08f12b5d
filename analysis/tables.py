"""Tables over the ``trials`` frame: the paper's comparison, run-to-run
variability, and sensitivity to the clamp value and decay factors.

Only complete trials (finished or diverged) are counted: a running or
errored trial's best accuracy is not an outcome yet. A *setting* is a
trial's config less its seed (see ``analysis.frames``); its runs are repeats.
"""

from __future__ import annotations

import pandas as pd

from analysis.frames import clamping, complete, config_columns

SENSITIVITY_PARAMETERS = ["clamp_value", "alpha_fwd", "alpha_bkw"]


def comparison(trials: pd.DataFrame) -> pd.DataFrame:
    """Best validation loss and accuracy per normalizer/ECM, as the paper prints them.

    For each normalizer, the setting with the highest median best accuracy
    over the complete trials.

    Args:
        trials: a ``trials`` frame (``Results.trials``); only complete trials count.

    Returns:
        One row per normalizer, sorted by name, with a ``RangeIndex``. Columns:
        normalizer, best_val_loss and best_val_acc (medians over that setting's
        runs), runs (complete runs with a best_val_acc), setting.
    """
    per_setting = (
        complete(trials)
        .groupby(["normalizer", "setting"])
        .agg(
            best_val_loss=("best_val_loss", "median"),
            best_val_acc=("best_val_acc", "median"),
            runs=("best_val_acc", "count"),
        )
    )
    return (
        per_setting.sort_values("best_val_acc", ascending=False, kind="stable")
        .reset_index()
        .drop_duplicates("normalizer")
        .sort_values("normalizer")[["normalizer", "best_val_loss", "best_val_acc", "runs", "setting"]]
        .reset_index(drop=True)
    )


def variability(trials: pd.DataFrame) -> pd.DataFrame:
    """Run-to-run spread of the best accuracy per setting.

    Args:
        trials: a ``trials`` frame (``Results.trials``); only complete trials count.

    Returns:
        One row per (normalizer, setting), sorted by them, with a ``RangeIndex``.
        Columns: normalizer, setting, runs, median, min, max, mean, std (of
        best_val_acc over runs; std is NaN for a single run), diverged (runs that
        diverged).
    """
    done = complete(trials).assign(diverged=lambda t: t["state"].eq("diverged"))
    settings = done.groupby(["normalizer", "setting"])
    spread = settings["best_val_acc"].agg(["count", "median", "min", "max", "mean", "std"])
    return spread.rename(columns={"count": "runs"}).assign(diverged=settings["diverged"].sum()).reset_index()


def setting_medians(trials: pd.DataFrame) -> pd.DataFrame:
    """Median best accuracy and run count per clamping setting (config less seed), best first.

    Groups the complete trials of online norm with activation clamping by every
    config key but ``seed`` (missing values form groups of their own).

    Args:
        trials: a ``trials`` frame (``Results.trials``); only complete trials count.

    Returns:
        One row per setting, highest best_val_acc first, with a ``RangeIndex``.
        Columns: the config keys less ``seed`` (``frames.config_columns`` order),
        best_val_acc (median over the setting's runs), runs.
    """
    keys = [c for c in config_columns(trials) if c != "seed"]
    done = complete(trials)
    return (
        done[clamping(done)]
        .groupby(keys, dropna=False)
        .agg(best_val_acc=("best_val_acc", "median"), runs=("best_val_acc", "count"))
        .reset_index()
        .sort_values("best_val_acc", ascending=False, kind="stable")
        .reset_index(drop=True)
    )


def best_settings(trials: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` clamping settings with the highest median best accuracy.

    Args:
        trials: a ``trials`` frame (``Results.trials``); only complete trials count.
        n: how many settings to keep (default 5); fewer rows when fewer settings ran.

    Returns:
        The first ``n`` rows of ``setting_medians``, best first. Columns: of the
        config keys (in their order), the sensitivity parameters (clamp_value,
        alpha_fwd, alpha_bkw) and the others that vary between settings; then
        best_val_acc (median over runs), runs.
    """
    medians = setting_medians(trials)
    varying = [c for c in medians.columns[:-2] if c in SENSITIVITY_PARAMETERS or medians[c].nunique(dropna=False) > 1]
    return medians[varying + ["best_val_acc", "runs"]].head(n)


def sensitivity(trials: pd.DataFrame) -> pd.DataFrame:
    """Change in median best accuracy per step of one parameter, the others held fixed.

    Works on ``setting_medians``: for each of clamp_value, alpha_fwd and
    alpha_bkw, the settings are grouped by the other config keys and, within
    a group, each value is paired with the next larger value the group ran.

    Args:
        trials: a ``trials`` frame (``Results.trials``); only complete clamping trials count.

    Returns:
        One row per parameter and step, with a ``RangeIndex``. Columns: parameter,
        from_value, to_value, change (median best accuracy at to_value minus at
        from_value, mean over the groups that ran both), change_min, change_max,
        pairs (how many such groups). Empty when no value recurs with the others fixed.

    Raises:
        KeyError: ``trials`` lacks a ``clamp_value``, ``alpha_fwd`` or ``alpha_bkw`` column.
    """
    medians = setting_medians(trials)
    keys = list(medians.columns[:-2])
    steps = []
    for parameter in SENSITIVITY_PARAMETERS:
        ordered = medians.sort_values(parameter, kind="stable")
        others = ordered.groupby([k for k in keys if k != parameter], dropna=False)
        steps.append(
            pd.DataFrame(
                {
                    "parameter": parameter,
                    "from_value": others[parameter].shift(),
                    "to_value": ordered[parameter],
                    "change": others["best_val_acc"].diff(),
                }
            ).dropna(subset=["from_value"])
        )
    return (
        pd.concat(steps, ignore_index=True)
        .groupby(["parameter", "from_value", "to_value"], sort=False)["change"]
        .agg(change="mean", change_min="min", change_max="max", pairs="count")
        .reset_index()
    )
