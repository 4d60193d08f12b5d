"""Write experiment directories in Ray Tune 2.60's layout, without Ray.

The layout was taken from a real ``tune.Tuner`` run (function trainable,
``tune.report(metrics, checkpoint=...)``, ``RunConfig(storage_path, name)``):

    <experiment>/tuner.pkl, basic-variant-state-<date>.json (a pickle),
    experiment_state-<date>.json  {"trial_data": [[meta_json, runtime_json]], ...}
    <experiment>/<trainable>_<id>_<index>_<tag>_<date>/
        params.json, params.pkl, result.json (one JSON object per report),
        progress.csv, events.out.tfevents.*, checkpoint_00000N/, and for an
        errored trial error.txt + error.pkl. A pending trial is an empty directory.

Quirks reproduced on purpose: every result.json row of a function trainable
says ``"done": false`` (only experiment_state knows a trial TERMINATED), and
an interrupted sweep leaves its trials RUNNING in experiment_state.

``standard_experiment`` is the fixture the analysis tests assert against; its
numbers are chosen so the expected values can be worked out by hand (see the
docstring there).
"""

from __future__ import annotations

import csv
import json
import math
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path

DATE = "2026-01-01_12-00-00"
TRAINABLE = "train_run"
LAYERS = ("stem.norm", "layer1.0.norm1", "layer1.0.norm2")  # model order, not sorted
EPOCHS = 3
SPEC_TEXT = "name: sweep_a\ngrid:\n  clamp_value: [1.0, 2.0]\n  alpha_fwd: [0.99, 0.999]\n"


@dataclass
class FakeTrial:
    """One trial: its config, the metric rows it reported, and how it ended."""

    config: dict
    rows: list[dict]
    status: str = "TERMINATED"  # Ray's status in experiment_state
    error: str | None = None
    truncated_tail: bool = False  # a half-written last line, as while running
    extra_files: dict[str, str] = field(default_factory=dict)


def config(norm="online", ecm="ac", clamp_value=1.0, alpha_fwd=0.999, alpha_bkw=0.99, seed=0):
    return {
        "dataset": "synth",
        "model": "resnet8",
        "norm": norm,
        "ecm": ecm,
        "alpha_fwd": alpha_fwd,
        "alpha_bkw": alpha_bkw,
        "clamp_value": clamp_value,
        "lr": 0.1,
        "epochs": EPOCHS,
        "batch_size": 32,
        "seed": seed,
    }


def rows(val_accs, layer_fractions=None, diverged_at=None, unclamped=None, steady_fractions=False):
    """Metric rows: val_loss = 1.5 - val_acc, val_acc_unclamped = val_acc - 0.005
    (or the constant ``unclamped``), layer clamp fraction = layer_fractions[layer] / epoch
    (``steady_fractions``: the same every epoch), clamp_fraction = their mean."""
    out = []
    for epoch, acc in enumerate(val_accs, start=1):
        row = {
            "epoch": epoch,
            "train_loss": 1.2 - 0.1 * epoch,
            "train_acc": 0.4 + 0.1 * epoch,
            "val_loss": float("nan") if epoch == diverged_at else 1.5 - acc,
            "val_acc": acc,
            "val_acc_unclamped": acc - 0.005 if unclamped is None else unclamped,
        }
        if layer_fractions is not None:
            per_layer = {
                name: f if steady_fractions else f / epoch for name, f in zip(LAYERS, layer_fractions, strict=False)
            }
            row["clamp_fraction"] = sum(per_layer.values()) / len(per_layer)
            row.update({f"clamp_fraction/{name}": v for name, v in per_layer.items()})
        row.update({"samples_per_s": 1000.0, "lr": 0.1 if epoch < 3 else 0.01, "diverged": epoch == diverged_at})
        out.append(row)
    return out


def grid_accuracy(clamp_value, alpha_fwd, alpha_bkw, seed):
    """Best val_acc of a grid trial: 0.60 +0.02 (c=2) +0.03 (a_f=0.999) +0.01 (a_b=0.99) +-0.01 (seed 0/1)."""
    return (
        0.60
        + 0.02 * (clamp_value == 2.0)
        + 0.03 * (alpha_fwd == 0.999)
        + 0.01 * (alpha_bkw == 0.99)
        + (0.01 if seed == 0 else -0.01)
    )


