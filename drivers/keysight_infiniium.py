"""Keysight Infiniium real-time oscilloscope (MXR / S-series / 9000 / 90000), 4 channels.

Modelled on the Infiniium programmer's reference command set over a LAN
socket (LF terminated). On connect the driver switches reply headers off
(``:SYSTem:HEADer OFF``), selects 16-bit signed waveform words
(``:WAVeform:FORMat WORD``) in the configured byte order
(``:WAVeform:BYTeorder LSBFirst|MSBFirst``) and definite-length blocks
(``:WAVeform:STReaming OFF``).

One acquisition is ``:DIGitize CHANnel1,CHANnel2,...;*OPC?``: the scope
digitises the listed channels together and answers ``1`` when done. Each
channel is then read with ``:WAVeform:SOURce CHANnel<n>``, the 24-field
``:WAVeform:PREamble?`` (parsed into :class:`InfiniiumPreamble`) and
``:WAVeform:DATA?`` (an IEEE 488.2 block of int16 words, or int8 bytes in
BYTE format). Infiniium codes are signed and its y reference is 0, so
``volts = code * y_increment + y_origin`` and ``t = x_origin + i * x_increment``.

A cheap reading for slow loops: ``:MEASure:VAVerage? DISPlay,CHANnel<n>`` (or ``CYCLe``: an
integral number of periods) is the mean voltage of the channel over the scope's present
acquisition window, computed in the instrument (:meth:`KeysightInfiniium.mean_voltage_v`);
``9.99999E+37`` is the Infiniium's answer when a measurement has no result.

``:CHANnel<n>:PROTection?`` (``NORM``/``TRIP``) reports an input overload;
``:CHANnel<n>:PROTection:CLEar`` re-arms it. Errors are read with
``:SYSTem:ERRor? STRing`` (``0,"No error"``; without ``STRing`` the
Infiniium answers the number only).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from drivers.errors import InstrumentCommandError, ProtocolError
from drivers.scope import Oscilloscope, Waveform
from drivers.settings import Setting

CHANNELS = (1, 2, 3, 4)
#: measurement replies at or above this are the Infiniium's "no result" (9.99999E+37)
NO_RESULT_V = 9.9e37

E = TypeVar("E", bound=enum.IntEnum)


class WaveformFormat(enum.IntEnum):
    ASCII = 0
    BYTE = 1
    WORD = 2
    LONG = 3
    LONGLONG = 4


class WaveformType(enum.IntEnum):
    RAW = 1
    AVERAGE = 2
    VHISTOGRAM = 3
    HHISTOGRAM = 4
    INTERPOLATE = 6
    DIGITAL = 9
    PDETECT = 10


class Coupling(enum.IntEnum):
    AC = 0
    DC = 1
    DCFIFTY = 2
    LFREJECT = 3


class AcquisitionMode(enum.IntEnum):
    RTIME = 0
    ETIME = 1
    PDETECT = 3


class Units(enum.IntEnum):
    UNKNOWN = 0
    VOLT = 1
    SECOND = 2
    CONSTANT = 3
    AMP = 4
    DECIBEL = 5


def _code(enum_type: type[E], text: str) -> E | int:
    """A preamble code as its enum member, or the bare int for codes we do not name."""
    value = int(float(text))
    try:
        return enum_type(value)
    except ValueError:
        return value


@dataclass(frozen=True)
class InfiniiumPreamble:
    """The 24 fields of ``:WAVeform:PREamble?``, in the instrument's order."""

    format: WaveformFormat | int
    type: WaveformType | int
    points: int
    count: int
    x_increment_s: float
    x_origin_s: float
    x_reference: float
    y_increment_v: float
    y_origin_v: float
    y_reference: float
    coupling: Coupling | int
    x_display_range_s: float
    x_display_origin_s: float
    y_display_range_v: float
    y_display_origin_v: float
    date: str
    time: str
    frame_model: str
    acquisition_mode: AcquisitionMode | int
    completion_pct: int
    x_units: Units | int
    y_units: Units | int
    max_bandwidth_limit_hz: float
    min_bandwidth_limit_hz: float

    @classmethod
    def parse(cls, reply: str) -> InfiniiumPreamble:
        """Parse the comma-separated reply (ValueError when it is not a preamble)."""
        parts = [p.strip() for p in reply.strip().split(",")]
        if len(parts) != len(_PREAMBLE_FIELDS):
            raise ValueError(f"expected {len(_PREAMBLE_FIELDS)} preamble fields, got {len(parts)}")
        return cls(*(convert(text) for convert, text in zip(_PREAMBLE_FIELDS, parts, strict=True)))


def _text(text: str) -> str:
    return text.strip('"')


