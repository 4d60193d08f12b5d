"""The base install (``pip install onlinenorm``, no extras) in a real virtual environment.

The venv gets the project (``--no-deps -e .``) and only ``[project] dependencies`` from
pyproject.toml, torch through constraints.txt: no Ray, pandas, seaborn, pyarrow or matplotlib.
In it, ``import onlinenorm``, ``onlinenorm --help``/``--version``, ``train``, ``data synth`` and
``bench layer`` work, and the commands that need an extra stop with one line naming it (exit 2)
and write nothing. The venv is built once per test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def base_dependencies() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


@pytest.fixture(scope="session")
def base_venv(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("base-venv")
    venv.EnvBuilder(with_pip=True).create(home)
    pip = [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), "setuptools>=68", "wheel", *base_dependencies()],
                   check=True)
    subprocess.run([*pip, "--no-deps", "--no-build-isolation", "-e", str(ROOT)], check=True)
    return home


def run_in(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{home / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=300)


def test_base_install_lacks_every_extra(base_venv):
    probe = ("import importlib.util, json; "
             "print(json.dumps({m: importlib.util.find_spec(m) is not None "
             "for m in ('ray', 'pandas', 'seaborn', 'pyarrow', 'matplotlib', 'torch', 'onlinenorm')}))")
    found = json.loads(run_in(base_venv, "python", "-c", probe).stdout)
    assert found == {"ray": False, "pandas": False, "seaborn": False, "pyarrow": False, "matplotlib": False,
                     "torch": True, "onlinenorm": True}
    assert base_venv / "bin" / "python" != Path(sys.executable)


def test_layer_imports_and_runs_without_extras(base_venv):
    code = ("import torch, onlinenorm; layer = onlinenorm.OnlineNorm2d(4, ecm='ac'); "
            "y = layer(torch.randn(8, 4, 3, 3)); y.sum().backward() if y.requires_grad else None; "
            "print(tuple(y.shape))")
    result = run_in(base_venv, "python", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(8, 4, 3, 3)"


def test_help_and_version_without_extras(base_venv):
    result = run_in(base_venv, "onlinenorm", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("bench", "kernels", "data", "train", "sweep", "report"):
        assert command in result.stdout
    version = run_in(base_venv, "onlinenorm", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.split() == ["onlinenorm", tomllib.loads((ROOT / "pyproject.toml").read_text())
                                      ["project"]["version"]]


def test_data_synth_then_train_without_extras(base_venv, tmp_path):
    data = tmp_path / "cifar10"
    synth = run_in(base_venv, "onlinenorm", "data", "synth", "--format", "cifar10", "--out", str(data),
                   "--train", "64", "--test", "32")
    assert synth.returncode == 0, synth.stderr
    run_dir = tmp_path / "run"
    train = run_in(base_venv, "onlinenorm", "train", "--dataset", "cifar10", "--data-dir", str(data),
                   "--model", "mlp", "--norm", "online", "--ecm", "ac", "--epochs", "1", "--batch-size", "32",
                   "--out", str(run_dir), "--quiet")
    assert train.returncode == 0, train.stderr
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1]


def test_bench_layer_without_extras(base_venv):
    result = run_in(base_venv, "onlinenorm", "bench", "layer", "--shape", "4x2x3x3", "--rounds", "1",
                    "--oracle-rounds", "0", "--ecm-rounds", "0", "--kernels", "eager")
    assert result.returncode == 0, result.stderr
    assert "batchnorm" in result.stdout


@pytest.mark.parametrize(("command", "extra"), [
    (["sweep", "run", "sweeps/specs/quick.yaml", "--set", "train.epochs=1"], "sweep"),
    (["bench", "sweep", "--cpus", "1"], "sweep"),
    (["report", "EXPERIMENT"], "analysis"),
])
def test_command_needing_an_extra_names_it(base_venv, tmp_path, command, extra):
    (tmp_path / "EXPERIMENT").mkdir()
    command = [str(tmp_path / "EXPERIMENT") if part == "EXPERIMENT" else part for part in command]
    if command[:2] == ["sweep", "run"]:
        command += ["--storage", str(tmp_path / "results"), "--name", "base"]
    result = run_in(base_venv, "onlinenorm", *command, cwd=ROOT)
    assert result.returncode == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert f"pip install 'onlinenorm[{extra}]'" in line
    assert not (tmp_path / "results").exists()
    assert list((tmp_path / "EXPERIMENT").iterdir()) == []
