"""``onlinenorm train``: one training run from a config file and/or flags.

Writes ``OUT/config.json`` (the resolved config), ``OUT/metrics.jsonl`` (one
JSON object per epoch) and ``OUT/checkpoints/epoch_NNNN/`` (the latest epoch).
``--resume`` continues the run in ``OUT`` from its latest checkpoint. ``--config``
takes YAML or JSON, including the ``config.json`` a run writes and a sweep
trial's ``params.json``. Nothing is written until the data is open, the model
built and any checkpoint restored.
"""

from __future__ import annotations

import argparse
from typing import Any

from onlinenorm.cli import add_command
from onlinenorm.constants import DATASETS, ECMS, KERNEL_CHOICES, METRICS, MODELS, NORMS, RUN_CONFIG_FILE

# The config keys most runs set, as flags: config key -> (type, help). --set KEY=VALUE reaches every other key.
FLAGS = {
    "dataset": (str, ", ".join(DATASETS)),
    "data_dir": (str, "dataset folder (default data/<dataset>)"),
    "model": (str, f"{', '.join(MODELS)} (default: the dataset's recipe)"),
    "norm": (str, ", ".join(NORMS)),
    "ecm": (str, f"online norm error compensation: {', '.join(ECMS)} (default: the dataset's recipe)"),
    "alpha_fwd": (float, "online norm forward decay (default: the dataset's recipe)"),
    "alpha_bkw": (float, "online norm backward decay (default: the dataset's recipe)"),
    "clamp_value": (float, "activation clamp c for ecm=ac"),
    "epochs": (int, "training epochs (default: the dataset's recipe)"),
    "batch_size": (int, "training batch size (default: the dataset's recipe)"),
    "lr": (float, "SGD learning rate"),
    "seed": (int, "seed of initialization, order and augmentation"),
    "device": (str, "auto, cpu, cuda or cuda:N"),
    "threads": (int, "torch CPU threads"),
    "kernels": (str, f"online norm kernels: {', '.join(KERNEL_CHOICES)} (default auto: the fastest that builds here)"),
}
FLAG_METAVARS = {"data_dir": "DIR", "device": "DEVICE"}
CONFIG_FILE = RUN_CONFIG_FILE
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
# The metrics of each epoch's summary line, after ``epoch E/EPOCHS`` (the lr is not shown; a diverged
# epoch ends the line with DIVERGED).
SUMMARY_METRICS = tuple(k for k in METRICS if k not in ("epoch", "lr", "diverged"))


def register(subparsers) -> None:
    train = add_command(subparsers, "train", run_train)
    train.add_argument(
        "--config",
        metavar="FILE",
        help="YAML or JSON mapping of config keys (a run's config.json or a trial's params.json too)",
    )
    for key, (kind, text) in FLAGS.items():
        train.add_argument(
            f"--{key.replace('_', '-')}",
            dest=key,
            type=kind,
            metavar=FLAG_METAVARS.get(key, {int: "N", float: "X"}.get(kind, "NAME")),
            help=text,
        )
    train.add_argument("--download", action="store_const", const=True, help="fetch CIFAR if missing")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other config key (see `onlinenorm config show`); VALUE is parsed as YAML (repeatable)",
    )
    train.add_argument("--out", required=True, metavar="DIR", help="run folder for metrics and checkpoints")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def _parse_sets(items: list[str]) -> dict[str, Any]:
    from onlinenorm.cli import UsageError
    from onlinenorm.training.config import parse_assignment

    try:
        return dict(parse_assignment(item) for item in items)
    except ValueError as err:
        raise UsageError(f"--set {err}") from None