def curve(best):
    """Three epochs peaking at epoch 2: [best - 0.10, best, best - 0.05]."""
    return [best - 0.10, best, best - 0.05]


CLAMP_LAYER_FRACTIONS = {
    1.0: (0.3, 0.2, 0.1),
    2.0: (0.06, 0.04, 0.02),
    3.0: (0.006, 0.004, 0.002),
    8.0: (0.0, 0.0, 0.0),
}


def standard_experiment(root: Path, name: str = "sweep_a") -> Path:
    """24 trials covering every state, seeds and baselines.

    - grid: online/ac, clamp_value {1, 2} x alpha_fwd {0.99, 0.999} x alpha_bkw {0.9, 0.99}
      x seed {0, 1}, finished, val_acc = curve(grid_accuracy(...));
      layer clamp fractions CLAMP_LAYER_FRACTIONS[c] / epoch;
    - baselines (finished): batch seeds 0/1 best 0.66/0.64 (no clamp metrics; config
      clamp_value 5.0 that must be ignored), online/ls seeds 0/1 best 0.65/0.63
      (clamp fractions reported as 0);
    - online/ac c=3, a_f=0.999, a_b=0.99: seed 0 running (1 epoch, val_acc 0.5, a half
      written last line), seed 1 errored (1 epoch, val_acc 0.4, error files);
    - online/ac c=8: seed 0 diverged (val_acc [0.3, 0.1], NaN loss at epoch 2),
      seed 1 pending (empty directory).
    """
    trials = []
    for c in (1.0, 2.0):
        for a_f in (0.99, 0.999):
            for a_b in (0.9, 0.99):
                for seed in (0, 1):
                    best = grid_accuracy(c, a_f, a_b, seed)
                    trials.append(
                        FakeTrial(
                            config(clamp_value=c, alpha_fwd=a_f, alpha_bkw=a_b, seed=seed),
                            rows(curve(best), CLAMP_LAYER_FRACTIONS[c]),
                        )
                    )
    for seed, best in ((0, 0.66), (1, 0.64)):
        trials.append(FakeTrial(config(norm="batch", ecm="none", clamp_value=5.0, seed=seed), rows(curve(best))))
    for seed, best in ((0, 0.65), (1, 0.63)):
        trials.append(FakeTrial(config(ecm="ls", seed=seed), rows(curve(best), (0.0, 0.0, 0.0))))
    trials.append(
        FakeTrial(
            config(clamp_value=3.0, seed=0),
            rows([0.5], CLAMP_LAYER_FRACTIONS[3.0]),
            status="RUNNING",
            truncated_tail=True,
        )
    )
    trials.append(
        FakeTrial(
            config(clamp_value=3.0, seed=1),
            rows([0.4], CLAMP_LAYER_FRACTIONS[3.0]),
            status="ERROR",
            error="RuntimeError: CUDA out of memory",
        )
    )
    trials.append(
        FakeTrial(config(clamp_value=8.0, seed=0), rows([0.3, 0.1], CLAMP_LAYER_FRACTIONS[8.0], diverged_at=2))
    )
    trials.append(FakeTrial(config(clamp_value=8.0, seed=1), [], status="PENDING"))
    return write_experiment(root / name, trials, spec_text=SPEC_TEXT)


PLANTED_EPOCHS = 5
PLANTED_SEEDS = (0, 1, 2, 3)
BATCH_CURVE = (0.50, 0.82, 0.86, 0.88, 0.90)  # + 0.002 * seed: final 0.900..0.906, median 0.903
LAYER_SCALING_CURVE = (0.20, 0.50, 0.70, 0.83, 0.895)  # + 0.002 * seed
PLANTED_RATIOS = {1.0: (1, 1, 1), 2.0: (1, 1, 1), 3.0: (1, 3, 5), 5.0: (2, 2, 2), 8.0: (1, 1, 1)}
PLANTED_REFERENCE = """name: planted
reference:
  source: "Planted figures"
  results:
    - {norm: batch, val_acc: 0.903}
    - {norm: online, ecm: ls, val_acc: 0.95}
    - {norm: group, val_acc: 0.9}
"""


