"""Bootstrap intervals and verdicts, shared by every question.

Every interval is a percentile bootstrap from ``scipy.stats.bootstrap``
(``N_RESAMPLES`` resamples, seeded, so a report is reproducible), computed
for many comparisons at once: samples of the same size are stacked into one
``(comparisons, runs)`` array and resampled along the last axis.

Why percentile and not BCa: with n = 2 runs the resampled mean takes the
values ``d1``, ``(d1 + d2) / 2`` and ``d2`` with probabilities 1/4, 1/2, 1/4,
so the 95% percentile interval is exactly ``[min(d), max(d)]``: two runs that
agree on a large effect (both seeds 70 points down) give an interval far from
zero and a verdict. BCa's bias correction on that same distribution,
``z0 = Phi^-1(1/4)``, moves the interval to ``[min(d), midpoint]``, which
claims more than two runs can show. One run has no interval at all: its
verdict is ``inconclusive``.

Verdicts of a difference with interval ``[low, high]`` and margin ``m``:

    equivalent    -m <= low and high <= m
    better        low > m
    worse         high < -m
    inconclusive  one run, or an interval that straddles -m or +m
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

N_RESAMPLES = 499  # enough for 95% percentile endpoints; keeps 1,000 trials well under a second
SEED = 0
EQUIVALENT, BETTER, WORSE, INCONCLUSIVE = "equivalent", "better", "worse", "inconclusive"
UNSUPPORTED = "unsupported"  # the experiment lacks what the question needs (the reason says what)


def mean(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean of one sample, or difference of means of two (``x - y``)."""
    if len(samples) == 1:
        return np.mean(samples[0], axis=axis)
    x, y = samples
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def median(sample: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(sample, axis=axis)


def intervals(
    samples: Sequence[tuple[np.ndarray, ...]],
    confidence: float,
    statistic: Callable[..., np.ndarray] = mean,
    paired: bool = False,
) -> np.ndarray:
    """Statistic and bootstrap interval for each tuple of samples.

    Args:
        samples: one tuple per comparison: ``(values,)`` for a one-sample
            statistic, ``(x, y)`` for a two-sample one (``paired=True``: x and
            y are the same runs' columns, resampled together).
        confidence: the interval's confidence level, e.g. 0.95.
        statistic: vectorized, ``statistic(*arrays, axis=-1)``.

    Returns:
        ``(len(samples), 3)`` array: estimate, ci_low, ci_high. The interval
        is NaN where a sample holds fewer than two values.
    """
    # Imported here, not at the top, so `import analysis` stays light; `onlinenorm report` imports it early.
    from scipy import stats

    out = np.full((len(samples), 3), np.nan)
    by_size = defaultdict(list)
    for index, sample in enumerate(samples):
        by_size[tuple(len(values) for values in sample)].append(index)
    for sizes, rows in by_size.items():
        stacked = [np.stack([np.asarray(samples[i][j], dtype=float) for i in rows]) for j in range(len(sizes))]
        out[rows, 0] = statistic(*stacked, axis=-1)
        if min(sizes) < 2:
            continue
        interval = stats.bootstrap(
            stacked,
            statistic,
            n_resamples=N_RESAMPLES,
            vectorized=True,
            paired=paired,
            axis=-1,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(SEED),
        ).confidence_interval
        out[rows, 1], out[rows, 2] = interval.low, interval.high
    return out


def verdicts(low: np.ndarray, high: np.ndarray, margin: float) -> np.ndarray:
    """equivalent / better / worse / inconclusive for each interval (NaN: inconclusive)."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    return np.select(
        [(low >= -margin) & (high <= margin), low > margin, high < -margin],
        [EQUIVALENT, BETTER, WORSE],
        default=INCONCLUSIVE,
    ).astype(object)
