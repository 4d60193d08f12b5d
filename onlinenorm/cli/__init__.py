"""The ``onlinenorm`` command: one entry point, one subcommand per job.

Each subcommand is a module of this package and exposes
``register(subparsers)``; a command is described by its handler's docstring
(see :func:`add_command`), a command group by its module's (see
:func:`command_group`). Those modules import only ``argparse`` at the top
and load torch, Ray or pandas inside their handlers, so ``onlinenorm --help``
and the light subcommands start fast. ``sweeps`` and ``analysis`` are reached
only through these lazy handlers: this dispatcher is the one place the three
packages meet.

Ray and the analysis stack are optional extras (``onlinenorm[sweep]``,
``onlinenorm[analysis]``): a subcommand that needs one that is not installed
stops with one line naming the extra to install (exit code 2).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys

# Modules that contribute subcommands, in the order ``--help`` lists them.
SUBCOMMAND_MODULES = (
    "onlinenorm.cli.bench",
    "onlinenorm.cli.kernels",
    "onlinenorm.cli.data",
    "onlinenorm.cli.config",
    "onlinenorm.cli.train",
    "sweeps.cli",
    "analysis.cli",
)


# Top-level modules of the optional dependencies -> the extra that installs them, named where the command
# declares no extra of its own (pyarrow is in both: `onlinenorm report` declares the analysis extra).
EXTRA_OF_MODULE = {
    "ray": "sweep",
    "pyarrow": "sweep",
    "pandas": "analysis",
    "scipy": "analysis",
    "matplotlib": "analysis",
}


class UsageError(Exception):
    """Bad user input: printed as one line, exit code 2."""


def add_command(subparsers, name: str, func, *, extra: str | None = None) -> argparse.ArgumentParser:
    """Add the (sub)command ``name``, run as ``func(args)`` and described by its docstring: the first paragraph
    is its one-line help in its parent's list of commands (in argparse's style: first letter lower-cased, no
    final period), the rest the paragraph of its own ``--help``, which ends by naming the optional ``extra`` it
    needs (also named by the error a missing module of it gives). Returns its parser, to add its arguments to."""
    summary, _, description = (func.__doc__ or "").partition("\n\n")  # no docstrings under python -OO
    summary = " ".join(summary.split())
    parser = subparsers.add_parser(
        name,
        help=summary[:1].lower() + summary[1:].removesuffix(".") or None,
        description=_with_extra(description, extra) or None,
    )
    parser.set_defaults(func=func)
    if extra:
        parser.set_defaults(extra=extra)
    return parser


def command_group(name: str, *, help: str, metavar: str = "ACTION", extra: str | None = None):
    """Turn ``register(actions)``, which adds the subcommands of the command ``name`` (``onlinenorm NAME ACTION``)
    with :func:`add_command` to ``actions``, into the module's ``register(subparsers)``: the command, with its
    one-line ``help`` and, as its ``--help`` paragraph, the module's docstring (naming the optional ``extra`` it
    needs). The chosen subcommand is ``args.<name>_<metavar lowercased>``."""

    def decorate(add_actions):
        def register(subparsers) -> None:
            description = _with_extra(sys.modules[add_actions.__module__].__doc__ or "", extra)
            parser = subparsers.add_parser(name, help=help, description=description or None)
            if extra:  # for every subcommand that declares none of its own
                parser.set_defaults(extra=extra)
            add_actions(parser.add_subparsers(dest=f"{name}_{metavar.lower()}", metavar=metavar, required=True))

        return register

    return decorate


def _with_extra(description: str, extra: str | None) -> str:
    """``description``, then how to install ``extra`` where the command needs it."""
    note = f"Needs the {extra} extra: pip install 'onlinenorm[{extra}]'." if extra else ""
    return " ".join(part for part in (description.strip(), note) if part)


class _VersionAction(argparse.Action):
    """``--version``, with the version looked up only when asked for: the
    package metadata scan costs 50-100 ms, at the start of every command."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("onlinenorm")
        except PackageNotFoundError:  # run from a source tree that was never installed
            installed = "unknown"
        print(f"{parser.prog} {installed}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onlinenorm",
        description="Online Normalization: the layer, training runs, sweeps and reports.",
        epilog="`onlinenorm COMMAND --help` describes a command and its options.",
    )
    parser.add_argument("--version", action=_VersionAction, help="show program's version number and exit")
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
    except ModuleNotFoundError as err:
        module = (err.name or "").partition(".")[0]
        if module not in EXTRA_OF_MODULE:
            raise
        extra = getattr(args, "extra", None) or EXTRA_OF_MODULE[module]
        print(
            f"onlinenorm {args.command}: error: this command needs {err.name}, which is not installed; "
            f"install it with: pip install 'onlinenorm[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"onlinenorm {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``onlinenorm`` executable: ``main`` on the process's arguments, then exit with its code.

    Before a torch-free command (``report``, ``sweep status``, the help) exits,
    ``gc.freeze()`` moves every object to the permanent generation, which the
    interpreter's last collection skips: after a report, that walk over what
    pandas, matplotlib and scipy hold took 0.3 s. Objects are still freed as
    their modules are cleared; only garbage in reference cycles is left to the
    operating system. Not where torch is loaded: it loads Triton, whose
    bindings (nanobind) report every object still alive at exit as a leak.
    """
    code = main()
    if "torch" not in sys.modules:
        gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    # `python -m onlinenorm.cli` runs this file as __main__, a second copy of the module: dispatch through
    # the importable one, whose UsageError the subcommands raise (else bad input exits 1 with a traceback).
    from onlinenorm.cli import run as package_run

    package_run()