def planted_experiment(root: Path, name: str = "planted") -> Path:
    """Planted effects, one decay-factor pair (0.999, 0.99), seeds 0-3, 5 epochs, every curve
    rising to its last epoch (best = final), each trial's values + 0.002 * seed:

    - batch norm: BATCH_CURVE; layer scaling: LAYER_SCALING_CURVE (final 0.5 points below batch
      norm: equivalent; reaches 90% of batch norm's final accuracy at epoch 4, 95% at epoch 5,
      where batch norm needs 2 and 3);
    - clamping c=3: BATCH_CURVE exactly (equivalent to batch norm by construction);
    - c=2: BATCH_CURVE - 0.02 (2 points worse);
    - c=1: BATCH_CURVE - 0.005, but val_acc_unclamped 0.20 (removing the clamp collapses it);
    - c=5: BATCH_CURVE, except seed 3 which fails to learn (0.10 .. 0.15);
    - c=8: seed 0 only, BATCH_CURVE - 0.03 (a single run);
    - c=3 seed 4: stopped by the scheduler after epoch 1 at 0.99 (must be left out);
    - clamp fractions steady over epochs at PLANTED_RATIOS[c][layer] * erfc(c / sqrt 2)
      (c=3: 1x, 3x, 5x by depth, 3x overall);
    - spec.yaml: PLANTED_REFERENCE (batch norm's published figure its mean; layer scaling's 5.5
      points above it; a group-norm entry no trial matches).
    """
    from math import erfc, sqrt

    def trial(curve, offset, seed, norm="online", ecm="ac", c=1.0, unclamped=None, epochs=PLANTED_EPOCHS):
        fractions = None if ecm != "ac" else tuple(r * erfc(c / sqrt(2)) for r in PLANTED_RATIOS[c])
        accs = [a + offset + 0.002 * seed for a in curve]
        return FakeTrial(
            config(norm=norm, ecm=ecm, clamp_value=c, seed=seed) | {"epochs": epochs},
            rows(accs, fractions, unclamped=unclamped, steady_fractions=True),
        )

    trials = []
    for seed in PLANTED_SEEDS:
        trials += [
            trial(BATCH_CURVE, 0.0, seed, norm="batch", ecm="none", c=5.0),
            trial(LAYER_SCALING_CURVE, 0.0, seed, ecm="ls", c=5.0),
            trial(BATCH_CURVE, 0.0, seed, c=3.0),
            trial(BATCH_CURVE, -0.02, seed, c=2.0),
            trial(BATCH_CURVE, -0.005, seed, c=1.0, unclamped=0.20),
            trial((0.10, 0.12, 0.15, 0.15, 0.15) if seed == 3 else BATCH_CURVE, 0.0, seed, c=5.0),
        ]
    trials.append(trial(BATCH_CURVE, -0.03, 0, c=8.0))
    trials.append(trial((0.99,), 0.0, 4, c=3.0))  # stopped: 1 of 5 epochs, TERMINATED
    return write_experiment(root / name, trials, spec_text=PLANTED_REFERENCE)


def grid_experiment(root: Path, name: str = "grid") -> Path:
    """The standard experiment's balanced clamping grid alone (finished, accuracy
    ``grid_accuracy``): clamp value, alpha_fwd, alpha_bkw and seed explain 4/18, 9/18,
    1/18 and 4/18 of the variance of best accuracy."""
    trials = [
        FakeTrial(
            config(clamp_value=c, alpha_fwd=a_f, alpha_bkw=a_b, seed=seed),
            rows(curve(grid_accuracy(c, a_f, a_b, seed))),
        )
        for c in (1.0, 2.0)
        for a_f in (0.99, 0.999)
        for a_b in (0.9, 0.99)
        for seed in (0, 1)
    ]
    return write_experiment(root / name, trials)


