"""What the dashboard's ISAQN panels show, computed off the GUI thread.

:class:`IsaqnView` taps an :class:`~labctl.isaqn_feed.IsaqnFeed` (:meth:`IsaqnView.attach`
makes :meth:`IsaqnView.observe` the feed's ``observer``: it runs on the thread that pushes the
records, live job or replay) and accumulates; :meth:`IsaqnView.take_frame` (thread-safe, the
data source calls it after records, at most ~30 times a second) returns an immutable
:class:`IsaqnFrame` that the source hands to the GUI thread through a queued signal. The
panels (:mod:`gui.isaqn_panels`) only copy a frame's arrays into their plots.

What a frame holds and how it is computed:

* **Receiver spectrum** of the raw complex record samples I + jQ [V]: Welch's estimate
  (:mod:`dsp.spectrum`: Hann window, 50 % overlap, mean removed per segment, two-sided since
  the input is complex, density scaling [V^2/Hz]), fftshifted to increasing frequency.
  Averaging is a *sliding block* over the last ``spectrum_records`` records: every record is
  cut into its own segments (a fresh :class:`~dsp.spectrum.WelchState`; a segment never
  straddles two records, so a gap between records cannot smear into one), its sum of segment
  periodograms is kept, and the frame's PSD is the sum over the kept records divided by their
  segment count. That is exactly ``scipy.signal.welch`` averaged over those segments (so the
  number of averages and hence the variance of each bin, PSD * chi^2_{2K}/2K, are known), and
  a change in the band (a vibration, a node switched off) has fully replaced the old spectrum
  after ``spectrum_records`` records, where an exponential average would keep a tail of it
  forever. The average restarts when the record kind changes (LO-off and signal-off
  calibration records, then data), so it never mixes the three. Default: 10 records (1 s of
  data on the simulated bench, the status update interval).
* **Bands** of each node from the config: carrier +- (1 + rolloff) R / 2, the occupied
  bandwidth of a root-raised-cosine signal at symbol rate R (physics.md section 1).
* **Phase**: per node, the unwrapped pilot phase samples (t_s, phase_rad) appended since the
  previous frame, exactly the :class:`~labctl.isaqn_pipeline.BandRecord` ``pilot_t_s`` /
  ``pilot_phase_rad`` the feed produced, so a panel that appends every frame's samples to a
  ring buffer loses none. After a re-synchronisation the receiver starts a new stream whose
  unwrapped phase is not continuous with the old one (new pilot phase reference, unwrapping
  restarted): ``breaks`` gives the indices of the samples where such a stream starts; the
  panel draws a gap there (a NaN sample) instead of a vertical line that is not a vibration.
  The view sees a new stream in the pilot times alone (it needs no access to the receiver):
  within a stream they are exactly uniform (t0 + (delay + k sps) / fs, consecutive pilots
  one pilot period apart, across records too), while a new stream drops its matched filter's
  start-up symbols (``pulse_span_symbols + 2`` >= 4 pilot periods) and restarts at the
  record boundary, so its first pilot comes more than 1.5 pilot periods after the previous
  one (or before it, when a replay restarts).
* **Phase PSD** per node over the last ``window_s`` of data (:meth:`IsaqnView.set_window_s`,
  thread-safe) of the current stream: :func:`dsp.spectrum.phase_psd` (one-sided, linear trend
  removed per segment, Hann, 50 % overlap) with ``nperseg`` the largest power of two that
  gives at least 8 segments in the window (K = 2 n / nperseg - 1 >= 8), within [64, 65536]:
  the resolution follows the window (1 s at 12.5 kHz pilots: 6.1 Hz bins; 10 s: 0.76 Hz)
  while each bin keeps >= 8 averages. Recomputed at most every ``psd_period_s`` of data
  (default 0.25 s) since it is the costly part of a frame.
* **Constellation**: per node the last ``constellation_points`` (default 2000) received
  quantum symbols y [SNU] (``BandRecord.symbols_snu``), X = Re y, P = Im y.

Units are in the field names; arrays are float64 (int64 for indices) and read-only.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from dsp.spectrum import WelchConfig, WelchState, phase_psd, welch_update
from labctl.isaqn_config import IsaqnConfig
from labctl.isaqn_feed import IsaqnFeed, Record
from labctl.isaqn_pipeline import RecordResult

#: Welch segment of the receiver spectrum [samples]: 2048 at 1 MS/s is 488 Hz per bin, ~100
#: bins across a 62.5 kHz wide band of the simulated bench; 48 segments per 0.1 s record
SPECTRUM_NPERSEG = 2048
#: records in the sliding spectrum average (module docstring)
SPECTRUM_RECORDS = 10
#: default window of the phase trace and its PSD [s]
WINDOW_S = 2.0
#: longest window the view keeps phase history for [s] (memory: 16 bytes per pilot per node,
#: 12 MB per node at 12.5 kHz pilots)
MAX_WINDOW_S = 60.0
#: quantum symbols kept per node for the constellation
CONSTELLATION_POINTS = 2000
#: the phase PSD is recomputed at most every this many seconds of data
PSD_PERIOD_S = 0.25
#: segments the phase PSD aims for in its window, and the bounds of its nperseg
PSD_MIN_SEGMENTS = 8
PSD_NPERSEG_RANGE = (64, 1 << 16)


def _frozen(a: np.ndarray, dtype: type) -> np.ndarray:
    out = np.array(a, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


def _empty() -> np.ndarray:
    return _frozen(np.zeros(0), np.float64)


@dataclass(frozen=True, eq=False)
class NodeFrame:
    """One node in a frame.

    name, carrier_hz, band_lo_hz, band_hi_hz (carrier +- (1 + rolloff) R / 2), x_m, y_m
    (position, config).
    t_s, phase_rad: float64 (n,), the pilot times [s, stream time] and unwrapped pilot phases
    [rad] the feed produced since the previous frame, in order.
    breaks: int64, indices into t_s where a re-synchronised stream starts (phase not
    continuous with the sample before).
    psd_freq_hz, psd_rad2_per_hz: float64, one-sided phase PSD of the last ``psd_window_s``
    of the current stream (empty while too short); ``psd_window_s``: the span it covers
    (samples / pilot rate [s]); ``psd_t_s``: time of its newest phase sample [s].
    constellation_x_snu, constellation_p_snu: float64, the latest quantum symbols [SNU].
    """

    name: str
    carrier_hz: float
    band_lo_hz: float
    band_hi_hz: float
    x_m: float
    y_m: float
    t_s: np.ndarray
    phase_rad: np.ndarray
    breaks: np.ndarray
    psd_freq_hz: np.ndarray
    psd_rad2_per_hz: np.ndarray
    psd_window_s: float
    psd_t_s: float
    constellation_x_snu: np.ndarray
    constellation_p_snu: np.ndarray


@dataclass(frozen=True, eq=False)
class IsaqnFrame:
    """What the ISAQN panels show at one moment.

    t_s: data time analysed so far [s] (end of the last data record; 0 during calibration).
    records: records seen (calibration included); record_kind: kind of the latest record
    ("electronic", "shot", "data"; "" before any).
    spectrum_freq_hz, spectrum_psd_v2_per_hz: float64, the averaged two-sided receiver
    spectrum, fftshifted (increasing frequency); empty before the first complete segment.
    spectrum_averages: Welch segments averaged; spectrum_records: records they came from.
    window_s: the phase window in force; nodes: one :class:`NodeFrame` per node, config order.
    """

    t_s: float
    records: int
    record_kind: str
    spectrum_freq_hz: np.ndarray
    spectrum_psd_v2_per_hz: np.ndarray
    spectrum_averages: int
    spectrum_records: int
    window_s: float
    nodes: tuple[NodeFrame, ...]

    def node(self, name: str) -> NodeFrame:
        """The node called ``name``."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r} in this frame (nodes: {[n.name for n in self.nodes]})")


