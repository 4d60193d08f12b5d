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
    received them (``ALWAYS_CONFIG``: ``norm``, ``ecm``, ``epochs``,
    ``clamp_value``, the decay factors and ``seed`` always exist, NaN where a
    config lacks them), then ``SUMMARY_COLUMNS``:
    state           finished | stopped | running | pending | errored | diverged
                    (stopped: Ray ended it before its config's ``epochs``
                    without an error or a divergence, e.g. an ASHA early stop)
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
                    decay factors unless online); repeats share a setting;
                    a decay factor ``1 - 2**k`` reads ``alpha_fwd=1-2^k``
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.layout import SKIPPED_COLUMNS, RawTrial
from onlinenorm.constants import METRICS as EPOCH_METRICS

KEYS = ["experiment", "trial_id"]
METRICS = list(EPOCH_METRICS)
LAYER_PREFIX = "clamp_fraction/"
RAY_TIMING = ["training_iteration", "time_this_iter_s", "time_total_s"]
SUMMARY_COLUMNS = [
    "state",
    "ray_status",
    "error",
    "trial_dir",
    "epochs_done",
    "best_val_acc",
    "best_epoch",
    "val_acc_unclamped_at_best",
    "clamp_fraction_at_best",
    "final_val_acc",
    "final_val_loss",
    "best_val_loss",
    "clamp_fraction_mean",
    "normalizer",
    "baseline",
    "setting",
]
COMPLETE_STATES = ["finished", "diverged"]
DECAY_KEYS = ("alpha_fwd", "alpha_bkw")
# Config columns every trials frame has (NaN where a trial's config lacks them, e.g. an experiment that
# another program wrote): the tables, charts and findings select on them.
ALWAYS_CONFIG = ["norm", "ecm", "epochs", "clamp_value", *DECAY_KEYS, "seed"]

NORM_LABELS = {
    "online": "OnlineNorm",
    "batch": "BatchNorm",
    "group": "GroupNorm",
    "layer": "LayerNorm",
    "instance": "InstanceNorm",
    "none": "No normalization",
}
ECM_LABELS = {"ac": "Activation Clamping", "ls": "Layer Scaling", "none": "no ECM"}


