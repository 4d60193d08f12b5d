"""The sweep spec: a YAML file that is the whole description of a sweep.

:func:`load_spec` reads one, applies ``--set`` overrides, checks every key
and value (reporting each problem with its key path) and expands it into the
resolved training configs of its trials. Nothing here imports Ray or torch's
heavy parts beyond what :mod:`onlinenorm.training.config` needs, and nothing is written.

A spec maps onto training configs (:mod:`onlinenorm.training.config`) like this: the
``dataset`` section gives ``dataset`` (from ``name``) and the data keys, the
top-level ``model`` and the ``train`` section give fixed keys, and every point
of ``grid`` (a full cartesian product) and of ``extra_trials`` (each its own
small product: scalars fixed, lists swept) overrides them.

Values are checked with the rules of :mod:`onlinenorm.training.rules`, the training
config's own. Optional top-level sections (``scheduler``, ``reference``, ...)
are each checked by one function registered in :data:`SECTIONS`. With ``search``
random, ``space`` points (:mod:`sweeps.search`) are sampled and crossed with the
grid; ``tracking`` names the experiment trackers (:mod:`sweeps.tracking`).
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from onlinenorm.constants import DATASETS
from onlinenorm.training.config import SCHEMA, parse_assignment, validate_config
from onlinenorm.training.rules import Rule, choice, integer, optional, real, text
from onlinenorm.training.yaml12 import YAMLError, load_yaml
from sweeps.search import Search, check_search
from sweeps.tracking import check_tracking, select_trackers

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Data keys live in the dataset section only, so one sweep reads one dataset (prepared once per node).
DATA_KEYS = ("data_dir", "download", "subset", "subset_seed", "classes", "max_per_class", "image_size", "cache_dir")
SYNTHETIC_KEYS = {"train": 1, "test": 1, "seed": 0}  # key -> lowest allowed value
SYNTHETIC_DEFAULTS = {"train": 5000, "test": 1000, "seed": 0}
SCHEDULER_TYPES = ("asha",)
SCHEDULER_METRICS = ("val_acc", "val_acc_unclamped", "val_loss", "train_acc", "train_loss")
SCHEDULER_DEFAULTS = {"type": "asha", "metric": "val_acc", "mode": None, "grace_period": 1, "reduction_factor": 3}
SCHEDULER_RULES = {
    "type": choice(*SCHEDULER_TYPES),
    "metric": choice(*SCHEDULER_METRICS),
    "mode": optional(choice("min", "max")),  # null: min for losses, else max
    "grace_period": integer(1),  # epochs
    "reduction_factor": real(1.0),
}
# Published figures a reference entry may give, and their rules.
REFERENCE_FIGURES = {"val_acc": real(0.0, 1.0, low_open=False, high_open=False), "val_loss": real(0.0, low_open=False)}
RESOURCE_RULES = {"cpu": real(0.0), "gpu": real(0.0, low_open=False)}  # per trial; fractional GPUs allowed
COUNT = integer(0)


class SpecError(ValueError):
    """A spec with problems; ``problems`` holds one ``path: message`` line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        plural = "s" if len(problems) > 1 else ""
        super().__init__(f"{source}: {len(problems)} problem{plural} in the sweep spec\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Scheduler:
    """An early-stopping scheduler (ASHA) over ``metric``, rungs counted in epochs."""

    type: str
    metric: str
    mode: str
    grace_period: int
    reduction_factor: float


@dataclass(frozen=True)
class Reference:
    """Published figures to place the sweep's results against.

    ``results``: one mapping per figure set, config keys that select trials
    (e.g. ``{norm: online, ecm: ls}``) plus figures (``val_acc`` a fraction,
    ``val_loss``).
    """

    source: str
    results: list[dict]


@dataclass(frozen=True)
class SweepSpec:
    """A checked spec: its settings and the resolved training config of every trial."""

    name: str
    raw: dict  # the effective spec (after overrides, data_dir made absolute): what spec.yaml holds
    trials: list[dict]
    synthetic: dict | None  # {train, test, seed} when the data is generated on first use
    cpu: float
    gpu: float
    max_concurrent: int
    max_failures: int
    scheduler: Scheduler | None
    reference: Reference | None = None
    swept_keys: list[str] = field(default_factory=list)  # config keys whose value differs between trials
    search: Search = Search()  # grid (the trials above), random (sampled points x grid) or optuna (grid templates)
    tracking: dict = field(default_factory=dict)  # tracker name -> settings (sweeps.tracking)

    @property
    def data_config(self) -> dict:
        """The data keys every trial shares (what to prepare once per node)."""
        return {key: self.trials[0][key] for key in ("dataset", *DATA_KEYS)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False)


class Problems(list):
    """The problems found so far, one ``path: message`` line each."""

    def add(self, path: str, message: str) -> None:
        self.append(f"{path}: {message}")

    def check(self, path: str, rule: Rule, value: Any) -> bool:
        """Add ``rule``'s problem with ``value`` (if any) at ``path``; whether ``value`` is allowed."""
        problem = rule.problem(value)
        if problem:
            self.add(path, problem)
        return problem is None


def _unknown(problems: Problems, path: str, key: str, known) -> None:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    problems.add(path, f"unknown key; {hint}known keys: {', '.join(known)}")


def _mapping(problems: Problems, path: str, value: Any) -> dict:
    if isinstance(value, dict):
        return value
    problems.add(path, f"must be a mapping of keys to values; got {value!r}")
    return {}


def _check_value(problems: Problems, path: str, key: str, value: Any) -> None:
    """One training-config value at ``path``, checked with the config schema's own rule."""
    problems.check(path, SCHEMA[key].rule, value)


def _is_axis(key: str, value: Any) -> bool:
    """Whether ``value`` lists several values of ``key`` (``milestones`` is itself a list)."""
    return isinstance(value, list) and (key != "milestones" or bool(value) and all(isinstance(v, list) for v in value))


def _check_config_keys(problems: Problems, path: str, mapping: dict, *, values_are_lists: bool | None) -> None:
    """Keys of ``train`` (single values), ``grid`` (lists) or an extra trial (either)."""
    allowed = [k for k in SCHEMA if k != "dataset" and k not in DATA_KEYS]
    for key, value in mapping.items():
        where = f"{path}.{key}"
        if key in DATA_KEYS or key == "dataset":
            problems.add(where, "data keys belong in the dataset section (one dataset per sweep)")
        elif key not in SCHEMA:
            _unknown(problems, where, key, allowed)
        elif values_are_lists or (values_are_lists is None and _is_axis(key, value)):
            if not isinstance(value, list):
                problems.add(where, f"must be a list of values (a grid axis); got {value!r}")
            elif not value:
                problems.add(where, "must not be empty: an empty axis expands the grid to zero trials")
            for index, item in enumerate(value if isinstance(value, list) else []):
                _check_value(problems, f"{where}[{index}]", key, item)
        elif values_are_lists is False and _is_axis(key, value):
            problems.add(where, f"must be a single value (put lists of values in grid); got {value!r}")
        else:
            _check_value(problems, where, key, value)


def _check_dataset(problems: Problems, section: dict) -> dict | None:
    """The dataset section; returns the synthetic settings (or None)."""
    for key, value in section.items():
        if key == "name":
            if value not in DATASETS:
                problems.add("dataset.name", f"must be one of {', '.join(DATASETS)}; got {value!r}")
        elif key in DATA_KEYS:
            _check_value(problems, f"dataset.{key}", key, value)
        elif key != "synthetic":
            _unknown(problems, f"dataset.{key}", key, ("name", *DATA_KEYS, "synthetic"))
    if "name" not in section:
        problems.add("dataset.name", f"required: one of {', '.join(DATASETS)}")
    if section.get("synthetic") is None:
        return None
    synthetic = dict(SYNTHETIC_DEFAULTS)
    for key, value in _mapping(problems, "dataset.synthetic", section["synthetic"]).items():
        if key not in SYNTHETIC_KEYS:
            _unknown(problems, f"dataset.synthetic.{key}", key, SYNTHETIC_KEYS)
        elif problems.check(f"dataset.synthetic.{key}", integer(SYNTHETIC_KEYS[key]), value):
            synthetic[key] = value
    if not section.get("data_dir"):
        problems.add("dataset.data_dir", "required with dataset.synthetic: the folder the generated data goes to")
    return synthetic


def _check_scheduler(problems: Problems, path: str, value: Any) -> Scheduler | None:
    if value is None:
        return None
    settings = dict(SCHEDULER_DEFAULTS)
    for key, item in _mapping(problems, path, value).items():
        if key not in SCHEDULER_DEFAULTS:
            _unknown(problems, f"{path}.{key}", key, SCHEDULER_DEFAULTS)
        settings[key] = item
    for key, rule in SCHEDULER_RULES.items():
        problems.check(f"{path}.{key}", rule, settings[key])
    if settings["mode"] is None:
        settings["mode"] = "min" if str(settings["metric"]).endswith("loss") else "max"
    return Scheduler(**settings)


def _check_reference(problems: Problems, path: str, value: Any) -> Reference | None:
    """``{source: TEXT, results: [{<config keys>..., val_acc: F, val_loss: L}, ...]}``."""
    if value is None:
        return None
    section = _mapping(problems, path, value)
    for key in section:
        if key not in ("source", "results"):
            _unknown(problems, f"{path}.{key}", key, ("source", "results"))
    problems.check(f"{path}.source", text(), section.get("source"))
    results = section.get("results")
    if not (isinstance(results, list) and results):
        problems.add(
            f"{path}.results", f"must be a non-empty list of mappings (config keys and figures); got {results!r}"
        )
        results = []
    for index, entry in enumerate(results):
        where = f"{path}.results[{index}]"
        entry = _mapping(problems, where, entry)
        for key, item in entry.items():
            if key in REFERENCE_FIGURES:
                problems.check(f"{where}.{key}", REFERENCE_FIGURES[key], item)
            elif key in SCHEMA:
                _check_value(problems, f"{where}.{key}", key, item)
            else:
                _unknown(problems, f"{where}.{key}", key, [*REFERENCE_FIGURES, *SCHEMA])
        if entry and not any(key in REFERENCE_FIGURES for key in entry):
            problems.add(where, f"gives no figure; give {' and/or '.join(REFERENCE_FIGURES)}")
        if entry and not any(key in SCHEMA for key in entry):
            problems.add(where, "selects no trials; give config keys, e.g. {norm: online, ecm: ls}")
    return Reference(section.get("source"), [dict(entry) for entry in results if isinstance(entry, dict)])


@dataclass(frozen=True)
class Section:
    """An optional top-level spec section: its value when absent, and its checker.

    ``check(problems, path, value)`` adds a problem per bad key (via
    :class:`Problems`) and returns the parsed settings, which
    :class:`SweepSpec` holds in its field of the section's name.
    """

    default: Any
    check: Callable[[Problems, str, Any], Any]


# The optional sections, checked in this order after the trials' keys; a new section is one entry here.
SECTIONS: dict[str, Section] = {
    "scheduler": Section(None, _check_scheduler),
    "reference": Section(None, _check_reference),
    "tracking": Section(None, lambda problems, path, value: check_tracking(problems, value)),
}
TOP_LEVEL_DEFAULTS = {
    "model": None,
    "train": {},
    "extra_trials": [],
    "resources": {"cpu": 1, "gpu": 0},
    "max_concurrent": 0,
    "max_failures": 2,
}
REQUIRED_KEYS = ("name", "dataset")
TOP_LEVEL_KEYS = (
    "name",
    "dataset",
    "model",
    "train",
    "grid",
    "extra_trials",
    "resources",
    "max_concurrent",
    "max_failures",
    "search",
    "space",
    *SECTIONS,
)


def _check_top_level(problems: Problems, raw: dict) -> None:
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            _unknown(problems, key, key, TOP_LEVEL_KEYS)
    for key in REQUIRED_KEYS:
        if key not in raw:
            problems.add(key, "required")
    if "name" in raw and not (isinstance(raw["name"], str) and NAME_PATTERN.fullmatch(raw["name"])):
        problems.add(
            "name", f"must be letters, digits, '.', '_' or '-' (it names the experiment folder); got {raw['name']!r}"
        )
    if raw.get("model") is not None:
        _check_value(problems, "model", "model", raw["model"])
    for key in ("max_concurrent", "max_failures"):
        problems.check(key, COUNT, raw[key])
    resources = {**TOP_LEVEL_DEFAULTS["resources"], **_mapping(problems, "resources", raw["resources"])}
    for key, item in resources.items():
        if key not in RESOURCE_RULES:
            _unknown(problems, f"resources.{key}", key, RESOURCE_RULES)
        else:
            problems.check(f"resources.{key}", RESOURCE_RULES[key], item)


def _product(axes: Mapping[str, list]) -> list[dict]:
    return [dict(zip(axes, values, strict=False)) for values in itertools.product(*axes.values())]


def _as_axes(point: Mapping[str, Any]) -> dict[str, list]:
    """An extra trial as grid axes: lists are swept, single values fixed."""
    return {k: v if _is_axis(k, v) else [v] for k, v in point.items()}


def _expand(problems: Problems, raw: dict, base: dict, search: Search) -> list[dict]:
    """Every trial's resolved config, grid first; problems for invalid combinations and repeats."""
    sources = search.sources(_product(raw["grid"]) if "grid" in raw else [])
    for index, extra in enumerate(raw["extra_trials"]):
        sources += [(f"extra_trials[{index}]", point) for point in _product(_as_axes(extra))]
    trials, seen = [], {}
    for path, point in sources:
        label = f"{path} ({', '.join(f'{k}={v}' for k, v in point.items())})"
        try:
            config = validate_config({**base, **point})
        except ValueError as err:
            problems.add(label, str(err))
            continue
        fingerprint = json.dumps(config, sort_keys=True)
        if fingerprint in seen:
            problems.add(label, f"repeats the trial of {seen[fingerprint]}; every trial must differ")
            continue
        seen[fingerprint] = label
        trials.append(config)
    if not sources:
        problems.add("grid", "the sweep expands to zero trials; give a grid, extra_trials, or both")
    return trials


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``--set a.b=value`` items (value parsed as YAML) applied to a copy of ``raw``."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        try:
            path, value = parse_assignment(item)
        except ValueError as err:
            raise SpecError("--set", [f"{err}; e.g. train.epochs=2 or grid.seed=[0,1]"]) from None
        *parents, leaf = path.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpecError("--set", [f"{item}: {part} is not a mapping in the spec"])
        node[leaf] = value
    return raw


def read_yaml(path: str | Path) -> dict:
    """The mapping in a spec file; :class:`SpecError` when it cannot be read or is not a mapping."""
    try:
        raw = load_yaml(Path(path).read_text())
    except (OSError, YAMLError) as err:
        raise SpecError(str(path), [f"cannot read the spec: {err}"]) from None
    if not isinstance(raw, dict):
        raise SpecError(str(path), [f"a spec is a YAML mapping (name, dataset, grid, ...); found {type(raw).__name__}"])
    return raw


def parse_spec(raw: dict, source: str = "spec") -> SweepSpec:
    """Check ``raw`` (a spec mapping) and expand it; :class:`SpecError` lists every problem."""
    raw = copy.deepcopy({**TOP_LEVEL_DEFAULTS, **{name: section.default for name, section in SECTIONS.items()}, **raw})
    problems = Problems()
    _check_top_level(problems, raw)
    dataset = _mapping(problems, "dataset", raw.get("dataset", {}))
    synthetic = _check_dataset(problems, dataset) if dataset else None
    train = _mapping(problems, "train", raw["train"])
    _check_config_keys(problems, "train", train, values_are_lists=False)
    if "grid" in raw:
        _check_config_keys(problems, "grid", _mapping(problems, "grid", raw["grid"]), values_are_lists=True)
    extras = raw["extra_trials"] if isinstance(raw["extra_trials"], list) else []
    if not isinstance(raw["extra_trials"], list):
        problems.add("extra_trials", f"must be a list of mappings (one per extra trial); got {raw['extra_trials']!r}")
    for index, extra in enumerate(extras):
        _check_config_keys(
            problems,
            f"extra_trials[{index}]",
            _mapping(problems, f"extra_trials[{index}]", extra),
            values_are_lists=None,
        )
    sections = {name: section.check(problems, name, raw[name]) for name, section in SECTIONS.items()}
    search = check_search(problems, raw)
    if problems:
        raise SpecError(source, problems)

    if dataset.get("data_dir") is not None:
        dataset["data_dir"] = str(Path(dataset["data_dir"]).expanduser().absolute())
    resources = {"cpu": 1, "gpu": 0, **raw["resources"]}
    base = {
        "dataset": dataset["name"],
        **{k: v for k, v in dataset.items() if k in DATA_KEYS},
        "model": raw["model"],
        "threads": max(1, int(resources["cpu"])),  # torch threads = the trial's CPU share
        "device": "cuda" if resources["gpu"] > 0 else "cpu",
        **train,
    }
    trials = _expand(problems, raw, base, search)
    if problems:
        raise SpecError(source, problems)
    swept = [key for key in trials[0] if len({json.dumps(t[key]) for t in trials}) > 1]
    return SweepSpec(
        name=raw["name"],
        raw=raw,
        trials=trials,
        synthetic=synthetic,
        cpu=resources["cpu"],
        gpu=resources["gpu"],
        max_concurrent=raw["max_concurrent"],
        max_failures=raw["max_failures"],
        swept_keys=swept,
        search=search,
        **sections,
    )


def load_spec(
    path: str | Path, overrides: list[str] = (), name: str | None = None, tracking: str | None = None
) -> SweepSpec:
    """Read, check and expand the sweep spec in the YAML file ``path``.

    The overrides, name and trackers are applied to the file's mapping first, so the checks see the
    effective spec.

    Args:
        path: the spec file.
        overrides: ``--set`` items ``a.b=value`` (the value parsed as YAML), applied in order; a missing
            parent key is created as a mapping. Default: ``()``
        name: the sweep's name instead of the spec's ``name``. Default: ``None`` (the spec's)
        tracking: the ``--tracking`` choice: ``none`` or a comma-separated list of trackers, each keeping its
            spec settings or getting the defaults; the spec's other trackers are dropped. Default: ``None``
            (the spec's trackers)

    Returns:
        The checked :class:`SweepSpec`, its trials expanded into resolved training configs.

    Raises:
        SpecError: the file cannot be read or does not hold a YAML mapping, an override or the tracking
            choice is malformed, or the spec has problems (each listed with its key path).
    """
    raw = apply_overrides(read_yaml(path), list(overrides))
    raw = select_trackers(raw, tracking) if tracking is not None else raw
    return parse_spec({**raw, "name": name} if name is not None else raw, str(path))
