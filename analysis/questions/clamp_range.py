"""The safe clamp range per decay-factor pair: which clamp values are
equivalent to the best one (and the largest clamp fraction among them), and
the clamp fraction beyond which accuracy falls by more than the margin.

Within a pair, each clamp value's best accuracy is compared with the best
clamp value's (highest median), paired by seed; the clamp fraction of a
clamp value is the mean over its runs of the mean fraction over training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.questions.compare import Side, compare, describe
from analysis.questions.rows import number, percent
from analysis.questions.runs import best_subject
from analysis.questions.stats import EQUIVALENT, INCONCLUSIVE, UNSUPPORTED, WORSE

QUESTION_RANGE = "Which clamp values are as good as the best?"
QUESTION_LIMIT = "Beyond which clamp fraction does accuracy fall?"
MEASURED, NONE = "measured", "none"
DECAY = ["alpha_fwd", "alpha_bkw"]


def clamp_range(runs: pd.DataFrame, confidence: float, margin: float) -> list[dict]:
    """Finding rows (kinds ``safe_range`` and ``clamp_limit``), two per decay-factor pair."""
    clamped = runs[runs["clamping"]].dropna(subset=["clamp_value", "best_val_acc"])
    if clamped.empty:
        return [{"kind": "safe_range", "question": QUESTION_RANGE, "subject": "clamping", "verdict": UNSUPPORTED,
                 "reason": "no complete clamping run", "sentence": "No safe clamp range: no complete clamping run."}]
    rows = []
    keys = ["context"] + [k for k in DECAY if k in clamped]
    for pair, in_pair in clamped.groupby(keys, sort=True, dropna=False):
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, pair) if k != "context" or v)
        rows.extend(_pair(label, in_pair, confidence, margin))
    return rows


def _pair(label: str, runs: pd.DataFrame, confidence: float, margin: float) -> list[dict]:
    per_value = runs.groupby("subject").agg(c=("clamp_value", "first"), fraction=("clamp_fraction_mean", "mean"),
                                            accuracy=("best_val_acc", "mean"), n=("best_val_acc", "size"))
    base = {"question": QUESTION_RANGE, "subject": label, "metric": "clamp_fraction_mean",
            "n_runs": len(runs), "against": None}
    if len(per_value) < 2:
        reason = f"one clamp value (c={per_value['c'].iloc[0]:g}) was tried at {label}"
        return [base | {"kind": "safe_range", "verdict": UNSUPPORTED, "reason": reason,
                        "sentence": f"No safe clamp range at {label}: {reason}."}]
    best = best_subject(runs)
    others = per_value.drop(index=best).sort_values("c")
    sides = Side.by(runs, "best_val_acc", key="subject")
    comparisons = compare([(sides[s], sides[best]) for s in others.index], confidence, margin).set_index(others.index)
    best_text = f"c={per_value.loc[best, 'c']:g}, {percent(per_value.loc[best, 'accuracy'])}"
    equivalent = per_value.loc[[best] + list(comparisons.index[comparisons["verdict"].eq(EQUIVALENT)])]
    worse = comparisons[comparisons["verdict"].eq(WORSE)]
    decided = comparisons["verdict"].isin([EQUIVALENT, WORSE]).any()
    values = ", ".join(f"{c:g}" for c in sorted(equivalent["c"]))
    values = (f"clamp values c = {values} are equivalent to the best" if len(equivalent) > 1
              else "no other clamp value is equivalent to the best one")
    largest = equivalent["fraction"].max()
    range_row = base | {"kind": "safe_range", "against": best, "estimate": largest}
    if decided:
        range_row |= {"verdict": MEASURED, "sentence": (
            f"At {label}: {values} ({best_text}) within \u00b1{100 * margin:.1f} points; "
            f"{'the largest clamp fraction among them' if len(equivalent) > 1 else 'its clamp fraction'} "
            f"is {number(largest)}.")}
    else:
        reason = "every comparison with the best clamp value is inconclusive (" + "; ".join(
            sorted(set(comparisons["reason"].dropna()))) + ")"
        range_row |= {"verdict": INCONCLUSIVE, "reason": reason,
                      "sentence": f"At {label}: no clamp value could be shown equivalent to the best ({best_text}): "
                                  f"{reason}."}
    limit_row = base | {"kind": "clamp_limit", "question": QUESTION_LIMIT, "against": best}
    if not worse.empty:
        first = others.loc[worse.index].sort_values(["fraction", "c"], ascending=[True, False]).index[0]
        limit_row |= {"estimate": others.loc[first, "fraction"], "verdict": MEASURED, "sentence": (
            f"At {label}: accuracy falls by more than {100 * margin:.1f} points beyond a clamp fraction of "
            f"{number(others.loc[first, 'fraction'])} (c={others.loc[first, 'c']:g}: "
            f"{describe(comparisons.loc[first], confidence)} against {best_text}).")}
    elif comparisons["verdict"].eq(EQUIVALENT).all():
        limit_row |= {"estimate": np.nan, "verdict": NONE, "sentence": (
            f"At {label}: no clamp value tried lost more than {100 * margin:.1f} points against the best "
            f"(clamp fractions up to {number(per_value['fraction'].max())}).")}
    else:
        reason = "no clamp value was shown worse than the best, and not all were shown equivalent"
        limit_row |= {"verdict": INCONCLUSIVE, "reason": reason,
                      "sentence": f"At {label}: cannot tell where accuracy starts to fall: {reason}."}
    return [range_row, limit_row]
