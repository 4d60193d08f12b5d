"""A package's public names imported on first use (PEP 562), so that
importing the package itself stays cheap: ``import onlinenorm`` needs no
torch, ``import analysis`` no pandas."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def exports(
    package: str, modules: dict[str, list[str]]
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """The ``__all__``, ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: the package's ``__name__``.
        modules: each module -> the public names it defines; the names
            listed under ``package`` itself are its submodules
            (``analysis.charts``).

    Returns:
        ``(__all__, __getattr__, __dir__)``: ``__all__`` is every name,
        sorted; a name is imported on first access, then kept in the
        package's namespace.
    """
    namespace = sys.modules[package].__dict__
    home = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> object:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = home[name]
        if module == package:
            value = importlib.import_module(f"{package}.{name}")
        else:
            value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(home))

    return sorted(home), __getattr__, __dir__
