"""Each normalizer against its published figure, where the experiment's
``spec.yaml`` names one:

    reference:
      source: "Chiley et al. 2019, Table 2: ResNet-20 CIFAR-10, median of 5 runs"
      results:              # config keys that select trials, then the figures
        - {norm: online, ecm: ls, val_acc: 0.923}
        - {norm: batch, val_acc: 0.922}

``val_acc`` is compared with the runs' best val_acc (difference: ours -
published, in points, with the usual verdicts); ``val_loss`` with their best
val_loss (difference: published - ours, so a positive number is a lower
loss, and the verdict reads the same way).
"""

from __future__ import annotations

import pandas as pd
import yaml

from analysis.questions.compare import Side, compare, describe
from analysis.questions.rows import number, percent, unsupported

QUESTION = "How does it compare with the published figures?"
FIGURES = {"val_acc": "best_val_acc", "val_loss": "best_val_loss"}


def against_reference(runs: pd.DataFrame, specs: dict[str, str], confidence: float, margin: float) -> list[dict]:
    """Finding rows (kind ``reference``), one per reference entry and figure."""
    rows, items = [], []
    for experiment, text in specs.items():
        try:
            reference = (yaml.safe_load(text) or {}).get("reference")
        except (yaml.YAMLError, AttributeError):
            continue  # not a mapping: the sweep service never wrote it, nothing to place against
        if not isinstance(reference, dict):
            continue
        source = str(reference.get("source", "the spec's reference"))
        for entry in reference.get("results") or []:
            if not isinstance(entry, dict):
                continue
            keys = {k: v for k, v in entry.items() if k not in FIGURES}
            label = ", ".join(f"{k}={v}" for k, v in keys.items())
            selected = runs[runs["experiment"].eq(experiment)]
            for key, value in keys.items():
                selected = selected[selected[key].eq(value)] if key in selected else selected.iloc[0:0]
            for figure, column in FIGURES.items():
                if figure not in entry:
                    continue
                published = float(entry[figure])
                base = {
                    "kind": "reference",
                    "question": QUESTION,
                    "against": f"{source}: {figure} {published:g}",
                    "metric": column,
                }
                if selected.empty:
                    reason = f"no complete run in {experiment} matches {label}"
                    rows.append(unsupported(reason, f"Cannot place {label} against {source}", **base, subject=label))
                    continue
                subject = " / ".join(sorted(selected["normalizer"].unique()))
                side = Side.of(selected, column, offset=published)
                if figure == "val_loss":
                    side.values = -side.values
                items.append(side)
                rows.append(
                    base
                    | {
                        "subject": subject,
                        "figure": figure,
                        "published": published,
                        "ours": selected[column].median(),
                        "source": source,
                    }
                )
    for row, result in zip(
        [r for r in rows if "figure" in r], compare([(side, None) for side in items], confidence, margin), strict=False
    ):
        row |= result
        figure, published, ours, source = (row[k] for k in ("figure", "published", "ours", "source"))
        if figure == "val_acc":
            row["sentence"] = (
                f"{row['subject']}: best val. accuracy {percent(ours)} (median) against the "
                f"published {percent(published)} ({source}): "
                f"{describe(result, confidence)}."
            )
        else:
            row["sentence"] = (
                f"{row['subject']}: best val. loss {number(ours)} (median) against the published "
                f"{number(published)}: lower by {number(row['estimate'])} on average: {row['verdict']}."
            )
    return rows
