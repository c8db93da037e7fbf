"""Capability base for PID temperature controllers (thermo-electric coolers).

Callers use only what is declared here: the setpoint and measured temperature
in degC, the output switch, the TEC current limit and measured current, the
three PID gains and a decoded condition register. A second controller model
declares the same settings with its own commands and maps its status word
onto :class:`TecCondition`.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping
from typing import Any, ClassVar

from drivers.instrument import Instrument


class TecCondition(enum.IntFlag):
    """Live condition of a temperature controller.

    Bit positions follow the Arroyo TECSource ``TEC:COND?`` register (bits 8,
    11 and 13-15 are unused there); other models translate their status word
    onto these names.
    """

    NONE = 0
    CURRENT_LIMIT = 1 << 0
    VOLTAGE_LIMIT = 1 << 1
    SENSOR_LIMIT = 1 << 2
    TEMPERATURE_HIGH_LIMIT = 1 << 3
    TEMPERATURE_LOW_LIMIT = 1 << 4
    SENSOR_SHORTED = 1 << 5
    SENSOR_OPEN = 1 << 6
    TEC_OPEN = 1 << 7
    OUT_OF_TOLERANCE = 1 << 9
    OUTPUT_ON = 1 << 10
    THERMAL_RUNAWAY = 1 << 12


#: conditions that mean the stage is not under control (an interlock trips on these)
TEC_FAULTS = (
    TecCondition.TEMPERATURE_HIGH_LIMIT
    | TecCondition.TEMPERATURE_LOW_LIMIT
    | TecCondition.SENSOR_SHORTED
    | TecCondition.SENSOR_OPEN
    | TecCondition.TEC_OPEN
    | TecCondition.THERMAL_RUNAWAY
)


class TemperatureController(Instrument, abc.ABC):
    """A PID temperature controller driving a TEC: setpoint and readback in degC.

    Parameters beyond :class:`~drivers.instrument.Instrument`'s:

    safe_temperature_c:
        Where :meth:`safe_state` brings the setpoint before it switches the
        output off, when the bench file also gives a ramp rate for
        ``setpoint_c``. ``None`` (default): the safe state only switches the
        output off. Checked against the setpoint's allowed range here, so a
        bad bench file fails at construction, not during an emergency.
    """

    instrument_class = "tec"
    #: settings every controller model declares (checked by the driver meta-test)
    required_settings: ClassVar[tuple[str, ...]] = (
        "setpoint_c",
        "temperature_c",
        "output",
        "current_limit_a",
        "pid_p",
        "pid_i",
        "pid_d",
        "tec_current_a",
    )

    def __init__(
        self,
        name: str,
        resource: str,
        *,
        safe_temperature_c: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, resource, **kwargs)
        self._safe_state_depth = 0
        self.safe_temperature_c = (
            None
            if safe_temperature_c is None
            else float(self.validate("setpoint_c", safe_temperature_c))
        )

    # -- condition -------------------------------------------------------------
    @abc.abstractmethod
    def status(self) -> TecCondition:
        """Read and decode the live condition register."""

    def is_settled(self) -> bool:
        """Output on and the temperature inside the controller's tolerance window."""
        condition = self.status()
        return TecCondition.OUTPUT_ON in condition and not (
            condition & TecCondition.OUT_OF_TOLERANCE
        )

    def faults(self) -> TecCondition:
        """The fault conditions present now (empty flag when none)."""
        return self.status() & TEC_FAULTS

    # -- PID gains -------------------------------------------------------------
    def pid_gains(self) -> tuple[float, float, float]:
        """The (P, I, D) gains."""
        return (float(self.pid_p), float(self.pid_i), float(self.pid_d))  # type: ignore[attr-defined]

    def set_pid(self, p: float, i: float, d: float) -> None:
        """Set all three gains; all are validated before anything is sent."""
        self.apply({"pid_p": p, "pid_i": i, "pid_d": d})

    # -- output ----------------------------------------------------------------
    def output_on(self) -> None:
        self.set("output", True)

    def output_off(self) -> None:
        self.set("output", False)

    def safe_state(self) -> None:
        """Bring the setpoint to the safe temperature at the ramp rate, then output off.

        The setpoint is ramped only when ``safe_temperature_c`` is given, the
        bench file has a ramp rate for ``setpoint_c`` and the output is on: the
        controller then tracks a setpoint moving at that rate, so the stage
        never sees a step. The output is switched off afterwards in every case
        (also when the ramp fails) and the stage relaxes passively to ambient
        at its own thermal time constant. The output goes off at once, without
        a ramp, when another ramp is in progress (a watchdog thread acting
        while someone ramps) or when a safe state is already running (a
        failed ramp of this one calls the safe state again: it must not ramp
        again). The safe state does not wait for the temperature to arrive.
        """
        nested = self._safe_state_depth > 0
        self._safe_state_depth += 1
        try:
            try:
                if not nested and self._should_ramp_to_safe_temperature():
                    self.set("setpoint_c", self.safe_temperature_c)
            finally:
                self.set("output", False)
        finally:
            self._safe_state_depth -= 1

    def _should_ramp_to_safe_temperature(self) -> bool:
        return (
            self.safe_temperature_c is not None
            and self.ramp_rate("setpoint_c") is not None
            and not self.ramp_in_progress
            and bool(self.get("output"))
        )

    def describe_condition(self, condition: TecCondition | None = None) -> Mapping[str, bool]:
        """Every named condition bit and whether it is set (for panels and logs)."""
        value = self.status() if condition is None else condition
        return {
            flag.name: flag in value
            for flag in TecCondition
            if flag.name is not None and flag is not TecCondition.NONE
        }
