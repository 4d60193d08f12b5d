"""``onlinenorm sweep``: run, resume and inspect sweeps (``run``, ``resume``, ``status``).

Only argparse is imported here; the spec checker, Ray and torch load inside
the handlers. A bad spec is reported one problem per line (exit code 2)
before anything starts or is written. ``run`` and ``resume`` exit 0 when every
trial finished (a diverged trial counts as finished: divergence is a result)
and 1 when some trial errored out of its retries or the sweep was stopped early.
"""

from __future__ import annotations

import argparse

ADDRESS_HELP = "Ray cluster to join: auto, HOST:PORT or ray://HOST:10001 (default: an embedded local Ray)"
VERBOSE_HELP = ("print Ray Tune's own output (each trial's whole config and metrics in boxes) instead of "
                "a status table and one line per trial event")


def register(subparsers) -> None:
    sweep = subparsers.add_parser("sweep", help="grids of training runs on Ray Tune (run, resume, status)")
    actions = sweep.add_subparsers(dest="sweep_action", metavar="ACTION", required=True)

    run = actions.add_parser("run", help="run every trial of a sweep spec",
                             description="Check SPEC, then run its trials as a Ray Tune experiment in STORAGE/NAME.")
    run.add_argument("spec", metavar="SPEC", help="sweep spec (YAML); see sweeps/specs/")
    run.add_argument("--address", help=ADDRESS_HELP)
    run.add_argument("--storage", metavar="PATH_OR_URI",
                     help="where experiments go: a local folder or a URI Ray Tune accepts (default: results)")
    run.add_argument("--name", help="experiment name, the folder under STORAGE (default: the spec's name)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a spec key by its dotted path, VALUE parsed as YAML, e.g. train.epochs=2 "
                          "or grid.seed=[0,1] (repeatable)")
    run.add_argument("--dry-run", action="store_true", help="check the spec and list the trials; start nothing")
    run.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    run.set_defaults(func=run_command)

    resume = actions.add_parser("resume", help="continue an interrupted sweep from its checkpoints")
    resume.add_argument("experiment", metavar="EXPERIMENT_DIR", help="the sweep's experiment directory (or URI)")
    resume.add_argument("--address", help=ADDRESS_HELP)
    resume.add_argument("--retry-errored", action="store_true",
                        help="also resume trials that ran out of retries (from their last checkpoints)")
    resume.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    resume.set_defaults(func=resume_command)

    status = actions.add_parser("status", help="trial counts by state, read from the files (starts no Ray)")
    status.add_argument("experiment", metavar="EXPERIMENT_DIR", help="the sweep's experiment directory")
    status.set_defaults(func=status_command)


def _checked_spec(args: argparse.Namespace):
    from onlinenorm.cli import UsageError
    from sweeps.spec import SpecError, load_spec

    try:
        return load_spec(args.spec, args.set, args.name)
    except SpecError as err:
        raise UsageError(str(err)) from None


def _describe(spec) -> str:
    swept = ", ".join(spec.swept_keys) or "nothing"
    lines = [f"sweep {spec.name}: {len(spec.trials)} trials over {swept}"]
    lines += [f"  {index:3d}  " + " ".join(f"{key}={trial[key]}" for key in spec.swept_keys)
              for index, trial in enumerate(spec.trials)]
    return "\n".join(lines)


def _output_level(args: argparse.Namespace) -> int:
    from sweeps.progress import QUIET, VERBOSE

    return VERBOSE if args.verbose else QUIET


def run_command(args: argparse.Namespace) -> int:
    from onlinenorm.cli import UsageError
    from sweeps.run import ExperimentError, run_sweep

    spec = _checked_spec(args)
    if args.dry_run:
        print(_describe(spec))
        return 0
    try:
        outcome = run_sweep(spec, address=args.address, storage=args.storage, verbose=_output_level(args))
    except ExperimentError as err:
        raise UsageError(str(err)) from None
    print(outcome.summary())
    return 1 if outcome.failed else 0


def resume_command(args: argparse.Namespace) -> int:
    from onlinenorm.cli import UsageError
    from sweeps.run import ExperimentError, resume_sweep
    from sweeps.spec import SpecError

    try:
        outcome = resume_sweep(args.experiment, address=args.address, retry_errored=args.retry_errored,
                               verbose=_output_level(args))
    except (ExperimentError, SpecError) as err:
        raise UsageError(str(err)) from None
    print(outcome.summary())
    return 1 if outcome.failed else 0


def status_command(args: argparse.Namespace) -> int:
    from onlinenorm.cli import UsageError
    from sweeps.status import experiment_counts, format_counts

    try:
        counts = experiment_counts(args.experiment)
    except (OSError, ValueError) as err:
        raise UsageError(str(err)) from None
    print(f"{args.experiment}: {format_counts(counts)}")
    return 0
