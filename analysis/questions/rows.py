"""The findings frame's columns, and the number formats its sentences use.

Accuracies print as percentages (``96.2%``), differences of accuracy as
percentage points (``-1.2 points``): the margin is stated in the same unit.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.questions.stats import UNSUPPORTED

COLUMNS = [
    "kind",
    "question",
    "subject",
    "against",
    "metric",
    "estimate",
    "ci_low",
    "ci_high",
    "n_runs",
    "verdict",
    "sentence",
    "reason",
    "n_failed",
    "estimate_without_failed",
    "ci_low_without_failed",
    "ci_high_without_failed",
    "verdict_without_failed",
]


def frame(rows: list[dict]) -> pd.DataFrame:
    """Rows (dicts with some of ``COLUMNS``) as a findings frame, every column present."""
    findings = pd.DataFrame.from_records(rows, columns=COLUMNS)
    findings["n_runs"] = findings["n_runs"].astype("Int64")
    findings["n_failed"] = findings["n_failed"].astype("Int64")
    return findings


def unsupported(reason: str, cannot: str, **fields) -> dict:
    """A finding row the experiment cannot support: ``fields`` (kind,
    question, subject, ...), verdict ``unsupported``, the reason, and the
    sentence "{cannot}: {reason}."."""
    return fields | {"verdict": UNSUPPORTED, "reason": reason, "sentence": f"{cannot}: {reason}."}


def no_clamping_run(cannot: str, reason: str = "no complete clamping run", **fields) -> list[dict]:
    """The one row of a clamping question the experiment has no usable clamping run for: :func:`unsupported`
    with ``fields`` (kind, question) and subject ``clamping``."""
    return [unsupported(reason, cannot, **fields, subject="clamping")]


def percent(value: float) -> str:
    return "n/a" if _missing(value) else f"{100 * value:.1f}%"


def points(value: float) -> str:
    """A difference of accuracies in percentage points, signed: ``-1.2``."""
    return "n/a" if _missing(value) else f"{100 * value:+.1f}".replace("-", "\u2212")


def interval_points(low: float, high: float, confidence: float) -> str:
    if _missing(low):
        return "no interval"
    return f"{confidence:.0%} CI [{points(low)}, {points(high)}]"


def number(value: float) -> str:
    """A positive quantity over many orders of magnitude (fractions, ratios): 3 significant digits."""
    return "n/a" if _missing(value) else f"{value:.3g}"


def runs(n: int, what: str = "run") -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
