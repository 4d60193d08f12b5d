"""Ray Tune logger callbacks for a sweep's checked ``tracking:`` settings (see :mod:`sweeps.tracking`)."""

from __future__ import annotations

import os

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback

WANDB_MODE_VARIABLE = "WANDB_MODE"


class WandbCallback(WandbLoggerCallback):
    """Ray's W&B callback, whose ``mode`` also reaches Ray's own API-key check.

    Ray asks for a W&B API key unless the ``WANDB_MODE`` variable says ``offline`` or ``disabled``;
    an offline sweep needs none, so the spec's mode is exported before that check.
    """

    def setup(self, *args, **kwargs):
        if self.kwargs.get("mode"):
            os.environ[WANDB_MODE_VARIABLE] = self.kwargs["mode"]
        super().setup(*args, **kwargs)


def tracking_callbacks(name: str, trackers: dict[str, dict]) -> list:
    """Logger callbacks for sweep ``name``'s ``trackers`` (:func:`sweeps.tracking.check_tracking`'s result)."""
    callbacks = []
    if "mlflow" in trackers:
        settings = trackers["mlflow"]
        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=settings["tracking_uri"], experiment_name=settings["experiment_name"] or name
            )
        )
    if "wandb" in trackers:
        settings = trackers["wandb"]
        mode = {"mode": settings["mode"]} if settings["mode"] else {}
        callbacks.append(WandbCallback(project=settings["project"], group=settings["group"] or name, **mode))
    return callbacks
