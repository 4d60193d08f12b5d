"""The base install (``pip install onlinenorm``, no extras) in a real virtual environment.

The venv holds the project (``pip install --no-deps -e .``) and exactly the distributions that
``[project] dependencies`` pull in (their ``Requires-Dist`` closure, extras left
out), taken from this interpreter's environment, where ``make install`` put them through
constraints.txt: so no Ray, pandas, seaborn, pyarrow or matplotlib. Linking the installed
distributions instead of unpacking wheels again keeps the build to seconds. In that venv
``import onlinenorm``, ``onlinenorm --help``/``--version``, ``train``, ``data synth`` and
``bench layer`` work, and the commands that need an extra stop with one line naming it (exit 2)
and write nothing. The venv is built once per test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
EXTRAS_ONLY = ("ray", "pandas", "seaborn", "pyarrow", "matplotlib")
pytestmark = pytest.mark.slow


def base_dependencies() -> list[str]:
    """``[project] dependencies``, as the installed project's metadata states them (no extra markers)."""
    return [text for text in distribution("onlinenorm").requires or [] if "extra ==" not in text]


def closure(requirements: list[str]) -> dict:
    """The installed distributions that ``requirements`` need, recursively, without any extra."""
    found, todo = {}, [Requirement(text) for text in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        try:
            found[name] = distribution(requirement.name)
        except PackageNotFoundError:
            pytest.fail(f"{requirement.name} (a base dependency) is not installed here; run make install")
        assert requirement.specifier.contains(found[name].version, prereleases=True), (
            f"{requirement.name} {found[name].version} does not satisfy {requirement}"
        )
        todo += [Requirement(text) for text in found[name].requires or []]
    return found


@pytest.fixture(scope="session")
def base_venv(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("base-venv")
    venv.EnvBuilder(with_pip=False).create(home)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(home), "platbase": str(home)}))
    # setuptools builds the editable install (--no-build-isolation); it is no extra.
    for dist in closure([*base_dependencies(), "setuptools"]).values():
        installed = Path(dist.locate_file(""))
        for top in {Path(str(file)).parts[0] for file in dist.files or []} - {".."}:
            if (installed / top).exists() and not (site / top).exists():
                (site / top).symlink_to(installed / top)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(home / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-e",
            str(ROOT),
        ],
        check=True,
    )
    return home


def run_in(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{home / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=300)


def test_base_install_lacks_every_extra(base_venv):
    probe = (
        "import importlib.util, json, sys; "
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))"
    )
    result = run_in(base_venv, "python", "-c", probe, *EXTRAS_ONLY, "torch", "onlinenorm")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found == {**dict.fromkeys(EXTRAS_ONLY, False), "torch": True, "onlinenorm": True}


def test_layer_imports_and_runs_without_extras(base_venv):
    code = (
        "import torch, onlinenorm; layer = onlinenorm.OnlineNorm2d(4, ecm='ac'); "
        "y = layer(torch.randn(8, 4, 3, 3)); y.sum().backward() if y.requires_grad else None; "
        "print(tuple(y.shape))"
    )
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
    assert version.stdout.split() == ["onlinenorm", distribution("onlinenorm").version]


def test_data_synth_then_train_without_extras(base_venv, tmp_path):
    data = tmp_path / "cifar10"
    synth = run_in(
        base_venv,
        "onlinenorm",
        "data",
        "synth",
        "--format",
        "cifar10",
        "--out",
        str(data),
        "--train",
        "64",
        "--test",
        "32",
    )
    assert synth.returncode == 0, synth.stderr
    run_dir = tmp_path / "run"
    train = run_in(
        base_venv,
        "onlinenorm",
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(data),
        "--model",
        "mlp",
        "--norm",
        "online",
        "--ecm",
        "ac",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--kernels",
        "eager",
        "--out",
        str(run_dir),
        "--quiet",
    )
    assert train.returncode == 0, train.stderr
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1]


def test_bench_layer_without_extras(base_venv):
    result = run_in(
        base_venv,
        "onlinenorm",
        "bench",
        "layer",
        "--shape",
        "4x2x3x3",
        "--rounds",
        "1",
        "--oracle-rounds",
        "0",
        "--ecm-rounds",
        "0",
        "--kernels",
        "eager",
    )
    assert result.returncode == 0, result.stderr
    assert "batchnorm" in result.stdout


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        (["sweep", "run", "sweeps/specs/quick.yaml", "--set", "train.epochs=1"], "sweep"),
        (["bench", "sweep", "--cpus", "1"], "sweep"),
        (["report", "EXPERIMENT"], "analysis"),
    ],
)
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
