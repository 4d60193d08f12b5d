"""Inspect the training config that `onlinenorm train` and sweep specs take."""

from __future__ import annotations

import argparse

from onlinenorm.cli import add_command, command_group
from onlinenorm.constants import DATASETS


@command_group("config", help="the training config: every key, its default and allowed values")
def register(actions) -> None:
    show = add_command(actions, "show", run_show)
    show.add_argument(
        "--dataset",
        choices=DATASETS,
        default=DATASETS[0],
        metavar="NAME",
        help=f"the recipe to resolve: {', '.join(DATASETS)} (default: {DATASETS[0]})",
    )


def _text(value) -> str:
    import json

    return json.dumps(value) if value is None or isinstance(value, (bool, list)) else str(value)


def config_table(dataset: str) -> list[tuple[str, str, str, str, str]]:
    """One row per config key: (key, default, value resolved for ``dataset``, allowed values, meaning)."""
    from onlinenorm.training.config import SCHEMA, validate_config

    resolved = validate_config({"dataset": dataset})
    return [
        (key, _text(option.default), _text(resolved[key]), option.rule.allowed, option.doc)
        for key, option in SCHEMA.items()
    ]


def run_show(args: argparse.Namespace) -> int:
    """List every config key with its default, the dataset recipe's value and the allowed values.

    List every training-config key: its schema default (null: taken from the dataset's recipe), the value a run on
    DATASET resolves it to, the allowed values and what it means.
    """
    from onlinenorm.training.config import RECIPES

    rows = [("key", "default", args.dataset, "allowed", "meaning"), *config_table(args.dataset)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print(f"Training-config keys; the {args.dataset} column is its recipe: {RECIPES[args.dataset].source}")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0
