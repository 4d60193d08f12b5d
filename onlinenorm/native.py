"""The hand-written CPU kernels (``csrc/online_norm.c``): built on first use, called through ctypes.

Why by hand: the other paths run the reductions, the scans of ``(N, C)``
numbers and the elementwise pass as separate operations or compiled graphs,
and at ResNet-20's small shapes the scans, the calls around them and their
buffers cost as much as the passes over the activations (BENCHMARKS.md). The
C kernels do the same three steps in one call per direction, the scans as
plain loops over ``(N, C)`` numbers, in cache-sized blocks. Plain C with no
torch headers builds in about a second, where a torch C++ extension takes
most of a minute; ctypes passes the tensors' data pointers.

The shared library is cached per source, flags and CPU (it is built with
``-march=native``) under ``ONLINENORM_CACHE_DIR``, else ``~/.cache/onlinenorm``,
so a machine builds it once (about a second) and a process finds it without
needing the compiler. It is written under a temporary name and then renamed,
so trials starting together on one node never load a half-written file.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "online_norm.c"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11")


class NativeUnavailable(RuntimeError):
    """The C kernels cannot be built or loaded here (no C compiler, or it failed)."""


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    raise NativeUnavailable("no C compiler found (set CC, or install gcc or clang)")


def _cpu_signature() -> str:
    """What -march=native depends on: the machine and, on Linux, the CPU's feature flags."""
    flags = ""
    with contextlib.suppress(OSError):
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return f"{platform.machine()} {flags}"


def _cache_dir() -> Path:
    return Path(os.environ.get("ONLINENORM_CACHE_DIR") or Path.home() / ".cache" / "onlinenorm")


def _library_path() -> Path:
    """Where the library built from this source, with these flags, for this CPU lives (any compiler will do)."""
    key = hashlib.sha256("\0".join((SOURCE.read_text(), *FLAGS, _cpu_signature())).encode())
    return _cache_dir() / f"online_norm-{key.hexdigest()[:16]}.so"


def _build(target: Path) -> None:
    compiler = _compiler()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        partial = Path(scratch) / target.name
        built = subprocess.run([compiler, *FLAGS, "-o", str(partial), str(SOURCE), "-lm"],
                               capture_output=True, text=True)
        if built.returncode != 0:
            detail = built.stderr.strip()[-500:] or f"exit status {built.returncode}, no output"
            raise NativeUnavailable(f"{compiler} could not build {SOURCE.name}: {detail}")
        os.replace(partial, target)


# Tensors go in as their data_ptr() addresses: no ctypes pointer objects to build per call.
_PTR, _I64, _F64, _INT, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int, ctypes.c_float
_SIGNATURES = {
    "onlinenorm_forward": (
        _PTR, _PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR,
        _F64, _F64, _F32, _INT, _F64, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _INT),
    "onlinenorm_backward": (
        _PTR, _PTR, _PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR,
        _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _F64, _F32, _PTR, _PTR, _INT),
}


@functools.cache
def library() -> ctypes.CDLL:
    """The built kernels (built once per process at most; raises ``NativeUnavailable``)."""
    path = _library_path()
    if not path.exists():
        _build(path)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        raise NativeUnavailable(f"could not load the built kernels: {err}") from err
    for name, argtypes in _SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, None
    return lib


def covers(x3: torch.Tensor) -> bool:
    """Whether the C kernels run this call: float32 on the CPU."""
    return x3.device.type == "cpu" and x3.dtype == torch.float32


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _clamp_value(clamp: tuple[float, float] | None) -> float:
    """The kernels' clamp value: +inf (nothing clamped, nothing counted) without clamping."""
    return math.inf if clamp is None else clamp[0]


def _state(t: torch.Tensor | None) -> torch.Tensor | None:
    """A per-channel parameter or state tensor as contiguous float32 (itself when it already is: the kernels
    only read its memory, so a parameter that requires grad can go in as it is)."""
    if t is None or (t.dtype == torch.float32 and t.is_contiguous()):
        return t
    return t.detach().to(torch.float32).contiguous()


def forward(x3, weight, bias, mu, var, alpha_fwd: float, eps: float, clamp: tuple[float, float] | None,
            ls_eps: float | None, counters: tuple[torch.Tensor | None, torch.Tensor | None]):
    """The same contract as ``functional.Kernels.forward`` for covered calls, except that the statistics end
    with one more: with clamping, a uint8 flag per (sample, channel) row, whether it has anything clamped
    (the backward recomputes the clamp mask only in those rows); else None. The kernel adds to ``counters``
    (the clamped-element and element counts, 0-d int64 on the CPU, as ``online_norm`` checks) itself."""
    x3 = x3.contiguous()
    n, c, m = x3.shape
    weight, bias, mu, var = map(_state, (weight, bias, mu, var))
    out = torch.empty_like(x3)
    mu_next, var_next = torch.empty_like(mu), torch.empty_like(var)
    mean, s2, mu_prev, invstd, scale, shift = torch.empty((6, n, c), dtype=torch.float32)
    ls_scale = torch.empty((n, 1), dtype=torch.float32) if ls_eps is not None else None
    clamped = torch.empty((n, c), dtype=torch.uint8) if clamp is not None else None
    clamp_count, seen_count = counters
    library().onlinenorm_forward(
        _ptr(x3), _ptr(out), n, c, m, _ptr(weight), _ptr(bias), _ptr(mu), _ptr(var), _ptr(mu_next), _ptr(var_next),
        alpha_fwd, eps, _clamp_value(clamp), ls_eps is not None, ls_eps or 0.0,
        _ptr(mean), _ptr(s2), _ptr(mu_prev), _ptr(invstd), _ptr(scale), _ptr(shift), _ptr(ls_scale),
        _ptr(clamped), _ptr(clamp_count if clamp is not None else None), _ptr(seen_count), torch.get_num_threads())
    stats = (mean, s2, mu_prev, invstd, scale, shift, ls_scale, clamped)
    return out, mu_next, var_next, stats


def backward(grad, x3, weight, bias, u, v, stats, alpha_bkw: float, clamp: tuple[float, float] | None):
    """The same contract as ``functional._backward_math`` for covered calls (``stats`` from :func:`forward`)."""
    grad, x3 = grad.contiguous(), x3.contiguous()
    n, c, m = x3.shape
    mean, s2, mu_prev, invstd, scale, shift, ls_scale, clamped = (None if t is None else t.contiguous() for t in stats)
    weight, bias, u, v = map(_state, (weight, bias, u, v))
    grad_x = torch.empty_like(x3)
    u_next, v_next = torch.empty_like(u), torch.empty_like(v)
    sum_grad_y, sum_grad = torch.empty((2, n, c), dtype=torch.float32)
    library().onlinenorm_backward(
        _ptr(grad), _ptr(x3), _ptr(grad_x), n, c, m, _ptr(weight), _ptr(bias), _ptr(mean), _ptr(s2), _ptr(mu_prev),
        _ptr(invstd), _ptr(scale), _ptr(shift), _ptr(ls_scale), _ptr(clamped),
        _ptr(u), _ptr(v), _ptr(u_next), _ptr(v_next),
        alpha_bkw, _clamp_value(clamp), _ptr(sum_grad_y), _ptr(sum_grad), torch.get_num_threads())
    return grad_x, sum_grad_y, sum_grad, u_next, v_next
