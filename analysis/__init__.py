"""Reading Online Normalization sweeps: experiment directories to tidy frames,
findings with confidence intervals, matplotlib charts, tables, Parquet and an
HTML report.

Reads Ray Tune's files directly; never imports torch, Ray or ``sweeps``, and
of ``onlinenorm`` only the torch-free ``onlinenorm.constants`` and
``onlinenorm.lazy``. Names are
resolved on first use, so ``import analysis.cli`` (done by ``onlinenorm
--help``) stays free of pandas and matplotlib.
"""

from __future__ import annotations

from onlinenorm.lazy import exports

_EXPORTS = {
    "load": "analysis.results",
    "Results": "analysis.results",
    "export": "analysis.parquet",
    "findings": "analysis.questions",
    "write_report": "analysis.report",
    "charts": "analysis",
    "tables": "analysis",
    "frames": "analysis",
    "questions": "analysis",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = exports(__name__, _EXPORTS)