def read_config(path: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The resolved config of file ``path`` (or none) updated by ``overrides``; UsageError when invalid."""
    from onlinenorm.cli import UsageError
    from onlinenorm.training.config import validate_config
    from onlinenorm.training.yaml12 import YAMLError, load_yaml

    config: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path) as f:
                config = load_yaml(f) or {}
        except (OSError, YAMLError) as err:
            raise UsageError(f"cannot read config {path}: {err}") from None
        if not isinstance(config, dict):
            raise UsageError(f"config {path} must be a mapping of keys to values, found {type(config).__name__}")
    config.update(overrides)
    try:
        return validate_config(config)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _latest_checkpoint(out):
    folders = sorted((out / CHECKPOINTS).glob("epoch_*"))
    return folders[-1] if folders else None


def run_train(args: argparse.Namespace) -> int:
    """One training run (writes metrics.jsonl and checkpoints).

    Train one model. Values come from --config, then flags, then --set; unset keys take the dataset's published
    recipe. `onlinenorm config show --dataset NAME` lists every key, its default, the recipe's value and the allowed
    values.
    """
    import json
    from pathlib import Path

    from onlinenorm.cli import UsageError

    out = Path(args.out)
    metrics_path = out / METRICS_FILE
    overrides = {key: getattr(args, key) for key in FLAGS if getattr(args, key) is not None}
    if args.download:
        overrides["download"] = True
    overrides.update(_parse_sets(args.set))
    resume_from = None
    if args.resume:
        resume_from = _latest_checkpoint(out)
        if resume_from is None or not (out / CONFIG_FILE).exists():
            raise UsageError(f"{out} holds no checkpoint to resume from; run without --resume first")
        base = json.loads((out / CONFIG_FILE).read_text())
        config = read_config(args.config, {**base, **overrides})
    else:
        if metrics_path.exists() and metrics_path.stat().st_size:
            raise UsageError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        config = read_config(args.config, overrides)

    import torch  # noqa: F401  (heavy imports only once the input is known to be good)

    from onlinenorm.training.data import DatasetError
    from onlinenorm.training.train import RunSetupError, load_checkpoint, run

    def start() -> None:
        """Called by the run once its input proved good: only now is anything written."""
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if resume_from is not None and metrics_path.exists():
            done = load_checkpoint(resume_from)["epoch"]
            lines = metrics_path.read_text().splitlines()
            kept = [line for line in lines if line and json.loads(line)["epoch"] <= done]
            metrics_path.write_text("".join(f"{line}\n" for line in kept))

    bar = _ProgressBar(config, args.quiet)

    def report(metrics: dict, checkpoint: str | None) -> None:
        with open(metrics_path, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        bar.summary(metrics)

    try:
        last = run(
            config,
            report,
            checkpoint_dir=out / CHECKPOINTS,
            resume_from=resume_from,
            on_batch=bar.update,
            on_start=start,
        )
    except (DatasetError, RunSetupError) as err:
        raise UsageError(str(err)) from None
    finally:
        bar.close()
    print(json.dumps({k: v for k, v in last.items() if not k.startswith("clamp_fraction/")}))
    return 0


class _ProgressBar:
    """A tqdm bar over each epoch's steps, with the epoch's metrics written below it."""

    def __init__(self, config: dict, quiet: bool) -> None:
        from tqdm import tqdm

        self.tqdm = tqdm
        self.epochs = config["epochs"]
        self.quiet = quiet
        self.bar = None

    def update(self, epoch: int, step: int, steps: int, loss: float) -> None:
        if self.quiet:
            return
        if self.bar is None:
            self.bar = self.tqdm(total=steps, desc=f"epoch {epoch}/{self.epochs}", unit="step", leave=False)
        self.bar.set_postfix(loss=f"{loss:.3f}")
        self.bar.update(step - self.bar.n)

    def summary(self, metrics: dict) -> None:
        self.close()
        if not self.quiet:
            text = " ".join(f"{k}={metrics[k]:.4g}" for k in SUMMARY_METRICS)
            self.tqdm.write(
                f"epoch {metrics['epoch']}/{self.epochs} {text}" + (" DIVERGED" if metrics["diverged"] else "")
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