def band_edges_hz(config: IsaqnConfig) -> list[tuple[float, float]]:
    """(lo, hi) [Hz] of every node's band: carrier +- (1 + rolloff) R / 2."""
    return [
        (
            n.carrier_hz - 0.5 * (1.0 + config.rolloff) * n.symbol_rate_hz,
            n.carrier_hz + 0.5 * (1.0 + config.rolloff) * n.symbol_rate_hz,
        )
        for n in config.nodes
    ]


def psd_nperseg(n_samples: int) -> int:
    """Segment length of the phase PSD of ``n_samples`` (module docstring); 0 if too short."""
    lo, hi = PSD_NPERSEG_RANGE
    # K = 2 n / nperseg - 1 >= PSD_MIN_SEGMENTS  <=>  nperseg <= 2 n / (PSD_MIN_SEGMENTS + 1)
    limit = 2 * n_samples / (PSD_MIN_SEGMENTS + 1)
    if limit < lo:
        return 0
    return int(min(hi, 2 ** math.floor(math.log2(limit))))


class _NodeState:
    """Per node accumulation (guarded by the view's lock)."""

    def __init__(self, history: int, points: int, pilot_spacing_s: float) -> None:
        self.pilot_spacing_s = pilot_spacing_s
        self.last_t_s = math.nan  # newest pilot time seen
        self.new_t: list[np.ndarray] = []
        self.new_p: list[np.ndarray] = []
        self.new_breaks: list[int] = []
        self.n_new = 0
        self.hist_t: deque[np.ndarray] = deque()
        self.hist_p: deque[np.ndarray] = deque()
        self.history = history  # samples of history kept (at least)
        self.hist_n = 0
        self.symbols = np.zeros(points, dtype=np.complex128)
        self.n_symbols = 0  # valid symbols at the end of self.symbols
        self.psd_f: np.ndarray = _empty()
        self.psd_p: np.ndarray = _empty()
        self.psd_window_s = math.nan
        self.psd_t_s = math.nan

    def add_phase(self, t: np.ndarray, p: np.ndarray) -> None:
        if not t.size:
            return
        # a new receiver stream (re-synchronisation; module docstring): its first pilot is
        # not one pilot spacing after the previous one (the receiver drops the filter's
        # start-up symbols, >= 4 pilot periods), or the stream time went back (a replay
        # restarted)
        step = float(t[0]) - self.last_t_s
        self.last_t_s = float(t[-1])
        if math.isfinite(step) and not (0.0 < step < 1.5 * self.pilot_spacing_s):
            self.new_breaks.append(self.n_new)
            self.hist_t.clear()
            self.hist_p.clear()
            self.hist_n = 0
        self.new_t.append(t)
        self.new_p.append(p)
        self.n_new += t.size
        self.hist_t.append(t)
        self.hist_p.append(p)
        self.hist_n += t.size
        while self.hist_t and self.hist_n - self.hist_t[0].size >= self.history:
            self.hist_n -= self.hist_t.popleft().size
            self.hist_p.popleft()

    def add_symbols(self, y: np.ndarray) -> None:
        cap = self.symbols.size
        y = y[-cap:]
        self.symbols = np.roll(self.symbols, -y.size)
        if y.size:
            self.symbols[-y.size :] = y
        self.n_symbols = min(cap, self.n_symbols + y.size)

    def recent(self, window_s: float) -> tuple[np.ndarray, np.ndarray]:
        """The history chunks that cover the last ``window_s`` (concatenated copies)."""
        if not self.hist_t:
            return np.zeros(0), np.zeros(0)
        newest = float(self.hist_t[-1][-1])
        k = len(self.hist_t)
        while k > 0 and self.hist_t[k - 1][0] > newest - window_s:
            k -= 1
        k = max(k - 1, 0) if k else 0
        ts = [self.hist_t[i] for i in range(k, len(self.hist_t))]
        ps = [self.hist_p[i] for i in range(k, len(self.hist_p))]
        return np.concatenate(ts), np.concatenate(ps)

    def take_new(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.concatenate(self.new_t) if self.new_t else np.zeros(0)
        p = np.concatenate(self.new_p) if self.new_p else np.zeros(0)
        b = np.array(self.new_breaks, dtype=np.int64)
        self.new_t, self.new_p, self.new_breaks, self.n_new = [], [], [], 0
        return t, p, b


class IsaqnView:
    """Builds :class:`IsaqnFrame` s from the records an :class:`IsaqnFeed` pushes.

    ``config``: the bench's ``[isaqn]`` section (an :class:`IsaqnConfig`, or a bench config
    with an ``isaqn`` attribute). ``spectrum_nperseg``, ``spectrum_records``,
    ``window_s``, ``constellation_points``, ``psd_period_s``: see the module docstring.

    Threads: :meth:`observe` runs on the feed's pushing thread; :meth:`take_frame` and
    :meth:`set_window_s` may be called from any thread (one lock guards the state; the DSP of
    a record runs outside it).
    """

    def __init__(
        self,
        config: IsaqnConfig | object,
        *,
        spectrum_nperseg: int = SPECTRUM_NPERSEG,
        spectrum_records: int = SPECTRUM_RECORDS,
        window_s: float = WINDOW_S,
        constellation_points: int = CONSTELLATION_POINTS,
        psd_period_s: float = PSD_PERIOD_S,
    ) -> None:
        iq = config if isinstance(config, IsaqnConfig) else getattr(config, "isaqn", None)
        if not isinstance(iq, IsaqnConfig):
            raise ValueError(
                f"IsaqnView: config: expected an IsaqnConfig or a bench config with an [isaqn] "
                f"section, got {type(config).__name__}"
            )
        if int(spectrum_records) < 1:
            raise ValueError(f"spectrum_records: got {spectrum_records!r}, expected >= 1")
        if int(constellation_points) < 1:
            raise ValueError(f"constellation_points: got {constellation_points!r}, expected >= 1")
        if not (math.isfinite(psd_period_s) and psd_period_s >= 0):
            raise ValueError(f"psd_period_s: got {psd_period_s!r}, expected >= 0")
        self.config = iq
        self.spectrum_config = WelchConfig(
            fs_hz=iq.sample_rate_hz,
            nperseg=int(spectrum_nperseg),
            window="hann",
            detrend="constant",
            scaling="density",
            onesided=False,
        )
        self.spectrum_records = int(spectrum_records)
        self.psd_period_s = float(psd_period_s)
        #: pilot rate per node [Hz] (the phase samples' rate)
        self.pilot_rate_hz = tuple(n.symbol_rate_hz / n.pilot_period for n in iq.nodes)
        self._bands = band_edges_hz(iq)
        self._lock = threading.Lock()
        self._window_s = self._checked_window(window_s)
        self._nodes = [
            _NodeState(math.ceil(MAX_WINDOW_S * r) + 1, int(constellation_points), 1.0 / r)
            for r in self.pilot_rate_hz
        ]
        self._spectra: deque[tuple[np.ndarray, int]] = deque()
        self._spectrum_kind = ""
        self._records = 0
        self._t_s = 0.0
        self._kind = ""
        self._frame_records = 0  # records when the last frame was taken
        self._psd_due_t_s = -math.inf

    # -- wiring ----------------------------------------------------------------------------
    def attach(self, feed: IsaqnFeed) -> None:
        """Make :meth:`observe` ``feed``'s observer (a source that needs its own observer
        calls :meth:`observe` from it instead)."""
        feed.observer = self.observe

    @staticmethod
    def _checked_window(window_s: float) -> float:
        try:
            w = float(window_s)
        except (TypeError, ValueError):
            raise ValueError(f"window_s: got {window_s!r}, expected seconds") from None
        if not (math.isfinite(w) and 0.0 < w <= MAX_WINDOW_S):
            raise ValueError(f"window_s: got {window_s!r}, expected 0 < window_s <= {MAX_WINDOW_S}")
        return w

    def set_window_s(self, window_s: float) -> None:
        """Phase PSD window [s] (thread-safe; the next frame's PSD uses it)."""
        w = self._checked_window(window_s)
        with self._lock:
            self._window_s = w
            self._psd_due_t_s = -math.inf  # recompute at the next frame

    @property
    def window_s(self) -> float:
        with self._lock:
            return self._window_s

    # -- worker thread ---------------------------------------------------------------------
    def observe(self, record: Record, result: RecordResult | None) -> None:
        """The feed's observer: one record and what the receiver made of it (None for a
        calibration record)."""
        samples = np.asarray(record.samples)
        state = welch_update(samples, WelchState(), self.spectrum_config)
        contribution = (state.psd_sum, state.n_segments) if state.n_segments else None
        with self._lock:
            self._records += 1
            self._kind = record.kind
            if record.kind != self._spectrum_kind:
                self._spectra.clear()
                self._spectrum_kind = record.kind
            if contribution is not None:
                self._spectra.append(contribution)  # type: ignore[arg-type]
                while len(self._spectra) > self.spectrum_records:
                    self._spectra.popleft()
            if result is None:
                return
            self._t_s = result.t0_s + samples.size / self.config.sample_rate_hz
            for b, band in result.bands.items():
                node = self._nodes[b]
                t = np.asarray(band.pilot_t_s, dtype=np.float64)
                node.add_phase(t, np.asarray(band.pilot_phase_rad, dtype=np.float64))
                node.add_symbols(np.asarray(band.symbols_snu, dtype=np.complex128))

    # -- any thread ------------------------------------------------------------------------
    def take_frame(self) -> IsaqnFrame | None:
        """Everything since the previous call as a frame; None if no record came since."""
        with self._lock:
            if self._records == self._frame_records:
                return None
            self._frame_records = self._records
            spectra = list(self._spectra)
            window_s = self._window_s
            t_s = self._t_s
            new = [n.take_new() for n in self._nodes]
            recompute = t_s >= self._psd_due_t_s
            hist = [n.recent(window_s) for n in self._nodes] if recompute else []
            if recompute:
                self._psd_due_t_s = t_s + self.psd_period_s
            const = [n.symbols[n.symbols.size - n.n_symbols :].copy() for n in self._nodes]
            records, kind = self._records, self._kind
        # DSP outside the lock
        if spectra:
            total = np.sum([s for s, _ in spectra], axis=0)
            count = int(sum(k for _, k in spectra))
            freq = np.fft.fftshift(self.spectrum_config.freqs_hz)
            psd = np.fft.fftshift(total / count)
        else:
            count, freq, psd = 0, np.zeros(0), np.zeros(0)
        nodes = []
        for b, cfg in enumerate(self.config.nodes):
            st = self._nodes[b]
            if recompute:
                f, p, used, end = self._phase_psd(b, *hist[b], window_s)
                with self._lock:
                    st.psd_f, st.psd_p, st.psd_window_s, st.psd_t_s = f, p, used, end
            t_new, p_new, br = new[b]
            lo, hi = self._bands[b]
            nodes.append(
                NodeFrame(
                    name=cfg.name,
                    carrier_hz=float(cfg.carrier_hz),
                    band_lo_hz=float(lo),
                    band_hi_hz=float(hi),
                    x_m=float(cfg.x_m),
                    y_m=float(cfg.y_m),
                    t_s=_frozen(t_new, np.float64),
                    phase_rad=_frozen(p_new, np.float64),
                    breaks=_frozen(br, np.int64),
                    psd_freq_hz=st.psd_f,
                    psd_rad2_per_hz=st.psd_p,
                    psd_window_s=st.psd_window_s,
                    psd_t_s=st.psd_t_s,
                    constellation_x_snu=_frozen(const[b].real, np.float64),
                    constellation_p_snu=_frozen(const[b].imag, np.float64),
                )
            )
        return IsaqnFrame(
            t_s=float(t_s),
            records=int(records),
            record_kind=kind,
            spectrum_freq_hz=_frozen(freq, np.float64),
            spectrum_psd_v2_per_hz=_frozen(psd, np.float64),
            spectrum_averages=count,
            spectrum_records=len(spectra),
            window_s=window_s,
            nodes=tuple(nodes),
        )

    def _phase_psd(
        self, b: int, t: np.ndarray, p: np.ndarray, window_s: float
    ) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(freq_hz, psd_rad2_per_hz, span used [s], newest sample's t_s) of the last
        ``window_s`` of phase samples."""
        if not t.size:
            return _empty(), _empty(), math.nan, math.nan
        sel = t > t[-1] - window_s
        n = int(np.count_nonzero(sel))
        nperseg = psd_nperseg(n)
        if nperseg == 0:
            return _empty(), _empty(), math.nan, float(t[-1])
        f, psd = phase_psd(p[sel], self.pilot_rate_hz[b], nperseg)
        span_s = n / self.pilot_rate_hz[b]
        return _frozen(f, np.float64), _frozen(psd, np.float64), span_s, float(t[-1])
