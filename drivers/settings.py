"""Declared instrument settings: one place for command, units, limits and doc.

A driver lists its settings as class attributes::

    class SantecTSL570(TunableLaser):
        wavelength_nm = Setting(
            set=":WAV {value}NM", get=":WAV?", units="nm", model_range=(1480.0, 1640.0),
            parse=lambda r: float(r) * 1e9, doc="Output wavelength in vacuum.",
        )

Reading ``laser.wavelength_nm`` queries the instrument, assigning to it goes
through :meth:`drivers.instrument.Instrument.set`, which validates the value
against the model's range and the bench file's limits before a byte is sent,
ramps where the bench file asks for it, and checks the instrument's error
queue. Settings with ``channels`` are indexed: ``awg.amplitude_vpp[2] = 0.5``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drivers.instrument import Instrument


@dataclass(frozen=True)
class Range:
    """Closed interval [low, high] in the setting's units."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (self.low <= self.high):
            raise ValueError(f"empty range [{self.low}, {self.high}]")

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def within(self, other: Range) -> bool:
        """True when this range lies entirely inside ``other``."""
        return other.low <= self.low and self.high <= other.high

    def intersect(self, other: Range) -> Range:
        return Range(max(self.low, other.low), min(self.high, other.high))

    def clamp(self, value: float) -> float:
        return min(max(value, self.low), self.high)

    def __str__(self) -> str:
        return f"[{self.low:g}, {self.high:g}]"


def parse_bool(reply: str) -> bool:
    """Parse the usual instrument spellings of a boolean (1/0, ON/OFF)."""
    token = reply.strip().upper()
    if token in ("1", "ON", "+1", "TRUE"):
        return True
    if token in ("0", "OFF", "+0", "FALSE"):
        return False
    raise ValueError(f"not a boolean: {reply!r}")


def parse_float(reply: str) -> float:
    value = float(reply.strip())
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {reply!r}")
    return value


def parse_int(reply: str) -> int:
    return int(float(reply.strip()))


class Setting:
    """One instrument setting, declared once.

    Parameters
    ----------
    set, get:
        Command templates. ``{value}`` is replaced by the formatted value and
        ``{ch}`` by the channel number. Either may be ``None`` for write-only
        or read-only settings.
    units:
        Physical units of the Python-side value (``"nm"``, ``"mW"``, ``"Vpp"``).
    doc:
        One line that says what the setting is.
    kind:
        ``float``, ``int``, ``bool`` or ``str`` (with ``choices``).
    model_range:
        The instrument model's own range; the bench file may narrow it.
    choices:
        For enumerated settings: Python value -> wire token.
    fmt:
        Format spec for numeric values on the wire.
    parse:
        Reply -> Python value; defaults by ``kind``.
    channels:
        Valid channel numbers for per-channel settings.
    rampable:
        The bench file may give a ramp rate (units per second) for it.
    check_errors:
        Query the error queue after writing.
    """

    def __init__(
        self,
        *,
        units: str,
        doc: str,
        set: str | None = None,
        get: str | None = None,
        kind: type = float,
        model_range: tuple[float, float] | None = None,
        choices: Mapping[Any, str] | None = None,
        fmt: str = ".10g",
        parse: Callable[[str], Any] | None = None,
        channels: tuple[int, ...] | None = None,
        rampable: bool = False,
        check_errors: bool = True,
    ) -> None:
        if set is None and get is None:
            raise ValueError("a setting needs a set or a get command")
        if rampable and kind is not float:
            raise ValueError("only float settings can be ramped")
        self.set_cmd = set
        self.get_cmd = get
        self.units = units
        self.doc = doc
        self.kind = kind
        self.model_range = Range(*model_range) if model_range is not None else None
        self.choices = dict(choices) if choices is not None else None
        self.fmt = fmt
        self._parse = parse
        self.channels = channels
        self.rampable = rampable
        self.check_errors = check_errors
        self.name = "<unbound>"
        self.__doc__ = f"{doc} [{units}]" + (f" range {self.model_range}" if model_range else "")

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    # -- descriptor protocol -------------------------------------------------
    def __get__(self, instrument: Instrument | None, owner: type | None = None) -> Any:
        if instrument is None:
            return self
        if self.channels is not None:
            return ChannelView(instrument, self)
        return instrument.get(self.name)

    def __set__(self, instrument: Instrument, value: Any) -> None:
        if self.channels is not None:
            raise AttributeError(f"{self.name} is per channel: use .{self.name}[channel] = value")
        instrument.set(self.name, value)

    # -- wire conversion -----------------------------------------------------
    @property
    def readable(self) -> bool:
        return self.get_cmd is not None

    @property
    def writable(self) -> bool:
        return self.set_cmd is not None

    def coerce(self, value: Any) -> Any:
        """Convert a user value to the setting's Python type (TypeError/ValueError if not)."""
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"one of {sorted(map(str, self.choices))}")
            return value
        if self.kind is bool:
            if isinstance(value, bool | int) and value in (0, 1):
                return bool(value)
            raise TypeError("a boolean")
        if self.kind is int:
            if isinstance(value, bool) or not float(value).is_integer():
                raise TypeError("an integer")
            return int(value)
        if self.kind is float:
            if isinstance(value, bool):
                raise TypeError("a number")
            result = float(value)
            if not math.isfinite(result):
                raise ValueError("a finite number")
            return result
        return str(value)

    def format_value(self, value: Any) -> str:
        if self.choices is not None:
            return self.choices[value]
        if self.kind is bool:
            return "1" if value else "0"
        if self.kind is int:
            return str(int(value))
        if self.kind is float:
            return format(value, self.fmt)
        return str(value)

    def set_command(self, value: Any, channel: int | None) -> str:
        assert self.set_cmd is not None
        return self.set_cmd.format(value=self.format_value(value), ch=channel)

    def get_command(self, channel: int | None) -> str:
        assert self.get_cmd is not None
        return self.get_cmd.format(ch=channel)

    def parse(self, reply: str) -> Any:
        if self._parse is not None:
            return self._parse(reply)
        if self.choices is not None:
            token = reply.strip().upper()
            for key, wire in self.choices.items():
                if wire.upper() == token or wire.upper().startswith(token):
                    return key
            raise ValueError(f"unexpected token {reply!r}")
        if self.kind is bool:
            return parse_bool(reply)
        if self.kind is int:
            return parse_int(reply)
        if self.kind is float:
            return parse_float(reply)
        return reply.strip().strip('"')

    def describe(self) -> dict[str, Any]:
        """Machine-readable description (used by the GUI to build panels)."""
        return {
            "name": self.name,
            "units": self.units,
            "doc": self.doc,
            "kind": self.kind.__name__,
            "model_range": None
            if self.model_range is None
            else [self.model_range.low, self.model_range.high],
            "choices": None if self.choices is None else list(self.choices),
            "channels": None if self.channels is None else list(self.channels),
            "readable": self.readable,
            "writable": self.writable,
            "rampable": self.rampable,
        }


class ChannelView:
    """``instrument.setting[ch]`` access to a per-channel setting."""

    def __init__(self, instrument: Instrument, setting: Setting) -> None:
        self._instrument = instrument
        self._setting = setting

    def __getitem__(self, channel: int) -> Any:
        return self._instrument.get(self._setting.name, channel=channel)

    def __setitem__(self, channel: int, value: Any) -> None:
        self._instrument.set(self._setting.name, value, channel=channel)

    def __repr__(self) -> str:
        return f"<{self._instrument.name}.{self._setting.name} channels {self._setting.channels}>"
