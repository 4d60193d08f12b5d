"""Removing the clamp at inference: ``val_acc_unclamped - val_acc`` per
clamping setting, at each run's best epoch, with its interval and verdict.
A ``worse`` setting is one where removal is not safe."""

from __future__ import annotations

import pandas as pd

from analysis.questions.compare import Side, compare, describe
from analysis.questions.rows import unsupported

QUESTION = "Can the clamp be removed at inference?"


def removal(runs: pd.DataFrame, confidence: float, margin: float) -> list[dict]:
    """Finding rows (kind ``removal``), one per clamping setting."""
    clamped = runs[runs["clamping"]]
    if clamped.empty or clamped["removal"].isna().all():
        reason = "no complete clamping run" if clamped.empty else "no clamping run reported val_acc_unclamped"
        return [
            unsupported(
                reason,
                "Cannot tell whether removing the clamp is safe",
                kind="removal",
                question=QUESTION,
                subject="clamping",
            )
        ]
    sides = Side.by(clamped, "removal", key="subject")
    results = compare([(side, None) for side in sides.values()], confidence, margin)
    return [
        {
            "kind": "removal",
            "question": QUESTION,
            "subject": subject,
            "against": "clamped",
            "metric": "val_acc_unclamped - val_acc",
            **result,
            "sentence": f"{subject}: removing the clamp at inference changes val. accuracy by "
            f"{describe(result, confidence)}.",
        }
        for subject, result in zip(sides, results, strict=False)
    ]
