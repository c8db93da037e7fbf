"""Simulated Santec TSL-570 tunable laser.

Speaks the TSL-570 command subset that this driver and third-party TSL
drivers (pymeasure, QMI, photonmover) use, in both of the laser's command
modes, selected with ``:SYSTem:COMMunicate:CODe 0|1``:

* Legacy (code 0, the power-on default here): a bare ``:WAV`` number is in
  nm and ``:WAV?`` replies in nm (``1550.0000``);
* SCPI (code 1): a bare number is in metres and ``:WAV?`` replies in metres
  (NR3, ``+1.55000000E-06``).

Unit suffixes (``1550.1nm``) are accepted in both. ``:POW`` follows
``:POW:UNIT`` (0 dBm, 1 mW); ``:POW:ACT?``, ``:SYST:ALER?`` (``No alerts.``),
``:SYST:ERR?`` (``0,"No error"``) and the common commands; ``*OPC?`` answers
0 while the diode is still turning on. Terminator CR both ways.

Physics: the emitted power follows the setpoint with the diode's turn-on
time constant once emission is on, and is 0 when off; other simulators read
:meth:`optical_power_mw` and :meth:`wavelength_m` (the ring resonance, the
receiver's local oscillator).
"""

from __future__ import annotations

import math
from typing import Any

from drivers.sim.base import SimInstrument
from drivers.sim.scpi import (
    LENGTH_UNITS,
    SETTINGS_CONFLICT,
    Arg,
    check_range,
    error,
    fmt_float,
    parse_bool_arg,
    parse_number,
)

WAVELENGTH_RANGE_M = (1480e-9, 1640e-9)
POWER_RANGE_MW = (0.04, 20.0)
TURN_ON_TAU_S = 0.05  # diode current settling after :POW:STAT 1


def mw_to_dbm(power_mw: float) -> float:
    return 10.0 * math.log10(power_mw)


def dbm_to_mw(power_dbm: float) -> float:
    return 10.0 ** (power_dbm / 10.0)


class SimSantecTSL570(SimInstrument):
    instrument_class = "laser"
    model = "santec_tsl570"
    identity = "SANTEC,TSL-570,22100001,0001.000.0001"
    terminator = b"\r"
    reply_terminator = b"\r"

    def reset(self) -> None:
        self.emission = False
        self.wavelength_m = 1550.000e-9
        self.power_setpoint_mw = 1.0
        self.power_unit_mw = False  # power-on default: dBm
        self.scpi_mode = False  # power-on default: Legacy command set
        self._on_since_s = 0.0
        self.alert = ""

    def register(self) -> None:
        e = self.engine
        e.add_value(
            ":POWer:STATe",
            lambda s: self.emission,
            self._set_emission,
            formatter=lambda v: "1" if v else "0",
        )
        e.add_value(
            ":WAVelength",
            lambda s: self.wavelength_m,
            self._set_wavelength,
            formatter=lambda m: fmt_float(m) if self.scpi_mode else f"{m * 1e9:.4f}",
        )
        e.add_value(
            ":SYSTem:COMMunicate:CODe",
            lambda s: self.scpi_mode,
            self._set_code,
            formatter=lambda v: "1" if v else "0",
        )
        e.add("*OPC", on_query=lambda a, s: "1" if self._settled() else "0")
        e.add_value(
            ":POWer[:LEVel][:IMMediate][:AMPLitude]",
            lambda s: (
                self.power_setpoint_mw if self.power_unit_mw else mw_to_dbm(self.power_setpoint_mw)
            ),
            self._set_power,
        )
        e.add_value(
            ":POWer:UNIT",
            lambda s: self.power_unit_mw,
            self._set_unit,
            formatter=lambda v: "1" if v else "0",
        )
        e.add(":POWer:ACTual[:LEVel]", on_query=lambda a, s: self._actual_power())
        e.add(":SYSTem:ALERt", on_query=lambda a, s: f'"{self.alert or "No alerts."}"')

    # -- handlers ------------------------------------------------------------
    def _set_emission(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        on = parse_bool_arg(arg)
        if on and self.alert:
            raise error(SETTINGS_CONFLICT, f"LD cannot start: {self.alert}")
        if on and not self.emission:
            self._on_since_s = self.now_s()
        self.emission = on

    def _set_code(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        self.scpi_mode = parse_bool_arg(arg)

    def _settled(self) -> bool:
        return not self.emission or self.now_s() - self._on_since_s > 5 * TURN_ON_TAU_S

    def _set_wavelength(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        # a bare number is in metres in SCPI mode and in nm in Legacy mode
        units = LENGTH_UNITS if self.scpi_mode else {**LENGTH_UNITS, "": 1e-9}
        value = parse_number(
            arg,
            units=units,
            minimum=WAVELENGTH_RANGE_M[0],
            maximum=WAVELENGTH_RANGE_M[1],
        )
        self.wavelength_m = check_range(value, *WAVELENGTH_RANGE_M, "wavelength")

    def _set_power(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        if self.power_unit_mw:
            value = parse_number(arg, minimum=POWER_RANGE_MW[0], maximum=POWER_RANGE_MW[1])
        else:
            value = dbm_to_mw(
                parse_number(
                    arg, minimum=mw_to_dbm(POWER_RANGE_MW[0]), maximum=mw_to_dbm(POWER_RANGE_MW[1])
                )
            )
        self.power_setpoint_mw = check_range(value, *POWER_RANGE_MW, "power (mW)")

    def _set_unit(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        token = arg.strip().upper() if isinstance(arg, str) else ""
        if token in ("0", "DBM"):
            self.power_unit_mw = False
        elif token in ("1", "MW"):
            self.power_unit_mw = True
        else:
            raise error(SETTINGS_CONFLICT, f"power unit {arg!r}: use 0 (dBm) or 1 (mW)")

    def _actual_power(self) -> str:
        power_mw = self.optical_power_mw()
        if self.power_unit_mw:
            return fmt_float(power_mw)
        return fmt_float(mw_to_dbm(power_mw) if power_mw > 0 else -99.0)

    # -- physics read by other simulators -----------------------------------
    def optical_power_mw(self) -> float:
        """Emitted power now: first-order turn-on after emission was switched on."""
        if not self.emission:
            return 0.0
        elapsed = max(0.0, self.now_s() - self._on_since_s)
        return self.power_setpoint_mw * (1.0 - math.exp(-elapsed / TURN_ON_TAU_S))

    def snapshot(self) -> dict[str, Any]:
        return {
            "emission": self.emission,
            "wavelength_nm": self.wavelength_m * 1e9,
            "power_setpoint_mw": self.power_setpoint_mw,
            "optical_power_mw": self.optical_power_mw(),
        }
