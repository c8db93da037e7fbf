"""Simulated Bristol 871A-NIR laser wavelength meter (SCPI over a raw TCP socket).

Command set (Bristol 871A user's manual, remote communications chapter, as published on
easymanua.ls; the SENSe averaging commands as in the Bristol 671 manual and the open-source
Bristol 871 driver of jhe274/Faraday_DAQ, which also gives the trigger rates):

* ``{:MEASure | :READ | :FETCh}[:SCALar]{:FREQuency | :WAVelength | :WNUMber | :POWer}?``:
  THz, vacuum nm, cm^-1, and mW or dBm (``:UNIT:POWer MW|DBM``);
  ``{...}:ALL?``: ``scan index,status,wavelength nm,power`` of one measurement.
  ``:FETCh`` returns the latest completed measurement at once (the same one again when asked
  faster than the update rate); ``:READ`` waits for the next one, ``:MEASure`` for the one
  after (the manual: MEAS = ABORt; INITiate; FETCh). On a manual bench clock the wait
  advances the clock, as the simulated oscilloscope does for a record that ends in the future.
* ``:SENSe:AVERage:STATe ON|OFF``, ``:SENSe:AVERage:COUNt 2..128`` (*RST 2),
  ``:SENSe:AVERage:DATA? POW|FREQ|WAV|WNUM``.
* ``:TRIGger:SEQuence:RATE 20|50|100|250|500|1000``: measurements per second (the VIS/NIR
  rates).
* ``:STATus:QUEStionable:CONDition?``: the condition of the latest measurement
  (:class:`drivers.wavemeter.WavemeterCondition` bits), also the status field of ``:ALL?``.
* ``:SYSTem:ERRor?`` (30-entry queue, as the manual states), ``*IDN?``
  (``BRISTOL WAVELENGTH METER, 871A-NIR, <serial>, <firmware>``), ``*RST``, ``*CLS``.

Terminators: the instrument is reached over telnet (port 23) and its replies end in CR LF;
the twin accepts LF or CR LF and replies CR LF. Not simulated: the telnet greeting, the
RS-422 binary stream, the measurement buffer (MMEMory), the CALCulate drift/delta subsystem,
the PID analogue output, auto-exposure and calibration.

Measurement model
-----------------
The input is wired in the bench file like a scope input (``[bench.wiring] "wm0:1" =
"pump0:1"``); the source must be a light source with ``optical_frequency_hz(t_s)`` and
``optical_power_mw(t_s)`` (the Santec twin). Measurement k completes at bench time
t_k = t0 + (k - k0) / rate (k counts from 0 at power-on; a new rate re-anchors k0, t0), and
reads the light at that instant::

    nu_k = nu_laser(t_k) + accuracy_offset + sigma * z_k,   z_k ~ N(0, 1)
    P_k  = tap_fraction * P_laser(t_k)

``accuracy_offset_mhz`` (default 5 MHz) is the fixed calibration error, inside the 871A's
+-0.2 ppm absolute accuracy (+-39 MHz at 1550 nm). ``noise_rms_mhz`` (default 0.6 MHz) is the
repeatability: the 871A datasheet quotes +-0.006 ppm (+-1.2 MHz at 1550 nm), read here as a
+-2 sigma band. Neither figure was checked against the datasheet in writing this twin (no
copy was at hand): both are options. z_k comes from generators keyed by (bench seed, CRC-32
of the name, chunk of 4096 measurements), so measurement k is the same however often and in
whichever order it is asked for. ``update_rate_hz`` (default 20: the slowest rate, ample
for a loop that reads over Ethernet) is the power-on rate.

No light: when P_k is below ``no_signal_mw`` (1 uW), or nothing is wired, the measurement has
no reading: frequency, wavelength, wavenumber and power read 0 (dBm: -99.00) and the status
carries NO_SIGNAL. This is the twin's choice, made to be unmistakable: the manual's status
register has a "no measurable signal" bit, but the excerpts found do not say what the number
replies hold then. Between ``no_signal_mw`` and ``low_signal_mw`` (10 uW) the reading is given
with LOW_SIGNAL; above ``saturation_mw`` (10 mW) with SATURATED; outside
``wavelength_range_nm`` (1000-1680 nm, the NIR model as recalled) there is no reading and the
status carries WAVELENGTH_OUT_OF_RANGE.

Averaging (ON, count N): every reading is the mean of the last N measurements with light (a
running average, as Bristol's front panel updates it with each new measurement); the window
restarts after a measurement without light and after a change of count or rate. ALREADY_READ
is set in the status when the measurement returned was already returned by an earlier query.
"""

from __future__ import annotations

