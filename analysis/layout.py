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
            progress.csv               the same rows as CSV, without Ray's config copy
                                       (Ray's CSV logger; absent when it is turned off)
            error.txt, error.pkl       only when the trial raised

Things the files do not say directly: rows of a function trainable all carry
``"done": false`` (only experiment_state marks a trial TERMINATED); a pending
trial is an empty directory; a resumed trial re-reports the epochs after its
checkpoint; an interrupted sweep leaves trials RUNNING. Nothing here writes.

A sweep may be running while it is read: each file is read once, whole, and
only its complete lines count (a line without its newline is still being
written); what cannot be parsed becomes a warning, never an error. A
trial's rows form one Arrow table, with the columns named in its first and
last result line (Ray's ``config`` copy and bookkeeping skipped). They are
read from ``progress.csv`` by pyarrow's CSV reader with those columns' types
when that file holds the same rows (as many, and the same first and last
row): a third of the bytes, twice as fast to parse, and the files of one
header are parsed by one call (``_parse_progress``). Otherwise they are
read from ``result.json`` by pyarrow's JSON reader; a file that does not fit
that schema is parsed with inferred types, and one that pyarrow cannot read
at all line by line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

EXPERIMENT_STATE_GLOB = "experiment_state-*.json"
ERROR_FILES = ("error.txt", "error.pkl")
SPEC_FILE = "spec.yaml"
RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.csv"
TRIAL_ID_IN_DIRNAME = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")
# Trials read at once. Their work is mostly Python now that pyarrow parses the CSV files together:
# more threads only contend for the GIL (4: 15% slower than 1); two still overlap a slow file system's waits.
READ_THREADS = 2
SKIPPED_COLUMNS = frozenset(
    {  # Ray's copy of the config and its bookkeeping, in every result line
        "config",
        "timestamp",
        "checkpoint_dir_name",
        "should_checkpoint",
        "done",
        "date",
        "pid",
        "hostname",
        "node_ip",
        "time_since_restore",
        "iterations_since_restore",
        "experiment_tag",
    }
)


@dataclass
class RawTrial:
    """One trial as found on disk: config, reported rows, and how it ended."""

    trial_id: str
    directory: Path
    config: dict
    rows: pa.Table  # one row per complete result line; columns as first reported, less SKIPPED_COLUMNS
    ray_status: str | None  # from experiment_state; None when that file is missing
    error: str | None  # last line of error.txt, or a note when only error.pkl exists
    rows_file: str = RESULT_FILE  # the file the rows were read from: RESULT_FILE or PROGRESS_FILE

    @property
    def last_row(self) -> dict:
        """The last complete result line's values ({} before the first report)."""
        return self.rows.slice(self.rows.num_rows - 1).to_pylist()[0] if self.rows.num_rows else {}


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


def read_experiments(roots: list[Path]) -> tuple[list[RawExperiment], list[str]]:
    """Every experiment found under ``roots`` (existing directories, see
    ``find_experiments``), each once, named by its directory (prefixed by its
    parent's where names repeat); with a warning per root holding none."""
    found = {root: find_experiments(root) for root in roots}
    directories = list(dict.fromkeys(d.resolve() for experiments in found.values() for d in experiments))
    repeated = {name for name, count in Counter(d.name for d in directories).items() if count > 1}
    names = [f"{d.parent.name}/{d.name}" if d.name in repeated else d.name for d in directories]
    experiments = [read_experiment(d, name) for d, name in zip(directories, names, strict=True)]
    empty = [root for root, experiments_here in found.items() if not experiments_here]
    return experiments, [f"{root}: no experiment directory found here" for root in empty]


def read_experiment(path: Path, name: str) -> RawExperiment:
    warnings: list[str] = []
    state = _read_state(path, warnings)
    directories = {p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")}
    relatives = sorted(directories | state.keys())
    per_trial_warnings: list[list[str]] = [[] for _ in relatives]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        read = list(
            pool.map(
                lambda i: _read_trial(path / relatives[i], state.get(relatives[i]), per_trial_warnings[i]),
                range(len(relatives)),
            )
        )
    found = [trial for trial in read if trial is not None]
    _parse_progress([(trial, progress) for trial, progress in found if progress is not None])
    trials = [trial for trial, _ in found]
    for trial in trials:
        if trial.trial_id is None:
            trial.trial_id = _trial_id(trial)
    warnings += [w for ws in per_trial_warnings for w in ws]
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


@dataclass
class _ProgressRows:
    """A trial's rows in ``progress.csv``, checked against ``result.json`` and
    waiting to be parsed with those of other trials of the same header and schema."""

    header: bytes  # the column names line, newline included
    body: bytes  # the complete data lines
    count: int  # how many
    schema: pa.Schema
    warnings: list[str]  # the trial's, for what reading result.json instead finds


def _read_trial(
    directory: Path, meta: dict | None, warnings: list[str]
) -> tuple[RawTrial, _ProgressRows | None] | None:
    """The trial in ``directory``, with its rows, or with none yet and the
    ``progress.csv`` rows that ``_parse_progress`` gives it."""
    params, results = directory / "params.json", directory / RESULT_FILE
    if meta is None and not params.exists() and not results.exists():
        return None  # not a trial directory
    lines = _complete_lines(results, warnings) if results.exists() else b""
    edges = _first_and_last(lines)
    schema = _schema(edges) if edges else None
    progress = _progress_rows(directory / PROGRESS_FILE, schema, lines, edges, warnings) if schema else None
    rows = _parse_rows(lines, schema, results, warnings) if progress is None else None
    config = _read_config(params, meta, lines, warnings)
    trial = RawTrial(
        trial_id=(meta or {}).get("trial_id"),  # None until its rows are read: see _trial_id
        directory=directory,
        config=config,
        rows=rows if rows is not None else _NO_ROWS,
        ray_status=(meta or {}).get("status"),
        error=_read_error(directory, warnings),
        rows_file=RESULT_FILE if progress is None else PROGRESS_FILE,
    )
    return trial, progress


def _trial_id(trial: RawTrial) -> str:
    """A trial's id where experiment_state does not give it: the first in its
    rows, else the one in its directory's name, else that name."""
    if "trial_id" in trial.rows.column_names:
        found = next((t for t in trial.rows["trial_id"].to_pylist() if t is not None), None)
        if found is not None:
            return found
    match = TRIAL_ID_IN_DIRNAME.search(trial.directory.name)
    return match.group(1) if match else trial.directory.name


def _complete_lines(path: Path, warnings: list[str]) -> bytes:
    """The file's bytes up to its last newline; a non-blank rest (a line still
    being written) is skipped with a warning."""
    try:
        data = path.read_bytes()
    except OSError as err:
        warnings.append(f"{path}: cannot be read ({err})")
        return b""
    end = data.rfind(b"\n") + 1
    if data[end:].strip():
        number = data.count(b"\n", 0, end) + 1
        warnings.append(f"{path}: line {number} is not valid JSON (still being written?); skipped")
    return data[:end]


def _first_and_last(lines: bytes) -> list[dict] | None:
    """The first and the last result line, or None where either is not a JSON object."""
    try:
        edges = [json.loads(lines[: lines.index(b"\n")]), json.loads(lines.rstrip().rpartition(b"\n")[2])]
    except ValueError:
        return None
    return edges if all(isinstance(edge, dict) for edge in edges) else None


def _parse_rows(lines: bytes, schema: pa.Schema | None, path: Path, warnings: list[str]) -> pa.Table:
    """Result lines as one table: with ``schema`` (the first and last line's,
    None when they have none), else with inferred types, else line by line
    (skipping lines that are not JSON)."""
    if not lines.strip():
        return pa.table({})
    if schema is not None:
        try:
            options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
            return pa_json.read_json(io.BytesIO(lines), read_options=_READ, parse_options=options)
        except pa.ArrowException:
            pass
    try:
        table = pa_json.read_json(io.BytesIO(lines), read_options=_READ)
        return table.drop_columns([c for c in table.column_names if c in SKIPPED_COLUMNS])
    except pa.ArrowException:
        pass
    rows = []
    for number, line in enumerate(lines.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append({k: v for k, v in json.loads(line).items() if k not in SKIPPED_COLUMNS})
        except ValueError:
            warnings.append(f"{path}: line {number} is not valid JSON; skipped")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return pa.table({k: _column([row.get(k) for row in rows]) for k in columns})


def _progress_rows(
    path: Path, schema: pa.Schema, lines: bytes, edges: list[dict], warnings: list[str]
) -> _ProgressRows | None:
    """The rows of ``lines`` (result.json's complete lines) in Ray's
    ``progress.csv``, to be parsed with ``schema``'s column types, or None
    where that file is missing or does not hold the same rows: another
    number of complete lines, or a first or last row unlike ``edges`` (the
    first and last of ``lines``) or lacking a column of ``schema``. Ray
    writes both files from the same dict, a CSV cell as ``str(value)``, so
    the rows are compared as text. A trial that Ray resumed appends its rows
    in its new first row's column order under the old header: its last row
    is where a shifted column shows."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    data = data[: data.rfind(b"\n") + 1]  # complete lines only, like result.json's
    count = lines.count(b"\n")  # result.json is counted only where a progress.csv exists
    if data.count(b"\n") != count + 1:
        return None
    header, first, _ = data.split(b"\n", 2)
    try:
        names, *rows = csv.reader(line.decode() for line in (header, first, data.rstrip().rpartition(b"\n")[2]))
    except (UnicodeDecodeError, csv.Error, ValueError):
        return None
    if len(rows) != len(edges):  # a quoted cell spanning lines: not a row a line
        return None
    for row, edge in zip(rows, edges, strict=True):
        cells = dict(zip(names, row, strict=False))
        if [cells.get(name) for name in schema.names] != [_as_written(edge.get(name)) for name in schema.names]:
            return None
    header_end = len(header) + 1
    return _ProgressRows(data[:header_end], data[header_end:], count, schema, warnings)


def _parse_progress(pending: list[tuple[RawTrial, _ProgressRows]]) -> None:
    """Give each trial its ``progress.csv`` rows: the files of one header and
    schema parsed by one pyarrow call (a thousand 60 KB files: 0.3 CPU-s,
    against 0.8 one by one) and sliced by their line counts. Where the rows
    parsed are not as many as the lines (a quoted cell spanning lines), or
    pyarrow fails, the files are parsed one by one; a file that still fails
    is read from ``result.json``."""
    groups: dict[tuple[bytes, pa.Schema], list[tuple[RawTrial, _ProgressRows]]] = {}
    for trial, progress in pending:
        groups.setdefault((progress.header, progress.schema), []).append((trial, progress))
    for (header, schema), members in groups.items():
        table = _parse_csv(header + b"".join(progress.body for _, progress in members), schema, _CSV_MANY)
        if table is not None and table.num_rows == sum(progress.count for _, progress in members):
            start = 0
            for trial, progress in members:
                trial.rows = table.slice(start, progress.count)
                start += progress.count
            continue
        for trial, progress in members:
            rows = _parse_csv(progress.header + progress.body, schema, _CSV_ONE)
            if rows is not None and rows.num_rows == progress.count:
                trial.rows = rows
                continue
            results = trial.directory / RESULT_FILE  # its half-written last line was reported already
            lines = _complete_lines(results, [])
            trial.rows, trial.rows_file = _parse_rows(lines, schema, results, progress.warnings), RESULT_FILE


def _parse_csv(data: bytes, schema: pa.Schema, read_options: pa_csv.ReadOptions) -> pa.Table | None:
    options = pa_csv.ConvertOptions(
        column_types=schema, include_columns=schema.names, null_values=[""], strings_can_be_null=True
    )
    try:
        return pa_csv.read_csv(io.BytesIO(data), read_options=read_options, convert_options=options)
    except pa.ArrowException:
        return None


def _as_written(value) -> str:
    """A result value as Ray's CSV logger writes it (``csv`` writes ``str(value)``, None as empty)."""
    return "" if value is None else str(value)


_READ = pa_json.ReadOptions(use_threads=False, block_size=1 << 26)  # one block per file: files are read in parallel
_CSV_MANY = pa_csv.ReadOptions(use_threads=True)  # many files' rows at once: pyarrow's threads
_CSV_ONE = pa_csv.ReadOptions(use_threads=False, block_size=1 << 26)  # a file alone: one block
_NO_ROWS = pa.table({})
_ARROW_TYPES = {bool: pa.bool_(), str: pa.string(), int: pa.int64()}


def _schema(rows: list[dict]) -> pa.Schema | None:
    """Columns of ``rows`` in first-seen order: booleans, strings, int64 for
    integers, float64 for other numbers and nulls; None where a value (other
    than skipped) is a list or an object."""
    fields = {}
    for row in rows:
        for key, value in row.items():
            if key in SKIPPED_COLUMNS or key in fields:
                continue
            if isinstance(value, (list, dict)):
                return None
            fields[key] = _ARROW_TYPES.get(type(value), pa.float64())
    return pa.schema(fields)


def _column(values: list) -> pa.Array:
    """One column's values; one of mixed kinds (numbers and text, lists) becomes JSON text."""
    kinds = {
        bool if isinstance(v, bool) else float if isinstance(v, (int, float)) else type(v)
        for v in values
        if v is not None
    }
    if len(kinds) <= 1 and not kinds & {list, dict}:
        return pa.array(values)
    return pa.array([v if v is None or isinstance(v, str) else json.dumps(v) for v in values], pa.string())


def _read_config(params: Path, meta: dict | None, lines: bytes, warnings: list[str]) -> dict:
    """params.json, else the config in experiment_state, else the one Ray copies into
    the last result line, else empty (with a warning)."""
    if params.exists():
        text = _read_text(params, warnings)
        try:
            return json.loads(text) if text is not None else {}
        except ValueError as err:
            warnings.append(f"{params}: not valid JSON ({err}); using the config Ray recorded elsewhere")
    if meta and isinstance(meta.get("config"), dict):
        return meta["config"]
    for line in reversed(lines.splitlines()):
        try:
            config = json.loads(line).get("config")
        except (ValueError, AttributeError):
            continue
        if isinstance(config, dict):
            return config
    if params.exists() or lines.strip():
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
