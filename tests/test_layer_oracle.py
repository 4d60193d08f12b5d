"""The layer against the independent per-sample float64 oracle (onlinenorm/reference.py)."""

from __future__ import annotations

import importlib.util
import itertools
import math

import pytest
import torch

import onlinenorm
from onlinenorm.reference import OracleOnlineNorm

REL_TOL = 1e-4
BATCHES = 3  # consecutive batches, so the carried state is exercised


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Normwise relative error ``max|a - e| / max|e|``."""
    return ((actual.double() - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def make_pair(kind, channels, ecm, affine, alpha_fwd, alpha_bkw, clamp_value=1.5, seed=0):
    """A layer with random affine parameters and an oracle with the same ones."""
    cls = onlinenorm.OnlineNorm2d if kind == "2d" else onlinenorm.OnlineNorm1d
    layer = cls(channels, alpha_fwd=alpha_fwd, alpha_bkw=alpha_bkw, affine=affine, ecm=ecm, clamp_value=clamp_value)
    gen = torch.Generator().manual_seed(seed)
    if affine:
        with torch.no_grad():
            layer.weight.copy_(torch.rand(channels, generator=gen) + 0.5)
            layer.bias.copy_(torch.randn(channels, generator=gen) * 0.5)
    oracle = OracleOnlineNorm(
        channels, alpha_fwd, alpha_bkw, ecm=ecm, clamp_value=clamp_value, weight=layer.weight, bias=layer.bias
    )
    return layer, oracle


def batch(kind, n, channels, spatial, gen):
    """Non-zero-mean, non-unit-scale inputs with per-channel offsets."""
    shape = (n, channels, *spatial) if kind == "2d" else (n, channels)
    offsets = torch.linspace(-3.0, 4.0, channels).view(1, channels, *([1] * (len(shape) - 2)))
    return torch.randn(shape, generator=gen) * 2.0 + offsets, torch.randn(shape, generator=gen)


CASES = [
    (kind, n, ecm, affine)
    for kind, n, ecm, affine in itertools.product(("1d", "2d"), (1, 2, 7, 128), onlinenorm.ECMS, (True, False))
]


@pytest.mark.parametrize("alphas", [(0.999, 0.99), (0.9, 0.75)], ids=["paper", "fast-decay"])
@pytest.mark.parametrize(
    "kind,n,ecm,affine", CASES, ids=[f"{k}-n{n}-{e}-{'affine' if a else 'plain'}" for k, n, e, a in CASES]
)
def test_matches_oracle_over_consecutive_batches(kind, n, ecm, affine, alphas):
    layer, oracle = make_pair(kind, 3, ecm, affine, *alphas)
    check_against_oracle(layer, oracle, kind, n, affine)


def check_against_oracle(layer, oracle, kind, n, affine, channels=3, spatial=(5, 3)):
    """Outputs, input and parameter gradients and the carried state over ``BATCHES`` batches."""
    gen = torch.Generator().manual_seed(n)
    for _ in range(BATCHES):
        x, grad_out = batch(kind, n, channels, spatial, gen)
        x.requires_grad_(True)
        layer.zero_grad()
        out = layer(x)
        out.backward(grad_out)
        want_out, want_dx, want_gw, want_gb, _ = oracle.step(x.detach(), grad_out)

        assert out.dtype == torch.float32
        assert rel_err(out, want_out) < REL_TOL
        assert rel_err(x.grad, want_dx) < REL_TOL
        if affine:
            assert rel_err(layer.weight.grad, want_gw) < REL_TOL
            assert rel_err(layer.bias.grad, want_gb) < REL_TOL
        for name in ("mu", "var", "u", "v"):
            assert rel_err(getattr(layer, name), getattr(oracle, name)) < REL_TOL, name


def test_clamped_activations_get_zero_gradient():
    layer, oracle = make_pair("2d", 4, "ac", True, 0.99, 0.9, clamp_value=0.8)
    x, grad_out = batch("2d", 16, 4, (7, 7), torch.Generator().manual_seed(3))
    x.requires_grad_(True)
    out = layer(x)
    out.backward(grad_out)
    *_, pre_clamp = oracle.step(x.detach(), grad_out)
    clamped = pre_clamp.abs() > 0.8
    assert 0.05 < clamped.double().mean() < 0.95  # both regions present
    assert torch.all(out.detach()[clamped].abs() == torch.tensor(0.8))
    # The control process leaks (1 - a_b) * v * y into every position, so the
    # input gradient is not zero there; the upstream gradient at y is. Check
    # it through the weight gradient, which sums only unclamped positions.
    y = (pre_clamp - layer.bias.detach().double()[:, None, None]) / layer.weight.detach().double()[:, None, None]
    want_gw = (grad_out.double() * y * ~clamped).sum(dim=(0, 2, 3))
    assert rel_err(layer.weight.grad, want_gw) < REL_TOL


def test_eval_mode_matches_oracle_and_changes_no_buffer():
    layer, oracle = make_pair("2d", 3, "ac", True, 0.9, 0.8)
    gen = torch.Generator().manual_seed(5)
    for _ in range(2):  # move the state away from its initial values first
        x, grad_out = batch("2d", 8, 3, (4, 5), gen)
        layer(x.requires_grad_()).backward(grad_out)
        oracle.step(x.detach(), grad_out)
    layer.eval()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    x, grad_out = batch("2d", 8, 3, (4, 5), gen)
    x.requires_grad_(True)
    out = layer(x)
    out.backward(grad_out)
    assert rel_err(out, oracle.evaluate(x.detach())) < REL_TOL
    after = layer.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert int(layer.seen_count) == 2 * 8 * 3 * 4 * 5  # eval does not count


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_layer_scaling_is_per_sample_rms(kind):
    layer, _ = make_pair(kind, 4, "ls", True, 0.9, 0.8)
    x, _ = batch(kind, 6, 4, (3, 3), torch.Generator().manual_seed(1))
    out = layer(x)
    dims = tuple(range(1, out.dim()))
    rms = out.double().square().mean(dims).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-4, atol=0)


COMPILED_CASES = [
    ("2d", 7, "ac", True, "compiled"),
    ("2d", 128, "none", False, "compiled"),
    ("2d", 7, "ls", True, "compiled"),
    ("1d", 2, "ls", True, "compiled"),
    ("2d", 7, "ac", True, "auto"),
    ("2d", 1, "none", True, "native"),
    # the C kernels: each ECM at a few samples, at many samples without the affine, and in 1d
    *(
        (kind, n, ecm, affine, "native")
        for ecm, (kind, n, affine) in itertools.product(
            ("ac", "ls"), [("2d", 7, True), ("2d", 128, False), ("1d", 2, True)]
        )
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind,n,ecm,affine,kernels",
    COMPILED_CASES,
    ids=[f"{k}-n{n}-{e}-{'affine' if a else 'plain'}-{kern}" for k, n, e, a, kern in COMPILED_CASES],
)
def test_compiled_kernels_match_oracle(kind, n, ecm, affine, kernels):
    """The torch.compile-fused path, the C kernels ("native") and "auto" (which takes them where a compiler
    works) run the same math: same tolerance, same carried state."""
    layer, oracle = make_pair(kind, 3, ecm, affine, 0.9, 0.75)
    layer.kernels = kernels
    check_against_oracle(layer, oracle, kind, n, affine)


@pytest.fixture
def portable_kernels(tmp_path, monkeypatch):
    """The C kernels' portable build (the Docker image's), loaded as a machine without a compiler loads it."""
    from onlinenorm.kernels import native

    if not native.portable_runs_here():
        pytest.skip(f"this CPU lacks the features of the portable build ({native.portable_build()})")
    monkeypatch.setenv("ONLINENORM_CACHE_DIR", str(tmp_path))
    path = native.build_portable()
    monkeypatch.setenv("CC", "/bin/false")  # no build for this CPU can be made: the portable one must serve
    native.library.cache_clear()
    try:
        assert native.library()._name == str(path)
        yield
    finally:
        native.library.cache_clear()  # later tests load this CPU's build again


@pytest.mark.parametrize("ecm", onlinenorm.ECMS)
def test_portable_c_kernels_match_oracle(portable_kernels, ecm):
    layer, oracle = make_pair("2d", 3, ecm, True, 0.9, 0.75)
    layer.kernels = "native"
    check_against_oracle(layer, oracle, "2d", 7, True)


# The C kernels work in blocks of about 2^17 floats per thread: many samples per block, or one sample's
# channels in groups when a sample is larger. Shapes that take each path (with a partial last block),
# against the eager kernels (oracle-tested above) over consecutive batches.
BLOCK_SHAPES = {"samples": (150, 16, 16, 16), "channel groups": (3, 40, 100, 100)}


def train_step(layer, x, grad_out):
    inp = x.clone().requires_grad_(True)
    out = layer(inp)
    out.backward(grad_out)
    return out.detach(), inp.grad


def clamp_value_clear_of(layer, batches, margin=1e-6):
    """A clamp value in [1, 1.5] that no pre-clamp output of ``layer`` on ``batches`` (run in order from its
    current state) comes within a relative ``margin`` of.

    Kernels round y' differently in the last bit or two, so an element that lands on the clamp may be clamped
    by one and not by another: both are right, but its gradient, and through the carried state every later
    sample's in its channel, then differ (about once in 30 runs of a 600k-element batch at c = 1).
    """
    probe = onlinenorm.OnlineNorm2d(layer.num_features, alpha_fwd=layer.alpha_fwd, ecm="none", kernels="eager")
    probe.load_state_dict(layer.state_dict())
    with torch.no_grad():
        values = torch.cat([probe(x).abs().flatten() for x in batches]).sort().values
    candidates = torch.linspace(1.0, 1.5, 2001)
    near = torch.searchsorted(values, candidates * (1 + margin)) - torch.searchsorted(values, candidates * (1 - margin))
    assert (near == 0).any(), "no clamp value in [1, 1.5] is clear of the batches' outputs"
    return candidates[(near == 0).nonzero()[0, 0]].item()


@pytest.mark.parametrize("ecm", ["ac", "ls"])  # layer scaling keeps each sample's channels in one block
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", BLOCK_SHAPES.values(), ids=BLOCK_SHAPES.keys())
def test_native_blocks_give_the_eager_numbers(shape, threads, ecm):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        native, eager = (
            onlinenorm.OnlineNorm2d(shape[1], alpha_fwd=0.9, alpha_bkw=0.8, ecm=ecm, kernels=kernels)
            for kernels in ("native", "eager")
        )
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():  # a non-trivial affine, so layer scaling's bias terms count
            native.weight.uniform_(0.5, 1.5, generator=gen)
            native.bias.uniform_(-0.5, 0.5, generator=gen)
        eager.load_state_dict(native.state_dict())
        batches = [(torch.randn(shape, generator=gen) * 2 + 1, torch.randn(shape, generator=gen)) for _ in range(2)]
        native.clamp_value = eager.clamp_value = clamp_value_clear_of(native, [x for x, _ in batches])
        for x, grad_out in batches:
            (out_n, dx_n), (out_e, dx_e) = train_step(native, x, grad_out), train_step(eager, x, grad_out)
            assert rel_err(out_n, out_e) < REL_TOL and rel_err(dx_n, dx_e) < REL_TOL
        for name in ("mu", "var", "u", "v"):
            assert rel_err(getattr(native, name), getattr(eager, name)) < REL_TOL, name
        assert native.clamp_count.item() == eager.clamp_count.item()
    finally:
        torch.set_num_threads(previous)


def test_native_masks_exactly_the_rows_that_clamped():
    """The C backward recomputes the clamp mask only in the (sample, channel) rows where the forward clamped
    something: batches with both kinds of rows give the eager numbers, and the oracle's."""
    shape, clamp = (16, 8, 6, 6), 4.0
    native, eager = (
        onlinenorm.OnlineNorm2d(8, alpha_fwd=0.9, alpha_bkw=0.8, clamp_value=clamp, kernels=kernels)
        for kernels in ("native", "eager")
    )
    layer, oracle = make_pair("2d", 8, "ac", True, 0.9, 0.8, clamp_value=clamp)
    layer.kernels = "native"
    gen = torch.Generator().manual_seed(3)
    for _ in range(BATCHES):
        x, grad_out = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        x[..., 2, 3] += torch.where(torch.rand(shape[:2], generator=gen) < 0.5, 30.0, 0.0)  # far out in half the rows
        (out_n, dx_n), (out_e, dx_e) = train_step(native, x, grad_out), train_step(eager, x, grad_out)
        assert rel_err(out_n, out_e) < REL_TOL and rel_err(dx_n, dx_e) < REL_TOL
        rows_clamped = (out_e.abs() >= clamp).flatten(2).any(dim=2)
        assert 0 < rows_clamped.sum() < rows_clamped.numel()  # both kinds of rows
        out, dx = train_step(layer, x, grad_out)
        want_out, want_dx, *_ = oracle.step(x, grad_out)
        assert rel_err(out, want_out) < REL_TOL and rel_err(dx, want_dx) < REL_TOL


