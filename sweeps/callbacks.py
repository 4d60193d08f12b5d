"""Ray Tune logger callbacks for a sweep's checked ``tracking:`` settings (see :mod:`sweeps.tracking`)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

WANDB_MODE_VARIABLE = "WANDB_MODE"
WANDB_FOLDER = "wandb"  # W&B's own folder name for a run's files, under its ``dir``


class ClosingWandbActor(_WandbLoggingActor):
    """Ray's per-trial W&B logging actor, which also shuts W&B's service process down when the run ends.

    ``wandb.finish()`` only *asks* W&B's service process (``wandb-core``) to close the run's stream;
    ``wandb.teardown()`` waits for that process to exit, so every file of the run is complete and
    closed when :meth:`run` returns.
    """

    def run(self):
        try:
            super().run()
        finally:
            self._wandb.teardown()


class WandbCallback(WandbLoggerCallback):
    """Ray's W&B callback, with every trial's run files in the trial's directory once the run has ended.

    Why Ray's callback alone loses runs: its logging actor writes the W&B files into the trial's
    directory in the driver's *staging* folder, which Tune copies to the experiment directory now and
    then and one last time when the trials are done, *before* the callbacks' ``on_experiment_end``,
    where Ray waits for the logging actors to finish. The runs still open at that last copy (the
    sweep's last trials: their queued results and ``wandb.finish()`` come after it) reach the
    experiment directory as they were then: W&B's run file with nothing but its 7-byte header.

    Here each trial's W&B files go to a folder of their own beside the staging folder
    (``SESSION/EXPERIMENT/wandb/TRIAL``), which Tune never copies; when Ray ends a trial's logging
    actor (``_cleanup_logging_actor``: its ``run()`` has returned, i.e. ``wandb.finish()`` and
    ``wandb.teardown()`` are done, or it outlived ``upload_timeout`` at the experiment's end), the
    folder is copied to ``TRIAL_DIR/wandb`` in the experiment's storage. Nothing else writes there,
    so the copy is made once, from closed files: no race with Tune's copies, no sleep.

    ``on_experiment_end`` first ends the runs of trials that did not complete (a sweep stopped with
    Ctrl-C: Tune stops them without ``on_trial_complete``), so Ray does not wait ``upload_timeout``
    for runs that were never told to end.

    The spec's ``mode`` also reaches Ray's own API-key check: Ray asks for a W&B API key unless the
    ``WANDB_MODE`` variable says ``offline`` or ``disabled``; an offline sweep needs none, so the
    mode is exported before that check.
    """

    _logger_actor_cls = ClosingWandbActor

    def setup(self, *args, **kwargs):
        if self.kwargs.get("mode"):
            os.environ[WANDB_MODE_VARIABLE] = self.kwargs["mode"]
        super().setup(*args, **kwargs)
        self._ended = set()

    def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs):
        if trial not in self._trial_logging_futures:
            self._ended.discard(trial)
            run_folder(trial).mkdir(parents=True, exist_ok=True)
        super()._start_logging_actor(trial, exclude_results, dir=str(run_folder(trial)), **wandb_init_kwargs)

    def _signal_logging_actor_stop(self, trial):
        super()._signal_logging_actor_stop(trial)
        self._ended.add(trial)

    def _cleanup_logging_actor(self, trial):
        super()._cleanup_logging_actor(trial)
        copy_run_files(trial)

    def on_experiment_end(self, trials, **info):
        for trial in list(self._trial_logging_actors):
            if trial not in self._ended:
                self._signal_logging_actor_stop(trial)
        super().on_experiment_end(trials, **info)


def run_folder(trial) -> Path:
    """Where ``trial``'s W&B files are written on the driver: ``SESSION/EXPERIMENT/wandb/TRIAL``."""
    staging = Path(trial.storage.experiment_driver_staging_path)
    return staging.parent / WANDB_FOLDER / trial.storage.trial_dir_name


def copy_run_files(trial) -> None:
    """Copy ``trial``'s W&B run folders to ``TRIAL_DIR/wandb`` in the experiment's storage (local or remote).

    W&B's links beside them (``latest-run``, ``debug.log``) are left out: a copy would duplicate what
    they point to.
    """
    written = run_folder(trial) / WANDB_FOLDER
    runs = [entry for entry in written.iterdir() if not entry.is_symlink()] if written.is_dir() else []
    filesystem = trial.storage.storage_filesystem
    for run in runs:
        target = f"{trial.storage.trial_fs_path}/{WANDB_FOLDER}/{run.name}"
        filesystem.create_dir(target, recursive=True)
        pyarrow.fs.copy_files(str(run), target, destination_filesystem=filesystem, use_threads=False)


class MLflowCallback(MLflowLoggerCallback):
    """Ray's MLflow callback, which keeps one MLflow run per trial over a stop and a resume.

    Ray's callback creates a run the first time a driver sees a trial. A sweep stopped with Ctrl-C
    leaves the runs of its unfinished trials open (Tune stops them without ``on_trial_complete``),
    and ``sweep resume`` (a new driver) would give each of them a second run. Here the runs of the
    trials that did not complete end as ``KILLED`` with the experiment; a trial started again looks
    its run up by the ``trial_name`` tag Ray gives it (the name holds the trial's unique id) in the
    sweep's MLflow experiment and continues it: status ``RUNNING`` again, the epochs it reports
    from its checkpoint on appended to the history, ``FINISHED`` at its end. Trials that finished
    before the stop are not started again, so their runs are left as they were.
    """

    def setup(self, *args, **kwargs):
        super().setup(*args, **kwargs)
        self._ended = set()

    def log_trial_start(self, trial):
        if trial not in self._trial_runs:
            from mlflow import MlflowClient

            client = MlflowClient()  # Ray's setup pointed mlflow at the tracking URI
            (earlier,) = client.search_runs(
                [self.mlflow_util.experiment_id], filter_string=f"tags.trial_name = '{trial}'", max_results=1
            ) or (None,)
            if earlier is not None:
                client.update_run(earlier.info.run_id, status="RUNNING")
                self._trial_runs[trial] = earlier.info.run_id
        super().log_trial_start(trial)

    def log_trial_end(self, trial, failed: bool = False):
        super().log_trial_end(trial, failed)
        self._ended.add(trial)

    def on_experiment_end(self, trials, **info):
        for trial, run_id in self._trial_runs.items():
            if trial not in self._ended:
                self.mlflow_util.end_run(run_id=run_id, status="KILLED")
        super().on_experiment_end(trials, **info)


def tracking_callbacks(name: str, trackers: dict[str, dict]) -> list:
    """Logger callbacks for sweep ``name``'s ``trackers`` (:func:`sweeps.tracking.check_tracking`'s result)."""
    callbacks = []
    if "mlflow" in trackers:
        settings = trackers["mlflow"]
        callbacks.append(
            MLflowCallback(tracking_uri=settings["tracking_uri"], experiment_name=settings["experiment_name"] or name)
        )
    if "wandb" in trackers:
        settings = trackers["wandb"]
        mode = {"mode": settings["mode"]} if settings["mode"] else {}
        callbacks.append(WandbCallback(project=settings["project"], group=settings["group"] or name, **mode))
    return callbacks
