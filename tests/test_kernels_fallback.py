"""Kernel choices where compilers are missing: "auto" falls back with a warning, "native" says what is wrong,
and a built C library is reused from its cache."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

# A fresh process whose C and C++ compilers are /bin/false and whose kernel
# caches are off and empty, so nothing built earlier can stand in for a build.
AUTO_WITHOUT_COMPILERS = """
import warnings, torch, onlinenorm
x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 2 + 1
runs = []
for kernels in ("auto", "eager"):
    layer = onlinenorm.OnlineNorm2d(3, alpha_fwd=0.9, alpha_bkw=0.8, clamp_value=1.0, kernels=kernels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # the second batch runs on the state the first left
            inp = x.clone().requires_grad_(True)
            out = layer(inp)
            out.square().sum().backward()
    warned = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    runs.append((out.detach(), inp.grad, dict(layer.state_dict()), warned))
(out_a, dx_a, state_a, warned_a), (out_e, dx_e, state_e, warned_e) = runs
assert torch.equal(out_a, out_e) and torch.equal(dx_a, dx_e), "auto fell back to something other than eager"
assert all(torch.equal(state_a[k], state_e[k]) for k in state_e)
assert not warned_e, warned_e
print("\\n".join(warned_a))
"""

NATIVE = """
import torch, onlinenorm
layer = onlinenorm.OnlineNorm2d(3, kernels="native")
layer(torch.randn(4, 3, 5, 5)).sum().backward()
from onlinenorm.kernels import native
print(native.library()._name)
"""


def run_python(code: str, tmp_path, **env: str) -> subprocess.CompletedProcess:
    clean = (
        {k: v for k, v in os.environ.items() if k not in ("ONLINENORM_KERNELS", "CC", "CXX")}
        | {
            "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
            "TORCHINDUCTOR_FX_GRAPH_CACHE": "0",
            "TORCHINDUCTOR_AUTOGRAD_CACHE": "0",
            "ONLINENORM_CACHE_DIR": str(tmp_path / "onlinenorm"),
        }
        | env
    )
    return subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True)


@pytest.mark.slow
def test_auto_kernels_fall_back_to_eager_with_a_warning_per_missing_compiler(tmp_path):
    done = run_python(AUTO_WITHOUT_COMPILERS, tmp_path, CC="/bin/false", CXX="/bin/false")
    assert done.returncode == 0, done.stderr[-3000:]
    native_warning, compiled_warning = done.stdout.strip().split("\n")
    assert native_warning.startswith("onlinenorm: the C kernels are unavailable (/bin/false could not build")
    assert compiled_warning.startswith("onlinenorm: compiling the layer's kernels failed, running them eagerly")
    assert "C++ compiler" in compiled_warning


@pytest.mark.slow
def test_native_kernels_without_a_c_compiler_say_so(tmp_path):
    done = run_python(NATIVE, tmp_path, CC="/bin/false")
    assert done.returncode != 0
    assert "NativeUnavailable: /bin/false could not build online_norm.c: exit status 1, no output" in done.stderr


@pytest.mark.slow
def test_the_built_library_is_reused_from_its_cache(tmp_path):
    built = run_python(NATIVE, tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    path = built.stdout.strip()
    assert path.startswith(str(tmp_path / "onlinenorm")) and os.path.exists(path)
    reused = run_python(NATIVE, tmp_path, CC="/bin/false")  # no compiler now: only the cache can serve it
    assert reused.returncode == 0, reused.stderr[-3000:]
    assert reused.stdout.strip() == path


def onlinenorm_command(*args: str, tmp_path, **env: str) -> subprocess.CompletedProcess:
    code = f"import sys; from onlinenorm.cli import main; sys.exit(main({list(args)!r}))"
    return run_python(code, tmp_path, **env)


@pytest.mark.slow
def test_a_portable_build_serves_a_machine_without_a_compiler(tmp_path):
    """What the Docker image does: build the portable library where a compiler is, use it where none is."""
    from onlinenorm.kernels import native

    built = onlinenorm_command("kernels", "build", "--portable", tmp_path=tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    path = built.stdout.strip()
    assert path.startswith(str(tmp_path / "onlinenorm")) and os.path.exists(path)
    used = run_python(NATIVE, tmp_path, CC="/bin/false")
    if not native.portable_runs_here():
        assert used.returncode != 0 and "/bin/false could not build" in used.stderr  # the build's error, as before
        pytest.skip("this CPU lacks the portable build's features")
    assert used.returncode == 0, used.stderr[-3000:]
    assert used.stdout.strip() == path


@pytest.mark.slow
def test_building_the_kernels_for_this_cpu_prints_the_cached_path(tmp_path):
    built = onlinenorm_command("kernels", "build", tmp_path=tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    assert run_python(NATIVE, tmp_path, CC="/bin/false").stdout.strip() == built.stdout.strip()


@pytest.mark.slow
def test_kernels_build_failures_are_one_line(tmp_path):
    no_compiler = onlinenorm_command("kernels", "build", tmp_path=tmp_path, CC="/bin/false")
    assert no_compiler.returncode == 2
    assert no_compiler.stderr == (
        "onlinenorm kernels: error: /bin/false could not build online_norm.c: exit status 1, no output\n"
    )
    (tmp_path / "a-file").write_text("")
    unwritable = onlinenorm_command(
        "kernels", "build", tmp_path=tmp_path, ONLINENORM_CACHE_DIR=str(tmp_path / "a-file")
    )
    assert unwritable.returncode == 2 and unwritable.stderr.count("\n") == 1, unwritable.stderr
    assert unwritable.stderr.startswith(f"onlinenorm kernels: error: could not write the built kernels to {tmp_path}")
    assert unwritable.stderr.endswith("set ONLINENORM_CACHE_DIR to a writable folder\n")


def test_the_default_is_auto_unless_the_environment_says_otherwise(monkeypatch):
    from onlinenorm.functional import default_kernels

    monkeypatch.delenv("ONLINENORM_KERNELS", raising=False)
    assert default_kernels() == "auto"
    monkeypatch.setenv("ONLINENORM_KERNELS", "compiled")
    assert default_kernels() == "compiled"


C_TYPES = {
    "ptr": ctypes.c_void_p,
    "int64_t": ctypes.c_int64,
    "double": ctypes.c_double,
    "float": ctypes.c_float,
    "int": ctypes.c_int,
}


@pytest.mark.parametrize("function", ["onlinenorm_forward", "onlinenorm_backward"])
def test_the_ctypes_table_matches_the_c_prototype(function):
    """native.SIGNATURES, the one table the ctypes argument types and the calls' named arguments come from,
    lists the C prototype's arguments by name, type and position."""
    import re

    from onlinenorm.kernels import native

    source = native.SOURCE.read_text()
    parameters = re.search(rf"void {function}\(([^)]*)\)", source).group(1)
    prototype = []
    for parameter in parameters.split(","):
        words = parameter.replace("*", " * ").split()
        kind = "ptr" if "*" in words else words[-2]
        prototype.append((words[-1], C_TYPES[kind]))
    assert list(native.SIGNATURES[function]) == prototype