import math
import time
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from drivers.sim.base import SimInstrument
from drivers.sim.scpi import (
    DATA_OUT_OF_RANGE,
    EXECUTION_ERROR,
    MISSING_PARAMETER,
    PARAMETER_NOT_ALLOWED,
    Arg,
    QueryHandler,
    Reply,
    check_range,
    error,
    parse_bool_arg,
    parse_choice,
    parse_number,
)
from drivers.wavemeter import SPEED_OF_LIGHT_M_S, WavemeterCondition

if TYPE_CHECKING:
    from drivers.sim.bench import BenchModel

UPDATE_RATES_HZ = (20, 50, 100, 250, 500, 1000)
AVERAGE_COUNT_RANGE = (2, 128)
ERROR_QUEUE_SIZE = 30
_NOISE_CHUNK = 4096
_FRAME_CACHE = 512

DEFAULTS: dict[str, Any] = {
    "accuracy_offset_mhz": 5.0,
    "noise_rms_mhz": 0.6,
    "update_rate_hz": 20,
    "tap_fraction": 1.0,
    "no_signal_mw": 1e-3,
    "low_signal_mw": 1e-2,
    "saturation_mw": 10.0,
    "wavelength_range_nm": (1000.0, 1680.0),
}


@dataclass(frozen=True)
class Frame:
    """One measurement: what the instrument would report for it."""

    index: int
    t_s: float  #: bench time the measurement completed
    frequency_hz: float  #: 0 when there is no reading
    power_mw: float
    condition: WavemeterCondition

    @property
    def has_reading(self) -> bool:
        return not (
            self.condition
            & (WavemeterCondition.NO_SIGNAL | WavemeterCondition.WAVELENGTH_OUT_OF_RANGE)
        )

    @property
    def wavelength_nm(self) -> float:
        return SPEED_OF_LIGHT_M_S / self.frequency_hz * 1e9 if self.frequency_hz > 0 else 0.0


