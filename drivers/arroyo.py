"""Arroyo Instruments TECSource 5300 series temperature controller (serial).

Modelled on the Arroyo TECSource 5300-series serial command set (the 5305):
38400 baud 8-N-1; the instrument accepts CR, LF or CR LF after a command
and ends every reply with CR LF. The driver writes CR LF, as NIST's client does.

* ``TEC:T <degC>`` sets the temperature setpoint (``TEC:SET:T?`` reads it
  back); ``TEC:T?`` is the *measured* temperature.
* ``TEC:OUT 0|1`` switches the output, ``TEC:LIM:ITE`` limits the TEC
  current, ``TEC:ITE?`` reads it, ``TEC:LIM:THI``/``TEC:LIM:TLO`` are the
  temperature limits beyond which the instrument switches its output off.
* ``TEC:PID P,I,D`` / ``TEC:PID?`` carry the three gains as one
  comma-separated triple, and ``TEC:TOL tol,time`` the tolerance window.
  Each gain is declared as its own setting (so each has a range, units and a
  doc); writing one gain reads the triple and writes it back with the new
  value, and :meth:`Arroyo5300.set_pid` validates all three before it sends
  one ``TEC:PID`` command.
* ``TEC:COND?`` is the condition register, decoded into
  :class:`~drivers.tec.TecCondition` (bit 9 is *out of* tolerance, bit 10
  output on).
* Errors: ``ERRSTR?`` replies ``0`` when the queue is empty, else
  ``code,text[,code,text...]`` with every queued error (the reply drains
  the queue). The codes and texts are model-specific and not checked here.
* ``*IDN?`` is space-separated: ``Arroyo 5305 TECSource <serial> <firmware>``.
* Modes: ``TEC:MODE:T`` (the instrument's PID holds the thermistor temperature; selected on
  connect) and ``TEC:MODE:ITE`` (constant current: the PID is bypassed and ``TEC:ITE <A>``
  sets the TEC current, read back with ``TEC:SET:ITE?``; ``TEC:ITE?`` stays the measured
  current). ITE mode is for host-side loops that compute the current themselves. ``TEC:MODE?``
  replies ``T`` or ``ITE``. The temperature limits trip the output in both modes.

On the serial line terminal echo may be on (the instrument then sends each
command back before its reply). :meth:`Arroyo5300.connect` sends
``TERMINAL 0`` first and skips echoed lines while it reads the identity.

The gain units are not given in the public sources we have. This driver
passes them through unchanged. Our simulator reads them as P in A/degC,
I in 1/s and D in s (standard form, see :mod:`drivers.sim.arroyo`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from drivers.errors import InstrumentError, ProtocolError
from drivers.settings import Range, Setting
from drivers.tec import TecCondition, TemperatureController

_INTEGER = re.compile(r"^[+-]?\d+$")


def parse_errstr(reply: str) -> list[tuple[int, str]]:
    """``ERRSTR?`` reply -> [(code, text), ...]; ``"0"`` -> [].

    Fields alternate code and text. A text that itself contains commas is
    put back together: every field up to the next integer belongs to it.
    Raises ValueError when the reply does not start with a code.
    """
    fields = reply.strip().split(",")
    if fields == ["0"]:
        return []
    errors: list[tuple[int, str]] = []
    i = 0
    while i < len(fields):
        if not _INTEGER.match(fields[i].strip()):
            raise ValueError(f"expected an error code, got {fields[i]!r}")
        code = int(fields[i])
        i += 1
        text: list[str] = []
        while i < len(fields) and not _INTEGER.match(fields[i].strip()):
            text.append(fields[i])
            i += 1
        if code != 0:
            errors.append((code, ",".join(text).strip()))
    return errors


class GroupedSetting(Setting):
    """One field of a command that sets several values at once (``TEC:PID P,I,D``).

    ``set`` is the group's template with positional fields (``"TEC:PID
    {0},{1},{2}"``) and ``get`` the group's query, whose comma-separated reply
    holds this setting at ``index``. A driver writes the group through
    :meth:`group_command`; this field alone has no command.
    """

    def __init__(self, *, group: str, index: int, size: int, **kwargs: Any) -> None:
        if not 0 <= index < size:
            raise ValueError("field index outside the group")
        self.group = group
        self.index = index
        self.size = size
        super().__init__(parse=self._parse_field, **kwargs)

    def _parse_field(self, reply: str) -> float:
        fields = reply.split(",")
        if len(fields) != self.size:
            raise ValueError(f"expected {self.size} comma-separated values")
        return float(fields[self.index])

    def set_command(self, value: Any, channel: int | None) -> str:
        raise TypeError(f"{self.name} is written with its group {self.group!r}")

    def group_command(self, values: Sequence[float]) -> str:
        assert self.set_cmd is not None and len(values) == self.size
        return self.set_cmd.format(*(format(float(v), self.fmt) for v in values))


class Arroyo5300(TemperatureController):
    """Arroyo TECSource 5300 series (5305): PID temperature control over serial.

    Besides the bench-file limits of :class:`~drivers.instrument.Instrument`,
    ``current_setpoint_a`` is limited to +-the bench file's ``current_limit_a`` upper limit
    when the bench file gives one and no limit of its own: the constant-current setpoint can
    then never ask for more than the bench allows the controller to drive.
    """

    model = "arroyo_5300"
    modelled_on = "Arroyo Instruments TECSource 5305 (serial command set)"
    read_termination = "\r\n"
    write_termination = "\r\n"
    baud_rate = 38400
    error_query = "ERRSTR?"
    echo_off_command = "TERMINAL 0"

    setpoint_c = Setting(
        set="TEC:T {value}",
        get="TEC:SET:T?",
        units="degC",
        model_range=(-99.0, 250.0),
        fmt=".4f",
        rampable=True,
        doc="Temperature setpoint (must also lie within TEC:LIM:TLO/THI on the instrument).",
    )
    temperature_c = Setting(get="TEC:T?", units="degC", doc="Measured (thermistor) temperature.")
    output = Setting(
        set="TEC:OUT {value}", get="TEC:OUT?", kind=bool, units="", doc="TEC output on (True)."
    )
    current_limit_a = Setting(
        set="TEC:LIM:ITE {value}",
        get="TEC:LIM:ITE?",
        units="A",
        model_range=(0.0, 5.0),
        fmt=".3f",
        doc="TEC current limit (magnitude, both polarities; 5 A on the 5305).",
    )
    tec_current_a = Setting(
        get="TEC:ITE?", units="A", doc="Measured TEC current (positive heats the stage)."
    )
    tec_voltage_v = Setting(get="TEC:V?", units="V", doc="Measured voltage across the TEC.")
    mode = Setting(
        set="TEC:MODE:{value}",
        get="TEC:MODE?",
        kind=str,
        choices={"T": "T", "ITE": "ITE"},
        units="",
        doc=(
            "Control mode: T (the controller's PID holds the thermistor at setpoint_c) or ITE "
            "(constant current current_setpoint_a, for host-side loops); a change of mode "
            "switches the output off."
        ),
    )
    current_setpoint_a = Setting(
        set="TEC:ITE {value}",
        get="TEC:SET:ITE?",
        units="A",
        model_range=(-5.0, 5.0),
        fmt=".4f",
        doc=(
            "TEC current in ITE mode (positive heats); the instrument drives at most "
            "+-current_limit_a."
        ),
    )
    pid_p = GroupedSetting(
        group="pid",
        index=0,
        size=3,
        set="TEC:PID {0},{1},{2}",
        get="TEC:PID?",
        units="A/degC",
        model_range=(0.0, 10.0),
        fmt=".4f",
        doc="Proportional gain of the control loop (one field of TEC:PID).",
    )
    pid_i = GroupedSetting(
        group="pid",
        index=1,
        size=3,
        set="TEC:PID {0},{1},{2}",
        get="TEC:PID?",
        units="1/s",
        model_range=(0.0, 10.0),
        fmt=".4f",
        doc="Integral gain of the control loop (one field of TEC:PID).",
    )
    pid_d = GroupedSetting(
        group="pid",
        index=2,
        size=3,
        set="TEC:PID {0},{1},{2}",
        get="TEC:PID?",
        units="s",
        model_range=(0.0, 10.0),
        fmt=".4f",
        doc="Derivative gain of the control loop (one field of TEC:PID).",
    )
    temperature_high_limit_c = Setting(
        set="TEC:LIM:THI {value}",
        get="TEC:LIM:THI?",
        units="degC",
        model_range=(-99.0, 250.0),
        fmt=".3f",
        doc="Above this measured temperature the instrument switches its output off.",
    )
    temperature_low_limit_c = Setting(
        set="TEC:LIM:TLO {value}",
        get="TEC:LIM:TLO?",
        units="degC",
        model_range=(-99.0, 250.0),
        fmt=".3f",
        doc="Below this measured temperature the instrument switches its output off.",
    )
    tolerance_c = GroupedSetting(
        group="tolerance",
        index=0,
        size=2,
        set="TEC:TOL {0},{1}",
        get="TEC:TOL?",
        units="degC",
        model_range=(0.01, 10.0),
        fmt=".3f",
        doc="In-tolerance window half-width around the setpoint (TEC:TOL field 1).",
    )
    tolerance_time_s = GroupedSetting(
        group="tolerance",
        index=1,
        size=2,
        set="TEC:TOL {0},{1}",
        get="TEC:TOL?",
        units="s",
        model_range=(0.1, 50.0),
        fmt=".3f",
        doc="Time the temperature must stay in the window to count as in tolerance.",
    )

    def __init__(self, name: str, resource: str, **kwargs: Any) -> None:
        super().__init__(name, resource, **kwargs)
        limits = kwargs.get("limits") or {}
        if "current_limit_a" in limits and "current_setpoint_a" not in limits:
            high = float(limits["current_limit_a"][1])
            model = self.setting("current_setpoint_a").model_range
            assert model is not None
            self._ranges["current_setpoint_a"] = Range(-high, high).intersect(model)

    # -- connection ------------------------------------------------------------
    def connect(self) -> str:
        """Open the port, switch terminal echo off, read the identity, select T mode.

        With echo on, the line ``TERMINAL 0`` comes back before the switch
        takes effect; it and an echoed identity query are skipped, so this
        works whichever echo state the instrument was left in.
        """
        with self._lock:
            self.transport.open()
            echoes = {self.echo_off_command, self.identity_query}
            try:
                self.transport.write(self.echo_off_command)
                self.transport.write(self.identity_query)
                line = self.transport.read().strip()
                while line in echoes:
                    echoes.discard(line)
                    line = self.transport.read().strip()
            except InstrumentError:
                self.transport.close()
                raise
            self._identity = line
            self._dirty = False
            self.on_connect()
            return line

    def on_connect(self) -> None:
        # Temperature mode: the PID loop acts on the thermistor temperature. Selecting the
        # mode already in force changes nothing; a host loop selects ITE after connecting.
        self.write("TEC:MODE:T")

    # -- safe state --------------------------------------------------------------
    def _should_ramp_to_safe_temperature(self) -> bool:
        """Ramp the temperature setpoint only in T mode: in ITE mode the setpoint holds
        nothing (the safe state then only switches the output off)."""
        return super()._should_ramp_to_safe_temperature() and self.get("mode") == "T"

    # -- error queue -------------------------------------------------------------
    def parse_error(self, reply: str) -> tuple[int, str]:
        errors = parse_errstr(reply)
        return errors[0] if errors else (0, "")

    def read_errors(self) -> list[tuple[int, str]]:
        """One ``ERRSTR?`` returns (and clears) every queued error."""
        reply = self.transport.query(self.error_query or "ERRSTR?")
        try:
            return parse_errstr(reply)
        except ValueError as exc:
            raise ProtocolError(
                f"unreadable error reply {reply!r}", instrument=self.name, command=self.error_query
            ) from exc

    # -- grouped settings ------------------------------------------------------
    def _write_setting(self, setting: Setting, value: Any, channel: int | None) -> None:
        if isinstance(setting, GroupedSetting):
            self._write_group(setting.group, {setting.name: value})
        else:
            super()._write_setting(setting, value, channel)

    def _group_members(self, group: str) -> list[GroupedSetting]:
        members = [
            s
            for s in self.settings().values()
            if isinstance(s, GroupedSetting) and s.group == group
        ]
        return sorted(members, key=lambda s: s.index)

    def _write_group(self, group: str, values: dict[str, float]) -> None:
        """Write a whole group; fields not in ``values`` keep the instrument's value.

        Callers have validated ``values``; a partial group first reads the
        instrument's present triple, so only the named fields change.
        """
        members = self._group_members(group)
        with self._lock:  # read-modify-write: no other thread's command in between
            if len(values) < len(members):
                reply = self.query(members[0].get_command(None))
                try:
                    current = [float(f) for f in reply.split(",")]
                except ValueError:
                    current = []
                if len(current) != len(members):
                    self._dirty = True
                    raise ProtocolError(
                        f"unexpected reply {reply!r}: {len(members)} values expected",
                        instrument=self.name,
                        command=members[0].get_cmd,
                    )
            else:
                current = [0.0] * len(members)
            merged = [float(values.get(m.name, current[m.index])) for m in members]
            self.write(members[0].group_command(merged))
        for member in members:
            self.cache[(member.name, None)] = merged[member.index]

    def set_pid(self, p: float, i: float, d: float) -> None:
        """Validate all three gains, then send one ``TEC:PID p,i,d``."""
        gains = {
            "pid_p": self.validate("pid_p", p),
            "pid_i": self.validate("pid_i", i),
            "pid_d": self.validate("pid_d", d),
        }
        self._write_group("pid", gains)

    def pid_gains(self) -> tuple[float, float, float]:
        """(P, I, D) from one ``TEC:PID?``."""
        reply = self.query("TEC:PID?")
        try:
            p, i, d = (float(f) for f in reply.split(","))
        except ValueError as exc:
            with self._lock:
                self._dirty = True
            raise ProtocolError(
                f"unexpected TEC:PID? reply {reply!r}", instrument=self.name, command="TEC:PID?"
            ) from exc
        return p, i, d

    def set_tolerance(self, tolerance_c: float, time_s: float) -> None:
        """Validate both, then send one ``TEC:TOL tolerance,time``."""
        values = {
            "tolerance_c": self.validate("tolerance_c", tolerance_c),
            "tolerance_time_s": self.validate("tolerance_time_s", time_s),
        }
        self._write_group("tolerance", values)

    # -- condition ---------------------------------------------------------------
    def status(self) -> TecCondition:
        reply = self.query("TEC:COND?")
        try:
            return TecCondition(int(reply.strip()))
        except ValueError as exc:
            with self._lock:
                self._dirty = True
            raise ProtocolError(
                f"unexpected TEC:COND? reply {reply!r}", instrument=self.name, command="TEC:COND?"
            ) from exc
