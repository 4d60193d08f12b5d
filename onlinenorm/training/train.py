"""One training run: a plain function of a config that reports once per epoch.

    run(config, report, checkpoint_dir="ckpt")

``report(metrics, checkpoint_dir_or_None)`` receives, after every epoch, the
metric row (``epoch``, ``train_loss``, ``train_acc``,
``val_loss``, ``val_acc``, ``val_acc_unclamped``, ``clamp_fraction``,
``clamp_fraction/<layer>``, ``samples_per_s``, ``lr`` (that of the epoch's last step), ``diverged``) and the
folder of that epoch's checkpoint. The run knows nothing about Ray: a sweep
passes a ``report`` that forwards to ``tune.report``.

The optimizer is SGD with momentum; its learning rate is a function of the
optimizer step (:func:`lr_factor`): a linear warm-up over ``lr_warmup_epochs``,
and a factor ``lr_decay`` after each epoch in ``milestones``. Before the first
step, ``stats_warmup_batches`` forward passes in training mode (no gradient, no
optimizer step) let the normalizers' running statistics settle.

A non-finite training loss ends the run with ``diverged: True`` in its last
row (validation metrics ``nan``, no checkpoint) instead of raising. On the CPU
a run is deterministic, and resuming from any epoch's checkpoint reproduces
the rows the uninterrupted run would have produced.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from onlinenorm import clamp_disabled, clamp_fractions, reset_clamp_stats
from onlinenorm.layers import _OnlineNorm
from onlinenorm.models import NORM_DIMS, create_model
from onlinenorm.norms import create_norm

from .allocator import retain_freed_memory
from .config import RESUMABLE_CHANGES, validate_config
from .data import BatchLoader, Dataset, load_dataset

Report = Callable[[dict[str, Any], "str | None"], None]
# on_batch(epoch, step, steps_per_epoch, running_train_loss)
OnBatch = Callable[[int, int, int, float], None]
# Modules whose weight and bias count as normalization parameters (decay_norm_params).
NORM_MODULES = (_OnlineNorm, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)

CHECKPOINT_FILE = "checkpoint.pt"
DIVERGENCE_CHECK_STEPS = 10  # steps between host syncs that test the loss for nan/inf
TIMING_METRICS = ("samples_per_s",)  # metrics that vary between identical runs
# Config keys passed on under the same names: to the norm factory and to the dataset loader.
NORM_OPTIONS = ("ecm", "alpha_fwd", "alpha_bkw", "clamp_value", "eps", "ls_eps", "kernels", "group_size")
DATA_OPTIONS = ("subset", "subset_seed", "download", "image_size", "classes", "max_per_class", "cache_dir")


class RunSetupError(ValueError):
    """The run cannot start as configured (missing device, checkpoint of another experiment)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; an explicit CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunSetupError(f"config key 'device' is {name!r} but torch sees no CUDA device; use auto or cpu")
    return torch.device(name)


