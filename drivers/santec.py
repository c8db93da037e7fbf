"""Santec TSL-570 tunable laser (SCPI command mode over LAN/GPIB).

Modelled on the Santec TSL-570 SCPI command set. On connect the driver puts
the laser in SCPI command mode (``:SYST:COMM:COD 1``), where a bare
``:WAVelength`` number is read as metres and ``:WAV?`` replies in metres;
it always sends an explicit ``NM`` unit so that a laser left in Legacy mode
(bare number = nm) cannot be mis-set either. ``:POWer:STATe`` switches the
laser diode, ``:POWer:UNIT 1`` selects mW for ``:POWer`` and
``:POWer:ACTual?`` reads the monitored output power. Errors are read from
``:SYSTem:ERRor?``.
"""

from __future__ import annotations

from drivers.laser import TunableLaser
from drivers.settings import Setting


def _metres_to_nm(reply: str) -> float:
    return float(reply) * 1e9


class SantecTSL570(TunableLaser):
    """Santec TSL-570 over LAN (raw socket, port 5000) or GPIB, CR terminated."""

    model = "santec_tsl570"
    modelled_on = "Santec TSL-570 (SCPI mode)"
    read_termination = "\r"
    write_termination = "\r"

    emission = Setting(
        set=":POW:STAT {value}",
        get=":POW:STAT?",
        kind=bool,
        units="",
        doc="Laser diode emission on (True) or off.",
    )
    wavelength_nm = Setting(
        set=":WAV {value}NM",
        get=":WAV?",
        parse=_metres_to_nm,
        units="nm",
        model_range=(1480.0, 1640.0),
        fmt=".4f",
        rampable=True,
        doc="Output wavelength in vacuum (sent with an explicit NM unit).",
    )
    power_mw = Setting(
        set=":POW {value}",
        get=":POW?",
        units="mW",
        model_range=(0.04, 20.0),
        fmt=".4f",
        rampable=True,
        doc="Output power setpoint (power unit fixed to mW on connect).",
    )
    measured_power_mw = Setting(
        get=":POW:ACT?",
        units="mW",
        doc="Monitored optical output power.",
    )
    power_unit = Setting(
        set=":POW:UNIT {value}",
        get=":POW:UNIT?",
        kind=str,
        choices={"dBm": "0", "mW": "1"},
        units="",
        doc="Unit of :POWer (the driver keeps it at mW).",
    )

    def on_connect(self) -> None:
        # SCPI command mode (SI units on the wire); all power values in mW.
        self.write(":SYST:COMM:COD 1")
        self.set("power_unit", "mW")

    def alerts(self) -> str:
        """The laser's alert text (``:SYSTem:ALERt?``), e.g. a temperature alarm."""
        return self.query(":SYST:ALER?").strip().strip('"')