def test_native_clamps_and_counts_an_infinite_output_but_not_a_nan():
    """The C kernels' clamp test is ``|y'| > c``: an infinite output is clamped and counted, a NaN neither
    (the eager kernels' rule; their scans spread a NaN over the whole channel, so they are not compared here)."""
    layer = onlinenorm.OnlineNorm2d(3, clamp_value=1.0, kernels="native")
    unclamped = onlinenorm.OnlineNorm2d(3, ecm="none", kernels="native")  # the same state: y' before the clamp
    gen = torch.Generator().manual_seed(4)
    x, grad_out = torch.randn(4, 3, 5, 5, generator=gen), torch.randn(4, 3, 5, 5, generator=gen)
    x[3, 1, 2, 2], x[3, 2, 0, 1] = math.nan, math.inf  # in the last sample: the others stay finite
    (out, _), (pre_clamp, _) = train_step(layer, x, grad_out), train_step(unclamped, x, grad_out)
    assert out[3, 1, 2, 2].isnan() and out[3, 2, 0, 1] == 1.0 and out.isnan().sum() == 1
    finite = pre_clamp.isfinite()
    assert torch.equal(out[finite], pre_clamp[finite].clamp(-1.0, 1.0))
    assert layer.clamp_count.item() == (pre_clamp.abs() > 1.0).sum().item() > 1


