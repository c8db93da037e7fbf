"""The instrument base class: the one safe path from a Python value to the wire.

Every write of a declared :class:`~drivers.settings.Setting` goes through
:meth:`Instrument.set`, which in this order

1. coerces the value to the setting's type,
2. checks it against the model's range intersected with the bench file's
   limits and raises :class:`~drivers.errors.LimitViolation` *before any byte
   is sent*,
3. ramps it from the present value at the bench file's rate when one is
   configured, validating every step,
4. writes it and reads the instrument's error queue, raising
   :class:`~drivers.errors.InstrumentCommandError` with the instrument's text.

Every transaction holds the instrument's lock, so the GUI, acquisition and
control loops can share one instrument from different threads without their
commands interleaving. A timeout, a garbled reply or a dropped link marks the
link dirty; the next transaction first reconnects and resynchronises (it sends
the identity query and discards everything until the identity comes back), so
a late reply is never taken for the answer to a later query.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

from drivers.errors import (
    InstrumentCommandError,
    InstrumentDisconnected,
    InstrumentError,
    InstrumentTimeout,
    LimitViolation,
    ProtocolError,
)
from drivers.settings import Range, Setting
from drivers.transport import VisaTransport

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``listener(instrument, setting, channel, value)``: called after a setting was written
SettingListener = Callable[[str, str, "int | None", Any], None]


def parse_scpi_error(reply: str) -> tuple[int, str]:
    """Parse a SCPI ``SYST:ERR?`` reply such as ``-222,"Data out of range"``."""
    code_text, _, message = reply.partition(",")
    return int(code_text.strip()), message.strip().strip('"')


class Instrument:
    """Base of every driver.

    Subclasses set the class attributes below and declare their settings as
    :class:`~drivers.settings.Setting` attributes.
    """

    #: instrument class key used in bench files ("laser", "awg", ...)
    instrument_class: ClassVar[str] = ""
    #: model key used in bench files ("santec_tsl570", ...)
    model: ClassVar[str] = ""
    #: the real instrument whose command set the driver follows
    modelled_on: ClassVar[str] = ""
    read_termination: ClassVar[str] = "\n"
    write_termination: ClassVar[str] = "\n"
    baud_rate: ClassVar[int | None] = None
    identity_query: ClassVar[str] = "*IDN?"
    #: error-queue query, or None when the protocol has none
    error_query: ClassVar[str | None] = ":SYST:ERR?"
    #: max error-queue entries read after one write
    max_errors_read: ClassVar[int] = 16

    def __init__(
        self,
        name: str,
        resource: str,
        *,
        limits: Mapping[str, tuple[float, float]] | None = None,
        ramps: Mapping[str, float] | None = None,
        timeout_s: float = 2.0,
        ramp_step_s: float = 0.05,
        resync_timeout_s: float | None = None,
        reconnect_attempts: int = 3,
    ) -> None:
        self.name = name
        self.resource = resource
        self.timeout_s = timeout_s
        self.ramp_step_s = ramp_step_s
        self.resync_timeout_s = resync_timeout_s if resync_timeout_s is not None else 5 * timeout_s
        self.reconnect_attempts = reconnect_attempts
        self.transport = VisaTransport(
            resource,
            instrument=name,
            read_termination=self.read_termination,
            write_termination=self.write_termination,
            timeout_s=timeout_s,
            baud_rate=self.baud_rate,
        )
        self._lock = threading.RLock()
        self._ramp_lock = threading.Lock()
        self._fatal_state = threading.local()  # .active: this thread is in _fatal
        self._dirty = False
        self._identity: str | None = None
        self._ranges = self._build_ranges(limits or {})
        self._ramps = self._check_ramps(ramps or {})
        self.cache: dict[tuple[str, int | None], Any] = {}
        self._listeners: list[SettingListener] = []

    # -- who wants to know about changes -------------------------------------
    def add_setting_listener(self, listener: SettingListener) -> None:
        """Call ``listener(instrument_name, setting, channel, value)`` after every successful
        :meth:`set` (once, with the final value of a ramp), from the setting thread. A
        listener that raises is logged and never fails the write (a recorder, a GUI)."""
        self._listeners.append(listener)

    def remove_setting_listener(self, listener: SettingListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, name: str, channel: int | None, value: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(self.name, name, channel, value)
            except Exception:
                log.exception("%s: setting listener %r failed", self.name, listener)

    # -- declared settings ---------------------------------------------------
    @classmethod
    def settings(cls) -> dict[str, Setting]:
        """All declared settings of this driver, by name (base classes first)."""
        found: dict[str, Setting] = {}
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).items():
                if isinstance(value, Setting):
                    found[key] = value
        return found

    @classmethod
    def setting(cls, name: str) -> Setting:
        try:
            return cls.settings()[name]
        except KeyError:
            raise KeyError(f"{cls.__name__} has no setting {name!r}") from None

    def _build_ranges(self, limits: Mapping[str, tuple[float, float]]) -> dict[str, Range]:
        declared = self.settings()
        ranges = {n: s.model_range for n, s in declared.items() if s.model_range is not None}
        for key, (low, high) in limits.items():
            setting = declared.get(key)
            if setting is None or setting.kind not in (float, int):
                raise ValueError(f"{self.name}: no numeric setting {key!r} to limit")
            limit = Range(float(low), float(high))
            if setting.model_range is not None and not limit.within(setting.model_range):
                raise ValueError(
                    f"{self.name}: limit {key} {limit} exceeds the model's range "
                    f"{setting.model_range} {setting.units}"
                )
            ranges[key] = limit
        return ranges

    def _check_ramps(self, ramps: Mapping[str, float]) -> dict[str, float]:
        declared = self.settings()
        for key, rate in ramps.items():
            if key not in declared or not declared[key].rampable:
                raise ValueError(f"{self.name}: setting {key!r} cannot be ramped")
            if not rate > 0:
                raise ValueError(f"{self.name}: ramp rate for {key} must be > 0")
        return dict(ramps)

    def allowed_range(self, name: str) -> Range | None:
        """Model range intersected with the bench file's limits, if any."""
        return self._ranges.get(name)

    @property
    def ramp_in_progress(self) -> bool:
        """True while a ramp of any setting is running (in any thread)."""
        return self._ramp_lock.locked()

    def ramp_rate(self, name: str) -> float | None:
        """Configured ramp rate of a setting in its units per second, or None."""
        return self._ramps.get(name)

    # -- connection ----------------------------------------------------------
    def connect(self) -> str:
        """Open the link and read the identity; returns the identity string."""
        with self._lock:
            self.transport.open()
            try:
                self._identity = self.transport.query(self.identity_query).strip()
            except InstrumentError:
                self.transport.close()
                raise
            self._dirty = False
            self.on_connect()
            return self._identity

    def on_connect(self) -> None:
        """Hook: put the instrument in the protocol state the driver expects."""

    @property
    def identity(self) -> str | None:
        return self._identity

    def close(self, *, safe: bool = True) -> None:
        """Put the instrument in its safe state (unless ``safe=False``) and close."""
        with self._lock:
            if safe and self.transport.is_open:
                try:
                    self.safe_state()
                except InstrumentError as exc:
                    log.error("%s: safe state on close failed: %s", self.name, exc)
            self.transport.close()

    def safe_state(self) -> None:
        """Drive outputs to their safe state (emission/outputs off, ramps down)."""

    def __enter__(self: T) -> T:
        self.connect()  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions --------------------------------------------------------
    def _transact(self, command: str, action: Callable[[], T]) -> T:
        with self._lock:
            if self._dirty:
                self._recover(command)
            try:
                return action()
            except (InstrumentTimeout, InstrumentDisconnected, ProtocolError):
                self._dirty = True
                raise

    def _recover(self, command: str) -> None:
        """Reconnect and resynchronise after a fault; raise if the link stays dead."""
        last: InstrumentError | None = None
        for attempt in range(self.reconnect_attempts):
            try:
                if not self.transport.is_serial or not self.transport.is_open:
                    # A TCP reconnect leaves a late reply on the dead socket.
                    self.transport.reopen()
                self._resynchronise()
                self._dirty = False
                log.info("%s: link recovered (attempt %d)", self.name, attempt + 1)
                return
            except InstrumentError as exc:
                last = exc
                time.sleep(0.05 * 2**attempt)
        assert last is not None
        if isinstance(last, InstrumentTimeout):
            raise InstrumentTimeout(
                f"not responding; could not resynchronise ({last.message})",
                instrument=self.name,
                command=command,
            ) from last
        raise InstrumentDisconnected(
            f"could not reconnect ({last.message})", instrument=self.name, command=command
        ) from last

    def _resynchronise(self) -> None:
        """Send the identity query and discard replies until the identity comes back.

        The instrument answers in order, so any late reply to an earlier query
        arrives before the identity and is dropped here.
        """
        self.transport.write(self.identity_query)
        deadline = time.monotonic() + self.resync_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InstrumentTimeout("resynchronisation timed out", instrument=self.name)
            try:
                line = self.transport.read(timeout_s=remaining).strip()
            except ProtocolError:
                continue  # garbage from the fault: keep draining
            if self._identity is None or line == self._identity:
                return
            log.warning("%s: discarded stale reply %r", self.name, line[:80])

    def write(self, command: str, *, check_errors: bool = True) -> None:
        """Send a raw command (no validation: prefer :meth:`set`)."""

        def action() -> None:
            self.transport.write(command)
            if check_errors:
                self.raise_on_errors(command)

        self._transact(command, action)

    def query(self, command: str, *, timeout_s: float | None = None) -> str:
        """Send a query and return its reply with terminators stripped."""
        return self._transact(command, lambda: self.transport.query(command, timeout_s=timeout_s))

    def query_block(self, command: str, *, datatype: str, big_endian: bool) -> np.ndarray:
        return self._transact(
            command,
            lambda: self.transport.query_block(command, datatype=datatype, big_endian=big_endian),
        )

    def write_block(self, command_prefix: str, data: np.ndarray, *, big_endian: bool) -> None:
        def action() -> None:
            self.transport.write_block(command_prefix, data, big_endian=big_endian)
            self.raise_on_errors(command_prefix)

        self._transact(command_prefix, action)

    # -- error queue ---------------------------------------------------------
    def parse_error(self, reply: str) -> tuple[int, str]:
        """Error-queue reply -> (code, text); code 0 means no error."""
        return parse_scpi_error(reply)

    def read_errors(self) -> list[tuple[int, str]]:
        """Drain the instrument's error queue."""
        if self.error_query is None:
            return []
        errors: list[tuple[int, str]] = []
        for _ in range(self.max_errors_read):
            reply = self.transport.query(self.error_query)
            try:
                code, text = self.parse_error(reply)
            except ValueError as exc:
                raise ProtocolError(
                    f"unreadable error-queue reply {reply!r}",
                    instrument=self.name,
                    command=self.error_query,
                ) from exc
            if code == 0:
                break
            errors.append((code, text))
        return errors

    def raise_on_errors(self, command: str) -> None:
        errors = self.read_errors()
        if errors:
            code, text = errors[0]
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            raise InstrumentCommandError(
                f"instrument error {code}: {text}{more}",
                instrument=self.name,
                command=command,
                code=code,
            )

    # -- settings ------------------------------------------------------------
    def validate(self, name: str, value: Any, channel: int | None = None) -> Any:
        """Coerce and range-check ``value``; raise LimitViolation if refused."""
        setting = self.setting(name)
        if not setting.writable:
            raise LimitViolation(
                instrument=self.name, setting=name, value=value, allowed="nothing (read-only)"
            )
        if setting.channels is not None and channel not in setting.channels:
            raise LimitViolation(
                instrument=self.name,
                setting=f"{name} channel",
                value=channel,
                allowed=f"channels {list(setting.channels)}",
            )
        if setting.channels is None and channel is not None:
            raise LimitViolation(
                instrument=self.name, setting=f"{name} channel", value=channel, allowed="none"
            )
        try:
            value = setting.coerce(value)
        except (TypeError, ValueError) as exc:
            raise LimitViolation(
                instrument=self.name, setting=name, value=value, allowed=str(exc)
            ) from None
        allowed = self._ranges.get(name)
        if allowed is not None and not allowed.contains(value):
            raise LimitViolation(
                instrument=self.name,
                setting=name,
                value=value,
                allowed=f"{allowed} {setting.units}",
            )
        return value

    def set(self, name: str, value: Any, channel: int | None = None, *, ramp: bool = True) -> None:
        """Validate, ramp if configured, write and check errors."""
        setting = self.setting(name)
        value = self.validate(name, value, channel)
        rate = self._ramps.get(name)
        if ramp and rate is not None:
            self._ramp(setting, value, channel, rate)
        else:
            self._write_setting(setting, value, channel)
        self._notify(name, channel, value)

    def _write_setting(self, setting: Setting, value: Any, channel: int | None) -> None:
        command = setting.set_command(value, channel)
        self.write(command, check_errors=setting.check_errors and self.error_query is not None)
        self.cache[(setting.name, channel)] = value

    def ramp_steps(self, name: str, start: float, target: float) -> np.ndarray:
        """Values written when ramping ``name`` from ``start`` to ``target``.

        The ramp starts from ``start`` clamped into the allowed range (so an
        instrument found outside its limits is first brought to the nearest
        limit), moves at most ``rate * ramp_step_s`` per step and ends exactly
        on ``target``.
        """
        rate = self._ramps[name]
        allowed = self._ranges.get(name)
        begin = allowed.clamp(start) if allowed is not None else start
        max_step = rate * self.ramp_step_s
        n_steps = max(1, math.ceil(abs(target - begin) / max_step - 1e-9))
        steps = np.linspace(begin, target, n_steps + 1)[1:]
        if begin != start:
            steps = np.concatenate(([begin], steps))
        return steps

    def _ramp(self, setting: Setting, target: float, channel: int | None, rate: float) -> None:
        failure: InstrumentError | None = None
        with self._ramp_lock:
            start = float(self.get(setting.name, channel))
            steps = self.ramp_steps(setting.name, start, target)
            for value in steps:  # validate the whole ramp before the first step
                self.validate(setting.name, float(value), channel)
            try:
                for i, value in enumerate(steps):
                    if i:
                        time.sleep(self.ramp_step_s)
                    self._write_setting(setting, float(value), channel)
            except InstrumentError as exc:
                failure = exc
        if failure is not None:
            log.error(
                "%s: ramp of %s failed (%s): going to safe state", self.name, setting.name, failure
            )
            # Outside the ramp lock: a safe state may itself ramp (an AWG ramps
            # its amplitude down), which would deadlock on the non-reentrant lock.
            self._fatal(failure)
            raise failure

    def _fatal(self, exc: InstrumentError) -> None:
        """Best effort: reach the safe state after a fault that aborted an operation.

        Not re-entered: a fault inside the safe state itself (say, its own ramp
        failing) is logged by the outer call instead of recursing.
        """
        if getattr(self._fatal_state, "active", False):
            return
        self._fatal_state.active = True
        try:
            self.safe_state()
        except InstrumentError as second:
            log.error("%s: safe state after fault failed: %s", self.name, second)
        finally:
            self._fatal_state.active = False

    def mark_link_dirty(self) -> None:
        """After a reply that could not be understood: resynchronise before the next command."""
        with self._lock:
            self._dirty = True

    def get(self, name: str, channel: int | None = None) -> Any:
        """Query a declared setting and parse the reply."""
        setting = self.setting(name)
        if not setting.readable:
            return self.cache.get((name, channel))
        command = setting.get_command(channel)
        reply = self.query(command)
        try:
            value = setting.parse(reply)
        except (TypeError, ValueError) as exc:
            self.mark_link_dirty()
            raise ProtocolError(
                f"unexpected reply {reply!r} for {name}: {exc}",
                instrument=self.name,
                command=command,
            ) from None
        self.cache[(name, channel)] = value
        return value

    def state(self) -> dict[str, Any]:
        """Read every readable setting (per channel where applicable)."""
        result: dict[str, Any] = {}
        for name, setting in self.settings().items():
            if not setting.readable:
                continue
            if setting.channels is None:
                result[name] = self.get(name)
            else:
                result[name] = {str(ch): self.get(name, ch) for ch in setting.channels}
        return result

    def apply(self, values: Mapping[str, Any]) -> None:
        """Apply several settings; ``"name.ch"`` keys address one channel.

        Everything is validated first so a bad value refuses the whole batch
        before any byte is sent.
        """
        plan: list[tuple[str, Any, int | None]] = []
        for key, value in values.items():
            name, _, ch = key.partition(".")
            setting = self.setting(name)
            channels: tuple[int | None, ...]
            if ch:
                channels = (int(ch),)
            elif setting.channels is not None:
                channels = setting.channels
            else:
                channels = (None,)
            for channel in channels:
                plan.append((name, self.validate(name, value, channel), channel))
        for name, value, channel in plan:
            self.set(name, value, channel)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} at {self.resource}>"
