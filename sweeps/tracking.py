"""Experiment trackers: the spec's ``tracking:`` section as Ray Tune's own logger callbacks.

::

    tracking:
      mlflow: {tracking_uri: "file:///path/mlruns", experiment_name: clamp-study}
      wandb: {project: clamp-study, group: run-3, mode: offline}

- ``mlflow``: Ray's ``MLflowLoggerCallback``: one MLflow run per trial under the experiment
  ``experiment_name`` (default: the sweep's name), the trial's config as params and every reported
  metric as a per-epoch history, the same run continued when a resumed sweep restarts the trial.
  ``tracking_uri`` defaults to MLflow's own default (``MLFLOW_TRACKING_URI``, else a local store in
  the driver's working directory).
- ``wandb``: Ray's ``WandbLoggerCallback``: one W&B run per trial in ``project`` (default
  ``onlinenorm``), grouped by ``group`` (default: the sweep's name); ``mode`` is W&B's
  (``online``, ``offline``: files only, in ``TRIAL_DIR/wandb`` once the run has ended, ``disabled``;
  default: W&B's own).

TensorBoard needs no section: Ray Tune writes event files into every trial directory.
``onlinenorm sweep run --tracking mlflow,wandb`` (or ``none``) overrides which trackers run.
Nothing here imports Ray; the callbacks are built by :mod:`sweeps.callbacks`.
"""

from __future__ import annotations

import importlib.util
from typing import Any

TRACKERS = {
    "mlflow": {"tracking_uri": None, "experiment_name": None},
    "wandb": {"project": "onlinenorm", "group": None, "mode": None},
}
WANDB_MODES = ("online", "offline", "disabled")
NO_TRACKING = "none"


def check_tracking(problems, value: Any) -> dict[str, dict]:
    """The ``tracking`` section checked (one ``problems`` line per issue), defaults filled in.

    Returns:
        ``{tracker: settings}`` for the trackers asked for (empty when none).
    """
    from sweeps.spec import _mapping, _unknown

    trackers = {}
    for name, settings in _mapping(problems, "tracking", value or {}).items():
        if name not in TRACKERS:
            _unknown(problems, f"tracking.{name}", name, TRACKERS)
            continue
        if importlib.util.find_spec(name) is None:
            problems.add(f"tracking.{name}", f"needs the {name} package: pip install 'onlinenorm[{name}]'")
        resolved = dict(TRACKERS[name])
        for key, item in _mapping(problems, f"tracking.{name}", settings or {}).items():
            if key not in resolved:
                _unknown(problems, f"tracking.{name}.{key}", key, TRACKERS[name])
            elif item is not None and not isinstance(item, str):
                problems.add(f"tracking.{name}.{key}", f"must be a string; got {item!r}")
            else:
                resolved[key] = item
        if name == "wandb" and resolved["mode"] not in (None, *WANDB_MODES):
            problems.add("tracking.wandb.mode", f"must be one of {', '.join(WANDB_MODES)}; got {resolved['mode']!r}")
        trackers[name] = resolved
    return trackers


def select_trackers(raw: dict, choice: str) -> dict:
    """Spec ``raw`` with only the trackers named in ``--tracking`` (comma-separated, or ``none``).

    A named tracker keeps its spec settings, or gets the defaults; :class:`~sweeps.spec.SpecError`
    for an unknown name.
    """
    from sweeps.spec import SpecError

    names = [name.strip() for name in choice.split(",") if name.strip()]
    unknown = [name for name in names if name not in (*TRACKERS, NO_TRACKING)]
    if unknown or not names or (NO_TRACKING in names and len(names) > 1):
        raise SpecError(
            "--tracking", [f"expects {NO_TRACKING} or a comma-separated list of {', '.join(TRACKERS)}; got {choice!r}"]
        )
    configured = raw.get("tracking") if isinstance(raw.get("tracking"), dict) else {}
    chosen = {} if names == [NO_TRACKING] else {name: configured.get(name) or {} for name in names}
    return {**raw, "tracking": chosen}
