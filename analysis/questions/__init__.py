"""The questions a sweep is run to answer, answered with their uncertainty.

``findings(results)`` turns an experiment into a tidy frame, one row per
finding. The package is named ``questions`` (one module per question) so
that ``analysis.findings`` stays the function.
"""

from __future__ import annotations

import pandas as pd

from analysis.questions.baselines import against_baselines
from analysis.questions.clamp_range import clamp_range
from analysis.questions.failures import failed_runs, incomplete_trials, stopped_trials
from analysis.questions.gaussian import gaussian_tails
from analysis.questions.knobs import knob_shares
from analysis.questions.reference import against_reference
from analysis.questions.removal import removal
from analysis.questions.rows import COLUMNS, frame
from analysis.questions.runs import complete_runs
from analysis.questions.speed import learning_speed
from analysis.questions.text import headline, to_text
from analysis.results import Results

__all__ = ["COLUMNS", "findings", "headline", "to_text"]


def findings(results: Results, margin: float = 0.01, confidence: float = 0.95) -> pd.DataFrame:
    """What the experiment shows, one row per finding, with its interval and verdict.

    Only complete trials (finished or diverged) are compared; trials a
    scheduler stopped early are named in a ``stopped`` finding. A question the
    experiment cannot answer (no baseline, one clamp value, ...) still gets
    its row, with verdict ``unsupported`` and the ``reason``.

    Kinds, in the order of the rows:

    - ``stopped``: trials stopped early by the scheduler, and at which epoch.
    - ``incomplete``: trials running, pending or errored (left out too).
    - ``removal``: val_acc_unclamped - val_acc per clamping setting; ``worse``
      means removing the clamp at inference is not safe there.
    - ``failed``: runs that failed to learn (best accuracy below half the
      median of the other runs of their setting), or a row saying none did
      (``unsupported`` when no setting has two complete runs).
    - ``baseline``: each setting's best and final val_acc minus batch norm's
      and layer scaling's, paired by seed.
    - ``reference``: against the published figures in the spec's ``reference``.
    - ``safe_range``, ``clamp_limit``: per decay-factor pair, the clamp values
      equivalent to the best and their largest clamp fraction; the clamp
      fraction beyond which accuracy falls by more than ``margin``.
    - ``gaussian``, ``gaussian_depth``: measured clamp fraction over
      erfc(c / sqrt 2), per clamp value and per depth.
    - ``knob``: share of the variance of best accuracy each swept parameter explains.
    - ``speed``: epochs to 90% and 95% of batch norm's final accuracy.

    Intervals are percentile bootstrap intervals over runs from
    ``scipy.stats.bootstrap`` (499 resamples, seeded); with two runs the
    interval is the range of the two, so two runs that agree on a large
    effect get a verdict, and one run gets ``inconclusive`` (see
    ``analysis.questions.stats``). Comparisons of accuracy have verdicts
    ``equivalent`` (interval inside +-margin), ``better``, ``worse`` or
    ``inconclusive``; where a run that failed to learn takes part, the
    ``*_without_failed`` columns give the same comparison without it.

    Args:
        results: from ``analysis.load``.
        margin: the equivalence margin, in accuracy (default 0.01 = one point).
        confidence: the confidence level of every interval (default 0.95).

    Returns:
        A frame with ``COLUMNS``: kind, question, subject (a setting or a
        normalizer), against (what it is compared with), metric, estimate,
        ci_low, ci_high, n_runs, verdict, sentence (the finding in words, with
        its numbers), reason (why the verdict is inconclusive or
        unsupported), n_failed, estimate/ci_low/ci_high/verdict_without_failed.

    Raises:
        ValueError: ``margin`` or ``confidence`` is not in (0, 1).
    """
    if not 0 < margin < 1:
        raise ValueError(f"margin must be in (0, 1) (an accuracy difference, 0.01 = one point); got {margin!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}")
    runs = complete_runs(results.trials)
    rows = [
        *stopped_trials(results.trials),
        *incomplete_trials(results.trials),
        *removal(runs, confidence, margin),
        *failed_runs(runs),
        *against_baselines(runs, results.trials, confidence, margin),
        *against_reference(runs, results.specs, confidence, margin),
        *clamp_range(runs, confidence, margin),
        *gaussian_tails(runs, results.layers, confidence),
        *knob_shares(runs, confidence),
        *learning_speed(runs, results.epochs, confidence),
    ]
    return frame(rows)
