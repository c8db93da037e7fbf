"""Simulated ID Quantique ID1000 Time Controller: SCPI control plus a time-tag data port.

Control (raw TCP socket, ``\\n`` both ways; the real instrument uses ZeroMQ
REQ/REP on port 5555 with the same command names):

``INPUt<n>:ENABle ON|OFF``, ``INPUt<n>:THREshold <V>`` (reply ``0.500V``),
``INPUt<n>:COUNter?`` (events in the last completed integration window),
``INPUt<n>:COUNter:INTEgration <ms>``, ``DELAy<n>:VALUe <ps>`` (reply
``1500TB``; TB = time-base unit = 1 ps), ``DEVIce:RESolution:BWIDth?`` (bin
width in ps), ``RAW<n>:SEND ON|OFF``, ``RAW<n>:ERRors?``,
``RAW<n>:ERRors:CLEar``, ``DEVIce:DATA:PORT?`` (our extension: the TCP
port of the data socket), ``*IDN?``, ``*RST``, ``*CLS``, ``SYST:ERR?``.
Inputs are 1-4. The real ID1000 streams each input on its own port. Here
all enabled inputs share one data socket, with the input number in every
record, and ``RAW<n>:SEND`` switches that merged stream whatever ``n`` is.
A failing query is answered ``SCPI_ERR_<NAME>``, as the real instrument
does; a failing setter has no reply. Both push the error onto the
``SYST:ERR?`` queue, which the real instrument does not have.

Data socket (started by :meth:`SimIDQID1000.start_extra_servers` on
127.0.0.1, port chosen by the OS): one client at a time (a new one replaces
the old). On connect the client receives one frame without records. While
``RAW:SEND`` is ON, a streaming thread wakes every ``tick_s`` (20 ms) of
wall time and generates events from where it stopped up to the bench clock's
now. It sends the events that are final as frames. The frame format is
specified in :mod:`drivers.idq_id1000` (the driver decodes it; the encoder
here is written separately, so the tests check one against the other).

Tagging pipeline, per generated interval [t0, t1) of virtual time:

1. the event source (pluggable, :class:`EventSource`) returns detector
   events (input, arrival time in int64 ps, every time >= t0);
2. the input discriminator keeps events of enabled inputs whose threshold
   lies between 0 and the detector pulse amplitude (``pulse_amplitude_v``,
   1 V): a threshold above the pulse, or below the baseline, never fires;
3. the input's delay (``DELAy<n>:VALUe``) is added, then the tagger's own
   Gaussian timing jitter (``tagger_jitter_ps`` RMS, clipped at 5 sigma);
4. the time is floored to bins of ``bin_width_ps`` and merged into a sorted
   pending buffer. Events earlier than ``now - holdback_ps`` are final
   (nothing generated later can land before them). They are released to the
   counters and, while streaming, to the data socket. The horizon is
   ``now - holdback_ps``.

The on-board buffer holds at most ``buffer_s`` of virtual time between two
transfers. If the clock jumps further while streaming, only the last
``buffer_s`` is generated. The events of the skipped span are estimated
from the rate just generated and counted as lost: the next frame carries a
LOST record and the overflow flag, and ``RAW:ERR?`` accumulates them. While
nobody streams, only the counters need events, so generation starts at the
last integration window that will complete.

Options: ``bin_width_ps`` (1), ``counter_bits`` (40: the counter wraps every
2^40 bins, 1.1 s at 1 ps), ``tagger_jitter_ps`` (3), ``pulse_amplitude_v``
(1.0), ``buffer_s`` (0.5), ``tick_s`` (0.02), ``keep_truth`` (False: keep
every sent (channels, bins) pair in :attr:`SimIDQID1000.truth`), and for the
default source ``singles_hz`` (a number or {input: Hz}) and ``pairs`` (a list
of ``{"channels": [a, b], "rate_hz": ..., "delay_ps": ..., "jitter_ps": ...}``).

Physics source (option ``source``, default none): the name of a bench element
with ``generate_for(tagger, t0_true_ps, t1_true_ps) -> (inputs, true detection
times)`` and ``max_latency_ps`` (e.g. :class:`drivers.sim.pairsource.PhotonPairSource`).
The tagger then uses :class:`BenchElementSource`: it maps each local interval
[L0, L1) to true time [to_true(L0), to_true(L1)), asks the element for this
tagger's detections emitted there and maps their times back to local time. The
element is looked up in ``bench.elements`` when first needed (elements are
created after the instruments). The holdback then grows to
1.01 * ``max_latency_ps`` + jitter clip + bin width: a detection may come that
long after its emission (1 % covers any clock rate error allowed below).

Free-running clock (options ``clock_offset_s``, ``clock_drift_ppm``,
``clock_drift_rate_ppm_per_s``, all 0 by default: the tagger then runs on bench
time exactly). With t the true (bench) time in ps, d = drift_ppm * 1e-6 and
r = drift_rate_ppm_per_s * 1e-6 / 1e12 per ps, the tagger's local time is

    local_ps = offset_ps + t * (1 + d) + r * t^2 / 2

(computed as t + round(offset_ps + d t + r t^2 / 2), exact in int64), whose
instantaneous rate error is d + r t (:meth:`TaggerClock.drift_ppm`). Everything
the tagger does with "now" (its time origin, counters, horizon, timestamps)
is local time: ``now_s()`` returns local seconds. :attr:`SimIDQID1000.tagger_clock`
is the :class:`TaggerClock`; its ``to_true_ps`` is the exact integer inverse
(the smallest true ps whose local time is >= the argument, closed-form root
of the quadratic then an integer correction), and one deterministic function
maps both ends of consecutive intervals, so the intervals tile true time
exactly. The local time must stay >= 0 and |d + r t| < 1 % over the run.
"""

