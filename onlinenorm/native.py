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

Where no compiler is at hand (the Docker image), a *portable* build made
beforehand in the same folder stands in: ``onlinenorm kernels build
--portable`` builds it for the machine's architecture at a level most of
its CPUs have (x86-64-v3: AVX2 and FMA), and it is used only on a CPU that
has those features. A per-CPU build, where one can be made, is preferred.
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
from typing import NamedTuple

import torch

SOURCE = Path(__file__).with_name("csrc") / "online_norm.c"
FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC", "-std=c11")
NATIVE_FLAGS = ("-march=native",)


class PortableBuild(NamedTuple):
    """A build for any CPU of an architecture that has ``features`` (names as in /proc/cpuinfo's flags)."""

    level: str
    flags: tuple[str, ...]
    features: frozenset[str]


# Per architecture (platform.machine()). x86-64-v3 is AVX2 with FMA (Haswell, Zen and later); below it,
# fmaf is a library call per element and the C kernels lose their point. aarch64 always has FMA and NEON.
PORTABLE_BUILDS = {
    "x86_64": PortableBuild("x86-64-v3", ("-march=x86-64-v3",), frozenset(
        {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"})),
    "aarch64": PortableBuild("armv8-a", ("-march=armv8-a",), frozenset()),
}


class NativeUnavailable(RuntimeError):
    """The C kernels cannot be built or loaded here (no C compiler, or it failed)."""


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    raise NativeUnavailable("no C compiler found (set CC, or install gcc or clang)")


def _cpu_flags_line() -> str:
    """The ``flags`` line of /proc/cpuinfo (Linux); empty elsewhere."""
    with contextlib.suppress(OSError):
        return next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return ""


def _cpu_signature() -> str:
    """What -march=native depends on: the machine and, on Linux, the CPU's feature flags."""
    return f"{platform.machine()} {_cpu_flags_line()}"


def _cache_dir() -> Path:
    return Path(os.environ.get("ONLINENORM_CACHE_DIR") or Path.home() / ".cache" / "onlinenorm")


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join((SOURCE.read_text(), *FLAGS, *parts)).encode()).hexdigest()[:16]


def _library_path() -> Path:
    """Where the library built from this source, with these flags, for this CPU lives (any compiler will do)."""
    return _cache_dir() / f"online_norm-{_key(*NATIVE_FLAGS, _cpu_signature())}.so"


def _portable_path(build: PortableBuild) -> Path:
    """Where the portable build of this source for this architecture lives."""
    return _cache_dir() / f"online_norm-{build.level}-{_key(*build.flags, platform.machine())}.so"


def _build(target: Path, flags: tuple[str, ...]) -> None:
    compiler = _compiler()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=target.parent))
    except OSError as err:
        raise NativeUnavailable(f"could not write the built kernels to {target.parent} ({err.strerror or err}); "
                                "set ONLINENORM_CACHE_DIR to a writable folder") from err
    try:
        partial = scratch / target.name
        built = subprocess.run([compiler, *FLAGS, *flags, "-o", str(partial), str(SOURCE), "-lm"],
                               capture_output=True, text=True)
        if built.returncode != 0:
            detail = built.stderr.strip()[-500:] or f"exit status {built.returncode}, no output"
            raise NativeUnavailable(f"{compiler} could not build {SOURCE.name}: {detail}")
        os.replace(partial, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def build_native() -> Path:
    """Build the library for this CPU into the cache folder (once); returns its path."""
    path = _library_path()
    if not path.exists():
        _build(path, NATIVE_FLAGS)
    return path


def portable_build() -> PortableBuild | None:
    """This architecture's portable build (:data:`PORTABLE_BUILDS`), or None where none is defined."""
    return PORTABLE_BUILDS.get(platform.machine())


def build_portable() -> Path:
    """Build this architecture's portable library into the cache folder (once), for machines without a
    compiler that share the folder; returns its path."""
    build = portable_build()
    if build is None:
        raise NativeUnavailable(f"no portable build of the C kernels is defined for {platform.machine()}")
    path = _portable_path(build)
    if not path.exists():
        _build(path, build.flags)
    return path


def portable_runs_here() -> bool:
    """Whether this architecture has a portable build and this CPU the features it needs."""
    build = portable_build()
    return build is not None and build.features <= set(_cpu_flags_line().split())


def _usable_portable() -> Path | None:
    """The portable build in the cache folder, if there is one and it runs on this CPU."""
    if not portable_runs_here():
        return None
    path = _portable_path(portable_build())
    return path if path.exists() else None


# Tensors go in as their data_ptr() addresses: no ctypes pointer objects to build per call.
_PTR, _I64, _F64, _INT, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int, ctypes.c_float
_SIGNATURES = {
    "onlinenorm_forward": (
        _PTR, _PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, _PTR,
        _F64, _F64, _F32, _INT, _F64, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _INT),
    "onlinenorm_backward": (
        _PTR, _PTR, _PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, _PTR, _PTR,
        _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _F64, _F32, _PTR, _PTR, _INT),
}


@functools.cache
def library() -> ctypes.CDLL:
    """The built kernels (built once per process at most; raises ``NativeUnavailable``): the build for this
    CPU, made now if need be, else, where it cannot be made, a usable portable build (see the top)."""
    try:
        path = build_native()
    except NativeUnavailable:
        path = _usable_portable()
        if path is None:
            raise
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
    """The same contract as ``functional.Kernels.forward`` for covered calls, except that

    - the kernel advances ``mu`` and ``var`` in place when they are contiguous float32 (else a float32
      copy), and returns the tensors it advanced: no new state tensors, no copies back;
    - the kernel adds to ``counters`` (the clamped-element and element counts, 0-d int64 on the CPU, as
      ``online_norm`` checks) itself;
    - the statistics end with one more: with clamping, a uint8 flag per (sample, channel) row, whether it
      has anything clamped (the backward recomputes the clamp mask only in those rows); else None.
    """
    x3 = x3.contiguous()
    n, c, m = x3.shape
    weight, bias, mu, var = map(_state, (weight, bias, mu, var))
    out = torch.empty_like(x3)
    mean, s2, mu_prev, invstd, scale, shift = torch.empty((6, n, c), dtype=torch.float32)
    ls_scale = torch.empty((n, 1), dtype=torch.float32) if ls_eps is not None else None
    clamped = torch.empty((n, c), dtype=torch.uint8) if clamp is not None else None
    clamp_count, seen_count = counters
    library().onlinenorm_forward(
        _ptr(x3), _ptr(out), n, c, m, _ptr(weight), _ptr(bias), _ptr(mu), _ptr(var),
        alpha_fwd, eps, _clamp_value(clamp), ls_eps is not None, ls_eps or 0.0,
        _ptr(mean), _ptr(s2), _ptr(mu_prev), _ptr(invstd), _ptr(scale), _ptr(shift), _ptr(ls_scale),
        _ptr(clamped), _ptr(clamp_count if clamp is not None else None), _ptr(seen_count), torch.get_num_threads())
    stats = (mean, s2, mu_prev, invstd, scale, shift, ls_scale, clamped)
    return out, mu, var, stats


def backward(grad, x3, weight, bias, u, v, stats, alpha_bkw: float, clamp: tuple[float, float] | None):
    """The same contract as ``functional._backward_math`` for covered calls (``stats`` from :func:`forward`),
    except that the kernel advances ``u`` and ``v`` in place as :func:`forward` does ``mu`` and ``var``."""
    grad, x3 = grad.contiguous(), x3.contiguous()
    n, c, m = x3.shape
    mean, s2, mu_prev, invstd, scale, shift, ls_scale, clamped = (None if t is None else t.contiguous() for t in stats)
    weight, bias, u, v = map(_state, (weight, bias, u, v))
    grad_x = torch.empty_like(x3)
    grad_weight, grad_bias = torch.empty((2, c), dtype=torch.float32)
    library().onlinenorm_backward(
        _ptr(grad), _ptr(x3), _ptr(grad_x), n, c, m, _ptr(weight), _ptr(bias), _ptr(mean), _ptr(s2), _ptr(mu_prev),
        _ptr(invstd), _ptr(scale), _ptr(shift), _ptr(ls_scale), _ptr(clamped), _ptr(u), _ptr(v),
        alpha_bkw, _clamp_value(clamp), _ptr(grad_weight), _ptr(grad_bias), torch.get_num_threads())
    return grad_x, grad_weight, grad_bias, u, v