def _int(text: str) -> int:
    return int(float(text))


def _enum(enum_type: type[E]) -> Callable[[str], E | int]:
    return lambda text: _code(enum_type, text)


#: converter of each preamble field, in the instrument's order
_PREAMBLE_FIELDS: tuple[Callable[[str], Any], ...] = (
    _enum(WaveformFormat),
    _enum(WaveformType),
    _int,  # points
    _int,  # count
    float,  # x increment
    float,  # x origin
    float,  # x reference
    float,  # y increment
    float,  # y origin
    float,  # y reference
    _enum(Coupling),
    float,  # x display range
    float,  # x display origin
    float,  # y display range
    float,  # y display origin
    _text,  # date
    _text,  # time
    _text,  # frame model
    _enum(AcquisitionMode),
    _int,  # completion
    _enum(Units),  # x units
    _enum(Units),  # y units
    float,  # max bandwidth limit
    float,  # min bandwidth limit
)


def _channel_protection(reply: str) -> bool:
    token = reply.strip().upper()
    if token.startswith("NORM"):
        return False
    if token.startswith("TRIP"):
        return True
    raise ValueError(f"expected NORM or TRIP, got {reply!r}")


def _waveform_source(reply: str) -> int:
    token = reply.strip().upper()
    for prefix in ("CHANNEL", "CHAN"):
        if token.startswith(prefix) and token[len(prefix) :].isdigit():
            return int(token[len(prefix) :])
    raise ValueError(f"not an analog channel source: {reply!r}")


