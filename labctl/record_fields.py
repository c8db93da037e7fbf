"""Status dataclasses <-> structured numpy rows, for the bench recorders and replay.

:func:`row_dtype` maps a frozen dataclass's fields to a structured dtype from their
annotations: ``float`` -> float64, ``int`` -> int64, ``bool`` -> bool, ``str``, string
``Literal`` s and enums -> variable-length UTF-8 (:data:`labctl.h5record.STRING`),
``float | None`` -> float64 (None stored as nan), ``str | None`` -> text (None stored
as ""), ``tuple[float, ...]`` of a fixed length n -> an (n,) float64 subarray.
:func:`to_row` and :func:`from_row` convert one object; a round trip gives back an
equal object (None for nan / "" in optional fields).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from labctl.h5record import STRING


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    kind: str  # "float", "int", "bool", "str", "enum", "tuple"
    optional: bool
    width: int = 0
    enum_type: type | None = None


def _fields(cls: type, exclude: Iterable[str]) -> tuple[_Field, ...]:
    return _fields_cached(cls, frozenset(exclude))


@functools.cache
def _fields_cached(cls: type, skip: frozenset[str]) -> tuple[_Field, ...]:
    """The column plan of ``cls`` (type hints resolved once per class, not per row)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        optional = False
        args = typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
            rest = [a for a in args if a is not type(None)]
            if len(rest) == 1:
                hint, optional = rest[0], True
        if hint is bool:
            out.append(_Field(f.name, "bool", optional))
        elif hint is int:
            out.append(_Field(f.name, "int", optional))
        elif hint is float:
            out.append(_Field(f.name, "float", optional))
        elif hint is str or (
            typing.get_origin(hint) is typing.Literal
            and all(isinstance(a, str) for a in typing.get_args(hint))
        ):
            out.append(_Field(f.name, "str", optional))
        elif isinstance(hint, type) and issubclass(hint, enum.Enum):
            out.append(_Field(f.name, "enum", optional, enum_type=hint))
        elif typing.get_origin(hint) is tuple and all(a is float for a in typing.get_args(hint)):
            out.append(_Field(f.name, "tuple", optional, width=len(typing.get_args(hint))))
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: type {hint} has no HDF5 column mapping")
    return tuple(out)


_DTYPES = {"float": np.float64, "int": np.int64, "bool": np.bool_, "str": STRING, "enum": STRING}


def row_dtype(cls: type, exclude: Iterable[str] = ()) -> np.dtype:
    """The structured dtype of ``cls``'s fields (``exclude`` left out)."""
    cols: list[tuple[Any, ...]] = []
    for f in _fields(cls, exclude):
        if f.kind == "tuple":
            cols.append((f.name, np.float64, (f.width,)))
        else:
            cols.append((f.name, _DTYPES[f.kind]))
    return np.dtype(cols)


def to_row(obj: Any, dtype: np.dtype, exclude: Iterable[str] = ()) -> tuple[Any, ...]:
    """``obj``'s fields as a tuple for a row of ``dtype`` (from :func:`row_dtype`)."""
    values = []
    for f in _fields(type(obj), exclude):
        v = getattr(obj, f.name)
        if f.kind == "enum":
            v = "" if v is None else str(v.value)
        elif f.kind == "str":
            v = "" if v is None else str(v)
        elif f.kind == "float" and v is None:
            v = math.nan
        elif f.kind == "int" and v is None:
            v = -1
        values.append(v)
    if len(values) != len(dtype.names or ()):
        raise ValueError(f"{type(obj).__name__}: {len(values)} fields for dtype {dtype}")
    return tuple(values)


def from_row(cls: type, row: np.void, exclude: Iterable[str] = (), **extra: Any) -> Any:
    """An instance of ``cls`` from a row (``extra`` gives the excluded fields)."""
    kwargs: dict[str, Any] = dict(extra)
    for f in _fields(cls, exclude):
        v = row[f.name]
        if f.kind == "float":
            v = float(v)
            if f.optional and math.isnan(v):
                v = None
        elif f.kind == "int":
            v = int(v)
        elif f.kind == "bool":
            v = bool(v)
        elif f.kind in ("str", "enum"):
            v = v.decode() if isinstance(v, bytes) else str(v)
            if f.optional and v == "":
                v = None
            elif f.kind == "enum":
                assert f.enum_type is not None
                v = f.enum_type(v)
        else:
            v = tuple(float(x) for x in v)
        kwargs[f.name] = v
    return cls(**kwargs)


def differences(a: Any, b: Any, *, rtol: float = 1e-9) -> list[str]:
    """Where two JSON-like values (e.g. ``status.to_dict()``) differ: floats beyond ``rtol``
    (None, the JSON nan, equals None), anything else when unequal; [] if they agree. Each
    item names the path, e.g. ``pairs[2].visibility: 0.97 vs 0.96``."""
    return _diff(a, b, "", rtol)


def _diff(a: Any, b: Any, where: str, rtol: float) -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{where}.{key}" if where else str(key), rtol)
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items vs {len(b)}"]
        out = []
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            out += _diff(x, y, f"{where}[{k}]", rtol)
        return out
    if isinstance(a, float) and isinstance(b, float | int) and not isinstance(b, bool):
        if math.isclose(a, float(b), rel_tol=rtol, abs_tol=1e-300):
            return []
        return [f"{where}: {a!r} vs {b!r}"]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]
