"""Sweep specs: the shipped specs, expansion into trials, and bad specs rejected before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from onlinenorm.cli import main
from sweeps.spec import SpecError, load_spec, parse_spec

SPECS = Path(__file__).resolve().parents[1] / "sweeps" / "specs"
MINIMAL = {"name": "mini", "dataset": {"name": "cifar10", "data_dir": "data/x"}, "grid": {"seed": [0]}}


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    return caught.value.problems


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_are_valid(path):
    spec = load_spec(path)
    assert spec.name == yaml.safe_load(path.read_text())["name"]
    assert len({str(sorted(t.items())) for t in spec.trials}) == len(spec.trials)


def test_quick_spec_is_the_demo_sweep():
    trials = load_spec(SPECS / "quick.yaml").trials
    clamped = [t for t in trials if t["norm"] == "online" and t["ecm"] == "ac"]
    assert len(clamped) >= 12 and len({t["seed"] for t in trials}) == 2
    assert len({t["clamp_value"] for t in clamped}) > 1 and len({t["alpha_fwd"] for t in clamped}) > 1
    assert any(t["ecm"] == "ls" and t["norm"] == "online" for t in trials)
    assert any(t["norm"] == "batch" for t in trials)


def test_expansion_grid_then_extra_trials_with_their_own_axes():
    spec = parse_spec(
        {
            **MINIMAL,
            "model": "mlp",
            "train": {"epochs": 2, "lr": 0.05},
            "grid": {"ecm": ["ac"], "clamp_value": [1, 2], "alpha_fwd": [0.9, 0.99]},
            "extra_trials": [{"norm": "batch", "seed": [0, 1]}, {"norm": "online", "ecm": "ls"}],
            "resources": {"cpu": 2, "gpu": 0},
        }
    )
    assert len(spec.trials) == 4 + 2 + 1
    assert [t["norm"] for t in spec.trials] == ["online"] * 4 + ["batch"] * 2 + ["online"]
    assert {(t["clamp_value"], t["alpha_fwd"]) for t in spec.trials[:4]} == {(1, 0.9), (1, 0.99), (2, 0.9), (2, 0.99)}
    assert all(t["epochs"] == 2 and t["model"] == "mlp" for t in spec.trials)
    assert all(t["threads"] == 2 and t["device"] == "cpu" for t in spec.trials)  # torch threads = CPU share
    assert Path(spec.trials[0]["data_dir"]).is_absolute()  # trials run in their own working directories
    assert set(spec.swept_keys) == {"norm", "ecm", "clamp_value", "alpha_fwd", "seed"}


def test_set_overrides_dotted_keys(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    spec = load_spec(path, ["train.epochs=3", "grid.seed=[0, 1, 2]", "name=other"])
    assert spec.name == "other" and [t["seed"] for t in spec.trials] == [0, 1, 2]
    assert all(t["epochs"] == 3 for t in spec.trials)


@pytest.mark.parametrize(
    "item, problem",
    [
        ("train.epochs", "expects KEY=VALUE, got 'train.epochs'; e.g. train.epochs=2 or grid.seed=[0,1]"),
        ("grid.seed=[0,", "value of 'grid.seed=[0,' is not valid YAML"),
    ],
)
def test_malformed_set_items_are_spec_errors(tmp_path, item, problem):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    with pytest.raises(SpecError) as err:
        load_spec(path, [item])
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(problem)


def test_each_problem_is_reported_with_its_key_path():
    problems = problems_of(
        {
            "name": "bad name",
            "dataset": {"name": "cifar11", "colour": "red"},
            "train": {"lr": -1, "data_dir": "x", "lrr": 0.1},
            "grid": {"alpha_fwd": [0.999, 1.5], "ecm": "ac"},
            "extra_trials": [{"norm": "batchnorm"}],
            "resources": {"cpu": 0},
            "scheduler": {"type": "pbt"},
            "retries": 3,
        }
    )
    paths = [p.split(":")[0] for p in problems]
    assert paths == [
        "retries",
        "name",
        "resources.cpu",
        "dataset.name",
        "dataset.colour",
        "train.lr",
        "train.data_dir",
        "train.lrr",
        "grid.alpha_fwd[1]",
        "grid.ecm",
        "extra_trials[0].norm",
        "scheduler.type",
    ]
    assert "grid.alpha_fwd[1]: must be null or a number in (0.0, 1.0); got 1.5" in problems
    assert any(p.startswith("train.lrr: unknown key; did you mean 'lr'?") for p in problems)


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            {"grid": {"clamp_value": []}},
            "grid.clamp_value: must not be empty: an empty axis expands the grid to zero trials",
        ),
        ({"grid": None}, "grid: must be a mapping of keys to values; got None"),
        (
            {"extra_trials": [{"seed": 0}]},
            "extra_trials[0] (seed=0): repeats the trial of grid (seed=0); every trial must differ",
        ),
        (
            {"grid": {"norm": ["group"], "group_size": [7]}, "model": "resnet20"},
            "grid (norm=group, group_size=7): config key 'group_size'",
        ),
        (
            {"dataset": {"name": "cifar10", "synthetic": {"train": 0}}},
            "dataset.synthetic.train: must be an integer >= 1; got 0",
        ),
        ({"train": {"clamp_value": None}}, "train.clamp_value: must be a number in (0.0, inf); got None"),
    ],
)
def test_documented_errors(change, expected):
    assert any(p.startswith(expected) for p in problems_of({**MINIMAL, **change}))


def test_zero_trials():
    raw = {k: v for k, v in MINIMAL.items() if k != "grid"}
    assert problems_of(raw) == ["grid: the sweep expands to zero trials; give a grid, extra_trials, or both"]


def test_cli_rejects_a_bad_spec_before_starting_or_writing_anything(tmp_path, capsys):
    import ray

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "grid": {"alpha_fwd": [0.5, 1.5], "clamp_value": [0]}}))
    storage = tmp_path / "results"
    assert main(["sweep", "run", str(path), "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert "grid.alpha_fwd[1]: must be null or a number in (0.0, 1.0); got 1.5" in err
    assert "grid.clamp_value[0]: must be a number in (0.0, inf); got 0" in err
    assert not storage.exists() and not ray.is_initialized()


def test_cli_dry_run_lists_the_trials(capsys):
    assert main(["sweep", "run", str(SPECS / "quick.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sweep quick: 20 trials over norm, ecm, alpha_fwd, clamp_value, seed")


def test_status_of_a_folder_that_is_no_experiment(tmp_path, capsys):
    assert main(["sweep", "status", str(tmp_path)]) == 2
    assert "no experiment_state-*.json" in capsys.readouterr().err


def test_run_refuses_an_existing_experiment_and_resume_a_folder_without_a_sweep(tmp_path, capsys):
    import ray

    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    (tmp_path / "results" / "mini").mkdir(parents=True)
    assert main(["sweep", "run", str(path), "--storage", str(tmp_path / "results")]) == 2
    assert "already exists; continue it with `onlinenorm sweep resume" in capsys.readouterr().err
    assert main(["sweep", "resume", str(tmp_path / "results" / "mini")]) == 2
    assert "holds no spec.yaml" in capsys.readouterr().err
    assert not ray.is_initialized() and list((tmp_path / "results" / "mini").iterdir()) == []


REFERENCE = {
    "source": "Chiley et al. 2019",
    "results": [
        {"norm": "online", "ecm": "ls", "val_acc": 0.923},
        {"norm": "batch", "val_acc": 0.922, "val_loss": 0.26},
    ],
}


def test_reference_figures_are_parsed():
    spec = parse_spec({**MINIMAL, "reference": REFERENCE})
    assert spec.reference.source == "Chiley et al. 2019" and spec.reference.results == REFERENCE["results"]
    assert parse_spec(MINIMAL).reference is None


@pytest.mark.parametrize(
    "reference, expected",
    [
        (
            {**REFERENCE, "results": [{"norm": "online", "val_acc": 92.3}]},
            "reference.results[0].val_acc: must be a number in [0.0, 1.0]; got 92.3",
        ),
        (
            {**REFERENCE, "results": [{"norm": "batch", "val_loss": -0.1}]},
            "reference.results[0].val_loss: must be a number in [0.0, inf); got -0.1",
        ),
        (
            {**REFERENCE, "results": [{"norm": "bn", "val_acc": 0.9}]},
            "reference.results[0].norm: must be one of online, batch, group, layer, instance, none; got 'bn'",
        ),
        (
            {**REFERENCE, "results": [{"nrom": "batch", "val_acc": 0.9}]},
            "reference.results[0].nrom: unknown key; did you mean 'norm'?",
        ),
        (
            {**REFERENCE, "results": [{"norm": "batch"}]},
            "reference.results[0]: gives no figure; give val_acc and/or val_loss",
        ),
        ({**REFERENCE, "results": [{"val_acc": 0.9}]}, "reference.results[0]: selects no trials; give config keys"),
        ({**REFERENCE, "results": []}, "reference.results: must be a non-empty list of mappings"),
        ({"results": REFERENCE["results"]}, "reference.source: must be a non-empty string; got None"),
        ({**REFERENCE, "url": "x"}, "reference.url: unknown key; known keys: source, results"),
        ("Chiley", "reference: must be a mapping of keys to values; got 'Chiley'"),
    ],
)
def test_bad_reference_sections(reference, expected):
    assert any(p.startswith(expected) for p in problems_of({**MINIMAL, "reference": reference}))


def test_paper_specs_carry_the_published_figures_and_recipe():
    cifar10 = load_spec(SPECS / "cifar10_paper.yaml")
    assert {"norm": "online", "ecm": "ls", "val_acc": 0.923, "val_loss": 0.26} in cifar10.reference.results
    assert all(
        (t["epochs"], t["milestones"], t["batch_size"], t["weight_decay"], t["shortcut"])
        == (250, [100, 150, 200], 128, 2e-4, "projection")
        for t in cifar10.trials
    )
    assert [r["val_acc"] for r in load_spec(SPECS / "cifar100_paper.yaml").reference.results] == [0.686, 0.686]
    imagenet = load_spec(SPECS / "imagenet_paper.yaml")
    assert [(r.get("ecm"), r["val_acc"], r["val_loss"]) for r in imagenet.reference.results] == [
        ("ac", 0.763, 0.93),
        ("ls", 0.763, 0.94),
        (None, 0.764, 0.97),
    ]
    assert all(
        (t["model"], t["epochs"], t["milestones"], t["batch_size"], t["weight_decay"], t["decay_norm_params"])
        == ("resnet50", 90, [30, 60, 80], 256, 1e-4, False)
        for t in imagenet.trials
    )


def test_numbers_in_specs_and_set_values_are_read_as_yaml_12_reads_them(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: n\ndataset: {name: cifar10, data_dir: d}\ntrain: {eps: 1e-5, weight_decay: 1e-4}\n"
        "grid: {lr: [5e-4, 1e-3]}\n"
    )
    spec = load_spec(path, ["train.ls_eps=1E-6"])
    assert [t["lr"] for t in spec.trials] == [5e-4, 1e-3]
    assert all((t["eps"], t["weight_decay"], t["ls_eps"]) == (1e-5, 1e-4, 1e-6) for t in spec.trials)


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.name)
def test_the_spec_yaml_a_sweep_writes_is_accepted_back(path, tmp_path, capsys):
    from sweeps.run import read_experiment_spec

    spec = load_spec(path)
    (tmp_path / "spec.yaml").write_text(spec.to_yaml())  # what `sweep run` saves for `sweep resume`
    again = read_experiment_spec(str(tmp_path))
    assert again.trials == spec.trials and again.reference == spec.reference and again.raw == spec.raw
    assert main(["sweep", "run", str(tmp_path / "spec.yaml"), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith(f"sweep {spec.name}: {len(spec.trials)} trials")
