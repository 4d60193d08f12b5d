"""The batch-order scans against a plain loop, including where running products underflow."""

import pytest
import torch

from onlinenorm.kernels.scan import decay_operators, geometric_scan, linear_scan


def geometric(b, a, h0):
    return geometric_scan(b, h0, decay_operators(b.shape[0], a, b.device, b.dtype))


def loop(a, b, h0):
    """The history ``h_0..h_N`` of ``h_t = a_t h_{t-1} + b_t``, one step at a time."""
    history = [h0]
    for a_t, b_t in zip(a, b, strict=False):
        history.append(a_t * history[-1] + b_t)
    return torch.stack(history)


@pytest.mark.parametrize("n", [1, 2, 7, 128, 1000])
@pytest.mark.parametrize("a", [0.999, 0.9, 0.5, 0.01])
def test_geometric_scan_matches_loop(n, a):
    gen = torch.Generator().manual_seed(n)
    b, h0 = torch.randn(n, 3, generator=gen, dtype=torch.float64), torch.randn(3, generator=gen, dtype=torch.float64)
    got = geometric(b, a, h0)
    assert got.shape == (n + 1, 3)
    torch.testing.assert_close(got, loop(torch.full((n, 3), a, dtype=torch.float64), b, h0))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 128, 1000])
def test_linear_scan_matches_loop(n):
    gen = torch.Generator().manual_seed(n)
    a = torch.rand(n, 4, generator=gen, dtype=torch.float64) * 1.8 - 0.9  # signs mixed, |a| < 1
    b, h0 = torch.randn(n, 4, generator=gen, dtype=torch.float64), torch.randn(4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(linear_scan(a, b, h0), loop(a, b, h0))


def test_scans_stay_finite_where_running_products_underflow():
    # 0.5 ** 1000 is far below float32's smallest normal: dividing by the
    # running product would give inf/nan; the scans must not.
    n = 1000
    b = torch.ones(n, 2)
    h0 = torch.full((2,), 3.0)
    want = loop(torch.full((n, 2), 0.5, dtype=torch.float64), b.double(), h0.double()).float()
    for got in (geometric(b, 0.5, h0), linear_scan(torch.full((n, 2), 0.5), b, h0)):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want)
