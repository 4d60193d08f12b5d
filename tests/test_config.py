"""The training config: the published recipes, numbers as YAML 1.2 reads them, the files it reads back,
``onlinenorm config show``, and the learning-rate schedule."""

from __future__ import annotations

import json

import pytest

from onlinenorm.cli import main
from onlinenorm.cli.train import read_config
from onlinenorm.constants import DATASETS, ECMS, KERNEL_CHOICES, MODELS, NORMS, RUN_CONFIG_FILE
from onlinenorm.training.config import RECIPES, SCHEMA, parse_assignment, validate_config
from onlinenorm.training.train import lr_factor
from onlinenorm.training.yaml12 import load_yaml


def test_cifar_recipe_is_the_published_script():
    # Cerebras/online-normalization experiments/resnet/cifar10_main.py defaults, utils.py, model/model.py
    config = validate_config({})
    assert (config["model"], config["shortcut"], config["ecm"]) == ("resnet20", "projection", "ls")
    assert (config["epochs"], config["batch_size"], config["milestones"]) == (250, 128, [100, 150, 200])
    assert (config["lr"], config["lr_decay"], config["momentum"]) == (0.1, 0.1, 0.9)
    assert (config["weight_decay"], config["decay_norm_params"]) == (2e-4, True)
    assert (config["alpha_fwd"], config["alpha_bkw"]) == (1023 / 1024, 127 / 128)
    assert (config["lr_warmup_epochs"], config["stats_warmup_batches"]) == (0, 0)  # start-up warm-ups are off
    assert validate_config(config) == config  # resolving is idempotent
    cifar100 = validate_config({"dataset": "cifar100"})
    assert (cifar100["alpha_fwd"], cifar100["alpha_bkw"], cifar100["epochs"]) == (511 / 512, 15 / 16, 250)


def test_imagenet_recipe_is_the_published_script():
    for dataset in ("imagefolder", "imagenet-npz"):
        config = validate_config({"dataset": dataset})
        assert (config["model"], config["epochs"], config["batch_size"]) == ("resnet50", 90, 256)
        assert (config["milestones"], config["weight_decay"], config["decay_norm_params"]) == (
            [30, 60, 80],
            1e-4,
            False,
        )
        assert (config["alpha_fwd"], config["alpha_bkw"], config["ecm"]) == (0.999, 0.99, "ls")
    assert set(RECIPES) == set(DATASETS) and all("Cerebras/online-normalization" in r.source for r in RECIPES.values())


def test_recipe_milestones_scale_with_a_shorter_run_unless_given():
    assert validate_config({"epochs": 25})["milestones"] == [10, 15, 20]
    assert validate_config({"dataset": "imagefolder", "epochs": 9})["milestones"] == [3, 6, 8]
    assert validate_config({"epochs": 25, "milestones": []})["milestones"] == []


@pytest.mark.parametrize(
    "config,message",
    [
        ({"shortcut": "identity"}, "config key 'shortcut' must be null or one of pad, projection"),
        ({"lr_warmup_epochs": -1}, "config key 'lr_warmup_epochs' must be an integer >= 0, got -1"),
        ({"stats_warmup_batches": 1.5}, "config key 'stats_warmup_batches' must be an integer >= 0, got 1.5"),
        ({"decay_norm_params": "no"}, "config key 'decay_norm_params' must be null or true or false"),
        (
            {"clamp_value": 2.0},
            "config key 'clamp_value' is set, but 'ecm' is not: the cifar10 recipe's ecm is 'ls', "
            "which does not clamp; set ecm: ac to clamp",
        ),
    ],
)
def test_new_keys_are_checked(config, message):
    with pytest.raises(ValueError) as err:
        validate_config(config)
    assert message in str(err.value)


def test_a_clamp_value_needs_no_ecm_where_it_cannot_mislead():
    assert validate_config({"clamp_value": 2.0, "ecm": "ac"})["clamp_value"] == 2.0
    assert validate_config({"clamp_value": 2.0, "norm": "batch"})["ecm"] == "ls"  # a baseline in a clamp grid
    assert validate_config({"ecm": "ac"})["clamp_value"] == 5.0


