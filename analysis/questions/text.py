"""Findings in words: the headline (what must not be missed) and the
sentences grouped by question, for the terminal and the HTML report."""

from __future__ import annotations

import pandas as pd

from analysis.questions.rows import points
from analysis.questions.stats import INCONCLUSIVE, UNSUPPORTED, WORSE

SHOWN_PER_QUESTION = 8  # the rest of a long group is summarised (terminal) or folded (HTML)


def headline(findings: pd.DataFrame, margin: float) -> list[str]:
    """The lines a reader must see first.

    In this order, each only where it applies: the settings where removing the
    clamp is not safe (``removal`` verdict ``worse``); those where it lost more
    than ``margin`` in a single run (inconclusive, one run); a note that every
    compared setting ran once; the sentences of runs that failed to learn; the
    sentences of trials stopped early.

    Args:
        findings: the frame ``analysis.findings`` returns.
        margin: the equivalence margin the findings used, in accuracy (0.01 = one point).

    Returns:
        The lines, without markers; empty when nothing needs flagging.
    """
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
    """The findings grouped by question, decisive ones first.

    Args:
        findings: the frame ``analysis.findings`` returns.

    Returns:
        ``(question, shown, folded)`` per question, in the order questions first
        appear in ``findings``: ``shown`` holds the first ``SHOWN_PER_QUESTION`` rows
        (findings with a verdict other than inconclusive or unsupported first, each
        part in row order), ``folded`` the rest (possibly empty).
    """
    groups = []
    for question, rows in findings.groupby("question", sort=False):
        undecided = rows["verdict"].isin([INCONCLUSIVE, UNSUPPORTED])
        ordered = pd.concat([rows[~undecided], rows[undecided]])
        groups.append((question, ordered.head(SHOWN_PER_QUESTION), ordered.iloc[SHOWN_PER_QUESTION:]))
    return groups


def to_text(findings: pd.DataFrame, margin: float, confidence: float) -> str:
    """The findings as terminal text, as ``onlinenorm report`` prints them.

    A title line naming the confidence and margin, the ``headline`` lines
    (marked ``!``), then each question with its shown sentences (marked ``-``)
    and a count by verdict of the folded ones (see ``by_question``).

    Args:
        findings: the frame ``analysis.findings`` returns.
        margin: the equivalence margin the findings used, in accuracy (0.01 = one point).
        confidence: the confidence level of their intervals (0.95 is written 95%).

    Returns:
        The text, lines joined by newlines, without a trailing newline.
    """
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
