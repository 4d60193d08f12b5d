"""Sampled search and trackers in the spec: sampling, reproducibility, dry-run, and bad sections rejected."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

from onlinenorm.cli import main
from sweeps.search import Axis
from sweeps.spec import SpecError, load_spec, parse_spec

SPECS = Path(__file__).resolve().parents[1] / "sweeps" / "specs"
SPACE = {
    "clamp_value": {"loguniform": [0.5, 8]},
    "alpha_fwd": {"decay": [0.99, 0.9999]},
    "alpha_bkw": {"decay": [0.9, 0.999]},
}
RANDOM = {
    "name": "sampled",
    "dataset": {"name": "cifar10", "data_dir": "data/x"},
    "model": "mlp",
    "train": {"ecm": "ac"},
    "search": {"type": "random", "num_samples": 5, "seed": 3},
    "space": SPACE,
    "grid": {"seed": [0, 1]},
}
OPTUNA = {**RANDOM, "search": {"type": "optuna", "num_samples": 4, "metric": "val_acc"}}


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    return caught.value.problems


def test_random_search_crosses_every_sampled_point_with_the_grid():
    spec = parse_spec(RANDOM)
    assert len(spec.trials) == 5 * 2
    points = {(t["clamp_value"], t["alpha_fwd"], t["alpha_bkw"]) for t in spec.trials}
    assert len(points) == 5
    for point in points:  # each point has both seeds
        assert sorted(
            t["seed"] for t in spec.trials if (t["clamp_value"], t["alpha_fwd"], t["alpha_bkw"]) == point
        ) == [0, 1]
    for trial in spec.trials:
        assert 0.5 <= trial["clamp_value"] <= 8
        assert 0.99 <= trial["alpha_fwd"] <= 0.9999 and 0.9 <= trial["alpha_bkw"] <= 0.999
    assert set(spec.swept_keys) == {"clamp_value", "alpha_fwd", "alpha_bkw", "seed"}


def test_search_seed_makes_the_points_reproducible():
    first, again = parse_spec(RANDOM).trials, parse_spec(RANDOM).trials
    other = parse_spec({**RANDOM, "search": {**RANDOM["search"], "seed": 4}}).trials
    assert first == again
    assert {t["clamp_value"] for t in first}.isdisjoint({t["clamp_value"] for t in other})


def test_decay_draws_one_minus_alpha_log_uniformly():
    """Each decade of 1 - alpha in [1e-4, 1e-1] holds a third of the draws; a uniform alpha would put ~0 below 1e-3."""
    values = np.array(Axis("alpha_fwd", "decay", (0.9, 0.9999)).domain().sample(size=6000, random_state=0))
    assert values.min() >= 0.9 and values.max() <= 0.9999
    decades = np.histogram(np.log10(1 - values), bins=[-4, -3, -2, -1])[0] / len(values)
    assert np.allclose(decades, 1 / 3, atol=0.03), decades


def test_every_distribution_samples_inside_its_bounds():
    raw = {
        **RANDOM,
        "space": {
            "lr": {"uniform": [0.01, 0.1]},
            "batch_size": {"randint": [8, 12]},
            "ecm": {"choice": ["ac", "ls"]},
            "clamp_value": {"loguniform": [1, 100]},
        },
        "search": {"type": "random", "num_samples": 20, "seed": 0},
        "grid": {},
    }
    trials = parse_spec(raw).trials
    assert all(0.01 <= t["lr"] <= 0.1 and 1 <= t["clamp_value"] <= 100 for t in trials)
    assert {t["batch_size"] for t in trials} <= {8, 9, 10, 11} and all(isinstance(t["batch_size"], int) for t in trials)
    assert {t["ecm"] for t in trials} == {"ac", "ls"}


def test_optuna_spec_keeps_the_grid_as_templates():
    spec = parse_spec(OPTUNA)
    assert [t["seed"] for t in spec.trials] == [0, 1]
    assert spec.search.metric == "val_acc" and spec.search.mode == "max" and spec.search.num_samples == 4
    assert [axis.key for axis in spec.search.space] == ["clamp_value", "alpha_fwd", "alpha_bkw"]


def test_optuna_suggestions_repeat_over_the_grid_and_survive_a_resume(tmp_path):
    """Each suggestion runs at both seeds; TPE is told the mean; a restored searcher continues a half-run group."""
    from ray.tune.search import SearchGenerator

    from sweeps.searchers import tune_search

    spec = parse_spec(OPTUNA)
    searcher = tune_search(spec)[1]["search_alg"]
    configs = [searcher.suggest(f"t{index}") for index in range(3)]
    sampled = [{key: config[key] for key in SPACE} for config in configs]
    assert [config["seed"] for config in configs] == [0, 1, 0]
    assert sampled[0] == sampled[1] != sampled[2]
    template = {k: v for k, v in spec.trials[0].items() if k not in SPACE}
    assert {k: v for k, v in configs[0].items() if k not in SPACE} == template  # the grid point's config
    searcher.on_trial_complete("t0", {"val_acc": 0.5})
    searcher.on_trial_complete("t1", {"val_acc": 0.7})
    SearchGenerator(searcher).save_to_dir(str(tmp_path), "session")  # what Tune saves, and restores on resume

    restored = tune_search(spec)[1]["search_alg"]
    SearchGenerator(restored).restore_from_dir(str(tmp_path))
    assert restored.suggest("t3") == {**configs[2], "seed": 1}  # the second seed of the running suggestion
    restored.on_trial_complete("t2", {"val_acc": 0.1})
    restored.on_trial_complete("t3", {"val_acc": 0.3})
    values = [trial.value for trial in restored.searcher._ot_study.trials]
    assert values == pytest.approx([0.6, 0.2])


def test_dry_run_shows_what_is_sampled_and_the_same_points_twice(tmp_path, capsys):
    path = tmp_path / "sampled.yaml"
    path.write_text(yaml.safe_dump(RANDOM))
    outputs = []
    for _ in range(2):
        assert main(["sweep", "run", str(path), "--dry-run"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    lines = outputs[0].splitlines()
    assert lines[0] == "sweep sampled: 10 trials: 5 random points (seed 3) x 2 grid points"
    assert "  sampled: clamp_value ~ loguniform[0.5, 8]" in lines
    assert "  sampled: alpha_fwd ~ decay[0.99, 0.9999]" in lines
    first = parse_spec(RANDOM).trials[0]
    assert f"clamp_value={first['clamp_value']}" in lines[4] and f"alpha_fwd={first['alpha_fwd']}" in lines[4]
    assert len(lines) == 1 + 3 + 10


def test_dry_run_of_an_optuna_search(tmp_path, capsys):
    path = tmp_path / "optuna.yaml"
    path.write_text(yaml.safe_dump(OPTUNA))
    assert main(["sweep", "run", str(path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        "sweep sampled: 8 trials: optuna (TPE) suggests 4 points "
        "(maximizing the mean val_acc over each point's 2 grid runs"
    )
    assert lines[-2:] == ["    0  seed=0", "    1  seed=1"]


def test_shipped_sampled_spec():
    spec = load_spec(SPECS / "clamp_search.yaml")
    assert spec.search.type == "random" and len(spec.trials) == 16
    assert {axis.key: axis.distribution for axis in spec.search.space} == {
        "clamp_value": "loguniform",
        "alpha_fwd": "decay",
        "alpha_bkw": "decay",
    }


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            {"space": {"clamp_value": {"lognormal": [1, 2]}}},
            "space.clamp_value: unknown distribution 'lognormal'; "
            "use one of uniform, loguniform, randint, choice, decay",
        ),
        (
            {"space": {"clamp_value": {"uniform": [4, 2]}}},
            "space.clamp_value.uniform: low must be < high; got low=4, high=2",
        ),
        (
            {"space": {"batch_size": {"randint": [8, 8]}}},
            "space.batch_size.randint: low must be < high; got low=8, high=8",
        ),
        ({"space": {"alpha_fwd": {"decay": [0.9, 1.0]}}}, "space.alpha_fwd.decay: bounds must lie in (0, 1)"),
        ({"space": {"alpha_bkw": {"decay": [0, 0.9]}}}, "space.alpha_bkw.decay: bounds must lie in (0, 1)"),
        ({"space": {"clamp_value": {"loguniform": [0, 8]}}}, "space.clamp_value.loguniform: bounds must be > 0"),
        (
            {"space": {"clamp_value": {"uniform": [-1, 8]}}},
            "space.clamp_value.uniform: clamp_value must be a number in (0.0, inf)",
        ),
        ({"space": {"seed": {"randint": [0, 9]}}}, "space.seed: also a grid axis"),
        ({"space": {"colour": {"choice": [1]}}}, "space.colour: not a training-config key"),
        ({"space": {}}, "space: required with search type random"),
        ({"search": {"type": "annealing"}}, "search.type: must be one of grid, random, optuna; got 'annealing'"),
        ({"search": {"type": "random", "num_samples": 0}}, "search.num_samples: must be an integer >= 1"),
        ({"search": {"type": "optuna", "num_samples": 4}}, "search.metric: required with type optuna"),
        (
            {"search": {"type": "random", "num_samples": 2, "metric": "val_acc"}},
            "search.metric: only used by search type optuna",
        ),
        ({"search": {"type": "grid"}}, "space: sampled keys need search.type random or optuna"),
        ({"tracking": {"neptune": {}}}, "tracking.neptune: unknown key"),
        ({"tracking": {"wandb": {"mode": "shared"}}}, "tracking.wandb.mode: must be one of online, offline, disabled"),
        ({"tracking": {"mlflow": {"tracking_uri": 5}}}, "tracking.mlflow.tracking_uri: must be a string; got 5"),
    ],
)
def test_bad_search_and_tracking_sections(change, expected):
    problems = problems_of({**RANDOM, **change})
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(
    "change, package, expected",
    [
        (
            {"search": OPTUNA["search"]},
            "optuna",
            "search.type: optuna needs the optuna package: pip install 'onlinenorm[optuna]'",
        ),
        (
            {"tracking": {"mlflow": {}}},
            "mlflow",
            "tracking.mlflow: needs the mlflow package: pip install 'onlinenorm[mlflow]'",
        ),
        (
            {"tracking": {"wandb": {}}},
            "wandb",
            "tracking.wandb: needs the wandb package: pip install 'onlinenorm[wandb]'",
        ),
    ],
)
def test_a_missing_optional_package_is_a_spec_error(monkeypatch, change, package, expected):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == package else find_spec(name, *args)
    )
    assert problems_of({**RANDOM, **change}) == [expected]


def test_cli_rejects_bad_sections_with_one_line_each_exit_2_and_writes_nothing(tmp_path, capsys):
    import ray

    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                **RANDOM,
                "space": {"alpha_fwd": {"decay": [0.9, 1.5]}, "lr": {"gauss": [0, 1]}},
                "search": {"type": "optuna", "num_samples": 2},
            }
        )
    )
    storage = tmp_path / "results"
    assert main(["sweep", "run", str(path), "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[1:] == [
        "  search.metric: required with type optuna: the metric TPE optimizes, one of val_acc, val_acc_unclamped, "
        "val_loss, train_acc, train_loss",
        "  space.alpha_fwd.decay: bounds must lie in (0, 1) (decay factors); got [0.9, 1.5]",
        "  space.lr: unknown distribution 'gauss'; use one of uniform, loguniform, randint, choice, decay",
    ]
    assert not storage.exists() and not ray.is_initialized()


def test_tracking_override_keeps_spec_settings_or_defaults(tmp_path):
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump({**RANDOM, "tracking": {"wandb": {"project": "clamps", "mode": "offline"}}}))
    assert load_spec(path).tracking == {"wandb": {"project": "clamps", "group": None, "mode": "offline"}}
    both = load_spec(path, tracking="mlflow,wandb").tracking
    assert both == {
        "mlflow": {"tracking_uri": None, "experiment_name": None},
        "wandb": {"project": "clamps", "group": None, "mode": "offline"},
    }
    assert load_spec(path, tracking="none").tracking == {}
    assert load_spec(path, tracking="none").raw["tracking"] == {}  # what spec.yaml records
    with pytest.raises(SpecError) as caught:
        load_spec(path, tracking="tb")
    assert caught.value.problems == ["expects none or a comma-separated list of mlflow, wandb; got 'tb'"]


def test_grid_specs_are_unchanged_by_the_search_section():
    base = {
        "name": "g",
        "dataset": {"name": "cifar10", "data_dir": "x"},
        "train": {"ecm": "ac"},
        "grid": {"clamp_value": [1, 2]},
    }
    assert parse_spec(base).trials == parse_spec({**base, "search": {"type": "grid"}}).trials
    assert parse_spec(base).search.type == "grid" and len(parse_spec(base).trials) == 2
