"""Trial counts by state, read from an experiment directory's files (no Ray runtime).

Ray Tune's newest ``experiment_state-*.json`` lists every trial
(``trial_data``: pairs of JSON strings, the first holding ``status`` and
``relative_logdir``); a trial whose last ``result.json`` row says
``diverged: true`` is counted as DIVERGED rather than TERMINATED.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

# Ray Tune's trial states, with DIVERGED (a finished trial whose loss became non-finite) after TERMINATED.
STATES = ("TERMINATED", "DIVERGED", "ERROR", "RUNNING", "PAUSED", "PENDING")
STATE_GLOB = "experiment_state-*.json"
RESULT_FILE = "result.json"


def count_states(states: Iterable[tuple[str, bool]]) -> dict[str, int]:
    """Counts of (Ray status, diverged) pairs, in :data:`STATES` order, zeros left out."""
    counts = Counter("DIVERGED" if status == "TERMINATED" and diverged else status for status, diverged in states)
    return {state: counts[state] for state in (*STATES, *sorted(set(counts) - set(STATES))) if counts[state]}


def format_counts(counts: dict[str, int]) -> str:
    """``14 trials: 12 TERMINATED, 1 DIVERGED, 1 ERROR``."""
    total = sum(counts.values())
    return f"{total} trial{'s' if total != 1 else ''}: " + ", ".join(f"{n} {state}" for state, n in counts.items())


def _last_row(path: Path) -> dict:
    lines = path.read_text().splitlines() if path.exists() else []
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:  # a line still being written
            continue
    return {}


def read_states(path: str | Path) -> list[tuple[str, bool]]:
    """(status, diverged) of every trial of the experiment at ``path``; ValueError when there is none."""
    path = Path(path)
    files = sorted(path.glob(STATE_GLOB))
    if not files:
        raise ValueError(f"{path}: no {STATE_GLOB} here; pass an experiment directory written by `onlinenorm sweep run`")
    trials = [json.loads(meta) for meta, _runtime in json.loads(files[-1].read_text())["trial_data"]]
    return [
        (trial["status"], bool(_last_row(path / trial["relative_logdir"] / RESULT_FILE).get("diverged")))
        for trial in trials
    ]


def experiment_counts(path: str | Path) -> dict[str, int]:
    """Trial counts by state of the experiment at ``path``."""
    return count_states(read_states(path))
