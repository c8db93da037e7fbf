"""Simulated Keysight Infiniium four-channel real-time oscilloscope (MXR404A).

Speaks the Infiniium subset that this driver and third-party Infiniium code
(QCoDeS, Keysight's example programs) use, terminator LF both ways:

* ``:CHANnel<n>:SCALe|OFFSet|RANGe|DISPlay``, ``:CHANnel<n>:PROTection?``
  (``NORM``/``TRIP``) and ``:CHANnel<n>:PROTection:CLEar``;
* ``:TIMebase:SCALe|RANGe``; ``:ACQuire:SRATe[:ANALog] <rate>|MAX|AUTO`` (rounded up
  to the next available rate of the 1-2-2.5-4-5 series, 10 Sa/s..16 GSa/s)
  and ``:ACQuire:POINts[:ANALog] <n>|AUTO``: with AUTO the rate (or the
  depth) follows from the other and the timebase's 10 divisions;
* ``:DIGitize [CHANnel<n>[,...]]`` (no list: the displayed channels),
  ``:SINGle``, ``:ADER?`` (1 once per finished acquisition, cleared on read);
* ``:WAVeform:SOURce|FORMat ASCii|BYTE|WORD|BYTeorder MSBFirst|LSBFirst|STReaming``,
  ``:WAVeform:PREamble?`` (24 fields, date and time quoted without commas),
  ``:WAVeform:DATA?`` and ``:WAVeform:XINCrement?|XORigin?|YINCrement?|YORigin?|
  YREFerence?|POINts?``. With streaming off the data is a definite-length
  block; with streaming on it is ``#0<data>`` + LF;
* ``:MEASure:VAVerage? [DISPlay|CYCLe,][CHANnel<n>]`` (mean voltage, see below) and
  ``:MEASure:SOURce CHANnel<n>`` (its channel when the query names none);
* ``:SYSTem:HEADer`` (on after power-on: query replies then start with their
  short header, e.g. ``:CHAN1:SCAL +1.00000000E-01``; binary data never
  carries one here) and ``:SYSTem:ERRor? [NUMBer|STRing]`` (number only, or
  ``0,"No error"`` with STRing).

Power-on defaults that are not documented publicly and are chosen so a
driver that relies on them fails visibly: headers on, ASCii format,
MSBFirst, streaming on.

ADC model: 8 vertical divisions span the full scale ``8 * scale`` centred on
the channel offset; the converter has ``adc_bits`` (option, 8 or 10, default
10) of resolution. A sample's level ``round((v - offset) / (8 * scale) * 2**bits)``
is clipped to the converter's range and stored left-justified in a signed
16-bit WORD code, ``code = level * 2**(16 - bits)``, so
``volts = code * y_increment + y_origin`` with ``y_increment = 8 * scale / 65536``
and ``y_origin = offset`` (y reference 0). BYTE data is the level rounded to
8 bits (``y_increment = 8 * scale / 256``). A record in which any sample
clipped trips the channel's protection flag (``:CHAN<n>:PROT?`` -> ``TRIP``,
latched until ``:PROT:CLE``), standing in for the 50 ohm overload protection.

Physics: ``:DIGitize`` records ``n`` points ``dt = 1/rate`` apart starting at
the later of the bench's virtual time now and the end of the previous record,
so records are contiguous in virtual time when the bench clock is manual; it
then advances a manual clock to the record's end (a real-time clock is waited
for instead). Each channel sees the wired source's ``output_v(channel, t)``
(``bench.source_of``; an unwired input sees 0 V) plus Gaussian noise of
``noise_v`` volts rms (option, default 0.5 mV) from the bench's random
generator. The trigger is taken at the record's centre: ``x_origin = -n*dt/2``.

Mean-voltage measurement (``:MEASure:VAVerage?``, a cheap reading for slow loops): the
channel's input is sampled as an acquisition would be (the effective rate and points, see
``:ACQuire``) over the window that ENDS at the bench clock's now, with the channel's noise and
the ADC's quantisation, and averaged; the clock is not advanced and the last records are kept.
``DISPlay`` averages the whole window; ``CYCLe`` averages an integral number of periods, from
the first to the last rising crossing of the window's mid level (with 10 % hysteresis), or
the whole window when there are fewer than three crossings, as the Infiniium manual
describes. A clipped sample trips the channel's protection flag, as for records; the mean of
the clipped samples is still returned. A measurement that cannot be made (the wired source
has no output) queues the error and answers ``9.99999E+37``, the Infiniium's "no result".

Option ``gapless`` (default off, which is how an Infiniium behaves): the simulator acts as a
streaming digitiser whose memory keeps recording between reads, so a record starts where the
previous one ended as long as that was less than one memory depth (``max_points`` samples)
ago; a reader that falls further behind loses the samples in between, as it would on such
hardware.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers.sim.base import SimInstrument
from drivers.sim.scpi import (
    DATA_OUT_OF_RANGE,
    EXECUTION_ERROR,
    MISSING_PARAMETER,
    PARAMETER_NOT_ALLOWED,
    TIME_UNITS,
    VOLT_UNITS,
    Arg,
    ScpiError,
    check_range,
    error,
    fmt_float,
    parse_bool_arg,
    parse_choice,
    parse_number,
)

CHANNELS = (1, 2, 3, 4)
DIVISIONS_Y = 8
DIVISIONS_X = 10
SCALE_RANGE_V = (1e-3, 1.0)
OFFSET_RANGE_V = (-5.0, 5.0)
TIMEBASE_RANGE_S = (5e-12, 20.0)
MAX_RATE = 16e9
MIN_RATE = 10.0
MIN_POINTS = 16
AUTO_POINTS = 1000  # depth chosen when both rate and depth are AUTO
BANDWIDTH_HZ = 4e9
DATA_STALE = -230  # SCPI "Data corrupt or stale"
ILLEGAL_PARAMETER = -224
NO_RESULT = 9.99999e37  # what an Infiniium measurement query answers when it has no result
CYCLE_HYSTERESIS = 0.1  # of the window's peak-to-peak: rising crossings for CYCLe
MODEL = "MXR404A"
SERIAL = "MY59100101"


def _rate_table() -> np.ndarray:
    """Available sample rates: the 1-2-2.5-4-5 series from 10 Sa/s, plus 16 GSa/s."""
    rates = [m * 10.0**k for k in range(1, 11) for m in (1.0, 2.0, 2.5, 4.0, 5.0)]
    return np.array(sorted({r for r in rates if r <= MAX_RATE} | {MAX_RATE}))


RATES = _rate_table()


def next_rate(requested: float) -> float:
    """The slowest available rate that is at least ``requested``."""
    index = int(np.searchsorted(RATES, requested * (1 - 1e-12), side="left"))
    return float(RATES[min(index, RATES.size - 1)])


@dataclass
class _Record:
    """One channel of the last acquisition (WORD codes, as the ADC stored them)."""

    codes: np.ndarray  # int16, left-justified ADC levels
    t_start_s: float  # virtual time of the first sample
    dt_s: float
    scale_v: float
    offset_v: float
    clipped: bool


def _whole_cycles(volts: np.ndarray) -> np.ndarray:
    """The samples from the first to the last rising crossing of the mid level (an integral
    number of periods), or all of them with fewer than three crossings (either way)."""
    low, high = float(np.min(volts)), float(np.max(volts))
    span = high - low
    if span <= 0:
        return volts
    mid = low + 0.5 * span
    state = np.full(volts.size, -1, dtype=np.int8)  # 1 above, 0 below, -1 in the band
    state[volts >= mid + CYCLE_HYSTERESIS * span / 2] = 1
    state[volts <= mid - CYCLE_HYSTERESIS * span / 2] = 0
    known = np.maximum.accumulate(np.where(state >= 0, np.arange(volts.size), 0))
    held = state[known]  # inside the band: the last side it was on
    changes = np.flatnonzero((held[1:] != held[:-1]) & (held[:-1] >= 0)) + 1
    rising = changes[held[changes] == 1]
    if changes.size < 3 or rising.size < 2:
        return volts
    return volts[rising[0] : rising[-1]]


class SimKeysightInfiniium(SimInstrument):
    instrument_class = "scope"
    model = "keysight_infiniium"
    identity = f"KEYSIGHT TECHNOLOGIES,{MODEL},{SERIAL},11.50.00402"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.adc_bits = int(self.options.get("adc_bits", 10))
        if self.adc_bits not in (8, 10):
            raise ValueError(f"{self.name}: adc_bits must be 8 or 10, got {self.adc_bits}")
        self.noise_v = float(self.options.get("noise_v", 0.5e-3))
        if not self.noise_v >= 0:
            raise ValueError(f"{self.name}: noise_v must be >= 0")
        self.max_points = int(self.options.get("max_points", 10_000_000))
        #: streaming-digitiser mode: a record continues the previous one if that ended less
        #: than one acquisition memory ago (no dead time while the reader keeps up)
        self.gapless = bool(self.options.get("gapless", False))
        #: (t_start_s, dt_s, n) of the last acquisition: ground truth for tests
        self.last_acquisition: tuple[float, float, int] | None = None

    # -- state -----------------------------------------------------------------------
    def reset(self) -> None:
        self.headers = True
        self.scale_v = dict.fromkeys(CHANNELS, 0.1)
        self.offset_v = dict.fromkeys(CHANNELS, 0.0)
        self.display = {ch: ch == 1 for ch in CHANNELS}
        self.tripped = dict.fromkeys(CHANNELS, False)
        self.timebase_s = 1e-6
        self.rate_manual: float | None = None  # None: AUTO
        self.points_manual: int | None = None  # None: AUTO
        self.source = 1
        self.format = "ASC"
        self.big_endian = True
        self.streaming = True
        self.records: dict[int, _Record] = {}
        self.ader = False
        self._next_t_s = 0.0
        self.measure_source = 1

    def effective_acquisition(self) -> tuple[float, int]:
        """(sample rate, points) the next acquisition will use."""
        window_s = DIVISIONS_X * self.timebase_s
        if self.points_manual is not None:
            points = self.points_manual
        elif self.rate_manual is not None:
            points = round(self.rate_manual * window_s)
        else:
            points = AUTO_POINTS
        points = min(max(points, MIN_POINTS), self.max_points)
        rate = self.rate_manual if self.rate_manual is not None else next_rate(points / window_s)
        return rate, points

    # -- registration ----------------------------------------------------------------
    def _reply(self, header: str, text: str) -> str:
        return f"{header} {text}" if self.headers else text

    def _value(
        self,
        pattern: str,
        header: str,
        getter: Callable[[tuple[int, ...]], Any],
        setter: Callable[[Arg, tuple[int, ...]], None] | None = None,
        formatter: Callable[[Any], str] = fmt_float,
    ) -> None:
        """Register ``pattern``; its query reply carries ``header`` when headers are on."""

        def on_query(args: list[Arg], suffixes: tuple[int, ...]) -> str:
            if args:
                raise error(PARAMETER_NOT_ALLOWED)
            return self._reply(header.format(*suffixes), formatter(getter(suffixes)))

        def on_set(args: list[Arg], suffixes: tuple[int, ...]) -> None:
            if len(args) != 1:
                raise error(MISSING_PARAMETER if not args else PARAMETER_NOT_ALLOWED)
            assert setter is not None
            setter(args[0], suffixes)

        self.engine.add(pattern, on_set=on_set if setter else None, on_query=on_query)

    def register(self) -> None:
        e = self.engine
        on_off: Callable[[Any], str] = lambda v: "1" if v else "0"  # noqa: E731
        self._value(
            ":SYSTem:HEADer", ":SYST:HEAD", lambda s: self.headers, self._set_headers, on_off
        )
        e.add("SYSTem:ERRor[:NEXT]", on_query=self._error_query)
        self._value(
            ":CHANnel#:SCALe", ":CHAN{0}:SCAL", lambda s: self.scale_v[self._ch(s)], self._set_scale
        )
        self._value(
            ":CHANnel#:RANGe",
            ":CHAN{0}:RANG",
            lambda s: DIVISIONS_Y * self.scale_v[self._ch(s)],
            self._set_range,
        )
        self._value(
            ":CHANnel#:OFFSet",
            ":CHAN{0}:OFFS",
            lambda s: self.offset_v[self._ch(s)],
            self._set_offset,
        )
        self._value(
            ":CHANnel#:DISPlay",
            ":CHAN{0}:DISP",
            lambda s: self.display[self._ch(s)],
            lambda a, s: self.display.__setitem__(self._ch(s), parse_bool_arg(a)),
            on_off,
        )
        self._value(
            ":CHANnel#:PROTection",
            ":CHAN{0}:PROT",
            lambda s: self.tripped[self._ch(s)],
            formatter=lambda tripped: "TRIP" if tripped else "NORM",
        )
        e.add(
            ":CHANnel#:PROTection:CLEar",
            on_set=lambda a, s: self.tripped.__setitem__(self._ch(s), False),
        )
        self._value(":TIMebase:SCALe", ":TIM:SCAL", lambda s: self.timebase_s, self._set_timebase)
        self._value(
            ":TIMebase:RANGe",
            ":TIM:RANG",
            lambda s: DIVISIONS_X * self.timebase_s,
            lambda a, s: self._set_timebase(a, s, divisions=DIVISIONS_X),
        )
        self._value(
            ":ACQuire:SRATe[:ANALog]",
            ":ACQ:SRAT",
            lambda s: self.effective_acquisition()[0],
            self._set_rate,
        )
        self._value(
            ":ACQuire:POINts[:ANALog]",
            ":ACQ:POIN",
            lambda s: self.effective_acquisition()[1],
            self._set_points,
            formatter=lambda n: str(int(n)),
        )
        e.add(":DIGitize", on_set=lambda a, s: self._digitize(a))
        e.add(":SINGle", on_set=lambda a, s: self._digitize([]))
        e.add(":ADER", on_query=lambda a, s: self._read_ader())
        self._value(
            ":WAVeform:SOURce", ":WAV:SOUR", lambda s: f"CHAN{self.source}", self._set_source, str
        )
        self._value(
            ":WAVeform:FORMat",
            ":WAV:FORM",
            lambda s: self.format,
            lambda a, s: setattr(self, "format", parse_choice(a, ("ASCii", "BYTE", "WORD"))),
            str,
        )
        self._value(
            ":WAVeform:BYTeorder",
            ":WAV:BYT",
            lambda s: self.big_endian,
            lambda a, s: setattr(
                self, "big_endian", parse_choice(a, ("MSBFirst", "LSBFirst")) == "MSBF"
            ),
            lambda big: "MSBF" if big else "LSBF",
        )
        self._value(
            ":WAVeform:STReaming",
            ":WAV:STR",
            lambda s: self.streaming,
            lambda a, s: setattr(self, "streaming", parse_bool_arg(a)),
            on_off,
        )
        e.add(":MEASure:VAVerage", on_query=self._vaverage_query)
        self._value(
            ":MEASure:SOURce",
            ":MEAS:SOUR",
            lambda s: f"CHAN{self.measure_source}",
            lambda a, s: setattr(self, "measure_source", self._parse_channel(a)),
            str,
        )
        e.add(":WAVeform:PREamble", on_query=lambda a, s: self._preamble_reply())
        e.add(":WAVeform:DATA", on_query=self._data_query)
        for pattern, header, index, fmt in (
            (":WAVeform:POINts", ":WAV:POIN", 2, lambda v: str(int(v))),
            (":WAVeform:XINCrement", ":WAV:XINC", 4, fmt_float),
            (":WAVeform:XORigin", ":WAV:XOR", 5, fmt_float),
            (":WAVeform:YINCrement", ":WAV:YINC", 7, fmt_float),
            (":WAVeform:YORigin", ":WAV:YOR", 8, fmt_float),
            (":WAVeform:YREFerence", ":WAV:YREF", 9, fmt_float),
        ):
            self._value(pattern, header, lambda s, i=index: self._preamble()[i], formatter=fmt)

    # -- handlers --------------------------------------------------------------------
    @staticmethod
    def _ch(suffixes: tuple[int, ...]) -> int:
        channel = suffixes[0] if suffixes else 1
        if channel not in CHANNELS:
            raise ScpiError(-114, f"Header suffix out of range;CHANnel{channel}")
        return channel

    def _set_headers(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        self.headers = parse_bool_arg(arg)

    def _error_query(self, args: list[Arg], suffixes: tuple[int, ...]) -> str:
        mode = parse_choice(args[0], ("NUMBer", "STRing")) if args else "NUMB"
        code_text, _, text = self.engine.pop_error().partition(",")
        code = int(code_text)
        body = f"{code},{text}" if mode == "STR" else str(code)
        return self._reply(":SYST:ERR", body)

    def _set_scale(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        value = parse_number(
            arg, units=VOLT_UNITS, minimum=SCALE_RANGE_V[0], maximum=SCALE_RANGE_V[1]
        )
        self.scale_v[self._ch(suffixes)] = check_range(value, *SCALE_RANGE_V, "scale (V/div)")

    def _set_range(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        value = parse_number(arg, units=VOLT_UNITS) / DIVISIONS_Y
        self.scale_v[self._ch(suffixes)] = check_range(value, *SCALE_RANGE_V, "scale (V/div)")

    def _set_offset(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        value = parse_number(
            arg, units=VOLT_UNITS, minimum=OFFSET_RANGE_V[0], maximum=OFFSET_RANGE_V[1]
        )
        self.offset_v[self._ch(suffixes)] = check_range(value, *OFFSET_RANGE_V, "offset (V)")

    def _set_timebase(self, arg: Arg, suffixes: tuple[int, ...], divisions: int = 1) -> None:
        value = parse_number(arg, units=TIME_UNITS) / divisions
        self.timebase_s = check_range(value, *TIMEBASE_RANGE_S, "timebase scale (s/div)")

    def _set_rate(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        if isinstance(arg, str) and arg.strip().upper() == "AUTO":
            self.rate_manual = None
            return
        value = parse_number(arg, minimum=MIN_RATE, maximum=MAX_RATE)
        check_range(value, MIN_RATE, MAX_RATE, "sample rate (Sa/s)")
        self.rate_manual = next_rate(value)  # rounded to the next faster available rate

    def _set_points(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        if isinstance(arg, str) and arg.strip().upper() == "AUTO":
            self.points_manual = None
            return
        value = parse_number(arg, minimum=MIN_POINTS, maximum=self.max_points)
        if not float(value).is_integer():
            raise error(DATA_OUT_OF_RANGE, f"points {value:g} is not an integer")
        self.points_manual = int(check_range(value, MIN_POINTS, self.max_points, "points"))

    def _set_source(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        self.source = self._parse_channel(arg)

    @staticmethod
    def _parse_channel(arg: Arg) -> int:
        token = arg.strip().upper() if isinstance(arg, str) else ""
        for prefix in ("CHANNEL", "CHAN"):
            number = token[len(prefix) :]
            if token.startswith(prefix) and number.isdigit() and int(number) in CHANNELS:
                return int(number)
        raise ScpiError(ILLEGAL_PARAMETER, f"Illegal parameter value;source {arg!r}")

    def _read_ader(self) -> str:
        done, self.ader = self.ader, False
        return self._reply(":ADER", "1" if done else "0")

    # -- acquisition -----------------------------------------------------------------
    def _digitize(self, args: list[Arg]) -> None:
        channels = [self._parse_channel(a) for a in args]
        if not channels:
            channels = [ch for ch in CHANNELS if self.display[ch]]
        for channel in channels:
            self.display[channel] = True
        rate, n = self.effective_acquisition()
        dt_s = 1.0 / rate
        clock = self.bench.clock
        now_s = clock.now_s()
        t_start_s = max(now_s, self._next_t_s)
        if self.gapless and self._next_t_s > 0 and now_s - self._next_t_s < self.max_points * dt_s:
            t_start_s = self._next_t_s
        t_s = t_start_s + np.arange(n, dtype=np.float64) * dt_s
        records: dict[int, _Record] = {}
        for channel in channels:
            volts = self._input_v(channel, t_s)
            if self.noise_v > 0:
                volts = volts + self.bench.rng.normal(0.0, self.noise_v, size=n)
            records[channel] = self._quantise(channel, volts, t_start_s, dt_s)
        self._next_t_s = t_start_s + n * dt_s
        # the record ends in the future: the bench's clock must reach its end first
        if not clock.realtime:
            clock.advance(max(0.0, self._next_t_s - clock.now_s()))
        else:
            wait_s = (self._next_t_s - clock.now_s()) / clock.speed
            if wait_s > 0:
                time.sleep(wait_s)
        self.records = records
        self.ader = True
        self.last_acquisition = (t_start_s, dt_s, n)

    def _input_v(self, channel: int, t_s: np.ndarray) -> np.ndarray:
        """Voltage on the 50 ohm input from whatever the bench wires to it."""
        wired = self.bench.source_of(self.name, channel)
        if wired is None:
            return np.zeros_like(t_s)
        source, output = wired
        output_v = getattr(source, "output_v", None)
        if output_v is None:
            raise error(EXECUTION_ERROR, f"{source.name} wired to CHAN{channel} has no output_v")
        return np.asarray(output_v(output, t_s), dtype=np.float64)

    def _quantise(self, channel: int, volts: np.ndarray, t_start_s: float, dt_s: float) -> _Record:
        scale_v, offset_v = self.scale_v[channel], self.offset_v[channel]
        levels = 2**self.adc_bits
        lsb_v = DIVISIONS_Y * scale_v / levels
        level = np.rint((volts - offset_v) / lsb_v)
        low, high = -levels // 2, levels // 2 - 1
        clipped = bool(np.any((level < low) | (level > high)))
        level = np.clip(level, low, high).astype(np.int32)
        codes = (level * 2 ** (16 - self.adc_bits)).astype(np.int16)
        if clipped:
            self.tripped[channel] = True
        return _Record(codes, t_start_s, dt_s, scale_v, offset_v, clipped)

    # -- measurements ----------------------------------------------------------------
    def _vaverage_query(self, args: list[Arg], suffixes: tuple[int, ...]) -> str:
        """``:MEASure:VAVerage? [DISPlay|CYCLe,][CHANnel<n>]`` (module docstring)."""
        rest = list(args)
        if len(rest) > 2:
            raise error(PARAMETER_NOT_ALLOWED, "VAVerage takes [DISPlay|CYCLe,]source")
        interval = "DISP"
        if rest and isinstance(rest[0], str) and not rest[0].strip().upper().startswith("CHAN"):
            interval = parse_choice(rest.pop(0), ("DISPlay", "CYCLe"))
        channel = self._parse_channel(rest.pop(0)) if rest else self.measure_source
        if rest:
            raise error(PARAMETER_NOT_ALLOWED, "VAVerage takes [DISPlay|CYCLe,]source")
        rate, n = self.effective_acquisition()
        dt_s = 1.0 / rate
        t_s = self.bench.clock.now_s() - dt_s * np.arange(n - 1, -1, -1, dtype=np.float64)
        try:
            volts = self._input_v(channel, t_s)
        except ScpiError as exc:  # measurement impossible: queue the error, answer "no result"
            self.engine.push_error(exc.code, exc.text)
            return self._reply(":MEAS:VAV", fmt_float(NO_RESULT))
        if self.noise_v > 0:
            volts = volts + self.bench.rng.normal(0.0, self.noise_v, size=n)
        record = self._quantise(channel, volts, float(t_s[0]), dt_s)  # trips on clipping
        volts = record.codes.astype(np.float64) * (DIVISIONS_Y * record.scale_v / 65536)
        volts += record.offset_v
        if interval == "CYCL":
            volts = _whole_cycles(volts)
        return self._reply(":MEAS:VAV", fmt_float(float(np.mean(volts))))

    # -- read-out --------------------------------------------------------------------
    def _stale(self) -> None:
        self.engine.push_error(DATA_STALE, "Data corrupt or stale;Waveform data is not valid")

    def _preamble(self) -> list[Any]:
        record = self.records.get(self.source)
        fmt_code = {"ASC": 0, "BYTE": 1, "WORD": 2}[self.format]
        if record is None:
            self._stale()
            n, dt_s, scale_v, offset_v = 0, 0.0, self.scale_v[self.source], 0.0
        else:
            n, dt_s = record.codes.size, record.dt_s
            scale_v, offset_v = record.scale_v, record.offset_v
        full_scale_v = DIVISIONS_Y * scale_v
        y_increment = full_scale_v / (256 if self.format == "BYTE" else 65536)
        stamp = datetime.datetime.now()
        return [
            fmt_code,
            1,  # type RAW
            n,
            1,  # count
            dt_s,
            -n * dt_s / 2.0,  # x origin: trigger at the record's centre
            0,  # x reference
            y_increment,
            offset_v,  # y origin
            0,  # y reference
            2,  # coupling DCFIFTY
            DIVISIONS_X * self.timebase_s,
            -DIVISIONS_X * self.timebase_s / 2.0,
            full_scale_v,
            offset_v - full_scale_v / 2.0,
            f'"{stamp:%d %b %Y}"'.upper(),
            f'"{stamp:%H:%M:%S}:{stamp.microsecond // 10000:02d}"',
            f'"{MODEL}:{SERIAL}"',
            0,  # acquisition mode RTIMe
            100,  # completion %
            2,  # x units SECOND
            1,  # y units VOLT
            BANDWIDTH_HZ,
            0.0,
        ]

    def _preamble_reply(self) -> str:
        text = ",".join(
            v if isinstance(v, str) else (str(v) if isinstance(v, int) else f"{v:.10E}")
            for v in self._preamble()
        )
        return self._reply(":WAV:PRE", text)

    def _data_query(self, args: list[Arg], suffixes: tuple[int, ...]) -> str | bytes:
        if args:
            raise error(PARAMETER_NOT_ALLOWED, "start/size not simulated")
        record = self.records.get(self.source)
        if record is None:
            self._stale()  # the real scope answers an empty block and queues the error
            return "" if self.format == "ASC" else self._block(b"")
        if self.format == "ASC":
            lsb_v = DIVISIONS_Y * record.scale_v / 65536
            volts = record.codes.astype(np.float64) * lsb_v + record.offset_v
            return ",".join(f"{v:.6E}" for v in volts)
        if self.format == "BYTE":
            level = record.codes.astype(np.int32) // 2 ** (16 - self.adc_bits)
            byte = np.rint(level / 2 ** (self.adc_bits - 8))
            return self._block(np.clip(byte, -128, 127).astype(np.int8).tobytes())
        return self._block(record.codes.astype(">i2" if self.big_endian else "<i2").tobytes())

    def _block(self, payload: bytes) -> str | bytes:
        if self.streaming:
            return "#0" + payload.decode("latin-1")  # #0<data> + LF: no length field
        return payload  # the server sends it as a definite-length block

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            rate, points = self.effective_acquisition()
            return {
                "headers": self.headers,
                "sample_rate_hz": rate,
                "record_length": points,
                "scale_v_per_div": dict(self.scale_v),
                "offset_v": dict(self.offset_v),
                "tripped": dict(self.tripped),
                "format": self.format,
                "byte_order": "big" if self.big_endian else "little",
                "streaming": self.streaming,
                "last_acquisition": self.last_acquisition,
                "full_scale_lsb_v": {
                    ch: DIVISIONS_Y * s / 2**self.adc_bits for ch, s in self.scale_v.items()
                },
            }

    def volts_per_adc_level(self, channel: int) -> float:
        """One ADC level in volts on ``channel`` (the quantisation step)."""
        return DIVISIONS_Y * self.scale_v[channel] / 2**self.adc_bits
