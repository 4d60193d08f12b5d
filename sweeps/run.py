"""Launching, resuming and summarizing sweeps with Ray Tune's own machinery.

A sweep is one ``tune.Tuner``: the trials are fed by Tune's
``BasicVariantGenerator`` (``points_to_evaluate`` = the spec's resolved
configs, the param space = each key's set of values) or, for an optuna search,
by ``OptunaSearch`` (:mod:`sweeps.searchers`), trials run with the
spec's resources, ``CheckpointConfig`` keeps the latest epochs,
``FailureConfig`` retries a crashed trial from its last checkpoint, and an
optional ASHA scheduler stops weak trials early, and the spec's trackers log
every trial (:mod:`sweeps.callbacks`). ``Tuner.restore`` resumes.

The experiment directory is ``STORAGE/NAME`` in Ray Tune's layout, plus
``spec.yaml`` (the effective spec, from which a resume rebuilds the trainable).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onlinenorm.constants import SPEC_FILE
from sweeps.spec import SweepSpec, parse_spec
from sweeps.status import format_counts
from sweeps.trainable import make_trainable

DEFAULT_STORAGE = "results"
# Checkpoints kept per trial. Ray snapshots the experiment state whenever a trial has checkpointed
# this many times since the last snapshot, so the state always names a checkpoint still on disk.
CHECKPOINTS_KEPT = 2
CLIENT_ATTEMPTS = 3  # connections tried through Ray Client (ray://), CLIENT_RETRY_WAIT_S apart
CLIENT_RETRY_WAIT_S = 5.0
UNFINISHED = "UNFINISHED"  # a trial left running or pending when the sweep was stopped (Ctrl-C)


class ExperimentError(ValueError):
    """The experiment directory cannot be used as asked (exists already, or holds no sweep)."""


@dataclass(frozen=True)
class SweepOutcome:
    """What :func:`run_sweep` and :func:`resume_sweep` return: where a finished (or stopped) sweep is, its
    trial counts by state, and Ray Tune's ``ResultGrid``.

    Attributes:
        name: the experiment's name, the last part of ``path``.
        path: the experiment directory, ``STORAGE/NAME`` (an absolute local path or a storage URI).
        counts: the number of trials in each state, states with no trial left out: ``"TERMINATED"``
            (finished), ``"DIVERGED"`` (finished, but the run reported ``diverged``), ``"ERROR"`` (errored
            out of its retries) and ``"UNFINISHED"`` (left running or pending when the sweep was stopped).
        results: Ray Tune's ``ResultGrid`` of the run (not part of the repr or of equality). Default: ``None``
    """

    name: str
    path: str
    counts: dict[str, int]
    results: Any = field(default=None, repr=False, compare=False)  # ray.tune.ResultGrid

    @property
    def failed(self) -> bool:
        """Some trial errored out of its retries, or the sweep was stopped before the end."""
        return self.counts.get("ERROR", 0) + self.counts.get(UNFINISHED, 0) > 0

    def summary(self) -> str:
        """The one line printed at the end: the counts, the place, and the command that charts (or resumes) it."""
        then = (
            f"continue it with: onlinenorm sweep resume {self.path}"
            if self.counts.get(UNFINISHED)
            else f"chart them with: onlinenorm report {self.path}"
        )
        return f"sweep {self.name}: {format_counts(self.counts)}; results in {self.path}; {then}"


def experiment_path(storage: str | None, name: str) -> str:
    """``STORAGE/NAME``, with a local storage made absolute (Ray wants absolute paths)."""
    storage = storage or DEFAULT_STORAGE
    if "://" in storage:
        return child(storage, name)
    return str(Path(storage).expanduser().absolute() / name)


def child(path: str, name: str) -> str:
    """``PATH/NAME``; for a URI with a query (``s3://bucket/x?endpoint_override=...``) the query stays last."""
    location, mark, query = path.partition("?")
    return f"{location.rstrip('/')}/{name}{mark}{query}"


def split_path(path: str) -> tuple[str, str]:
    """(parent, name) of a folder or URI, a URI's query kept on the parent: the inverse of :func:`child`."""
    location, mark, query = path.partition("?")
    parent, _, name = location.rstrip("/").rpartition("/")
    return f"{parent}{mark}{query}", name


def _filesystem(path: str):
    """(pyarrow filesystem, path within it) for a local path or a storage URI."""
    import pyarrow.fs

    if "://" in path:
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), path


def _read_text(path: str) -> str | None:
    import pyarrow.fs

    fs, inner = _filesystem(path)
    if fs.get_file_info(inner).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(inner) as stream:
        return stream.read().decode()


