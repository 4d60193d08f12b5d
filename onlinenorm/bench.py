"""Side-by-side timing of the layer against ``torch.nn.BatchNorm2d`` and the per-sample loop.

Every candidate runs one forward+backward step per round, the candidates
interleaved within each round so that machine noise hits them alike, and the
round's order rotated by one each round so that no candidate always follows
the same one (what a step leaves in the caches, or in the allocator, changes
the next step's time: measured up to 7%). The figure reported is the median
over rounds, and ratios are taken between medians measured in the same
process; the ac-vs-ls ratios also give the spread of the per-round ratios.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from onlinenorm.functional import layer_scale
from onlinenorm.layers import ECMS, OnlineNorm2d

RESNET20_SHAPES = ((128, 16, 32, 32), (128, 32, 16, 16), (128, 64, 8, 8))
RESNET50_SHAPES = ((32, 256, 56, 56),)
DEFAULT_SHAPES = RESNET20_SHAPES + RESNET50_SHAPES
LAYER_KERNELS = ("eager", "compiled", "native")  # timed side by side; "auto" is one of them
KERNEL_MARKS = {"eager": "", "compiled": "*", "native": "+"}
ORACLE_PATH = Path(__file__).resolve().parents[1] / "tests" / "oracle.py"
# The "clamping is cheaper than layer scaling" comparisons, per kernel choice and against autograd layer scaling.
AC_LS_PAIRS = (("ac", "ls"), ("ac*", "ls*"), ("ac+", "ls+"), ("ac", "ls-autograd"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(steps: dict[str, Callable[[], None]], rounds: int, device: torch.device,
                     warmup: int = 2, calls_per_round: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each step, one sample per round, the steps interleaved round by round
    (round r starts at the r-th step, modulo their number)."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            step = steps[name]
            _sync(device)
            start = time.perf_counter()
            for _ in range(calls_per_round):
                step()
            _sync(device)
            samples[name].append((time.perf_counter() - start) / calls_per_round)
    return samples


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(times) for name, times in samples.items()}


def paired_ratio(numerator: list[float], denominator: list[float]) -> tuple[float, float, float]:
    """Lower quartile, median and upper quartile of the per-round ratios (same rounds, same length)."""
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    low, middle, high = statistics.quantiles(ratios, n=4)
    return low, middle, high


def saved_bytes_per_element(module: nn.Module, x: torch.Tensor) -> float:
    """Bytes autograd keeps for backward after ``module(x)``, per element of ``x``.

    Counts every distinct storage saved for backward (the input included, as
    batch norm saves it too).
    """
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x.detach().requires_grad_(True))
    return sum(storages.values()) / x.numel()


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
    """``ac`` for eager kernels, ``ac*`` for compiled ones, ``ac+`` for the C kernels."""
    return ecm + KERNEL_MARKS[kernels]


class _AutogradLayerScaling(nn.Module):
    """Online norm without ECM, then layer scaling as separate autograd ops.

    The way layer scaling is usually implemented (and was costed in the
    paper): the baseline for the "clamping is cheaper" comparison.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = OnlineNorm2d(channels, ecm="none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_scale(self.norm(x))


def layer_candidates(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype,
                     kernels: tuple[str, ...]) -> tuple[dict[str, nn.Module], torch.Tensor, torch.Tensor]:
    """Batch norm and ``OnlineNorm2d`` with each ECM and kernel choice, plus an input and its gradient."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) * 2 + 1).to(device, dtype).requires_grad_(True)
    grad_out = torch.randn(shape, generator=gen).to(device, dtype)
    channels = shape[1]
    modules = {"batchnorm": nn.BatchNorm2d(channels).to(device, dtype)}
    for kind in kernels:
        for ecm in ECMS:
            modules[candidate_name(ecm, kind)] = OnlineNorm2d(channels, ecm=ecm, clamp_value=2.0, kernels=kind)
    modules["ls-autograd"] = _AutogradLayerScaling(channels)
    return {name: module.to(device) for name, module in modules.items()}, x, grad_out


def oracle_step(oracle_cls, shape: tuple[int, ...]) -> Callable[[], None]:
    x, grad_out = torch.randn(shape), torch.randn(shape)
    oracle = oracle_cls(shape[1], 0.999, 0.99, ecm="ac", clamp_value=2.0,
                        weight=torch.ones(shape[1]), bias=torch.zeros(shape[1]))
    return lambda: oracle.step(x, grad_out)


def bench_layer(shapes=DEFAULT_SHAPES, rounds: int = 25, device: str = "cpu", dtype: torch.dtype = torch.float32,
                oracle_rounds: int = 3, kernels: tuple[str, ...] = LAYER_KERNELS,
                progress: Callable[[str], None] | None = None) -> list[dict]:
    """Time forward+backward per shape.

    One result per shape: ``{"shape": ..., "ms": {candidate: median ms},
    "saved": {candidate: bytes saved for backward per element},
    "ac_ls": {"ac+/ls+": (lower quartile, median, upper quartile) of the
    per-round ratios, ...}}`` (the pairs of :data:`AC_LS_PAIRS` timed), candidates
    ``batchnorm``, each ECM per kernel choice (``ac``, ``ac*``, ...),
    ``ls-autograd`` and, unless ``oracle_rounds=0``, ``loop`` (the per-sample oracle).
    """
    dev = torch.device(device)
    oracle_cls = load_oracle() if oracle_rounds > 0 else None
    results = []
    for shape in shapes:
        if progress:
            progress(f"timing {shape} ...")
        modules, x, grad_out = layer_candidates(shape, dev, dtype, kernels)
        steps = {name: _train_step(module, x, grad_out) for name, module in modules.items()}
        samples = time_interleaved(steps, rounds, dev)
        seconds = medians(samples)
        ac_ls = {f"{ac}/{ls}": paired_ratio(samples[ac], samples[ls]) for ac, ls in AC_LS_PAIRS
                 if ac in samples and ls in samples}
        saved = {name: saved_bytes_per_element(module, x) for name, module in modules.items()}
        if oracle_cls is not None:
            seconds |= medians(time_interleaved({"loop": oracle_step(oracle_cls, shape)}, oracle_rounds, dev, warmup=0))
        ms = {name: sec * 1e3 for name, sec in seconds.items()}
        results.append({"shape": shape, "ms": ms, "saved": saved, "ac_ls": ac_ls})
    return results


def format_layer_table(results: list[dict]) -> str:
    """Per shape: each candidate's median ms, its ratio to batch norm and the bytes it saves
    for backward per activation; then the ac-vs-ls ratios."""
    lines = [f"{'shape':<20}{'candidate':<14}{'ms':>10}{'x BN':>8}{'saved B/elem':>14}", "-" * 66]
    for result in results:
        ms = result["ms"]
        for i, (name, value) in enumerate(ms.items()):
            shape = str(result["shape"]) if i == 0 else ""
            saved = f"{result['saved'][name]:.2f}" if name in result["saved"] else "-"
            lines.append(f"{shape:<20}{name:<14}{value:>10.2f}{value / ms['batchnorm']:>8.2f}{saved:>14}")
        ratios = [f"{pair} {mid:.2f} [{low:.2f}-{high:.2f}]" for pair, (low, mid, high) in result["ac_ls"].items()]
        if "loop" in ms:
            fastest = min(ms[name] for name in ("ac", "ac*", "ac+") if name in ms)
            ratios.append(f"loop/fastest ac {ms['loop'] / fastest:.1f}x")
        lines.append(f"{'':<20}{', '.join(ratios)}")
    lines.append("* = kernels='compiled' (torch.compile-fused); + = kernels='native' (the C kernels); "
                 "ls-autograd = ecm='none' then layer scaling as plain autograd ops; loop = per-sample float64 oracle")
    return "\n".join(lines)
