"""``load``: experiment directories in, one set of tidy frames out."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import frames
from analysis.layout import RawExperiment, read_experiments
from analysis.storage import is_uri, local_copy


@dataclass
class Results:
    """The frames of one or more experiments (columns: see ``analysis.frames``).

    ``warnings`` lists the files that could not be read, one line each;
    ``specs`` maps an experiment name to its spec.yaml text; ``paths`` maps
    it to its directory (its URI, for an experiment on object storage).
    """

    trials: pd.DataFrame
    epochs: pd.DataFrame
    layers: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    specs: dict[str, str] = field(default_factory=dict)
    paths: dict[str, Path | str] = field(default_factory=dict)

    def where(self, mask: pd.Series) -> Results:
        """The same results restricted to the trials where ``mask`` (over ``trials``) holds
        (these results themselves where it holds for every trial)."""
        if mask.all():
            return self
        kept = self.trials[mask].reset_index(drop=True)
        return Results(
            trials=kept,
            epochs=self.epochs[frames.trial_positions(self.epochs, kept) >= 0].reset_index(drop=True),
            layers=self.layers[frames.trial_positions(self.layers, kept) >= 0].reset_index(drop=True),
            warnings=self.warnings,
            specs=self.specs,
            paths=self.paths,
        )


def load(paths: str | os.PathLike | list[str | os.PathLike]) -> Results:
    """Read one or more experiment directories (or a Ray storage path holding
    several) into one ``Results``; the ``experiment`` column tells them apart.

    A path may be a storage URI (``s3://bucket/sweeps/quick``, ``gs://...``),
    read through pyarrow's filesystems (``analysis.storage`` says how to reach
    an S3-compatible server). Never writes; a file that cannot be read becomes
    a line in ``warnings``. Raises ``FileNotFoundError`` for a path that does
    not exist.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if any(is_uri(p) for p in paths):
        return _load_from_storage(paths)
    roots = [Path(p).expanduser() for p in paths]
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such experiment directory")
    return assemble(*read_experiments(roots))


def assemble(experiments: list[RawExperiment], warnings: list[str]) -> Results:
    """``Results`` from experiments as read (``layout.read_experiments``) and
    the warnings of finding them."""
    trials, epochs, layers = frames.build([(e.name, t) for e in experiments for t in e.trials])
    return Results(
        trials=trials,
        epochs=epochs,
        layers=layers,
        warnings=warnings
        + [w for e in experiments for w in e.warnings]
        + [f"{e.path}: no trials found" for e in experiments if not e.trials],
        specs={e.name: e.spec for e in experiments if e.spec is not None},
        paths={e.name: e.path for e in experiments},
    )


def _load_from_storage(paths: list[str | os.PathLike]) -> Results:
    """``load`` with each URI read from a local copy of its files; paths and warnings name the URIs."""
    with contextlib.ExitStack() as copies:
        origins = {}  # local copy -> the URI it holds, query left out
        local = []
        for path in paths:
            if is_uri(path):
                folder = copies.enter_context(local_copy(str(path)))
                origins[str(folder.resolve())] = str(path).split("?", 1)[0].rstrip("/")
                local.append(folder)
            else:
                local.append(path)
        results = load(local)

    def named(text: str) -> str:
        for folder, uri in origins.items():
            text = text.replace(folder, uri)
        return text

    results.warnings = [named(w) for w in results.warnings]
    results.paths = {
        name: named(str(path)) if named(str(path)) != str(path) else path for name, path in results.paths.items()
    }
    return results
