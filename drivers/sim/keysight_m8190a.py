"""Simulated Keysight (Agilent) M8190A 12 GSa/s two-channel arbitrary waveform generator.

Speaks the direct-mode subset of the M8190A command set (M8190A User's Guide,
chapter "General Programming", :TRACe / :FREQuency / :VOLTage / :OUTPut /
:INITiate subsystems) that this driver and third-party M8190A code (Keysight
IQtools, Qudi, plain pyvisa scripts) use, terminator LF both ways:

* ``*IDN?`` -> ``Keysight Technologies,M8190A,DE55300107,5.7.0.0-2``, ``*OPT?``
  (the simulator option ``options``, default ``02G,12G,14B,SEQ``), ``*RST``,
  ``*CLS``, ``*OPC?``, ``:SYSTem:ERRor?`` (30-entry queue, ``+0,"No error"``);
* ``[:SOURce]:FREQuency:RASTer <rate>|MIN|MAX`` - the internal sample clock,
  common to both channels: 125 MSa/s..12 GSa/s while both channels are in
  12-bit speed mode, 125 MSa/s..8 GSa/s while either is in 14-bit precision mode;
* ``:TRACe<n>:DWIDth WSPeed|WPRecision`` (reply ``WSP``/``WPR``): 12-bit speed
  mode (vector 64 samples, segments of 320 samples or more) or 14-bit
  precision mode (vector 48, segments of 240 or more);
* ``:TRACe<n>:DEFine <id>,<length>[,<init>]``, ``:TRACe<n>:DEFine:NEW? <length>[,<init>]``
  (reply: the new id), ``:TRACe<n>:DELete <id>``, ``:TRACe<n>:DELete:ALL``,
  ``:TRACe<n>:CATalog?`` (``<id>,<length>,...``; ``0,0`` when empty),
  ``:TRACe<n>:NAME <id>,<name>`` / ``:TRACe<n>:NAME? <id>`` (quoted),
  ``:TRACe<n>:SELect <id>`` / ``?``;
* ``:TRACe<n>[:DATA] <id>,<offset>,<block>|<v0>,<v1>,...``: 16-bit words,
  as a definite-length block of int16 in little-endian byte order (the
  M8190A's binary format; there is no byte-order command) or as a comma list
  of integers. The DAC value is in the upper bits: 14-bit mode
  ``word = dac << 2`` (dac -8192..8191), 12-bit mode ``word = dac << 4``
  (dac -2048..2047); the low bits carry the sample and sync markers (bits 0
  and 1, not simulated) and are ignored, so one word format serves both modes;
* ``[:SOURce]:VOLTage<n>[:LEVel][:IMMediate][:AMPLitude]`` 0.35..0.7 V and
  ``[:SOURce]:VOLTage<n>[:LEVel][:IMMediate]:OFFSet`` -0.02..+0.02 V (the direct
  DAC output; also accepted as ``[:SOURce]:DAC<n>:VOLTage...``);
* ``:OUTPut<n>[:NORMal][:STATe] ON|OFF|1|0`` (reply ``1``/``0``);
* ``[:SOURce]:FUNCtion<n>:MODE ARBitrary|STSequence|STSCenario`` (reply
  ``ARB``/``STS``/``STSC``; only ARB plays, the sequencer is not simulated);
* ``:INITiate[:IMMediate<n>]`` starts and ``:ABORt<n>`` stops signal
  generation of a channel; ``:STATus:OPERation:RUN:CONDition?`` -> bit 0
  channel 1 running, bit 1 channel 2 running.

Errors: -222 for values out of range (segment length or offset off the
vector grid or below the minimum, ids, DAC words), -223 for data past the
end of a segment, -224 for an undefined segment or an id already in use,
-225 when the channel's waveform memory is full, -221 for a settings
conflict (precision mode above 8 GSa/s, defining or deleting segments,
changing the data width or the function mode while the channel runs,
starting with no waveform selected), -160 for a block whose length is not a
whole number of words.

Taken from the User's Guide: the command forms above, the word format, the
little-endian block, ``0,0`` for an empty catalog, -223 for too much data,
the granularity and minimum lengths (5 vectors), the rate ranges and the run
status bits. Inferred (not confirmed against an instrument): the error codes
other than -223 and their texts, the amplitude / offset limits of the direct
DAC output (from the data sheet as remembered: 350..700 mVpp single-ended,
offset +-20 mV), the *RST state (speed mode, 7.2 GSa/s, 0.5 V, offset 0,
outputs off, stopped, ARB mode, segment 1 selected, no segments), that a
segment offset must lie on the vector grid, that the run-state restrictions
above apply, that changing the data width deletes the channel's segments
(the grids differ) and that segment names may hold up to 32 characters.
Memory: option 02G (the default) gives 2 GSa per channel in precision mode
and 1.5 GSa in speed mode (Keysight IQtools' segment limits), without it
128 kSa; segment ids run 1..512k with option SEQ, only 1 without.

Physics: :meth:`SimKeysightM8190A.output_v` gives a channel's (normal,
single-ended) output voltage into 50 ohm at virtual times. While the output
is on and the channel runs in ARB mode, the selected segment is played
cyclically at the sample clock, sample 0 at virtual time 0, reconstructed
band-limited (:func:`drivers.sim.dac.band_limited`: the DAC's sinc roll-off
is taken as equalised, the images filtered); DAC value ``+-(2**(bits-1) - 1)``
maps to offset +- amplitude/2 (the most negative value -2**(bits-1) lies one
LSB below). Otherwise the output is 0 V.
"""

