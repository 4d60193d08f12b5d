"""``onlinenorm bench report``: the report's stages timed on a generated experiment.

``write_experiment`` writes a finished sweep in Ray Tune 2.60's layout (the
files ``analysis.load`` reads: ``experiment_state-*.json``, and per trial
``params.json``, ``result.json`` with Ray's bookkeeping and its copy of the
config in every row, and ``progress.csv`` as Ray's CSV logger writes it),
sized like a large study: by default 1,000 trials x 100 epochs x 20
normalization layers (196 MB of result lines, 63 MB of CSV). Then
``bench_report`` times ``analysis.load``, the findings, each chart, the tables,
the Parquet export and the whole ``onlinenorm report`` command in a fresh
process, and ``format_report_bench`` prints them against the target.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

DATE = "2026-01-01_12-00-00"
CLAMP_VALUES = (0.5, 1.0, 2.0, 3.0, 5.0)
DECAY_EXPONENTS = ((10, 7), (10, 4), (7, 4), (12, 7))  # alpha = 1 - 2^-k: (forward, backward)
TARGET_S = 5.0  # the whole report for 1,000 trials x 100 epochs x 20 layers on the project's 2-core VM


def trial_configs(trials: int) -> list[dict]:
    """A clamp x decay grid over seeds, with batch-norm and layer-scaling baselines.

    One in eight trials is a baseline (batch norm, then online norm with layer
    scaling, alternating); the rest cycle through ``CLAMP_VALUES`` x
    ``DECAY_EXPONENTS``, the seed counting the passes.
    """
    base = {
        "dataset": "cifar10",
        "model": "resnet20",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 2e-4,
        "batch_size": 128,
        "eps": 1e-5,
        "ls_eps": 1e-5,
        "augment": True,
        "device": "cpu",
    }
    configs, grid = [], [(c, k) for k in DECAY_EXPONENTS for c in CLAMP_VALUES]
    baselines = clamping = 0
    for index in range(trials):
        if index % 8 == 7:
            norm, ecm = ("batch", "none") if baselines % 2 == 0 else ("online", "ls")
            c, (k_fwd, k_bkw), seed = 5.0, DECAY_EXPONENTS[0], baselines // 2
            baselines += 1
        else:
            norm, ecm = "online", "ac"
            c, (k_fwd, k_bkw) = grid[clamping % len(grid)]
            seed = clamping // len(grid)
            clamping += 1
        configs.append(
            base
            | {
                "norm": norm,
                "ecm": ecm,
                "clamp_value": c,
                "alpha_fwd": 1 - 2.0**-k_fwd,
                "alpha_bkw": 1 - 2.0**-k_bkw,
                "seed": seed,
            }
        )
    return configs


def write_experiment(path: Path, trials: int = 1000, epochs: int = 100, layers: int = 20, seed: int = 0) -> Path:
    """Write a finished sweep of ``trials`` trials into ``path`` (which must not exist); returns ``path``.

    Accuracy rises to a plateau set by the clamp value (lower for c < 2) plus
    seed noise; each layer's clamp fraction is ``erfc(c / sqrt 2)`` times a
    depth factor, decaying over epochs.
    """
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    names = [f"layer{1 + i // 6}.{i // 2 % 3}.norm{1 + i % 2}" for i in range(layers - 1)]
    names = ["norm1", *names][:layers]
    trial_data = []
    for index, config in enumerate(trial_configs(trials)):
        config = config | {"epochs": epochs}
        trial_id = f"bench_{index:05d}"
        relative = f"train_{trial_id}_{index}_clamp_value={config['clamp_value']:.4f},norm={config['norm']}_{DATE}"
        directory = path / relative
        directory.mkdir()
        (directory / "params.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        rows = _rows(config, trial_id, epochs, names, rng)
        (directory / "result.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
        with (directory / "progress.csv").open("w") as progress:  # as ray.tune.logger.CSVLoggerCallback
            writer = csv.DictWriter(progress, [key for key in rows[0] if key != "config"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        meta = {"trial_id": trial_id, "config": config, "status": "TERMINATED", "relative_logdir": relative}
        trial_data.append([json.dumps(meta), json.dumps({"last_result": rows[-1]})])
    (path / f"experiment_state-{DATE}.json").write_text(json.dumps({"trial_data": trial_data}))
    return path


def _rows(config: dict, trial_id: str, epochs: int, layer_names: list[str], rng: np.random.Generator) -> list[dict]:
    c, clamps = config["clamp_value"], config["ecm"] == "ac"
    plateau = 0.92 - (0.2 if clamps and c < 1 else 0.02 if clamps and c < 2 else 0.0) + rng.normal(0, 0.004)
    progress = 1 - np.exp(-np.arange(1, epochs + 1) / (0.15 * epochs))
    val_acc = np.clip(plateau * progress + rng.normal(0, 0.005, epochs), 0, 1)
    gaussian = math.erfc(c / math.sqrt(2)) if clamps else 0.0
    depth = 0.5 + np.arange(len(layer_names)) / len(layer_names)
    fractions = gaussian * depth[None, :] * (1 + 0.5 / np.arange(1, epochs + 1))[:, None]
    fractions = np.minimum(1.0, fractions * rng.lognormal(0, 0.1, fractions.shape))
    rows = []
    for epoch in range(1, epochs + 1):
        row = {
            "epoch": epoch,
            "train_loss": float(2.3 * (1 - progress[epoch - 1]) + 0.1 + rng.normal(0, 0.01)),
            "train_acc": float(val_acc[epoch - 1] + 0.03),
            "val_loss": float(2.0 - 1.8 * val_acc[epoch - 1]),
            "val_acc": float(val_acc[epoch - 1]),
            "val_acc_unclamped": float(val_acc[epoch - 1] - (0.5 if clamps and c < 1.5 else 0.001)),
            "samples_per_s": float(rng.normal(1500, 50)),
            "lr": 0.1,
            "diverged": False,
            "timestamp": 1767268800 + epoch,
            "checkpoint_dir_name": f"checkpoint_{epoch - 1:06d}",
            "should_checkpoint": True,
            "done": False,
            "training_iteration": epoch,
            "trial_id": trial_id,
            "date": DATE,
            "time_this_iter_s": 30.0,
            "time_total_s": 30.0 * epoch,
            "pid": 1234,
            "hostname": "node",
            "node_ip": "10.0.0.1",
            "config": config,
            "time_since_restore": 30.0 * epoch,
            "iterations_since_restore": epoch,
        }
        if config["norm"] == "online":  # the layers that clamp (or could) report their fractions
            row["clamp_fraction"] = float(fractions[epoch - 1].mean())
            row.update(
                {f"clamp_fraction/{name}": float(f) for name, f in zip(layer_names, fractions[epoch - 1], strict=False)}
            )
        rows.append(row)
    return rows


def bench_report(
    experiment: Path, out: Path, rounds: int = 3, workers: int = 2, progress=lambda message: None
) -> list[tuple[str, float, float]]:
    """(stage, median wall seconds, median CPU seconds) over ``rounds`` for
    each stage of the report of ``experiment``.

    Stages: ``onlinenorm report`` as a user runs it (a fresh process, imports
    included), then in this process ``analysis.load``, the findings (where
    this version has them), the charts drawn one after another and in
    ``workers`` processes, the tables and the Parquet export. CPU seconds
    count every thread and child process, so they show the work apart from
    what other processes on the machine take.
    """
    import matplotlib

    matplotlib.use("Agg")
    import analysis
    from analysis import charts, tables
    from analysis.parquet import export

    stages: dict[str, list[tuple[float, float]]] = {}

    def timed(stage: str, action):
        cpu, start = _cpu_seconds(), time.perf_counter()
        value = action()
        stages.setdefault(stage, []).append((time.perf_counter() - start, _cpu_seconds() - cpu))
        return value

    command = [
        sys.executable,
        "-c",
        "from onlinenorm.cli import run; run()",
        "report",
        str(experiment),
        "--out",
        str(out / "cli"),
    ]
    for round_ in range(1, rounds + 1):
        progress(f"round {round_}/{rounds}")
        timed(
            "onlinenorm report (fresh process, all stages)",
            lambda: subprocess.run(command, check=True, capture_output=True),
        )
        results = timed("analysis.load", lambda: analysis.load(experiment))
        timed("analysis.findings", partial(analysis.findings, results))
        timed("charts, one process", partial(charts.save_all, results, out / "serial", workers=1))
        timed(f"charts, {workers} processes", partial(charts.save_all, results, out / "parallel", workers=workers))
        timed("tables", partial(_tables, tables, results.trials))
        timed("Parquet export", partial(export, results, out / "parquet"))
    return [
        (stage, float(np.median([w for w, _ in runs])), float(np.median([c for _, c in runs])))
        for stage, runs in stages.items()
    ]


def _tables(tables, trials) -> list:
    """Every table of the report."""
    return [
        table(trials) for table in (tables.comparison, tables.variability, tables.sensitivity, tables.best_settings)
    ]


def _cpu_seconds() -> float:
    """User + system time of this process, its threads and its finished children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def format_report_bench(rows: list[tuple[str, float, float]], description: str) -> str:
    """One line per stage (median wall and CPU seconds), and the whole report against ``TARGET_S``."""
    width = max(len(stage) for stage, _, _ in rows)
    lines = [description, f"{'stage':<{width}}  wall s   CPU s"]
    lines += [f"{stage:<{width}}  {wall:6.2f}  {cpu:6.2f}" for stage, wall, cpu in rows]
    whole = rows[0][1]
    lines.append(f"whole report: {whole:.2f} s = {whole / TARGET_S:.2f} x the {TARGET_S:g} s target")
    return "\n".join(lines)
