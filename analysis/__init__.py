"""Reading Online Normalization sweeps: experiment directories to tidy frames,
findings with confidence intervals, matplotlib charts, tables, Parquet and an
HTML report.

Reads Ray Tune's files directly; never imports torch, Ray or ``sweeps``, and
of ``onlinenorm`` only the torch-free ``onlinenorm.constants``. Names are
resolved on first use, so ``import analysis.cli`` (done by ``onlinenorm
--help``) stays free of pandas and matplotlib.
"""

from __future__ import annotations

import importlib

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


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    module = _EXPORTS[name]
    if module == "analysis":
        return importlib.import_module(f"analysis.{name}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
