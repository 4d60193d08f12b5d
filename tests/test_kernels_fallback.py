"""kernels="auto" where torch.compile cannot build kernels: one warning, then the eager kernels' exact numbers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# A fresh process whose C++ compiler is /bin/false and whose inductor caches are
# off and empty, so nothing compiled earlier can stand in for the compile.
AUTO_WITHOUT_A_COMPILER = """
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
assert len(warned_a) == 1 and not warned_e, warned_a
print(warned_a[0])
"""


@pytest.mark.slow
def test_auto_kernels_fall_back_to_eager_with_one_warning_when_compiling_fails(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ONLINENORM_KERNELS"} | {
        "CXX": "/bin/false", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path),
        "TORCHINDUCTOR_FX_GRAPH_CACHE": "0", "TORCHINDUCTOR_AUTOGRAD_CACHE": "0"}
    done = subprocess.run([sys.executable, "-c", AUTO_WITHOUT_A_COMPILER], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("onlinenorm: compiling the layer's kernels failed, running them eagerly from now on")
    assert "C++ compiler" in done.stdout


def test_the_default_is_auto_unless_the_environment_says_otherwise(monkeypatch):
    from onlinenorm.functional import default_kernels

    monkeypatch.delenv("ONLINENORM_KERNELS", raising=False)
    assert default_kernels() == "auto"
    monkeypatch.setenv("ONLINENORM_KERNELS", "compiled")
    assert default_kernels() == "compiled"
