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

    Built by ``load`` (or ``assemble``); ``where`` narrows it to some trials.
    The ``experiment`` column of every frame tells the experiments apart.

    Attributes:
        trials: one row per trial: keys, config, state and summary columns.
        epochs: one row per trial and epoch: every metric the trial reported.
        layers: one row per trial, epoch and layer: depth and clamp fraction.
        warnings: one line each for a file that could not be read, a path holding
            no experiment directory, and an experiment with no trials. Default: empty.
        specs: experiment name -> the text of its ``spec.yaml``; experiments without
            one are absent. Default: empty.
        paths: experiment name -> its directory (its URI, for an experiment on object
            storage). Default: empty.
    """

    trials: pd.DataFrame
    epochs: pd.DataFrame
    layers: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    specs: dict[str, str] = field(default_factory=dict)
    paths: dict[str, Path | str] = field(default_factory=dict)

    def where(self, mask: pd.Series) -> Results:
        """The same results restricted to the trials where ``mask`` holds.

        ``epochs`` and ``layers`` keep the rows of the kept trials; ``warnings``,
        ``specs`` and ``paths`` are shared with these results unchanged (an
        experiment left without trials keeps its entries).

        Args:
            mask: a boolean Series over ``trials`` (aligned on its index), e.g.
                ``results.trials["dataset"] == "cifar10"``.

        Returns:
            A new ``Results`` whose frames have a fresh ``RangeIndex``; these
            results themselves (not a copy) when ``mask`` holds for every trial.
        """
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
    """Read one or more experiment directories into one ``Results``.

    A path may be one experiment directory or a Ray storage path holding
    several; the ``experiment`` column of the frames tells them apart. A path
    may also be a storage URI (``s3://bucket/sweeps/quick``, ``gs://...``),
    read through pyarrow's filesystems from a temporary local copy of the files
    the analysis reads (``analysis.storage`` says how to reach an S3-compatible
    server); ``warnings`` and ``paths`` then name the URI. Never writes into an
    experiment; a file that cannot be read becomes a line in ``warnings``
    instead of an error.

    Args:
        paths: a directory or URI, or a list of them (``~`` is expanded).

    Returns:
        The ``Results`` of every experiment found (empty frames for an empty list).

    Raises:
        FileNotFoundError: a local path is not a directory, or nothing is stored at a URI.
        ValueError: a URI names no filesystem pyarrow knows, or lacks a bucket.
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
    """``Results`` from experiments already read, without touching the files again.

    Args:
        experiments: the experiments as ``layout.read_experiments`` returns them.
        warnings: the warnings of finding them (``read_experiments``' second value).

    Returns:
        The frames built by ``frames.build``; ``warnings`` holds the given ones, then
        each experiment's own, then ``"<path>: no trials found"`` for an experiment
        without trials.
    """
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
