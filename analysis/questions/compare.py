"""Differences with bootstrap intervals and verdicts, with and without the
runs that failed to learn.

A comparison is a subject's runs against another's (two-sample) or against
zero (one-sample: the values already are differences). Two-sample
comparisons pair runs by seed when at least two seeds are shared (the
difference of each shared seed's values, then its mean); otherwise they
compare the two means unpaired, which needs two runs on each side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.questions import stats
from analysis.questions.rows import interval_points, points, runs

RESULT_COLUMNS = ["estimate", "ci_low", "ci_high", "n_runs", "paired", "verdict", "reason"]


@dataclass
class Side:
    """One side of a comparison: its runs' seeds, values and failed-to-learn marks."""

    seeds: np.ndarray
    values: np.ndarray
    failed: np.ndarray

    def __post_init__(self):
        self.unique_seeds = len(np.unique(self.seeds)) == len(self.seeds) and not np.isnan(self.seeds).any()

    @classmethod
    def of(cls, runs: pd.DataFrame, value: str, offset: float = 0.0) -> Side:
        """The runs of ``runs`` that have ``value``, less ``offset``."""
        return cls.by(runs, value, offset)[None]

    @classmethod
    def by(cls, runs: pd.DataFrame, value: str, offset: float = 0.0, key: str | None = None) -> dict:
        """``{key value: Side}`` for each group of ``runs`` by column ``key`` (None: one group, key None)."""
        values = runs[value].to_numpy(dtype=float) - offset
        seeds, failed = runs["seed"].to_numpy(dtype=float), runs["failed"].to_numpy(dtype=bool)
        groups = {None: np.arange(len(runs))} if key is None else runs.groupby(key, sort=False).indices
        sides = {}
        for name, rows in groups.items():
            rows = rows[~np.isnan(values[rows])]
            sides[name] = cls(seeds[rows], values[rows], failed[rows])
        return sides

    @property
    def mean(self) -> float:
        return float(self.values.mean()) if len(self.values) else np.nan

    def without_failed(self) -> Side:
        keep = ~self.failed
        return Side(self.seeds[keep], self.values[keep], self.failed[keep])


def compare(items: list[tuple[Side, Side | None]], confidence: float, margin: float) -> list[dict]:
    """One record per ``(x, y)`` item: the mean of ``x - y`` (``y`` None: of ``x``).

    Returns:
        Dicts with ``RESULT_COLUMNS`` (reason: why the verdict is
        inconclusive), n_failed (failed runs on either side), and the same
        figures recomputed without the failed runs, ``*_without_failed``
        (NaN where no failed run took part).
    """
    result = _compare(items, confidence, margin)
    result["n_failed"] = [int(x.failed.sum() + (0 if y is None else y.failed.sum())) for x, y in items]
    involved = np.flatnonzero(result["n_failed"].to_numpy() > 0)
    without = _compare(
        [
            (items[i][0].without_failed(), None if items[i][1] is None else items[i][1].without_failed())
            for i in involved
        ],
        confidence,
        margin,
    )
    for column in ("estimate", "ci_low", "ci_high", "verdict"):
        result[f"{column}_without_failed"] = pd.Series(
            without[column].to_numpy(), index=involved, dtype=result[column].dtype
        )
    return result.to_dict("records")


def describe(row: dict, confidence: float) -> str:
    """``-1.2 points, 95% CI [-1.6, -0.8], paired over 2 seeds: worse``, and
    what it becomes without failed runs, for a compare() row."""
    basis = f"paired over {row['n_runs']} seeds" if row["paired"] else runs(row["n_runs"])
    text = (
        f"{points(row['estimate'])} points, {interval_points(row['ci_low'], row['ci_high'], confidence)}, "
        f"{basis}: {row['verdict']}"
    )
    if row["n_failed"]:
        text += (
            f"; without the {runs(row['n_failed'], 'run')} that failed to learn: "
            f"{points(row['estimate_without_failed'])} points, "
            f"{interval_points(row['ci_low_without_failed'], row['ci_high_without_failed'], confidence)}: "
            f"{row['verdict_without_failed']}"
        )
    return text


def _compare(items: list[tuple[Side, Side | None]], confidence: float, margin: float) -> pd.DataFrame:
    samples, n_runs, paired, reasons = [], [], [], []
    for x, y in items:
        if y is None:
            samples.append((x.values,))
            n_runs.append(len(x.values)), paired.append(False), reasons.append(_too_few(len(x.values)))
            continue
        shared, x_at, y_at = np.intersect1d(x.seeds, y.seeds, assume_unique=True, return_indices=True)
        if x.unique_seeds and y.unique_seeds and len(shared) >= 2:
            samples.append((x.values[x_at] - y.values[y_at],))
            n_runs.append(len(shared)), paired.append(True), reasons.append(None)
        else:
            samples.append((x.values, y.values))
            n_runs.append(len(x.values)), paired.append(False)
            reasons.append(_too_few(min(len(x.values), len(y.values))))
    figures = np.full((len(items), 3), np.nan)
    for arity in (1, 2):
        rows = [i for i, sample in enumerate(samples) if len(sample) == arity]
        if rows:
            figures[rows] = stats.intervals([samples[i] for i in rows], confidence)
    result = pd.DataFrame(figures, columns=["estimate", "ci_low", "ci_high"])
    result["n_runs"] = pd.array(n_runs, dtype="Int64")
    result["paired"] = paired
    result["verdict"] = stats.verdicts(result["ci_low"], result["ci_high"], margin)
    result["reason"] = pd.Series(reasons, dtype=object)
    straddles = result["verdict"].eq(stats.INCONCLUSIVE) & result["reason"].isna() & result["ci_low"].notna()
    result.loc[straddles, "reason"] = f"the interval straddles the \u00b1{100 * margin:.1f}-point margin"
    return result[RESULT_COLUMNS]


def _too_few(n: int) -> str | None:
    if n == 0:
        return "no complete run"
    return "a single run gives no interval" if n == 1 else None
