"""Tables on the standard fixture, against numbers worked out by hand
(grid best accuracy = 0.60 +0.02 c=2 +0.03 a_f=0.999 +0.01 a_b=0.99 +-0.01 seed)."""

from __future__ import annotations

import pytest

from analysis import tables


def test_comparison_picks_each_normalizers_best_setting(results):
    table = tables.comparison(results.trials).set_index("normalizer")
    assert list(table.index) == ["BatchNorm", "OnlineNorm (Activation Clamping)", "OnlineNorm (Layer Scaling)"]
    assert table.loc["OnlineNorm (Activation Clamping)", "best_val_acc"] == pytest.approx(0.66)  # median of .67/.65
    assert table.loc["OnlineNorm (Activation Clamping)", "best_val_loss"] == pytest.approx(0.84)
    assert table.loc["OnlineNorm (Activation Clamping)", "setting"] == (
        "alpha_bkw=0.99, alpha_fwd=0.999, clamp_value=2.0"
    )
    assert table.loc["BatchNorm", "best_val_acc"] == pytest.approx(0.65)  # median of .66/.64
    assert table.loc["BatchNorm", "best_val_loss"] == pytest.approx(0.85)
    assert table.loc["OnlineNorm (Layer Scaling)", "best_val_acc"] == pytest.approx(0.64)
    assert table["runs"].tolist() == [2, 2, 2]


def test_variability_per_setting(results):
    table = tables.variability(results.trials).set_index("setting")
    row = table.loc["alpha_bkw=0.9, alpha_fwd=0.99, clamp_value=1.0"]  # seeds: 0.61, 0.59
    assert (row["runs"], row["diverged"]) == (2, 0)
    assert [row[k] for k in ("median", "min", "max", "mean")] == pytest.approx([0.60, 0.59, 0.61, 0.60])
    assert row["std"] == pytest.approx(0.0141421356)
    diverged = table.loc["alpha_bkw=0.99, alpha_fwd=0.999, clamp_value=8.0"]
    assert (diverged["runs"], diverged["diverged"]) == (1, 1)
    assert diverged["std"] != diverged["std"]
    # running, errored and pending trials are not outcomes yet
    assert "alpha_bkw=0.99, alpha_fwd=0.999, clamp_value=3.0" not in table.index
    assert len(table) == 8 + 1 + 2  # clamping settings, the diverged one, two baselines


def test_sensitivity_per_step(results):
    table = tables.sensitivity(results.trials)
    steps = {(r.parameter, r.from_value, r.to_value): (r.change, r.pairs) for r in table.itertuples()}
    assert steps.keys() == {
        ("clamp_value", 1.0, 2.0),
        ("clamp_value", 2.0, 8.0),
        ("alpha_fwd", 0.99, 0.999),
        ("alpha_bkw", 0.9, 0.99),
    }
    assert steps[("clamp_value", 1.0, 2.0)] == pytest.approx((0.02, 4))
    assert steps[("clamp_value", 2.0, 8.0)] == pytest.approx((0.30 - 0.66, 1))
    assert steps[("alpha_fwd", 0.99, 0.999)] == pytest.approx((0.03, 4))
    assert steps[("alpha_bkw", 0.9, 0.99)] == pytest.approx((0.01, 4))


def test_best_settings(results):
    table = tables.best_settings(results.trials, n=2)
    assert table[["clamp_value", "alpha_fwd", "alpha_bkw"]].values.tolist() == [[2.0, 0.999, 0.99], [2.0, 0.999, 0.9]]
    assert table["best_val_acc"].tolist() == pytest.approx([0.66, 0.65])
    assert table["runs"].tolist() == [2, 2]
