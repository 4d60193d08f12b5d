"""torch.compile(fullgraph=True) on a model that contains the layer: no graph break, same numbers."""

import copy

import pytest
import torch
from torch import nn

import onlinenorm


def small_model():
    """One layer on "auto" kernels (themselves compiled: the model's compile traces into them), the rest eager."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), onlinenorm.OnlineNorm2d(8, alpha_fwd=0.9, alpha_bkw=0.8, clamp_value=1.0, kernels="auto"), nn.ReLU(),
        nn.Conv2d(8, 4, 3), onlinenorm.OnlineNorm2d(4, alpha_fwd=0.9, alpha_bkw=0.8, ecm="ls"), nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5), onlinenorm.OnlineNorm1d(5, ecm="none"))


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
    for (name, p_e), p_c in zip(eager.named_parameters(), compiled_model.parameters()):
        assert close(p_c.grad, p_e.grad), name
    for (name, b_e), b_c in zip(eager.named_buffers(), compiled_model.buffers()):
        assert torch.allclose(b_c.double(), b_e.double(), rtol=1e-4, atol=1e-6), name
    assert onlinenorm.clamp_fractions(compiled_model) == onlinenorm.clamp_fractions(eager)
    assert 0 < onlinenorm.clamp_fractions(eager)["all"] < 1
