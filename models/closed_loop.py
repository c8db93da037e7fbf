"""Phase compensation of a QKD link on a drift trace: scan-and-transmit vs prediction-driven.

The link runs one control tick at a time (``DriftParams.tick_s``, 1 s). It is either *scanning*
(no key; the interferometer phase is measured each tick, ``DriftTrace.measured_phase_rad``) or
*transmitting* (key; the phase is not measured; the compensation phase ``c`` is applied and the
residual error ``delta = phi - c`` raises the QBER)::

    QBER(delta) = (1 - V0 cos delta) / 2     (V0: intrinsic visibility; physics.md: QBER = (1-V)/2)

Strategies (:func:`simulate_scan_and_transmit`, :func:`simulate_prediction_driven`):

* **scan-and-transmit** (baseline): scan ``scan_ticks``, set the compensation to the mean of the
  scan's measurements, transmit ``transmit_ticks``, repeat. Free parameter: ``transmit_ticks``.
* **prediction-driven**: the predictor steps every tick (phase during scans, NaN while
  transmitting, telemetry always); the compensation applied at tick ``t + 1`` is its 1-tick-ahead
  prediction made at ``t`` (feed-forward). A new scan starts when the predicted mean-square phase
  error of the next tick exceeds the budget ``budget_rad2`` (free parameter). The predicted error
  comes from an :class:`ErrorModel` calibrated on training data for that predictor: the mean
  squared error as a function of the time since the last scan, plus a lasting term per vibration
  burst seen since the scan (the accelerometer tells when one ended: the phase then took an
  unpredictable step, so the loop rescans at once if the budget cannot absorb it). The same
  calibration works for every predictor, whether or not it reports its own uncertainty.

Duty cycle = transmitting ticks / all ticks; QBER = mean over transmitting ticks.

*At equal QBER* (:func:`tune_scan_and_transmit`, :func:`tune_prediction_driven`): for a target
mean QBER, each strategy's free parameter is found by bisection on training traces; duty cycle
and QBER are then measured on held-out traces.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.base import DriftPredictor
from models.drift import DriftTrace

_NAN = float("nan")


@dataclass(frozen=True)
class LinkParams:
    """The QKD link around the interferometer."""

    #: ticks one phase scan takes (transmission stopped), default 15 (a 15 s fringe scan)
    scan_ticks: int = 15
    #: intrinsic visibility (everything but the phase error), physics.md section 2
    visibility: float = 0.98
    #: accelerometer level above which a tick counts as vibrating, mg (None: 5x the median of the
    #: calibration data, i.e. well above the floor and far below a burst)
    vibration_threshold_mg: float | None = None
    #: longest transmission of the prediction-driven loop, ticks (a safety cap)
    max_transmit_ticks: int = 3600
    #: ticks at the start of each trace that only warm the predictor up (it sees every
    #: measured phase and the telemetry; nothing is counted): its telemetry filters start from
    #: the first reading and need several of their time constants to forget it. The baseline
    #: skips the same ticks, so both are scored on the same data.
    warmup_ticks: int = 0

    def __post_init__(self) -> None:
        if self.scan_ticks < 1:
            raise ValueError(f"LinkParams.scan_ticks: got {self.scan_ticks}, expected >= 1")
        if not 0.0 < self.visibility <= 1.0:
            raise ValueError(f"LinkParams.visibility: got {self.visibility}, expected in (0, 1]")
        if self.warmup_ticks < 0:
            raise ValueError(f"LinkParams.warmup_ticks: got {self.warmup_ticks}, expected >= 0")
        if self.max_transmit_ticks < 1:
            raise ValueError(
                f"LinkParams.max_transmit_ticks: got {self.max_transmit_ticks}, expected >= 1"
            )


def qber_from_phase_error(delta_rad: np.ndarray | float, visibility: float) -> np.ndarray:
    """QBER of a Franson measurement with residual phase error ``delta``: ``(1 - V0 cos d) / 2``."""
    return 0.5 * (1.0 - visibility * np.cos(np.asarray(delta_rad, dtype=np.float64)))


@dataclass(frozen=True)
class LoopResult:
    """One closed-loop run on one trace (or several, concatenated)."""

    #: "scan_and_transmit" or the predictor name
    strategy: str
    #: True on transmitting ticks, bool (n,)
    transmitting: np.ndarray
    #: residual phase error on transmitting ticks, rad, NaN elsewhere, float64 (n,)
    phase_error_rad: np.ndarray
    #: number of scans started
    n_scans: int
    #: the free parameter: transmit_ticks (baseline) or budget_rad2 (prediction-driven)
    parameter: float
    #: intrinsic visibility used for the QBER
    visibility: float

    @property
    def duty_cycle(self) -> float:
        """Transmitting ticks / all ticks."""
        return float(np.mean(self.transmitting)) if self.transmitting.size else _NAN

    @property
    def mean_qber(self) -> float:
        """Mean QBER over transmitting ticks."""
        d = self.phase_error_rad[self.transmitting]
        return float(np.mean(qber_from_phase_error(d, self.visibility))) if d.size else _NAN

    @property
    def rms_phase_error_rad(self) -> float:
        """Rms residual phase error over transmitting ticks, rad (wrapped to [-pi, pi))."""
        d = _wrap(self.phase_error_rad[self.transmitting])
        return float(np.sqrt(np.mean(d * d))) if d.size else _NAN

    @staticmethod
    def concat(results: Sequence[LoopResult]) -> LoopResult:
        """Several runs (e.g. one per trace) as one."""
        r0 = results[0]
        return LoopResult(
            r0.strategy,
            np.concatenate([r.transmitting for r in results]),
            np.concatenate([r.phase_error_rad for r in results]),
            sum(r.n_scans for r in results),
            r0.parameter,
            r0.visibility,
        )


def _after_warmup(trace: DriftTrace, link: LinkParams) -> DriftTrace:
    if link.warmup_ticks >= len(trace):
        raise ValueError(
            f"trace of {len(trace)} ticks is not longer than warmup_ticks={link.warmup_ticks}"
        )
    return trace.slice(link.warmup_ticks, len(trace)) if link.warmup_ticks else trace


def _wrap(x: np.ndarray) -> np.ndarray:
    return (x + math.pi) % (2.0 * math.pi) - math.pi


# ---------------------------------------------------------------------------------------------
# Baseline


def simulate_scan_and_transmit(
    trace: DriftTrace, *, transmit_ticks: int, link: LinkParams = LinkParams()
) -> LoopResult:
    """Scan ``link.scan_ticks``, compensate with the mean measured phase, transmit
    ``transmit_ticks``; repeat from tick 0. Duty cycle ``T / (T + T_scan)`` over whole periods."""
    if transmit_ticks < 1:
        raise ValueError(f"transmit_ticks: got {transmit_ticks}, expected >= 1")
    trace = _after_warmup(trace, link)
    n = len(trace)
    period = link.scan_ticks + int(transmit_ticks)
    pos = np.arange(n) % period
    transmitting = pos >= link.scan_ticks
    # compensation of each period: mean of its scan's measurements
    period_idx = np.arange(n) // period
    scanning = ~transmitting
    sums = np.bincount(period_idx[scanning], weights=trace.measured_phase_rad[scanning])
    counts = np.bincount(period_idx[scanning])
    comp = (sums / np.maximum(counts, 1))[period_idx]
    err = np.where(transmitting, trace.phase_rad - comp, np.nan)
    n_scans = int(counts.size)
    return LoopResult(
        "scan_and_transmit", transmitting, err, n_scans, float(transmit_ticks), link.visibility
    )


# ---------------------------------------------------------------------------------------------
# Prediction-driven


@dataclass(frozen=True)
class ErrorModel:
    """Predicted mean-square compensation error of one predictor, calibrated on training data.

    ``msq_rad2[a - 1]``: mean squared error ``a`` ticks after the end of a scan, made
    non-decreasing (a longer wait is never predicted better); ``burst_rad2``: mean extra squared
    error after a vibration burst ended during the transmission (the burst's lasting step).
    Predicted error at age ``a`` after ``b`` bursts: ``msq(a) + b * burst_rad2``.
    """

    msq_rad2: np.ndarray
    burst_rad2: float
    vibration_threshold_mg: float

    def predict(self, age_ticks: int, n_bursts: int) -> float:
        a = min(max(age_ticks, 1), self.msq_rad2.size) - 1
        extra = n_bursts * self.burst_rad2 if n_bursts else 0.0  # burst_rad2 may be inf
        return float(self.msq_rad2[a]) + extra

    @property
    def max_age_ticks(self) -> int:
        return int(self.msq_rad2.size)


def _vibration_threshold(traces: Sequence[DriftTrace], link: LinkParams) -> float:
    if link.vibration_threshold_mg is not None:
        return float(link.vibration_threshold_mg)
    tr0 = traces[0]
    if "vibration_mg" not in tr0.telemetry_names:
        return math.inf
    i = tr0.telemetry_names.index("vibration_mg")
    return 5.0 * float(np.median(np.concatenate([tr.telemetry[:, i] for tr in traces])))


def _vibration(trace: DriftTrace, threshold_mg: float) -> np.ndarray:
    if "vibration_mg" not in trace.telemetry_names or not math.isfinite(threshold_mg):
        return np.zeros(len(trace), dtype=bool)
    return trace.telemetry[:, trace.telemetry_names.index("vibration_mg")] > threshold_mg


#: predictor state after the warm-up, per trace: {id(trace): (trace, snapshot or None)}
WarmCache = dict[int, tuple[DriftTrace, dict[str, Any] | None]]


def _warm_up(
    predictor: DriftPredictor, trace: DriftTrace, link: LinkParams, cache: WarmCache | None
) -> None:
    """Reset ``predictor`` and run it over the warm-up ticks (every phase measured).

    With a ``cache`` (one per fitted predictor, e.g. for the runs of one tuning), the state after
    the warm-up is deep-copied the first time and restored afterwards; a predictor whose state
    cannot be deep-copied (e.g. one holding an onnxruntime session) is simply warmed up again.
    """
    predictor.reset()
    w = link.warmup_ticks
    if not w:
        return
    if w >= len(trace):
        _after_warmup(trace, link)  # raises
    entry = cache.get(id(trace)) if cache is not None else None
    if entry is not None and entry[0] is trace and entry[1] is not None:
        predictor.__dict__.update(copy.deepcopy(entry[1]))
        return
    z = trace.measured_phase_rad
    tel = np.ascontiguousarray(trace.telemetry[:w], dtype=np.float64)
    for i in range(w):
        predictor.step(float(z[i]), tel[i])
    if cache is not None and entry is None:
        try:
            snapshot: dict[str, Any] | None = copy.deepcopy(predictor.__dict__)
        except Exception:  # not copyable: warm up every time
            snapshot = None
        cache[id(trace)] = (trace, snapshot)


def _run_predictive(
    trace: DriftTrace,
    predictor: DriftPredictor,
    link: LinkParams,
    should_scan: Callable[[int, int], bool],
    vibration_threshold_mg: float,
    warm_cache: WarmCache | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The prediction-driven loop with a scan rule ``should_scan(next_age, n_bursts)``.

    Returns (transmitting, error, age, bursts_since_scan, n_scans), after the warm-up."""
    _warm_up(predictor, trace, link, warm_cache)
    trace = _after_warmup(trace, link)
    n = len(trace)
    phase = trace.phase_rad
    z = trace.measured_phase_rad
    tel = np.ascontiguousarray(trace.telemetry, dtype=np.float64)
    vib = _vibration(trace, vibration_threshold_mg)
    transmitting = np.zeros(n, dtype=bool)
    err = np.full(n, np.nan)
    ages = np.zeros(n, dtype=np.int64)
    bursts = np.zeros(n, dtype=np.int64)
    scan_left = link.scan_ticks
    n_scans = 1
    comp = _NAN  # compensation applied at this tick (prediction made at the previous tick)
    age = 0
    n_bursts = 0
    for i in range(n):
        if scan_left > 0:
            out = predictor.step(float(z[i]), tel[i])
            scan_left -= 1
            if scan_left == 0:
                age, n_bursts = 0, 0
        else:
            transmitting[i] = True
            age += 1
            err[i] = phase[i] - comp
            ages[i] = age
            if i > 0 and vib[i - 1] and not vib[i]:
                n_bursts += 1  # a burst just ended
            bursts[i] = n_bursts
            out = predictor.step(_NAN, tel[i])
            if age >= link.max_transmit_ticks or should_scan(age + 1, n_bursts):
                scan_left = link.scan_ticks
                n_scans += 1
        comp = float(out[0])
    return transmitting, err, ages, bursts, n_scans


def calibrate_error_model(
    traces: Sequence[DriftTrace],
    predictor: DriftPredictor,
    *,
    link: LinkParams = LinkParams(),
    transmit_ticks: int = 600,
    warm_cache: WarmCache | None = None,
) -> ErrorModel:
    """Run the prediction-driven loop on ``traces`` with fixed ``transmit_ticks`` transmissions
    and measure the squared error against the time since the scan (transmissions without a
    burst), and the extra squared error after a burst. The curve is smoothed by a running mean
    whose window grows with age (about a tenth of the age) and made non-decreasing."""
    if not 2 <= transmit_ticks <= link.max_transmit_ticks:
        raise ValueError(
            f"transmit_ticks: got {transmit_ticks}, expected 2..{link.max_transmit_ticks} "
            "(link.max_transmit_ticks)"
        )
    thr = _vibration_threshold(traces, link)
    sum_sq = np.zeros(transmit_ticks + 1)
    count = np.zeros(transmit_ticks + 1)
    burst_counts: list[np.ndarray] = []
    burst_ages: list[np.ndarray] = []
    burst_sq: list[np.ndarray] = []
    for tr in traces:
        tx, err, ages, bursts, _ = _run_predictive(
            tr, predictor, link, lambda age, _b: age > transmit_ticks, thr, warm_cache
        )
        # whole transmissions with a burst anywhere are left out of the clean curve
        clean = tx & (bursts == 0) & ~_burst_in_transmission(tx, bursts)
        e2 = _wrap(err) ** 2
        np.add.at(sum_sq, ages[clean], e2[clean])
        np.add.at(count, ages[clean], 1.0)
        after = tx & (bursts > 0)
        burst_ages.append(ages[after])
        burst_sq.append(e2[after])
        burst_counts.append(bursts[after])
    ok = count[1:] > 0
    if not ok.any():
        raise ValueError("calibrate_error_model: no clean transmission in the calibration traces")
    ages_axis = np.arange(1, transmit_ticks + 1)
    raw = np.interp(ages_axis, ages_axis[ok], sum_sq[1:][ok] / count[1:][ok])
    cum = np.concatenate(([0.0], np.cumsum(raw)))
    lo = np.maximum(ages_axis - 1 - ages_axis // 20, 0)
    hi = np.minimum(ages_axis + ages_axis // 20, transmit_ticks)
    smooth = (cum[hi] - cum[lo]) / (hi - lo)
    msq = np.maximum.accumulate(smooth)
    a = np.concatenate(burst_ages)
    if a.size:
        base = msq[np.clip(a, 1, transmit_ticks) - 1]
        b = np.concatenate(burst_counts)
        burst = float(np.sum(np.concatenate(burst_sq) - base) / np.sum(b))
    else:
        burst = math.inf  # never seen one: any burst spends the budget
    return ErrorModel(msq, max(burst, 0.0), thr)


def _burst_in_transmission(tx: np.ndarray, bursts: np.ndarray) -> np.ndarray:
    """True on every tick of a transmission during which a burst ended."""
    start = tx & ~np.concatenate(([False], tx[:-1]))
    run = np.cumsum(start)
    has = np.zeros(int(run.max()) + 1, dtype=bool) if run.size else np.zeros(1, dtype=bool)
    np.logical_or.at(has, run[tx & (bursts > 0)], True)
    return tx & has[run]


def simulate_prediction_driven(
    trace: DriftTrace,
    predictor: DriftPredictor,
    error_model: ErrorModel,
    *,
    budget_rad2: float,
    link: LinkParams = LinkParams(),
    warm_cache: WarmCache | None = None,
) -> LoopResult:
    """Feed-forward compensation; a scan starts when the error predicted by ``error_model`` for
    the next tick exceeds ``budget_rad2`` (or its calibrated age range, or
    ``link.max_transmit_ticks``, would be passed). ``warm_cache``: see :func:`_warm_up` (only
    for repeated runs of the same fitted predictor on the same traces)."""
    if not budget_rad2 > 0:
        raise ValueError(f"budget_rad2: got {budget_rad2}, expected > 0")
    model = error_model

    max_age = model.max_age_ticks

    def should_scan(age: int, n_bursts: int) -> bool:
        # beyond the calibrated ages nothing is known: rescan there at the latest
        return age > max_age or model.predict(age, n_bursts) > budget_rad2

    tx, err, _, _, n_scans = _run_predictive(
        trace, predictor, link, should_scan, model.vibration_threshold_mg, warm_cache
    )
    return LoopResult(predictor.name, tx, err, n_scans, float(budget_rad2), link.visibility)


# ---------------------------------------------------------------------------------------------
# Equal-QBER tuning


@dataclass(frozen=True)
class Tuning:
    """Result of tuning a free parameter to a target QBER on training traces."""

    #: transmit_ticks (baseline) or budget_rad2
    parameter: float
    #: QBER achieved on the training traces with it
    train_qber: float
    #: duty cycle on the training traces
    train_duty_cycle: float
    #: runs of the loop the tuning took
    evaluations: int
    #: False when even the most cautious setting missed the target (then that setting)
    reached: bool = True
    #: the bracket's other end: the closest setting found above ``parameter`` whose QBER
    #: exceeded the target (NaN when the least cautious setting met it, or none did)
    upper: float = _NAN
    #: the QBER at ``upper`` on the training traces
    upper_qber: float = _NAN


def tune_scan_and_transmit(
    traces: Sequence[DriftTrace],
    target_qber: float,
    *,
    link: LinkParams = LinkParams(),
    max_transmit_ticks: int = 3600,
) -> Tuning:
    """Longest ``transmit_ticks`` whose mean QBER on ``traces`` stays <= ``target_qber``
    (bisection over integers; QBER grows with the period)."""

    def qber(t: int) -> tuple[float, float]:
        r = LoopResult.concat(
            [simulate_scan_and_transmit(tr, transmit_ticks=t, link=link) for tr in traces]
        )
        return r.mean_qber, r.duty_cycle

    lo, hi = 1, int(max_transmit_ticks)
    q_lo, d_lo = qber(lo)
    evals = 1
    if q_lo > target_qber:
        return Tuning(float(lo), q_lo, d_lo, evals, reached=False)
    q_hi, d_hi = qber(hi)
    evals += 1
    if q_hi <= target_qber:
        return Tuning(float(hi), q_hi, d_hi, evals)
    while hi - lo > 1:  # invariant: qber(lo) <= target < qber(hi)
        mid = (lo + hi) // 2
        q, d = qber(mid)
        evals += 1
        if q <= target_qber:
            lo, q_lo, d_lo = mid, q, d
        else:
            hi, q_hi = mid, q
    return Tuning(float(lo), q_lo, d_lo, evals, upper=float(hi), upper_qber=q_hi)


def tune_prediction_driven(
    traces: Sequence[DriftTrace],
    predictor: DriftPredictor,
    error_model: ErrorModel,
    target_qber: float,
    *,
    link: LinkParams = LinkParams(),
    grid_points: int = 6,
    bisection_steps: int = 5,
    warm_cache: WarmCache | None = None,
) -> Tuning:
    """Largest budget whose mean QBER on ``traces`` stays <= ``target_qber``.

    The QBER is not monotone in the budget at the smallest budgets (transmissions of a tick or
    two between scans: few transmitted ticks, dominated by whatever the scans happened to
    catch), so a plain bisection from there can stop on a useless crossing. First a coarse
    logarithmic grid of ``grid_points`` budgets from the calibrated error at age 1 to the one at
    the longest age; the largest grid budget that meets the target and its neighbour above
    bracket the crossing, then ``bisection_steps`` bisections on the logarithm narrow it
    (bracket ratio ``(hi/lo)^(2^-steps)``). If no grid budget meets the target the smallest is
    returned with ``reached=False``.
    """
    if grid_points < 2:
        raise ValueError(f"grid_points: got {grid_points}, expected >= 2")
    evals = 0
    cache: WarmCache = {} if warm_cache is None else warm_cache

    def run(budget: float) -> tuple[float, float]:
        nonlocal evals
        evals += 1
        r = LoopResult.concat(
            [
                simulate_prediction_driven(
                    tr, predictor, error_model, budget_rad2=budget, link=link, warm_cache=cache
                )
                for tr in traces
            ]
        )
        return r.mean_qber, r.duty_cycle

    msq = error_model.msq_rad2
    lo_b = max(float(msq[0]), 1e-12)
    hi_b = max(float(msq[-1]), lo_b * 4.0)
    grid = np.geomspace(lo_b, hi_b, grid_points)
    results = [run(float(b)) for b in grid]
    ok = [i for i, (q, _) in enumerate(results) if q <= target_qber]
    if not ok:
        q, d = results[0]
        return Tuning(float(grid[0]), q, d, evals, reached=False)
    i = max(ok)
    lo, (q_lo, d_lo) = float(grid[i]), results[i]
    if i == grid_points - 1:
        return Tuning(lo, q_lo, d_lo, evals)
    hi, q_hi = float(grid[i + 1]), results[i + 1][0]
    for _ in range(bisection_steps):  # invariant: qber(lo) <= target < qber(hi)
        mid = math.sqrt(lo * hi)
        q, d = run(mid)
        if q <= target_qber:
            lo, q_lo, d_lo = mid, q, d
        else:
            hi, q_hi = mid, q
    return Tuning(lo, q_lo, d_lo, evals, upper=hi, upper_qber=q_hi)