# The Triton kernels: on CUDA tensors where there is a GPU, else in Triton's interpreter on CPU tensors
# (tests/conftest.py sets TRITON_INTERPRET=1 on a machine without CUDA). The interpreter runs each program
# in Python, so these cases are small; together they cover every ECM with and without the affine, batch 1,
# 1d inputs, the half dtypes, and shapes with more channels than one scan program takes and rows longer
# than one step of a row's loop.
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
HALF_TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 5e-3}
TRITON_CASES = [
    (kind, n, ecm, affine)
    for kind, n, affine in (("2d", 7, True), ("2d", 1, False), ("1d", 5, True))
    for ecm in onlinenorm.ECMS
]


def triton_check(layer, oracle, shape, dtype=torch.float32, affine=True, seed=0):
    """The layer on ``TRITON_DEVICE`` with kernels="triton", against the oracle over ``BATCHES`` batches of
    ``shape``, inputs rounded to ``dtype`` once and shared with the oracle."""
    tol = HALF_TOLERANCE.get(dtype, REL_TOL)
    layer.kernels = "triton"
    layer.to(TRITON_DEVICE)
    gen = torch.Generator().manual_seed(seed)
    channels = shape[1]
    offsets = torch.linspace(-3.0, 4.0, channels).view(1, channels, *([1] * (len(shape) - 2)))
    for _ in range(BATCHES):
        x = (torch.randn(shape, generator=gen) * 2.0 + offsets).to(dtype)
        grad_out = torch.randn(shape, generator=gen).to(dtype)
        inp = x.to(TRITON_DEVICE).requires_grad_(True)
        layer.zero_grad()
        out = layer(inp)
        out.backward(grad_out.to(TRITON_DEVICE))
        want_out, want_dx, want_gw, want_gb, _ = oracle.step(x.double(), grad_out.double())
        assert out.dtype == dtype and inp.grad.dtype == dtype
        assert rel_err(out.cpu(), want_out) < tol
        assert rel_err(inp.grad.cpu(), want_dx) < tol
        if affine:
            assert rel_err(layer.weight.grad.cpu(), want_gw) < tol
            assert rel_err(layer.bias.grad.cpu(), want_gb) < tol
        for name in ("mu", "var", "u", "v"):
            assert getattr(layer, name).dtype == torch.float32
            assert rel_err(getattr(layer, name).cpu(), getattr(oracle, name)) < tol, name


