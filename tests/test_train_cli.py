"""``onlinenorm train``: metrics.jsonl, checkpoints, resume, and errors before any work."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from onlinenorm.cli import main
from onlinenorm.training.data import write_synthetic


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic("cifar10", root, num_train=40, num_test=20, seed=0)
    return str(root)


def flags(data_dir, out, *extra):
    return [
        "train",
        "--data-dir",
        data_dir,
        "--out",
        str(out),
        "--batch-size",
        "10",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--quiet",
        "--set",
        "milestones=[]",
        *extra,
    ]


@pytest.mark.slow
def test_train_writes_metrics_and_resumes(data_dir, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("norm: online\necm: ac\nclamp_value: 2.0\nlr: 0.02\n")
    assert main([*flags(data_dir, tmp_path / "run", "--epochs", "1"), "--config", str(config)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1] and "clamp_fraction/blocks.0.norm1" in rows[0]
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (resolved["clamp_value"], resolved["epochs"], resolved["alpha_fwd"]) == (2.0, 1, 1023 / 1024)
    assert (tmp_path / "run" / "checkpoints" / "epoch_0001" / "checkpoint.pt").exists()

    assert main(flags(data_dir, tmp_path / "run", "--epochs", "1")) == 2  # would overwrite
    assert "already holds a run" in capsys.readouterr().err
    written = (tmp_path / "run" / "config.json").read_text()
    assert main([*flags(data_dir, tmp_path / "run", "--epochs", "2", "--lr", "0.5"), "--resume"]) == 2
    assert "different config (lr: 0.02 -> 0.5)" in capsys.readouterr().err
    assert (tmp_path / "run" / "config.json").read_text() == written  # a refused resume rewrites nothing
    assert main([*flags(data_dir, tmp_path / "run", "--epochs", "2"), "--resume"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["epoch_0002"]

    # the config.json a run writes is a config another run accepts, and resolves to itself
    assert (
        main(
            [
                "train",
                "--config",
                str(tmp_path / "run" / "config.json"),
                "--out",
                str(tmp_path / "again"),
                "--epochs",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again == {**json.loads((tmp_path / "run" / "config.json").read_text()), "epochs": 1}


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--set", "nrom=batch"], "unknown config key 'nrom' (did you mean 'norm'?)"),
        (["--norm", "bn"], "'norm' must be one of"),
        (["--set", "subset"], "--set expects KEY=VALUE"),
        (["--set", "milestones=[3,"], "--set value of 'milestones=[3,' is not valid YAML"),
        (["--resume"], "holds no checkpoint to resume from"),
        pytest.param(
            ["--device", "cuda"],
            "config key 'device' is 'cuda' but torch sees no CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present"),
        ),
    ],
)
def test_bad_input_fails_before_any_work(data_dir, tmp_path, capsys, extra, message):
    assert main([*flags(data_dir, tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # bad input writes nothing


def test_missing_data_is_a_usage_error_and_writes_nothing(tmp_path, capsys):
    assert main(["train", "--data-dir", str(tmp_path / "absent"), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "onlinenorm data synth --format cifar10" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_executable_exits_quietly_after_a_run(data_dir, tmp_path):
    """The ``onlinenorm`` executable's exit path (``run``), not just ``main``: a training run prints its summary
    and nothing else at exit (torch's Triton bindings report objects left uncollected at exit as leaks)."""
    code = "import sys; from onlinenorm.cli import run; sys.argv[0] = 'onlinenorm'; run()"
    args = [*flags(data_dir, tmp_path / "run"), "--epochs", "1", "--kernels", "eager"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
