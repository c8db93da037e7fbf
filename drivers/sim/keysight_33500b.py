"""Simulated Keysight 33522B two-channel function / arbitrary waveform generator.

Speaks the 33500B SCPI subset that this driver and third-party 33500B code
(pymeasure, QCoDeS, cominf, plain pyvisa scripts) use, with the instrument's
reply formats: NR3 numbers (``+1.00000000E+03``), short function names
(``SIN``), ``OUTP1?`` -> ``1``/``0``, ``FORM:BORD?`` -> ``NORM``/``SWAP``,
``SYST:ERR?`` -> ``+0,"No error"`` (20-entry queue) and
``*IDN?`` -> ``Agilent Technologies,33522B,MY...,fw``. ``SOURce<n>:`` is
optional (channel 1 when left out); terminator LF both ways.

Arbitrary waveforms live in each channel's volatile memory (1 MSa) as 16-bit
DAC codes, with names:

* ``DATA:ARB <name>,<v1>,<v2>...`` (floats -1..+1) or ``DATA:ARB <name>,#<block>``
  (float32 in the ``FORM:BORD`` byte order), 8 points or more;
* ``DATA:ARB:DAC <name>,<i1>,...`` or ``DATA:ARB:DAC <name>,#<block>`` (int16,
  -32767..+32767, in the ``FORM:BORD`` byte order: NORMal big-endian, the
  power-on default, or SWAPped little-endian);
* ``DATA:VOL:CLE`` empties the channel's memory and reloads the default
  waveform (``INT:\\BUILTIN\\EXP_RISE.ARB``, the power-on arb),
  ``DATA:VOL:CAT?`` lists quoted names, ``DATA:VOL:FREE?`` the free points;
* ``FUNC:ARB <name>`` (quoted or not) selects a stored waveform,
  ``FUNC:ARB:SRAT`` sets its sample rate (1 uSa/s..160 MSa/s).

Errors: -222 for out-of-range values or samples, -221 for an amplitude and
offset that together leave the +-5 V window into 50 ohm (nothing changes:
the simulator refuses where the real instrument may clip and warn), -224 for
an unknown arb name or a name breaking the naming rule, -160 for a block
whose length does not fit its data type, +786 for a name already in memory
and +781 when memory is full. The two device-specific codes and their texts
are inferred from third-party drivers, not from the manual.

Physics: :meth:`SimKeysight33500B.output_v` gives a channel's output voltage
into 50 ohm at virtual times. An arb is played cyclically at its sample rate,
sample 0 at virtual time 0, through the reconstruction filter that
``FUNC:ARB:FILT`` selects (:mod:`drivers.sim.dac`): NORMal (power-on) is the
flat band-limited (windowed-sinc) interpolation, STEP straight lines between
samples, OFF each sample held; code +-32767 maps to offset +- Vpp/2. Standard functions
are phase-referenced to virtual time 0 (RAMP rises over the whole period,
PULS is high for the first 10 % of it, NOIS is Gaussian with sigma = Vpp/6
clipped to +-Vpp/2, DC is the offset). A channel whose output is off gives 0 V.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivers.sim import dac
from drivers.sim.base import SimInstrument
from drivers.sim.scpi import (
    BLOCK_DATA_ERROR,
    DATA_OUT_OF_RANGE,
    DATA_TYPE_ERROR,
    FREQ_UNITS,
    MISSING_PARAMETER,
    SETTINGS_CONFLICT,
    VOLT_UNITS,
    Arg,
    ScpiError,
    check_range,
    error,
    parse_bool_arg,
    parse_choice,
    parse_number,
)

CHANNELS = (1, 2)
DAC_MAX = 32767
MEMORY_POINTS = 1_000_000  # volatile memory per channel (standard, no option MEM)
MIN_POINTS = 8
AMPLITUDE_RANGE_VPP = (1e-3, 10.0)
OFFSET_RANGE_V = (-5.0, 5.0)
MAX_PEAK_V = 5.0  # |offset| + Vpp/2 into 50 ohm
FREQUENCY_RANGE_HZ = (1e-6, 30e6)
SAMPLE_RATE_RANGE = (1e-6, 160e6)
PULSE_DUTY = 0.1
ILLEGAL_PARAMETER = -224
HEADER_SUFFIX_OUT_OF_RANGE = -114
OUT_OF_MEMORY = 781
ARB_NAME_CONFLICT = 786
DEFAULT_ARB = "INT:\\BUILTIN\\EXP_RISE.ARB"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,11}$")
FUNCTIONS = ("SINusoid", "SQUare", "TRIangle", "RAMP", "PULSe", "NOISe", "DC", "ARBitrary")
# rms / peak of each function normalised to a peak of 1 (for VRMS and dBm units)
_RMS_PER_PEAK = {
    "SIN": 1 / math.sqrt(2),
    "SQU": 1.0,
    "TRI": 1 / math.sqrt(3),
    "RAMP": 1 / math.sqrt(3),
    "PULS": 1.0,
    "NOIS": 1 / 3,
    "DC": 1.0,
}


def _exp_rise_codes(n: int = 8192) -> np.ndarray:
    """The power-on arb: an exponential rise over one period, spanning the DAC range."""
    x = np.arange(n, dtype=np.float64) / n
    shape = (1.0 - np.exp(-5.0 * x)) / (1.0 - math.exp(-5.0))
    return np.rint((2.0 * shape - 1.0) * DAC_MAX).astype(np.int16)


_DEFAULT_CODES = _exp_rise_codes()


@dataclass
class _Channel:
    function: str = "SIN"
    frequency_hz: float = 1e3
    amplitude_vpp: float = 0.1
    offset_v: float = 0.0
    output: bool = False
    unit: str = "VPP"
    arb_name: str = DEFAULT_ARB
    arb_sample_rate: float = 40e3
    arb_filter: str = "NORM"
    volatile: dict[str, np.ndarray] = field(default_factory=dict)

    def clear_memory(self) -> None:
        self.volatile = {DEFAULT_ARB: _DEFAULT_CODES}
        self.arb_name = DEFAULT_ARB

    def free_points(self) -> int:
        return MEMORY_POINTS - sum(codes.size for codes in self.volatile.values())


#: FUNC:ARB:FILT: NORMal = flat anti-imaging filter, STEP = smoothed steps, OFF = held samples
_RECONSTRUCTION = {"NORM": dac.band_limited, "STEP": dac.linear, "OFF": dac.zero_order_hold}


def _illegal(detail: str) -> ScpiError:
    return ScpiError(ILLEGAL_PARAMETER, f"Illegal parameter value;{detail}")


def _unquote(arg: Arg) -> str:
    if isinstance(arg, bytes):
        raise error(DATA_TYPE_ERROR, "block where a name was expected")
    return arg.strip().strip('"').strip("'")


class SimKeysight33500B(SimInstrument):
    instrument_class = "awg"
    model = "keysight_33500b"
    identity = "Agilent Technologies,33522B,MY52700101,3.03-1.19-2.00-52-00"

    def reset(self) -> None:
        self.channels = {ch: _Channel() for ch in CHANNELS}
        for channel in self.channels.values():
            channel.clear_memory()
        self.big_endian = True  # FORM:BORD NORMal
        #: channel -> (int16 codes, their float64 shape): see _arb_shape
        self._shape_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def register(self) -> None:
        e = self.engine
        e.error_queue_size = 20
        e.add_value(
            "[SOURce#]:FUNCtion[:SHAPe]",
            lambda s: self._ch(s).function,
            self._set_function,
            formatter=str,
        )
        e.add_value(
            "[SOURce#]:FREQuency[:CW]",
            lambda s: self._ch(s).frequency_hz,
            self._set_frequency,
        )
        e.add_value(
            "[SOURce#]:VOLTage[:LEVel][:IMMediate][:AMPLitude]",
            self._amplitude_in_unit,
            self._set_amplitude,
        )
        e.add_value(
            "[SOURce#]:VOLTage[:LEVel][:IMMediate]:OFFSet",
            lambda s: self._ch(s).offset_v,
            self._set_offset,
        )
        e.add_value(
            "[SOURce#]:VOLTage:UNIT",
            lambda s: self._ch(s).unit,
            self._set_unit,
            formatter=str,
        )
        e.add_value(
            "OUTPut#[:STATe]",
            lambda s: self._ch(s).output,
            lambda arg, s: setattr(self._ch(s), "output", parse_bool_arg(arg)),
            formatter=lambda v: "1" if v else "0",
        )
        e.add_value(
            "[SOURce#]:FUNCtion:ARBitrary",
            lambda s: self._ch(s).arb_name,
            self._select_arb,
            formatter=lambda name: f'"{name}"',
        )
        e.add_value(
            "[SOURce#]:FUNCtion:ARBitrary:SRATe",
            lambda s: self._ch(s).arb_sample_rate,
            self._set_sample_rate,
        )
        e.add_value(
            "[SOURce#]:FUNCtion:ARBitrary:FILTer",
            lambda s: self._ch(s).arb_filter,
            lambda arg, s: setattr(
                self._ch(s), "arb_filter", parse_choice(arg, ("NORMal", "STEP", "OFF"))
            ),
            formatter=str,
        )
        e.add_value(
            "FORMat:BORDer",
            lambda s: self.big_endian,
            self._set_border,
            formatter=lambda big: "NORM" if big else "SWAP",
        )
        e.add("[SOURce#]:DATA:ARBitrary", on_set=lambda a, s: self._load_arb(a, s, dac=False))
        e.add("[SOURce#]:DATA:ARBitrary:DAC", on_set=lambda a, s: self._load_arb(a, s, dac=True))
        e.add("[SOURce#]:DATA:VOLatile:CLEar", on_set=lambda a, s: self._ch(s).clear_memory())
        e.add(
            "[SOURce#]:DATA:VOLatile:CATalog",
            on_query=lambda a, s: ",".join(f'"{n}"' for n in self._ch(s).volatile),
        )
        e.add(
            "[SOURce#]:DATA:VOLatile:FREE",
            on_query=lambda a, s: f"{self._ch(s).free_points():+d}",
        )

    # -- handlers ------------------------------------------------------------------
    def _ch(self, suffixes: tuple[int, ...]) -> _Channel:
        number = suffixes[0] if suffixes else 1
        channel = self.channels.get(number)
        if channel is None:
            raise ScpiError(HEADER_SUFFIX_OUT_OF_RANGE, f"Header suffix out of range;{number}")
        return channel

    def _set_function(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        self._ch(suffixes).function = parse_choice(arg, FUNCTIONS)

    def _set_frequency(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        value = parse_number(
            arg,
            units=FREQ_UNITS,
            minimum=FREQUENCY_RANGE_HZ[0],
            maximum=FREQUENCY_RANGE_HZ[1],
            default=1e3,
        )
        self._ch(suffixes).frequency_hz = check_range(value, *FREQUENCY_RANGE_HZ, "frequency")

    def _rms_per_peak(self, channel: _Channel) -> float:
        if channel.function == "ARB":
            codes = channel.volatile[channel.arb_name].astype(np.float64) / DAC_MAX
            return float(np.sqrt(np.mean(codes**2)))
        return _RMS_PER_PEAK[channel.function]

    def _amplitude_in_unit(self, suffixes: tuple[int, ...]) -> float:
        channel = self._ch(suffixes)
        if channel.unit == "VPP":
            return channel.amplitude_vpp
        vrms = channel.amplitude_vpp / 2.0 * self._rms_per_peak(channel)
        if channel.unit == "VRMS":
            return vrms
        return 10.0 * math.log10(vrms**2 / 50.0 / 1e-3)  # dBm into 50 ohm

    def _set_amplitude(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        channel = self._ch(suffixes)
        if channel.unit == "VPP":
            value = parse_number(
                arg,
                units=VOLT_UNITS,
                minimum=AMPLITUDE_RANGE_VPP[0],
                maximum=AMPLITUDE_RANGE_VPP[1],
            )
        else:
            number = parse_number(arg, units=VOLT_UNITS if channel.unit == "VRMS" else None)
            vrms = (
                number if channel.unit == "VRMS" else math.sqrt(50.0 * 1e-3 * 10 ** (number / 10))
            )
            rms_per_peak = self._rms_per_peak(channel)
            if rms_per_peak == 0.0:
                raise error(SETTINGS_CONFLICT, f"{channel.unit} undefined for an all-zero arb")
            value = 2.0 * vrms / rms_per_peak
        check_range(value, *AMPLITUDE_RANGE_VPP, "amplitude (Vpp)")
        self._check_window(value, channel.offset_v)
        channel.amplitude_vpp = value

    def _set_offset(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        channel = self._ch(suffixes)
        value = parse_number(
            arg, units=VOLT_UNITS, minimum=OFFSET_RANGE_V[0], maximum=OFFSET_RANGE_V[1], default=0.0
        )
        check_range(value, *OFFSET_RANGE_V, "offset (V)")
        self._check_window(channel.amplitude_vpp, value)
        channel.offset_v = value

    @staticmethod
    def _check_window(amplitude_vpp: float, offset_v: float) -> None:
        if abs(offset_v) + amplitude_vpp / 2.0 > MAX_PEAK_V * (1 + 1e-12):
            raise error(
                SETTINGS_CONFLICT,
                f"amplitude {amplitude_vpp:g} Vpp with offset {offset_v:g} V exceeds +-5 V",
            )

    def _set_unit(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        self._ch(suffixes).unit = parse_choice(arg, ("VPP", "VRMS", "DBM"))

    def _set_sample_rate(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        value = parse_number(
            arg, minimum=SAMPLE_RATE_RANGE[0], maximum=SAMPLE_RATE_RANGE[1], default=40e3
        )
        self._ch(suffixes).arb_sample_rate = check_range(
            value, *SAMPLE_RATE_RANGE, "arb sample rate (Sa/s)"
        )

    def _set_border(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        self.big_endian = parse_choice(arg, ("NORMal", "SWAPped")) == "NORM"

    def _select_arb(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        channel = self._ch(suffixes)
        name = _unquote(arg)
        if name not in channel.volatile:
            raise _illegal(f"arb waveform {name!r} is not in volatile memory")
        channel.arb_name = name

    def _load_arb(self, args: list[Arg], suffixes: tuple[int, ...], *, dac: bool) -> None:
        channel = self._ch(suffixes)
        if len(args) < 2:
            raise error(MISSING_PARAMETER, "expected <name>,<data>")
        name = _unquote(args[0])
        if not _NAME.fullmatch(name):
            raise _illegal(f"arb name {name!r}: 1-12 letters, digits or _, letter first")
        codes = self._decode_samples(args[1:], dac=dac)
        if codes.size < MIN_POINTS:
            raise error(DATA_OUT_OF_RANGE, f"arb needs at least {MIN_POINTS} points")
        if name in channel.volatile:
            raise ScpiError(ARB_NAME_CONFLICT, "Arb name conflict;clear volatile memory first")
        if codes.size > channel.free_points():
            raise ScpiError(OUT_OF_MEMORY, "Out of memory;not enough volatile arb memory")
        channel.volatile[name] = codes

    def _decode_samples(self, data: list[Arg], *, dac: bool) -> np.ndarray:
        """Arguments of DATA:ARB[:DAC] -> int16 DAC codes (block or comma-separated list)."""
        order = ">" if self.big_endian else "<"
        if len(data) == 1 and isinstance(data[0], bytes):
            payload = data[0]
            size = 2 if dac else 4
            if len(payload) % size:
                raise error(
                    BLOCK_DATA_ERROR, f"{len(payload)} bytes is not a whole number of points"
                )
            values = np.frombuffer(payload, dtype=f"{order}{'i2' if dac else 'f4'}")
        else:
            if any(isinstance(item, bytes) for item in data):
                raise error(DATA_TYPE_ERROR, "mixed block and list data")
            try:
                values = np.array([float(item) for item in data], dtype=np.float64)
            except ValueError:
                raise error(DATA_TYPE_ERROR, "not a number in the sample list") from None
        if dac:
            if np.any(np.abs(values.astype(np.float64)) > DAC_MAX) or np.any(values % 1 != 0):
                raise error(DATA_OUT_OF_RANGE, "DAC codes must be integers in -32767..32767")
            return values.astype(np.int16)
        values = values.astype(np.float64)
        if not np.all(np.isfinite(values)) or np.any(np.abs(values) > 1.0):
            raise error(DATA_OUT_OF_RANGE, "arb values must lie in -1..+1")
        return np.rint(values * DAC_MAX).astype(np.int16)

    # -- physics read by other simulators -------------------------------------------
    def output_enabled(self, channel: int) -> bool:
        """True while output ``channel`` drives its load (what is plugged in sees a signal)."""
        with self.lock:
            return bool(self.channels[channel].output)

    def _arb_shape(self, channel: int) -> np.ndarray:
        """The selected arb as float64 in [-1, 1] (DAC codes / DAC_MAX), converted once per
        loaded waveform: the conversion is cached against the identity of the code array
        (a reload or a new selection is a new array), not redone for every output_v call."""
        ch = self.channels[channel]
        codes = ch.volatile[ch.arb_name]
        cached = self._shape_cache.get(channel)
        if cached is None or cached[0] is not codes:
            cached = (codes, codes.astype(np.float64) / DAC_MAX)
            self._shape_cache[channel] = cached
        return cached[1]

    def output_v(self, channel: int, t_s: np.ndarray) -> np.ndarray:
        """Voltage into 50 ohm on output ``channel`` at virtual times ``t_s`` (seconds)."""
        t = np.asarray(t_s, dtype=np.float64)
        with self.lock:
            ch = self.channels[channel]
            if not ch.output:
                return np.zeros_like(t)
            half = ch.amplitude_vpp / 2.0
            if ch.function == "ARB":
                codes = self._arb_shape(channel)
                reconstruct = _RECONSTRUCTION[ch.arb_filter]
                shape = reconstruct(codes, ch.arb_sample_rate, t)
            elif ch.function == "DC":
                shape = np.zeros_like(t)
            elif ch.function == "NOIS":
                noise = self.bench.rng.normal(0.0, 1.0 / 3.0, size=t.shape)
                shape = np.clip(noise, -1.0, 1.0)
            else:
                phase = np.mod(t * ch.frequency_hz, 1.0)  # cycles since the period began
                if ch.function == "SIN":
                    shape = np.sin(2.0 * np.pi * phase)
                elif ch.function == "SQU":
                    shape = np.where(phase < 0.5, 1.0, -1.0)
                elif ch.function == "RAMP":
                    shape = 2.0 * phase - 1.0
                elif ch.function == "TRI":
                    shape = 1.0 - 4.0 * np.abs(phase - 0.5)
                else:  # PULS
                    shape = np.where(phase < PULSE_DUTY, 1.0, -1.0)
            return ch.offset_v + half * shape

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "byte_order": "big" if self.big_endian else "little",
                "channels": {
                    number: {
                        "function": ch.function,
                        "frequency_hz": ch.frequency_hz,
                        "amplitude_vpp": ch.amplitude_vpp,
                        "offset_v": ch.offset_v,
                        "output": ch.output,
                        "arb_name": ch.arb_name,
                        "arb_sample_rate": ch.arb_sample_rate,
                        "volatile": {name: codes.copy() for name, codes in ch.volatile.items()},
                    }
                    for number, ch in self.channels.items()
                },
            }
