"""Value rules: how one config or spec value is checked, and how the check is described.

One mechanism for every check of user input: the training-config schema
(:mod:`onlinenorm.training.config`) and the sweep-spec checker (``sweeps.spec``) build
their keys from these rules. A :class:`Rule`'s ``parse`` returns the
normalized value, or ``None`` when the value is not allowed; ``allowed`` says
in words what is allowed, for error messages and ``onlinenorm config show``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """How one value is checked: ``parse`` returns the normalized value or ``None`` if invalid;
    ``nullable`` rules also take ``None`` (for config keys: resolve it from the recipe or a default)."""

    parse: Callable[[Any], Any]
    allowed: str
    nullable: bool = False

    def accepts(self, value: Any) -> bool:
        return self.nullable if value is None else self.parse(value) is not None

    def problem(self, value: Any) -> str | None:
        """``None`` if ``value`` is allowed, else ``"must be <allowed>; got <value>"``."""
        return None if self.accepts(value) else f"must be {self.allowed}; got {value!r}"


def is_int(value: Any) -> bool:
    """An integer that is not a bool (YAML's ``true`` is no count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An integer or a float, not a bool."""
    return is_int(value) or isinstance(value, float)


def choice(*values: str) -> Rule:
    return Rule(lambda v: v if v in values else None, "one of " + ", ".join(values))


def integer(low: int) -> Rule:
    return Rule(lambda v: v if is_int(v) and v >= low else None, f"an integer >= {low}")


def real(low: float, high: float | None = None, *, low_open: bool = True, high_open: bool = True) -> Rule:
    """A number in the interval from ``low`` to ``high`` (open or closed ends); unbounded above: finite."""
    if high is None:  # unbounded above: finite numbers only (YAML's .inf is a float)
        high, high_open = math.inf, True

    def parse(value: Any) -> float | None:
        if not is_number(value):
            return None
        value = float(value)
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return value if above and below else None

    upper = f"{high}{')' if high_open else ']'}"
    return Rule(parse, f"a number in {'(' if low_open else '['}{low}, {upper}")


def boolean() -> Rule:
    return Rule(lambda v: v if isinstance(v, bool) else None, "true or false")


def text() -> Rule:
    return Rule(lambda v: v if isinstance(v, str) and v else None, "a non-empty string")


def matching(pattern, allowed: str) -> Rule:
    """A string that ``pattern`` (a compiled regular expression) matches in full."""
    return Rule(lambda v: v if isinstance(v, str) and pattern.fullmatch(v) else None, allowed)


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v if v is None else rule.parse(v), f"null or {rule.allowed}", nullable=True)


def either(first: Rule, second: Rule) -> Rule:
    def parse(value: Any) -> Any:
        parsed = first.parse(value)
        return second.parse(value) if parsed is None else parsed

    return Rule(parse, f"{first.allowed}, or {second.allowed}")


def ascending_integers(low: int) -> Rule:
    def parse(value: Any) -> list[int] | None:
        ok = isinstance(value, (list, tuple)) and all(is_int(v) and v >= low for v in value)
        return list(value) if ok and list(value) == sorted(set(value)) else None

    return Rule(parse, f"a strictly ascending list of integers >= {low}")


def names_or_numbers() -> Rule:
    def parse(value: Any) -> list | None:
        ok = isinstance(value, (list, tuple)) and value and all(isinstance(v, str) or is_int(v) for v in value)
        return list(value) if ok else None

    return Rule(parse, "a non-empty list of class names (ImageFolder) or 1-based labels (npz)")


def fraction_or_count() -> Rule:
    fraction = real(0.0, 1.0, high_open=False)
    return Rule(
        lambda v: fraction.parse(v) if isinstance(v, float) else integer(1).parse(v),
        "a fraction in (0, 1] or a per-class count >= 1",
    )