@pytest.mark.slow
@needs_triton
@pytest.mark.parametrize(
    "kind,n,ecm,affine", TRITON_CASES, ids=[f"{k}-n{n}-{e}-{'affine' if a else 'plain'}" for k, n, e, a in TRITON_CASES]
)
def test_triton_kernels_match_oracle(kind, n, ecm, affine):
    layer, oracle = make_pair(kind, 3, ecm, affine, 0.9, 0.75)
    triton_check(layer, oracle, (n, 3, 5, 3) if kind == "2d" else (n, 3), affine=affine)


@pytest.mark.slow
@needs_triton
@pytest.mark.parametrize("dtype", list(HALF_TOLERANCE), ids=str)
@pytest.mark.parametrize("ecm", onlinenorm.ECMS)
def test_triton_kernels_match_oracle_in_half_precision(dtype, ecm):
    """bfloat16 and float16 activations, float32 statistics and state."""
    layer, oracle = make_pair("2d", 4, ecm, True, 0.9, 0.75)
    triton_check(layer, oracle, (6, 4, 3, 5), dtype=dtype)


@pytest.mark.slow
@needs_triton
@pytest.mark.parametrize("ecm", ["ac", "ls"])
def test_triton_kernels_match_oracle_at_odd_shapes(ecm):
    """37 channels (two scan programs, the second part-full; layer scaling sums a sample's channels over two
    blocks) and rows of 1100 activations (two steps of a row's loop, the second part-full)."""
    layer, oracle = make_pair("2d", 37, ecm, True, 0.9, 0.75)
    triton_check(layer, oracle, (3, 37, 1, 2))
    layer, oracle = make_pair("2d", 2, ecm, True, 0.9, 0.75)
    triton_check(layer, oracle, (2, 2, 44, 25))


