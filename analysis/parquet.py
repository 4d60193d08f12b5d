"""``export``: the frames as Parquet files (a module named for what it writes, so
it does not shadow ``analysis.export``)."""

from __future__ import annotations

import os
from pathlib import Path

from analysis.results import Results

FRAMES = ("trials", "epochs", "layers")


def export(frames: Results, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``trials.parquet``, ``epochs.parquet`` and ``layers.parquet`` into
    ``out_dir`` (created if needed); returns the path of each."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.parquet" for name in FRAMES}
    for name, path in paths.items():
        getattr(frames, name).to_parquet(path, index=False)
    return paths
