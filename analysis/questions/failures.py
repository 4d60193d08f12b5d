"""Runs that failed to learn (see ``analysis.questions.runs``), trials that
a scheduler stopped early, and trials that did not complete: each named as a
finding of its own."""

from __future__ import annotations

import pandas as pd

from analysis.questions.rows import percent, points, unsupported
from analysis.questions.rows import runs as count
from analysis.questions.runs import FAILED_RATIO

QUESTION_FAILED = "Did any run fail to learn?"
QUESTION_STOPPED = "Were trials stopped early?"
QUESTION_INCOMPLETE = "Did every trial complete?"


def failed_runs(runs: pd.DataFrame) -> list[dict]:
    """Finding rows (kind ``failed``): one per setting with failed runs, or one saying none failed."""
    failed = runs[runs["failed"]]
    judged = int(runs["peers_median"].notna().sum())
    if judged == 0:
        reason = "no setting has two complete runs to compare a run with"
        return [
            unsupported(
                reason,
                "Cannot tell whether a run failed to learn",
                kind="failed",
                question=QUESTION_FAILED,
                subject="every setting",
            )
        ]
    if failed.empty:
        return [
            {
                "kind": "failed",
                "question": QUESTION_FAILED,
                "subject": "every setting",
                "estimate": 0.0,
                "n_runs": judged,
                "n_failed": 0,
                "verdict": "none",
                "sentence": f"No run failed to learn: each of the {count(judged)} with a repeat of its setting "
                f"reached at least {FAILED_RATIO:.0%} of the median best accuracy of the others.",
            }
        ]
    rows = []
    for subject, group in failed.groupby("subject", sort=False):
        total = int(runs["subject"].eq(subject).sum())
        peers = group["peers_median"].median()
        gap = group["best_val_acc"].mean() - peers
        which = ", ".join(
            f"seed {s:g}: {percent(a)}" if pd.notna(s) else percent(a)
            for s, a in zip(group["seed"], group["best_val_acc"], strict=False)
        )
        rows.append(
            {
                "kind": "failed",
                "question": QUESTION_FAILED,
                "subject": subject,
                "metric": "best_val_acc",
                "estimate": gap,
                "n_runs": total,
                "n_failed": len(group),
                "verdict": "failed",
                "sentence": f"{subject}: {len(group)} of {count(total)} failed to learn ({which}), "
                f"{points(-gap).lstrip('+')} points below the median {percent(peers)} of its other runs; "
                f"comparisons involving it are given with and without {'it' if len(group) == 1 else 'them'}.",
            }
        )
    return rows


def stopped_trials(trials: pd.DataFrame) -> list[dict]:
    """A finding row (kind ``stopped``) when a scheduler stopped trials early, else none."""
    stopped = trials[trials["state"].eq("stopped")]
    if stopped.empty:
        return []
    at = stopped["epochs_done"].value_counts().sort_index()
    where = ", ".join(f"{n} at epoch {epoch}" for epoch, n in at.items())
    names = ", ".join(sorted(stopped["normalizer"].astype(str).unique()))
    return [
        {
            "kind": "stopped",
            "question": QUESTION_STOPPED,
            "subject": names,
            "estimate": float(len(stopped)),
            "n_runs": len(trials),
            "verdict": "stopped",
            "sentence": f"{len(stopped)} of {count(len(trials), 'trial')} were stopped early by the scheduler "
            f"({where}; {names}) and are left out of every comparison, table and chart.",
        }
    ]


def incomplete_trials(trials: pd.DataFrame) -> list[dict]:
    """A finding row (kind ``incomplete``) when trials are running, pending or errored, else none."""
    states = trials.loc[trials["state"].isin(["running", "pending", "errored"]), "state"].value_counts()
    if states.empty:
        return []
    counts = ", ".join(f"{n} {state}" for state, n in states.items())
    return [
        {
            "kind": "incomplete",
            "question": QUESTION_INCOMPLETE,
            "subject": counts,
            "estimate": float(states.sum()),
            "n_runs": len(trials),
            "verdict": "incomplete",
            "sentence": f"{states.sum()} of {count(len(trials), 'trial')} did not complete ({counts}) and are left "
            f"out of every comparison.",
        }
    ]
