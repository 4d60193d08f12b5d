"""The training-config schema: every key, its default, its allowed values.

This is the one place that says what a training run accepts.
:func:`validate_config` turns a user's partial config (a CLI file, flags, or a
sweep point) into a complete, checked one, filling dataset-dependent defaults
from :data:`RECIPES` (the paper's recipe for CIFAR and ImageNet). It raises
``ValueError`` naming the key and its allowed values; sweeps use it to check
sweep specs before launching anything.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .data.datasets import DATASETS
from .functional import KERNEL_CHOICES
from .models import MODELS, NORM_DIMS, create_model
from .norms import ECMS, NORMS

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class Recipe:
    """Dataset-dependent defaults; milestones are fractions of ``epochs``."""

    model: str
    epochs: int
    milestone_fractions: tuple[float, ...]
    weight_decay: float
    alpha_fwd: float
    alpha_bkw: float


# He et al. 2016 schedules (CIFAR: 64k iterations at batch 128, lr / 10 at 50% and 75%;
# ImageNet: 90 epochs, lr / 10 every 30) with the Online Normalization paper's decay factors.
RECIPES = {
    "cifar10": Recipe("resnet20", 164, (0.5, 0.75), 2e-4, 1023 / 1024, 127 / 128),
    "cifar100": Recipe("resnet20", 164, (0.5, 0.75), 2e-4, 511 / 512, 15 / 16),
    "imagefolder": Recipe("resnet18", 90, (1 / 3, 2 / 3), 1e-4, 0.999, 0.99),
    "imagenet-npz": Recipe("resnet18", 90, (1 / 3, 2 / 3), 1e-4, 0.999, 0.99),
}
RECIPE_KEYS = ("model", "epochs", "weight_decay", "alpha_fwd", "alpha_bkw")  # None -> the dataset's recipe


@dataclass(frozen=True)
class Rule:
    """How one key is checked: ``parse`` returns the normalized value or ``None`` if invalid;
    ``nullable`` keys also take ``None`` (meaning: resolve it from the recipe or a default)."""

    parse: Callable[[Any], Any]
    allowed: str
    nullable: bool = False

    def accepts(self, value: Any) -> bool:
        return self.nullable if value is None else self.parse(value) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def choice(*values: str) -> Rule:
    return Rule(lambda v: v if v in values else None, "one of " + ", ".join(values))


def integer(low: int) -> Rule:
    return Rule(lambda v: v if _is_int(v) and v >= low else None, f"an integer >= {low}")


def real(low: float, high: float | None = None, *, low_open: bool = True, high_open: bool = True) -> Rule:
    if high is None:  # unbounded above: finite numbers only (YAML's .inf is a float)
        high, high_open = math.inf, True

    def parse(value: Any) -> float | None:
        if not (_is_int(value) or isinstance(value, float)):
            return None
        value = float(value)
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return value if above and below else None

    upper = f"{high}{')' if high_open else ']'}"
    return Rule(parse, f"a number in {'(' if low_open else '['}{low}, {upper}")


def boolean() -> Rule:
    return Rule(lambda v: v if isinstance(v, bool) else None, "true or false")


def text() -> Rule:
    return Rule(lambda v: v if isinstance(v, str) and v else None, "a non-empty string")


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v if v is None else rule.parse(v), f"null or {rule.allowed}", nullable=True)


def either(first: Rule, second: Rule) -> Rule:
    def parse(value: Any) -> Any:
        parsed = first.parse(value)
        return second.parse(value) if parsed is None else parsed

    return Rule(parse, f"{first.allowed}, or {second.allowed}")


def ascending_integers(low: int) -> Rule:
    def parse(value: Any) -> list[int] | None:
        ok = isinstance(value, (list, tuple)) and all(_is_int(v) and v >= low for v in value)
        return list(value) if ok and list(value) == sorted(set(value)) else None

    return Rule(parse, f"a strictly ascending list of integers >= {low}")


def names_or_numbers() -> Rule:
    def parse(value: Any) -> list | None:
        ok = isinstance(value, (list, tuple)) and value and all(isinstance(v, str) or _is_int(v) for v in value)
        return list(value) if ok else None

    return Rule(parse, "a non-empty list of class names (ImageFolder) or 1-based labels (npz)")


def fraction_or_count() -> Rule:
    fraction = real(0.0, 1.0, high_open=False)
    return Rule(
        lambda v: fraction.parse(v) if isinstance(v, float) else integer(1).parse(v),
        "a fraction in (0, 1] or a per-class count >= 1",
    )


@dataclass(frozen=True)
class Option:
    default: Any
    rule: Rule
    doc: str


SCHEMA: dict[str, Option] = {
    # data
    "dataset": Option("cifar10", choice(*DATASETS), "dataset format and recipe"),
    "data_dir": Option(None, optional(text()), "dataset folder; null -> data/<dataset>"),
    "download": Option(False, boolean(), "fetch CIFAR archives when missing (needs internet)"),
    "subset": Option(None, optional(fraction_or_count()), "stratified training subset: fraction or per-class count"),
    "subset_seed": Option(0, integer(0), "seed of the subset draw (keep fixed across a sweep)"),
    "classes": Option(None, optional(either(integer(1), names_or_numbers())), "ImageNet: first K classes or a list"),
    "max_per_class": Option(None, optional(integer(1)), "ImageNet: cap on training images per class"),
    "image_size": Option(64, integer(8), "ImageFolder: decode resolution in pixels"),
    "cache_dir": Option(None, optional(text()), "ImageFolder: cache folder; null -> next to the data"),
    "augment": Option(True, boolean(), "random crop and flip on training batches"),
    # model and normalizer
    "model": Option(None, optional(choice(*MODELS)), "architecture; null -> the dataset's recipe"),
    "norm": Option("online", choice(*NORMS), "normalizer"),
    "ecm": Option("ac", choice(*ECMS), "online norm error compensation: clamping, layer scaling, none"),
    "alpha_fwd": Option(None, optional(real(0.0, 1.0)), "online norm forward decay; null -> recipe"),
    "alpha_bkw": Option(None, optional(real(0.0, 1.0)), "online norm backward decay; null -> recipe"),
    "clamp_value": Option(5.0, real(0.0), "activation clamp c (ecm=ac)"),
    "eps": Option(1e-5, real(0.0), "normalizer epsilon"),
    "ls_eps": Option(1e-5, real(0.0), "layer scaling epsilon (ecm=ls)"),
    "group_size": Option(8, integer(1), "channels per group (norm=group)"),
    # optimization
    "lr": Option(0.1, real(0.0), "SGD learning rate"),
    "momentum": Option(0.9, real(0.0, 1.0, low_open=False), "SGD momentum"),
    "weight_decay": Option(None, optional(real(0.0, low_open=False)), "L2 weight decay; null -> recipe"),
    "milestones": Option(None, optional(ascending_integers(1)), "epochs after which lr *= lr_decay; null -> recipe"),
    "lr_decay": Option(0.1, real(0.0, 1.0, high_open=False), "learning-rate factor at each milestone"),
    "epochs": Option(None, optional(integer(1)), "training epochs; null -> recipe"),
    "batch_size": Option(128, integer(2), "training batch size"),
    "eval_batch_size": Option(500, integer(1), "evaluation batch size (does not change results)"),
    "seed": Option(0, integer(0), "seed of initialization, order and augmentation"),
    # execution
    "device": Option(
        "auto",
        Rule(lambda v: v if isinstance(v, str) and DEVICE_PATTERN.fullmatch(v) else None, "auto, cpu, cuda or cuda:N"),
        "where to train; auto -> CUDA when present",
    ),
    "amp": Option("none", choice("none", "bf16"), "bfloat16 autocast (CUDA only)"),
    "threads": Option(None, optional(integer(1)), "torch CPU threads; null -> torch's default"),
    "kernels": Option(None, optional(choice(*KERNEL_CHOICES)),
                      "online norm training kernels; null -> ONLINENORM_KERNELS, else auto (the fastest that builds)"),
}

# Keys that may differ between a checkpoint and the run resuming it.
RESUMABLE_CHANGES = frozenset({"epochs", "data_dir", "download", "cache_dir", "eval_batch_size", "device", "threads",
                               "kernels"})


def defaults() -> dict[str, Any]:
    """The schema's defaults (before dataset-dependent resolution)."""
    return {key: option.default for key, option in SCHEMA.items()}


