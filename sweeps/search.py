"""Sampled and Bayesian search: the spec's ``search:`` and ``space:`` sections as Ray Tune objects.

::

    search: {type: random, num_samples: 8, seed: 0}    # or {type: optuna, num_samples: 8, metric: val_acc}
    space:                                             # sampled training-config keys
      clamp_value: {loguniform: [0.5, 8]}
      alpha_fwd: {decay: [0.99, 0.9999]}
    grid: {seed: [0, 1]}                               # crossed with every sampled point

Each ``space`` entry is one distribution, mapped onto Ray Tune's own domains:

============  ===================  ============================================================
name          arguments            values
============  ===================  ============================================================
uniform       ``[low, high]``      ``tune.uniform``: real, uniform in ``[low, high]``
loguniform    ``[low, high]``      ``tune.loguniform``: ``log x`` uniform, ``0 < low``
randint       ``[low, high]``      ``tune.randint``: integers ``low .. high - 1``
choice        ``[v1, v2, ...]``    ``tune.choice``: one of the listed values
decay         ``[low, high]``      a decay factor ``alpha`` with ``log(1 - alpha)`` uniform,
                                   ``0 < low < high < 1`` (a :class:`OneMinusLogUniform` sampler)
============  ===================  ============================================================

``type: random`` draws ``num_samples`` points up front with those domains and
a ``numpy`` generator seeded by ``search.seed``, so the points are known
before anything starts: ``--dry-run`` lists them, every trial is checked like
a grid trial, and ``sweep resume`` replays them from Tune's own searcher state.
Every point is crossed with the grid (``num_samples x grid`` trials).

``type: optuna`` asks Ray Tune's ``OptunaSearch`` (Optuna's TPE sampler,
seeded by ``search.seed``) for ``num_samples`` points, one at a time as trials
finish. Repeats over the grid (typically seeds) go through Ray Tune's
``Repeater``: each suggested point runs once at every grid point, and TPE is
told the mean of ``metric`` over those runs, so it models the seed-averaged
outcome rather than chasing one lucky seed.

Nothing here imports Ray at import time (drawing a random search's points
does, when its spec is read); the Ray Tune searchers these settings build are
in :mod:`sweeps.searchers`. With ``seed: null`` every reading draws new points.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

SEARCH_TYPES = ("grid", "random", "optuna")
SEARCH_DEFAULTS = {"type": "grid", "num_samples": None, "seed": None, "metric": None, "mode": None}
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice", "decay")
BOUNDED = ("uniform", "loguniform", "randint", "decay")  # distributions given as [low, high]


@dataclass(frozen=True)
class Axis:
    """One sampled config key: ``distribution`` over ``args`` (``(low, high)``, or the choices)."""

    key: str
    distribution: str
    args: tuple

    def domain(self):
        """The Ray Tune domain (``tune.uniform`` and friends) that draws this key's values."""
        from ray import tune
        from ray.tune.search.sample import Float

        if self.distribution == "decay":
            domain = Float(*self.args)
            domain.set_sampler(OneMinusLogUniform())
            return domain
        if self.distribution == "choice":
            return tune.choice(list(self.args))
        return getattr(tune, self.distribution)(*self.args)

    def suggest(self, trial) -> Any:
        """This key's value from an Optuna trial (``decay`` searched as ``1 - alpha`` on a log scale)."""
        if self.distribution == "choice":
            return trial.suggest_categorical(self.key, list(self.args))
        low, high = self.args
        if self.distribution == "randint":
            return trial.suggest_int(self.key, low, high - 1)
        if self.distribution == "decay":
            return 1.0 - trial.suggest_float(self.key, 1.0 - high, 1.0 - low, log=True)
        return trial.suggest_float(self.key, low, high, log=self.distribution == "loguniform")

    def extremes(self) -> list:
        """The values that bound this axis (every choice), each checked against the config schema."""
        if self.distribution == "choice":
            return list(self.args)
        return [self.args[0], self.args[1] - 1] if self.distribution == "randint" else list(self.args)

    def __str__(self) -> str:
        return f"{self.key} ~ {self.distribution}{list(self.args)}"