from __future__ import annotations

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
    PARAMETER_NOT_ALLOWED,
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
MIN_RATE = 125e6
DEFAULT_RATE = 7.2e9
MAX_RATE_SPEED = 12e9
MAX_RATE_PRECISION = 8e9
AMPLITUDE_RANGE_V = (0.35, 0.7)
OFFSET_RANGE_V = (-0.02, 0.02)
MAX_NAME_CHARS = 32
TOO_MUCH_DATA = -223
ILLEGAL_PARAMETER = -224
OUT_OF_MEMORY = -225
HEADER_SUFFIX_OUT_OF_RANGE = -114
DEFAULT_OPTIONS = "02G,12G,14B,SEQ"
MAX_SEGMENT_ID_SEQ = 512 * 1024


@dataclass(frozen=True)
class _Mode:
    """One direct mode of :TRACe:DWIDth."""

    wire: str
    bits: int
    vector: int  # segment granularity in samples
    shift: int  # DAC value position in the 16-bit word
    max_rate: float
    memory_02g: int  # samples per channel with option 02G

    @property
    def min_length(self) -> int:
        return 5 * self.vector

    @property
    def full_scale(self) -> int:
        return 2 ** (self.bits - 1) - 1


MODES = {
    "WSP": _Mode("WSP", 12, 64, 4, MAX_RATE_SPEED, 3 * 512 * 1024**2),
    "WPR": _Mode("WPR", 14, 48, 2, MAX_RATE_PRECISION, 2 * 1024**3),
}
MEMORY_STANDARD = 128 * 1024


def _err(code: int, text: str, detail: str) -> ScpiError:
    return ScpiError(code, f"{text};{detail}")


def _int_arg(arg: Arg, what: str) -> int:
    if isinstance(arg, bytes):
        raise error(DATA_TYPE_ERROR, f"block where {what} was expected")
    try:
        value = float(arg.strip())
    except ValueError:
        raise error(DATA_TYPE_ERROR, f"{what} {arg!r} is not a number") from None
    if not value.is_integer():
        raise error(DATA_OUT_OF_RANGE, f"{what} {arg!r} is not an integer")
    return int(value)


@dataclass
class _Segment:
    length: int
    init: int = 0
    name: str = ""
    _words: np.ndarray | None = None  # allocated on first write or play
    _normalised: dict[str, np.ndarray] = field(default_factory=dict)

    def words(self) -> np.ndarray:
        if self._words is None:
            self._words = np.full(self.length, self.init, dtype=np.int16)
        return self._words

    def write(self, offset: int, values: np.ndarray) -> None:
        self.words()[offset : offset + values.size] = values
        self._normalised.clear()

    def normalised(self, mode: _Mode) -> np.ndarray:
        """DAC values of the segment in ``mode``, +-1 at +-full scale."""
        cached = self._normalised.get(mode.wire)
        if cached is None:
            values = np.right_shift(self.words(), mode.shift).astype(np.float64)
            cached = values / mode.full_scale
            self._normalised[mode.wire] = cached
        return cached


@dataclass
class _Channel:
    mode: str = "WSP"
    function: str = "ARB"
    amplitude_v: float = 0.5
    offset_v: float = 0.0
    output: bool = False
    running: bool = False
    selected: int = 1
    segments: dict[int, _Segment] = field(default_factory=dict)

    def used(self) -> int:
        return sum(s.length for s in self.segments.values())


