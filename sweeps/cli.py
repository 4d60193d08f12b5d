"""Run a grid of training runs, described by a YAML sweep spec, as one Ray Tune experiment on an embedded Ray or a
cluster; continue it after an interruption; count its trials by state."""

# ``onlinenorm sweep run|resume|status``. Only argparse is imported here; the spec checker, Ray and torch load inside
# the handlers. A bad spec is reported one problem per line (exit code 2) before anything starts or is written. ``run``
# and ``resume`` exit 0 when every trial finished (a diverged trial counts as finished: divergence is a result) and 1
# when some trial errored out of its retries or the sweep was stopped early.

from __future__ import annotations

import argparse

from onlinenorm.cli import add_command, command_group


@command_group("sweep", help="grids of training runs on Ray Tune (run, resume, status)", extra="sweep")
def register(actions) -> None:
    run = add_command(actions, "run", run_command, extra="sweep")
    run.add_argument("spec", metavar="SPEC_FILE", help="sweep spec (YAML): name, training config, grid, scheduler")
    run.add_argument(
        "--storage",
        metavar="DIR_OR_URI",
        help="where experiments go: a local folder or a URI Ray Tune accepts (default: results)",
    )
    run.add_argument(
        "--name", metavar="NAME", help="experiment name, the folder under STORAGE (default: the spec's name)"
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key by its dotted path, VALUE parsed as YAML, e.g. train.epochs=2 "
        "or grid.seed=[0,1] (repeatable)",
    )
    run.add_argument(
        "--tracking",
        metavar="TRACKERS",
        help="experiment trackers to log to, overriding the spec's tracking section: mlflow, wandb, "
        "both comma-separated, or none (TensorBoard files are always written)",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="check the spec and list the trials (and what is sampled); start nothing"
    )
    _add_ray_options(run)

    resume = add_command(actions, "resume", resume_command, extra="sweep")
    _add_experiment_argument(resume)
    resume.add_argument(
        "--retry-errored",
        action="store_true",
        help="also resume trials that ran out of retries (from their last checkpoints)",
    )
    _add_ray_options(resume)

    status = add_command(actions, "status", status_command)
    _add_experiment_argument(status)


def _add_experiment_argument(command: argparse.ArgumentParser) -> None:
    """The positional of the commands that read an experiment: its directory (or URI)."""
    command.add_argument("experiment", metavar="EXPERIMENT_DIR", help="the sweep's experiment directory (or URI)")


def _add_ray_options(command: argparse.ArgumentParser) -> None:
    """The options of the commands that run trials: which Ray to run them on, and how much of it to print."""
    command.add_argument(
        "--address",
        metavar="ADDRESS",
        help="Ray cluster to join: auto, HOST:PORT or ray://HOST:10001 (default: an embedded local Ray)",
    )
    command.add_argument(
        "--verbose",
        action="store_true",
        help="print Ray Tune's own output (each trial's whole config and metrics in boxes) instead of "
        "a status table and one line per trial event",
    )


def _checked_spec(args: argparse.Namespace):
    from onlinenorm.cli import UsageError
    from sweeps.spec import SpecError, load_spec

    try:
        return load_spec(args.spec, args.set, args.name, args.tracking)
    except SpecError as err:
        raise UsageError(str(err)) from None


def _output_level(args: argparse.Namespace) -> int:
    from sweeps.progress import QUIET, VERBOSE

    return VERBOSE if args.verbose else QUIET


def run_command(args: argparse.Namespace) -> int:
    """Run every trial of a sweep spec.

    Check SPEC_FILE (every problem reported, one per line, before anything starts), then run its trials as a Ray
    Tune experiment in STORAGE/NAME. `--dry-run` lists the trials without starting anything.
    """
    from onlinenorm.cli import UsageError
    from sweeps.run import ExperimentError, run_sweep

    spec = _checked_spec(args)
    if args.dry_run:
        from sweeps.search import describe

        print(describe(spec))
        return 0
    try:
        outcome = run_sweep(spec, address=args.address, storage=args.storage, verbose=_output_level(args))
    except ExperimentError as err:
        raise UsageError(str(err)) from None
    print(outcome.summary())
    return 1 if outcome.failed else 0


def resume_command(args: argparse.Namespace) -> int:
    """Continue an interrupted sweep from its checkpoints.

    Continue the interrupted sweep in EXPERIMENT_DIR, rebuilt from its saved spec.yaml: finished trials are kept,
    unfinished ones go on from their latest checkpoints.
    """
    from onlinenorm.cli import UsageError
    from sweeps.run import ExperimentError, resume_sweep
    from sweeps.spec import SpecError

    try:
        outcome = resume_sweep(
            args.experiment, address=args.address, retry_errored=args.retry_errored, verbose=_output_level(args)
        )
    except (ExperimentError, SpecError) as err:
        raise UsageError(str(err)) from None
    print(outcome.summary())
    return 1 if outcome.failed else 0


def status_command(args: argparse.Namespace) -> int:
    """Trial counts by state, read from the files (starts no Ray).

    Count the trials of the experiment in EXPERIMENT_DIR by state (TERMINATED, DIVERGED, ERROR, RUNNING, PENDING,
    ...), read from its files; starts no Ray and needs no extra (pyarrow, for a storage URI such as s3://...).
    """
    from onlinenorm.cli import UsageError
    from sweeps.status import experiment_counts, format_counts

    try:
        counts = experiment_counts(args.experiment)
    except (OSError, ValueError) as err:
        raise UsageError(str(err)) from None
    print(f"{args.experiment}: {format_counts(counts)}")
    return 0
