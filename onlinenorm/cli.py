"""The ``onlinenorm`` command: one entry point, one subcommand per job.

Each subcommand lives next to the code it drives and exposes
``register(subparsers)``; those modules import only ``argparse`` at the top
and load torch, Ray or pandas inside their handlers, so ``onlinenorm --help``
and the light subcommands start fast. ``sweeps`` and ``analysis`` are reached
only through these lazy handlers: this dispatcher is the one place the three
packages meet.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute subcommands, in the order ``--help`` lists them.
SUBCOMMAND_MODULES = (
    "onlinenorm.bench_cli",
    "onlinenorm.kernels_cli",
    "onlinenorm.data_cli",
    "onlinenorm.train_cli",
    "sweeps.cli",
    "analysis.cli",
)


class UsageError(Exception):
    """Bad user input: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onlinenorm",
        description="Online Normalization: the layer, training runs, sweeps and reports.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        print(f"onlinenorm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"onlinenorm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m onlinenorm.cli` runs this file as __main__, a second copy of the module: dispatch through
    # the importable one, whose UsageError the subcommands raise (else bad input exits 1 with a traceback).
    from onlinenorm.cli import main as package_main

    sys.exit(package_main())
