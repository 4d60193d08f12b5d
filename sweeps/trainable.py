"""The Ray Tune trainable: one sweep trial is one :func:`onlinenorm.training.train.run`.

A plain function of the trial's resolved config, in the style of Ray Tune's
examples: every epoch's metric row goes to ``tune.report`` with that epoch's
checkpoint, and a trial that Ray restarts (after a crash, a lost node or an
interrupted driver) continues from ``tune.get_checkpoint()``. Parallelism,
resources and retries stay outside, in :mod:`sweeps.run`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from typing import Any

# Ray's live trial table shows the first four metrics of a row, so these lead it.
LIVE_TABLE_METRICS = ("val_acc", "clamp_fraction", "val_loss", "train_loss")
# Ray logs a line per saved checkpoint at INFO; per epoch and trial that buries the live table.
QUIET_LOGGER = "ray.train"


def train_trial(config: Mapping[str, Any], synthetic: Mapping[str, int] | None = None) -> None:
    """Train ``config``; ``synthetic`` (the spec's settings) regenerates missing synthetic data on a new node."""
    from ray import tune

    from onlinenorm.training.train import run
    from sweeps.prepare import ensure_synthetic

    logging.getLogger(QUIET_LOGGER).setLevel(logging.WARNING)
    if synthetic is not None:
        ensure_synthetic(config, synthetic)

    def report(metrics: dict[str, Any], folder: str | None) -> None:
        row = {key: metrics[key] for key in LIVE_TABLE_METRICS} | metrics
        tune.report(row, checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)

    with tempfile.TemporaryDirectory(prefix="onlinenorm-trial-") as scratch:
        checkpoint = tune.get_checkpoint()
        resume_from = checkpoint.to_directory(os.path.join(scratch, "resume")) if checkpoint else None
        run(config, report, checkpoint_dir=os.path.join(scratch, "checkpoints"), resume_from=resume_from)


def make_trainable(synthetic: Mapping[str, int] | None, cpu: float, gpu: float):
    """:func:`train_trial` bound to the spec's data settings and per-trial resources."""
    from ray import tune

    return tune.with_resources(tune.with_parameters(train_trial, synthetic=synthetic), {"cpu": cpu, "gpu": gpu})
