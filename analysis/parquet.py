"""``export``: the frames as Parquet files (a module named for what it writes, so
it does not shadow ``analysis.export``)."""

from __future__ import annotations

import os
from pathlib import Path

from analysis.results import Results

FRAMES = ("trials", "epochs", "layers")


def export(frames: Results, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the three frames as Parquet files.

    Writes ``trials.parquet``, ``epochs.parquet`` and ``layers.parquet`` (without
    the index), replacing files of those names.

    Args:
        frames: the results whose ``trials``, ``epochs`` and ``layers`` to write.
        out_dir: the folder to write into; created, with its parents, if needed.

    Returns:
        The path of each file, keyed ``"trials"``, ``"epochs"`` and ``"layers"``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.parquet" for name in FRAMES}
    for name, path in paths.items():
        getattr(frames, name).to_parquet(path, index=False)
    return paths