from __future__ import annotations

import math
import select
import socket
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from drivers.sim.base import SimInstrument
from drivers.sim.faults import Fault, FaultSpec
from drivers.sim.scpi import (
    EXECUTION_ERROR,
    MISSING_PARAMETER,
    PARAMETER_NOT_ALLOWED,
    VOLT_UNITS,
    Arg,
    ScpiError,
    check_range,
    error,
    parse_bool_arg,
    parse_number,
)
from drivers.sim.server import hang_up

if TYPE_CHECKING:
    from drivers.sim.bench import BenchModel

CHANNELS = (1, 2, 3, 4)
MAGIC = b"TTAG"
VERSION = 1
HEADER = struct.Struct("<4sHHIIQ")  # magic, version, counter_bits, n_records, flags, horizon
FLAG_OVERFLOW = 1
CODE_WRAP = 0xFF
CODE_LOST = 0xFE
MAX_RECORDS_PER_FRAME = 1 << 18
THRESHOLD_RANGE_V = (-2.0, 2.0)
DELAY_RANGE_PS = (0, 100_000_000)
INTEGRATION_RANGE_MS = (1, 1_000_000)
PS_UNITS = {"": 1.0, "TB": 1.0, "PS": 1.0, "NS": 1e3, "US": 1e6}
MS_UNITS = {"": 1.0, "MS": 1.0, "S": 1e3}
HEADER_SUFFIX_OUT_OF_RANGE = -114
SEND_TIMEOUT_S = 5.0


