"""The training-config schema: every key, its default, its allowed values, and each dataset's recipe.

This is the one place that says what a training run accepts.
:func:`validate_config` turns a user's partial config (a CLI file, flags, or a
sweep point) into a complete, checked one, filling dataset-dependent defaults
from :data:`RECIPES` (the published recipes of the Online Normalization
authors' reproduction scripts). It raises ``ValueError`` naming the key and its
allowed values; sweeps use it to check sweep specs before launching anything.
``onlinenorm config show`` prints the schema. Torch is imported only to check
a ``group_size`` against a model.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from onlinenorm.constants import DATASETS, ECMS, KERNEL_CHOICES, MODELS, NORMS, SHORTCUTS

from .rules import (
    Rule,
    ascending_integers,
    boolean,
    choice,
    either,
    fraction_or_count,
    integer,
    matching,
    names_or_numbers,
    optional,
    real,
    text,
)

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
# The authors' reproduction scripts: public repository Cerebras/online-normalization.
SCRIPTS = "Cerebras/online-normalization experiments/resnet"


@dataclass(frozen=True)
class Recipe:
    """A dataset's published training recipe: the values its config's unset (``null``) keys take.

    ``milestones`` are epochs at the recipe's ``epochs``; a run with other
    ``epochs`` scales them (``round(m * epochs / recipe.epochs)``).
    """

    source: str
    model: str
    shortcut: str
    ecm: str
    epochs: int
    milestones: tuple[int, ...]
    batch_size: int
    weight_decay: float
    decay_norm_params: bool
    alpha_fwd: float
    alpha_bkw: float


# Each number is the default of the named script's argument parser (SGD, lr 0.1 x 0.1 at each
# milestone, momentum 0.9 there too); the model and the parameter groups come from
# experiments/resnet/model/model.py (ResNet: downsample = conv1x1 + norm wherever a block changes
# shape, for `resnetD` (CIFAR) and resnet50 alike) and experiments/resnet/utils.py
# (get_parameter_groups: CIFAR decays every parameter; ImageNet gives normalization weights and biases
# weight decay 0). The scripts' ECM default is layer scaling (`--ecm ls`; older revisions:
# layer scaling on unless `--rm_layer_scaling`), so their published online figures are layer scaling.
# Not carried over: utils.py's scale_lr_and_momentum, which rescales lr and momentum when the batch size
# differs from 128 (CIFAR) or 256 (ImageNet): an identity at the recipes' batch sizes.
_CIFAR = dict(
    model="resnet20",
    shortcut="projection",
    ecm="ls",
    epochs=250,
    milestones=(100, 150, 200),
    batch_size=128,
    weight_decay=2e-4,
    decay_norm_params=True,
)
_IMAGENET = dict(
    model="resnet50",
    shortcut="projection",
    ecm="ls",
    epochs=90,
    milestones=(30, 60, 80),
    batch_size=256,
    weight_decay=1e-4,
    decay_norm_params=False,
    alpha_fwd=0.999,
    alpha_bkw=0.99,
)
RECIPES = {
    # cifar10_main.py: --epochs 250, -b 128, --lr_milestones 100 150 200, --wd 2e-4, --afwd 1023/1024,
    # --abkw 127/128; ResNet-20 (`-d 20`).
    "cifar10": Recipe(f"{SCRIPTS}/cifar10_main.py", **_CIFAR, alpha_fwd=1023 / 1024, alpha_bkw=127 / 128),
    # cifar100_main.py: as CIFAR-10 with --afwd 511/512, --abkw 15/16.
    "cifar100": Recipe(f"{SCRIPTS}/cifar100_main.py", **_CIFAR, alpha_fwd=511 / 512, alpha_bkw=15 / 16),
    # imagenet_main.py: --epochs 90, -b 256, --lr_milestones 30 60 80 (its default's 90 is never reached),
    # --wd 1e-4, --afwd 0.999, --abkw 0.99; the published ImageNet network is ResNet-50 (`-a resnet50`;
    # the parser's default architecture is resnet18).
    "imagefolder": Recipe(f"{SCRIPTS}/imagenet_main.py", **_IMAGENET),
    "imagenet-npz": Recipe(f"{SCRIPTS}/imagenet_main.py (on downsampled ImageNet)", **_IMAGENET),
}
RECIPE_KEYS = tuple(f.name for f in fields(Recipe) if f.name != "source")  # None -> the dataset's recipe


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
    "model": Option(None, optional(choice(*MODELS)), "architecture; null -> recipe"),
    "shortcut": Option(
        None,
        optional(choice(*SHORTCUTS)),
        "CIFAR ResNet shortcut where width changes: pad (option A) or projection (1x1 conv + norm, "
        "option B; ImageNet ResNets always project, the MLP has none); null -> recipe",
    ),
    "norm": Option("online", choice(*NORMS), "normalizer"),
    "ecm": Option(
        None,
        optional(choice(*ECMS)),
        "online norm error compensation: ac (clamping), ls (layer scaling), none; null -> recipe",
    ),
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
    "decay_norm_params": Option(
        None, optional(boolean()), "weight decay on normalization layers' weight and bias too; null -> recipe"
    ),
    "milestones": Option(
        None, optional(ascending_integers(1)), "epochs after which lr *= lr_decay; null -> recipe (scaled to epochs)"
    ),
    "lr_decay": Option(0.1, real(0.0, 1.0, high_open=False), "learning-rate factor at each milestone"),
    "lr_warmup_epochs": Option(
        0, integer(0), "linear lr warm-up over W epochs: step s (1-based) uses lr * min(1, s / (W * steps per epoch))"
    ),
    "stats_warmup_batches": Option(
        0,
        integer(0),
        "forward passes in training mode before the first step (no optimizer step), "
        "so normalizer statistics start settled",
    ),
    "epochs": Option(None, optional(integer(1)), "training epochs; null -> recipe"),
    "batch_size": Option(None, optional(integer(2)), "training batch size; null -> recipe"),
    "eval_batch_size": Option(500, integer(1), "evaluation batch size (does not change results)"),
    "seed": Option(0, integer(0), "seed of initialization, order and augmentation"),
    # execution
    "device": Option(
        "auto", matching(DEVICE_PATTERN, "auto, cpu, cuda or cuda:N"), "where to train; auto -> CUDA when present"
    ),
    "amp": Option("none", choice("none", "bf16"), "bfloat16 autocast (CUDA only)"),
    "threads": Option(None, optional(integer(1)), "torch CPU threads; null -> torch's default"),
    "kernels": Option(
        None,
        optional(choice(*KERNEL_CHOICES)),
        "online norm training kernels; null -> ONLINENORM_KERNELS, else auto (the fastest that builds)",
    ),
}

# Keys that may differ between a checkpoint and the run resuming it.
RESUMABLE_CHANGES = frozenset(
    {"epochs", "data_dir", "download", "cache_dir", "eval_batch_size", "device", "threads", "kernels"}
)


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
    from .yaml12 import YAMLError, load_yaml

    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expects KEY=VALUE, got {item!r}")
    try:
        return key.strip(), load_yaml(value)
    except YAMLError as err:
        raise ValueError(f"value of {item!r} is not valid YAML ({getattr(err, 'problem', None) or err})") from None


def scaled_milestones(recipe: Recipe, epochs: int) -> list[int]:
    """The recipe's milestones for a run of ``epochs``: as published at the recipe's epochs, else scaled."""
    marks = (round(m * epochs / recipe.epochs) for m in recipe.milestones)
    return sorted({m for m in marks if 1 <= m < epochs})


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The complete training config for ``config`` (a partial mapping).

    Checks every key and value, fills schema defaults, then fills the
    dataset's recipe (:data:`RECIPE_KEYS`, ``milestones`` scaled to
    ``epochs``, ``data_dir``) where they are ``None``. Validating a resolved
    config returns it unchanged. An online-norm config that sets
    ``clamp_value`` must also set ``ecm`` (the recipes' ECM, layer scaling,
    does not clamp): a clamp grid never runs silently without clamping.
    """
    resolved = defaults()
    resolved.update({key: check_value(key, value) for key, value in config.items()})
    recipe = RECIPES[resolved["dataset"]]
    if resolved["norm"] == "online" and resolved["ecm"] is None and "clamp_value" in config and recipe.ecm != "ac":
        raise ValueError(
            f"config key 'clamp_value' is set, but 'ecm' is not: the {resolved['dataset']} recipe's ecm "
            f"is {recipe.ecm!r}, which does not clamp; set ecm: ac to clamp"
        )
    for key in RECIPE_KEYS:
        if resolved[key] is None:
            resolved[key] = getattr(recipe, key)
            if key == "milestones":
                resolved[key] = scaled_milestones(recipe, resolved["epochs"])
    if resolved["data_dir"] is None:
        resolved["data_dir"] = f"data/{resolved['dataset']}"
    if resolved["norm"] == "instance" and resolved["model"] == "mlp":
        raise ValueError("config key 'norm' must not be 'instance' for model 'mlp' (no spatial dims to normalize over)")
    if resolved["norm"] == "group":
        _check_group_size(resolved["model"], resolved["group_size"], resolved["shortcut"])
    if resolved["classes"] is not None and resolved["dataset"] not in ("imagefolder", "imagenet-npz"):
        raise ValueError(
            f"config key 'classes' applies only to imagefolder and imagenet-npz, not {resolved['dataset']}"
        )
    return resolved


def _check_group_size(model: str, group_size: int, shortcut: str) -> None:
    """Build ``model`` with group norm on the meta device (no memory, no compute) to test divisibility."""
    import torch

    from onlinenorm.models import NORM_DIMS, create_model
    from onlinenorm.norms import create_norm

    try:
        with torch.device("meta"):
            norm_layer = create_norm("group", dim=NORM_DIMS[model], group_size=group_size)
            create_model(model, 2, norm_layer, shortcut=shortcut)
    except ValueError as err:
        raise ValueError(f"config key 'group_size' does not fit model {model!r}: {err}") from None
