"""What a sweep prints while it runs: a status table now and then, one line per trial event, the outcome.

By default the driver prints

- one line when a trial starts, finishes, diverges, fails and is retried,
  or errors out of its retries (:class:`TrialEvents`), naming the trial by
  the swept keys only (its full config is ``params.json`` in its folder);
- Ray Tune's status table (``ray.tune.CLIReporter``) every
  :data:`TABLE_EVERY_S` seconds and once at the end, with the swept keys as
  columns (the same columns after a ``sweep resume``);
- the summary line of :class:`sweeps.run.SweepOutcome`.

``--verbose`` prints Ray Tune's own output instead: a box with each trial's
whole config when it starts and with its metrics when it ends, besides the
table. The quiet output uses Ray Tune's legacy reporter interface
(``RAY_AIR_NEW_OUTPUT=0`` while the sweep runs), the one that takes a
reporter with chosen columns.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence

from ray import tune

TABLE_EVERY_S = 60
# The table's metric columns, besides the trial status and the swept keys.
TABLE_METRICS = {"epoch": "epoch", "val_acc": "val_acc", "clamp_fraction": "clamp", "val_loss": "val_loss"}
# Output levels: nothing; the status table, trial events and outcome; Ray Tune's own output.
SILENT, QUIET, VERBOSE = 0, 1, 2
QUIET_ENVIRONMENT = {
    "RAY_AIR_NEW_OUTPUT": "0",  # Ray Tune's legacy output engine: the one that takes our reporter
    # A 3-line warning whenever trials checkpoint faster than every 5 s (every epoch of a small trial).
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}
# Logged while ``Tuner.restore`` reads the interrupted experiment: pending trials have no results yet.
RESTORE_ANALYSIS_LOGGER = "ray.tune.analysis.experiment_analysis"


def describe(config: dict, keys: Sequence[str]) -> str:
    """``norm=online clamp_value=1 seed=0``: the trial's values of ``keys``."""
    return " ".join(f"{key}={config.get(key)}" for key in keys)


class TrialEvents(tune.Callback):
    """One line per trial event: started (or continued), finished, diverged, failed and retried, errored.

    Args:
        swept_keys: the config keys that tell the trials apart, printed with each line.
        max_failures: the retries a trial is allowed (the spec's ``max_failures``).
    """

    def __init__(self, swept_keys: Sequence[str], max_failures: int) -> None:
        self.swept_keys = list(swept_keys)
        self.max_failures = max_failures

    def _say(self, trial, event: str) -> None:
        values = describe(trial.config, self.swept_keys)
        print(f"trial {trial.trial_id} {event}" + (f" ({values})" if values else ""), flush=True)

    @staticmethod
    def _epoch(trial) -> int:
        return int((trial.last_result or {}).get("epoch", 0))

    def on_trial_start(self, iteration, trials, trial, **info):
        epoch = self._epoch(trial)
        self._say(trial, f"continues after epoch {epoch}" if epoch else "started")

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        if result.get("diverged"):
            self._say(trial, f"diverged in epoch {self._epoch(trial)}")
        else:
            self._say(trial, f"finished {self._epoch(trial)} epochs, val_acc {result.get('val_acc', float('nan')):.4f}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._say(
            trial,
            f"failed after epoch {self._epoch(trial)}, retrying from its checkpoint "
            f"(failure {trial.run_metadata.num_failures} of {self.max_failures} allowed)",
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(trial, f"errored after epoch {self._epoch(trial)}; see {trial.error_file}")


def settings(level: int, swept_keys: Sequence[str], max_failures: int) -> dict:
    """``RunConfig`` arguments (``verbose``, ``progress_reporter``, ``callbacks``) for an output level.

    Args:
        level: :data:`SILENT` (nothing), :data:`QUIET` (table, trial events) or
            :data:`VERBOSE` (Ray Tune's own output).
        swept_keys: the config keys that tell the trials apart (the table's parameter columns).
        max_failures: the retries a trial is allowed, for the retry lines.
    """
    if level >= VERBOSE:
        return {"verbose": 1, "progress_reporter": None, "callbacks": []}
    if level <= SILENT:
        return {"verbose": 0, "progress_reporter": None, "callbacks": []}
    return {
        "verbose": 1,
        "progress_reporter": status_table(swept_keys),
        "callbacks": [TrialEvents(swept_keys, max_failures)],
    }


def status_table(swept_keys: Sequence[str]) -> tune.CLIReporter:
    """Ray Tune's status table with the swept keys and :data:`TABLE_METRICS` as columns."""
    return tune.CLIReporter(
        parameter_columns=list(swept_keys),
        metric_columns=TABLE_METRICS,
        max_report_frequency=TABLE_EVERY_S,
        max_progress_rows=100,
        max_error_rows=100,
        print_intermediate_tables=True,
    )  # its default depends on Ray's global verbosity


@contextlib.contextmanager
def output(level: int) -> Iterator[None]:
    """Ray Tune's settings while a sweep runs, below :data:`VERBOSE`: :data:`QUIET_ENVIRONMENT`."""
    changed = QUIET_ENVIRONMENT if level < VERBOSE else {}
    previous = {name: os.environ.get(name) for name in changed}
    os.environ.update(changed)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def quiet_restore() -> Iterator[None]:
    """Silence the warning ``Tuner.restore`` logs for trials that have no results yet (pending ones)."""
    logger = logging.getLogger(RESTORE_ANALYSIS_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
