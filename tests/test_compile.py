"""torch.compile(fullgraph=True) on a model that contains the layer: no graph break, same numbers, and the fused
kernels' custom ops (checked with torch.library.opcheck) called from the compiled graph."""

import copy
import importlib.util

import pytest
import torch
from torch import nn

import onlinenorm


def small_model():
    """One layer on "auto" kernels (the C kernels' custom ops, kept in the compiled graph), the rest eager (the
    model's compile traces into their math)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        onlinenorm.OnlineNorm2d(8, alpha_fwd=0.9, alpha_bkw=0.8, clamp_value=1.0, kernels="auto"),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3),
        onlinenorm.OnlineNorm2d(4, alpha_fwd=0.9, alpha_bkw=0.8, ecm="ls"),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
        onlinenorm.OnlineNorm1d(5, ecm="none"),
    )


def close(a, b):
    return ((a - b).abs().max() / b.abs().max()).item() < 1e-4


@pytest.mark.slow
def test_fullgraph_compiled_model_matches_eager():
    eager = small_model()
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True)  # fullgraph: any graph break raises
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(8, 3, 10, 10, generator=gen) * 2 + 1
        outputs = []
        for model in (eager, compiled):
            inp = x.clone().requires_grad_(True)
            out = model(inp)
            out.square().sum().backward()
            outputs.append((out.detach(), inp.grad))
        (out_e, dx_e), (out_c, dx_c) = outputs
        assert close(out_c, out_e) and close(dx_c, dx_e)
    for (name, p_e), p_c in zip(eager.named_parameters(), compiled_model.parameters(), strict=False):
        assert close(p_c.grad, p_e.grad), name
    for (name, b_e), b_c in zip(eager.named_buffers(), compiled_model.buffers(), strict=False):
        assert torch.allclose(b_c.double(), b_e.double(), rtol=1e-4, atol=1e-6), name
    assert onlinenorm.clamp_fractions(compiled_model) == onlinenorm.clamp_fractions(eager)
    assert 0 < onlinenorm.clamp_fractions(eager)["all"] < 1


def op_arguments(ecm, n=4, c=3, m=10, dtype=torch.float32, device="cpu"):
    """Arguments of a fused-kernel forward op and of its backward (after running the forward on a copy)."""
    gen = torch.Generator().manual_seed(2)
    x = (torch.randn(n, c, m, generator=gen) * 2 + 1).to(device, dtype)
    weight, bias = torch.rand(c, generator=gen).to(device) + 0.5, torch.randn(c, generator=gen).to(device)
    state = [torch.tensor(values, device=device) for values in ([0.1, -0.2, 0.3], [1.0, 2.0, 0.5])]
    counters = [torch.zeros((), dtype=torch.int64, device=device) for _ in range(2)]
    clamp_value, ls_eps = {"ac": (1.0, None), "ls": (None, 1e-5), "none": (None, None)}[ecm]
    forward_args = (x, weight, bias, *state, 0.9, 1e-5, clamp_value, ls_eps, *counters)
    return forward_args, clamp_value


def check_ops_with_opcheck(backend, ecm, dtype=torch.float32, device="cpu"):
    from onlinenorm.kernels import ops

    op = ops.OPS[backend]
    forward_args, clamp_value = op_arguments(ecm, dtype=dtype, device=device)
    torch.library.opcheck(op.forward, forward_args)
    copies = [a.clone() if isinstance(a, torch.Tensor) else a for a in forward_args]
    _, *stats = op.forward(*copies)
    x, weight, bias = forward_args[:3]
    grad = torch.randn_like(x)
    u, v = torch.tensor([0.0, 0.1, -0.1], device=device), torch.tensor([0.2, 0.0, -0.3], device=device)
    torch.library.opcheck(op.backward, (grad, x, weight, bias, u, v, *stats, 0.8, clamp_value))


@pytest.mark.parametrize("ecm", onlinenorm.ECMS)
def test_native_custom_ops_pass_opcheck(ecm):
    """Schema (with the state they mutate), fake kernels and tracing of the C kernels' ops."""
    check_ops_with_opcheck("native", ecm)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.parametrize("ecm", onlinenorm.ECMS)
def test_triton_custom_ops_pass_opcheck(ecm):
    check_ops_with_opcheck("triton", ecm, device="cuda" if torch.cuda.is_available() else "cpu")


class GraphRecorder:
    """An AOT backend that keeps the forward and backward FX graphs it is given and runs them as they are."""

    def __init__(self):
        from torch._dynamo.backends.common import aot_autograd

        self.graphs = {"forward": [], "backward": []}
        self.backend = aot_autograd(fw_compiler=self._keep("forward"), bw_compiler=self._keep("backward"))

    def _keep(self, direction):
        from torch._functorch.aot_autograd import make_boxed_func

        def compiler(gm, example_inputs):
            self.graphs[direction].append(str(gm.graph))
            return make_boxed_func(gm.forward)

        return compiler

    def calls(self, direction, op):
        return sum(graph.count(op) for graph in self.graphs[direction])


@pytest.mark.slow
@pytest.mark.parametrize(
    "kernels",
    [
        "native",
        pytest.param(
            "triton",
            marks=pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
        ),
    ],
)
def test_fullgraph_compile_keeps_the_fused_kernels(kernels):
    """torch.compile(model, fullgraph=True) calls the custom ops, once per layer and direction, instead of
    tracing the math into inductor's code; the compiled model's numbers are the uncompiled one's."""
    device = "cuda" if kernels == "triton" and torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    eager = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        onlinenorm.OnlineNorm2d(4, alpha_fwd=0.9, alpha_bkw=0.8, clamp_value=1.0, kernels=kernels),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3),
        onlinenorm.OnlineNorm2d(4, alpha_fwd=0.9, alpha_bkw=0.8, ecm="ls", kernels=kernels),
    ).to(device)
    model = copy.deepcopy(eager)
    recorder = GraphRecorder()
    compiled = torch.compile(model, fullgraph=True, backend=recorder.backend)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)).to(device)
    for module in (eager, compiled):
        module(x).square().sum().backward()
    assert recorder.calls("forward", f"onlinenorm.{kernels}_forward") == 2
    assert recorder.calls("backward", f"onlinenorm.{kernels}_backward") == 2
    for (name, b_e), b_c in zip(eager.named_buffers(), model.buffers(), strict=False):
        assert torch.allclose(b_c, b_e, rtol=1e-5, atol=1e-6), name
    for (name, p_e), p_c in zip(eager.named_parameters(), model.parameters(), strict=False):
        assert close(p_c.grad, p_e.grad), name