@dataclass(frozen=True)
class Search:
    """A checked ``search:`` section with its ``space:`` axes (``type: grid`` has none)."""

    type: str = "grid"
    num_samples: int = 1
    seed: int | None = None
    metric: str | None = None
    mode: str | None = None
    space: tuple[Axis, ...] = ()

    def sample_points(self) -> list[dict]:
        """The ``num_samples`` points of a random search, drawn with Ray Tune's domains, seeded by ``seed``.

        Returns:
            one ``{key: value}`` per point. Keys are drawn in name order, so a spec's points do not
            depend on the order its ``space`` lists them in.
        """
        rng = np.random.default_rng(self.seed)
        domains = [(axis.key, axis.domain()) for axis in sorted(self.space, key=lambda axis: axis.key)]
        return [{key: domain.sample(random_state=rng) for key, domain in domains} for _ in range(self.num_samples)]

    def sources(self, grid: list[dict]) -> list[tuple[str, dict]]:
        """(label, config overrides) of every trial the grid part yields.

        ``random``: each sampled point crossed with every grid point. ``optuna``: the grid points alone,
        the templates each suggested point runs at (at least one). ``grid``: the grid points.
        """
        if self.type == "random":
            return [
                (f"sample {index}", {**point, **cell})
                for index, point in enumerate(self.sample_points())
                for cell in grid or [{}]
            ]
        if self.type == "optuna":
            return [("grid", cell) for cell in grid or [{}]]
        return [("grid", cell) for cell in grid]


class OneMinusLogUniform:
    """Ray Tune sampler for decay factors: ``alpha`` in ``[lower, upper]`` with ``log(1 - alpha)`` uniform.

    ``1 - alpha`` is the time constant's inverse, so each decade of it (``0.9, 0.99, 0.999``) is
    equally likely, where a uniform ``alpha`` would almost never come near 1.
    """

    def sample(self, domain, config=None, size: int = 1, random_state=None):
        rng = random_state if random_state is not None else np.random.default_rng()
        one_minus = np.exp(rng.uniform(math.log(1.0 - domain.upper), math.log(1.0 - domain.lower), size=size))
        values = [domain.cast(1.0 - value) for value in one_minus]
        return values if size > 1 else values[0]


def _axis(problems, key: str, value: Any) -> Axis | None:
    """One ``space`` entry checked; problems go to ``problems`` (``space.KEY: ...``)."""
    from onlinenorm.training.config import SCHEMA
    from sweeps.spec import DATA_KEYS

    path = f"space.{key}"
    if key not in SCHEMA or key == "dataset" or key in DATA_KEYS:
        problems.add(path, "not a training-config key that can be sampled (data keys stay fixed per sweep)")
        return None
    if not (isinstance(value, dict) and len(value) == 1):
        problems.add(path, f"must be one distribution, e.g. {{loguniform: [0.5, 8]}}; got {value!r}")
        return None
    ((distribution, args),) = value.items()
    if distribution not in DISTRIBUTIONS:
        problems.add(path, f"unknown distribution {distribution!r}; use one of {', '.join(DISTRIBUTIONS)}")
        return None
    if not (isinstance(args, list) and args):
        problems.add(f"{path}.{distribution}", f"must be a list ([low, high] or the choices); got {args!r}")
        return None
    if distribution in BOUNDED:
        numeric = all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
        integral = distribution != "randint" or all(isinstance(a, int) for a in args)
        if len(args) != 2 or not numeric or not integral:
            kind = "integers" if distribution == "randint" else "numbers"
            problems.add(f"{path}.{distribution}", f"must be [low, high], two {kind}; got {args!r}")
            return None
        low, high = args
        if low >= high:
            problems.add(f"{path}.{distribution}", f"low must be < high; got low={low}, high={high}")
            return None
        if distribution == "loguniform" and low <= 0:
            problems.add(f"{path}.loguniform", f"bounds must be > 0 on a log scale; got low={low}")
            return None
        if distribution == "decay" and not (low > 0 and high < 1):
            problems.add(f"{path}.decay", f"bounds must lie in (0, 1) (decay factors); got [{low}, {high}]")
            return None
    axis = Axis(key, distribution, tuple(args))
    rule = SCHEMA[key].rule
    for extreme in axis.extremes():
        if not rule.accepts(extreme):
            problems.add(f"{path}.{distribution}", f"{key} must be {rule.allowed}; the range reaches {extreme!r}")
            return None
    return axis


