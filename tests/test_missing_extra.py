"""A command whose optional dependency is missing names the extra to install, in one line (exit 2).

The modules are hidden in this process (``None`` in ``sys.modules`` makes their import fail as
an absent package's would); tests/test_base_install.py checks the same in a venv without them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from onlinenorm.cli import main

ROOT = Path(__file__).resolve().parents[1]


def hide(monkeypatch, *modules: str) -> None:
    for name in list(sys.modules):
        if name.partition(".")[0] in modules:
            monkeypatch.delitem(sys.modules, name)
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_sweep_without_ray_names_the_sweep_extra(monkeypatch, tmp_path, capsys):
    hide(monkeypatch, "ray")
    code = main(
        [
            "sweep",
            "run",
            str(ROOT / "sweeps/specs/quick.yaml"),
            "--storage",
            str(tmp_path / "results"),
            "--name",
            "no-ray",
        ]
    )
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "onlinenorm sweep: error: this command needs ray, which is not installed; "
        "install it with: pip install 'onlinenorm[sweep]'"
    )
    assert not (tmp_path / "results" / "no-ray").exists()


@pytest.mark.parametrize("missing", ["matplotlib", "pandas", "scipy"])
def test_report_without_the_analysis_stack_names_the_analysis_extra(monkeypatch, tmp_path, capsys, missing):
    hide(monkeypatch, missing)
    experiment = tmp_path / "experiment"
    experiment.mkdir()
    code = main(["report", str(experiment), "--out", str(tmp_path / "report")])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("onlinenorm report: error: this command needs ")
    assert line.endswith("install it with: pip install 'onlinenorm[analysis]'")
    assert not (tmp_path / "report").exists()


def test_a_missing_module_of_no_extra_is_not_blamed_on_one(monkeypatch, tmp_path):
    hide(monkeypatch, "yaml")
    monkeypatch.delitem(sys.modules, "onlinenorm.training.yaml12", raising=False)  # imported yaml when first loaded
    (tmp_path / "config.yaml").write_text("epochs: 1\n")
    with pytest.raises(ModuleNotFoundError):
        main(["train", "--config", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "run")])
