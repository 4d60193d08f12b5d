"""This machine's per-user runtime folder for what the sweep service keeps outside experiments."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/onlinenorm``, else ``<temp dir>/onlinenorm-<uid>``; created private (0700)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "onlinenorm" if base else Path(tempfile.gettempdir()) / f"onlinenorm-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
