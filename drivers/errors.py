"""Typed exceptions raised by labctl drivers.

Every exception carries the instrument name and, where one was involved, the
command that was being sent, so a log line or a GUI message can say exactly
which instrument failed on what.
"""

from __future__ import annotations


class InstrumentError(Exception):
    """Base class: something went wrong talking to an instrument."""

    def __init__(self, message: str, *, instrument: str, command: str | None = None) -> None:
        self.message = message
        self.instrument = instrument
        self.command = command
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" [command {self.command!r}]" if self.command else ""
        return f"{self.instrument}: {self.message}{where}"


class InstrumentTimeout(InstrumentError):
    """The instrument did not answer within its timeout."""


class InstrumentDisconnected(InstrumentError):
    """The connection is gone (dropped, refused or the port vanished)."""


class InstrumentCommandError(InstrumentError):
    """The instrument accepted the bytes but reported an error in its error queue."""

    def __init__(
        self, message: str, *, instrument: str, command: str | None = None, code: int = 0
    ) -> None:
        self.code = code
        super().__init__(message, instrument=instrument, command=command)


class ProtocolError(InstrumentError):
    """A reply could not be understood (garbled, wrong type, malformed block)."""


class LimitViolation(InstrumentError, ValueError):
    """A requested value lies outside the allowed range; nothing was sent."""

    def __init__(
        self,
        *,
        instrument: str,
        setting: str,
        value: object,
        allowed: str,
        command: str | None = None,
    ) -> None:
        self.setting = setting
        self.value = value
        self.allowed = allowed
        super().__init__(
            f"{setting}={value!r} refused: allowed {allowed}; nothing was sent",
            instrument=instrument,
            command=command,
        )
