"""Tidy frames built from raw trials: trials, epochs, layers.

``epochs``: one row per trial and epoch.
    experiment, trial_id, epoch, then every metric the trial reported
    (always at least ``METRICS``; absent ones are NaN) and Ray's timing
    columns ``training_iteration``, ``time_this_iter_s``, ``time_total_s``.
    Per-layer ``clamp_fraction/<layer>`` columns move to ``layers``.

``layers``: one row per trial, epoch and layer.
    experiment, trial_id, epoch, layer (torch module name), depth (0 for
    the first layer the trial reported, in model order), clamp_fraction.

``trials``: one row per trial.
    experiment, trial_id, the config keys (``norm``, ``ecm``, ``alpha_fwd``,
    ``alpha_bkw``, ``clamp_value``, ``seed``, ...) exactly as the trial
    received them (``norm``, ``ecm`` and ``epochs`` always exist, NaN where a
    config lacks them), then ``SUMMARY_COLUMNS``:
    state           finished | running | pending | errored | diverged
    ray_status      Ray's own status, None when experiment_state is missing
    error           last line of error.txt
    trial_dir       the trial directory
    epochs_done     last epoch reported
    best_val_acc, best_epoch, val_acc_unclamped_at_best, clamp_fraction_at_best
                    the epoch with the highest val_acc (earliest on ties)
    final_val_acc, final_val_loss   the last epoch reported
    best_val_loss   lowest val_loss over epochs
    clamp_fraction_mean             mean clamp fraction over epochs
    normalizer      readable normalizer/ECM, e.g. "OnlineNorm (Activation Clamping)"
    baseline        batch norm, or online norm with layer scaling
    setting         the config that differs between trials, less seed and
                    the keys that do not apply (clamp_value unless clamping,
                    decay factors unless online); repeats share a setting
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.layout import RawTrial

KEYS = ["experiment", "trial_id"]
METRICS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_acc_unclamped",
           "clamp_fraction", "samples_per_s", "lr", "diverged"]
LAYER_PREFIX = "clamp_fraction/"
RAY_TIMING = ["training_iteration", "time_this_iter_s", "time_total_s"]
RAY_BOOKKEEPING = ["timestamp", "checkpoint_dir_name", "should_checkpoint", "done", "date",
                   "pid", "hostname", "node_ip", "time_since_restore", "iterations_since_restore",
                   "experiment_tag", "config"]
SUMMARY_COLUMNS = ["state", "ray_status", "error", "trial_dir", "epochs_done", "best_val_acc", "best_epoch",
                   "val_acc_unclamped_at_best", "clamp_fraction_at_best", "final_val_acc", "final_val_loss",
                   "best_val_loss", "clamp_fraction_mean", "normalizer", "baseline", "setting"]
COMPLETE_STATES = ["finished", "diverged"]

NORM_LABELS = {"online": "OnlineNorm", "batch": "BatchNorm", "group": "GroupNorm", "layer": "LayerNorm",
               "instance": "InstanceNorm", "none": "No normalization"}
ECM_LABELS = {"ac": "Activation Clamping", "ls": "Layer Scaling", "none": "no ECM"}


def build(raw: list[tuple[str, RawTrial]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(trials, epochs, layers) from ``(experiment name, trial)`` pairs."""
    wide = _wide_rows(raw)
    layer_columns = [c for c in wide.columns if c.startswith(LAYER_PREFIX)]
    epochs = wide.drop(columns=layer_columns + [c for c in RAY_BOOKKEEPING if c in wide.columns])
    layers = _layers(wide, layer_columns, raw)
    return _trials(raw, epochs), epochs, layers


def config_columns(trials: pd.DataFrame) -> list[str]:
    """The config keys among a trials frame's columns."""
    return [c for c in trials.columns if c not in KEYS + SUMMARY_COLUMNS]