def check_search(problems, raw: dict) -> Search:
    """The ``search`` and ``space`` sections of spec ``raw`` checked; one ``problems`` line per issue.

    Args:
        problems: the spec checker's problem list (``problems.add(path, message)``).
        raw: the spec mapping (``search``, ``space``, ``grid``, ``extra_trials`` are read).

    Returns:
        the :class:`Search` (``type: grid`` when the spec has no ``search`` section).
    """
    from sweeps.spec import SCHEDULER_METRICS, _mapping, _unknown

    settings = dict(SEARCH_DEFAULTS)
    for key, value in _mapping(problems, "search", raw.get("search") or {}).items():
        if key not in SEARCH_DEFAULTS:
            _unknown(problems, f"search.{key}", key, SEARCH_DEFAULTS)
        settings[key] = value
    kind = settings["type"]
    sampled = kind in ("random", "optuna")
    if kind not in SEARCH_TYPES:
        problems.add("search.type", f"must be one of {', '.join(SEARCH_TYPES)}; got {kind!r}")
    elif kind == "optuna" and importlib.util.find_spec("optuna") is None:
        problems.add("search.type", "optuna needs the optuna package: pip install 'onlinenorm[optuna]'")
    num_samples = settings["num_samples"]
    if sampled and not (isinstance(num_samples, int) and not isinstance(num_samples, bool) and num_samples >= 1):
        problems.add("search.num_samples", f"must be an integer >= 1 (points to sample); got {num_samples!r}")
    seed = settings["seed"]
    if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        problems.add("search.seed", f"must be an integer >= 0 or null; got {seed!r}")
    if kind == "optuna":
        if settings["metric"] is None:
            problems.add(
                "search.metric",
                f"required with type optuna: the metric TPE optimizes, one of {', '.join(SCHEDULER_METRICS)}",
            )
        elif settings["metric"] not in SCHEDULER_METRICS:
            problems.add("search.metric", f"must be one of {', '.join(SCHEDULER_METRICS)}; got {settings['metric']!r}")
        if settings["mode"] not in (None, "min", "max"):
            problems.add(
                "search.mode", f"must be min or max (default: min for losses, else max); got {settings['mode']!r}"
            )
        if raw.get("extra_trials"):
            problems.add("extra_trials", "not used by search type optuna; run fixed baselines as a grid sweep")
    else:
        for key in ("metric", "mode"):
            if settings[key] is not None:
                problems.add(f"search.{key}", "only used by search type optuna (the metric it optimizes)")
    if kind == "grid":
        for key in ("num_samples", "seed"):
            if settings[key] is not None:
                problems.add(f"search.{key}", "only used by search type random or optuna")
        if raw.get("space") is not None:
            problems.add("space", "sampled keys need search.type random or optuna (the default is grid)")
        return Search()

    space = _mapping(problems, "space", raw.get("space") or {})
    if kind in SEARCH_TYPES and not space:
        problems.add(
            "space", f"required with search type {kind}: the keys to sample, e.g. clamp_value: {{loguniform: [0.5, 8]}}"
        )
    grid = raw.get("grid") if isinstance(raw.get("grid"), dict) else {}
    axes = []
    for key, value in space.items():
        if key in grid:
            problems.add(f"space.{key}", "also a grid axis; a key is either swept on the grid or sampled")
        axis = _axis(problems, key, value)
        if axis is not None:
            axes.append(axis)
    mode = settings["mode"] or ("min" if str(settings["metric"]).endswith("loss") else "max")
    return Search(
        kind,
        num_samples if isinstance(num_samples, int) else 1,
        seed,
        settings["metric"],
        mode if kind == "optuna" else None,
        tuple(axes),
    )


def describe(spec) -> str:
    """What ``--dry-run`` prints: the search, what is sampled, and the trials (or grid templates)."""
    search = spec.search
    trial_keys = [k for k in spec.swept_keys if k not in {axis.key for axis in search.space}]
    if search.type == "optuna":
        total = search.num_samples * len(spec.trials)
        lines = [
            f"sweep {spec.name}: {total} trials: optuna (TPE) suggests {search.num_samples} points "
            f"({search.mode}imizing the mean {search.metric} over each point's {len(spec.trials)} grid "
            f"runs, seed {search.seed})"
        ]
    elif search.type == "random":
        grid = spec.raw.get("grid") or {}
        extras = len(spec.trials) - search.num_samples * math.prod(len(values) for values in grid.values())
        lines = [
            f"sweep {spec.name}: {len(spec.trials)} trials: {search.num_samples} random points "
            f"(seed {search.seed}) x {math.prod(len(values) for values in grid.values())} grid points"
            + (f" + {extras} extra trials" if extras else "")
        ]
        trial_keys = spec.swept_keys
    else:
        lines = [f"sweep {spec.name}: {len(spec.trials)} trials over {', '.join(spec.swept_keys) or 'nothing'}"]
    lines += [f"  sampled: {axis}" for axis in search.space]
    if search.type == "optuna":
        lines.append(f"  grid points each suggestion runs at, over {', '.join(trial_keys) or 'nothing'}:")
    lines += [
        f"  {index:3d}  " + " ".join(f"{key}={trial[key]}" for key in trial_keys)
        for index, trial in enumerate(spec.trials)
    ]
    return "\n".join(lines)