class SimKeysightM8190A(SimInstrument):
    instrument_class = "awg"
    model = "keysight_m8190a"
    identity = "Keysight Technologies,M8190A,DE55300107,5.7.0.0-2"

    def reset(self) -> None:
        self.channels = {ch: _Channel() for ch in CHANNELS}
        self.sample_rate = DEFAULT_RATE
        opts = str(self.options.get("options", DEFAULT_OPTIONS))
        self.installed = {o.strip().upper() for o in opts.split(",") if o.strip()}

    def register(self) -> None:
        e = self.engine
        e.error_queue_size = 30
        e.add("*OPT", on_query=lambda a, s: ",".join(sorted(self.installed)) or "0")
        e.add_value("[SOURce]:FREQuency:RASTer", lambda s: self.sample_rate, self._set_rate)
        for prefix in ("[SOURce]:VOLTage#", "[SOURce]:DAC#:VOLTage"):
            e.add_value(
                f"{prefix}[:LEVel][:IMMediate][:AMPLitude]",
                lambda s: self._ch(s).amplitude_v,
                self._set_amplitude,
            )
            e.add_value(
                f"{prefix}[:LEVel][:IMMediate]:OFFSet",
                lambda s: self._ch(s).offset_v,
                self._set_offset,
            )
        e.add_value(
            "OUTPut#[:NORMal][:STATe]",
            lambda s: self._ch(s).output,
            lambda arg, s: setattr(self._ch(s), "output", parse_bool_arg(arg)),
            formatter=lambda v: "1" if v else "0",
        )
        e.add_value(
            "[SOURce]:FUNCtion#:MODE",
            lambda s: self._ch(s).function,
            self._set_function,
            formatter=str,
        )
        e.add_value("TRACe#:DWIDth", lambda s: self._ch(s).mode, self._set_mode, formatter=str)
        e.add("TRACe#:DEFine", on_set=self._define)
        e.add("TRACe#:DEFine:NEW", on_query=self._define_new)
        e.add("TRACe#:DELete", on_set=self._delete)
        e.add("TRACe#:DELete:ALL", on_set=self._delete_all)
        e.add("TRACe#:CATalog", on_query=self._catalog)
        e.add("TRACe#:NAME", on_set=self._set_name, on_query=self._query_name)
        e.add_value("TRACe#:SELect", lambda s: self._ch(s).selected, self._select, formatter=str)
        e.add("TRACe#[:DATA]", on_set=self._data)
        e.add("INITiate[:IMMediate#]", on_set=self._initiate)
        e.add("ABORt#", on_set=lambda a, s: setattr(self._ch(s), "running", False))
        e.add("STATus:OPERation:RUN:CONDition", on_query=lambda a, s: str(self._run_bits()))

    # -- helpers -------------------------------------------------------------------
    def _ch(self, suffixes: tuple[int, ...]) -> _Channel:
        number = suffixes[0] if suffixes else 1
        channel = self.channels.get(number)
        if channel is None:
            raise ScpiError(HEADER_SUFFIX_OUT_OF_RANGE, f"Header suffix out of range;{number}")
        return channel

    def _max_rate(self) -> float:
        return min(MODES[ch.mode].max_rate for ch in self.channels.values())

    def _memory(self, mode: _Mode) -> int:
        return mode.memory_02g if "02G" in self.installed else MEMORY_STANDARD

    def _max_id(self) -> int:
        return MAX_SEGMENT_ID_SEQ if "SEQ" in self.installed else 1

    def _run_bits(self) -> int:
        return sum(1 << (n - 1) for n, ch in self.channels.items() if ch.running)

    @staticmethod
    def _stopped(channel: _Channel, what: str) -> None:
        if channel.running:
            raise error(SETTINGS_CONFLICT, f"{what} not allowed while the channel runs; ABOR first")

    def _segment_id(self, arg: Arg) -> int:
        segment = _int_arg(arg, "segment id")
        if not 1 <= segment <= self._max_id():
            raise error(DATA_OUT_OF_RANGE, f"segment id {segment} outside [1, {self._max_id()}]")
        return segment

    def _defined(self, channel: _Channel, arg: Arg) -> tuple[int, _Segment]:
        segment = self._segment_id(arg)
        found = channel.segments.get(segment)
        if found is None:
            raise _err(ILLEGAL_PARAMETER, "Illegal parameter value", f"segment {segment} undefined")
        return segment, found

    # -- handlers ------------------------------------------------------------------
    def _set_rate(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        high = self._max_rate()
        value = parse_number(
            arg, units=FREQ_UNITS, minimum=MIN_RATE, maximum=high, default=DEFAULT_RATE
        )
        if high < value <= MAX_RATE_SPEED:
            raise error(
                SETTINGS_CONFLICT,
                f"sample rate {value:g} Sa/s above {high:g} Sa/s of 14-bit precision mode",
            )
        self.sample_rate = check_range(value, MIN_RATE, high, "sample rate (Sa/s)")

    def _set_amplitude(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        low, high = AMPLITUDE_RANGE_V
        value = parse_number(arg, units=VOLT_UNITS, minimum=low, maximum=high, default=0.5)
        self._ch(suffixes).amplitude_v = check_range(value, low, high, "amplitude (V)")

    def _set_offset(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        low, high = OFFSET_RANGE_V
        value = parse_number(arg, units=VOLT_UNITS, minimum=low, maximum=high, default=0.0)
        self._ch(suffixes).offset_v = check_range(value, low, high, "offset (V)")

    def _set_function(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        channel = self._ch(suffixes)
        mode = parse_choice(arg, ("ARBitrary", "STSequence", "STSCenario"))
        if mode != channel.function:
            self._stopped(channel, "changing the function mode")
        channel.function = mode

    def _set_mode(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        channel = self._ch(suffixes)
        token = arg.strip().upper() if isinstance(arg, str) else ""
        if token.startswith("INTX"):
            raise error(SETTINGS_CONFLICT, f"interpolated mode {token} is not simulated")
        mode = parse_choice(arg, ("WSPeed", "WPRecision"))
        if mode == channel.mode:
            return
        self._stopped(channel, "changing the data width")
        if self.sample_rate > MODES[mode].max_rate:
            raise error(
                SETTINGS_CONFLICT,
                f"{mode} allows at most {MODES[mode].max_rate:g} Sa/s; "
                f"the sample rate is {self.sample_rate:g}",
            )
        channel.mode = mode
        channel.segments.clear()  # the vector grid changes

    def _check_length(self, channel: _Channel, length: int) -> None:
        mode = MODES[channel.mode]
        if length < mode.min_length or length % mode.vector:
            raise error(
                DATA_OUT_OF_RANGE,
                f"segment length {length}: {mode.bits}-bit mode needs a multiple of "
                f"{mode.vector} samples, at least {mode.min_length}",
            )
        if channel.used() + length > self._memory(mode):
            raise _err(
                OUT_OF_MEMORY,
                "Out of memory",
                f"{length} samples requested, {self._memory(mode) - channel.used()} free",
            )

    def _init_word(self, args: list[Arg]) -> int:
        if len(args) < 1:
            return 0
        if len(args) > 1:
            raise error(PARAMETER_NOT_ALLOWED)
        word = _int_arg(args[0], "init value")
        if not -32768 <= word <= 32767:
            raise error(DATA_OUT_OF_RANGE, f"init value {word} is not a 16-bit word")
        return word

    def _define(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        channel = self._ch(suffixes)
        if len(args) < 2:
            raise error(MISSING_PARAMETER, "expected <segment_id>,<length>[,<init_value>]")
        segment = self._segment_id(args[0])
        length = _int_arg(args[1], "segment length")
        init = self._init_word(args[2:])
        self._stopped(channel, "defining a segment")
        if segment in channel.segments:
            raise _err(
                ILLEGAL_PARAMETER, "Illegal parameter value", f"segment {segment} already defined"
            )
        self._check_length(channel, length)
        channel.segments[segment] = _Segment(length, init)

    def _define_new(self, args: list[Arg], suffixes: tuple[int, ...]) -> str:
        channel = self._ch(suffixes)
        if not args:
            raise error(MISSING_PARAMETER, "expected <length>[,<init_value>]")
        length = _int_arg(args[0], "segment length")
        init = self._init_word(args[1:])
        self._stopped(channel, "defining a segment")
        free = next((i for i in range(1, self._max_id() + 1) if i not in channel.segments), None)
        if free is None:
            raise _err(OUT_OF_MEMORY, "Out of memory", "no free segment id")
        self._check_length(channel, length)
        channel.segments[free] = _Segment(length, init)
        return str(free)

    def _delete(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        channel = self._ch(suffixes)
        if len(args) != 1:
            raise error(MISSING_PARAMETER if not args else PARAMETER_NOT_ALLOWED)
        segment, _ = self._defined(channel, args[0])
        self._stopped(channel, "deleting a segment")
        del channel.segments[segment]

    def _delete_all(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        channel = self._ch(suffixes)
        self._stopped(channel, "deleting segments")
        channel.segments.clear()

    def _catalog(self, args: list[Arg], suffixes: tuple[int, ...]) -> str:
        segments = self._ch(suffixes).segments
        if not segments:
            return "0,0"
        return ",".join(f"{i},{segments[i].length}" for i in sorted(segments))

    def _set_name(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        channel = self._ch(suffixes)
        if len(args) != 2:
            raise error(MISSING_PARAMETER, "expected <segment_id>,<name>")
        _, segment = self._defined(channel, args[0])
        if isinstance(args[1], bytes):
            raise error(DATA_TYPE_ERROR, "block where a name was expected")
        name = args[1].strip().strip('"').strip("'")
        if len(name) > MAX_NAME_CHARS:
            raise _err(
                ILLEGAL_PARAMETER,
                "Illegal parameter value",
                f"segment name longer than {MAX_NAME_CHARS} characters",
            )
        segment.name = name

    def _query_name(self, args: list[Arg], suffixes: tuple[int, ...]) -> str:
        channel = self._ch(suffixes)
        if len(args) != 1:
            raise error(MISSING_PARAMETER, "expected <segment_id>")
        _, segment = self._defined(channel, args[0])
        return f'"{segment.name}"'

    def _select(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        channel = self._ch(suffixes)
        segment, _ = self._defined(channel, arg)
        channel.selected = segment

    def _data(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        channel = self._ch(suffixes)
        if len(args) < 3:
            raise error(MISSING_PARAMETER, "expected <segment_id>,<offset>,<data>")
        segment_id, segment = self._defined(channel, args[0])
        offset = _int_arg(args[1], "offset")
        mode = MODES[channel.mode]
        if offset < 0 or offset % mode.vector:
            raise error(
                DATA_OUT_OF_RANGE,
                f"offset {offset}: must be a non-negative multiple of {mode.vector} samples",
            )
        values = self._decode_words(args[2:])
        if offset + values.size > segment.length:
            raise _err(
                TOO_MUCH_DATA,
                "Too much data",
                f"{values.size} samples at offset {offset} pass the end of segment "
                f"{segment_id} ({segment.length} samples)",
            )
        segment.write(offset, values)

    @staticmethod
    def _decode_words(data: list[Arg]) -> np.ndarray:
        """A little-endian int16 block or a comma list of 16-bit integers."""
        if len(data) == 1 and isinstance(data[0], bytes):
            payload = data[0]
            if len(payload) % 2:
                raise error(
                    BLOCK_DATA_ERROR, f"{len(payload)} bytes is not a whole number of words"
                )
            values = np.frombuffer(payload, dtype="<i2").astype(np.int16)
        else:
            if any(isinstance(item, bytes) for item in data):
                raise error(DATA_TYPE_ERROR, "mixed block and list data")
            try:
                numbers = np.array([float(item) for item in data], dtype=np.float64)
            except ValueError:
                raise error(DATA_TYPE_ERROR, "not a number in the sample list") from None
            if np.any(numbers % 1 != 0) or np.any((numbers < -32768) | (numbers > 32767)):
                raise error(DATA_OUT_OF_RANGE, "sample words must be integers in -32768..32767")
            values = numbers.astype(np.int16)
        if values.size == 0:
            raise error(MISSING_PARAMETER, "no sample data")
        return values

    def _initiate(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        channel = self._ch(suffixes)
        if channel.function != "ARB":
            raise error(SETTINGS_CONFLICT, "sequencer modes are not simulated; use FUNC:MODE ARB")
        if channel.selected not in channel.segments:
            raise error(SETTINGS_CONFLICT, f"selected segment {channel.selected} undefined")
        channel.running = True

    # -- physics read by other simulators -------------------------------------------
    def output_enabled(self, channel: int) -> bool:
        """True while output ``channel`` drives its load (what is plugged in sees a signal)."""
        with self.lock:
            ch = self.channels[channel]
            return bool(ch.output and ch.running)

    def output_v(self, channel: int, t_s: np.ndarray) -> np.ndarray:
        """Voltage into 50 ohm on output ``channel`` at virtual times ``t_s`` (seconds)."""
        t = np.asarray(t_s, dtype=np.float64)
        with self.lock:
            ch = self.channels[channel]
            segment = ch.segments.get(ch.selected)
            if not (ch.output and ch.running and ch.function == "ARB") or segment is None:
                return np.zeros_like(t)
            shape = dac.band_limited(segment.normalised(MODES[ch.mode]), self.sample_rate, t)
            return ch.offset_v + ch.amplitude_v / 2.0 * shape

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "sample_rate": self.sample_rate,
                "channels": {
                    number: {
                        "mode": ch.mode,
                        "function": ch.function,
                        "amplitude_v": ch.amplitude_v,
                        "offset_v": ch.offset_v,
                        "output": ch.output,
                        "running": ch.running,
                        "selected": ch.selected,
                        "segments": {
                            i: {"length": s.length, "name": s.name, "words": s.words().copy()}
                            for i, s in ch.segments.items()
                        },
                    }
                    for number, ch in self.channels.items()
                },
            }