class SimBristol871(SimInstrument):
    instrument_class = "wavemeter"
    model = "bristol_871"
    identity = "BRISTOL WAVELENGTH METER, 871A-NIR, 8711, 1.03"
    terminator = (b"\r\n", b"\n")
    reply_terminator = b"\r\n"

    def __init__(
        self, name: str, bench: BenchModel, options: Mapping[str, Any] | None = None
    ) -> None:
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(DEFAULTS))
        if unknown:
            raise ValueError(
                f"{name}: unknown bristol_871 simulator option(s) {unknown}; "
                f"known: {sorted(DEFAULTS)}"
            )
        cfg = {**DEFAULTS, **opts}
        self.accuracy_offset_hz = _number(name, cfg, "accuracy_offset_mhz") * 1e6
        self.noise_rms_hz = _number(name, cfg, "noise_rms_mhz", minimum=0.0) * 1e6
        self.tap_fraction = _number(name, cfg, "tap_fraction", minimum=0.0)
        self.no_signal_mw = _number(name, cfg, "no_signal_mw", minimum=0.0)
        self.low_signal_mw = _number(name, cfg, "low_signal_mw", minimum=self.no_signal_mw)
        self.saturation_mw = _number(name, cfg, "saturation_mw", minimum=self.low_signal_mw)
        rate = cfg["update_rate_hz"]
        if rate not in UPDATE_RATES_HZ or isinstance(rate, bool):
            raise ValueError(
                f"{name}: sim option update_rate_hz must be one of {UPDATE_RATES_HZ}, got {rate!r}"
            )
        self.power_on_rate_hz = int(rate)
        span = cfg["wavelength_range_nm"]
        if (
            not isinstance(span, list | tuple)
            or len(span) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in span)
            or not 0 < span[0] < span[1]
        ):
            raise ValueError(
                f"{name}: sim option wavelength_range_nm must be [low, high] in nm, got {span!r}"
            )
        self.wavelength_range_nm = (float(span[0]), float(span[1]))
        self._noise_key = (int(bench.seed) & 0xFFFFFFFF, zlib.crc32(name.encode()), 0xB871)
        self._noise_chunks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._frames: OrderedDict[int, Frame] = OrderedDict()
        self._anchor_index = 0
        self._anchor_s = bench.clock.now_s()
        self._last_read_index: int | None = None
        super().__init__(name, bench, opts)

    # -- state ---------------------------------------------------------------
    def reset(self) -> None:
        self.power_unit_mw = False  # power-on unit: dBm (the driver selects mW)
        self.averaging = False
        self.average_count = 2
        self._set_rate(self.power_on_rate_hz)

    def register(self) -> None:
        e = self.engine
        e.error_queue_size = ERROR_QUEUE_SIZE
        for verb in ("MEASure", "READ", "FETCh"):
            wait = {"MEASure": 2, "READ": 1, "FETCh": 0}[verb]
            for quantity in ("FREQuency", "WAVelength", "WNUMber", "POWer", "ALL"):
                e.add(
                    f":{verb}[:SCALar]:{quantity}",
                    on_query=self._reading_query(quantity, wait),
                )
        e.add_value(
            ":UNIT:POWer",
            lambda s: self.power_unit_mw,
            self._set_power_unit,
            formatter=lambda mw: "MW" if mw else "DBM",
        )
        e.add_value(
            ":SENSe:AVERage:STATe",
            lambda s: self.averaging,
            self._set_averaging,
            formatter=lambda on: "ON" if on else "OFF",
        )
        e.add_value(
            ":SENSe:AVERage:COUNt",
            lambda s: self.average_count,
            self._set_average_count,
            formatter=str,
        )
        e.add(":SENSe:AVERage:DATA", on_query=self._average_data)
        e.add_value(
            ":TRIGger[:SEQuence]:RATE",
            lambda s: self.rate_hz,
            self._set_rate_arg,
            formatter=str,
        )
        e.add(
            ":STATus:QUEStionable:CONDition",
            on_query=lambda a, s: str(int(self._condition(self.reading()))),
        )

    # -- handlers ------------------------------------------------------------
    def _reading_query(self, quantity: str, wait_frames: int) -> QueryHandler:
        def on_query(args: list[Arg], suffixes: tuple[int, ...]) -> Reply:
            if args:
                raise error(PARAMETER_NOT_ALLOWED, f"{quantity}? takes no parameter")
            if wait_frames:
                self._wait_for(self.latest_index() + wait_frames)
            frame = self.reading()
            condition = self._condition(frame)
            self._last_read_index = frame.index
            return self._format(quantity, frame, condition)

        return on_query

    def _format(self, quantity: str, frame: Frame, condition: WavemeterCondition) -> str:
        f_hz = frame.frequency_hz
        if quantity == "FREQuency":
            return f"{f_hz * 1e-12:.7f}"
        if quantity == "WAVelength":
            return f"{frame.wavelength_nm:.7f}"
        if quantity == "WNUMber":
            return f"{f_hz / SPEED_OF_LIGHT_M_S / 100.0:.5f}"
        power = self._format_power(frame.power_mw)
        if quantity == "POWer":
            return power
        index = frame.index % 2**32  # the 871's scan index is a 32-bit counter
        return f"{index},{int(condition)},{frame.wavelength_nm:.7f},{power}"

    def _format_power(self, power_mw: float) -> str:
        if self.power_unit_mw:
            return f"{power_mw:.6f}"
        return f"{10.0 * math.log10(power_mw):.2f}" if power_mw > 0 else "-99.00"

    def _average_data(self, args: list[Arg], suffixes: tuple[int, ...]) -> Reply:
        if len(args) != 1:
            raise error(MISSING_PARAMETER if not args else PARAMETER_NOT_ALLOWED)
        quantity = parse_choice(args[0], ("POWer", "FREQuency", "WAVelength", "WNUMber"))
        full = {"POW": "POWer", "FREQ": "FREQuency", "WAV": "WAVelength", "WNUM": "WNUMber"}
        frame = self.reading()
        return self._format(full[quantity], frame, self._condition(frame))

    def _set_power_unit(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        self.power_unit_mw = parse_choice(arg, ("MW", "DBM")) == "MW"

    def _set_averaging(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        on = parse_bool_arg(arg)
        if on and not self.averaging:
            self._restart_average()
        self.averaging = on

    def _set_average_count(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        low, high = AVERAGE_COUNT_RANGE
        value = parse_number(arg, minimum=low, maximum=high, default=low)
        if not float(value).is_integer():
            raise error(EXECUTION_ERROR, f"average count must be an integer, got {value:g}")
        self.average_count = int(check_range(value, low, high, "average count"))
        self._restart_average()

    def _set_rate_arg(self, arg: Arg, suffixes: tuple[int, ...]) -> None:
        value = parse_number(arg, minimum=UPDATE_RATES_HZ[0], maximum=UPDATE_RATES_HZ[-1])
        if value not in UPDATE_RATES_HZ:
            raise error(DATA_OUT_OF_RANGE, f"rate {value:g} Hz not one of {list(UPDATE_RATES_HZ)}")
        self._set_rate(int(value))

    def _set_rate(self, rate_hz: int) -> None:
        """From now on measurement k0 + j completes at t0 + j / rate, where k0 is the next
        measurement and t0 = now + 1 / rate. Measurements already made keep their values."""
        if hasattr(self, "rate_hz"):
            self._anchor_index = self.latest_index() + 1
            self._anchor_s = self.now_s() + 1.0 / rate_hz
        self.rate_hz = rate_hz
        self._restart_average()

    def _restart_average(self) -> None:
        self._average_from = self.latest_index() + 1 if hasattr(self, "rate_hz") else 0

    # -- measurement model -------------------------------------------------------
    def latest_index(self) -> int:
        """Index of the latest completed measurement (k0 + floor((now - t0) rate))."""
        # the tolerance keeps a clock set exactly on t_k (as t0 + j / rate) on measurement k
        # despite rounding in (now - t0) * rate
        elapsed = (self.now_s() - self._anchor_s) * self.rate_hz
        return self._anchor_index + math.floor(elapsed + 1e-6)

    def frame_time_s(self, index: int) -> float:
        return self._anchor_s + (index - self._anchor_index) / self.rate_hz

    def _wait_for(self, index: int) -> None:
        """Let bench time reach the completion of measurement ``index``."""
        clock = self.bench.clock
        target_s = self.frame_time_s(index)
        if not clock.realtime:
            clock.advance(max(0.0, target_s - clock.now_s()))
            return
        while (remaining_s := target_s - clock.now_s()) > 0:
            time.sleep(remaining_s / clock.speed)

    def _noise(self, index: int) -> float:
        c = index // _NOISE_CHUNK
        chunk = self._noise_chunks.get(c)
        if chunk is None:
            u = c + (1 << 40)  # indices may be negative (before power-on); seeds may not
            rng = np.random.default_rng([*self._noise_key, u & 0xFFFFFFFF, u >> 32])
            chunk = rng.standard_normal(_NOISE_CHUNK)
            self._noise_chunks[c] = chunk
            if len(self._noise_chunks) > 4:
                self._noise_chunks.popitem(last=False)
        return float(chunk[index - c * _NOISE_CHUNK])

    def _light(self) -> Any:
        wired = self.bench.source_of(self.name, 1)
        if wired is None:
            return None
        source = wired[0]
        if not callable(getattr(source, "optical_frequency_hz", None)) or not callable(
            getattr(source, "optical_power_mw", None)
        ):
            raise error(EXECUTION_ERROR, f"input 1 is wired to {source.name}, which emits no light")
        return source

    def frame(self, index: int) -> Frame:
        """Measurement ``index`` on its own (no averaging)."""
        cached = self._frames.get(index)
        if cached is not None:
            return cached
        t_s = self.frame_time_s(index)
        light = self._light()
        power_mw = 0.0 if light is None else self.tap_fraction * float(light.optical_power_mw(t_s))
        condition = WavemeterCondition.NONE
        frequency_hz = 0.0
        if light is None or power_mw < self.no_signal_mw:
            condition |= WavemeterCondition.NO_SIGNAL
            power_mw = 0.0
        else:
            true_hz = float(light.optical_frequency_hz(t_s))
            low_nm, high_nm = self.wavelength_range_nm
            if not low_nm <= SPEED_OF_LIGHT_M_S / true_hz * 1e9 <= high_nm:
                condition |= WavemeterCondition.WAVELENGTH_OUT_OF_RANGE
            else:
                frequency_hz = true_hz + self.accuracy_offset_hz
                frequency_hz += self.noise_rms_hz * self._noise(index)
            if power_mw < self.low_signal_mw:
                condition |= WavemeterCondition.LOW_SIGNAL
            elif power_mw > self.saturation_mw:
                condition |= WavemeterCondition.SATURATED
        frame = Frame(index, t_s, frequency_hz, power_mw, condition)
        self._frames[index] = frame
        if len(self._frames) > _FRAME_CACHE:
            self._frames.popitem(last=False)
        return frame

    def reading(self) -> Frame:
        """What the instrument reports now: the latest measurement, averaged when averaging
        is on (over its last ``average_count`` measurements with light)."""
        latest = self.frame(self.latest_index())
        if not self.averaging or not latest.has_reading:
            return latest
        first = max(latest.index - self.average_count + 1, self._average_from)
        frames = [latest]
        for index in range(latest.index - 1, first - 1, -1):
            frame = self.frame(index)
            if not frame.has_reading:
                break  # the running average restarted when the light came back
            frames.append(frame)
        return Frame(
            latest.index,
            latest.t_s,
            float(np.mean([f.frequency_hz for f in frames])),
            float(np.mean([f.power_mw for f in frames])),
            latest.condition,
        )

    def _condition(self, frame: Frame) -> WavemeterCondition:
        if frame.index == self._last_read_index:
            return frame.condition | WavemeterCondition.ALREADY_READ
        return frame.condition

    def snapshot(self) -> dict[str, Any]:
        frame = self.reading()
        return {
            "scan_index": frame.index,
            "measured_at_s": frame.t_s,
            "frequency_hz": frame.frequency_hz,
            "power_mw": frame.power_mw,
            "condition": int(frame.condition),
            "rate_hz": self.rate_hz,
            "averaging": self.averaging,
            "average_count": self.average_count,
        }


def _number(name: str, cfg: Mapping[str, Any], key: str, *, minimum: float | None = None) -> float:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: sim option {key} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: sim option {key} must be >= {minimum:g}, got {value!r}")
    return float(value)
