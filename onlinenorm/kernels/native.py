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

from onlinenorm.kernels.types import BackwardCall, ForwardCall, ForwardStats

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
    "x86_64": PortableBuild(
        "x86-64-v3",
        ("-march=x86-64-v3",),
        frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    ),
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
        raise NativeUnavailable(
            f"could not write the built kernels to {target.parent} ({err.strerror or err}); "
            "set ONLINENORM_CACHE_DIR to a writable folder"
        ) from err
    try:
        partial = scratch / target.name
        built = subprocess.run(
            [compiler, *FLAGS, *flags, "-o", str(partial), str(SOURCE), "-lm"], capture_output=True, text=True
        )
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


# The C prototypes, argument by argument: (name as in csrc/online_norm.c, ctypes type). Tensors go in as their
# data_ptr() addresses (None for NULL): no ctypes pointer objects to build per call.
_PTR, _I64, _F64, _INT, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int, ctypes.c_float
SIGNATURES = {
    "onlinenorm_forward": (
        ("x", _PTR),
        ("out", _PTR),
        ("n", _I64),
        ("channels", _I64),
        ("m", _I64),
        ("weight", _PTR),
        ("bias", _PTR),
        ("mu_state", _PTR),
        ("var_state", _PTR),
        ("alpha", _F64),
        ("eps", _F64),
        ("clamp_value", _F32),
        ("layer_scaling", _INT),
        ("ls_eps", _F64),
        ("mean_out", _PTR),
        ("s2_out", _PTR),
        ("mu_prev_out", _PTR),
        ("invstd_out", _PTR),
        ("scale_out", _PTR),
        ("shift_out", _PTR),
        ("ls_scale_out", _PTR),
        ("clamped_out", _PTR),
        ("clamped_total", _PTR),
        ("seen_total", _PTR),
        ("threads", _INT),
    ),
    "onlinenorm_backward": (
        ("grad", _PTR),
        ("x", _PTR),
        ("grad_x", _PTR),
        ("n", _I64),
        ("channels", _I64),
        ("m", _I64),
        ("weight", _PTR),
        ("bias", _PTR),
        ("mean_in", _PTR),
        ("s2_in", _PTR),
        ("mu_prev_in", _PTR),
        ("invstd_in", _PTR),
        ("scale_in", _PTR),
        ("shift_in", _PTR),
        ("ls_scale_in", _PTR),
        ("clamped_in", _PTR),
        ("u_state", _PTR),
        ("v_state", _PTR),
        ("alpha", _F64),
        ("clamp_value", _F32),
        ("grad_weight_out", _PTR),
        ("grad_bias_out", _PTR),
        ("threads", _INT),
    ),
}
# One NamedTuple per C function, its fields the arguments in the prototype's order: calls name every argument.
_ForwardArgs = NamedTuple("_ForwardArgs", [(name, object) for name, _ in SIGNATURES["onlinenorm_forward"]])
_BackwardArgs = NamedTuple("_BackwardArgs", [(name, object) for name, _ in SIGNATURES["onlinenorm_backward"]])


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
    for name, arguments in SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = [ctype for _, ctype in arguments], None
    return lib


def covers(x3: torch.Tensor) -> bool:
    """Whether the C kernels run this call: float32 on the CPU."""
    return x3.device.type == "cpu" and x3.dtype == torch.float32


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _common_arguments(
    x3: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, clamp_value: float | None
) -> dict[str, int | float | None]:
    """The arguments both C functions take alike: the activations ``x`` and their shape, the affine parameters,
    the clamp value (infinite without clamping) and the thread count."""
    n, c, m = x3.shape
    return dict(
        x=_ptr(x3),
        n=n,
        channels=c,
        m=m,
        weight=_ptr(weight),
        bias=_ptr(bias),
        clamp_value=math.inf if clamp_value is None else clamp_value,
        threads=torch.get_num_threads(),
    )


def _stats_pointers(stats: ForwardStats, direction: str) -> dict[str, int | None]:
    """The addresses of ``stats`` as the C arguments name them: ``<field>_out`` for the forward that writes
    them, ``<field>_in`` for the backward that reads them (``mean_out``, ..., ``clamped_in``)."""
    return {f"{field}_{direction}": _ptr(t) for field, t in zip(ForwardStats._fields, stats, strict=True)}


def forward(call: ForwardCall) -> tuple[torch.Tensor, ForwardStats]:
    """Training forward of float32 CPU ``call.x3`` ``(N, C, M)``: returns the output and the statistics.

    Advances ``mu`` and ``var`` in place, and adds the clamped and all elements to ``clamp_count`` and
    ``seen_count`` (either may be None) itself: no tensor operation around the call. With clamping the
    statistics end with a uint8 flag per row, whether it has anything clamped.
    """
    call, out, stats = call.prepared()
    clamping = call.clamp_value is not None
    library().onlinenorm_forward(
        *_ForwardArgs(
            **_common_arguments(call.x3, call.weight, call.bias, call.clamp_value),
            out=_ptr(out),
            mu_state=_ptr(call.mu),
            var_state=_ptr(call.var),
            alpha=call.alpha_fwd,
            eps=call.eps,
            layer_scaling=call.ls_eps is not None,
            ls_eps=call.ls_eps or 0.0,
            **_stats_pointers(stats, "out"),
            clamped_total=_ptr(call.clamp_count if clamping else None),
            seen_total=_ptr(call.seen_count),
        )
    )
    return out, stats


def backward(call: BackwardCall) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training backward (the control process) over float32 CPU ``call.grad`` ``(N, C, M)`` with :func:`forward`'s
    statistics: returns the input gradient and the weight and bias gradients (``(C,)``, summed over the
    batch); advances ``u`` and ``v`` in place."""
    call, grad_x, grad_weight, grad_bias = call.prepared()
    stats = ForwardStats(*(None if t is None else t.contiguous() for t in call.stats))
    library().onlinenorm_backward(
        *_BackwardArgs(
            **_common_arguments(call.x3, call.weight, call.bias, call.clamp_value),
            grad=_ptr(call.grad),
            grad_x=_ptr(grad_x),
            **_stats_pointers(stats, "in"),
            u_state=_ptr(call.u),
            v_state=_ptr(call.v),
            alpha=call.alpha_bkw,
            grad_weight_out=_ptr(grad_weight),
            grad_bias_out=_ptr(grad_bias),
        )
    )
    return grad_x, grad_weight, grad_bias