def _write_text(path: str, text: str) -> None:
    fs, inner = _filesystem(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as stream:
        stream.write(text.encode())


def _exists(path: str) -> bool:
    import pyarrow.fs

    fs, inner = _filesystem(path)
    return fs.get_file_info(inner).type != pyarrow.fs.FileType.NotFound


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Ray for the sweep: the instance already initialized in this process, else an embedded one
    sized to the machine (``address=None``) or the cluster at ``address`` (shut down afterwards).

    First stops what is left of embedded instances whose driver was killed (:mod:`sweeps.embedded`)."""
    import ray

    from sweeps.embedded import forget_embedded, reap_orphans, start_embedded

    stopped = reap_orphans()
    if stopped:
        print(f"stopped {stopped} processes of the local Ray of a sweep driver that was killed")
    if ray.is_initialized():
        yield
        return
    if address is None:
        start_embedded(include_dashboard=False, configure_logging=False)
    else:
        _connect(address)
    try:
        yield
    finally:
        ray.shutdown()
        if address is None:
            forget_embedded()


def _connect(address: str, attempts: int = CLIENT_ATTEMPTS, wait_s: float = CLIENT_RETRY_WAIT_S) -> None:
    """``ray.init(address)``; through Ray Client (``ray://``), tried ``attempts`` times.

    Ray Client's head starts a server process for each client it accepts; on a loaded head that start
    fails now and then ("Starting Ray client server failed"), and a new connection usually succeeds.
    """
    import ray

    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, include_dashboard=False, configure_logging=False)
            return
        except ConnectionAbortedError as err:
            if not address.startswith("ray://") or attempt == attempts:
                raise
            reason = str(err).strip().splitlines()[-1]
            print(f"Ray Client: {reason}; connecting again ({attempt + 1}/{attempts})", file=sys.stderr, flush=True)
            ray.shutdown()
            time.sleep(wait_s)


def _scheduler(spec: SweepSpec):
    if spec.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    settings = spec.scheduler
    return ASHAScheduler(
        time_attr="epoch",
        metric=settings.metric,
        mode=settings.mode,
        max_t=max(t["epochs"] for t in spec.trials),
        grace_period=settings.grace_period,
        reduction_factor=settings.reduction_factor,
    )


def _tuner(spec: SweepSpec, storage_path: str, name: str, verbose: int, callbacks: list):
    from ray import tune

    from sweeps.callbacks import tracking_callbacks
    from sweeps.progress import settings
    from sweeps.searchers import tune_search

    param_space, search = tune_search(spec)
    shown = settings(verbose, spec.swept_keys, spec.max_failures)
    return tune.Tuner(
        make_trainable(spec.synthetic, spec.cpu, spec.gpu),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            **search,
            scheduler=_scheduler(spec),
            max_concurrent_trials=spec.max_concurrent or None,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            verbose=shown["verbose"],
            progress_reporter=shown["progress_reporter"],
            callbacks=tracking_callbacks(name, spec.tracking) + callbacks + shown["callbacks"],
        ),
    )


def _outcome(name: str, path: str, results) -> SweepOutcome:
    """Counts from a ``ResultGrid``; trials neither terminated nor errored were interrupted."""
    diverged = sum(1 for result in results if result.error is None and (result.metrics or {}).get("diverged"))
    counts = {
        "TERMINATED": results.num_terminated - diverged,
        "DIVERGED": diverged,
        "ERROR": results.num_errors,
        UNFINISHED: len(results) - results.num_terminated - results.num_errors,
    }
    return SweepOutcome(name, path, {state: n for state, n in counts.items() if n}, results)


def _prepare(spec: SweepSpec) -> None:
    from sweeps.prepare import prepare_on_every_node

    for line in prepare_on_every_node(spec.data_config, spec.synthetic):
        print(f"data ready on {line}")


@contextlib.contextmanager
def _sole_driver(path: str) -> Iterator[None]:
    """This process alone drives the experiment at ``path`` (:func:`sweeps.lock.experiment_lock`)."""
    from sweeps.lock import ExperimentBusyError, experiment_lock

    try:
        with experiment_lock(path):
            yield
    except ExperimentBusyError as err:
        raise ExperimentError(str(err)) from None


def run_sweep(
    spec: SweepSpec,
    *,
    address: str | None = None,
    storage: str | None = None,
    verbose: int = 1,
    callbacks: list | None = None,
) -> SweepOutcome:
    """Run every trial of ``spec`` to the end in ``STORAGE/<spec name>``, which must not exist yet.

    Connects to Ray (:func:`connected`), prepares the data on every node, writes the effective spec to
    ``spec.yaml`` in the experiment directory, then fits one ``tune.Tuner`` over the spec's trials, holding
    the experiment's lock (:mod:`sweeps.lock`) throughout.

    Args:
        spec: the checked sweep spec, as :func:`sweeps.spec.load_spec` returns it; its ``name`` names the
            experiment directory.
        address: the Ray cluster to run on (a ``ray://`` address is tried up to 3 times through Ray
            Client), or ``None`` for an embedded Ray sized to this machine. A Ray instance already
            initialized in this process is used as it is, whatever ``address`` says; one this call started
            or connected to is shut down at the end. Default: ``None``
        storage: the folder or storage URI (``s3://...``) that holds the experiment directory; a local path
            is made absolute. Default: ``None``, which means ``results``
        verbose: 0 prints nothing, 1 a status table and one line per trial event, 2 Ray Tune's own output
            (:mod:`sweeps.progress`). Default: 1
        callbacks: more Ray Tune callbacks, run after the spec's trackers (:mod:`sweeps.callbacks`).
            Default: ``None``

    Returns:
        A :class:`SweepOutcome`: the experiment directory, the trial counts by state and the ``ResultGrid``;
        trials left running or pending when the sweep was stopped (Ctrl-C) count as ``"UNFINISHED"``.

    Raises:
        ExperimentError: the experiment directory exists already (resume it with
            ``onlinenorm sweep resume``), or another driver holds its lock.
    """
    name = spec.name
    path = experiment_path(storage, name)
    with _sole_driver(path):
        if _exists(path):
            raise ExperimentError(
                f"{path} already exists; continue it with `onlinenorm sweep resume {path}` or pass another --name"
            )
        from sweeps.progress import output

        storage_path = split_path(path)[0]
        with connected(address):
            _prepare(spec)
            _write_text(child(path, SPEC_FILE), spec.to_yaml())
            with output(verbose):
                results = _tuner(spec, storage_path, name, verbose, callbacks or []).fit()
    return _outcome(name, path, results)


def read_experiment_spec(path: str) -> SweepSpec:
    """The spec saved in an experiment directory, checked again."""
    text = _read_text(child(path, SPEC_FILE))
    if text is None:
        raise ExperimentError(
            f"{path} holds no {SPEC_FILE}; pass an experiment directory written by `onlinenorm sweep run`"
        )
    from onlinenorm.training.yaml12 import load_yaml

    return parse_spec(load_yaml(text), child(path, SPEC_FILE))


def _show_progress(tuner, spec: SweepSpec, verbose: int) -> None:
    """Give a restored tuner this invocation's output settings (the saved ones are the first run's)."""
    from sweeps.progress import TrialEvents, settings

    if tuner._local_tuner is None:  # Ray Client: the run config lives on the cluster
        return
    run_config = tuner._local_tuner.get_run_config()
    shown = settings(verbose, spec.swept_keys, spec.max_failures)
    run_config.verbose = shown["verbose"]
    run_config.progress_reporter = shown["progress_reporter"]
    kept = [callback for callback in run_config.callbacks or [] if not isinstance(callback, TrialEvents)]
    run_config.callbacks = kept + shown["callbacks"]


def resume_sweep(
    path: str, *, address: str | None = None, retry_errored: bool = False, verbose: int = 1
) -> SweepOutcome:
    """Continue the interrupted sweep at ``path``: finished trials are kept, unfinished ones go on from
    their latest checkpoints; ``retry_errored`` also resumes trials that ran out of retries.
    ``verbose`` as in :func:`run_sweep`."""
    from ray import tune

    from sweeps.progress import output, quiet_restore
    from sweeps.searchers import tune_search

    path = path if "://" in path else str(Path(path).expanduser().absolute())
    spec = read_experiment_spec(path)
    if not tune.Tuner.can_restore(path):
        raise ExperimentError(
            f"{path} holds no Ray Tune experiment state to resume; start it with `onlinenorm sweep run`"
        )
    with _sole_driver(path), connected(address):
        _prepare(spec)
        with quiet_restore():
            tuner = tune.Tuner.restore(
                path,
                trainable=make_trainable(spec.synthetic, spec.cpu, spec.gpu),
                resume_unfinished=True,
                resume_errored=retry_errored,
                param_space=tune_search(spec)[0],
            )
        _show_progress(tuner, spec, verbose)
        with output(verbose):
            results = tuner.fit()
    return _outcome(split_path(path)[1], path, results)
