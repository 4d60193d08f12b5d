"""Trial counts by state, read from an experiment directory's files (no Ray runtime).

The files are read by :mod:`analysis.layout` (from a local copy made by
:mod:`analysis.storage` for a storage URI such as ``s3://bucket/sweeps/quick``; Ray Tune's newest
``experiment_state-*.json`` gives each trial's status); a trial whose last
``result.json`` row says ``diverged: true`` is counted as DIVERGED rather
than TERMINATED.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

# Ray Tune's trial states, with DIVERGED (a finished trial whose loss became non-finite) after TERMINATED.
STATES = ("TERMINATED", "DIVERGED", "ERROR", "RUNNING", "PAUSED", "PENDING")


def count_states(states: Iterable[tuple[str, bool]]) -> dict[str, int]:
    """Counts of (Ray status, diverged) pairs, in :data:`STATES` order, zeros left out."""
    counts = Counter("DIVERGED" if status == "TERMINATED" and diverged else status for status, diverged in states)
    return {state: counts[state] for state in (*STATES, *sorted(set(counts) - set(STATES))) if counts[state]}


def format_counts(counts: dict[str, int]) -> str:
    """``14 trials: 12 TERMINATED, 1 DIVERGED, 1 ERROR``."""
    total = sum(counts.values())
    return f"{total} trial{'s' if total != 1 else ''}: " + ", ".join(f"{n} {state}" for state, n in counts.items())


def read_states(path: str | Path) -> list[tuple[str, bool]]:
    """(status, diverged) of every trial of the experiment at ``path`` (a folder or a storage URI);
    ValueError when there is none, FileNotFoundError when nothing is stored at a URI."""
    from analysis.layout import EXPERIMENT_STATE_GLOB, read_experiment
    from analysis.storage import is_uri, local_copy

    if is_uri(path):
        with local_copy(str(path)) as folder:
            try:
                return read_states(folder)
            except ValueError:
                raise ValueError(
                    f"{path}: no {EXPERIMENT_STATE_GLOB} here; pass an experiment URI written by `onlinenorm sweep run`"
                ) from None
    path = Path(path)
    if not any(path.glob(EXPERIMENT_STATE_GLOB)):
        raise ValueError(
            f"{path}: no {EXPERIMENT_STATE_GLOB} here; pass an experiment directory written by `onlinenorm sweep run`"
        )
    trials = read_experiment(path, path.name).trials
    return [(t.ray_status, bool(t.last_row.get("diverged"))) for t in trials if t.ray_status is not None]


def experiment_counts(path: str | Path) -> dict[str, int]:
    """Trial counts by state of the experiment at ``path``."""
    return count_states(read_states(path))
