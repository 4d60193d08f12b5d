"""``onlinenorm bench sweep``: what running trials through Ray Tune costs.

The same set of small trials (the demo spec, cut to a few ResNet-20 trials of
two epochs) runs twice: once one after the other in this process, and once
as a Ray Tune sweep on an embedded Ray with as many concurrent trials as the
CPUs allow. Figures:

- start-up: from the call until the sweep's first trial starts training
  (``ray.init``, data preparation, Tune's setup, the first worker process);
- parallel efficiency: the trials' times inside the sweep summed, over the
  sweep's wall time after start-up times the number of concurrent trials
  (1.0 = the concurrent slots were always busy training);
- speed-up: the sequential run's time over the sweep's whole wall time
  (what a user gains; concurrent trials share memory bandwidth, so it is
  below the concurrency even at full efficiency).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sweeps.spec import SweepSpec, load_spec

BENCH_SPEC = Path(__file__).parent / "specs" / "quick.yaml"
BENCH_OVERRIDES = (  # four trials of the demo sweep, two epochs each
    "name=bench-sweep",
    "train.epochs=2",
    "grid.alpha_fwd=[0.999]",
    "grid.clamp_value=[1, 2, 3, 5]",
    "grid.seed=[0]",
    "extra_trials=[]",
)


@dataclass(frozen=True)
class SweepBench:
    """Seconds measured by :func:`bench_sweep`."""

    sequential_s: tuple[float, ...]  # each trial, run alone in this process
    trial_s: tuple[float, ...]  # each trial inside the sweep (Ray's time_total_s)
    concurrency: int  # trials Ray ran at once
    startup_s: float
    sweep_s: float  # the sweep's wall time, start-up included
    trials: str  # what each trial trains

    @property
    def efficiency(self) -> float:
        return sum(self.trial_s) / ((self.sweep_s - self.startup_s) * self.concurrency)

    @property
    def speedup(self) -> float:
        return sum(self.sequential_s) / self.sweep_s


def bench_spec(folder: str | Path) -> SweepSpec:
    """The benchmark's trials, with their synthetic data in ``folder``."""
    return load_spec(BENCH_SPEC, [*BENCH_OVERRIDES, f"dataset.data_dir={Path(folder) / 'data'}"])


def _sequential(spec: SweepSpec, folder: Path) -> tuple[float, ...]:
    """Each trial timed on its own, checkpoints included, as a sweep trial would run it."""
    from onlinenorm.training.train import run
    from sweeps.prepare import prepare_data

    prepare_data(spec.data_config, spec.synthetic)
    times = []
    for index, config in enumerate(spec.trials):
        start = time.perf_counter()
        run(config, lambda metrics, checkpoint: None, checkpoint_dir=folder / f"sequential-{index}")
        times.append(time.perf_counter() - start)
    return tuple(times)


def _timing_callback():
    """A Tune callback noting each trial's training time and, on the driver's clock, when the first began."""
    from ray.tune import Callback

    class Timing(Callback):
        def __init__(self) -> None:
            self.first_start: float | None = None
            self.trial_s: dict[str, float] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            began = time.time() - result["time_total_s"]
            self.first_start = began if self.first_start is None else min(self.first_start, began)
            self.trial_s[trial.trial_id] = result["time_total_s"]

    return Timing()


def bench_sweep(num_cpus: int | None = None) -> SweepBench:
    """Run the benchmark trials sequentially, then as a sweep on an embedded Ray of ``num_cpus`` CPUs."""
    import ray

    from sweeps.run import run_sweep

    num_cpus = num_cpus or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="onlinenorm-bench-sweep-") as scratch:
        folder = Path(scratch)
        spec = bench_spec(folder)
        sequential = _sequential(spec, folder)
        timing = _timing_callback()
        launched = time.time()
        ray.init(
            address="local", num_cpus=num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False
        )  # embedded, even where RAY_ADDRESS names a cluster
        try:
            run_sweep(spec, storage=str(folder / "results"), verbose=0, callbacks=[timing])
        finally:
            ray.shutdown()
        finished = time.time()
    concurrency = min(len(spec.trials), int(num_cpus // spec.cpu))
    first = spec.trials[0]
    return SweepBench(
        sequential,
        tuple(timing.trial_s.values()),
        concurrency,
        timing.first_start - launched,
        finished - launched,
        f"{first['model']} on {first['dataset']}, {first['epochs']} epochs each",
    )


def format_sweep_bench(bench: SweepBench) -> str:
    """The figures as a few aligned lines."""
    trials = len(bench.sequential_s)
    return "\n".join(
        [
            f"trials                 {trials} ({bench.trials}), {bench.concurrency} at a time",
            f"sequential, in-process {sum(bench.sequential_s):7.1f} s  "
            f"({sum(bench.sequential_s) / trials:.1f} s per trial)",
            f"inside the sweep       {sum(bench.trial_s):7.1f} s  ({sum(bench.trial_s) / trials:.1f} s per trial)",
            f"Ray Tune sweep         {bench.sweep_s:7.1f} s wall",
            f"start-up overhead      {bench.startup_s:7.1f} s  (until the first trial trains)",
            f"parallel efficiency    {bench.efficiency:7.2f}    "
            f"(trial sum / ((wall - start-up) x {bench.concurrency}))",
            f"speed-up               {bench.speedup:7.2f}    (sequential / sweep wall)",
        ]
    )
