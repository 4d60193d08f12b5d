"""The Ray Tune search algorithms a sweep runs with, built from its checked ``search:`` settings.

- grid and random search: ``BasicVariantGenerator`` over the spec's resolved trials
  (``points_to_evaluate``; the random points were drawn when the spec was read);
- optuna search: ``OptunaSearch`` (TPE) over a define-by-run :class:`OptunaSpace`, wrapped in a
  :class:`GridRepeater` that runs every suggested point at every grid point (e.g. every seed) and
  tells TPE the mean of the metric over them.
"""

from __future__ import annotations

from ray import tune
from ray.tune.search import Repeater
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.repeater import TRIAL_INDEX

from sweeps.search import Axis


class OptunaSpace:
    """Optuna define-by-run search space over ``axes`` (a plain object, so Tune can pickle the searcher)."""

    def __init__(self, axes: tuple[Axis, ...]) -> None:
        self.axes = axes

    def __call__(self, trial) -> dict:
        # The returned values replace what the trial recorded: a decay key is searched as 1 - alpha.
        return {axis.key: axis.suggest(trial) for axis in self.axes}


class GridRepeater(Repeater):
    """Ray Tune's ``Repeater`` over a grid: repeat ``i`` of a suggested point runs at grid point ``i``.

    Each suggestion becomes ``len(templates)`` trials with configs ``{**templates[i], **suggested}``;
    once all of them complete, the wrapped searcher is told the mean of its metric over them.
    Tune saves and restores its groups (``get_state``) beside the wrapped searcher's own state.
    """

    def __init__(self, searcher, templates: list[dict]) -> None:
        super().__init__(searcher, repeat=len(templates), set_index=True)
        self.templates = templates

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if not isinstance(config, dict):
            return config  # None (wait for results) or Searcher.FINISHED
        return {**self.templates[config.pop(TRIAL_INDEX)], **config}


def listed_space(trials: list[dict], swept_keys: list[str]) -> dict:
    """Each config key's domain: a constant, or ``tune.choice`` of the values the trials use."""
    space = dict(trials[0])
    for key in swept_keys:
        values = []
        for trial in trials:
            if trial[key] not in values:
                values.append(trial[key])
        space[key] = tune.choice(values)
    return space


def tune_search(spec) -> tuple[dict, dict]:
    """The Tuner's ``param_space`` and the ``TuneConfig`` search settings for sweep ``spec``.

    Returns:
        ``(param_space, {"search_alg": ..., "num_samples": ...})``; for optuna search the param space
        is empty, every key coming from the :class:`GridRepeater` (grid templates + suggested values).
    """
    search = spec.search
    if search.type != "optuna":
        return listed_space(spec.trials, spec.swept_keys), {
            "search_alg": BasicVariantGenerator(points_to_evaluate=list(spec.trials)),
            "num_samples": len(spec.trials),
        }
    from ray.tune.search.optuna import OptunaSearch

    optuna = OptunaSearch(space=OptunaSpace(search.space), metric=search.metric, mode=search.mode, seed=search.seed)
    return {}, {
        "search_alg": GridRepeater(optuna, list(spec.trials)),
        "num_samples": search.num_samples * len(spec.trials),
    }
