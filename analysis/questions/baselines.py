"""Against the baselines: each setting's best and final validation accuracy
against batch norm and against online norm with layer scaling.

Each baseline is its best setting (highest median best accuracy) in the
same context; the difference is the setting's minus the baseline's, paired
by seed (see ``analysis.questions.compare``).
"""

from __future__ import annotations

import pandas as pd

from analysis.frames import COMPLETE_STATES
from analysis.questions.compare import Side, compare, describe
from analysis.questions.rows import percent, unsupported
from analysis.questions.runs import best_subject, contexts

QUESTION = "Is it as good as the baselines?"
BATCH_NORM, LAYER_SCALING = "BatchNorm", "OnlineNorm (Layer Scaling)"
METRICS = {"best_val_acc": "best val. accuracy", "final_val_acc": "final val. accuracy"}


def is_baseline(runs: pd.DataFrame, baseline: str) -> pd.Series:
    if baseline == BATCH_NORM:
        return runs["norm"].eq("batch")
    return runs["norm"].eq("online") & runs["ecm"].eq("ls")


def against_baselines(runs: pd.DataFrame, trials: pd.DataFrame, confidence: float, margin: float) -> list[dict]:
    """Finding rows (kind ``baseline``), one per setting, baseline and metric."""
    rows, items = [], []
    for context, in_context in contexts(runs):
        sides = {metric: Side.by(in_context, metric, key="subject") for metric in METRICS}
        for baseline in (BATCH_NORM, LAYER_SCALING):
            base = best_subject(in_context[is_baseline(in_context, baseline)])
            if base is None:
                rows.append(_unsupported(baseline, context, trials))
                continue
            others = in_context["subject"].ne(base)
            if baseline == LAYER_SCALING:
                others &= ~is_baseline(in_context, BATCH_NORM)
            ranked = in_context[others].groupby("subject")["best_val_acc"].median().sort_values(ascending=False)
            for subject in ranked.index:  # the best settings first
                for metric, label in METRICS.items():
                    x, y = sides[metric][subject], sides[metric][base]
                    items.append((x, y))
                    rows.append(
                        {
                            "kind": "baseline",
                            "question": QUESTION,
                            "subject": subject,
                            "against": base,
                            "metric": metric,
                            "label": label,
                            "x_mean": x.mean,
                            "y_mean": y.mean,
                        }
                    )
    compared = [row for row in rows if "label" in row]
    for row, result in zip(compared, compare(items, confidence, margin), strict=False):
        row |= result
        row["sentence"] = (
            f"{row['subject']}: {row['label']} {percent(row['x_mean'])} against "
            f"{row['against']} {percent(row['y_mean'])}: {describe(result, confidence)}."
        )
    return rows


def _unsupported(baseline: str, context: str, trials: pd.DataFrame) -> dict:
    where = f" with {context}" if context else ""
    incomplete = trials.loc[is_baseline(trials, baseline) & ~trials["state"].isin(COMPLETE_STATES), "state"]
    reason = f"no complete {baseline} run{where}" + (
        f" ({', '.join(f'{n} {state}' for state, n in incomplete.value_counts().items())})" if len(incomplete) else ""
    )
    return unsupported(
        reason,
        f"Cannot compare against {baseline}",
        kind="baseline",
        question=QUESTION,
        subject=f"every setting{where}",
        against=baseline,
    )
