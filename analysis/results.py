"""``load``: experiment directories in, one set of tidy frames out."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import frames
from analysis.layout import find_experiments, read_experiment


@dataclass
class Results:
    """The frames of one or more experiments (columns: see ``analysis.frames``).

    ``warnings`` lists the files that could not be read, one line each;
    ``specs`` maps an experiment name to its spec.yaml text; ``paths`` maps
    it to its directory.
    """

    trials: pd.DataFrame
    epochs: pd.DataFrame
    layers: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    specs: dict[str, str] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    def where(self, mask: pd.Series) -> "Results":
        """The same results restricted to the trials where ``mask`` (over ``trials``) holds."""
        keys = self.trials.loc[mask, frames.KEYS]
        return Results(
            trials=self.trials[mask].reset_index(drop=True),
            epochs=self.epochs.merge(keys, on=frames.KEYS),
            layers=self.layers.merge(keys, on=frames.KEYS),
            warnings=self.warnings, specs=self.specs, paths=self.paths,
        )


def load(paths: str | os.PathLike | list[str | os.PathLike]) -> Results:
    """Read one or more experiment directories (or a Ray storage path holding
    several) into one ``Results``; the ``experiment`` column tells them apart.

    Never writes; a file that cannot be read becomes a line in ``warnings``.
    Raises ``FileNotFoundError`` for a path that does not exist.
    """
    roots = [Path(p).expanduser() for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such experiment directory")
    directories = list(dict.fromkeys(d.resolve() for root in roots for d in find_experiments(root)))
    names = _names(directories)
    experiments = [read_experiment(d, names[d]) for d in directories]
    trials, epochs, layers = frames.build([(e.name, t) for e in experiments for t in e.trials])
    warnings = [f"{root}: no experiment directory found here" for root in roots if not find_experiments(root)]
    return Results(
        trials=trials, epochs=epochs, layers=layers,
        warnings=warnings + [w for e in experiments for w in e.warnings]
                 + [f"{e.path}: no trials found" for e in experiments if not e.trials],
        specs={e.name: e.spec for e in experiments if e.spec is not None},
        paths={e.name: e.path for e in experiments},
    )


def _names(directories: list[Path]) -> dict[Path, str]:
    """Each experiment's directory name, prefixed by its parent's where names repeat."""
    counts = pd.Series([d.name for d in directories]).value_counts()
    return {d: d.name if counts[d.name] == 1 else f"{d.parent.name}/{d.name}" for d in directories}