def many_trials_experiment(root: Path, n_trials: int, name: str = "big_sweep", epochs: int = 30) -> Path:
    """A large finished sweep for timing: a clamp x decay grid repeated over seeds."""
    clamps, alphas_f, alphas_b = (0.5, 1.0, 2.0, 3.0, 5.0), (0.99, 0.995, 0.999), (0.9, 0.99)
    trials = []
    for i in range(n_trials):
        c, a_f, a_b = clamps[i % 5], alphas_f[i // 5 % 3], alphas_b[i // 15 % 2]
        best = grid_accuracy(c, a_f, a_b, i // 30 % 2) + 0.001 * (i % 7)
        accs = [best * min(1.0, (e + 1) / (0.8 * epochs)) for e in range(epochs)]
        fractions = tuple(f / (1 + c * c) for f in (0.2, 0.1, 0.05))
        cfg = config(clamp_value=c, alpha_fwd=a_f, alpha_bkw=a_b, seed=i // 30) | {"epochs": epochs}
        trials.append(FakeTrial(cfg, rows(accs, fractions)))
    return write_experiment(root / name, trials)


ONE_PAIR_CLAMPS = (0.5, 1.0, 2.0, 3.0, 5.0)
ONE_PAIR_ALPHAS = (1 - 2.0**-10, 1 - 2.0**-7)  # the CIFAR-10 recipe's decay factors


def one_decay_pair_experiment(root: Path, name: str = "one_pair", epochs: int = 6) -> Path:
    """A study like a user's first real sweep: one decay-factor pair, clamp values
    ONE_PAIR_CLAMPS, batch-norm and layer-scaling baselines, seeds 0 and 1.

    best val_acc = 0.90 + 0.01 c (c < 5) - 0.01 seed; removing the clamp
    collapses accuracy to 0.2 at c <= 1; layer fractions erfc(c/sqrt 2) x (2, 1, 0.5).
    """
    a_f, a_b = ONE_PAIR_ALPHAS
    trials = []
    for seed in (0, 1):
        for c in ONE_PAIR_CLAMPS:
            best = 0.90 + 0.01 * min(c, 4.0) - 0.01 * seed
            accs = [best * min(1.0, (e + 1) / (0.7 * epochs)) for e in range(epochs)]
            gaussian = math.erfc(c / math.sqrt(2))
            rows_ = rows(accs, (2 * gaussian, gaussian, 0.5 * gaussian))
            if c <= 1:
                rows_ = [r | {"val_acc_unclamped": 0.2} for r in rows_]
            trials.append(
                FakeTrial(config(clamp_value=c, alpha_fwd=a_f, alpha_bkw=a_b, seed=seed) | {"epochs": epochs}, rows_)
            )
        for norm, ecm, best in (("batch", "none", 0.95), ("online", "ls", 0.94)):
            accs = [(best - 0.01 * seed) * min(1.0, (e + 1) / (0.5 * epochs)) for e in range(epochs)]
            fractions = (0.0, 0.0, 0.0) if norm == "online" else None
            trials.append(
                FakeTrial(
                    config(norm=norm, ecm=ecm, alpha_fwd=a_f, alpha_bkw=a_b, seed=seed) | {"epochs": epochs},
                    rows(accs, fractions),
                )
            )
    return write_experiment(
        root / name, trials, spec_text=f"name: {name}\ngrid:\n  clamp_value: {list(ONE_PAIR_CLAMPS)}\n"
    )


SAMPLED_SPEC = (
    "name: sampled\nsearch: {type: random, num_samples: 12, seed: 0}\nspace:\n"
    "  clamp_value: {loguniform: [0.5, 8]}\n  alpha_fwd: {decay: [0.99, 0.9999]}\n"
    "  alpha_bkw: {decay: [0.9, 0.999]}\ngrid: {seed: [0, 1]}\n"
)


def sampled_experiment(root: Path, name: str = "sampled", points: int = 12) -> Path:
    """A random search: ``points`` sampled (c, alpha_fwd, alpha_bkw), each run with seeds 0 and 1,
    and SAMPLED_SPEC as its spec; best val_acc = 0.8 + 0.02 log2(c) - 0.01 seed."""
    rng = random.Random(0)
    trials = []
    for _ in range(points):
        c = math.exp(rng.uniform(math.log(0.5), math.log(8)))
        a_f = 1 - math.exp(rng.uniform(math.log(1e-4), math.log(1e-2)))
        a_b = 1 - math.exp(rng.uniform(math.log(1e-3), math.log(1e-1)))
        for seed in (0, 1):
            best = 0.8 + 0.02 * math.log2(c) - 0.01 * seed
            gaussian = math.erfc(c / math.sqrt(2))
            trials.append(
                FakeTrial(
                    config(clamp_value=c, alpha_fwd=a_f, alpha_bkw=a_b, seed=seed),
                    rows(curve(best), (2 * gaussian, gaussian, 0.5 * gaussian)),
                )
            )
    return write_experiment(root / name, trials, spec_text=SAMPLED_SPEC)


def write_experiment(path: Path, trials: list[FakeTrial], spec_text: str | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "tuner.pkl").write_bytes(pickle.dumps({"fake": "tuner"}))
    (path / f"basic-variant-state-{DATE}.json").write_bytes(pickle.dumps({"fake": "searcher"}))
    (path / ".validate_storage_marker").touch()
    if spec_text is not None:
        (path / "spec.yaml").write_text(spec_text)
    trial_data = [_write_trial(path, index, trial) for index, trial in enumerate(trials)]
    state = {"trial_data": trial_data, "runner_data": {"_iteration": 1}, "stats": {"start_time": 0.0}}
    (path / f"experiment_state-{DATE}.json").write_text(json.dumps(state, indent=2))
    return path


def _write_trial(exp_dir: Path, index: int, trial: FakeTrial) -> list[str]:
    trial_id = f"abcde_{index:05d}"
    tag = ",".join(f"{key}={trial.config[key]}" for key in ("clamp_value", "norm") if key in trial.config)
    tag = f"{index}_{tag}"
    relative = f"{TRAINABLE}_{trial_id}_{tag}_{DATE}"
    directory = exp_dir / relative
    directory.mkdir()
    results = [_ray_row(row, trial, trial_id, i) for i, row in enumerate(trial.rows, start=1)]
    if trial.status != "PENDING":
        (directory / "params.json").write_text(json.dumps(trial.config, indent=2, sort_keys=True))
        (directory / "params.pkl").write_bytes(pickle.dumps(trial.config))
        (directory / f"events.out.tfevents.1767268800.{index}").write_bytes(b"\x00")
        lines = [json.dumps(r) for r in results]
        tail = '{"epoch": 2, "train_lo' if trial.truncated_tail else ""
        (directory / "result.json").write_text("".join(line + "\n" for line in lines) + tail)
        _write_progress_csv(directory / "progress.csv", results)
        for i in range(len(results)):
            (directory / f"checkpoint_{i:06d}").mkdir()
            (directory / f"checkpoint_{i:06d}" / "state.pt").write_bytes(b"fake")
    if trial.error:
        (directory / "error.txt").write_text(
            f"Failure # 1 (occurred at {DATE})\nTraceback (most recent call last):\n  ...\n{trial.error}\n"
        )
        (directory / "error.pkl").write_bytes(pickle.dumps(trial.error))
    for name, text in trial.extra_files.items():
        (directory / name).write_text(text)
    meta = {
        "stub": False,
        "trainable_name": TRAINABLE,
        "trial_id": trial_id,
        "config": trial.config,
        "experiment_tag": tag,
        "status": trial.status,
        "relative_logdir": relative,
    }
    last = dict(results[-1], done=trial.status == "TERMINATED") if results else None
    runtime = {
        "num_failures": int(trial.error is not None),
        "error_filename": "error.txt" if trial.error else None,
        "pickled_error_filename": "error.pkl" if trial.error else None,
        "last_result": last,
    }
    return [json.dumps(meta), json.dumps(runtime)]


def _ray_row(row: dict, trial: FakeTrial, trial_id: str, iteration: int) -> dict:
    return row | {
        "timestamp": 1767268800 + iteration,
        "checkpoint_dir_name": f"checkpoint_{iteration - 1:06d}",
        "should_checkpoint": True,
        "done": False,
        "training_iteration": iteration,
        "trial_id": trial_id,
        "date": DATE,
        "time_this_iter_s": 2.0,
        "time_total_s": 2.0 * iteration,
        "pid": 1234,
        "hostname": "node",
        "node_ip": "10.0.0.1",
        "config": trial.config,
        "time_since_restore": 2.0 * iteration,
        "iterations_since_restore": iteration,
    }


def _write_progress_csv(path: Path, results: list[dict]) -> None:
    fields = [k for k in results[0] if k != "config"] if results else []
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
