"""Step-response autotuning: record a step, fit a low-order model, propose PID gains.

1. :func:`step_test` holds the actuator at ``u_before``, steps it to ``u_after`` and records
   the sensor on the loop's clock (deadline-based sampling, as the loop runner ticks).
2. :func:`fit_fopdt` fits a first-order-plus-dead-time model (gain K, time constant tau, dead
   time theta) to the record; :func:`fit_sopdt` a second-order lag with dead time (two real time
   constants), for plants with a visible S-shape (a TEC whose thermistor sits behind a second
   thermal mass). Both use ``scipy.optimize.least_squares`` from a few initial guesses.
3. :func:`simc_gains` turns the model into PI/PID gains with Skogestad's SIMC rules.

Why SIMC (Skogestad, "Simple analytic rules for model reduction and PID controller tuning",
J. Process Control 13, 291 (2003)): one tuning parameter, the closed-loop time constant
``tau_c``, with the default ``tau_c = theta`` giving a gain margin ~3 and ~5% overshoot on
setpoint steps for any FOPDT plant, and the integral time ``min(tau, 4 (tau_c + theta))`` that
keeps disturbance rejection good on lag-dominant plants (thermal stages), where the IMC choice
``Ti = tau`` is sluggish. Ziegler-Nichols open-loop rules are not offered: they aim at quarter
amplitude damping (~50% overshoot), too aggressive for a laser lock.

Times are in seconds, the gain in sensor units per actuator unit (e.g. degC/A).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.ndimage import uniform_filter1d
from scipy.optimize import OptimizeResult, least_squares

from labctl.loop_runner import LoopClock, Reading
from labctl.pid import PidGains

F64 = npt.NDArray[np.float64]

#: SIMC floor on tau_c as a fraction of the (dominant) time constant, used when the dead time
#: is ~0: a closed loop 10x faster than the open loop already asks an initial output kick of
#: tau / tau_c = 10x the steady-state change, beyond which real actuators saturate and the
#: lags left out of the model dominate.
MIN_TAU_C_FRACTION = 0.1


@dataclass(frozen=True, slots=True)
class Fopdt:
    """First order plus dead time: ``y = y0 + K du (1 - exp(-(t - theta) / tau))``, t > theta.

    ``gain`` K in sensor units per actuator unit, ``rmse`` of the fit in sensor units,
    ``baseline`` y0 (sensor value before the step).
    """

    gain: float
    time_constant_s: float
    dead_time_s: float
    rmse: float
    baseline: float = 0.0

    def response(self, t_s: npt.ArrayLike, du: float) -> F64:
        """Model output at times ``t_s`` (s after the step) for an actuator step ``du``."""
        t = np.asarray(t_s, dtype=np.float64)
        return _fopdt(t, self.baseline, self.gain * du, self.time_constant_s, self.dead_time_s)


@dataclass(frozen=True, slots=True)
class Sopdt:
    """Second-order lag plus dead time, ``K exp(-theta s) / ((tau1 s + 1)(tau2 s + 1))``,
    ``time_constant_s`` = tau1 >= ``time_constant2_s`` = tau2 (real poles, overdamped)."""

    gain: float
    time_constant_s: float
    time_constant2_s: float
    dead_time_s: float
    rmse: float
    baseline: float = 0.0

    def response(self, t_s: npt.ArrayLike, du: float) -> F64:
        """Model output at times ``t_s`` (s after the step) for an actuator step ``du``."""
        t = np.asarray(t_s, dtype=np.float64)
        ratio = self.time_constant2_s / self.time_constant_s
        return _sopdt(
            t, self.baseline, self.gain * du, self.time_constant_s, ratio, self.dead_time_s
        )


# ------------------------------------------------------------------------- models
def _fopdt(t: F64, y0: float, amp: float, tau: float, theta: float) -> F64:
    s = np.maximum(t - theta, 0.0)
    return y0 - amp * np.expm1(-s / tau)


def _sopdt(t: F64, y0: float, amp: float, tau1: float, ratio: float, theta: float) -> F64:
    """Unit-step response of two real lags tau1 and tau2 = ratio * tau1 (0 < ratio <= 1)."""
    s = np.maximum(t - theta, 0.0) / tau1
    if 1.0 - ratio < 1e-6:
        # double pole (the limit ratio -> 1): 1 - (1 + s) exp(-s)
        step = 1.0 - (1.0 + s) * np.exp(-s)
    else:
        # 1 - (tau1 e^(-t/tau1) - tau2 e^(-t/tau2)) / (tau1 - tau2)
        step = 1.0 - (np.exp(-s) - ratio * np.exp(-s / ratio)) / (1.0 - ratio)
    return y0 + amp * step


# -------------------------------------------------------------------------- input
def _record(
    t_s: npt.ArrayLike, y: npt.ArrayLike, u_before: float, u_after: float
) -> tuple[F64, F64, float]:
    t = np.asarray(t_s, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    if t.ndim != 1 or yy.shape != t.shape:
        raise ValueError(f"t_s and y must be 1-D of one length, got {t.shape} and {yy.shape}")
    if t.size < 8:
        raise ValueError(f"a step record needs >= 8 samples, got {t.size}")
    for name, arr in (("t_s", t), ("y", yy)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(f"{name} has non-finite values (first at index {bad[0]})")
    if np.any(np.diff(t) <= 0.0):
        raise ValueError("t_s must be strictly increasing")
    if t[-1] <= 0.0:
        raise ValueError("t_s has no samples after the step (t_s is time since the step, s)")
    du = float(u_after) - float(u_before)
    if not math.isfinite(du) or du == 0.0:
        raise ValueError(f"u_after - u_before must be a finite non-zero step, got {du!r}")
    return t, yy, du


def _initial_guess(t: F64, y: F64) -> tuple[float, float, float, float, float]:
    """(y0, y_inf, t28, t63, span) from the record; two-point method of C. L. Smith
    (Digital Computer Process Control, 1972): tau = 1.5 (t63 - t28), theta = t63 - tau."""
    before = t <= 0.0
    y0 = float(np.mean(y[before])) if np.any(before) else float(y[0])
    tail = max(3, t.size // 10)
    y_inf = float(np.mean(y[-tail:]))
    after = ~before
    ta, ya = t[after], y[after]
    noise = float(np.std(np.diff(y))) / math.sqrt(2.0)
    if abs(y_inf - y0) <= 3.0 * noise:
        raise ValueError(
            f"no step response: final - initial = {y_inf - y0:.3g} is within 3 sigma of the "
            f"sample noise ({noise:.3g}); use a larger step or a longer record"
        )
    z = (ya - y0) / (y_inf - y0)
    width = max(1, ya.size // 50)
    z = uniform_filter1d(z, size=width, mode="nearest")

    def crossing(level: float) -> float:
        idx = int(np.argmax(z >= level))
        if z[idx] < level:
            return float(ta[-1])
        if idx == 0:
            return float(ta[0])
        f = (level - z[idx - 1]) / (z[idx] - z[idx - 1])
        return float(ta[idx - 1] + f * (ta[idx] - ta[idx - 1]))

    span = float(t[-1] - max(t[0], 0.0))
    return y0, y_inf, crossing(0.283), crossing(0.632), span


def _best(results: list[OptimizeResult]) -> OptimizeResult:
    return min(results, key=lambda r: float(r.cost))


# ---------------------------------------------------------------------------- fits
def fit_fopdt(t_s: npt.ArrayLike, y: npt.ArrayLike, u_before: float, u_after: float) -> Fopdt:
    """Fit a FOPDT model to a step response.

    ``t_s``: sample times in seconds *since the step was applied* (samples before it, t <= 0,
    fix the baseline); ``y``: the sensor samples; ``u_before``/``u_after``: the actuator values.
    Least squares on (y0, K du, tau, theta) from the Smith two-point guess and two smaller
    dead times (the 28% point is the first to suffer from noise); the best fit is returned.
    The record should last >= 3 tau after the dead time so the final value is seen.
    """
    t, yy, du = _record(t_s, y, u_before, u_after)
    y0, y_inf, t28, t63, span = _initial_guess(t, yy)
    tau0 = 1.5 * (t63 - t28)
    if not tau0 > 0.0:
        tau0 = max(t63, span / 10.0)
    theta0 = min(max(t63 - tau0, 0.0), span)
    tau_lo, tau_hi = span * 1e-6, span * 100.0
    t_max = float(t[-1])

    def residual(p: F64) -> F64:
        return _fopdt(t, p[0], p[1], p[2], p[3]) - yy

    lower = [-np.inf, -np.inf, tau_lo, 0.0]
    upper = [np.inf, np.inf, tau_hi, t_max]
    fits = []
    for theta_start in (theta0, 0.5 * theta0, 0.0):
        x0 = [y0, y_inf - y0, min(max(tau0, 2 * tau_lo), tau_hi / 2), theta_start]
        fits.append(least_squares(residual, x0, bounds=(lower, upper), x_scale="jac"))
    best = _best(fits)
    y0_f, amp, tau, theta = (float(v) for v in best.x)
    rmse = float(np.sqrt(np.mean(best.fun**2)))
    return Fopdt(amp / du, tau, theta, rmse, y0_f)


def fit_sopdt(t_s: npt.ArrayLike, y: npt.ArrayLike, u_before: float, u_after: float) -> Sopdt:
    """Fit a second-order-lag-plus-dead-time model (two real time constants) to a step.

    Same inputs as :func:`fit_fopdt`. Starts from the FOPDT fit, splitting its time constant
    into tau1 + tau2 for three ratios tau2/tau1 (0.05, 0.25, 0.6) and moving part of its dead
    time into tau2 (Skogestad's half rule run backwards); the best least-squares fit wins.
    Cheap: three more small fits. Prefer it over FOPDT when its rmse is clearly lower.
    """
    t, yy, du = _record(t_s, y, u_before, u_after)
    first = fit_fopdt(t, yy, u_before, u_after)
    span = float(t[-1] - max(t[0], 0.0))
    tau_lo, tau_hi = span * 1e-6, span * 100.0
    t_max = float(t[-1])

    def residual(p: F64) -> F64:
        return _sopdt(t, p[0], p[1], p[2], p[3], p[4]) - yy

    lower = [-np.inf, -np.inf, tau_lo, 1e-3, 0.0]
    upper = [np.inf, np.inf, tau_hi, 1.0, t_max]
    fits = []
    for ratio in (0.05, 0.25, 0.6):
        tau2 = ratio * first.time_constant_s + 0.5 * first.dead_time_s
        tau1 = max(first.time_constant_s - 0.5 * tau2, tau2)
        theta = max(first.dead_time_s - 0.5 * tau2, 0.0)
        x0 = [
            first.baseline,
            first.gain * du,
            min(max(tau1, 2 * tau_lo), tau_hi / 2),
            min(max(tau2 / tau1, 2e-3), 0.99),
            min(theta, t_max),
        ]
        fits.append(least_squares(residual, x0, bounds=(lower, upper), x_scale="jac"))
    best = _best(fits)
    y0_f, amp, tau1, ratio, theta = (float(v) for v in best.x)
    rmse = float(np.sqrt(np.mean(best.fun**2)))
    return Sopdt(amp / du, tau1, ratio * tau1, theta, rmse, y0_f)


# ------------------------------------------------------------------------- tuning
def simc_gains(
    model: Fopdt | Sopdt,
    closed_loop_tau_s: float | None = None,
    *,
    sample_period_s: float | None = None,
) -> PidGains:
    """Skogestad SIMC gains for a fitted model, in the parallel form of :class:`PID`.

    FOPDT -> PI: ``Kc = tau / (K (tau_c + theta))``, ``Ti = min(tau, 4 (tau_c + theta))``,
    ``kp = Kc``, ``ki = Kc / Ti``. SOPDT -> PID: SIMC's series PID with ``Kc = tau1 / (K
    (tau_c + theta))``, ``Ti = min(tau1, 4 (tau_c + theta))``, ``Td = tau2``, converted to
    parallel form: ``kp = Kc (1 + Td / Ti)``, ``ki = Kc / Ti``, ``kd = Kc Td`` (use a
    derivative filter of about Td / 10 with it).

    ``closed_loop_tau_s`` (tau_c): default theta (SIMC's "tight control"), floored at
    ``MIN_TAU_C_FRACTION`` x tau for dead times ~0. ``sample_period_s``: the loop period; a
    sample-and-hold adds ~half a period of dead time, which is added to theta (Skogestad
    2003). A negative model gain gives negative (reverse-acting) gains.
    """
    k = float(model.gain)
    tau = float(model.time_constant_s)
    theta = float(model.dead_time_s)
    if not (math.isfinite(k) and k != 0.0):
        raise ValueError(f"model gain must be finite and non-zero, got {k!r}")
    if not (math.isfinite(tau) and tau > 0.0):
        raise ValueError(f"model time_constant_s must be > 0 s, got {tau!r}")
    if not (math.isfinite(theta) and theta >= 0.0):
        raise ValueError(f"model dead_time_s must be >= 0 s, got {theta!r}")
    if sample_period_s is not None:
        if not (math.isfinite(sample_period_s) and sample_period_s > 0.0):
            raise ValueError(f"sample_period_s must be > 0 s, got {sample_period_s!r}")
        theta += 0.5 * sample_period_s
    if closed_loop_tau_s is None:
        tau_c = max(theta, MIN_TAU_C_FRACTION * tau)
    else:
        tau_c = float(closed_loop_tau_s)
        if not (math.isfinite(tau_c) and tau_c > 0.0):
            raise ValueError(f"closed_loop_tau_s must be > 0 s, got {closed_loop_tau_s!r}")
    kc = tau / (k * (tau_c + theta))
    ti = min(tau, 4.0 * (tau_c + theta))
    if isinstance(model, Sopdt):
        td = float(model.time_constant2_s)
        return PidGains(kp=kc * (1.0 + td / ti), ki=kc / ti, kd=kc * td)
    return PidGains(kp=kc, ki=kc / ti, kd=0.0)


# ----------------------------------------------------------------------- the test
def step_test(
    read: Callable[[], float | Reading],
    write: Callable[[float], None],
    u_before: float,
    u_after: float,
    duration_s: float,
    period_s: float,
    clock: LoopClock,
    *,
    baseline_s: float | None = None,
    restore: bool = True,
    stop: threading.Event | None = None,
) -> tuple[F64, F64]:
    """Step the actuator and record the response; returns ``(t_s, y)`` as float64 arrays.

    Writes ``u_before``, samples the sensor every ``period_s`` for ``baseline_s`` (default 10
    periods; these samples have t < 0), writes ``u_after`` at t = 0 and samples until
    ``duration_s``. Sampling is deadline-based on ``clock`` (a :class:`LoopClock`; with an
    ``AdvancingClock`` the test runs in virtual time). A :class:`Reading` sample keeps its own
    timestamp; a bare float is stamped when ``read`` returns. The plant should have settled at
    ``u_before`` beforehand. With ``restore`` the actuator is set back to ``u_before`` at the
    end, and on any error (which is re-raised); ``stop`` aborts with RuntimeError.
    """
    for name, value in (("duration_s", duration_s), ("period_s", period_s)):
        if not (math.isfinite(value) and value > 0.0):
            raise ValueError(f"{name} must be > 0 s, got {value!r}")
    base = 10.0 * period_s if baseline_s is None else float(baseline_s)
    if not (math.isfinite(base) and base >= 0.0):
        raise ValueError(f"baseline_s must be >= 0 s, got {baseline_s!r}")
    if not (math.isfinite(u_before) and math.isfinite(u_after)) or u_before == u_after:
        raise ValueError(f"need finite u_before != u_after, got {u_before!r} and {u_after!r}")
    stop = stop if stop is not None else threading.Event()
    n_base = math.ceil(base / period_s - 1e-9)
    n_after = math.floor(duration_s / period_s + 1e-9) + 1
    times: list[float] = []
    values: list[float] = []

    def sample(deadline_s: float) -> None:
        if clock.wait_until(deadline_s, stop):
            raise RuntimeError(f"step test stopped at t={clock.now_s() - t_step:.3f} s")
        raw = read()
        if isinstance(raw, Reading):
            times.append(float(raw.timestamp_s))
            values.append(float(raw.value))
        else:
            times.append(clock.now_s())
            values.append(float(raw))

    try:
        write(u_before)
        t_step = clock.now_s() + n_base * period_s
        for k in range(-n_base, 0):
            sample(t_step + k * period_s)
        if clock.wait_until(t_step, stop):
            raise RuntimeError("step test stopped before the step")
        t_step = clock.now_s()
        write(u_after)
        for k in range(n_after):
            sample(t_step + k * period_s)
    except BaseException as exc:
        if restore:
            try:
                write(u_before)
            except Exception as restore_exc:
                exc.add_note(f"restoring u_before={u_before!r} also failed: {restore_exc!r}")
        raise
    if restore:
        write(u_before)
    return np.asarray(times, dtype=np.float64) - t_step, np.asarray(values, dtype=np.float64)