def build_model(config: Mapping[str, Any], num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
    """The model of a resolved ``config``, with its normalizer from the norm factory."""
    options = {key: config[key] for key in NORM_OPTIONS}
    norm_layer = create_norm(config["norm"], dim=NORM_DIMS[config["model"]], **options)
    return create_model(config["model"], num_classes, norm_layer, image_shape, shortcut=config["shortcut"])


def parameter_groups(model: nn.Module, weight_decay: float, decay_norm_params: bool) -> list[dict[str, Any]]:
    """SGD parameter groups: every parameter decayed by ``weight_decay``, except, unless
    ``decay_norm_params``, the weight and bias of normalization layers (:data:`NORM_MODULES`), which get 0."""
    norm_ids = set()
    if not decay_norm_params:
        norm_ids = {id(p) for m in model.modules() if isinstance(m, NORM_MODULES) for p in m.parameters(recurse=False)}
    decayed = [p for p in model.parameters() if id(p) not in norm_ids]
    undecayed = [p for p in model.parameters() if id(p) in norm_ids]
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    return groups + ([{"params": undecayed, "weight_decay": 0.0}] if undecayed else [])


def lr_factor(step: int, steps_per_epoch: int, milestones: list[int], lr_decay: float, warmup_epochs: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based over the run) over the configured ``lr``.

    With ``e = step // steps_per_epoch`` (the 0-based epoch) and ``W = warmup_epochs * steps_per_epoch``:
    ``lr_decay ** #{m in milestones : e >= m} * min(1, (step + 1) / W)`` (no warm-up factor when ``W = 0``).
    So a milestone ``m`` decays the lr after epoch ``m``, and warm-up step ``s`` (1-based) uses ``lr * s / W``.
    """
    decay = lr_decay ** sum(step // steps_per_epoch >= m for m in milestones)
    warmup_steps = warmup_epochs * steps_per_epoch
    return decay * min(1.0, (step + 1) / warmup_steps) if warmup_steps else decay


def load_data(config: Mapping[str, Any]) -> Dataset:
    """The dataset of a resolved ``config``."""
    options = {key: config[key] for key in DATA_OPTIONS}
    return load_dataset(config["dataset"], config["data_dir"], **options)


class Trainer:
    """The state of one run (model, optimizer, schedule, loaders) and its epoch steps."""

    def __init__(self, config: Mapping[str, Any], data: Dataset, device: torch.device) -> None:
        self.config = dict(config)
        self.device = device
        torch.manual_seed(config["seed"])
        self.model = build_model(config, data.num_classes, data.image_shape).to(device)
        self.clamps = config["norm"] == "online" and config["ecm"] == "ac"
        self.optimizer = torch.optim.SGD(
            parameter_groups(self.model, config["weight_decay"], config["decay_norm_params"]),
            lr=config["lr"],
            momentum=config["momentum"],
        )
        normalize = {"mean": data.mean, "std": data.std, "device": device}
        augment = data.augment if config["augment"] else None
        self.train_loader = BatchLoader(
            data.train,
            config["batch_size"],
            augment=augment,
            shuffle=True,
            drop_last=True,
            seed=config["seed"],
            **normalize,
        )
        self.val_loader = BatchLoader(data.val, config["eval_batch_size"], **normalize)
        steps = len(self.train_loader)
        schedule = (config["milestones"], config["lr_decay"], config["lr_warmup_epochs"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(  # stepped once per optimizer step
            self.optimizer, lambda step: lr_factor(step, steps, *schedule)
        )
        use_bf16 = config["amp"] == "bf16" and device.type == "cuda"
        self.autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    def train_epoch(self, epoch: int, on_batch: OnBatch | None) -> dict[str, Any]:
        """One pass over the training set; the training half of the epoch's metrics."""
        self.model.train()
        reset_clamp_stats(self.model)
        self.train_loader.set_epoch(epoch)
        lr = math.nan
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen, running_loss, diverged = 0, math.nan, False
        steps = len(self.train_loader)
        start = time.perf_counter()
        for step, (x, y) in enumerate(self.train_loader, start=1):
            with self.autocast():
                logits = self.model(x)
                loss = F.cross_entropy(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(dim=1) == y).sum()
            seen += len(y)
            if step % DIVERGENCE_CHECK_STEPS == 0 or step == steps:
                running_loss = loss_sum.item() / seen
                diverged = not math.isfinite(running_loss)
                if on_batch is not None:
                    on_batch(epoch, step, steps, running_loss)
                if diverged:
                    break
        elapsed = time.perf_counter() - start
        metrics = {
            "epoch": epoch,
            "train_loss": running_loss,
            "train_acc": correct.item() / max(seen, 1),
            "lr": lr,
            "samples_per_s": seen / elapsed if elapsed > 0 else math.nan,
            "diverged": diverged,
        }
        fractions = clamp_fractions(self.model)
        metrics["clamp_fraction"] = fractions.pop("all", 0.0)
        metrics.update({f"clamp_fraction/{name}": value for name, value in fractions.items()})
        return metrics

    @torch.no_grad()
    def warm_up_statistics(self, batches: int) -> None:
        """``batches`` forward passes in training mode, no gradient and no optimizer step: the normalizers'
        running statistics (online ``mu``/``var``, batch norm's running averages) settle before step one.

        The batches are the training set in the order of epoch 0 (training epochs count from 1), repeated
        if ``batches`` exceeds an epoch.
        """
        self.model.train()
        self.train_loader.set_epoch(0)
        done = 0
        while done < batches:
            for x, _ in self.train_loader:
                with self.autocast():
                    self.model(x)
                done += 1
                if done == batches:
                    break

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """(mean loss, accuracy) on the validation set in eval mode."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        for x, y in self.val_loader:
            with self.autocast():
                logits = self.model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(dim=1) == y).sum()
        count = len(self.val_loader.split)
        return loss_sum.item() / count, correct.item() / count

    def validation_metrics(self) -> dict[str, float]:
        """``val_loss``, ``val_acc`` and ``val_acc_unclamped`` (the same with clamping removed)."""
        val_loss, val_acc = self.evaluate()
        if self.clamps:
            with clamp_disabled(self.model):
                _, unclamped = self.evaluate()
        else:
            unclamped = val_acc
        return {"val_loss": val_loss, "val_acc": val_acc, "val_acc_unclamped": unclamped}

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "config": self.config,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> int:
        """Restore a checkpoint; returns its epoch. Checks it belongs to the same experiment."""
        changed = sorted(
            k for k in self.config if k not in RESUMABLE_CHANGES and state["config"].get(k) != self.config[k]
        )
        if changed:
            details = ", ".join(f"{k}: {state['config'].get(k)!r} -> {self.config[k]!r}" for k in changed)
            raise RunSetupError(
                f"the checkpoint was written with a different config ({details}); resume with its config"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        return int(state["epoch"])


def save_checkpoint(state: Mapping[str, Any], folder: Path) -> Path:
    """Write ``folder/checkpoint.pt`` atomically (a crash never leaves a half-written file)."""
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f"{CHECKPOINT_FILE}.{os.getpid()}.tmp"
    torch.save(state, temporary)
    os.replace(temporary, folder / CHECKPOINT_FILE)
    return folder


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint from its folder (or the file itself), loaded onto the CPU without unpickling code."""
    path = Path(path)
    file = path / CHECKPOINT_FILE if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"{file}: no checkpoint there")
    return torch.load(file, map_location="cpu", weights_only=True)


