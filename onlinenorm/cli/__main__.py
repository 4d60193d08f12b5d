"""``python -m onlinenorm.cli``: the ``onlinenorm`` command."""

from onlinenorm.cli import run

run()
