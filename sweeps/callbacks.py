"""Ray Tune logger callbacks for a sweep's checked ``tracking:`` settings (see :mod:`sweeps.tracking`)."""

from __future__ import annotations

import os

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback

WANDB_MODE_VARIABLE = "WANDB_MODE"


class WandbCallback(WandbLoggerCallback):
    """Ray's W&B callback, with a ``mode`` that reaches Ray's API-key check, and no early kills.

    Ray asks for a W&B API key unless the ``WANDB_MODE`` variable says ``offline`` or ``disabled``;
    an offline sweep needs none, so the spec's mode is exported before that check. When the callback
    is released, Ray gives each trial's logging actor 2 s to finish its W&B run before killing it,
    which on a busy machine loses the run's records; here it gets ``upload_timeout``, as at the
    experiment's end.
    """

    def setup(self, *args, **kwargs):
        if self.kwargs.get("mode"):
            os.environ[WANDB_MODE_VARIABLE] = self.kwargs["mode"]
        super().setup(*args, **kwargs)

    def _cleanup_logging_actors(self, timeout: int = 0, kill_on_timeout: bool = False):
        super()._cleanup_logging_actors(self._upload_timeout if kill_on_timeout else timeout, kill_on_timeout)


def tracking_callbacks(name: str, trackers: dict[str, dict]) -> list:
    """Logger callbacks for sweep ``name``'s ``trackers`` (:func:`sweeps.tracking.check_tracking`'s result)."""
    callbacks = []
    if "mlflow" in trackers:
        settings = trackers["mlflow"]
        callbacks.append(MLflowLoggerCallback(tracking_uri=settings["tracking_uri"],
                                              experiment_name=settings["experiment_name"] or name))
    if "wandb" in trackers:
        settings = trackers["wandb"]
        mode = {"mode": settings["mode"]} if settings["mode"] else {}
        callbacks.append(WandbCallback(project=settings["project"], group=settings["group"] or name, **mode))
    return callbacks
