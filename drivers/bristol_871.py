"""Bristol Instruments 871A laser wavelength meter (SCPI over Ethernet: telnet port 23).

Modelled on the Bristol 871A user's manual, remote communications chapter (as published on
easymanua.ls): ``:FETCh``/``:READ``/``:MEASure`` with ``:FREQuency`` (THz), ``:WAVelength``
(nm), ``:POWer`` and ``:ALL`` (scan index, status, wavelength, power of one measurement),
``:STATus:QUEStionable:CONDition?``, ``:SYSTem:ERRor?``; the SENSe averaging commands as in
the Bristol 671 manual and the open-source 871 driver of jhe274/Faraday_DAQ (which also
lists the trigger rates ``:TRIGger:SEQuence:RATE``), ``:UNIT:POWer MW|DBM`` as that driver
uses it. Lines end in CR LF both ways.

:meth:`Bristol871.measure` reads ``:FETCh:ALL?`` (``:READ:ALL?`` with ``fresh=True``): one
query, so the wavelength, power and status belong to one measurement (separate queries may
straddle an update, as the manual warns) and the scan index tells a new measurement from one
already read. The frequency is computed from the vacuum wavelength (c / lambda). Assumed, to
check on the instrument: the ``:ALL`` wavelength is in nm, vacuum (a reading that is not a
plausible wavelength in nm is refused with a :class:`~drivers.errors.ProtocolError` naming
the unit); a measurement without light replies 0 and sets the "no measurable signal" status
bit, which the driver turns into :class:`~drivers.wavemeter.WavemeterNoSignal` (and ``None``
for the ``frequency_hz`` / ``wavelength_nm`` settings): never a frequency.
"""

from __future__ import annotations

from drivers.errors import ProtocolError
from drivers.settings import Setting
from drivers.wavemeter import (
    NO_READING,
    SPEED_OF_LIGHT_M_S,
    Wavemeter,
    WavemeterCondition,
    WavemeterNoSignal,
    WavemeterReading,
)

#: plausible vacuum wavelengths for any 871 model (VIS 375 nm to MIR 12 um), to catch a
#: reading given in another unit
PLAUSIBLE_WAVELENGTH_NM = (300.0, 12_000.0)


def _thz_to_hz_or_none(reply: str) -> float | None:
    """A frequency reply in THz -> Hz; 0 (no measurable signal) -> None."""
    value = float(reply)
    return value * 1e12 if value > 0 else None


def _nm_or_none(reply: str) -> float | None:
    value = float(reply)
    return value if value > 0 else None


def _condition(reply: str) -> WavemeterCondition:
    return WavemeterCondition(int(reply))


class Bristol871(Wavemeter):
    """Bristol 871A wavelength meter over Ethernet (raw socket), CR LF terminated."""

    model = "bristol_871"
    modelled_on = "Bristol Instruments 871A laser wavelength meter (SCPI over Ethernet)"
    read_termination = "\r\n"
    write_termination = "\r\n"

    frequency_hz = Setting(
        get=":FETC:FREQ?",
        parse=_thz_to_hz_or_none,
        units="Hz",
        doc="Optical frequency of the latest measurement (None: no measurable signal).",
    )
    wavelength_nm = Setting(
        get=":FETC:WAV?",
        parse=_nm_or_none,
        units="nm",
        doc="Vacuum wavelength of the latest measurement (None: no measurable signal).",
    )
    power_mw = Setting(
        get=":FETC:POW?",
        units="mW",
        doc="Power on the detector of the latest measurement (unit kept at mW on connect).",
    )
    power_unit = Setting(
        set=":UNIT:POW {value}",
        get=":UNIT:POW?",
        kind=str,
        choices={"mW": "MW", "dBm": "DBM"},
        units="",
        doc="Unit of the power readings (the driver keeps it at mW).",
    )
    averaging = Setting(
        set=":SENS:AVER:STAT {value}",
        get=":SENS:AVER:STAT?",
        kind=bool,
        choices={True: "ON", False: "OFF"},
        units="",
        doc="Running average of the last average_count measurements on (True) or off.",
    )
    average_count = Setting(
        set=":SENS:AVER:COUN {value}",
        get=":SENS:AVER:COUN?",
        kind=int,
        model_range=(2, 128),
        units="",
        doc="Number of measurements averaged when averaging is on.",
    )
    measurement_rate_hz = Setting(
        set=":TRIG:SEQ:RATE {value}",
        get=":TRIG:SEQ:RATE?",
        kind=int,
        choices={rate: str(rate) for rate in (20, 50, 100, 250, 500, 1000)},
        parse=lambda reply: int(float(reply)),
        units="Hz",
        doc="Measurements per second (internal trigger; VIS/NIR models).",
    )
    condition = Setting(
        get=":STAT:QUES:COND?",
        kind=int,
        parse=_condition,
        units="",
        doc="Questionable-status flags of the latest measurement (WavemeterCondition).",
    )

    def on_connect(self) -> None:
        # every power reading in mW (the power-on unit may be dBm)
        self.set("power_unit", "mW")

    def measure(self, *, fresh: bool = False) -> WavemeterReading:
        """The latest measurement (``fresh=True``: the next one, not yet read).

        Raises :class:`~drivers.wavemeter.WavemeterNoSignal` when it holds no reading.
        """
        command = ":READ:ALL?" if fresh else ":FETC:ALL?"
        reply = self.query(command)
        try:
            index_text, status_text, wavelength_text, power_text = reply.split(",")
            index = int(index_text)
            condition = WavemeterCondition(int(status_text))
            wavelength_nm = float(wavelength_text)
            power = float(power_text)
        except ValueError:
            self.mark_link_dirty()
            raise ProtocolError(
                f"unexpected reply {reply!r}: expected 'scan index,status,wavelength,power'",
                instrument=self.name,
                command=command,
            ) from None
        if condition & NO_READING or wavelength_nm <= 0:
            flags = condition & NO_READING or WavemeterCondition.NO_SIGNAL
            raise WavemeterNoSignal(
                f"no reading: {flags.name} (scan {index}, {power_text.strip()} on the detector)",
                instrument=self.name,
                command=command,
                condition=condition | flags,
            )
        low, high = PLAUSIBLE_WAVELENGTH_NM
        if not low <= wavelength_nm <= high:
            raise ProtocolError(
                f"reading {wavelength_nm:g} is not a wavelength in nm: set the instrument's "
                "wavelength unit to nm (vacuum)",
                instrument=self.name,
                command=command,
            )
        if self.cache.get(("power_unit", None)) == "dBm":
            power = 10.0 ** (power / 10.0)
        return WavemeterReading(
            scan_index=index,
            frequency_hz=SPEED_OF_LIGHT_M_S / (wavelength_nm * 1e-9),
            wavelength_nm=wavelength_nm,
            power_mw=power,
            condition=condition,
        )
