"""``analysis.findings`` recovers the effects planted in generated experiments
(see ``fake_experiment.planted_experiment`` and ``grid_experiment``)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import fake_experiment as fx
import pandas as pd
import pytest

import analysis

C3, C2, C1, C5, C8 = (f"OnlineNorm (Activation Clamping), clamp_value={c}" for c in ("3.0", "2.0", "1.0", "5.0", "8.0"))
BATCH, LAYER_SCALING = "BatchNorm", "OnlineNorm (Layer Scaling)"
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return analysis.load(fx.planted_experiment(tmp_path_factory.mktemp("planted")))


@pytest.fixture(scope="module")
def found(planted):
    return analysis.findings(planted)


def one(found, **where) -> pd.Series:
    mask = pd.Series(True, index=found.index)
    for column, value in where.items():
        mask &= found[column].eq(value)
    assert mask.sum() == 1, (where, found.loc[mask, ["kind", "subject", "against", "metric"]])
    return found[mask].iloc[0]


def baseline(found, subject, against=BATCH, metric="best_val_acc") -> pd.Series:
    return one(found, kind="baseline", subject=subject, against=against, metric=metric)


def readme_findings_columns() -> list[str]:
    """The findings frame's leading columns in the order the README's Analysis section names them
    ("a tidy frame, one row per finding, with `kind`, `question`, ... and `reason` (...).")."""
    sentence = re.search(r"one row per finding,\s+with (.*?)\. The questions", README.read_text(), flags=re.S)
    assert sentence, "README.md no longer lists the findings columns after 'one row per finding, with'"
    return re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", sentence.group(1)))


def test_every_row_has_a_question_a_verdict_and_a_sentence(found):
    documented = readme_findings_columns()
    assert list(found.columns[: len(documented)]) == documented
    assert found[["question", "subject", "verdict", "sentence"]].notna().all().all()
    assert found["kind"].drop_duplicates().tolist() == [
        "stopped",
        "removal",
        "failed",
        "baseline",
        "reference",
        "safe_range",
        "clamp_limit",
        "gaussian",
        "gaussian_depth",
        "knob",
        "speed",
    ]


def test_equal_by_construction_is_equivalent_and_two_points_worse_is_worse(found):
    equal = baseline(found, C3)
    assert (equal["estimate"], equal["ci_low"], equal["ci_high"]) == pytest.approx((0, 0, 0), abs=1e-12)
    assert equal["verdict"] == "equivalent" and equal["n_runs"] == 4  # paired over seeds 0-3
    assert "+0.0 points" in equal["sentence"] and "paired over 4 seeds: equivalent" in equal["sentence"]
    worse = baseline(found, C2, metric="final_val_acc")
    assert worse["estimate"] == pytest.approx(-0.02) and worse["verdict"] == "worse"
    assert "\u22122.0 points, 95% CI [\u22122.0, \u22122.0]" in worse["sentence"]
    assert baseline(found, LAYER_SCALING)["verdict"] == "equivalent"  # 0.5 points inside the 1-point margin


def test_a_single_run_is_inconclusive_with_its_reason(found):
    single = baseline(found, C8)
    assert single["verdict"] == "inconclusive" and single["n_runs"] == 1
    assert single["estimate"] == pytest.approx(0.870 - 0.903)  # one shared seed: against the mean of four
    assert math.isnan(single["ci_low"]) and math.isnan(single["ci_high"])
    assert single["reason"] == "a single run gives no interval"


def test_two_runs_that_agree_on_a_collapse_are_worse(tmp_path):
    trials = [
        fx.FakeTrial(fx.config(norm="batch", ecm="none", seed=s), fx.rows([0.4, 0.5, 0.9 + s / 100])) for s in (0, 1)
    ]
    trials += [
        fx.FakeTrial(fx.config(clamp_value=0.5, seed=s), fx.rows([0.1, 0.1, 0.2 + s / 100], unclamped=0.1))
        for s in (0, 1)
    ]
    found = analysis.findings(analysis.load(fx.write_experiment(tmp_path / "two", trials)))
    collapse = one(found, kind="baseline", against=BATCH, metric="best_val_acc")
    assert collapse["estimate"] == pytest.approx(-0.7) and collapse["verdict"] == "worse"
    assert (collapse["ci_low"], collapse["ci_high"]) == pytest.approx((-0.7, -0.7))
    assert one(found, kind="removal")["verdict"] == "worse"


def test_clamp_removal_collapse_is_flagged_first(found):
    collapse = one(found, kind="removal", subject=C1)
    assert collapse["verdict"] == "worse" and collapse["estimate"] == pytest.approx(0.20 - 0.898)
    safe = one(found, kind="removal", subject=C3)
    assert safe["verdict"] == "equivalent" and safe["estimate"] == pytest.approx(-0.005)
    lines = analysis.questions.to_text(found, margin=0.01, confidence=0.95).splitlines()
    assert lines[1].startswith(f"  ! Removing the clamp at inference is NOT safe at: {C1} (\u221269.8 points)")


def test_failed_run_is_named_and_comparisons_given_without_it(found):
    failed = one(found, kind="failed")
    assert failed["subject"] == C5 and failed["n_failed"] == 1 and failed["n_runs"] == 4
    assert failed["estimate"] == pytest.approx(0.156 - 0.902)
    assert "1 of 4 runs failed to learn (seed 3: 15.6%), 74.6 points below the median 90.2%" in failed["sentence"]
    with_it = baseline(found, C5)
    assert with_it["n_failed"] == 1 and with_it["verdict"] == "inconclusive"
    assert with_it["estimate"] == pytest.approx((0.156 - 0.906) / 4)
    assert with_it["verdict_without_failed"] == "equivalent" and with_it["estimate_without_failed"] == 0
    assert "without the 1 run that failed to learn: +0.0 points" in with_it["sentence"]
    assert baseline(found, C3)["n_failed"] == 0 and pd.isna(baseline(found, C3)["verdict_without_failed"])


def test_stopped_trial_is_counted_and_left_out(planted, found):
    trials = planted.trials
    stopped = trials[trials["state"].eq("stopped")]
    assert len(stopped) == 1 and stopped["epochs_done"].tolist() == [1] and stopped["seed"].tolist() == [4]
    row = one(found, kind="stopped")
    assert row["estimate"] == 1
    assert "1 of 26 trials were stopped early by the scheduler (1 at epoch 1" in row["sentence"]
    assert one(found, kind="removal", subject=C3)["n_runs"] == 4  # seed 4 is not among its runs
    variability = analysis.tables.variability(trials).set_index("setting")
    assert variability.loc["clamp_value=3.0", "max"] == pytest.approx(0.906)  # not the stopped trial's 0.99


def test_learning_speed_epochs_are_exact(found):
    speed = found[found["kind"].eq("speed")].set_index(["subject", "metric"])["estimate"]
    assert speed.to_dict() == {
        (BATCH, "epochs to 90% of batch norm's final val_acc"): 2,
        (BATCH, "epochs to 95% of batch norm's final val_acc"): 3,
        (LAYER_SCALING, "epochs to 90% of batch norm's final val_acc"): 4,
        (LAYER_SCALING, "epochs to 95% of batch norm's final val_acc"): 5,
        (C3, "epochs to 90% of batch norm's final val_acc"): 2,
        (C3, "epochs to 95% of batch norm's final val_acc"): 3,
    }


def test_a_normalizer_that_never_reaches_the_target_says_so(tmp_path):
    trials = [fx.FakeTrial(fx.config(norm="batch", ecm="none", seed=s), fx.rows([0.5, 0.8, 0.9])) for s in (0, 1)]
    trials += [fx.FakeTrial(fx.config(clamp_value=2.0, seed=s), fx.rows([0.3, 0.3, 0.3 + s / 10])) for s in (0, 1)]
    found = analysis.findings(analysis.load(fx.write_experiment(tmp_path / "slow", trials)))
    slow = one(
        found,
        kind="speed",
        subject="OnlineNorm (Activation Clamping)",
        metric="epochs to 90% of batch norm's final val_acc",
    )
    assert slow["verdict"] == "not reached" and pd.isna(slow["estimate"])
    assert slow["reason"] == "2 of 2 runs never reached it in 3 epochs"
    batch = one(found, kind="speed", subject=BATCH, metric="epochs to 95% of batch norm's final val_acc")
    assert batch["estimate"] == 3


def test_clamp_fraction_against_gaussian(found):
    ratio = found[found["kind"].isin(["gaussian", "gaussian_depth"])].set_index("subject")
    assert ratio.loc["c=3", "estimate"] == pytest.approx(3) and ratio.loc["c=3", "verdict"] == "heavier"
    assert ratio.loc["c=2", "estimate"] == pytest.approx(1) and ratio.loc["c=2", "verdict"] == "gaussian"
    assert ratio.loc["c=3, depth 2 (layer1.0.norm2)", "estimate"] == pytest.approx(5)
    assert ratio.loc["c=3, depth 0 (stem.norm)", "verdict"] == "gaussian"
    assert ratio.loc["c=8", "verdict"] == "inconclusive" and ratio.loc["c=3", "n_runs"] == 4


def test_safe_clamp_range(found):
    safe = one(found, kind="safe_range")
    assert safe["subject"] == "alpha_fwd=0.999, alpha_bkw=0.99" and safe["against"] == C3
    assert "clamp values c = 1, 3 are equivalent to the best (c=3, 90.3%)" in safe["sentence"]
    limit = one(found, kind="clamp_limit")
    assert limit["verdict"] == "measured" and limit["estimate"] == pytest.approx(math.erfc(2 / math.sqrt(2)))
    assert "beyond a clamp fraction of 0.0455 (c=2: \u22122.0 points" in limit["sentence"]


def test_reference_figures(found):
    reference = found[found["kind"].eq("reference")].set_index("subject")
    assert reference.loc[BATCH, "verdict"] == "equivalent" and reference.loc[BATCH, "estimate"] == pytest.approx(0)
    assert reference.loc[LAYER_SCALING, "estimate"] == pytest.approx(0.898 - 0.95)
    assert reference.loc[LAYER_SCALING, "verdict"] == "worse"
    assert reference.loc["norm=group", "verdict"] == "unsupported"
    assert "no complete run in planted matches norm=group" in reference.loc["norm=group", "reason"]


def test_planted_variance_shares_are_recovered(tmp_path):
    found = analysis.findings(analysis.load(fx.grid_experiment(tmp_path)))
    shares = found[found["kind"].eq("knob")].set_index("subject")
    assert shares["estimate"].to_dict() == pytest.approx(
        {"alpha_fwd": 9 / 18, "clamp_value": 4 / 18, "seed": 4 / 18, "alpha_bkw": 1 / 18}
    )
    assert (shares["ci_low"] <= shares["estimate"]).all() and (shares["estimate"] <= shares["ci_high"]).all()
    assert shares.index[0] == "alpha_fwd" and shares["n_runs"].eq(16).all()


def test_unsupported_findings_are_reported_with_their_reason(tmp_path):
    lone = fx.write_experiment(tmp_path / "lone", [fx.FakeTrial(fx.config(clamp_value=2.0), fx.rows([0.5, 0.6, 0.7]))])
    found = analysis.findings(analysis.load(lone))
    unsupported = found[found["verdict"].eq("unsupported")].set_index(["kind", "against"], drop=False)
    assert set(unsupported["kind"]) == {"failed", "baseline", "safe_range", "gaussian", "knob", "speed"}
    assert unsupported["reason"].str.len().gt(10).all() and unsupported["sentence"].str.len().gt(30).all()
    assert unsupported.loc[("baseline", BATCH), "reason"] == "no complete BatchNorm run"
    assert unsupported.loc[("baseline", LAYER_SCALING), "reason"] == "no complete OnlineNorm (Layer Scaling) run"
    assert "one clamp value (c=2) was tried" in found.loc[found["kind"].eq("safe_range"), "reason"].iloc[0]
    assert one(found, kind="removal")["verdict"] == "inconclusive"


def test_stopped_baseline_is_named_as_the_reason(tmp_path):
    trials = [fx.FakeTrial(fx.config(clamp_value=2.0, seed=s), fx.rows(fx.curve(0.6))) for s in (0, 1)]
    trials.append(fx.FakeTrial(fx.config(norm="batch", ecm="none"), fx.rows([0.5])))  # TERMINATED after 1 of 3
    found = analysis.findings(analysis.load(fx.write_experiment(tmp_path / "asha", trials)))
    assert one(found, kind="baseline", against=BATCH)["reason"] == "no complete BatchNorm run (1 stopped)"


def test_bad_margin_is_refused(planted):
    with pytest.raises(ValueError, match="margin must be in"):
        analysis.findings(planted, margin=2)


def test_trials_that_did_not_complete_are_named(results):
    incomplete = one(analysis.findings(results), kind="incomplete")
    assert incomplete["sentence"] == (
        "3 of 24 trials did not complete (1 running, 1 errored, 1 pending) and are left out of every comparison."
    )


def test_no_complete_trial_still_answers_every_question(tmp_path):
    running = fx.write_experiment(
        tmp_path / "running",
        [
            fx.FakeTrial(fx.config(seed=0), fx.rows([0.5]), status="RUNNING"),
            fx.FakeTrial(fx.config(seed=1), [], status="PENDING"),
        ],
    )
    found = analysis.findings(analysis.load(running))
    assert found["kind"].tolist() == [
        "incomplete",
        "removal",
        "failed",
        "baseline",
        "baseline",
        "safe_range",
        "gaussian",
        "knob",
        "speed",
    ]
    assert found["verdict"].iloc[1:].eq("unsupported").all() and found["reason"].iloc[1:].notna().all()
