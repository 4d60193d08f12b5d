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

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "analysis.results": ["load", "Results"],
        "analysis.parquet": ["export"],
        "analysis.questions": ["findings"],
        "analysis.report": ["write_report"],
        "analysis": ["charts", "tables", "frames", "questions"],  # its submodules
    },
)
