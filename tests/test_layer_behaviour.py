"""Layer behaviour beyond the numerics: state, eval, telemetry, dtypes, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import onlinenorm
from onlinenorm.reference import OracleOnlineNorm


def inputs(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen) * 1.5 + 0.7, torch.randn(shape, generator=gen)


# The tests below that touch the kernels run on the suite's default (eager) and on the C kernels.
KERNELS = ("eager", "native")


@pytest.fixture(params=KERNELS)
def kernels(request, monkeypatch):
    """Layers built in the test use these kernels (their default is read from the environment)."""
    monkeypatch.setenv("ONLINENORM_KERNELS", request.param)
    return request.param


def train_step(module, x, grad_out):
    x = x.clone().requires_grad_(True)
    out = module(x)
    out.backward(grad_out)
    return out.detach(), x.grad


def test_state_dict_round_trip_reproduces_next_batch_bit_for_bit(kernels):
    layer = onlinenorm.OnlineNorm2d(5, alpha_fwd=0.95, alpha_bkw=0.9, clamp_value=1.0)
    for seed in range(2):
        train_step(layer, *inputs((9, 5, 6, 6), seed))
    layer.zero_grad()
    assert set(layer.state_dict()) == {"weight", "bias", "mu", "var", "u", "v"}
    restored = onlinenorm.OnlineNorm2d(5, alpha_fwd=0.95, alpha_bkw=0.9, clamp_value=1.0)
    restored.load_state_dict(copy.deepcopy(layer.state_dict()))
    x, grad_out = inputs((9, 5, 6, 6), 7)
    out_a, dx_a = train_step(layer, x, grad_out)
    out_b, dx_b = train_step(restored, x, grad_out)
    assert torch.equal(out_a, out_b) and torch.equal(dx_a, dx_b)
    for name in ("mu", "var", "u", "v"):
        assert torch.equal(getattr(layer, name), getattr(restored, name))
    assert torch.equal(layer.weight.grad, restored.weight.grad)


def test_state_persists_across_batches():
    layer = onlinenorm.OnlineNorm2d(3)
    train_step(layer, *inputs((4, 3, 5, 5), 0))
    assert not torch.equal(layer.mu, torch.zeros(3))
    assert not torch.equal(layer.v, torch.zeros(3))
    layer.reset_state()
    assert torch.equal(layer.var, torch.ones(3)) and torch.equal(layer.u, torch.zeros(3))


def model_with_two_clamps(clamp_value):
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        onlinenorm.OnlineNorm2d(4, clamp_value=clamp_value),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3),
        onlinenorm.OnlineNorm2d(4, clamp_value=clamp_value / 4),
        onlinenorm.OnlineNorm2d(4, ecm="ls"),
    )


def test_clamp_fractions_equal_a_direct_count(kernels):
    torch.manual_seed(0)
    model = model_with_two_clamps(0.7)
    norms = [model[1], model[4]]
    oracles = [
        OracleOnlineNorm(4, m.alpha_fwd, m.alpha_bkw, ecm="ac", clamp_value=m.clamp_value, weight=m.weight, bias=m.bias)
        for m in norms
    ]
    captured = []
    for norm in norms:  # record what each clamping layer sees in the real forward
        norm.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
    clamped, seen = [0, 0], [0, 0]
    for seed in range(2):
        captured.clear()
        model(inputs((6, 3, 9, 9), seed)[0]).sum().backward()
        for i, (oracle, inp) in enumerate(zip(oracles, captured, strict=False)):
            *_, pre = oracle.step(inp, torch.zeros_like(inp))
            clamped[i] += int((pre.abs() > oracle.clamp_value).sum())
            seen[i] += inp.numel()
    fractions = onlinenorm.clamp_fractions(model)
    assert set(fractions) == {"1", "4", "all"}  # the ls layer does not clamp
    assert fractions["1"] == clamped[0] / seen[0]
    assert fractions["4"] == clamped[1] / seen[1]
    assert fractions["all"] == sum(clamped) / sum(seen)
    assert 0 < fractions["4"] < 1 and 0 < fractions["1"] < 1

    onlinenorm.reset_clamp_stats(model)
    assert all(f != f for f in onlinenorm.clamp_fractions(model).values())  # nan: nothing seen


def test_clamp_fractions_of_a_model_without_clamping_is_empty():
    assert onlinenorm.clamp_fractions(nn.Sequential(onlinenorm.OnlineNorm1d(3, ecm="none"))) == {}


def test_clamp_disabled_removes_clamp_and_restores_it_after_an_exception():
    model = model_with_two_clamps(0.5).eval()
    x, _ = inputs((2, 3, 8, 8), 1)
    clamped_out = model[1](model[0](x))
    assert clamped_out.abs().max() <= 0.5
    with pytest.raises(RuntimeError, match="boom"), onlinenorm.clamp_disabled(model):  # noqa: PT012
        assert model[1](model[0](x)).abs().max() > 0.5
        raise RuntimeError("boom")
    assert model[1].clamp_enabled and model[4].clamp_enabled
    assert torch.equal(model[1](model[0](x)), clamped_out)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("ecm", onlinenorm.ECMS)
def test_half_precision_inputs(dtype, ecm, kernels):
    full = onlinenorm.OnlineNorm2d(4, alpha_fwd=0.9, alpha_bkw=0.8, ecm=ecm, clamp_value=1.0)
    half = copy.deepcopy(full)
    x, grad_out = (t.to(dtype) for t in inputs((8, 4, 5, 5), 2))
    want_out, want_dx = train_step(full, x.float(), grad_out.float())  # same rounded values
    out, dx = train_step(half, x, grad_out)
    assert out.dtype == dtype and dx.dtype == dtype
    assert half.mu.dtype == torch.float32 and half.v.dtype == torch.float32
    tol = 2e-2 if dtype == torch.bfloat16 else 5e-3
    torch.testing.assert_close(out.float(), want_out, rtol=tol, atol=tol)
    torch.testing.assert_close(dx.float(), want_dx, rtol=tol, atol=tol * want_dx.abs().max().item())
    half.eval()
    assert half(x).dtype == dtype


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(alpha_fwd=1.0), r"alpha_fwd must be a number in the open interval \(0, 1\); got 1.0"),
        (dict(alpha_fwd=0), r"alpha_fwd must be a number in the open interval \(0, 1\); got 0"),
        (dict(alpha_bkw=-0.5), r"alpha_bkw must be a number in the open interval \(0, 1\)"),
        (dict(clamp_value=0.0), r"clamp_value must be a positive, finite number; got 0.0"),
        (dict(clamp_value=-1), r"clamp_value must be a positive, finite number"),
        (dict(clamp_value=float("inf")), r"clamp_value must be a positive, finite number; got inf"),
        (dict(ecm="clamp"), r"ecm must be one of 'ac', 'ls', 'none'; got 'clamp'"),
        (dict(eps=0.0), r"eps must be a positive, finite number"),
        (dict(ls_eps=-1e-5), r"ls_eps must be a positive, finite number"),
        (dict(num_features=0), r"num_features must be a positive integer"),
        (dict(kernels="fast"), r"kernels must be one of 'auto', 'eager', 'compiled', 'native', 'triton'; got 'fast'"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, message):
    args = dict(num_features=4) | kwargs
    with pytest.raises(ValueError, match=message):
        onlinenorm.OnlineNorm2d(**args)


@pytest.mark.parametrize("counter", ["clamp_count", "seen_count"])
def test_functional_counters_must_be_int64_and_nothing_moves_otherwise(counter):
    """The C kernels add into the counters' memory as int64: another dtype is refused before any state moves."""
    state = [torch.zeros(4), torch.ones(4), torch.zeros(4), torch.zeros(4)]
    kwargs = {counter: torch.zeros((), dtype=torch.int32)}
    with pytest.raises(
        ValueError,
        match=rf"{counter} must be a torch.int64 tensor on the input's device \(cpu\); "
        r"got torch.int32 on cpu",
    ):
        onlinenorm.functional.online_norm(torch.randn(2, 4, 3, 3), *state, clamp_value=1.0, **kwargs)
    assert torch.equal(state[0], torch.zeros(4)) and torch.equal(state[1], torch.ones(4))


