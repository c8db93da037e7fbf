"""Santec TSL-570 tunable laser (SCPI command mode over LAN/GPIB).

Modelled on the Santec TSL-570 SCPI command set. On connect the driver puts
the laser in SCPI command mode (``:SYST:COMM:COD 1``), where a bare
``:WAVelength`` number is read as metres and ``:WAV?`` replies in metres;
it always sends an explicit ``NM`` unit so that a laser left in Legacy mode
(bare number = nm) cannot be mis-set either. ``:POWer:STATe`` switches the
laser diode, ``:POWer:UNIT 1`` selects mW for ``:POWer`` and
``:POWer:ACTual?`` reads the monitored output power. Errors are read from
``:SYSTem:ERRor?``.

Fine tuning (``:WAVelength:FINetuning``, -100.00 to +100.00 in 0.01 steps, ended by
``:WAVelength:FINetuning:DISable``) follows the TSL-550/570 command reference as the QMI and
photonmover TSL drivers implement it. The reference excerpts found do not state its unit;
this driver takes pm (0.01 pm = 1.25 MHz at 1550 nm, ten times finer than ``:WAV`` at 0.1 pm),
which must be checked on the instrument before a lock relies on the scale. A new
``wavelength_nm`` ends fine tuning (offset back to 0), so a frequency loop actuates
``fine_tuning_pm`` around a fixed ``wavelength_nm``; :func:`fine_tuning_pm_for_offset` turns a
frequency correction into the offset.
"""

from __future__ import annotations

from drivers.laser import TunableLaser
from drivers.settings import Setting

SPEED_OF_LIGHT_M_S = 299_792_458.0


def _metres_to_nm(reply: str) -> float:
    return float(reply) * 1e9


def fine_tuning_pm_for_offset(offset_hz: float, wavelength_nm: float) -> float:
    """Wavelength offset (pm) that moves light at ``wavelength_nm`` (vacuum) by ``offset_hz``.

    Exact, not first order: lambda' = c / (c / lambda + offset), returned as lambda' - lambda.
    To first order this is -lambda^2 offset / c: -8.0 pm per GHz at 1550 nm.
    """
    wavelength_m = wavelength_nm * 1e-9
    shifted_m = SPEED_OF_LIGHT_M_S / (SPEED_OF_LIGHT_M_S / wavelength_m + offset_hz)
    return (shifted_m - wavelength_m) * 1e12


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
    fine_tuning_pm = Setting(
        set=":WAV:FIN {value}",
        get=":WAV:FIN?",
        units="pm",
        model_range=(-100.0, 100.0),
        fmt=".2f",
        doc="Fine-tuning offset added to wavelength_nm (0.01 pm steps; 0 after a new "
        "wavelength_nm).",
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

    def end_fine_tuning(self) -> None:
        """End fine tuning: the laser goes back to ``wavelength_nm`` (offset 0)."""
        self.write(":WAV:FIN:DIS")
        self.cache[("fine_tuning_pm", None)] = 0.0

    def alerts(self) -> str:
        """The laser's alert text (``:SYSTem:ALERt?``), e.g. a temperature alarm."""
        return self.query(":SYST:ALER?").strip().strip('"')
