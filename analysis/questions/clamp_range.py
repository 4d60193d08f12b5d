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

from analysis.frames import DECAY_KEYS
from analysis.questions.compare import Side, compare, describe
from analysis.questions.rows import no_clamping_run, number, percent, unsupported
from analysis.questions.runs import label
from analysis.questions.stats import EQUIVALENT, INCONCLUSIVE, WORSE

QUESTION_RANGE = "Which clamp values are as good as the best?"
QUESTION_LIMIT = "Beyond which clamp fraction does accuracy fall?"
MEASURED, NONE = "measured", "none"


def clamp_range(runs: pd.DataFrame, confidence: float, margin: float) -> list[dict]:
    """Finding rows (kinds ``safe_range`` and ``clamp_limit``), two per decay-factor pair."""
    clamped = runs[runs["clamping"]].dropna(subset=["clamp_value", "best_val_acc"])
    if clamped.empty:
        return no_clamping_run("No safe clamp range", kind="safe_range", question=QUESTION_RANGE)
    keys = ["context"] + [k for k in DECAY_KEYS if k in clamped]
    pair = label(clamped, keys[1:])
    clamped = clamped.assign(pair=pair.where(clamped["context"].eq(""), clamped["context"] + ", " + pair))
    per_value = (
        clamped.groupby("subject", sort=False)
        .agg(
            pair=("pair", "first"),
            c=("clamp_value", "first"),
            n=("best_val_acc", "size"),
            fraction=("clamp_fraction_mean", "mean"),
            accuracy=("best_val_acc", "mean"),
            median=("best_val_acc", "median"),
        )
        .sort_values(["pair", "c"])
    )
    best = per_value.sort_values("median", ascending=False, kind="stable").groupby("pair").head(1)
    best = pd.Series(best.index, index=best["pair"])
    per_value["best"] = per_value["pair"].map(best)
    others = per_value[per_value.index != per_value["best"]]
    sides = Side.by(clamped, "best_val_acc", key="subject")
    results = compare(
        [(sides[s], sides[b]) for s, b in zip(others.index, others["best"], strict=False)], confidence, margin
    )
    comparisons = pd.DataFrame(results, index=others.index).join(others)
    by_pair = dict(list(comparisons.groupby("pair", sort=False)))
    rows = []
    for name, values in per_value.groupby("pair", sort=True):
        rows.extend(
            _pair(
                name,
                values,
                by_pair.get(name, comparisons.iloc[:0]),
                best[name],
                int(values["n"].sum()),
                confidence,
                margin,
            )
        )
    return rows


def _pair(
    label: str,
    per_value: pd.DataFrame,
    comparisons: pd.DataFrame,
    best: str,
    n_runs: int,
    confidence: float,
    margin: float,
) -> list[dict]:
    base = {
        "question": QUESTION_RANGE,
        "subject": label,
        "metric": "clamp_fraction_mean",
        "n_runs": n_runs,
        "against": best,
    }
    if len(per_value) < 2:
        reason = f"one clamp value (c={per_value['c'].iloc[0]:g}) was tried at {label}"
        return [
            unsupported(reason, f"No safe clamp range at {label}", **(base | {"kind": "safe_range", "against": None}))
        ]
    best_text = f"c={per_value.loc[best, 'c']:g}, {percent(per_value.loc[best, 'accuracy'])}"
    equivalent = per_value.loc[[best] + list(comparisons.index[comparisons["verdict"].eq(EQUIVALENT)])]
    worse = comparisons[comparisons["verdict"].eq(WORSE)]
    largest = equivalent["fraction"].max()
    range_row = base | {"kind": "safe_range", "estimate": largest}
    if comparisons["verdict"].isin([EQUIVALENT, WORSE]).any():
        values = ", ".join(f"{c:g}" for c in sorted(equivalent["c"]))
        values = (
            f"clamp values c = {values} are equivalent to the best"
            if len(equivalent) > 1
            else "no other clamp value is equivalent to the best one"
        )
        range_row |= {
            "verdict": MEASURED,
            "sentence": (
                f"At {label}: {values} ({best_text}) within \u00b1{100 * margin:.1f} points; "
                f"{'the largest clamp fraction among them' if len(equivalent) > 1 else 'its clamp fraction'} "
                f"is {number(largest)}."
            ),
        }
    else:
        reason = (
            "every comparison with the best clamp value is inconclusive ("
            + "; ".join(sorted(set(comparisons["reason"].dropna())))
            + ")"
        )
        range_row |= {
            "verdict": INCONCLUSIVE,
            "reason": reason,
            "sentence": f"At {label}: no clamp value could be shown equivalent to the best ({best_text}): {reason}.",
        }
    limit_row = base | {"kind": "clamp_limit", "question": QUESTION_LIMIT}
    if not worse.empty:
        first = worse.sort_values(["fraction", "c"], ascending=[True, False]).iloc[0]
        limit_row |= {
            "estimate": first["fraction"],
            "verdict": MEASURED,
            "sentence": (
                f"At {label}: accuracy falls by more than {100 * margin:.1f} points beyond a clamp fraction of "
                f"{number(first['fraction'])} (c={first['c']:g}: {describe(first.to_dict(), confidence)} "
                f"against {best_text})."
            ),
        }
    elif comparisons["verdict"].eq(EQUIVALENT).all():
        limit_row |= {
            "estimate": np.nan,
            "verdict": NONE,
            "sentence": (
                f"At {label}: no clamp value tried lost more than {100 * margin:.1f} points against the best "
                f"(clamp fractions up to {number(per_value['fraction'].max())})."
            ),
        }
    else:
        reason = "no clamp value was shown worse than the best, and not all were shown equivalent"
        limit_row |= {
            "verdict": INCONCLUSIVE,
            "reason": reason,
            "sentence": f"At {label}: cannot tell where accuracy starts to fall: {reason}.",
        }
    return [range_row, limit_row]
