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


def candidate_name(ecm: str, kernels: str) -> str:
    """``ac`` for eager kernels, ``ac*`` for compiled ones."""
    return ecm if kernels == "eager" else f"{ecm}*"


def layer_steps(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype,
                kernels: tuple[str, ...]) -> dict[str, Callable[[], None]]:
    """One forward+backward step of batch norm and of ``OnlineNorm2d`` with each ECM and kernel choice."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) * 2 + 1).to(device, dtype).requires_grad_(True)
    grad_out = torch.randn(shape, generator=gen).to(device, dtype)
    channels = shape[1]
    steps = {"batchnorm": _train_step(nn.BatchNorm2d(channels).to(device, dtype), x, grad_out)}
    for kind in kernels:
        for ecm in ECMS:
            layer = OnlineNorm2d(channels, ecm=ecm, clamp_value=2.0, kernels=kind).to(device)
            steps[candidate_name(ecm, kind)] = _train_step(layer, x, grad_out)
    return steps


def oracle_step(oracle_cls, shape: tuple[int, ...]) -> Callable[[], None]:
    x, grad_out = torch.randn(shape), torch.randn(shape)
    oracle = oracle_cls(shape[1], 0.999, 0.99, ecm="ac", clamp_value=2.0,
                        weight=torch.ones(shape[1]), bias=torch.zeros(shape[1]))
    return lambda: oracle.step(x, grad_out)


def bench_layer(shapes=DEFAULT_SHAPES, rounds: int = 25, device: str = "cpu", dtype: torch.dtype = torch.float32,
                oracle_rounds: int = 3, kernels: tuple[str, ...] = ("eager", "compiled"),
                progress: Callable[[str], None] | None = None) -> list[dict]:
    """Time forward+backward per shape; one result row per shape (times in ms, ratios to batch norm)."""
    dev = torch.device(device)
    oracle_cls = load_oracle() if oracle_rounds > 0 else None
    rows = []
    for shape in shapes:
        if progress:
            progress(f"timing {shape} ...")
        medians = time_interleaved(layer_steps(shape, dev, dtype, kernels), rounds, dev)
        row = {"shape": shape, **{f"{k}_ms": v * 1e3 for k, v in medians.items()}}
        for name, seconds in medians.items():
            row[f"{name}/bn"] = seconds / medians["batchnorm"]
        for kind in kernels:
            row[f"{candidate_name('ac', kind)}/ls"] = medians[candidate_name("ac", kind)] / medians[candidate_name("ls", kind)]
        if oracle_cls is not None:
            loop = time_interleaved({"loop": oracle_step(oracle_cls, shape)}, oracle_rounds, dev, warmup=0)
            row["loop_ms"] = loop["loop"] * 1e3
            fastest_ac = min(medians[candidate_name("ac", kind)] for kind in kernels)
            row["loop/ac"] = loop["loop"] / fastest_ac
        rows.append(row)
    return rows


def format_layer_table(rows: list[dict]) -> str:
    """Times in ms and ratios: online / batch norm per ECM and kernel choice, ac / ls, loop / fastest ac."""
    ratio_keys = [k for k in rows[0] if k.endswith("/bn") and k != "batchnorm/bn"]
    ratio_keys += [k for k in rows[0] if k.endswith("/ls")]
    columns = ["BN ms", "ac ms"] + [k.replace("/bn", "/BN") for k in ratio_keys] + ["loop/ac"]
    widths = [max(9, len(c) + 2) for c in columns]
    lines = [f"{'shape':<20}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths))]
    lines.append("-" * len(lines[0]))
    for r in rows:
        cells = [f"{r['batchnorm_ms']:.2f}", f"{r['ac_ms']:.2f}"] + [f"{r[k]:.2f}" for k in ratio_keys]
        cells.append(f"{r['loop/ac']:.1f}x" if "loop/ac" in r else "n/a")
        lines.append(f"{str(r['shape']):<20}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    if any("*" in k for k in ratio_keys):
        lines.append("* = kernels='compiled' (torch.compile-fused); unstarred = eager")
    return "\n".join(lines)
