"""Per-node analysis of the ISAQN receiver's output: what the live display and the recorder show.

:class:`NetworkMonitor` takes each :class:`~labctl.isaqn_pipeline.RecordResult` and keeps, per
node (band):

- **CV-QKD**: the parameter-estimation sums (:class:`dsp.cvqkd.PeSums`) of every record in which
  the band was locked and the pilot tracked (SPM protocol: a node in pilot-only mode sends no
  key), hence T and excess noise with confidence intervals (:func:`dsp.cvqkd.estimate_from_sums`,
  v_el from the calibration) and the asymptotic key rate of physics.md at those estimates. The
  key rate in bit/s counts quantum symbols only: R (P - 1) / P.
- **SPM** (:mod:`dsp.spm`): the band's complex pilots feed an :class:`~dsp.spm.SpmDetector`
  (vibration flag with the bench's false-alarm rate, castdown) and the pilot phase a
  :class:`~dsp.spm.PilotTracking` (pilot-only decision).
- **Phase**: statistics of the unwrapped pilot phase over each update interval (linear trend,
  i.e. the slow drift, removed), its Welch PSD (:func:`dsp.spectrum.phase_psd`), white floor
  and strain resolution over the node's fibre (physics.md section 1).
- **Localisation** (:class:`EventLocator`): the last ``buffer_s`` of every node's phase on a
  common time grid; a vibration burst seen by three or more nodes is timed by cross-correlation
  (:func:`dsp.locate.arrival_times_s`) and located (:func:`dsp.locate.locate_source`, fibre
  delays included).

All of it is streaming: feed records in order; :meth:`NetworkMonitor.status` reports.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy import signal, stats

from dsp.cvqkd import ParameterEstimate, PeSums, estimate_from_sums, key_rate_bits_per_symbol
from dsp.locate import LocationInputError, arrival_times_s, locate_source
from dsp.spectrum import (
    equivalent_averages,
    noise_floor,
    phase_psd,
    phase_psd_config,
    strain_resolution,
)
from dsp.spm import PilotTracking, PilotTrackingConfig, SpmConfig, SpmDetector
from labctl.isaqn_config import IsaqnConfig
from labctl.isaqn_pipeline import IsaqnReceiver, RecordResult
from labctl.isaqn_status import EventLocation, NetworkStatus, NodeStatus

log = logging.getLogger(__name__)

NAN = float("nan")

#: phase PSD segment length [pilots] (bin width f_p / PSD_NPERSEG)
PSD_NPERSEG = 1024
#: SPM bin width aimed at [Hz]: nperseg is the power of two closest to f_p / SPM_BIN_HZ, so the
#: lowest tested frequency (10 bins, see dsp.spm) is ~60 Hz at any pilot rate
SPM_BIN_HZ = 6.0
#: the localisation keeps the pilot phase block-averaged to at most this rate [samples/s]
GRID_HZ = 12_500.0
#: the white phase floor is the median of the PSD between these fractions of the pilot rate
#: (above the vibration band of physics.md and the drift skirt, below the anti-alias edge)
FLOOR_BAND = (0.2, 0.45)


@dataclass(frozen=True)
class LocatorConfig:
    """Event detection and localisation settings.

    band_hz: the vibration band the waveforms are filtered to before timing (zero-phase
    Butterworth band-pass, ``order`` per side): removes the slow drift and the noise above.
    frame_s: frame of the short-time rms; an event is a run of frames whose rms exceeds
    ``threshold`` times the node's median frame rms (its quiet level) and ``min_rms_rad``.
    buffer_s: history kept per node; must hold the largest arrival spread plus the burst.
    """

    band_hz: tuple[float, float] = (10.0, 2000.0)
    order: int = 4
    frame_s: float = 0.02
    threshold: float = 8.0
    min_rms_rad: float = 0.02
    buffer_s: float = 10.0


class EventLocator:
    """Finds vibration bursts common to three or more nodes and locates their source."""

    def __init__(self, config: IsaqnConfig, locator: LocatorConfig | None = None) -> None:
        self.config = config
        self.settings = locator or LocatorConfig()
        nodes = config.nodes
        self.xy_m = np.array([[n.x_m, n.y_m] for n in nodes], dtype=np.float64)
        self.fibre_m = np.array([n.fibre_m for n in nodes], dtype=np.float64)
        self.pilot_rate_hz = float(min(n.symbol_rate_hz / n.pilot_period for n in nodes))
        # largest arrival difference a source anywhere can cause: node-to-node distance over v
        # plus the difference of the nodes' one-way fibre delays to the center
        spans = np.linalg.norm(self.xy_m[:, None, :] - self.xy_m[None, :, :], axis=-1)
        c_fibre = 299_792_458.0 / config.fibre_index
        self.max_spread_s = float(
            spans.max() / config.wave_speed_m_s + np.ptp(self.fibre_m) / c_fibre
        )
        if self.settings.buffer_s < 2.0 * self.max_spread_s + 1.0:
            raise ValueError(
                f"LocatorConfig.buffer_s = {self.settings.buffer_s} s cannot hold an event: the "
                f"nodes' arrival spread reaches {self.max_spread_s:.2f} s (need >= "
                f"{2.0 * self.max_spread_s + 1.0:.2f} s)"
            )
        # pilots averaged in blocks of `decimation` (at most GRID_HZ samples/s are kept)
        self.decimation = max(1, int(self.pilot_rate_hz // GRID_HZ))
        self.grid_hz = self.pilot_rate_hz / self.decimation
        lo, hi = self.settings.band_hz
        hi = min(hi, 0.45 * self.grid_hz)
        self.sos = signal.butter(
            self.settings.order, (lo, hi), btype="bandpass", fs=self.grid_hz, output="sos"
        )
        self.times: list[deque[np.ndarray]] = [deque() for _ in nodes]
        self.phases: list[deque[np.ndarray]] = [deque() for _ in nodes]
        self._carry_t: list[np.ndarray] = [np.zeros(0) for _ in nodes]
        self._carry_p: list[np.ndarray] = [np.zeros(0) for _ in nodes]
        self.last_event_end_s = -math.inf
        self.located: list[EventLocation] = []

    def reset(self) -> None:
        """Forget the history (a re-synchronised stream has a phase jump)."""
        for d in (*self.times, *self.phases):
            d.clear()
        self._carry_t = [np.zeros(0) for _ in self._carry_t]
        self._carry_p = [np.zeros(0) for _ in self._carry_p]

    def update(self, result: RecordResult) -> None:
        """Append a record's pilot phases (block-averaged to the grid rate)."""
        for b, band in result.bands.items():
            t = np.concatenate([self._carry_t[b], band.pilot_t_s])
            p = np.concatenate([self._carry_p[b], band.pilot_phase_rad])
            n = t.size // self.decimation * self.decimation
            self._carry_t[b], self._carry_p[b] = t[n:], p[n:]
            if n:
                self.times[b].append(t[:n].reshape(-1, self.decimation).mean(axis=1))
                self.phases[b].append(p[:n].reshape(-1, self.decimation).mean(axis=1))
        self._trim()

    def _trim(self) -> None:
        newest = max((t[-1][-1] for t in self.times if t), default=None)
        if newest is None:
            return
        for t, p in zip(self.times, self.phases, strict=True):
            while t and t[0][-1] < newest - self.settings.buffer_s:
                t.popleft()
                p.popleft()

    def _grid(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Every node's phase on one grid over the common span, band-passed: (t, (N, n))."""
        if any(not t for t in self.times):
            return None
        start = max(t[0][0] for t in self.times)
        stop = min(t[-1][-1] for t in self.times)
        n = int((stop - start) * self.grid_hz)
        min_len = 2 * int(self.max_spread_s * self.grid_hz) + 64
        if n < max(min_len, 18 * self.settings.order):
            return None
        t = start + np.arange(n) / self.grid_hz
        rows = np.empty((len(self.times), n), dtype=np.float64)
        for k, (tk, pk) in enumerate(zip(self.times, self.phases, strict=True)):
            rows[k] = np.interp(t, np.concatenate(tk), np.concatenate(pk))
        return t, signal.sosfiltfilt(self.sos, rows, axis=1)

    def find_event(self) -> EventLocation | None:
        """A burst seen by three or more nodes, complete in the buffer and not yet reported,
        located; None otherwise. Call it every update interval, not every record."""
        grid = self._grid()
        if grid is None:
            return None
        t, rows = grid
        frame = max(int(self.settings.frame_s * self.grid_hz), 1)
        n_frames = rows.shape[1] // frame
        rms = np.sqrt(
            np.mean(rows[:, : n_frames * frame].reshape(len(rows), n_frames, frame) ** 2, axis=2)
        )
        quiet = np.median(rms, axis=1, keepdims=True)
        active = (rms > self.settings.threshold * quiet) & (rms > self.settings.min_rms_rad)
        # the zero-phase filter rings at the buffer's ends (a slow phase cut off mid-swing)
        edge = math.ceil(3.0 / self.settings.band_hz[0] / self.settings.frame_s)
        active[:, :edge] = False
        active[:, n_frames - edge :] = False
        onsets: dict[int, tuple[int, int]] = {}
        for k in range(len(rows)):
            idx = np.flatnonzero(active[k])
            idx = idx[t[idx * frame] > self.last_event_end_s]
            if idx.size:
                onsets[k] = (int(idx[0]), int(idx[-1]))
        if len(onsets) < 3:
            return None
        first = min(a for a, _ in onsets.values())
        last = max(b for _, b in onsets.values())
        # wait until the burst is over at every node (one quiet spread after the last frame)
        margin = int(self.max_spread_s * self.grid_hz) // frame + 2
        if last + margin >= n_frames:
            return None
        members = [
            k
            for k, (a, _) in onsets.items()
            if (a - first) * frame <= self.max_spread_s * self.grid_hz + frame
        ]
        if len(members) < 3:
            return None
        pad = int(self.max_spread_s * self.grid_hz) + frame
        lo = max(first * frame - pad, 0)
        hi = min((last + 1) * frame + pad, rows.shape[1])
        self.last_event_end_s = float(t[min((last + 1) * frame, len(t) - 1)])
        segment = rows[members, lo:hi]
        try:
            rel = arrival_times_s(segment, self.grid_hz, max_lag_s=self.max_spread_s)
            loc = locate_source(
                self.xy_m[members],
                rel,
                self.config.wave_speed_m_s,
                fibre_m=self.fibre_m[members],
                fibre_index=self.config.fibre_index,
            )
        except (LocationInputError, ValueError) as exc:
            log.warning(
                "a burst on %s at t = %.3f s could not be located: %s",
                ", ".join(self.config.nodes[k].name for k in members),
                float(t[first * frame]),
                exc,
            )
            return None
        event = EventLocation(
            t_s=float(t[first * frame]),
            x_m=float(loc.x_m),
            y_m=float(loc.y_m),
            sigma_x_m=float(loc.sigma_x_m),
            sigma_y_m=float(loc.sigma_y_m),
            rms_residual_s=float(loc.rms_residual_s),
            nodes=tuple(self.config.nodes[k].name for k in members),
            arrival_s=tuple(float(r) for r in rel),
            ambiguous=bool(loc.ambiguous),
        )
        self.located.append(event)
        return event


@dataclass
class _NodeTrack:
    pe: PeSums
    phases: list[np.ndarray]
    band_power: list[float]
    pilot_power: list[float]
    locked: bool = True
    castdown_db: float = 0.0
    vibration_freq_hz: float = NAN
    last_phase_rad: float = NAN
    floor_rad2_per_hz: float = NAN


class NetworkMonitor:
    """Streams the receiver's results into per-node figures (see the module docstring)."""

    def __init__(
        self,
        config: IsaqnConfig,
        receiver: IsaqnReceiver,
        *,
        wavelength_m: float = 1550e-9,
        spm: SpmConfig | None = None,
        locator: LocatorConfig | None = None,
    ) -> None:
        self.config = config
        self.receiver = receiver
        self.wavelength_m = float(wavelength_m)
        nodes = config.nodes
        pilot_rates = {n.symbol_rate_hz / n.pilot_period for n in nodes}
        if len(pilot_rates) != 1:
            raise ValueError(f"all nodes must share one pilot rate, got {sorted(pilot_rates)} Hz")
        self.pilot_rate_hz = pilot_rates.pop()
        self.spm_config = spm or SpmConfig(
            pilot_rate_hz=self.pilot_rate_hz,
            nperseg=2 ** max(6, round(math.log2(self.pilot_rate_hz / SPM_BIN_HZ))),
            false_alarm_probability=config.spm_false_alarm,
        )
        self.spm = SpmDetector(self.spm_config, len(nodes))
        self.tracking = PilotTracking(PilotTrackingConfig(self.pilot_rate_hz), len(nodes))
        self.locator = EventLocator(config, locator)
        self.psd_config = phase_psd_config(self.pilot_rate_hz, PSD_NPERSEG)
        self.location: EventLocation | None = None
        self.records = 0
        self.t_end_s = 0.0
        self.tracks = [self._new_track() for _ in nodes]

    @staticmethod
    def _new_track() -> _NodeTrack:
        return _NodeTrack(PeSums(), [], [], [])

    def reset_streams(self) -> None:
        """A re-synchronised stream: restart what depends on phase continuity."""
        self.spm.reset()
        self.tracking.reset()
        self.locator.reset()

    def update(self, result: RecordResult) -> None:
        self.records += 1
        pilots = {b: r.pilots_snu for b, r in result.bands.items()}
        decisions = self.spm.update(pilots)
        self.tracking.update({b: r.pilot_phase_rad for b, r in result.bands.items()})
        for b, r in result.bands.items():
            tr = self.tracks[b]
            tr.locked = r.locked
            if r.locked and not self.tracking.pilot_only[b]:
                tr.pe = tr.pe + r.pe
            tr.phases.append(r.pilot_phase_rad)
            tr.band_power.append(r.band_power_snu)
            tr.pilot_power.append(r.pilot_power_snu)
            if r.pilot_phase_rad.size:
                tr.last_phase_rad = float(r.pilot_phase_rad[-1])
                self.t_end_s = max(self.t_end_s, float(r.pilot_t_s[-1]))
            if decisions.get(b):
                last = decisions[b][-1]
                tr.castdown_db = last.castdown_db
                tr.vibration_freq_hz = last.vibration_frequency_hz if last.detected else NAN
        self.locator.update(result)

    # -- reporting ---------------------------------------------------------------------
    def status(self, *, overloads: int = 0, messages: tuple[str, ...] = ()) -> NetworkStatus:
        """Figures since the previous status (phase, powers) and since the start (CV-QKD)."""
        found = self.locator.find_event()
        if found is not None:
            self.location = found
        nodes = tuple(self._node_status(b) for b in range(len(self.tracks)))
        for tr in self.tracks:
            tr.phases.clear()
            tr.band_power.clear()
            tr.pilot_power.clear()
        return NetworkStatus(
            t_s=self.t_end_s,
            records=self.records,
            overloads=overloads,
            nodes=nodes,
            location=self.location,
            messages=messages,
        )

    def _phase_figures(self, tr: _NodeTrack) -> tuple[float, float, float]:
        phase = np.concatenate(tr.phases) if tr.phases else np.zeros(0)
        if phase.size < 3:
            return NAN, NAN, NAN
        detrended = signal.detrend(phase, type="linear")
        rms = float(np.sqrt(np.mean(detrended**2)))
        p2p = float(np.ptp(detrended))
        slope = float(np.max(np.abs(np.diff(phase))) * self.pilot_rate_hz)
        if phase.size >= 2 * PSD_NPERSEG:
            f, psd = phase_psd(phase, self.pilot_rate_hz, PSD_NPERSEG)
            segments = (phase.size - PSD_NPERSEG) // (PSD_NPERSEG // 2) + 1
            tr.floor_rad2_per_hz = noise_floor(
                f,
                psd,
                FLOOR_BAND[0] * self.pilot_rate_hz,
                FLOOR_BAND[1] * self.pilot_rate_hz,
                equivalent_averages(self.psd_config, segments),
            )
        return rms, p2p, slope

    def _node_status(self, b: int) -> NodeStatus:
        node = self.config.nodes[b]
        tr = self.tracks[b]
        rms, p2p, slope = self._phase_figures(tr)
        cal = self.receiver.calibration[b] if self.receiver.calibration else None
        v_el = cal.v_el_snu if cal is not None else NAN
        t_hat, t_ci, xi, xi_ci, k_bits = NAN, (NAN, NAN), NAN, (NAN, NAN), NAN
        if cal is not None and tr.pe.n_symbols >= 1000:
            try:
                est = estimate_from_sums(tr.pe, self.config.eta, max(cal.v_el_snu, 0.0))
            except ValueError:
                est = None
            if est is not None:
                t_hat, t_ci = est.transmittance, est.transmittance_ci
                xi, xi_ci = est.xi_snu, _xi_interval(est, cal.n0_rel_se)
                k_bits = key_rate(node.va_snu, est.transmittance, est.xi_snu, self.config, v_el)
        quantum_rate_hz = node.symbol_rate_hz * (node.pilot_period - 1) / node.pilot_period
        floor = tr.floor_rad2_per_hz
        strain = (
            strain_resolution(floor, self.wavelength_m, node.fibre_m)
            if math.isfinite(floor)
            else NAN
        )
        return NodeStatus(
            name=node.name,
            locked=tr.locked,
            band_power_snu=_mean(tr.band_power),
            pilot_power_snu=_mean(tr.pilot_power),
            castdown_db=tr.castdown_db,
            vibrating=bool(self.spm.vibrating[b]),
            vibration_freq_hz=tr.vibration_freq_hz,
            pilot_only=bool(self.tracking.pilot_only[b]),
            phase_rad=tr.last_phase_rad,
            phase_rms_rad=rms,
            phase_peak_to_peak_rad=p2p,
            phase_max_slope_rad_per_s=slope,
            phase_floor_rad2_per_hz=floor,
            strain_resolution_per_rthz=strain,
            transmittance=t_hat,
            transmittance_ci=(float(t_ci[0]), float(t_ci[1])),
            xi_snu=xi,
            xi_ci_snu=(float(xi_ci[0]), float(xi_ci[1])),
            n_symbols=tr.pe.n_symbols,
            v_el_snu=v_el,
            key_rate_bits_per_symbol=k_bits,
            skr_bps=k_bits * quantum_rate_hz if math.isfinite(k_bits) else NAN,
        )


def key_rate(va_snu: float, t: float, xi_snu: float, config: IsaqnConfig, v_el: float) -> float:
    """Asymptotic key rate [bit/symbol] at the estimates; an estimate outside the model's
    domain (T > 1 or xi < 0 by fluctuation) is clipped to it, as the formula needs."""
    t_c = min(max(t, 1e-12), 1.0)
    xi_c = max(xi_snu, 0.0)
    return key_rate_bits_per_symbol(va_snu, t_c, xi_c, config.eta, max(v_el, 0.0), config.beta)


def _xi_interval(est: ParameterEstimate, n0_rel_se: float) -> tuple[float, float]:
    """Confidence interval of xi with the shot-noise calibration's uncertainty included.

    A relative error e of N0 scales every normalised variance by (1 - e): the noise variance
    s2 by s2 e, hence xi by s2 e / t^2 (the gain's share cancels to first order in the
    estimator's difference); added in quadrature to the estimator's own standard error.
    """
    z = float(stats.norm.ppf(0.5 + 0.5 * est.confidence))
    cal_se = est.noise_var_snu * n0_rel_se / est.gain**2
    se = math.hypot(est.xi_se_snu, cal_se)
    return est.xi_snu - z * se, est.xi_snu + z * se


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else NAN
