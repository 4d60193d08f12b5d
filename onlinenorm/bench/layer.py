"""Side-by-side timing of the layer against ``torch.nn.BatchNorm2d`` and the per-sample loop.

Every candidate runs one forward+backward step per round, the candidates
interleaved within each round so that machine noise hits them alike, in an
order shuffled afresh each round so that no candidate always follows the same
one: what a step leaves in the caches, or in the allocator, changes the next
step's time (measured up to 7%), and a fixed rotation of the order would give
every candidate the same predecessor in every round, which moved a median by
5-10% where measured. The figure reported is the median over rounds, and ratios
are taken between medians measured in the same process; the ac-vs-ls ratios are
the median of the per-round ratios with its 95% confidence interval. What each ECM itself costs
(tens of microseconds, next to a layer step's fixed cost of hundreds) is
timed apart, in the C kernels without autograd (:func:`ecm_kernel_costs`).

The online layers start at the stream's fixed point for the input (their
``mu`` and ``var`` are its per-channel mean and variance, where training keeps
them), not as fresh layers meet a shifted input in training's first steps,
and the fraction of outputs the clamp changed is reported beside the times.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from onlinenorm.functional import layer_scale
from onlinenorm.kernels import native
from onlinenorm.kernels.types import BackwardCall, ForwardCall
from onlinenorm.layers import DEFAULT_CLAMP_VALUE, ECMS, OnlineNorm2d, _OnlineNorm
from onlinenorm.reference import OracleOnlineNorm
from onlinenorm.telemetry import clamp_fractions

RESNET20_SHAPES = ((128, 16, 32, 32), (128, 32, 16, 16), (128, 64, 8, 8))
RESNET50_SHAPES = ((32, 256, 56, 56),)
DEFAULT_SHAPES = RESNET20_SHAPES + RESNET50_SHAPES
LAYER_KERNELS = ("eager", "compiled", "native", "triton")  # "auto" is native on the CPU, triton on CUDA
DEFAULT_LAYER_KERNELS = {"cpu": ("eager", "compiled", "native"), "cuda": ("eager", "compiled", "triton")}
KERNEL_MARKS = {"eager": "", "compiled": "*", "native": "+", "triton": "^"}
# The "clamping is cheaper than layer scaling" comparisons, per kernel choice and against autograd layer scaling.
AC_LS_PAIRS = (("ac", "ls"), ("ac*", "ls*"), ("ac+", "ls+"), ("ac^", "ls^"), ("ac", "ls-autograd"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    steps: dict[str, Callable[[], None]],
    rounds: int,
    device: torch.device,
    warmup: int = 2,
    calls_per_round: int = 1,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Seconds per call of each step, one sample per round, the steps interleaved round by round
    in an order shuffled each round (by a generator seeded with ``seed``)."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    shuffle = random.Random(seed).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
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


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """The median of ``values`` and a ``confidence`` interval for it: ``(low, median, high)``.

    The interval is distribution-free: with the ``n`` values sorted, the order statistics of ranks
    ``n/2 - z sqrt(n)/2`` (rounded down) and ``1 + n/2 + z sqrt(n)/2`` (rounded up), ``z`` the normal
    quantile: the binomial argument for a median (Conover, Practical Nonparametric Statistics, 3.6),
    with its normal approximation. Written out because neither the standard library nor the project's
    dependencies offer it, and a bootstrap would cost more for the same answer.
    """
    ordered = sorted(values)
    n = len(ordered)
    half_width = statistics.NormalDist().inv_cdf((1 + confidence) / 2) * math.sqrt(n) / 2
    low_rank = max(math.floor(n / 2 - half_width), 1)
    high_rank = min(math.ceil(1 + n / 2 + half_width), n)
    return ordered[low_rank - 1], statistics.median(ordered), ordered[high_rank - 1]


def paired_ratio(
    numerator: list[float], denominator: list[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """The median of the per-round ratios (same rounds, same length) with its interval (:func:`median_interval`)."""
    return median_interval([a / b for a, b in zip(numerator, denominator, strict=True)], confidence)


def paired_difference(
    minuend: list[float], subtrahend: list[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """The median of the per-round differences (same rounds, same length) with its interval."""
    return median_interval([a - b for a, b in zip(minuend, subtrahend, strict=True)], confidence)


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


def floor_step(x: torch.Tensor, grad_out: torch.Tensor) -> Callable[[], None]:
    """The memory-traffic floor of a normalization step: a forward that reads ``x`` and writes its output once
    (``y.copy_(x)``) and a backward that reads ``x`` and the gradient and writes the input gradient once
    (``torch.add(x, dy, out=dx)``); no layer can move less."""
    y, grad_x, source = torch.empty_like(x), torch.empty_like(x), x.detach()

    def step() -> None:
        y.copy_(source)
        torch.add(source, grad_out, out=grad_x)

    return step


def candidate_name(ecm: str, kernels: str) -> str:
    """``ac`` for eager kernels, ``ac*`` for compiled ones, ``ac+`` for the C kernels, ``ac^`` for Triton's."""
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


