"""Commands take their help texts from their handlers' docstrings; without docstrings
(``python -OO`` strips them) every command is still there, only undescribed."""

from __future__ import annotations

import subprocess
import sys


def test_help_lists_every_command_even_without_docstrings():
    for flags in ([], ["-OO"]):
        run = subprocess.run(
            [sys.executable, *flags, "-m", "onlinenorm.cli", "--help"], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        for command in ("train", "data", "kernels", "config", "bench", "sweep", "report"):
            assert f"    {command}" in run.stdout, (flags, command)
    described = subprocess.run(
        [sys.executable, "-m", "onlinenorm.cli", "kernels", "build", "--help"], capture_output=True, text=True
    )
    assert "Compile the C kernels for this machine" in described.stdout
