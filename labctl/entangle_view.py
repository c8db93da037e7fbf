"""What the dashboard's entanglement panels draw, built on the data source's worker thread.

:class:`EntanglementView` is called once per :class:`~labctl.entangle_status.EntanglementStatus`
(``on_status(feed, status)``), on the thread that pushed the data: live, the job's status sink;
in replay, ``replay_file``'s ``sink`` with the feed ``observe`` handed over. It reads the feed's
coincidence engine and keeps the loops' history, and returns a frozen
:class:`EntanglementFrame` of numpy arrays (explicit dtypes, units in the names) the GUI only
has to hand to its plots (``gui/entangle_panels.py``, ``gui/control_panels.py``).

Per user pair (:class:`PairHistogram`): the histogram of t_b - t_a, cumulative since the run
started and since the previous update (int64 counts, bin centres in ps), the coincidence window
(centre: the pair's central Franson peak as the status reports it, width ``window_ps``; the
bins actually summed, as :func:`dsp.coincidence.window_counts` picks them) and the off-peak
windows the monitor averages for the accidentals (:func:`dsp.coincidence.accidentals_offpeak`:
windows of the same bins tiled across the histogram, those within the guard band of the peak
left out; the guard is the monitor's: ``interferometer_delay_ps + window_ps + 300 ps``).

Per loop (:class:`LoopSeries`): setpoint, measurement and output at every update (data time of
the status), its state and fault. One sample per update: the dashboard shows minutes to hours
of a loop, the loops themselves tick at 5-10 Hz.

Drift forecast of the phase locks (physics.md section 4). What the entanglement job measures
and corrects is each user's interferometer phase: its ``phase_lock`` loop reads the phase on
the reference light and drives the phase shifter so that the phase stays on the setpoint the
Franson scan moves. The drift the lock cancels, the interferometer's *free-running* phase, is
the measured phase minus the shifter's part::

    free_phase_rad = measurement_rad - 2 pi output_v / volts_per_2pi + step_rad   (unwrapped)
    step_rad = wrap(effective_setpoint_rad - (measurement_rad + error_rad))

(the simulated bench's phase is ``offset + 2 pi V / volts_per_2pi + drift``,
``drivers/sim/pairsource.py``). It is what a predictor forecasts so that the lock can feed the
drift forward. ``step_rad`` is the setpoint step the Franson scan commanded since the loop's last
tick (``measurement + error`` is the setpoint at that tick): the step's feed-forward is already
in the output (:meth:`labctl.loop_runner.LoopRunner.step_setpoint`) while the measurement is
still the one before it (seen on the shipped bench: a 2 pi / 9 jump at every other update
without this term). What remains is one PID step between the output the measurement saw and
the one computed from it, |kp e + ki e dt|, small while the loop holds its setpoint.

Predictor: :class:`models.predictors.KalmanPredictor` (constant-velocity Kalman filter, noise
intensities from :class:`models.drift.DriftParams`, ``tick_s`` = the status interval
``update_s``). :data:`models.base.DEFAULT_PREDICTOR` (ARX) needs telemetry an
:class:`EntanglementStatus` does not carry: the lab-air temperature and the accelerometer of
:data:`models.drift.TELEMETRY_NAMES` (it has the pump power only), and a fitted model; so the
view runs Kalman (or ``persistence``, the baseline, on request). One predictor step per
update; each update keeps the forecast made ``horizon_ticks`` updates earlier for the phase
measured now, and the running RMS of measured - forecast over the whole run (not only the
history kept). A stale reading (the loop did not tick since the previous status, or it is not
running) enters the predictor as NaN (no measurement: it only propagates).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dsp.coincidence import window_counts
from labctl.bench_control import LoopRow
from labctl.config import BenchConfig
from labctl.entangle_config import EntanglementConfig
from labctl.entangle_feed import EntanglementFeed
from labctl.entangle_status import EntanglementStatus
from models.base import DriftPredictor
from models.predictors import KalmanPredictor, PersistencePredictor

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
TWO_PI = 2.0 * math.pi
#: the monitor's guard band beyond the side peaks and the window, ps
#: (:meth:`labctl.entangle_monitor.EntanglementMonitor.status_rows`)
GUARD_EXTRA_PS = 300.0
#: predictors the view can run on the phase alone (no telemetry in a status)
PHASE_ONLY_PREDICTORS = ("kalman", "persistence")
#: updates of loop history kept (1 h at the shipped bench's update_s = 1 s)
DEFAULT_HISTORY_TICKS = 3600


@dataclass(frozen=True)
class PairHistogram:
    """Coincidence histogram of one user pair (t_b - t_a) and its windows."""

    user_a: str
    user_b: str
    channel_a: int
    channel_b: int
    bin_centers_ps: F64  #: (n_bins,) float64
    bin_width_ps: float
    counts_total: I64  #: (n_bins,) int64, since the run started
    counts_interval: I64  #: (n_bins,) int64, since the previous update
    delay_ps: float  #: central Franson peak (nan until the monitor finds it)
    #: coincidence window actually summed, [lo, hi) on bin edges (nan without a peak)
    window_lo_ps: float
    window_hi_ps: float
    #: side peaks of the unbalanced interferometers, delay -+ interferometer_delay_ps
    side_peaks_ps: tuple[float, float]
    #: off-peak accidental windows, float64 (n, 2) of [lo, hi) (empty without a peak)
    accidental_windows_ps: F64

    @property
    def name(self) -> str:
        return f"{self.user_a}-{self.user_b}"


@dataclass(frozen=True)
class LoopSeries:
    """One loop's history (one sample per update) and, for a phase lock, its drift forecast.

    Arrays are float64 (n,), aligned with ``time_s``; values in ``units`` (measurement,
    output). ``free_phase_rad`` / ``forecast_rad`` / ``forecast_std_rad`` are empty except for
    ``phase_lock`` loops (module docstring)."""

    name: str
    kind: str
    units: tuple[str, str]
    time_s: F64  #: data time of each update, s
    setpoint: F64
    effective_setpoint: F64  #: the ramped setpoint the PID follows
    measurement: F64
    output: F64
    state: str
    fault_reason: str | None
    free_phase_rad: F64
    #: forecast of free_phase_rad made horizon_ticks updates earlier (nan before one exists)
    forecast_rad: F64
    forecast_std_rad: F64  #: the predictor's own 1-sigma of that forecast
    forecast_rms_rad: float  #: RMS of free_phase - forecast over the run (nan: none yet)
    forecast_count: int  #: updates that entered forecast_rms_rad

    @property
    def is_phase(self) -> bool:
        return self.kind == "phase_lock"


@dataclass(frozen=True)
class EntanglementFrame:
    """Everything the entanglement and loops panels draw for one update."""

    update: int  #: 0 for the first status the view saw
    time_s: float  #: data time of the status, s
    interval_s: float  #: data the interval histograms cover, s
    pairs: tuple[PairHistogram, ...]
    loops: tuple[LoopSeries, ...]
    predictor: str  #: registry name of the drift predictor (models.base.PREDICTORS)
    horizon_ticks: int  #: forecast horizon, updates
    tick_s: float  #: update period the predictor assumes, s


def make_phase_predictor(name: str, horizon_ticks: int, tick_s: float) -> DriftPredictor:
    """A predictor that needs the phase only (see the module docstring for why not ARX)."""
    if name == "kalman":
        return KalmanPredictor((horizon_ticks,), tick_s=tick_s)
    if name == "persistence":
        return PersistencePredictor((horizon_ticks,))
    raise ValueError(
        f"predictor {name!r}: the dashboard runs {', '.join(PHASE_ONLY_PREDICTORS)} (an "
        "entanglement status carries no lab-air temperature nor accelerometer telemetry)"
    )


class _LoopTrack:
    """History and predictor state of one loop."""

    def __init__(self, row: LoopRow, history: int, predictor: DriftPredictor | None) -> None:
        self.name, self.kind, self.units = row.name, row.kind, row.units
        self.columns: dict[str, deque[float]] = {
            k: deque(maxlen=history)
            for k in (
                "time_s",
                "setpoint",
                "effective_setpoint",
                "measurement",
                "output",
                "free_phase_rad",
                "forecast_rad",
                "forecast_std_rad",
            )
        }
        self.predictor = predictor
        self.state = row.status.state
        self.fault: str | None = row.status.fault_reason
        self.last_ticks: int | None = None
        self.last_free: float = math.nan
        #: forecasts made at the recent updates for horizon ticks later: (value, std)
        self.pending: deque[tuple[float, float]] = deque()
        self.sq_sum = 0.0
        self.count = 0

    def add(self, time_s: float, row: LoopRow, rad_per_v: float | None, horizon: int) -> None:
        s = row.status
        c = self.columns
        c["time_s"].append(time_s)
        c["setpoint"].append(s.setpoint)
        c["effective_setpoint"].append(s.effective_setpoint)
        c["measurement"].append(s.measurement)
        c["output"].append(s.output)
        self.state, self.fault = s.state, s.fault_reason
        fresh = s.ticks != self.last_ticks and s.state == "running"
        self.last_ticks = s.ticks
        if self.predictor is None or rad_per_v is None:
            return
        free = math.nan
        step = math.remainder(s.effective_setpoint - (s.measurement + s.error), TWO_PI)
        raw = s.measurement - rad_per_v * s.output + step
        if fresh and math.isfinite(raw):
            ref = self.last_free if math.isfinite(self.last_free) else raw
            free = raw + TWO_PI * round((ref - raw) / TWO_PI)  # nearest to the last: unwrapped
            self.last_free = free
        forecast, std = self.pending.popleft() if len(self.pending) >= horizon else (math.nan,) * 2
        c["free_phase_rad"].append(free)
        c["forecast_rad"].append(forecast)
        c["forecast_std_rad"].append(std)
        if math.isfinite(free) and math.isfinite(forecast):
            self.sq_sum += (free - forecast) ** 2
            self.count += 1
        predicted = self.predictor.step(free, np.empty(0, np.float64))
        self.pending.append((float(predicted[0]), float(self.predictor.predicted_std_rad()[0])))

    def series(self) -> LoopSeries:
        def arr(key: str) -> F64:
            return np.fromiter(self.columns[key], np.float64, len(self.columns[key]))

        return LoopSeries(
            name=self.name,
            kind=self.kind,
            units=self.units,
            time_s=arr("time_s"),
            setpoint=arr("setpoint"),
            effective_setpoint=arr("effective_setpoint"),
            measurement=arr("measurement"),
            output=arr("output"),
            state=self.state,
            fault_reason=self.fault,
            free_phase_rad=arr("free_phase_rad"),
            forecast_rad=arr("forecast_rad"),
            forecast_std_rad=arr("forecast_std_rad"),
            forecast_rms_rad=math.sqrt(self.sq_sum / self.count) if self.count else math.nan,
            forecast_count=self.count,
        )


class EntanglementView:
    """Frames for the entanglement dashboard (module docstring).

    ``config``: the bench file (live: the job's; replay: the recording's ``capture.config``).
    ``predictor``: ``"kalman"`` (default) or ``"persistence"``; ``horizon_ticks``: forecast
    horizon in updates; ``history_ticks``: updates of loop history in each frame.
    Not thread-safe: call :meth:`on_status` from one thread (the data source's worker).
    """

    def __init__(
        self,
        config: BenchConfig,
        *,
        predictor: str = "kalman",
        horizon_ticks: int = 1,
        history_ticks: int = DEFAULT_HISTORY_TICKS,
    ) -> None:
        if config.entanglement is None:
            raise ValueError(f"{config.path}: EntanglementView needs an [entanglement] section")
        if int(horizon_ticks) < 1 or int(horizon_ticks) != horizon_ticks:
            raise ValueError(f"horizon_ticks: got {horizon_ticks!r}, expected an integer >= 1")
        if int(history_ticks) < 1:
            raise ValueError(f"history_ticks: got {history_ticks!r}, expected >= 1")
        self.ent: EntanglementConfig = config.entanglement
        self.predictor_name = predictor
        self.horizon_ticks = int(horizon_ticks)
        self.history_ticks = int(history_ticks)
        self.tick_s = float(self.ent.update_s)
        make_phase_predictor(predictor, self.horizon_ticks, self.tick_s)  # fail early
        #: loop name -> rad per volt of its phase shifter (phase locks)
        self.rad_per_v = {
            c.name: TWO_PI / c.volts_per_2pi
            for c in config.loops
            if c.kind == "phase_lock" and c.volts_per_2pi
        }
        self.updates = 0
        self._previous: I64 | None = None
        self._tracks: dict[str, _LoopTrack] = {}

    def on_status(self, feed: EntanglementFeed, status: EntanglementStatus) -> EntanglementFrame:
        """The frame of ``status``, read from ``feed`` right after the push that produced it."""
        pairs = self._histograms(feed, status)
        loops = self._loops(status.time_s, status.loops)
        frame = EntanglementFrame(
            update=self.updates,
            time_s=float(status.time_s),
            interval_s=float(status.interval_s),
            pairs=pairs,
            loops=loops,
            predictor=self.predictor_name,
            horizon_ticks=self.horizon_ticks,
            tick_s=self.tick_s,
        )
        self.updates += 1
        return frame

    # -- histograms ------------------------------------------------------------------------------
    def _histograms(
        self, feed: EntanglementFeed, status: EntanglementStatus
    ) -> tuple[PairHistogram, ...]:
        mon = feed.monitor
        counts = mon.counts
        total = counts.hist.copy()
        if len(status.pairs) != total.shape[0]:
            raise ValueError(
                f"status has {len(status.pairs)} pairs, the feed's monitor {total.shape[0]}: "
                "the view was given a feed of another bench"
            )
        prev = self._previous if self._previous is not None else np.zeros_like(total)
        interval = total - prev
        self._previous = total
        cfg = mon.coinc
        bin_ps = float(cfg.bin_ps)
        guard = self.ent.interferometer_delay_ps + self.ent.window_ps + GUARD_EXTRA_PS
        out = []
        for p, row in enumerate(status.pairs):
            lo0 = cfg.lo_ps[p]
            centers = lo0 + bin_ps * (np.arange(cfg.n_bins, dtype=np.float64) + 0.5)
            delay = float(row.delay_ps)
            w_lo = w_hi = math.nan
            acc = np.empty((0, 2), np.float64)
            if math.isfinite(delay):
                win = window_counts(counts, mon.pairs[p], delay, self.ent.window_ps)
                w_lo, w_hi = float(win.lo_ps), float(win.hi_ps)
                m = win.n_bins  # the tiling of dsp.coincidence.accidentals_offpeak
                starts = np.arange(win.first_bin % m, cfg.n_bins - m + 1, m, dtype=np.int64)
                lo = lo0 + starts * cfg.bin_ps
                hi = lo + m * cfg.bin_ps
                off = (hi <= win.lo_ps - guard) | (lo >= win.hi_ps + guard)
                acc = np.stack([lo[off], hi[off]], axis=1).astype(np.float64)
            dt = self.ent.interferometer_delay_ps
            out.append(
                PairHistogram(
                    user_a=row.user_a,
                    user_b=row.user_b,
                    channel_a=row.channel_a,
                    channel_b=row.channel_b,
                    bin_centers_ps=centers,
                    bin_width_ps=bin_ps,
                    counts_total=total[p],
                    counts_interval=interval[p],
                    delay_ps=delay,
                    window_lo_ps=w_lo,
                    window_hi_ps=w_hi,
                    side_peaks_ps=(delay - dt, delay + dt),
                    accidental_windows_ps=acc,
                )
            )
        return tuple(out)

    # -- loops -----------------------------------------------------------------------------------
    def _loops(self, time_s: float, rows: Sequence[LoopRow]) -> tuple[LoopSeries, ...]:
        for row in rows:
            track = self._tracks.get(row.name)
            if track is None:
                phase = row.kind == "phase_lock" and row.name in self.rad_per_v
                predictor = (
                    make_phase_predictor(self.predictor_name, self.horizon_ticks, self.tick_s)
                    if phase
                    else None
                )
                track = _LoopTrack(row, self.history_ticks, predictor)
                self._tracks[row.name] = track
            track.add(float(time_s), row, self.rad_per_v.get(row.name), self.horizon_ticks)
        return tuple(t.series() for t in self._tracks.values())