def test_constants_are_the_ones_the_schema_and_the_layer_use():
    import onlinenorm.functional
    import onlinenorm.layers
    import onlinenorm.norms

    assert SCHEMA["ecm"].rule.allowed.endswith(", ".join(ECMS)) and onlinenorm.layers.ECMS is ECMS
    assert SCHEMA["norm"].rule.allowed == "one of " + ", ".join(NORMS) and onlinenorm.norms.NORMS is NORMS
    assert onlinenorm.functional.KERNEL_CHOICES is KERNEL_CHOICES and SCHEMA["model"].rule.allowed.endswith(
        ", ".join(MODELS)
    )


@pytest.mark.parametrize(
    "text,value",
    [
        ("1e-5", 1e-5),
        ("5e-4", 5e-4),
        ("1E5", 1e5),
        ("-2.5e+3", -2500.0),
        ("1.", 1.0),
        (".5", 0.5),
        ("7", 7),
        ("0x10", 16),
        (".inf", float("inf")),
        ("-.inf", float("-inf")),
        ("1e-05", 1e-05),
    ],
)
def test_every_yaml_12_and_json_number_is_a_number(text, value):
    assert load_yaml(f"x: {text}") == {"x": value}
    assert parse_assignment(f"x={text}") == ("x", value)


def test_non_numbers_stay_strings():
    assert load_yaml("a: 12e\nb: '1e-5'\nc: e5\nd: 1e") == {"a": "12e", "b": "1e-5", "c": "e5", "d": "1e"}


def test_a_config_file_written_as_researchers_write_numbers(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("eps: 1e-5\nlr: 5e-4\nweight_decay: 1e-4\nls_eps: 1E-6\n")
    config = read_config(str(path), {})
    assert (config["eps"], config["lr"], config["weight_decay"], config["ls_eps"]) == (1e-5, 5e-4, 1e-4, 1e-6)


def test_the_config_json_a_run_writes_is_accepted_back(tmp_path):
    written = validate_config({"eps": 1e-5, "lr": 5e-4, "weight_decay": 1e-4, "subset": 0.25, "classes": None})
    path = tmp_path / RUN_CONFIG_FILE
    path.write_text(json.dumps(written, indent=2) + "\n")  # as `onlinenorm train` writes it
    assert read_config(str(path), {}) == written


def test_a_sweep_trials_params_json_is_accepted_back(tmp_path):
    from pathlib import Path

    from ray.tune.logger.json import JsonLoggerCallback

    from sweeps.spec import load_spec

    class Trial:  # what Ray's JSON logger needs of a trial
        local_path = str(tmp_path)

    spec = load_spec(Path(__file__).resolve().parents[1] / "sweeps" / "specs" / "cifar10_paper.yaml")
    for trial in spec.trials[:3] + spec.trials[-1:]:
        JsonLoggerCallback().update_config(Trial(), trial)  # Ray Tune's own params.json writer
        assert read_config(str(tmp_path / "params.json"), {}) == trial


def test_config_show_lists_every_key_with_default_recipe_value_and_allowed_values(capsys):
    assert main(["config", "show", "--dataset", "cifar100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "cifar100_main.py" in lines[0] and lines[1].split()[:3] == ["key", "default", "cifar100"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert list(rows) == list(SCHEMA)
    assert rows["alpha_fwd"].split()[:3] == ["alpha_fwd", "null", "0.998046875"]
    assert rows["milestones"].split("  ")[0:1] == ["milestones"] and "[100, 150, 200]" in rows["milestones"]
    assert "one of ac, ls, none" in rows["ecm"] and rows["lr_warmup_epochs"].split()[:3] == [
        "lr_warmup_epochs",
        "0",
        "0",
    ]


def test_config_show_rejects_an_unknown_dataset(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["config", "show", "--dataset", "mnist"])
    assert exit_.value.code == 2 and "invalid choice: 'mnist'" in capsys.readouterr().err


def test_lr_factor_warms_up_linearly_per_step_then_follows_the_milestones():
    # 4 steps per epoch, warm-up over 2 epochs (8 steps), lr x 0.1 after epoch 3
    factors = [lr_factor(step, 4, [3], 0.1, 2) for step in range(16)]
    assert factors[:8] == [s / 8 for s in range(1, 9)]
    assert factors[8:12] == [1.0] * 4 and factors[12:] == [0.1] * 4
    assert [lr_factor(step, 4, [1, 2], 0.5, 0) for step in (0, 3, 4, 8)] == [1.0, 1.0, 0.5, 0.25]