def check_value(key: str, value: Any) -> Any:
    """One key's normalized value; ``ValueError`` naming the key and its allowed values."""
    if key not in SCHEMA:
        close = difflib.get_close_matches(key, SCHEMA, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown config key {key!r}{hint}; known keys: {', '.join(SCHEMA)}")
    rule = SCHEMA[key].rule
    if not rule.accepts(value):
        raise ValueError(f"config key {key!r} must be {rule.allowed}, got {value!r}")
    return rule.parse(value)


def parse_assignment(item: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` (a ``--set`` item) as ``(KEY, VALUE read as YAML)``; ``ValueError`` if malformed."""
    import yaml

    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expects KEY=VALUE, got {item!r}")
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"value of {item!r} is not valid YAML ({err.problem or err})") from None


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The complete training config for ``config`` (a partial mapping).

    Checks every key and value, fills schema defaults, then fills the
    dataset's recipe (``model``, ``epochs``, ``weight_decay``, ``alpha_fwd``,
    ``alpha_bkw``, ``milestones`` as fractions of ``epochs``, ``data_dir``)
    where they are ``None``. Validating a resolved config returns it unchanged.
    """
    resolved = defaults()
    resolved.update({key: check_value(key, value) for key, value in config.items()})
    recipe = RECIPES[resolved["dataset"]]
    for key in RECIPE_KEYS:
        if resolved[key] is None:
            resolved[key] = getattr(recipe, key)
    if resolved["milestones"] is None:
        marks = (round(f * resolved["epochs"]) for f in recipe.milestone_fractions)
        resolved["milestones"] = sorted({m for m in marks if 1 <= m < resolved["epochs"]})
    if resolved["data_dir"] is None:
        resolved["data_dir"] = f"data/{resolved['dataset']}"
    if resolved["norm"] == "instance" and resolved["model"] == "mlp":
        raise ValueError("config key 'norm' must not be 'instance' for model 'mlp' (no spatial dims to normalize over)")
    if resolved["norm"] == "group":
        _check_group_size(resolved["model"], resolved["group_size"])
    if resolved["classes"] is not None and resolved["dataset"] not in ("imagefolder", "imagenet-npz"):
        raise ValueError(
            f"config key 'classes' applies only to imagefolder and imagenet-npz, not {resolved['dataset']}"
        )
    return resolved


def _check_group_size(model: str, group_size: int) -> None:
    """Build ``model`` with group norm on the meta device (no memory, no compute) to test divisibility."""
    import torch

    from .norms import create_norm

    try:
        with torch.device("meta"):
            create_model(model, 2, create_norm("group", dim=NORM_DIMS[model], group_size=group_size))
    except ValueError as err:
        raise ValueError(f"config key 'group_size' does not fit model {model!r}: {err}") from None
