"""The layer on a CUDA device against the float64 oracle (skipped, with its reason, where there is none).

On a machine with a GPU: ``make bench-gpu`` runs these, the Triton kernels' oracle tests on the GPU,
and the GPU benchmarks.
"""

import pytest
import torch

import onlinenorm
from onlinenorm.reference import OracleOnlineNorm

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def rel_err(actual, expected):
    return ((actual.double().cpu() - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("kernels", ("eager", "compiled", "triton", "auto"))  # auto on CUDA: triton
@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("ecm", onlinenorm.ECMS)
def test_cuda_layer_matches_oracle(kernels, dtype, ecm):
    torch.manual_seed(0)
    layer = onlinenorm.OnlineNorm2d(8, alpha_fwd=0.9, alpha_bkw=0.8, ecm=ecm, clamp_value=1.5, kernels=kernels)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.normal_(0.0, 0.5)
    oracle = OracleOnlineNorm(8, 0.9, 0.8, ecm=ecm, clamp_value=1.5, weight=layer.weight, bias=layer.bias)
    layer.cuda()
    for _ in range(3):
        x = (torch.randn(64, 8, 7, 9) * 2 + 1).to(dtype)  # rounded once, shared with the oracle
        grad_out = torch.randn(64, 8, 7, 9).to(dtype)
        x_dev = x.cuda().requires_grad_(True)
        layer.zero_grad()
        out = layer(x_dev)
        out.backward(grad_out.cuda())
        want_out, want_dx, want_gw, want_gb, _ = oracle.step(x.double(), grad_out.double())
        assert out.dtype == dtype and x_dev.grad.dtype == dtype
        assert rel_err(out, want_out) < TOLERANCE[dtype]
        assert rel_err(x_dev.grad, want_dx) < TOLERANCE[dtype]
        assert rel_err(layer.weight.grad, want_gw) < TOLERANCE[dtype]
        assert rel_err(layer.bias.grad, want_gb) < TOLERANCE[dtype]
        for name in ("mu", "var", "u", "v"):
            assert getattr(layer, name).dtype == torch.float32
            assert rel_err(getattr(layer, name), getattr(oracle, name)) < TOLERANCE[dtype], name


def test_auto_kernels_run_the_triton_kernels_on_cuda():
    """On CUDA, "auto" is the Triton kernels: the profiler sees each of them run once."""
    layer = onlinenorm.OnlineNorm2d(8, kernels="auto").cuda()
    x = torch.randn(4, 8, 5, 5, device="cuda")
    layer(x).sum().backward()  # compiled by Triton on first use, outside the profile
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        layer(x).sum().backward()
        torch.cuda.synchronize()
    names = [event.name for event in profile.events()]
    for kernel in (
        "forward_row_moments",
        "forward_scan",
        "forward_output",
        "backward_row_sums",
        "backward_scan",
        "backward_grad_x",
    ):
        assert sum(kernel in name for name in names) == 1, (kernel, sorted(set(names)))