@needs_triton
def test_triton_kernels_mask_exactly_the_rows_that_clamped_and_count_them():
    """As the C kernels: the backward recomputes the clamp mask only in rows the forward flagged; both kinds of
    rows give the oracle's numbers, and the clamp counter matches the oracle's clamped elements."""
    shape, clamp = (6, 4, 5, 5), 4.0
    layer, oracle = make_pair("2d", 4, "ac", True, 0.9, 0.8, clamp_value=clamp)
    layer.kernels = "triton"
    layer.to(TRITON_DEVICE)
    gen = torch.Generator().manual_seed(3)
    clamped_total = 0
    for _ in range(2):
        x, grad_out = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        x[..., 2, 3] += torch.where(torch.rand(shape[:2], generator=gen) < 0.5, 30.0, 0.0)  # far out in half the rows
        out, dx = train_step(layer, x.to(TRITON_DEVICE), grad_out.to(TRITON_DEVICE))
        want_out, want_dx, _, _, pre_clamp = oracle.step(x, grad_out)
        rows_clamped = (pre_clamp.abs() > clamp).flatten(2).any(dim=2)
        assert 0 < rows_clamped.sum() < rows_clamped.numel()  # both kinds of rows
        assert rel_err(out.cpu(), want_out) < REL_TOL and rel_err(dx.cpu(), want_dx) < REL_TOL
        clamped_total += int((pre_clamp.abs() > clamp).sum())
    assert layer.clamp_count.item() == clamped_total
    assert layer.seen_count.item() == 2 * x.numel()
