"""Findings in words: the headline (what must not be missed) and the
sentences grouped by question, for the terminal and the HTML report."""

from __future__ import annotations

import pandas as pd

from analysis.questions.rows import points
from analysis.questions.stats import INCONCLUSIVE, UNSUPPORTED, WORSE

SHOWN_PER_QUESTION = 8  # the rest of a long group is summarised (terminal) or folded (HTML)


def headline(findings: pd.DataFrame, margin: float) -> list[str]:
    """The lines a reader must see first: settings where removing the clamp
    is not safe (or lost more than the margin in a single run), that every
    setting ran once, runs that failed to learn, trials stopped early."""
    lines = []
    removal = findings[findings["kind"].eq("removal")]
    unsafe = removal[removal["verdict"].eq(WORSE)]
    if len(unsafe):
        lines.append(
            "Removing the clamp at inference is NOT safe at: "
            + "; ".join(
                f"{s} ({points(e)} points)" for s, e in zip(unsafe["subject"], unsafe["estimate"], strict=False)
            )
        )
    single = removal[removal["verdict"].eq(INCONCLUSIVE) & removal["n_runs"].eq(1) & removal["estimate"].lt(-margin)]
    if len(single):
        lines.append(
            "Removing the clamp lost more than the margin in a single run (run more seeds to tell) at: "
            + "; ".join(
                f"{s} ({points(e)} points)" for s, e in zip(single["subject"], single["estimate"], strict=False)
            )
        )
    compared = findings[findings["kind"].isin(["baseline", "removal"]) & findings["n_runs"].notna()]
    if len(compared) and compared["n_runs"].le(1).all():
        lines.append(
            "Every setting ran once: one run gives no interval, so no comparison has a verdict. "
            "Run two or more seeds of every setting, baselines included."
        )
    failed = findings[findings["kind"].eq("failed") & findings["verdict"].eq("failed")]
    lines.extend(failed["sentence"])
    lines.extend(findings.loc[findings["kind"].eq("stopped"), "sentence"])
    return lines


def by_question(findings: pd.DataFrame) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """``(question, shown, folded)`` per question in row order: decisive
    findings first, at most ``SHOWN_PER_QUESTION`` shown."""
    groups = []
    for question, rows in findings.groupby("question", sort=False):
        undecided = rows["verdict"].isin([INCONCLUSIVE, UNSUPPORTED])
        ordered = pd.concat([rows[~undecided], rows[undecided]])
        groups.append((question, ordered.head(SHOWN_PER_QUESTION), ordered.iloc[SHOWN_PER_QUESTION:]))
    return groups


def to_text(findings: pd.DataFrame, margin: float, confidence: float) -> str:
    """The findings as terminal text: headline, then each question's sentences."""
    lines = [
        f"Findings ({confidence:.0%} bootstrap intervals over runs; equivalent = within "
        f"\u00b1{100 * margin:.1f} points)"
    ]
    lines += [f"  ! {line}" for line in headline(findings, margin)]
    for question, shown, folded in by_question(findings):
        lines += ["", question] + [f"  - {sentence}" for sentence in shown["sentence"]]
        if len(folded):
            counts = folded["verdict"].value_counts()
            lines.append(
                f"  ... and {len(folded)} more (" + ", ".join(f"{n} {verdict}" for verdict, n in counts.items()) + ")"
            )
    return "\n".join(lines)
