"""Side-by-side timing of the layer against ``torch.nn.BatchNorm2d`` and the per-sample loop.

Every candidate runs one forward+backward step per round, the candidates
interleaved within each round so that machine noise hits them alike; the
figure reported is the median over rounds, and ratios are taken between
medians measured in the same process.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from onlinenorm.layers import ECMS, OnlineNorm2d

RESNET20_SHAPES = ((128, 16, 32, 32), (128, 32, 16, 16), (128, 64, 8, 8))
RESNET50_SHAPES = ((32, 256, 56, 56),)
DEFAULT_SHAPES = RESNET20_SHAPES + RESNET50_SHAPES
ORACLE_PATH = Path(__file__).resolve().parents[1] / "tests" / "oracle.py"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(steps: dict[str, Callable[[], None]], rounds: int, device: torch.device,
                     warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each step, the steps interleaved round by round."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def _train_step(module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        module.zero_grad(set_to_none=True)
        module(x).backward(grad_out)
    return step


def load_oracle():
    """The per-sample loop oracle from the source tree's tests, or None when not present."""
    if not ORACLE_PATH.exists():
        return None
    spec = importlib.util.spec_from_file_location("onlinenorm_oracle", ORACLE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OracleOnlineNorm


def layer_steps(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> dict[str, Callable[[], None]]:
    """One forward+backward step of batch norm and of ``OnlineNorm2d`` with each ECM."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) * 2 + 1).to(device, dtype).requires_grad_(True)
    grad_out = torch.randn(shape, generator=gen).to(device, dtype)
    channels = shape[1]
    steps = {"batchnorm": _train_step(nn.BatchNorm2d(channels).to(device, dtype), x, grad_out)}
    for ecm in ECMS:
        layer = OnlineNorm2d(channels, ecm=ecm, clamp_value=2.0).to(device)
        steps[ecm] = _train_step(layer, x, grad_out)
    return steps


def oracle_step(oracle_cls, shape: tuple[int, ...]) -> Callable[[], None]:
    x, grad_out = torch.randn(shape), torch.randn(shape)
    oracle = oracle_cls(shape[1], 0.999, 0.99, ecm="ac", clamp_value=2.0,
                        weight=torch.ones(shape[1]), bias=torch.zeros(shape[1]))
    return lambda: oracle.step(x, grad_out)


def bench_layer(shapes=DEFAULT_SHAPES, rounds: int = 25, device: str = "cpu", dtype: torch.dtype = torch.float32,
                oracle_rounds: int = 3, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Time forward+backward per shape; one result row per shape (times in ms, ratios)."""
    dev = torch.device(device)
    oracle_cls = load_oracle() if oracle_rounds > 0 else None
    rows = []
    for shape in shapes:
        if progress:
            progress(f"timing {shape} ...")
        medians = time_interleaved(layer_steps(shape, dev, dtype), rounds, dev)
        row = {"shape": shape, **{f"{k}_ms": v * 1e3 for k, v in medians.items()}}
        for ecm in ECMS:
            row[f"{ecm}/bn"] = medians[ecm] / medians["batchnorm"]
        row["ac/ls"] = medians["ac"] / medians["ls"]
        if oracle_cls is not None:
            loop = time_interleaved({"loop": oracle_step(oracle_cls, shape)}, oracle_rounds, dev, warmup=0)
            row["loop_ms"] = loop["loop"] * 1e3
            row["loop/ac"] = loop["loop"] / medians["ac"]
        rows.append(row)
    return rows


def format_layer_table(rows: list[dict]) -> str:
    """The ratio table: times in ms, ratios online / batch norm, and loop oracle / ac."""
    header = f"{'shape':<20}{'BN ms':>8}{'ac ms':>8}{'ac/BN':>7}{'ls/BN':>7}{'none/BN':>8}{'ac/ls':>7}{'loop/ac':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        loop = f"{r['loop/ac']:>8.1f}x" if "loop/ac" in r else f"{'n/a':>9}"
        lines.append(f"{str(r['shape']):<20}{r['batchnorm_ms']:>8.2f}{r['ac_ms']:>8.2f}{r['ac/bn']:>7.2f}"
                     f"{r['ls/bn']:>7.2f}{r['none/bn']:>8.2f}{r['ac/ls']:>7.2f}{loop}")
    return "\n".join(lines)
