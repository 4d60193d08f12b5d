"""``onlinenorm report``: experiment directories in, an HTML report out.

Only argparse and the command's helpers are imported here; pandas and matplotlib load inside the handler.
"""

from __future__ import annotations

import argparse
import sys

from onlinenorm.cli import UsageError, add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "report", report, extra="analysis")
    parser.add_argument(
        "experiments",
        nargs="+",
        metavar="EXPERIMENT_DIR",
        help="an experiment directory or storage URI (s3://...), or a Ray storage path holding several",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="output directory (default: <first EXPERIMENT_DIR>_report beside it; for a URI, in the current directory)",
    )
    parser.add_argument(
        "--margin",
        default="0.01",
        metavar="M",
        help="equivalence margin in accuracy: a difference whose confidence interval lies "
        "within +-M is 'equivalent' (default 0.01, one point)",
    )


# What the report needs beyond the base install (the analysis extra); checked before anything is read or written.
NEEDED = ("pandas", "scipy", "matplotlib", "pyarrow")


def report(args: argparse.Namespace) -> int:
    """Print the findings and write an HTML report, findings.json, charts and Parquet frames.

    Read Ray Tune experiment directories (never writing into them), print what they show (findings with bootstrap
    confidence intervals and verdicts) and write a self-contained HTML report that opens with them, then charts,
    tables and trial states, plus findings.json and Parquet frames.
    """
    import importlib.util
    from pathlib import Path

    for module in NEEDED:
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
    try:
        margin = float(args.margin)
    except ValueError:
        margin = float("nan")
    if not 0 < margin < 1:
        raise UsageError(
            f"--margin {args.margin}: give an accuracy difference between 0 and 1, e.g. --margin 0.01 for one point"
        )
    from analysis.storage import is_uri, uri_name

    experiments = [p if is_uri(p) else Path(p).expanduser().resolve() for p in args.experiments]
    missing = [str(p) for p in experiments if not is_uri(p) and not p.is_dir()]
    if missing:
        raise UsageError(
            f"{', '.join(missing)}: no such directory; pass the experiment directory "
            "(the one holding experiment_state-*.json and the trial directories)"
        )
    first = experiments[0]
    out = (
        Path(args.out).expanduser().resolve()
        if args.out
        else (Path(uri_name(first) + "_report").resolve() if is_uri(first) else first.with_name(first.name + "_report"))
    )
    inside = [str(p) for p in experiments if not is_uri(p) and (out == p or p in out.parents)]
    if inside:
        raise UsageError(
            f"--out {out} is inside the experiment directory {inside[0]}; "
            "reports are never written into an experiment, choose another --out"
        )

    from analysis.prefetch import Prefetch

    # The files are read in a forked process while this one imports what the rest needs (about 2 CPU-s).
    prefetch = None if any(is_uri(p) for p in experiments) else Prefetch(experiments)
    import matplotlib

    matplotlib.use("Agg")
    import scipy.stats  # noqa: F401 - the findings' bootstrap; imported here to overlap the reading

    from analysis.questions import to_text
    from analysis.report import write_report_and_findings
    from analysis.results import assemble, load

    try:
        read = prefetch.result() if prefetch else None
        results = assemble(*read) if read else load(experiments)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise UsageError(f"{err}; pass the experiment's URI as `onlinenorm sweep run` printed it") from err
    if results.trials.empty:
        raise UsageError(
            f"no trials found in {', '.join(map(str, experiments))}; "
            "pass a directory written by `onlinenorm sweep run` (a Ray Tune experiment)"
        )
    path, found = write_report_and_findings(results, out, margin=margin)
    print(to_text(found, margin=margin, confidence=0.95))
    print(f"\nReport: {path}")
    if results.warnings:
        print(f"{len(results.warnings)} file(s) could not be read; see the report's last section", file=sys.stderr)
    return 0