@pytest.mark.parametrize(
    "cls,shape,message",
    [
        (onlinenorm.OnlineNorm2d, (2, 4, 5), r"OnlineNorm2d expects a 4-d input \(N, C, H, W\); got shape \(2, 4, 5\)"),
        (
            onlinenorm.OnlineNorm2d,
            (2, 3, 5, 5),
            r"OnlineNorm2d\(4\) expects 4 channels in dim 1; got shape \(2, 3, 5, 5\)",
        ),
        (onlinenorm.OnlineNorm1d, (2, 4, 5, 5), r"OnlineNorm1d expects a 2-d input \(N, C\)"),
        (onlinenorm.OnlineNorm1d, (2, 5), r"OnlineNorm1d\(4\) expects 4 channels"),
    ],
)
def test_wrong_input_shape_raises_value_error(cls, shape, message):
    with pytest.raises(ValueError, match=message):
        cls(4)(torch.zeros(shape))


@pytest.mark.parametrize("cls,shape", [(onlinenorm.OnlineNorm1d, (6, 4)), (onlinenorm.OnlineNorm2d, (6, 4, 5, 5))])
@pytest.mark.parametrize("ecm", onlinenorm.ECMS)
def test_inplace_op_after_the_layer(cls, shape, ecm, kernels):
    """ReLU(inplace=True) right after the layer, as in ResNet stems, gives the out-of-place numbers."""
    results = []
    for inplace in (True, False):
        model = nn.Sequential(cls(4, ecm=ecm, clamp_value=1.0), nn.ReLU(inplace=inplace))
        results.append(train_step(model, *inputs(shape, 4)))
    (out_a, dx_a), (out_b, dx_b) = results
    assert torch.equal(out_a, out_b) and torch.equal(dx_a, dx_b)


def test_a_training_step_invalidates_eval_outputs_saved_for_backward(kernels):
    """The C kernels advance the state buffers in place through a raw pointer; autograd must still see it,
    as it sees an in-place op: a backward through an eval output computed before the update is refused."""
    layer = onlinenorm.OnlineNorm2d(3)
    x, _ = inputs((4, 3, 5, 5), seed=0)
    layer.eval()
    stale = layer(x.clone().requires_grad_(True))
    layer.train()
    layer(x).sum().backward()  # advances mu, var (forward) and u, v (backward)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        stale.sum().backward()
