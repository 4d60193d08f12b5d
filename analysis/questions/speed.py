"""Learning speed: the epochs each normalizer needs to reach ``TARGETS`` of
batch norm's final accuracy (the median final val_acc of batch norm's best
setting), at the normalizer's best setting; per run the first epoch whose
val_acc reaches the target, then the median over seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.frames import KEYS
from analysis.questions import stats
from analysis.questions.baselines import BATCH_NORM, is_baseline
from analysis.questions.rows import percent, unsupported
from analysis.questions.rows import runs as count
from analysis.questions.runs import best_subject, contexts

QUESTION = "How fast does each normalizer learn?"
TARGETS = (0.90, 0.95)


def learning_speed(runs: pd.DataFrame, epochs: pd.DataFrame, confidence: float) -> list[dict]:
    """Finding rows (kind ``speed``), one per normalizer, context and target."""
    rows = []
    for context, in_context in contexts(runs):
        where = f" with {context}" if context else ""
        batch = in_context[is_baseline(in_context, BATCH_NORM)]
        if batch.empty:
            reason = f"no complete {BATCH_NORM} run{where} to take the target accuracy from"
            rows.append(
                unsupported(
                    reason,
                    "Cannot measure learning speed",
                    kind="speed",
                    question=QUESTION,
                    subject=f"every normalizer{where}",
                )
            )
            continue
        final = batch.loc[batch["subject"].eq(best_subject(batch)), "final_val_acc"].median()
        best = [best_subject(group) for _, group in in_context.groupby("normalizer", sort=True)]
        chosen = in_context[in_context["subject"].isin(best)]
        curves = epochs.merge(chosen[KEYS + ["subject"]], on=KEYS)
        for target in TARGETS:
            reached = (
                curves[curves["val_acc"] >= target * final].groupby(KEYS)["epoch"].min().rename("reached").reset_index()
            )
            per_run = chosen[KEYS + ["subject", "epochs_done"]].merge(reached, on=KEYS, how="left")
            for subject, group in per_run.groupby("subject", sort=False):
                rows.append(_row(subject, group, target, final, confidence))
    return rows


def _row(subject: str, group: pd.DataFrame, target: float, final: float, confidence: float) -> dict:
    reached = group["reached"].dropna().to_numpy(dtype=float)
    goal = (
        f"{target:.0%} of {BATCH_NORM}'s final accuracy ({target:.2f} x {percent(final)} = {percent(target * final)})"
    )
    row = {
        "kind": "speed",
        "question": QUESTION,
        "subject": subject,
        "against": BATCH_NORM,
        "metric": f"epochs to {target:.0%} of batch norm's final val_acc",
        "n_runs": len(group),
    }
    if len(reached) < len(group):
        missed = len(group) - len(reached)
        reason = f"{missed} of {count(len(group))} never reached it in {int(group['epochs_done'].max())} epochs"
        median = np.median(np.concatenate([reached, np.full(missed, np.inf)]))
        if np.isinf(median):
            return row | {
                "verdict": "not reached",
                "reason": reason,
                "sentence": f"{subject} does not reach {goal} in a median run ({reason}).",
            }
        return row | {
            "estimate": median,
            "verdict": "measured",
            "reason": reason,
            "sentence": f"{subject} reaches {goal} in a median of {epochs(median)} ({reason}).",
        }
    estimate, low, high = stats.intervals([(reached,)], confidence, statistic=stats.median)[0]
    interval = "no interval" if np.isnan(low) else f"{confidence:.0%} CI [{low:g}, {high:g}]"
    return row | {
        "estimate": estimate,
        "ci_low": low,
        "ci_high": high,
        "verdict": "measured",
        "sentence": f"{subject} reaches {goal} in {epochs(estimate)} (median over {count(len(reached))}, {interval}).",
    }


def epochs(n: float) -> str:
    return f"{n:g} epoch{'' if n == 1 else 's'}"
