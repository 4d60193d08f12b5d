"""A package's public names imported on first use (PEP 562), so that
importing the package itself stays cheap: ``import onlinenorm`` needs no
torch, ``import analysis`` no pandas."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: the package's ``__name__``.
        names: public name -> the module defining it; a name mapped to
            ``package`` itself is a submodule (``analysis.charts``).

    Returns:
        ``(__getattr__, __dir__)``: a name is imported on first access, then
        kept in the package's namespace.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> object:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = names[name]
        if module == package:
            value = importlib.import_module(f"{package}.{name}")
        else:
            value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
