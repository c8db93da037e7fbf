"""Per user pair analysis of the merged tag stream: singles, coincidences, CAR, Franson scans.

:class:`EntanglementMonitor` feeds every :class:`~labctl.entangle_stream.StreamChunk` to
:func:`dsp.coincidence.coincidence_process` (one N x N pass: a histogram of +-``max_delay_ps``
for every correlated channel pair shared by two users) and keeps snapshots of the cumulative
counts at the times the job asks for:

- *status*: rates over the interval since the previous status (singles, coincidences in the
  central window, off-peak accidentals, CAR), the delay of each pair's central Franson peak
  from the whole run, and the key rate;
- *scan steps*: the job sets every user's interferometer phase, tells the monitor from which
  stream time the setting holds (``begin_step``) and until when (``end_step``); the counts in
  between are kept per step. When a scan's last step ends, each pair's central-window counts
  against its phase sum alpha + beta are fitted with :func:`dsp.entanglement.fit_visibility`
  (raw visibility, free phase offset: the interferometers' unknown offsets and drifts).

Delay of the central peak: unbalanced interferometers make three peaks, at d and d +- dT
(``interferometer_delay_ps``), and the central one vanishes when the phase sum is near pi. The
delay is the centre of the triple h(t - dT) + h(t) + h(t + dT), which is largest at d
whatever the phases. Accidentals come from off-peak windows beyond the side peaks.

QBER: one fringe per pair gives one visibility; QBER_Z (phases 0/pi) and QBER_X (pi/2, 3pi/2)
are both (1 - V) / 2 of that fringe. Sifted rate = ``sifting`` (bases match half of the time in
BBM92) x the fringe's mean central-window rate C0 / ``step_s`` (phase-averaged, so it does not
swing with the scan); key rate per physics.md with f = ``ec_efficiency``. The live CAR and
coincidence rate are those of the last status interval, so they follow the scan's phase.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dsp.coincidence import (
    CarResult,
    CoincidenceConfig,
    CoincidenceCounts,
    CoincidenceState,
    car,
    coincidence_process,
    window_counts,
)
from dsp.entanglement import VisibilityFit, bbm92_key_rate_bps, fit_visibility
from labctl.entangle_config import EntanglementConfig, LinkConfig
from labctl.entangle_status import PairStatus
from labctl.entangle_stream import StreamChunk

I64 = npt.NDArray[np.int64]
PS_PER_S = 1e12
#: fits of the most recent scans averaged into a pair's visibility
KEEP_SCANS = 5


@dataclass(frozen=True)
class _Snapshot:
    time_ps: int
    hist: I64
    singles: I64
    live_ps: int


@dataclass
class _Step:
    phases_rad: dict[str, float]
    start_ps: int
    end_ps: int | None = None
    start_snap: _Snapshot | None = None
    hist: I64 | None = None  # counts of the step (end - start)
    last: bool = False  # the scan's last step


class EntanglementMonitor:
    """Coincidence engine, status intervals and phase scans of one entanglement network."""

    def __init__(self, config: EntanglementConfig) -> None:
        self.config = config
        self.links: tuple[LinkConfig, ...] = config.links()
        self.ids = {c.label: k for k, c in enumerate(config.channels)}
        self.pairs = [(self.ids[k.channel_a], self.ids[k.channel_b]) for k in self.links]
        self.coinc = CoincidenceConfig.create(
            self.pairs, bin_ps=config.bin_ps, half_range_ps=config.max_delay_ps
        )
        self.state = CoincidenceState.initial(self.coinc)
        self.counts: CoincidenceCounts = self.state.counts
        self.horizon_ps: int | None = None
        self.start_ps: int | None = None
        self._last_status: _Snapshot | None = None
        self._steps: list[_Step] = []
        self._scan: list[_Step] = []
        self.fits: list[list[VisibilityFit]] = [[] for _ in self.links]
        self.scans_done = 0

    # -- stream ------------------------------------------------------------------------------
    def push(self, chunk: StreamChunk) -> None:
        """Add merged tags; snapshot at every step boundary the chunk passes."""
        t, c = chunk.timestamp_ps, chunk.channel
        dead = chunk.dead_ps
        while True:  # a step may start and end within one chunk: look again after each
            due = [b for b in self._pending_boundaries() if b <= chunk.horizon_ps]
            if not due:
                break
            boundary = min(due)
            k = int(np.searchsorted(t, boundary, side="left"))
            self._process(t[:k], c[:k], dead, boundary)
            dead = dead[:0]
            t, c = t[k:], c[k:]
            self._snap_steps(boundary)
        self._process(t, c, dead, chunk.horizon_ps)

    def _process(self, t: I64, c: npt.NDArray[np.uint8], dead: I64, horizon: int) -> None:
        last = self.state.last_ps
        if dead.size and last is not None:
            dead = dead[dead[:, 1] > last + 1]
            dead[:, 0] = np.maximum(dead[:, 0], last + 1)
        if self.horizon_ps is not None:
            horizon = max(horizon, self.horizon_ps)
        self.counts, self.state = coincidence_process(
            t, c, self.state, self.coinc, dead_ps=dead if dead.size else None, horizon_ps=horizon
        )
        self.horizon_ps = horizon
        if self.start_ps is None:
            self.start_ps = self.counts.start_ps

    def _snapshot(self, time_ps: int) -> _Snapshot:
        return _Snapshot(
            time_ps, self.counts.hist.copy(), self.counts.singles.copy(), self.counts.live_time_ps
        )

    # -- scans -------------------------------------------------------------------------------
    def begin_step(self, start_ps: int, phases_rad: Mapping[str, float]) -> None:
        """From stream time ``start_ps`` the users' phases are ``phases_rad`` (commanded)."""
        if self._steps and self._steps[-1].end_ps is None:
            raise RuntimeError("begin_step: the previous step has not ended")
        self._steps.append(_Step(dict(phases_rad), int(start_ps)))

    def end_step(self, end_ps: int, *, last_of_scan: bool) -> None:
        """The current step's setting held until ``end_ps``; a scan ends with its last step."""
        step = self._steps[-1]
        step.end_ps = max(int(end_ps), step.start_ps)
        step.last = last_of_scan
        if self.horizon_ps is not None:
            self._snap_steps(self.horizon_ps)

    def _pending_boundaries(self) -> list[int]:
        out = []
        for s in self._steps:
            if s.start_snap is None:
                out.append(s.start_ps)
            elif s.end_ps is not None:
                out.append(s.end_ps)
        return out

    def _snap_steps(self, now_ps: int) -> None:
        """Take the snapshots of every step boundary at or before ``now_ps``."""
        while self._steps:
            s = self._steps[0]
            if s.start_snap is None:
                if s.start_ps > now_ps:
                    return
                s.start_snap = self._snapshot(s.start_ps)
            if s.end_ps is None or s.end_ps > now_ps:
                return
            s.hist = self.counts.hist - s.start_snap.hist
            self._steps.pop(0)
            self._scan.append(s)
            if s.last:
                self._fit_scan()

    def _fit_scan(self) -> None:
        steps, self._scan = self._scan, []
        if len(steps) < 3:
            return
        self.scans_done += 1
        for p, link in enumerate(self.links):
            delay = self.delay_ps(p)
            if not math.isfinite(delay):
                continue
            phase = np.array([s.phases_rad[link.user_a] + s.phases_rad[link.user_b] for s in steps])
            counts = np.array([self._window(s.hist, p, delay) for s in steps], np.float64)
            try:
                fit = fit_visibility(phase, counts)
            except ValueError:
                continue
            self.fits[p] = [*self.fits[p], fit][-KEEP_SCANS:]

    def _window(self, hist: I64, p: int, center_ps: float) -> int:
        view = CoincidenceCounts(self.coinc, hist, self.counts.singles, 0, 0, self.counts.dead_ps)
        w = window_counts(view, self.pairs[p], center_ps, self.config.window_ps)
        return int(w.counts)

    # -- figures -----------------------------------------------------------------------------
    def delay_ps(self, p: int) -> float:
        """Central Franson peak of pair p from the run so far (nan before a clear peak)."""
        h = self.counts.hist[p].astype(np.float64)
        k = round(self.config.interferometer_delay_ps / self.coinc.bin_ps)
        triple = h.copy()
        triple[k:] += h[:-k]
        triple[:-k] += h[k:]
        box = max(1, round(self.config.window_ps / self.coinc.bin_ps))
        smooth = np.convolve(triple, np.ones(box), mode="same")
        m = int(np.argmax(smooth))
        bg = float(np.median(smooth))
        peak = smooth[m] - bg
        if peak <= 0 or peak < 5.0 * math.sqrt(max(smooth[m], 1.0)):
            return math.nan
        lo, hi = max(0, m - box), min(h.size, m + box + 1)
        w = np.clip(triple[lo:hi] - float(np.median(triple)), 0.0, None)
        centers = self.coinc.lo_ps[p] + self.coinc.bin_ps * (np.arange(lo, hi) + 0.5)
        return float(np.sum(w * centers) / w.sum()) if w.sum() > 0 else float(centers[m - lo])

    def visibility(self, p: int) -> tuple[float, float, int]:
        """Inverse-variance mean of the recent scans' visibilities: (V, err, scans)."""
        fits = [f for f in self.fits[p] if f.visibility_err > 0 and math.isfinite(f.visibility)]
        if not fits:
            return math.nan, math.nan, 0
        w = np.array([1.0 / f.visibility_err**2 for f in fits])
        v = np.array([f.visibility for f in fits])
        return float(np.sum(w * v) / w.sum()), float(1.0 / math.sqrt(w.sum())), len(fits)

    def fringe_rate_hz(self, p: int) -> float:
        """Phase-averaged central-window rate of the recent scans (their C0 per step)."""
        fits = self.fits[p]
        if not fits:
            return math.nan
        return float(np.mean([f.mean_counts for f in fits])) / self.config.step_s

    def car_run(self, p: int, *, method: str = "offpeak") -> CarResult:
        """CAR of pair p over the whole run so far (accidentals off-peak or from singles)."""
        delay = self.delay_ps(p)
        if not math.isfinite(delay):
            raise ValueError(f"pair {self.links[p]}: no coincidence peak yet")
        guard = self.config.interferometer_delay_ps + self.config.window_ps + 300.0
        return car(
            self.counts,
            self.pairs[p],
            delay,
            self.config.window_ps,
            method=method,  # type: ignore[arg-type]
            guard_ps=guard,
        )

    def status_rows(self) -> tuple[tuple[PairStatus, ...], float]:
        """Rows since the previous call, and the interval they cover (s)."""
        now = self._snapshot(self.horizon_ps or 0)
        prev = self._last_status or _Snapshot(
            self.start_ps or now.time_ps, np.zeros_like(now.hist), np.zeros_like(now.singles), 0
        )
        self._last_status = now
        live_ps = max(now.live_ps - prev.live_ps, 0)
        live_s = live_ps / PS_PER_S
        interval = CoincidenceCounts(
            self.coinc,
            now.hist - prev.hist,
            now.singles - prev.singles,
            0,
            live_ps,
            np.zeros((0, 2), np.int64),
        )
        cfg = self.config
        guard = cfg.interferometer_delay_ps + cfg.window_ps + 300.0
        rows = []
        for p, link in enumerate(self.links):
            a, b = self.pairs[p]
            sa = float(interval.singles[a]) / live_s if live_s > 0 else math.nan
            sb = float(interval.singles[b]) / live_s if live_s > 0 else math.nan
            delay = self.delay_ps(p)
            cc = acc = ratio = ratio_err = math.nan
            if math.isfinite(delay) and live_s > 0:
                res = car(interval, (a, b), delay, cfg.window_ps, guard_ps=guard)
                cc = res.coincidences / live_s
                acc = res.accidentals.value / live_s
                ratio, ratio_err = res.car, res.car_err
            v, v_err, scans = self.visibility(p)
            qber = (1.0 - v) / 2.0 if math.isfinite(v) else math.nan
            sifted = cfg.sifting * self.fringe_rate_hz(p)
            key = math.nan
            if math.isfinite(qber) and math.isfinite(sifted):
                e = min(max(qber, 0.0), 0.5)
                key = bbm92_key_rate_bps(sifted, e, e, f=cfg.ec_efficiency)
            rows.append(
                PairStatus(
                    user_a=link.user_a,
                    user_b=link.user_b,
                    channel_a=link.channel_a,
                    channel_b=link.channel_b,
                    process=link.process,
                    singles_a_hz=sa,
                    singles_b_hz=sb,
                    coincidences_hz=cc,
                    accidentals_hz=acc,
                    car=ratio,
                    car_err=ratio_err,
                    delay_ps=delay,
                    visibility=v,
                    visibility_err=v_err,
                    qber_z=qber,
                    qber_x=qber,
                    sifted_hz=sifted,
                    key_rate_bps=key,
                    scans=scans,
                )
            )
        return tuple(rows), live_s

    @property
    def data_time_s(self) -> float:
        if self.start_ps is None or self.horizon_ps is None:
            return 0.0
        return (self.horizon_ps - self.start_ps) / PS_PER_S


def scan_phases(users: Sequence[str], step: int, n_steps: int) -> dict[str, float]:
    """Phase of every user at scan step ``step``: 2 pi step / n for all (n odd), so every pair's
    phase sum 4 pi step / n visits all n phases of the circle once per scan."""
    phase = 2.0 * math.pi * (step % n_steps) / n_steps
    return dict.fromkeys(users, phase)