def build(raw: list[tuple[str, RawTrial]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The three tidy frames of the trials as read.

    A trial resumed from a checkpoint reports some epochs again: the newest
    row of each epoch is kept. Per-layer ``clamp_fraction/<layer>`` columns
    move from ``epochs`` to ``layers``.

    Args:
        raw: ``(experiment name, trial)`` pairs, as ``layout.read_experiments`` found them.

    Returns:
        ``(trials, epochs, layers)``, each with a ``RangeIndex`` and the columns this
        module's docstring lists; ``epochs`` and ``layers`` sorted by trial and epoch.
    """
    wide = _wide_rows(raw)
    layer_columns = [c for c in wide.columns if c.startswith(LAYER_PREFIX)]
    epochs = wide.drop(columns=layer_columns + [c for c in wide.columns if c in SKIPPED_COLUMNS])
    # Arrow and numpy build the layers frame mostly without the GIL: beside the trials frame, in a thread.
    with ThreadPoolExecutor(1) as pool:
        layers = pool.submit(_layers, wide, layer_columns, raw)
        trials = _trials(raw, epochs)
        return trials, epochs, layers.result()


def config_columns(trials: pd.DataFrame) -> list[str]:
    """The config keys among a trials frame's columns.

    Args:
        trials: a ``trials`` frame (see ``build``).

    Returns:
        The columns that are neither ``KEYS`` nor ``SUMMARY_COLUMNS``, in the frame's order.
    """
    return [c for c in trials.columns if c not in KEYS + SUMMARY_COLUMNS]


def complete(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that ran to their end (finished or diverged).

    These are the trials the tables, charts and findings compare: stopped,
    running, pending and errored trials are not outcomes.

    Args:
        trials: a ``trials`` frame (see ``build``).

    Returns:
        The rows of ``trials`` whose ``state`` is in ``COMPLETE_STATES``, index kept.
    """
    return trials[trials["state"].isin(COMPLETE_STATES)]


def clamping(trials: pd.DataFrame) -> pd.Series:
    """Mask: online norm with activation clamping, where clamp_value means something.

    Args:
        trials: a frame with ``norm`` and ``ecm`` columns (a ``trials`` frame).

    Returns:
        A boolean Series over ``trials``' index: ``norm == "online"`` and ``ecm == "ac"``.
    """
    return trials["norm"].eq("online") & trials["ecm"].eq("ac")


def trial_positions(rows: pd.DataFrame, trials: pd.DataFrame) -> np.ndarray:
    """Where each row's trial stands in ``trials``.

    The string keys are hashed once per column and only the distinct trials
    are looked up, instead of merging millions of string pairs: ``layers``
    has a row per trial, epoch and layer. ``positions >= 0`` is the mask of
    the rows whose trial ``trials`` holds.

    Args:
        rows: any frame with the ``KEYS`` columns (``epochs``, ``layers``).
        trials: a frame with the ``KEYS`` columns, one row per trial (``trials`` or a part of it).

    Returns:
        An int64 array of shape ``(len(rows),)``: for each row, the position (not
        the index label) of its trial's row in ``trials``, -1 for a trial it lacks.
    """
    if rows.empty:
        return np.zeros(0, dtype=np.int64)
    trial, trial_ids = pd.factorize(rows["trial_id"])
    first = rows["experiment"].iloc[0]
    if rows["experiment"].eq(first).all():  # one experiment: skip hashing millions of copies of its name
        experiment, experiments = np.zeros(len(rows), dtype=np.int64), np.array([first], dtype=object)
    else:
        experiment, experiments = pd.factorize(rows["experiment"])
    row_trial, distinct = pd.factorize(experiment.astype(np.int64) * len(trial_ids) + trial)
    keys = pd.MultiIndex.from_arrays(
        [np.asarray(experiments)[distinct // len(trial_ids)], np.asarray(trial_ids)[distinct % len(trial_ids)]]
    )
    return pd.MultiIndex.from_frame(trials[KEYS]).get_indexer(keys)[row_trial].astype(np.int64)


def _wide_rows(raw: list[tuple[str, RawTrial]]) -> pd.DataFrame:
    """Every trial's result rows in one frame, sorted by KEYS and epoch."""
    reported = [(name, trial) for name, trial in raw if trial.rows.num_rows]
    tables = [trial.rows for _, trial in reported]
    try:
        wide = pa.concat_tables(tables, promote_options="permissive").to_pandas() if tables else pd.DataFrame()
    except pa.ArrowException:  # a column of different kinds in different trials: let pandas mix them
        wide = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    # The keys once for all rows (a trial_id column the rows carry gives way to the trial's own).
    trial_of_row = np.repeat(np.arange(len(tables)), [t.num_rows for t in tables])
    wide["experiment"] = np.array([name for name, _ in reported], dtype=object)[trial_of_row]
    wide["trial_id"] = np.array([trial.trial_id for _, trial in reported], dtype=object)[trial_of_row]
    wide = wide.reindex(columns=list(dict.fromkeys(KEYS + METRICS + list(wide.columns))))
    wide[KEYS] = wide[KEYS].astype(str)  # even when there are no rows, so merges on KEYS line up
    if "training_iteration" in wide.columns:
        wide["epoch"] = wide["epoch"].fillna(wide["training_iteration"])
    wide["diverged"] = wide["diverged"].astype("boolean").fillna(False).astype(bool)
    # A trial resumed from a checkpoint reports the later epochs again: keep the newest.
    return (
        wide.drop_duplicates(KEYS + ["epoch"], keep="last")
        .sort_values(KEYS + ["epoch"], kind="stable")
        .reset_index(drop=True)
    )


def _layers(wide: pd.DataFrame, layer_columns: list[str], raw: list[tuple[str, RawTrial]]) -> pd.DataFrame:
    """One row per (trial, epoch, layer) reported, in model order (depth: the
    order of the trial's ``clamp_fraction/<layer>`` columns)."""
    columns = KEYS + ["epoch", "layer", "depth", "clamp_fraction"]
    if not layer_columns:
        return pd.DataFrame({c: pd.Series(dtype=float if c == "clamp_fraction" else object) for c in columns})
    orders = {
        (name, trial.trial_id): [c for c in trial.rows.column_names if c.startswith(LAYER_PREFIX)]
        for name, trial in raw
    }
    depth = np.full((len(wide), len(layer_columns)), -1, dtype=np.int64)
    position = {c: i for i, c in enumerate(layer_columns)}
    in_model_order = True
    for key, rows in wide.groupby(KEYS, sort=False).indices.items():
        positions = [position[column] for column in orders.get(key, [])]
        in_model_order &= positions == sorted(positions)
        depth[np.ix_(rows, positions)] = np.arange(len(positions))
    values = wide[layer_columns].to_numpy(dtype=float)
    row, column = np.nonzero(~np.isnan(values) & (depth >= 0))  # row-major: by trial, epoch, then column
    names = pa.array([c.removeprefix(LAYER_PREFIX) for c in layer_columns], pa.string())
    layers = pa.table(
        {  # built in Arrow: 20 x more rows than epochs, and Arrow makes the strings cheaply
            "experiment": pa.array(wide["experiment"]).take(row),
            "trial_id": pa.array(wide["trial_id"]).take(row),
            "epoch": wide["epoch"].to_numpy()[row],
            "layer": names.take(column),
            "depth": depth[row, column],
            "clamp_fraction": values[row, column],
        }
    ).to_pandas()
    if not in_model_order:
        layers = layers.sort_values(KEYS + ["epoch", "depth"], kind="stable").reset_index(drop=True)
    return layers


def _trials(raw: list[tuple[str, RawTrial]], epochs: pd.DataFrame) -> pd.DataFrame:
    config = pd.json_normalize([trial.config for _, trial in raw], sep="/").map(_hashable)
    info = pd.DataFrame(
        dtype=str,
        data={
            "experiment": [name for name, _ in raw],
            "trial_id": [trial.trial_id for _, trial in raw],
            "ray_status": [trial.ray_status for _, trial in raw],
            "error": [trial.error for _, trial in raw],
            "trial_dir": [str(trial.directory) for _, trial in raw],
        },
    )
    trials = pd.concat([info[KEYS], config.drop(columns=KEYS, errors="ignore"), info.drop(columns=KEYS)], axis=1)
    trials = trials.reindex(columns=list(dict.fromkeys(list(trials.columns) + ALWAYS_CONFIG)))
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
    overall = by_trial.agg(
        epochs_done=("epoch", "max"),
        best_val_loss=("val_loss", "min"),
        clamp_fraction_mean=("clamp_fraction", "mean"),
        diverged=("diverged", "any"),
    )
    best = (
        epochs.dropna(subset=["val_acc"])
        .sort_values(["val_acc", "epoch"], ascending=[False, True])
        .drop_duplicates(KEYS)
        .set_index(KEYS)[["val_acc", "epoch", "val_acc_unclamped", "clamp_fraction"]]
        .rename(
            columns={
                "val_acc": "best_val_acc",
                "epoch": "best_epoch",
                "val_acc_unclamped": "val_acc_unclamped_at_best",
                "clamp_fraction": "clamp_fraction_at_best",
            }
        )
    )
    final = (
        epochs.drop_duplicates(KEYS, keep="last")  # epochs is sorted by epoch
        .set_index(KEYS)[["val_acc", "val_loss"]]
        .rename(columns={"val_acc": "final_val_acc", "val_loss": "final_val_loss"})
    )
    return overall.join([best, final]).reset_index()


def _state(trials: pd.DataFrame) -> np.ndarray:
    planned = pd.to_numeric(trials["epochs"], errors="coerce")
    reached_last_epoch = (trials["epochs_done"] >= planned).fillna(False)
    ended_early = (trials["epochs_done"] < planned).fillna(False)
    conditions = [
        # error.txt also stays behind a failure that a retry recovered from; Ray's state has the last word.
        trials["ray_status"].eq("ERROR") | (trials["ray_status"].isna() & trials["error"].notna()),
        trials["diverged"],
        trials["ray_status"].eq("TERMINATED") & ended_early,  # a scheduler (ASHA) stopped it
        trials["ray_status"].eq("TERMINATED") | reached_last_epoch,
        trials["epochs_done"].notna(),
    ]
    return np.select(
        [c.to_numpy(dtype=bool) for c in conditions],
        ["errored", "diverged", "stopped", "finished", "running"],
        default="pending",
    )


def _normalizer(trials: pd.DataFrame) -> pd.Series:
    norm = trials["norm"].map(NORM_LABELS).fillna(trials["norm"].astype(str))
    ecm = trials["ecm"].map(ECM_LABELS).fillna(trials["ecm"].astype(str))
    return norm.where(trials["norm"].ne("online"), norm + " (" + ecm + ")")


def _decay_exponent(alpha: float) -> int | None:
    """k (negative) where ``alpha == 1 - 2**k`` exactly, else None: the recipes'
    decay factors are such (``1 - 2**-10``)."""
    gap = 1.0 - float(alpha)
    if not 0.0 < gap < 1.0:
        return None
    exponent = math.log2(gap)
    return int(exponent) if exponent == round(exponent) else None


def value_text(key: str, value) -> str:
    """A config value as settings and findings name it.

    Args:
        key: the config key the value belongs to.
        value: the value, as the trial received it.

    Returns:
        ``1-2^-10`` for a float decay factor (``alpha_fwd``, ``alpha_bkw``) that is one
        minus a power of two (``0.9990234375`` as read); else ``str(value)``.
    """
    if key in DECAY_KEYS and isinstance(value, float) and (text := power_of_two_decay_text(value)):
        return text
    return str(value)


def power_of_two_decay_text(alpha: float) -> str | None:
    """A decay factor ``1 - 2**k`` written as ``1-2^k``.

    Args:
        alpha: the decay factor.

    Returns:
        ``1-2^k`` (e.g. ``1-2^-10``) when ``1 - alpha`` lies in (0, 1) and is exactly
        ``2**k`` for an integer ``k``; else None.
    """
    exponent = _decay_exponent(alpha)
    return None if exponent is None else f"1-2^{exponent}"


def _setting(trials: pd.DataFrame, config_keys: list[str]) -> pd.Series:
    columns = [c for c in config_keys if c not in ("seed", "norm", "ecm")]
    relevant = trials[columns].astype(object).copy()
    applies = {
        "clamp_value": clamping(trials),
        "alpha_fwd": trials["norm"].eq("online"),
        "alpha_bkw": trials["norm"].eq("online"),
    }
    for key, mask in applies.items():
        if key in relevant:
            relevant.loc[~mask, key] = None
    # A key varies if it takes two values among the trials it applies to.
    varying = [c for c in columns if relevant.loc[applies.get(c, slice(None)), c].nunique(dropna=False) > 1]
    labels = relevant[varying].apply(
        lambda row: ", ".join(f"{k}={value_text(k, v)}" for k, v in row.items() if pd.notna(v)), axis=1
    )
    return labels.reindex(trials.index).fillna("").astype(str)


def _hashable(value):
    """Lists and dicts left in a config become JSON text, so frames can group by them."""
    return value if pd.api.types.is_scalar(value) else str(value)
