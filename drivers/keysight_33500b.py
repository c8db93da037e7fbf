"""Keysight (Agilent) 33500B-series two-channel waveform generator (33522B).

Modelled on the 33500B SCPI command set over a LAN socket (port 5025, LF
terminated both ways). Every channel setting is addressed with an explicit
``SOURce<n>:`` / ``OUTPut<n>`` prefix; the amplitude unit is fixed to Vpp
(``SOUR<n>:VOLT:UNIT VPP``) on connect.

Arbitrary waveforms go to the channel's volatile memory as 16-bit DAC codes
(``SOUR<n>:DATA:ARB:DAC <name>,#<n><len><int16...>``, codes -32767..+32767)
in the byte order the instrument is set to (``FORM:BORD NORM`` big-endian,
``SWAP`` little-endian), which the driver reads back before every upload. The
channel's volatile memory is cleared first (``SOUR<n>:DATA:VOL:CLE``): one
arbitrary waveform per channel. Errors are read from ``SYST:ERR?``
(``+0,"No error"``).

Limits checked before sending: amplitude 1 mVpp..10 Vpp and
``|offset| + Vpp/2 <= 5 V`` (into 50 ohm; the driver assumes the 50 ohm load
setting), arb sample rate 1 uSa/s..160 MSa/s, arb length 8..1 MSa (standard
memory) and names of 1-12 characters (letter first, then letters, digits,
underscores).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drivers.awg import ArbitraryWaveformGenerator
from drivers.errors import LimitViolation
from drivers.settings import Setting

#: DAC code of a normalised sample of +1.0 (the 33500B's -32767..+32767 range)
DAC_FULL_SCALE = 32767
#: largest |offset| + Vpp/2 into 50 ohm
MAX_PEAK_V = 5.0

CHANNELS = (1, 2)


def dac_codes(samples: np.ndarray) -> np.ndarray:
    """Normalised samples (-1..1) -> the 33500B's int16 DAC codes (-32767..32767)."""
    scaled = np.rint(np.asarray(samples, dtype=np.float64) * DAC_FULL_SCALE)
    return np.clip(scaled, -DAC_FULL_SCALE, DAC_FULL_SCALE).astype(np.int16)


def _unquote(reply: str) -> str:
    return reply.strip().strip('"')