def settle(module: nn.Module, x: torch.Tensor) -> None:
    """Put every online norm layer of ``module`` at the stream's fixed point for ``x``: ``mu`` and ``var``
    its per-channel mean and variance. Fresh layers (``mu = 0``, ``var = 1``) would see a shifted, scaled
    input as training does only in its first steps, clamping far more often."""
    stats_x = x.detach().to(torch.float32)
    dims = (0, *range(2, x.dim()))
    for layer in module.modules():
        if isinstance(layer, _OnlineNorm):
            layer.mu.copy_(stats_x.mean(dims))
            layer.var.copy_(stats_x.var(dims, correction=0))


def layer_candidates(
    shape: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
    kernels: tuple[str, ...],
    clamp_value: float = DEFAULT_CLAMP_VALUE,
) -> tuple[dict[str, nn.Module], torch.Tensor, torch.Tensor]:
    """Batch norm and ``OnlineNorm2d`` with each ECM and kernel choice (settled on the input), plus an
    input and its gradient."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) * 2 + 1).to(device, dtype).requires_grad_(True)
    grad_out = torch.randn(shape, generator=gen).to(device, dtype)
    channels = shape[1]
    modules = {"batchnorm": nn.BatchNorm2d(channels).to(device, dtype)}
    for kind in kernels:
        for ecm in ECMS:
            modules[candidate_name(ecm, kind)] = OnlineNorm2d(channels, ecm=ecm, clamp_value=clamp_value, kernels=kind)
    modules["ls-autograd"] = _AutogradLayerScaling(channels)
    modules = {name: module.to(device) for name, module in modules.items()}
    for module in modules.values():
        settle(module, x)
    return modules, x, grad_out


def oracle_step(shape: tuple[int, ...], clamp_value: float) -> Callable[[], None]:
    x, grad_out = torch.randn(shape), torch.randn(shape)
    oracle = OracleOnlineNorm(
        shape[1],
        0.999,
        0.99,
        ecm="ac",
        clamp_value=clamp_value,
        weight=torch.ones(shape[1]),
        bias=torch.zeros(shape[1]),
    )
    return lambda: oracle.step(x, grad_out)


def _kernel_step(layer: _OnlineNorm, x3: torch.Tensor, grad3: torch.Tensor) -> Callable[[], None]:
    """One forward and one backward of the C kernels with ``layer``'s settings and state, as the layer calls
    them in training (the same arguments and telemetry counters), without autograd or the module around them."""
    clamp_value, ls_eps, clamp_count, seen_count = layer._ecm_arguments()  # a layer in training mode, as built
    weight, bias = layer.weight.detach(), layer.bias.detach()

    def step() -> None:
        _, stats = native.forward(
            ForwardCall(
                x3,
                weight,
                bias,
                layer.mu,
                layer.var,
                layer.alpha_fwd,
                layer.eps,
                clamp_value,
                ls_eps,
                clamp_count,
                seen_count,
            )
        )
        native.backward(BackwardCall(grad3, x3, weight, bias, layer.u, layer.v, stats, layer.alpha_bkw, clamp_value))

    return step


def ecm_kernel_costs(
    x: torch.Tensor, grad_out: torch.Tensor, rounds: int, clamp_value: float = DEFAULT_CLAMP_VALUE
) -> dict[str, tuple[float, float, float]]:
    """Seconds each ECM adds to the C kernels' forward + backward over ``ecm="none"``, for float32 CPU
    ``x`` and ``grad_out`` ``(N, C, *spatial)``: ``{"ac": ..., "ls": ..., "ls-ac": ...}``, each the median of
    the per-round differences with its 95% interval (:func:`paired_difference`); ``"ls-ac"`` is what layer
    scaling costs beyond clamping.

    The three run interleaved like the layers, settled on ``x``, through :func:`onlinenorm.kernels.native.forward`
    and :func:`~onlinenorm.kernels.native.backward` as the layer calls them. A whole layer step adds autograd and the
    module's Python, a fixed cost of a few hundred microseconds whose noise blurs differences of tens: this is
    where the ECMs' own work is, measured without it.
    """
    n, c = x.shape[:2]
    x3, grad3 = x.detach().reshape(n, c, -1).contiguous(), grad_out.reshape(n, c, -1).contiguous()
    steps = {}
    for ecm in ECMS:
        layer = OnlineNorm2d(c, ecm=ecm, clamp_value=clamp_value, kernels="native")
        settle(layer, x)
        steps[ecm] = _kernel_step(layer, x3, grad3)
    samples = time_interleaved(steps, rounds, x.device)
    return {
        "ac": paired_difference(samples["ac"], samples["none"]),
        "ls": paired_difference(samples["ls"], samples["none"]),
        "ls-ac": paired_difference(samples["ls"], samples["ac"]),
    }


def bench_layer(
    shapes=DEFAULT_SHAPES,
    rounds: int = 25,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    oracle_rounds: int = 3,
    kernels: tuple[str, ...] = LAYER_KERNELS,
    clamp_value: float = DEFAULT_CLAMP_VALUE,
    ecm_rounds: int = 200,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Time forward+backward per shape (``clamp_value``: the ac layers' and the oracle's).

    One result per shape: ``{"shape": ..., "ms": {candidate: median ms},
    "saved": {candidate: bytes saved for backward per element},
    "ac_ls": {"ac+/ls+": (CI low, median, CI high) of the per-round ratios
    (:func:`paired_ratio`), ...}, "clamp_value": ..., "clamped": {"ac+": fraction
    of its outputs clamped over the rounds, ...}, "ecm_costs": ...}`` (the pairs of
    :data:`AC_LS_PAIRS` timed), candidates ``batchnorm``, each ECM per kernel
    choice (``ac``, ``ac*``, ...), ``ls-autograd``, ``floor`` (:func:`floor_step`) and, unless
    ``oracle_rounds=0``, ``loop`` (the per-sample oracle). ``ecm_costs`` is
    :func:`ecm_kernel_costs` over ``ecm_rounds`` rounds where the native kernels
    are timed and cover the call (float32 on the CPU), else None.
    """
    dev = torch.device(device)
    results = []
    for shape in shapes:
        if progress:
            progress(f"timing {shape} ...")
        modules, x, grad_out = layer_candidates(shape, dev, dtype, kernels, clamp_value)
        steps = {name: _train_step(module, x, grad_out) for name, module in modules.items()}
        steps["floor"] = floor_step(x, grad_out)
        samples = time_interleaved(steps, rounds, dev)
        seconds = medians(samples)
        ac_ls = {
            f"{ac}/{ls}": paired_ratio(samples[ac], samples[ls])
            for ac, ls in AC_LS_PAIRS
            if ac in samples and ls in samples
        }
        clamped = {
            name: clamp_fractions(module)["all"]
            for name, module in modules.items()
            if getattr(module, "ecm", None) == "ac"
        }
        saved = {name: saved_bytes_per_element(module, x) for name, module in modules.items()}
        if oracle_rounds > 0:
            loop = oracle_step(shape, clamp_value)
            seconds |= medians(time_interleaved({"loop": loop}, oracle_rounds, dev, warmup=0))
        ecm_costs = None
        if "native" in kernels and native.covers(x) and ecm_rounds > 0:
            ecm_costs = ecm_kernel_costs(x, grad_out, ecm_rounds, clamp_value)
        ms = {name: sec * 1e3 for name, sec in seconds.items()}
        results.append(
            {
                "shape": shape,
                "ms": ms,
                "saved": saved,
                "ac_ls": ac_ls,
                "clamp_value": clamp_value,
                "clamped": clamped,
                "ecm_costs": ecm_costs,
            }
        )
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
        floor_ratios = ", ".join(
            f"{name} {value / ms['floor']:.2f}" for name, value in ms.items() if name not in ("floor", "loop")
        )
        lines.append(f"{'':<20}x floor: {floor_ratios}")
        ratios = [f"{pair} {mid:.2f} [{low:.2f}-{high:.2f}]" for pair, (low, mid, high) in result["ac_ls"].items()]
        if "loop" in ms:
            fastest = min(ms[name] for name in ("ac", "ac*", "ac+", "ac^") if name in ms)
            ratios.append(f"loop/fastest ac {ms['loop'] / fastest:.1f}x")
        lines.append(f"{'':<20}{', '.join(ratios)}")
        if result["clamped"]:
            fractions = ", ".join(f"{name} {fraction:.2g}" for name, fraction in result["clamped"].items())
            lines.append(f"{'':<20}clamped at c={result['clamp_value']:g}: {fractions}")
        if result["ecm_costs"]:
            costs = result["ecm_costs"]
            lines.append(
                f"{'':<20}C kernels over none: ac {_us(costs['ac'])}, ls {_us(costs['ls'])}; "
                f"ls beyond ac {_us(costs['ls-ac'])}"
            )
    lines.append(
        "* = kernels='compiled' (torch.compile-fused); + = kernels='native' (the C kernels); "
        "^ = kernels='triton' (the Triton kernels); "
        "ls-autograd = ecm='none' then layer scaling as plain autograd ops; loop = per-sample float64 oracle"
    )
    lines.append(
        "floor = y.copy_(x) then torch.add(x, dy, out=dx), the memory traffic of a forward and a backward; "
        "x floor = each candidate's time over it"
    )
    lines.append(
        "a/b m [lo-hi] = median of the per-round time ratios, with its 95% confidence interval; "
        "clamped = fraction of the ac layers' outputs the clamp changed"
    )
    lines.append(
        "C kernels over none = what each ECM adds to the C kernels' forward+backward, no autograd "
        "(median per-round difference, with its 95% confidence interval)"
    )
    return "\n".join(lines)


def _us(interval: tuple[float, float, float]) -> str:
    """``(low, median, high)`` seconds as ``+12 us [+3, +20]``."""
    low, middle, high = (round(seconds * 1e6) for seconds in interval)
    return f"{middle:+d} us [{low:+d}, {high:+d}]"