# ---------------------------------------------------------------------------
# Event sources
# ---------------------------------------------------------------------------
class EventSource(Protocol):
    """Detector events that reach the tagger inputs: the physics behind the tagger.

    ``generate`` returns the events of [t0_ps, t1_ps) as (inputs uint8,
    arrival times int64 ps), in any order, every time >= t0_ps. Times may
    exceed t1_ps: the partner photon of a pair starting near t1_ps does, and
    the simulator holds such events back until the clock passes them. Each
    interval is asked for once, in increasing order. An interval may also
    be skipped (overflow, idle counters), so a source keeps no history it
    relies on.
    """

    def generate(
        self, t0_ps: int, t1_ps: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class CorrelatedPair:
    """Photon pairs split over two inputs: b arrives ``delay_ps`` after a, with jitter."""

    channel_a: int
    channel_b: int
    rate_hz: float
    delay_ps: float
    jitter_ps: float


class PoissonPairSource:
    """Uncorrelated Poisson singles per input plus correlated pairs.

    Each input fires at ``singles_hz[input]`` (background: dark counts,
    unpaired photons). Each :class:`CorrelatedPair` adds a Poisson process at
    ``rate_hz`` whose events put one detection on ``channel_a`` at t and
    one on ``channel_b`` at t + delay + N(0, jitter^2). The singles rate seen
    on an input is therefore its background plus the rates of its pairs.
    """

    def __init__(self, singles_hz: Mapping[int, float], pairs: Sequence[CorrelatedPair] = ()):
        self.singles_hz = {int(ch): float(rate) for ch, rate in singles_hz.items()}
        self.pairs = tuple(pairs)
        for rate in [*self.singles_hz.values(), *(p.rate_hz for p in self.pairs)]:
            if not rate >= 0:
                raise ValueError("rates must be >= 0")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PoissonPairSource:
        singles = options.get("singles_hz", {1: 110e3, 2: 90e3, 3: 60e3, 4: 140e3})
        if isinstance(singles, int | float):
            singles = dict.fromkeys(CHANNELS, float(singles))
        pair_options = options.get(
            "pairs", [{"channels": [1, 2], "rate_hz": 5e3, "delay_ps": 1500, "jitter_ps": 30}]
        )
        pairs = [
            CorrelatedPair(
                int(p["channels"][0]),
                int(p["channels"][1]),
                float(p["rate_hz"]),
                float(p.get("delay_ps", 0.0)),
                float(p.get("jitter_ps", 0.0)),
            )
            for p in pair_options
        ]
        return cls({int(ch): float(rate) for ch, rate in singles.items()}, pairs)

    def total_rate_hz(self) -> float:
        return sum(self.singles_hz.values()) + 2 * sum(p.rate_hz for p in self.pairs)

    def generate(
        self, t0_ps: int, t1_ps: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        span_ps = t1_ps - t0_ps
        channels: list[np.ndarray] = []
        times: list[np.ndarray] = []
        for ch, rate in self.singles_hz.items():
            n = rng.poisson(rate * span_ps * 1e-12)
            times.append(t0_ps + rng.integers(0, span_ps, n, dtype=np.int64))
            channels.append(np.full(n, ch, dtype=np.uint8))
        for pair in self.pairs:
            n = rng.poisson(pair.rate_hz * span_ps * 1e-12)
            t_ref = t0_ps + rng.integers(0, span_ps, n, dtype=np.int64)
            offset = np.rint(rng.normal(pair.delay_ps, pair.jitter_ps, n)).astype(np.int64)
            # the earlier photon of the pair sits at t_ref >= t0
            times.append(t_ref + np.maximum(0, -offset))
            channels.append(np.full(n, pair.channel_a, dtype=np.uint8))
            times.append(t_ref + np.maximum(0, offset))
            channels.append(np.full(n, pair.channel_b, dtype=np.uint8))
        if not times:
            return np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64)
        return np.concatenate(channels), np.concatenate(times)


# ---------------------------------------------------------------------------
# The tagger's own clock, and a source that lives in true (bench) time
# ---------------------------------------------------------------------------
MAX_RATE_ERROR = 0.01  # |d + r t| allowed: the holdback covers latencies stretched this much


class TaggerClock:
    """A free-running clock: local ps = offset + t (1 + d) + r t^2 / 2 with t the true ps.

    ``to_local_ps`` and ``to_true_ps`` take and return int (or int64 arrays).
    """

    def __init__(
        self, offset_s: float = 0.0, drift_ppm: float = 0.0, drift_rate_ppm_per_s: float = 0.0
    ) -> None:
        self.offset_ps = round(offset_s * 1e12)
        self.d = drift_ppm * 1e-6
        self.r_per_ps = drift_rate_ppm_per_s * 1e-6 * 1e-12
        self.drift_ppm0 = drift_ppm
        self.drift_rate_ppm_per_s = drift_rate_ppm_per_s
        if abs(self.d) >= MAX_RATE_ERROR:
            raise ValueError(f"clock drift {drift_ppm} ppm is beyond {MAX_RATE_ERROR * 1e6} ppm")

    @property
    def is_identity(self) -> bool:
        return self.offset_ps == 0 and self.d == 0.0 and self.r_per_ps == 0.0

    def drift_ppm(self, true_s: float) -> float:
        """Instantaneous rate error d + r t of the local clock at true time ``true_s`` (ppm)."""
        return self.drift_ppm0 + self.drift_rate_ppm_per_s * true_s

    def to_local_ps(self, true_ps: Any) -> Any:
        t = np.asarray(true_ps, dtype=np.int64)
        tf = t.astype(np.float64)
        correction = np.rint(self.offset_ps + self.d * tf + 0.5 * self.r_per_ps * tf * tf)
        local = t + correction.astype(np.int64)
        return int(local) if local.ndim == 0 else local

    def to_true_ps(self, local_ps: Any) -> Any:
        """The smallest true ps whose local time is >= ``local_ps`` (exact inverse)."""
        target = np.asarray(local_ps, dtype=np.int64)
        a = (target - self.offset_ps).astype(np.float64)
        b = 1.0 + self.d
        if self.r_per_ps == 0.0:
            guess = a / b
        else:  # root of r t^2 / 2 + b t - a = 0, in the form without cancellation
            guess = 2.0 * a / (b + np.sqrt(np.maximum(b * b + 2.0 * self.r_per_ps * a, 0.0)))
        t = np.floor(guess).astype(np.int64)
        for _ in range(64):  # the guess is within a fraction of a ps: a step or two at most
            up = np.asarray(self.to_local_ps(t)) < target
            down = np.asarray(self.to_local_ps(t - 1)) >= target
            if not (up.any() or down.any()):
                break
            t = t + up.astype(np.int64) - down.astype(np.int64)
        return int(t) if t.ndim == 0 else t


class TrueTimeSource(Protocol):
    """A bench element that knows every tagger's detections in true (bench) time."""

    @property
    def max_latency_ps(self) -> int: ...

    def generate_for(
        self, tagger: str, t0_true_ps: int, t1_true_ps: int
    ) -> tuple[np.ndarray, np.ndarray]: ...


class BenchElementSource:
    """EventSource of a tagger fed by a bench element through the tagger's clock.

    Local [t0, t1) -> true [to_true(t0), to_true(t1)); the element returns the
    detections emitted there (true ps), mapped back to local ps. The element
    draws its own random numbers (the tagger's rng is not used), so every
    tagger on the bench sees one realisation.
    """

    def __init__(self, tagger: SimIDQID1000) -> None:
        self.tagger = tagger

    def generate(
        self, t0_ps: int, t1_ps: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        element = self.tagger.source_element(required=True)
        assert element is not None
        clock = self.tagger.tagger_clock
        true0, true1 = clock.to_true_ps(t0_ps), clock.to_true_ps(t1_ps)
        inputs, times = element.generate_for(self.tagger.name, true0, true1)
        local = np.asarray(clock.to_local_ps(np.asarray(times, dtype=np.int64)), dtype=np.int64)
        # a detection comes >= 10 ns after its emission: the clamp only guards rounding
        return np.asarray(inputs, dtype=np.uint8), np.maximum(local.reshape(-1), t0_ps)


# ---------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------
def _one_arg(args: list[Arg]) -> Arg:
    if len(args) != 1:
        raise error(MISSING_PARAMETER if not args else PARAMETER_NOT_ALLOWED)
    return args[0]


def _input(suffixes: tuple[int, ...]) -> int:
    channel = suffixes[0]
    if channel not in CHANNELS:
        raise ScpiError(HEADER_SUFFIX_OUT_OF_RANGE, f"Header suffix out of range;input {channel}")
    return channel


def _scpi_err_reply(exc: ScpiError) -> str:
    name = exc.text.split(";", 1)[0].strip().upper().replace(" ", "_")
    return f"SCPI_ERR_{name or 'ERROR'}"


class SimIDQID1000(SimInstrument):
    instrument_class = "tdc"
    model = "idq_id1000"
    transport = "tcp"
    identity = "ID Quantique,ID1000,SIM00001,1.0.0"

    def __init__(
        self, name: str, bench: BenchModel, options: Mapping[str, Any] | None = None
    ) -> None:
        opts = dict(options or {})
        self.bin_width_ps = int(opts.get("bin_width_ps", 1))
        self.counter_bits = int(opts.get("counter_bits", 40))
        self.tagger_jitter_ps = float(opts.get("tagger_jitter_ps", 3.0))
        self.pulse_amplitude_v = float(opts.get("pulse_amplitude_v", 1.0))
        self.buffer_ps = int(float(opts.get("buffer_s", 0.5)) * 1e12)
        self.tick_s = float(opts.get("tick_s", 0.02))
        if self.bin_width_ps < 1 or not 1 <= self.counter_bits <= 56:
            raise ValueError("bin_width_ps must be >= 1 and counter_bits in 1..56")
        self._jitter_clip_ps = math.ceil(5 * self.tagger_jitter_ps)
        self._base_holdback_ps = max(1000, self._jitter_clip_ps + self.bin_width_ps)
        #: the tagger's free-running clock (local time) against the bench's true time
        self.tagger_clock = TaggerClock(
            float(opts.get("clock_offset_s", 0.0)),
            float(opts.get("clock_drift_ppm", 0.0)),
            float(opts.get("clock_drift_rate_ppm_per_s", 0.0)),
        )
        self.bench = bench  # (also set by SimInstrument.__init__; needed by _now_ps below)
        self.source_name: str | None = opts.get("source")
        self._source: TrueTimeSource | None = None
        self._source_holdback_ps: int | None = None
        self.event_source: EventSource = (
            BenchElementSource(self)
            if self.source_name is not None
            else PoissonPairSource.from_options(opts)
        )
        self.rng = bench.rng.spawn(1)[0]
        self.truth: list[tuple[np.ndarray, np.ndarray]] | None = (
            [] if opts.get("keep_truth") else None
        )
        # pipeline state (physics, not settings: *RST keeps it)
        start_ps = self._now_ps()
        self._gen_until_ps = start_ps
        self._released_until_bins = max(0, start_ps - self.holdback_ps) // self.bin_width_ps
        self._pending_bins = np.zeros(0, dtype=np.int64)
        self._pending_ch = np.zeros(0, dtype=np.uint8)
        self._win_index = dict.fromkeys(CHANNELS, 0)
        self._win_count = dict.fromkeys(CHANNELS, 0)
        self._last_count = dict.fromkeys(CHANNELS, 0)
        # stream state
        self.streaming = False
        self.lost_events = 0
        self._pending_lost = 0
        self._outbox: list[tuple[np.ndarray, np.ndarray]] = []
        self._last_wrap = 0
        self._last_sent_horizon = self._released_until_bins
        self._corrupt_next = False
        # data socket
        self.data_port = 0
        self._listener: socket.socket | None = None
        self._data_conn: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._refusing = False
        self._threads: list[threading.Thread] = []
        super().__init__(name, bench, opts)

    @staticmethod
    def _ps(seconds: float) -> int:
        return round(seconds * 1e12)

    # -- time ----------------------------------------------------------------------
    def _now_ps(self) -> int:
        """The tagger's local time now (int ps)."""
        true_ps = self._ps(self.bench.clock.now_s())
        if self.tagger_clock.is_identity:
            return true_ps
        return self.tagger_clock.to_local_ps(true_ps)

    def now_s(self) -> float:
        """The tagger's local time now (its free-running clock, see the module docstring)."""
        return self._now_ps() * 1e-12

    def source_element(self, *, required: bool = False) -> TrueTimeSource | None:
        """The bench element named by the ``source`` option (looked up when first found)."""
        if self._source is None and self.source_name is not None:
            element = self.bench.elements.get(self.source_name)
            if element is None:
                if required:
                    raise KeyError(
                        f"{self.name}: source {self.source_name!r} is not a bench element "
                        f"(elements: {sorted(self.bench.elements)})"
                    )
                return None
            self._source = cast("TrueTimeSource", element)
        return self._source

    @property
    def holdback_ps(self) -> int:
        """Events earlier than now - holdback_ps are final: nothing generated later lands there.

        Without a physics source: the tagger jitter's clip plus a bin (at least 1 ns). With
        one: also the longest emission-to-detection delay of the source (stretched by 1 %).
        """
        if self._source_holdback_ps is None:
            element = self.source_element()
            if element is None:
                return self._base_holdback_ps
            latency = math.ceil(element.max_latency_ps * (1 + MAX_RATE_ERROR))
            self._source_holdback_ps = max(
                self._base_holdback_ps, latency + self._jitter_clip_ps + self.bin_width_ps
            )
        return self._source_holdback_ps

    # -- settings ----------------------------------------------------------------
    def reset(self) -> None:
        self.enabled = dict.fromkeys(CHANNELS, True)
        self.threshold_v = dict.fromkeys(CHANNELS, 0.5)
        self.delay_ps = dict.fromkeys(CHANNELS, 0)
        self.integration_ms = dict.fromkeys(CHANNELS, 1000)
        self.streaming = False
        self._outbox.clear()
        self._reset_windows(self._released_until_bins * self.bin_width_ps, clear_last=True)

    def register(self) -> None:
        e = self.engine
        e.query_error_reply = _scpi_err_reply
        e.add(
            "INPUt#:ENABle",
            on_set=self._set_enable,
            on_query=lambda a, s: "ON" if self.enabled[_input(s)] else "OFF",
        )
        e.add(
            "INPUt#:THREshold",
            on_set=self._set_threshold,
            on_query=lambda a, s: f"{self.threshold_v[_input(s)]:.3f}V",
        )
        e.add("INPUt#:COUNter", on_query=self._query_counts)
        e.add(
            "INPUt#:COUNter:INTEgration",
            on_set=self._set_integration,
            on_query=lambda a, s: str(self.integration_ms[_input(s)]),
        )
        e.add(
            "DELAy#:VALUe",
            on_set=self._set_delay,
            on_query=lambda a, s: f"{self.delay_ps[_input(s)]}TB",
        )
        e.add("DEVIce:RESolution:BWIDth", on_query=lambda a, s: str(self.bin_width_ps))
        e.add("DEVIce:DATA:PORT", on_query=self._query_data_port)
        e.add(
            "RAW#:SEND",
            on_set=self._set_send,
            on_query=lambda a, s: "ON" if self.streaming else "OFF",
        )
        e.add("RAW#:ERRors", on_query=lambda a, s: str(self.lost_events))
        e.add("RAW#:ERRors:CLEar", on_set=lambda a, s: setattr(self, "lost_events", 0))

    def _set_enable(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        channel = _input(suffixes)
        on = parse_bool_arg(_one_arg(args))
        self._catch_up()
        self.enabled[channel] = on
        if not on:
            self._last_count[channel] = 0

    def _set_threshold(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        channel = _input(suffixes)
        value = parse_number(_one_arg(args), units=VOLT_UNITS)
        check_range(value, *THRESHOLD_RANGE_V, "threshold (V)")
        self._catch_up()
        self.threshold_v[channel] = value

    def _set_delay(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        channel = _input(suffixes)
        value = parse_number(_one_arg(args), units=PS_UNITS)
        check_range(value, *DELAY_RANGE_PS, "delay (ps)")
        self._catch_up()
        self.delay_ps[channel] = round(value)

    def _set_integration(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        channel = _input(suffixes)
        value = parse_number(_one_arg(args), units=MS_UNITS)
        check_range(value, *INTEGRATION_RANGE_MS, "integration time (ms)")
        self._catch_up()
        self.integration_ms[channel] = round(value)
        # a new window length restarts the counter
        window_ps = self.integration_ms[channel] * 10**9
        self._win_index[channel] = self._released_until_bins * self.bin_width_ps // window_ps
        self._win_count[channel] = 0
        self._last_count[channel] = 0

    def _query_counts(self, args: list[Arg], suffixes: tuple[int, ...]) -> str:
        channel = _input(suffixes)
        self._catch_up()
        return str(self._last_count[channel])

    def _query_data_port(self, args: list[Arg], suffixes: tuple[int, ...]) -> str:
        if not self.data_port:
            raise error(EXECUTION_ERROR, "data port not running")
        return str(self.data_port)

    def _set_send(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        on = parse_bool_arg(_one_arg(args))
        self._catch_up()
        if on and not self.streaming:
            # a new stream: its first record carries the wraps since the time origin
            self._last_wrap = 0
            self._outbox.clear()
            self._pending_lost = 0
        if not on:
            self._outbox.clear()
        self.streaming = on

    # -- pipeline (all under self.lock) ------------------------------------------
    def _accepting(self) -> np.ndarray:
        """Per input number: does its discriminator fire on the detector pulses?"""
        table = np.zeros(256, dtype=bool)
        for ch in CHANNELS:
            table[ch] = self.enabled[ch] and 0.0 < self.threshold_v[ch] < self.pulse_amplitude_v
        return table

    def _reset_windows(self, at_ps: int, *, clear_last: bool) -> None:
        for ch in CHANNELS:
            self._win_index[ch] = at_ps // (self.integration_ms[ch] * 10**9)
            self._win_count[ch] = 0
            if clear_last:
                self._last_count[ch] = 0

    def _generate(self, t0_ps: int, t1_ps: int) -> tuple[np.ndarray, np.ndarray]:
        """Tag the source's events of [t0, t1): (bins int64, inputs uint8), unsorted."""
        channels, times = self.event_source.generate(t0_ps, t1_ps, self.rng)
        channels = np.asarray(channels, dtype=np.uint8)
        times = np.asarray(times, dtype=np.int64)
        if channels.shape != times.shape or channels.ndim != 1:
            raise ValueError("event source returned arrays of different shapes")
        if times.size and int(times.min()) < t0_ps:
            raise ValueError("event source returned an event before the interval start")
        keep = self._accepting()[channels]
        channels, times = channels[keep], times[keep]
        delays = np.zeros(256, dtype=np.int64)
        for ch in CHANNELS:
            delays[ch] = self.delay_ps[ch]
        times = times + delays[channels]
        if self.tagger_jitter_ps > 0 and times.size:
            jitter = np.rint(self.rng.normal(0.0, self.tagger_jitter_ps, times.size))
            clip = self._jitter_clip_ps
            times = times + np.clip(jitter, -clip, clip).astype(np.int64)
        bins = np.maximum(times, 0) // self.bin_width_ps
        return bins, channels

    def _catch_up(self) -> None:
        """Generate and tag events up to the clock's now; release the final ones."""
        now_ps = self._now_ps()
        t0 = self._gen_until_ps
        if now_ps <= t0:
            return
        horizon_bins = max(0, now_ps - self.holdback_ps) // self.bin_width_ps
        lost_span_ps = 0
        if self.streaming and now_ps - t0 > self.buffer_ps:
            # the on-board buffer overflowed: only its last buffer_s survives
            lost_span_ps = now_ps - self.buffer_ps - t0
            t0 = now_ps - self.buffer_ps
            self._reset_windows(t0, clear_last=False)
        elif not self.streaming:
            # nobody streams: only the last integration window that completes matters
            horizon_ps = horizon_bins * self.bin_width_ps
            needed = min(
                max(0, (horizon_ps // w - 1) * w)
                for w in (self.integration_ms[ch] * 10**9 for ch in CHANNELS)
            )
            if needed > t0:
                t0 = needed
                self._pending_bins = self._pending_bins[:0]
                self._pending_ch = self._pending_ch[:0]
                self._reset_windows(t0, clear_last=False)
        bins, channels = self._generate(t0, now_ps)
        if lost_span_ps:
            lost = round(bins.size * lost_span_ps / (now_ps - t0))
            self.lost_events += lost
            self._pending_lost += lost
        all_bins = np.concatenate((self._pending_bins, bins))
        all_ch = np.concatenate((self._pending_ch, channels))
        order = np.argsort(all_bins, kind="stable")
        all_bins, all_ch = all_bins[order], all_ch[order]
        cut = int(np.searchsorted(all_bins, horizon_bins, side="left"))
        released_bins, released_ch = all_bins[:cut], all_ch[:cut]
        self._pending_bins, self._pending_ch = all_bins[cut:], all_ch[cut:]
        self._gen_until_ps = now_ps
        self._released_until_bins = max(self._released_until_bins, horizon_bins)
        self._count(released_bins, released_ch)
        if self.streaming and released_bins.size:
            self._outbox.append((released_bins, released_ch))

    def _count(self, bins: np.ndarray, channels: np.ndarray) -> None:
        """Update the per-input integration-window counters with released events."""
        horizon_ps = self._released_until_bins * self.bin_width_ps
        times_ps = bins * self.bin_width_ps
        for ch in CHANNELS:
            window_ps = self.integration_ms[ch] * 10**9
            times = times_ps[channels == ch]
            k_end = horizon_ps // window_ps
            if k_end > self._win_index[ch]:
                j = k_end - 1
                in_last = int(
                    np.count_nonzero((times >= j * window_ps) & (times < (j + 1) * window_ps))
                )
                carried = self._win_count[ch] if j == self._win_index[ch] else 0
                self._last_count[ch] = in_last + carried
                self._win_index[ch] = k_end
                self._win_count[ch] = int(np.count_nonzero(times >= k_end * window_ps))
            else:
                self._win_count[ch] += int(times.size)

    # -- frames ------------------------------------------------------------------
    def _encode(self, bins: np.ndarray, channels: np.ndarray) -> np.ndarray:
        """Records for sorted events, with WRAP records before events in a new wrap."""
        bits = self.counter_bits
        wrap = bins >> bits
        previous = np.empty_like(wrap)
        if wrap.size:
            previous[0] = self._last_wrap
            previous[1:] = wrap[:-1]
        step = wrap - previous
        needs_marker = step > 0
        positions = np.arange(bins.size) + np.cumsum(needs_marker)
        words = np.empty(bins.size + int(np.count_nonzero(needs_marker)), dtype=np.uint64)
        counter = (bins & ((1 << bits) - 1)).astype(np.uint64)
        words[positions] = (channels.astype(np.uint64) << np.uint64(56)) | counter
        words[positions[needs_marker] - 1] = (np.uint64(CODE_WRAP) << np.uint64(56)) | step[
            needs_marker
        ].astype(np.uint64)
        if wrap.size:
            self._last_wrap = int(wrap[-1])
        return words

    def _frame(self, words: np.ndarray, flags: int, horizon_bins: int) -> bytes:
        magic = MAGIC
        if self._corrupt_next:
            magic, self._corrupt_next = b"XXXX", False
        header = HEADER.pack(magic, VERSION, self.counter_bits, words.size, flags, horizon_bins)
        return header + words.astype("<u8").tobytes()

    def _take_frames(self) -> list[bytes]:
        """Frames for everything released since the last call (under self.lock)."""
        horizon = self._released_until_bins
        if not self._outbox and not self._pending_lost and horizon == self._last_sent_horizon:
            return []
        if self._outbox:
            bins = np.concatenate([b for b, _ in self._outbox])
            channels = np.concatenate([c for _, c in self._outbox])
            self._outbox.clear()
        else:
            bins, channels = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8)
        if self.truth is not None and bins.size:
            self.truth.append((channels.copy(), bins.copy()))
        words = self._encode(bins, channels)
        flags = 0
        if self._pending_lost:
            lost_word = (np.uint64(CODE_LOST) << np.uint64(56)) | np.uint64(self._pending_lost)
            words = np.concatenate((np.array([lost_word], dtype=np.uint64), words))
            flags = FLAG_OVERFLOW
            self._pending_lost = 0
        frames = []
        for start in range(0, max(words.size, 1), MAX_RECORDS_PER_FRAME):
            chunk = words[start : start + MAX_RECORDS_PER_FRAME]
            last = start + MAX_RECORDS_PER_FRAME >= words.size
            # only the last frame of the batch moves the horizon
            frames.append(self._frame(chunk, flags, horizon if last else self._last_sent_horizon))
            flags = 0
        self._last_sent_horizon = horizon
        return frames

    # -- data socket -------------------------------------------------------------
    def start_extra_servers(self) -> None:
        """Start the data socket and the streaming thread (called by SimHost)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        self._listener = listener
        self.data_port = listener.getsockname()[1]
        self._stop.clear()
        self.faults.listeners.append(self._on_data_fault)
        for target, label in ((self._accept_loop, "data-accept"), (self._stream_loop, "stream")):
            thread = threading.Thread(target=target, name=f"sim-{self.name}-{label}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop_extra_servers(self) -> None:
        self._stop.set()
        if self._on_data_fault in self.faults.listeners:
            self.faults.listeners.remove(self._on_data_fault)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.drop_data_connections()
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads.clear()
        self.data_port = 0

    def drop_data_connections(self) -> None:
        """Close the data client's connection (a pulled cable, a crashed DataLink).

        Does not wait for a send in progress: shutting the socket down makes
        that send fail, and the streaming thread forgets the connection.
        """
        conn, self._data_conn = self._data_conn, None
        if conn is not None:
            hang_up(conn)

    def corrupt_next_frame(self) -> None:
        """Test hook: the next frame sent carries a wrong magic number."""
        with self.lock:
            self._corrupt_next = True

    def _on_data_fault(self, spec: FaultSpec | None) -> None:
        if spec is None:
            self._refusing = False
        elif spec.kind in (Fault.DROP, Fault.REFUSE):
            self._refusing = spec.kind is Fault.REFUSE
            self.drop_data_connections()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            listener = self._listener
            if listener is None:
                return
            try:
                ready, _, _ = select.select([listener], [], [], 0.1)
                if not ready:
                    continue
                conn, _ = listener.accept()
            except (OSError, ValueError):
                continue
            if self._refusing:
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(SEND_TIMEOUT_S)  # a client that stops reading is dropped
            with self._send_lock:
                old, self._data_conn = self._data_conn, conn
                with self.lock:
                    self._last_wrap = 0  # the new client knows no wraps yet
                    hello = self._frame(np.zeros(0, dtype=np.uint64), 0, self._last_sent_horizon)
                try:
                    conn.sendall(hello)
                except OSError:
                    self._data_conn = None
            if old is not None:
                old.close()

    def _stream_loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            with self._send_lock:
                conn = self._data_conn
                with self.lock:
                    if not self.streaming:
                        continue
                    self._catch_up()
                    if conn is None:
                        # nowhere to send: the data are lost
                        dropped = sum(b.size for b, _ in self._outbox)
                        self._outbox.clear()
                        self.lost_events += dropped
                        continue
                    frames = self._take_frames()
                if not frames:
                    continue
                try:
                    conn.sendall(b"".join(frames))
                except OSError:
                    self._data_conn = None
                    conn.close()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "streaming": self.streaming,
                "enabled": dict(self.enabled),
                "threshold_v": dict(self.threshold_v),
                "delay_ps": dict(self.delay_ps),
                "bin_width_ps": self.bin_width_ps,
                "lost_events": self.lost_events,
                "data_port": self.data_port,
            }