class Keysight33500B(ArbitraryWaveformGenerator):
    """Keysight 33522B two-channel 30 MHz function / arbitrary waveform generator."""

    model = "keysight_33500b"
    modelled_on = "Keysight 33500B series (33522B), SCPI over LAN socket"
    channels = CHANNELS
    max_arb_points = 1_000_000  # standard memory; 16 MSa with option MEM

    function = Setting(
        set="SOUR{ch}:FUNC {value}",
        get="SOUR{ch}:FUNC?",
        kind=str,
        choices={f: f for f in ("SIN", "SQU", "TRI", "RAMP", "PULS", "NOIS", "DC", "ARB")},
        channels=CHANNELS,
        units="",
        doc="Output function (ARB plays the selected arbitrary waveform).",
    )
    frequency_hz = Setting(
        set="SOUR{ch}:FREQ {value}",
        get="SOUR{ch}:FREQ?",
        units="Hz",
        model_range=(1e-6, 30e6),
        channels=CHANNELS,
        doc="Frequency of the standard functions (not used by ARB).",
    )
    amplitude_vpp = Setting(
        set="SOUR{ch}:VOLT {value}",
        get="SOUR{ch}:VOLT?",
        units="Vpp",
        model_range=(1e-3, 10.0),
        channels=CHANNELS,
        rampable=True,
        doc="Peak-to-peak amplitude into 50 ohm (an arb spans it from -1 to +1).",
    )
    offset_v = Setting(
        set="SOUR{ch}:VOLT:OFFS {value}",
        get="SOUR{ch}:VOLT:OFFS?",
        units="V",
        model_range=(-5.0, 5.0),
        channels=CHANNELS,
        rampable=True,
        doc="DC offset into 50 ohm; |offset| + Vpp/2 must stay within 5 V.",
    )
    output = Setting(
        set="OUTP{ch} {value}",
        get="OUTP{ch}?",
        kind=bool,
        channels=CHANNELS,
        units="",
        doc="Front-panel output relay of the channel on (True) or off.",
    )
    arb_sample_rate_hz = Setting(
        set="SOUR{ch}:FUNC:ARB:SRAT {value}",
        get="SOUR{ch}:FUNC:ARB:SRAT?",
        units="Sa/s",
        model_range=(1e-6, 160e6),
        channels=CHANNELS,
        doc="Sample rate at which the selected arbitrary waveform is played.",
    )
    arb_name = Setting(
        set='SOUR{ch}:FUNC:ARB "{value}"',
        get="SOUR{ch}:FUNC:ARB?",
        kind=str,
        parse=_unquote,
        channels=CHANNELS,
        units="",
        doc="Name of the arbitrary waveform in volatile memory the channel plays.",
    )
    arb_filter = Setting(
        set="SOUR{ch}:FUNC:ARB:FILT {value}",
        get="SOUR{ch}:FUNC:ARB:FILT?",
        kind=str,
        choices={"normal": "NORM", "step": "STEP", "off": "OFF"},
        channels=CHANNELS,
        units="",
        doc="Arb reconstruction filter: normal (flat, band-limited), step, off (held samples).",
    )
    voltage_unit = Setting(
        set="SOUR{ch}:VOLT:UNIT {value}",
        get="SOUR{ch}:VOLT:UNIT?",
        kind=str,
        choices={"Vpp": "VPP", "Vrms": "VRMS", "dBm": "DBM"},
        channels=CHANNELS,
        units="",
        doc="Unit of SOUR:VOLT (the driver keeps it at Vpp).",
    )
    byte_order = Setting(
        set="FORM:BORD {value}",
        get="FORM:BORD?",
        kind=str,
        choices={"big": "NORM", "little": "SWAP"},
        units="",
        doc="Byte order of binary arb blocks: NORMal big-endian, SWAPped little-endian.",
    )

    def on_connect(self) -> None:
        for channel in self.channels:
            self.set("voltage_unit", "Vpp", channel)
            # fill the cache the amplitude/offset check reads, so a refusal sends nothing
            self.get("amplitude_vpp", channel)
            self.get("offset_v", channel)

    # -- the amplitude + offset window -------------------------------------------
    def validate(self, name: str, value: Any, channel: int | None = None) -> Any:
        """Also refuses an amplitude/offset pair that leaves the +-5 V output window."""
        value = super().validate(name, value, channel)
        if name in ("amplitude_vpp", "offset_v"):
            amplitude = value if name == "amplitude_vpp" else self._known("amplitude_vpp", channel)
            offset = value if name == "offset_v" else self._known("offset_v", channel)
            if abs(offset) + amplitude / 2.0 > MAX_PEAK_V * (1 + 1e-12):
                raise LimitViolation(
                    instrument=self.name,
                    setting=f"{name} (amplitude_vpp with offset_v, channel {channel})",
                    value=f"amplitude_vpp={amplitude:g} Vpp, offset_v={offset:g} V",
                    allowed=f"|offset_v| + amplitude_vpp/2 <= {MAX_PEAK_V:g} V into 50 ohm",
                )
        return value

    def _known(self, name: str, channel: int | None) -> float:
        """Last value written or read (read from the instrument if never seen)."""
        cached = self.cache.get((name, channel))
        return float(cached) if cached is not None else float(self.get(name, channel))

    # -- arbitrary waveforms -------------------------------------------------------
    def _write_arb(self, channel: int, name: str, samples: np.ndarray) -> None:
        codes = dac_codes(samples)
        big_endian = self.get("byte_order") == "big"
        self.write(f"SOUR{channel}:DATA:VOL:CLE")
        self.write_block(f"SOUR{channel}:DATA:ARB:DAC {name},", codes, big_endian=big_endian)

    def volatile_catalog(self, channel: int) -> list[str]:
        """Names of the arbitrary waveforms in the channel's volatile memory."""
        reply = self.query(f"SOUR{self.check_channel(channel)}:DATA:VOL:CAT?")
        return [_unquote(item) for item in reply.split(",") if _unquote(item)]

    def volatile_free_points(self, channel: int) -> int:
        """Free points in the channel's volatile arb memory."""
        reply = self.query(f"SOUR{self.check_channel(channel)}:DATA:VOL:FREE?")
        return int(float(reply))