def complete(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that ran to their end (finished or diverged): the ones tables compare."""
    return trials[trials["state"].isin(COMPLETE_STATES)]


def clamping(trials: pd.DataFrame) -> pd.Series:
    """Mask: online norm with activation clamping, where clamp_value means something."""
    return trials["norm"].eq("online") & trials["ecm"].eq("ac")


def _wide_rows(raw: list[tuple[str, RawTrial]]) -> pd.DataFrame:
    records = [{"experiment": name, **row, "trial_id": trial.trial_id} for name, trial in raw for row in trial.rows]
    wide = pd.DataFrame.from_records(records, columns=None if records else KEYS)
    wide = wide.reindex(columns=list(dict.fromkeys(KEYS + METRICS + list(wide.columns))))
    wide[KEYS] = wide[KEYS].astype(str)  # even when there are no rows, so merges on KEYS line up
    if "training_iteration" in wide.columns:
        wide["epoch"] = wide["epoch"].fillna(wide["training_iteration"])
    wide["diverged"] = wide["diverged"].fillna(False).astype(bool)
    # A trial resumed from a checkpoint reports the later epochs again: keep the newest.
    return (wide.drop_duplicates(KEYS + ["epoch"], keep="last")
                .sort_values(KEYS + ["epoch"], kind="stable")
                .reset_index(drop=True))


def _layers(wide: pd.DataFrame, layer_columns: list[str], raw: list[tuple[str, RawTrial]]) -> pd.DataFrame:
    depth = pd.DataFrame(
        [(name, trial.trial_id, layer.removeprefix(LAYER_PREFIX), index)
         for name, trial in raw
         for index, layer in enumerate(dict.fromkeys(k for row in trial.rows for k in row
                                                     if k.startswith(LAYER_PREFIX)))],
        columns=KEYS + ["layer", "depth"],
    )
    long = (wide[KEYS + ["epoch"] + layer_columns]
            .rename(columns=lambda c: c.removeprefix(LAYER_PREFIX))
            .melt(id_vars=KEYS + ["epoch"], var_name="layer", value_name="clamp_fraction")
            .dropna(subset=["clamp_fraction"]))
    return (long.merge(depth, on=KEYS + ["layer"], how="left")
                [KEYS + ["epoch", "layer", "depth", "clamp_fraction"]]
                .sort_values(KEYS + ["epoch", "depth"], kind="stable")
                .reset_index(drop=True))


def _trials(raw: list[tuple[str, RawTrial]], epochs: pd.DataFrame) -> pd.DataFrame:
    config = pd.json_normalize([trial.config for _, trial in raw], sep="/").map(_hashable)
    info = pd.DataFrame(dtype=str, data={
        "experiment": [name for name, _ in raw],
        "trial_id": [trial.trial_id for _, trial in raw],
        "ray_status": [trial.ray_status for _, trial in raw],
        "error": [trial.error for _, trial in raw],
        "trial_dir": [str(trial.directory) for _, trial in raw],
    })
    trials = pd.concat([info[KEYS], config.drop(columns=KEYS, errors="ignore"), info.drop(columns=KEYS)], axis=1)
    trials = trials.reindex(columns=list(dict.fromkeys(list(trials.columns) + ["norm", "ecm", "epochs"])))
    trials = trials.merge(_summaries(epochs), on=KEYS, how="left")
    trials["diverged"] = trials["diverged"].astype("boolean").fillna(False).astype(bool)
    trials[["epochs_done", "best_epoch"]] = trials[["epochs_done", "best_epoch"]].astype("Int64")
    trials["state"] = _state(trials)
    trials["normalizer"] = _normalizer(trials)
    trials["baseline"] = trials["norm"].eq("batch") | (trials["norm"].eq("online") & trials["ecm"].eq("ls"))
    trials["setting"] = _setting(trials, [c for c in config.columns if c not in KEYS])
    return trials[[c for c in trials.columns if c not in SUMMARY_COLUMNS + ["diverged"]] + SUMMARY_COLUMNS]


def _summaries(epochs: pd.DataFrame) -> pd.DataFrame:
    by_trial = epochs.groupby(KEYS, sort=False)
    overall = by_trial.agg(epochs_done=("epoch", "max"), best_val_loss=("val_loss", "min"),
                           clamp_fraction_mean=("clamp_fraction", "mean"), diverged=("diverged", "any"))
    best = (epochs.dropna(subset=["val_acc"])
                  .sort_values(["val_acc", "epoch"], ascending=[False, True])
                  .drop_duplicates(KEYS)
                  .set_index(KEYS)[["val_acc", "epoch", "val_acc_unclamped", "clamp_fraction"]]
                  .rename(columns={"val_acc": "best_val_acc", "epoch": "best_epoch",
                                   "val_acc_unclamped": "val_acc_unclamped_at_best",
                                   "clamp_fraction": "clamp_fraction_at_best"}))
    final = (epochs.drop_duplicates(KEYS, keep="last")  # epochs is sorted by epoch
                   .set_index(KEYS)[["val_acc", "val_loss"]]
                   .rename(columns={"val_acc": "final_val_acc", "val_loss": "final_val_loss"}))
    return overall.join([best, final]).reset_index()


def _state(trials: pd.DataFrame) -> np.ndarray:
    reached_last_epoch = trials["epochs_done"] >= pd.to_numeric(trials["epochs"], errors="coerce")
    conditions = [
        # error.txt also stays behind a failure that a retry recovered from; Ray's state has the last word.
        trials["ray_status"].eq("ERROR") | (trials["ray_status"].isna() & trials["error"].notna()),
        trials["diverged"],
        trials["ray_status"].eq("TERMINATED") | reached_last_epoch.fillna(False),
        trials["epochs_done"].notna(),
    ]
    return np.select([c.to_numpy(dtype=bool) for c in conditions],
                     ["errored", "diverged", "finished", "running"], default="pending")


def _normalizer(trials: pd.DataFrame) -> pd.Series:
    norm = trials["norm"].map(NORM_LABELS).fillna(trials["norm"].astype(str))
    ecm = trials["ecm"].map(ECM_LABELS).fillna(trials["ecm"].astype(str))
    return norm.where(trials["norm"].ne("online"), norm + " (" + ecm + ")")


def _setting(trials: pd.DataFrame, config_keys: list[str]) -> pd.Series:
    columns = [c for c in config_keys if c not in ("seed", "norm", "ecm")]
    relevant = trials[columns].astype(object).copy()
    if "clamp_value" in relevant:
        relevant.loc[~clamping(trials), "clamp_value"] = None
    for alpha in ("alpha_fwd", "alpha_bkw"):
        if alpha in relevant:
            relevant.loc[trials["norm"].ne("online"), alpha] = None
    varying = [c for c in columns if relevant[c].nunique(dropna=False) > 1]
    labels = relevant[varying].apply(
        lambda row: ", ".join(f"{k}={v}" for k, v in row.items() if pd.notna(v)), axis=1)
    return labels.reindex(trials.index).fillna("").astype(str)


def _hashable(value):
    """Lists and dicts left in a config become JSON text, so frames can group by them."""
    return value if pd.api.types.is_scalar(value) else str(value)
