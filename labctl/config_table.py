"""Typed, checked access to one table of a bench file section; errors name the dotted key.

Section parsers (``[isaqn]``, ``[entanglement]``) raise :class:`SectionError` with the key and
the problem; :func:`labctl.config.parse_bench` adds the file name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


class SectionError(ValueError):
    """Raised with the dotted key and the problem; the bench loader adds the file."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


class Table:
    """Typed access to one TOML table; every error names the dotted key."""

    def __init__(self, data: Any, prefix: str, allowed: set[str]) -> None:
        if not isinstance(data, dict):
            raise SectionError(prefix, f"got {data!r}, expected a table")
        for key in data:
            if key not in allowed:
                raise SectionError(
                    f"{prefix}.{key}", f"unknown key; expected one of {', '.join(sorted(allowed))}"
                )
        self.data = data
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def number(
        self,
        name: str,
        default: float | None = None,
        check: Callable[[float], bool] = lambda v: True,
        expected: str = "a number",
    ) -> float:
        value = self.data.get(name)
        if value is None:
            if default is None:
                raise SectionError(self.key(name), f"missing; expected {expected}")
            return default
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not check(float(value)):
            raise SectionError(self.key(name), f"got {value!r}, expected {expected}")
        return float(value)

    def positive(self, name: str, default: float | None = None) -> float:
        return self.number(name, default, lambda v: v > 0, "a number > 0")

    def integer(self, name: str, default: int | None = None, minimum: int = 1) -> int:
        value = self.number(
            name,
            None if default is None else float(default),
            lambda v: v.is_integer() and v >= minimum,
            f"an integer >= {minimum}",
        )
        return int(value)

    def string(self, name: str, default: str | None = None) -> str:
        value = self.data.get(name, default)
        if not isinstance(value, str) or not value:
            raise SectionError(self.key(name), f"got {value!r}, expected a non-empty string")
        return value

    def table(self, name: str) -> dict:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise SectionError(self.key(name), f"got {value!r}, expected a table")
        return value