class KeysightInfiniium(Oscilloscope):
    """Keysight Infiniium four-channel real-time oscilloscope (e.g. MXR404A)."""

    model = "keysight_infiniium"
    modelled_on = "Keysight Infiniium MXR / S-series / 90000 (programmer's reference)"
    channels = CHANNELS
    error_query = ":SYST:ERR? STR"

    channel_scale_v_per_div = Setting(
        set=":CHAN{ch}:SCAL {value}",
        get=":CHAN{ch}:SCAL?",
        units="V/div",
        model_range=(1e-3, 1.0),
        channels=CHANNELS,
        doc="Vertical scale of the 50 ohm input; 8 divisions span the ADC.",
    )
    channel_offset_v = Setting(
        set=":CHAN{ch}:OFFS {value}",
        get=":CHAN{ch}:OFFS?",
        units="V",
        model_range=(-5.0, 5.0),
        channels=CHANNELS,
        doc="Voltage at the centre of the screen (and of the ADC range).",
    )
    channel_protection_tripped = Setting(
        get=":CHAN{ch}:PROT?",
        kind=bool,
        parse=_channel_protection,
        channels=CHANNELS,
        units="",
        doc="Input overload protection tripped (TRIP) rather than NORM.",
    )
    timebase_scale_s_per_div = Setting(
        set=":TIM:SCAL {value}",
        get=":TIM:SCAL?",
        units="s/div",
        model_range=(5e-12, 20.0),
        doc="Horizontal scale of the display (10 divisions).",
    )
    sample_rate_hz = Setting(
        set=":ACQ:SRAT {value}",
        get=":ACQ:SRAT?",
        units="Sa/s",
        model_range=(10.0, 16e9),
        doc="Analog sample rate; the scope rounds up to its next available rate.",
    )
    record_length = Setting(
        set=":ACQ:POIN {value}",
        get=":ACQ:POIN?",
        kind=int,
        units="points",
        model_range=(16, 1_000_000_000),
        doc="Points per channel in one acquisition (memory depth).",
    )
    waveform_source = Setting(
        set=":WAV:SOUR CHAN{value}",
        get=":WAV:SOUR?",
        kind=int,
        parse=_waveform_source,
        model_range=(1, 4),
        units="",
        doc="Analog channel that :WAV:PRE? and :WAV:DATA? read.",
    )
    waveform_format = Setting(
        set=":WAV:FORM {value}",
        get=":WAV:FORM?",
        kind=str,
        choices={"WORD": "WORD", "BYTE": "BYTE"},
        units="",
        doc="Waveform transfer format: signed 16-bit WORD or signed 8-bit BYTE.",
    )
    waveform_byte_order = Setting(
        set=":WAV:BYT {value}",
        get=":WAV:BYT?",
        kind=str,
        choices={"big": "MSBF", "little": "LSBF"},
        units="",
        doc="Byte order of WORD data: MSBFirst (big-endian) or LSBFirst.",
    )
    waveform_streaming = Setting(
        set=":WAV:STR {value}",
        get=":WAV:STR?",
        kind=bool,
        units="",
        doc="Streamed #0 blocks (True) or definite-length blocks (False).",
    )
    headers = Setting(
        set=":SYST:HEAD {value}",
        get=":SYST:HEAD?",
        kind=bool,
        units="",
        doc="Reply headers (the driver keeps them off).",
    )

    def __init__(
        self,
        name: str,
        resource: str,
        *,
        byte_order: str = "little",
        digitize_timeout_s: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, resource, **kwargs)
        self.waveform_byte_order_on_connect = self.validate("waveform_byte_order", byte_order)
        self.digitize_timeout_s = digitize_timeout_s

    def on_connect(self) -> None:
        self.set("headers", False)  # first: every later reply is parsed without a header
        self.set("waveform_format", "WORD")
        self.set("waveform_byte_order", self.waveform_byte_order_on_connect)
        self.set("waveform_streaming", False)

    # -- overload --------------------------------------------------------------------
    def overloaded(self, channel: int) -> bool:
        return bool(self.get("channel_protection_tripped", channel))

    def clear_protection(self, channel: int) -> None:
        """Re-arm a tripped input (``:CHANnel<n>:PROTection:CLEar``)."""
        self.check_channels([channel], "protection channel")
        self.write(f":CHAN{channel}:PROT:CLE")

    # -- measurements ----------------------------------------------------------------
    def mean_voltage_v(self, channel: int, *, whole_cycles: bool = False) -> float:
        """Mean voltage (V) of ``channel`` over the scope's present acquisition window.

        ``:MEASure:VAVerage? DISPlay,CHANnel<n>`` (``CYCLe`` with ``whole_cycles``: an
        integral number of periods of a periodic signal). No waveform is transferred, so it is
        cheap enough for a slow loop's error signal. A clipped input trips the channel's
        protection (see :meth:`overloaded`) and biases the mean. Raises
        InstrumentCommandError when the scope has no result (with its queued error, if any).
        """
        (ch,) = self.check_channels([channel], "measurement channel")
        command = f":MEAS:VAV? {'CYCL' if whole_cycles else 'DISP'},CHAN{ch}"
        reply = self.query(command)
        try:
            value = float(reply)
        except ValueError:
            with self._lock:
                self._dirty = True
            raise ProtocolError(
                f"unexpected measurement reply {reply!r}", instrument=self.name, command=command
            ) from None
        if abs(value) >= NO_RESULT_V:
            self._check(command)  # raises the instrument's own reason when it gave one
            raise InstrumentCommandError(
                f"no measurement result on channel {ch} ({reply.strip()})",
                instrument=self.name,
                command=command,
            )
        return value

    # -- acquisition -----------------------------------------------------------------
    def preamble(self) -> InfiniiumPreamble:
        """The preamble of the present waveform source."""
        reply = self.query(":WAV:PRE?")
        try:
            return InfiniiumPreamble.parse(reply)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(
                f"unreadable preamble {reply[:120]!r}: {exc}",
                instrument=self.name,
                command=":WAV:PRE?",
            ) from None

    def _check(self, command: str) -> None:
        self._transact(command, lambda: self.raise_on_errors(command))

    def _acquire(self, channels: tuple[int, ...]) -> dict[int, Waveform]:
        word = self.get("waveform_format") == "WORD"
        big_endian = self.get("waveform_byte_order") == "big"
        command = ":DIG " + ",".join(f"CHAN{ch}" for ch in channels) + ";*OPC?"
        done = self.query(command, timeout_s=self.digitize_timeout_s)
        if done.strip() != "1":
            raise ProtocolError(
                f"digitize did not complete (*OPC? gave {done!r})",
                instrument=self.name,
                command=command,
            )
        self._check(command)
        records: dict[int, Waveform] = {}
        for channel in channels:
            self.set("waveform_source", channel)
            pre = self.preamble()
            expected = WaveformFormat.WORD if word else WaveformFormat.BYTE
            if pre.format != expected:
                raise ProtocolError(
                    f"preamble format {pre.format!r}, expected {expected.name}",
                    instrument=self.name,
                    command=":WAV:PRE?",
                )
            codes = self.query_block(
                ":WAV:DATA?", datatype="h" if word else "b", big_endian=big_endian
            )
            self._check(":WAV:DATA?")
            if codes.size != pre.points:
                raise ProtocolError(
                    f"channel {channel}: {codes.size} points, preamble says {pre.points}",
                    instrument=self.name,
                    command=":WAV:DATA?",
                )
            # Infiniium: signed codes, y reference 0 (kept in the formula for clarity)
            records[channel] = Waveform.from_codes(
                codes.astype(np.int16),
                volts_per_code=pre.y_increment_v,
                offset_v=pre.y_origin_v - pre.y_reference * pre.y_increment_v,
                t0_s=pre.x_origin_s,
                dt_s=pre.x_increment_s,
            )
        return records
