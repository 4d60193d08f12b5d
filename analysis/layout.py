"""Read a Ray Tune experiment directory from its files, without Ray.

Layout written by ``tune.Tuner(..., run_config=RunConfig(storage_path, name))``
in Ray 2.x (checked against Ray 2.60)::

    <experiment>/
        experiment_state-<date>.json   trial_data: [[meta_json, runtime_json], ...];
                                       meta has trial_id, config, status
                                       (PENDING/RUNNING/TERMINATED/ERROR), relative_logdir
        spec.yaml                      the sweep spec, written by ``sweeps`` (optional)
        <trial directory>/             one per trial, named by Ray or by the sweep
            params.json                the trial's config
            result.json                one JSON object per ``tune.report`` call
            error.txt, error.pkl       only when the trial raised

Things the files do not say directly: rows of a function trainable all carry
``"done": false`` (only experiment_state marks a trial TERMINATED); a pending
trial is an empty directory; a resumed trial re-reports the epochs after its
checkpoint; an interrupted sweep leaves trials RUNNING. Nothing here writes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

EXPERIMENT_STATE_GLOB = "experiment_state-*.json"
ERROR_FILES = ("error.txt", "error.pkl")
SPEC_FILE = "spec.yaml"
TRIAL_ID_IN_DIRNAME = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")


@dataclass
class RawTrial:
    """One trial as found on disk: config, reported rows, and how it ended."""

    trial_id: str
    directory: Path
    config: dict
    rows: list[dict]
    ray_status: str | None  # from experiment_state; None when that file is missing
    error: str | None  # last line of error.txt, or a note when only error.pkl exists


@dataclass
class RawExperiment:
    """One experiment directory: its trials, its spec text, and what could not be read."""

    name: str
    path: Path
    trials: list[RawTrial]
    spec: str | None
    warnings: list[str] = field(default_factory=list)


def is_experiment(path: Path) -> bool:
    """An experiment directory holds an experiment_state file or a trial directory."""
    return any(path.glob(EXPERIMENT_STATE_GLOB)) or any(path.glob("*/params.json"))


def find_experiments(path: Path) -> list[Path]:
    """``path`` itself if it is an experiment, else its experiment subdirectories
    (a Ray storage path holding several sweeps)."""
    if is_experiment(path):
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and is_experiment(p))


def read_experiment(path: Path, name: str) -> RawExperiment:
    warnings: list[str] = []
    state = _read_state(path, warnings)
    directories = {p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")}
    trials = [
        trial
        for relative in sorted(directories | state.keys())
        if (trial := _read_trial(path / relative, state.get(relative), warnings)) is not None
    ]
    spec_path = path / SPEC_FILE
    spec = _read_text(spec_path, warnings) if spec_path.exists() else None
    return RawExperiment(name=name, path=path, trials=trials, spec=spec, warnings=warnings)


def _read_state(path: Path, warnings: list[str]) -> dict[str, dict]:
    """Trial metadata by relative directory, from the newest experiment_state file."""
    files = sorted(path.glob(EXPERIMENT_STATE_GLOB))
    if not files:
        return {}
    try:
        trial_data = json.loads(files[-1].read_text())["trial_data"]
        metas = [json.loads(meta) for meta, _runtime in trial_data]
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.append(f"{files[-1]}: unreadable ({err}); trial states inferred from the trial files")
        return {}
    return {meta["relative_logdir"]: meta for meta in metas if "relative_logdir" in meta}


def _read_trial(directory: Path, meta: dict | None, warnings: list[str]) -> RawTrial | None:
    params, results = directory / "params.json", directory / "result.json"
    if meta is None and not params.exists() and not results.exists():
        return None  # not a trial directory
    rows = _read_rows(results, warnings) if results.exists() else []
    config = _read_config(params, meta, rows, warnings)
    trial_id = (meta or {}).get("trial_id") or next((r["trial_id"] for r in rows if "trial_id" in r), None)
    if trial_id is None:
        match = TRIAL_ID_IN_DIRNAME.search(directory.name)
        trial_id = match.group(1) if match else directory.name
    return RawTrial(
        trial_id=trial_id,
        directory=directory,
        config=config,
        rows=rows,
        ray_status=(meta or {}).get("status"),
        error=_read_error(directory, warnings),
    )


def _read_rows(path: Path, warnings: list[str]) -> list[dict]:
    """Parsed result.json lines (Ray's ``config`` copy included); a line that
    is not JSON (a trial still writing) is skipped."""
    text = _read_text(path, warnings) or ""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            warnings.append(f"{path}: line {number} is not valid JSON (still being written?); skipped")
            continue
        rows.append(row)
    return rows


def _read_config(params: Path, meta: dict | None, rows: list[dict], warnings: list[str]) -> dict:
    """params.json, else the config in experiment_state, else the one Ray copies into
    every result row, else empty (with a warning)."""
    if params.exists():
        text = _read_text(params, warnings)
        try:
            return json.loads(text) if text is not None else {}
        except ValueError as err:
            warnings.append(f"{params}: not valid JSON ({err}); using the config Ray recorded elsewhere")
    for source in ([meta] if meta else []) + rows[::-1]:
        if isinstance(source.get("config"), dict):
            return source["config"]
    if params.exists() or rows:
        warnings.append(f"{params.parent}: no readable config; its config columns are empty")
    return {}


def _read_error(directory: Path, warnings: list[str]) -> str | None:
    text_file, pickle_file = (directory / name for name in ERROR_FILES)
    if text_file.exists():
        lines = [line for line in (_read_text(text_file, warnings) or "").splitlines() if line.strip()]
        return lines[-1].strip() if lines else "error (error.txt is empty)"
    return "error (see error.pkl)" if pickle_file.exists() else None


def _read_text(path: Path, warnings: list[str]) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        warnings.append(f"{path}: cannot be read ({err})")
        return None