def epoch_folder(root: Path, epoch: int) -> Path:
    return root / f"epoch_{epoch:04d}"


def run(
    config: Mapping[str, Any],
    report: Report,
    *,
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    on_batch: OnBatch | None = None,
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train as ``config`` says (validated by :func:`validate_config`); returns the last metric row.

    Args:
        config: the training config; unset keys take the dataset's recipe.
        report: called after every epoch with that epoch's metric row and
            its checkpoint folder (or ``None``).
        checkpoint_dir: where each epoch's checkpoint goes (``epoch_NNNN/``); the
            previous one is removed once ``report`` returns, so the folder holds
            the latest. ``None``: no checkpoints, ``report`` gets ``None``.
        resume_from: a checkpoint folder (or file) to continue from; its config
            must match except for :data:`onlinenorm.training.config.RESUMABLE_CHANGES`.
        on_batch: progress hook, called every few steps.
        on_start: called once the data is open, the model built and the
            checkpoint (if any) restored, before the first epoch: a caller that
            writes files creates them here, so bad input leaves nothing behind.

    Returns:
        The last metric row (the one ``report`` received last).

    Also tells glibc to keep freed memory in the process
    (:func:`onlinenorm.training.allocator.retain_freed_memory`): a few percent per
    step on CPU, at the cost of the process keeping its peak heap.
    """
    config = validate_config(config)
    retain_freed_memory()
    if config["threads"] is not None:
        torch.set_num_threads(config["threads"])
    device = resolve_device(config["device"])
    trainer = Trainer(config, load_data(config), device)
    first_epoch = 1 + (trainer.load_state_dict(load_checkpoint(resume_from)) if resume_from is not None else 0)
    if first_epoch == 1 and config["stats_warmup_batches"]:
        trainer.warm_up_statistics(config["stats_warmup_batches"])
    if on_start is not None:
        on_start()
    root = Path(checkpoint_dir) if checkpoint_dir is not None else None
    metrics: dict[str, Any] = {}
    for epoch in range(first_epoch, config["epochs"] + 1):
        metrics = trainer.train_epoch(epoch, on_batch)
        if metrics["diverged"]:
            metrics.update(val_loss=math.nan, val_acc=math.nan, val_acc_unclamped=math.nan)
            report(metrics, None)
            break
        metrics.update(trainer.validation_metrics())
        folder = save_checkpoint(trainer.state_dict(epoch), epoch_folder(root, epoch)) if root else None
        report(metrics, str(folder) if folder else None)
        if root is not None:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(epoch_folder(root, epoch - 1))
    return metrics
