"""Classical drift predictors: persistence, constant-velocity Kalman filter, thermal ARX.

All follow :class:`models.base.DriftPredictor`: one :meth:`step` per control tick with this tick's
measured phase (NaN when not measured) and the telemetry vector, returning the predicted phase at
each horizon. They are the baselines any learned predictor must beat (physics.md section 4).

* :class:`PersistencePredictor` -- the last measured phase, at every horizon.
* :class:`KalmanPredictor` -- state (phase, rate), constant-velocity model; noise intensities from
  the drift parameters or fitted by maximum likelihood on training traces.
* :class:`ArxPredictor` -- phase change per tick regressed on filtered lab-air temperature (a bank
  of first-order lags standing in for the unknown enclosure lag) and pump power, fitted by least
  squares on multi-tick phase changes, with a level observer that absorbs the measurements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import scipy.optimize
import scipy.signal

from models.base import DEFAULT_HORIZONS_TICKS, DriftPredictor, check_horizons
from models.drift import TELEMETRY_NAMES, DriftParams, DriftTrace

_NAN = float("nan")


def _check_traces(traces: Sequence[DriftTrace], where: str, min_ticks: int) -> None:
    if not traces:
        raise ValueError(f"{where}.fit: got no training traces")
    for i, tr in enumerate(traces):
        if len(tr) < min_ticks:
            raise ValueError(
                f"{where}.fit: trace {i} has {len(tr)} ticks, expected at least {min_ticks}"
            )


# ---------------------------------------------------------------------------------------------
# Persistence


class PersistencePredictor(DriftPredictor):
    """The last measured phase, predicted unchanged at every horizon (NaN before the first)."""

    name = "persistence"

    def __init__(self, horizons_ticks: Sequence[int] = DEFAULT_HORIZONS_TICKS) -> None:
        self.horizons_ticks = check_horizons(horizons_ticks, "PersistencePredictor")
        self._out = np.full(len(self.horizons_ticks), np.nan, dtype=np.float64)

    def reset(self) -> None:
        self._out.fill(np.nan)

    def step(self, phase_rad: float, telemetry: np.ndarray) -> np.ndarray:
        if phase_rad == phase_rad:  # not NaN
            self._out.fill(phase_rad)
        return self._out.copy()


# ---------------------------------------------------------------------------------------------
# Kalman, constant velocity


@dataclass(frozen=True)
class KalmanParams:
    """Noise intensities of the constant-velocity model (continuous time, per second).

    State ``x = (phase_rad, rate_rad_per_s)``; over one tick ``dt``::

        F = [[1, dt], [0, 1]]
        Q = q_phase * [[dt, 0], [0, 0]] + q_rate * [[dt^3/3, dt^2/2], [dt^2/2, dt]]

    (random walk of the phase plus white-noise acceleration, exact for the continuous model),
    measurement ``z = phase + N(0, measurement_var_rad2)``.
    """

    #: random-walk intensity of the phase, rad^2/s
    q_phase_rad2_per_s: float
    #: white-noise acceleration intensity (random walk of the rate), rad^2/s^3
    q_rate_rad2_per_s3: float
    #: variance of one phase measurement, rad^2
    measurement_var_rad2: float
    #: prior std of the rate at the first measurement, rad/s
    initial_rate_std_rad_per_s: float = 3.0e-3

    def __post_init__(self) -> None:
        for name in ("q_phase_rad2_per_s", "q_rate_rad2_per_s3", "measurement_var_rad2"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"KalmanParams.{name}: got {value}, expected a finite value > 0")

    @classmethod
    def from_drift(cls, params: DriftParams | None = None) -> KalmanParams:
        """Intensities implied by the drift model, without fitting.

        ``q_phase``: the random walk plus the bursts' lasting offsets averaged over time
        (``rate * burst_step^2``). ``q_rate``: the thermal drift seen as a random rate; the
        enclosure's rate ``k dT_enc/dt`` changes mostly with the HVAC cycle: rate amplitude
        ``k A_hvac / tau`` reversing every half period, i.e. a rate change of
        ``2 k A_hvac / tau`` per half period -> ``q_rate ~ (2 k A / tau)^2 / (P / 2)``.
        ``measurement_var``: the scan noise squared. ``initial_rate_std``: twice that HVAC rate.
        ``params`` defaults to ``DriftParams()``.
        """
        params = DriftParams() if params is None else params
        k = params.phase_per_kelvin_rad
        q_phase = params.random_walk_rad2_per_s + (
            params.burst_rate_per_hour / 3600.0 * params.burst_step_rad**2
        )
        hvac_rate = k * params.hvac_amplitude_c / params.thermal_lag_s
        q_rate = (2.0 * hvac_rate) ** 2 / (0.5 * params.hvac_period_s)
        return cls(
            q_phase_rad2_per_s=max(q_phase, 1e-12),
            q_rate_rad2_per_s3=max(q_rate, 1e-16),
            measurement_var_rad2=max(params.measurement_noise_rad**2, 1e-12),
            initial_rate_std_rad_per_s=max(2.0 * hvac_rate, 1e-6),
        )


def _cv_matrices(p: KalmanParams, dt: float) -> tuple[np.ndarray, np.ndarray]:
    f = np.array([[1.0, dt], [0.0, 1.0]])
    q = p.q_phase_rad2_per_s * np.array([[dt, 0.0], [0.0, 0.0]]) + p.q_rate_rad2_per_s3 * np.array(
        [[dt**3 / 3.0, dt**2 / 2.0], [dt**2 / 2.0, dt]]
    )
    return f, q


def steady_state_prior_covariance(p: KalmanParams, dt: float) -> np.ndarray:
    """Steady-state prior covariance of the constant-velocity filter, (2, 2) rad^2 units.

    Solves the filter Riccati equation ``P = F P F' - F P H' (H P H' + R)^-1 H P F' + Q``,
    i.e. ``P = F P (I + G P)^-1 F' + Q`` with ``G = H' R^-1 H``, by the structure-preserving
    doubling algorithm (Chu, Fan, Lin, Wang 2004; quadratic convergence, ~20 iterations of 2x2
    products). Same answer as ``scipy.linalg.solve_discrete_are(F', H', Q, R)``, which on a
    loaded multi-core machine can spend milliseconds in BLAS threading per 2x2 solve.
    """
    f, q = _cv_matrices(p, dt)
    a = f.T.copy()
    g = np.array([[1.0 / p.measurement_var_rad2, 0.0], [0.0, 0.0]])
    x = q.copy()
    eye = np.eye(2)
    for _ in range(100):
        w = np.linalg.inv(eye + g @ x)
        a_next = a @ w @ a
        g_next = g + a @ w @ g @ a.T
        x_next = x + a.T @ x @ w @ a
        done = np.max(np.abs(x_next - x)) <= 1e-14 * max(np.max(np.abs(x_next)), 1e-300)
        a, g, x = a_next, g_next, x_next
        if done:
            break
    return 0.5 * (x + x.T)


def kalman_innovations(z: np.ndarray, p: KalmanParams, dt: float) -> tuple[np.ndarray, float]:
    """Innovations of the steady-state constant-velocity filter on a fully measured series.

    With the steady-state prior covariance ``P`` (:func:`steady_state_prior_covariance`) and the
    constant gain ``K = P H' / S`` the filter is a linear time-invariant system from ``z`` to the
    innovation ``e = z - H x_prior``: ``x_prior[k+1] = F (I - K H) x_prior[k] + F K z[k]``
    (converted by ``scipy.signal.ss2tf``, run by ``scipy.signal.lfilter``).
    Returns (innovations float64 (n,), innovation variance ``S``, rad^2).
    """
    f, _ = _cv_matrices(p, dt)
    h = np.array([[1.0, 0.0]])
    pp = steady_state_prior_covariance(p, dt)
    s = float(pp[0, 0] + p.measurement_var_rad2)
    k = pp @ h.T / s
    a_ss = f @ (np.eye(2) - k @ h)
    b, a = scipy.signal.ss2tf(a_ss, f @ k, -h, np.array([[1.0]]))
    z = np.asarray(z, dtype=np.float64)
    # start from the first sample as if the filter had been sitting on it (no start transient)
    zi = scipy.signal.lfiltic(b[0], a, y=np.zeros(2), x=np.full(2, z[0]))
    e, _ = scipy.signal.lfilter(b[0], a, z, zi=zi)
    return e, s


class KalmanPredictor(DriftPredictor):
    """Constant-velocity Kalman filter on the measured phase (telemetry unused).

    Each tick: propagate (phase, rate) and covariance one tick (:class:`KalmanParams`), then,
    if the phase was measured, update. A missing measurement (NaN) only propagates, so the
    covariance grows while the link transmits. Prediction at horizon ``h``:
    ``phase + rate h dt``, variance ``[1, h dt] P [1, h dt]' + q_phase h dt + q_rate (h dt)^3 / 3``
    (:meth:`predicted_std_rad`).

    :meth:`fit` estimates the three intensities by maximum likelihood (innovations of the
    steady-state filter, :func:`kalman_innovations`, Nelder-Mead on their logarithms) on the
    training traces, all ticks measured, leaving out ticks inside vibration bursts (accelerometer
    above ``vibration_threshold_mg``; the bursts still pass through the filter) so their heavy
    tails do not inflate the random walk.
    """

    name = "kalman"

    def __init__(
        self,
        horizons_ticks: Sequence[int] = DEFAULT_HORIZONS_TICKS,
        params: KalmanParams | None = None,
        *,
        tick_s: float = 1.0,
        vibration_threshold_mg: float = 5.0,
        fit_max_ticks: int = 50_000,
    ) -> None:
        self.horizons_ticks = check_horizons(horizons_ticks, "KalmanPredictor")
        if not tick_s > 0:
            raise ValueError(f"KalmanPredictor: tick_s: got {tick_s}, expected > 0")
        self.tick_s = float(tick_s)
        self.vibration_threshold_mg = float(vibration_threshold_mg)
        self.fit_max_ticks = int(fit_max_ticks)
        self.params = params if params is not None else KalmanParams.from_drift()
        self._set_params(self.params)
        self.reset()

    def _set_params(self, p: KalmanParams) -> None:
        self.params = p
        dt = self.tick_s
        self._q00 = p.q_phase_rad2_per_s * dt + p.q_rate_rad2_per_s3 * dt**3 / 3.0
        self._q01 = p.q_rate_rad2_per_s3 * dt**2 / 2.0
        self._q11 = p.q_rate_rad2_per_s3 * dt
        hs = np.asarray(self.horizons_ticks, dtype=np.float64) * dt
        self._h_s = hs
        self._h_var = p.q_phase_rad2_per_s * hs + p.q_rate_rad2_per_s3 * hs**3 / 3.0

    def reset(self) -> None:
        self._init = False
        self._x0 = self._x1 = 0.0
        self._p00 = self._p01 = self._p11 = 0.0

    def step(self, phase_rad: float, telemetry: np.ndarray) -> np.ndarray:
        measured = phase_rad == phase_rad
        if not self._init:
            if not measured:
                return np.full(len(self.horizons_ticks), np.nan, dtype=np.float64)
            self._init = True
            self._x0, self._x1 = float(phase_rad), 0.0
            self._p00 = self.params.measurement_var_rad2
            self._p01 = 0.0
            self._p11 = self.params.initial_rate_std_rad_per_s**2
        else:
            dt = self.tick_s
            # predict: x = F x, P = F P F' + Q
            self._x0 += self._x1 * dt
            p00, p01, p11 = self._p00, self._p01, self._p11
            self._p00 = p00 + 2.0 * dt * p01 + dt * dt * p11 + self._q00
            self._p01 = p01 + dt * p11 + self._q01
            self._p11 = p11 + self._q11
            if measured:
                # update with z = phase + noise: K = P H' / S
                s = self._p00 + self.params.measurement_var_rad2
                k0, k1 = self._p00 / s, self._p01 / s
                innov = float(phase_rad) - self._x0
                self._x0 += k0 * innov
                self._x1 += k1 * innov
                p00, p01, p11 = self._p00, self._p01, self._p11
                self._p00 = (1.0 - k0) * p00
                self._p01 = (1.0 - k0) * p01
                self._p11 = p11 - k1 * p01
        return self._x0 + self._x1 * self._h_s

    def predicted_std_rad(self) -> np.ndarray:
        if not self._init:
            return np.full(len(self.horizons_ticks), np.nan, dtype=np.float64)
        hs = self._h_s
        var = self._p00 + 2.0 * hs * self._p01 + hs * hs * self._p11 + self._h_var
        return np.sqrt(var)

    def fit(self, traces: Sequence[DriftTrace]) -> None:
        """Maximum-likelihood intensities on ``traces`` (class docstring)."""
        _check_traces(traces, "KalmanPredictor", 100)
        series: list[tuple[np.ndarray, np.ndarray]] = []
        budget = self.fit_max_ticks
        for tr in traces:
            n = min(len(tr), budget)
            if n < 100:
                break
            budget -= n
            keep = _quiet_mask(tr, self.vibration_threshold_mg, n)
            keep[:50] = False  # let the filter settle
            series.append((tr.measured_phase_rad[:n], keep))
        dt = self.tick_s
        start = self.params

        def nll(log_q: np.ndarray) -> float:
            p = replace(
                start,
                q_phase_rad2_per_s=math.exp(log_q[0]),
                q_rate_rad2_per_s3=math.exp(log_q[1]),
                measurement_var_rad2=math.exp(log_q[2]),
            )
            total = 0.0
            for z, keep in series:
                e, s = kalman_innovations(z, p, dt)
                e = e[keep]
                total += float(e.size * math.log(s) + np.dot(e, e) / s)
            return total

        x0 = np.log(
            [start.q_phase_rad2_per_s, start.q_rate_rad2_per_s3, start.measurement_var_rad2]
        )
        res = scipy.optimize.minimize(
            nll, x0, method="Nelder-Mead", options={"xatol": 0.02, "fatol": 0.1, "maxiter": 300}
        )
        q = np.exp(res.x)
        self._set_params(
            replace(
                start,
                q_phase_rad2_per_s=float(q[0]),
                q_rate_rad2_per_s3=float(q[1]),
                measurement_var_rad2=float(q[2]),
            )
        )
        self.reset()


def _quiet_mask(tr: DriftTrace, threshold_mg: float, n: int, margin: int = 30) -> np.ndarray:
    """True where no vibration above ``threshold_mg`` was read within ``margin`` ticks."""
    if "vibration_mg" not in tr.telemetry_names:
        return np.ones(n, dtype=bool)
    vib = tr.telemetry[:n, tr.telemetry_names.index("vibration_mg")] > threshold_mg
    # dilate the vibrating ticks by +-margin
    c = np.concatenate(([0], np.cumsum(vib)))
    i = np.arange(n)
    lo = np.clip(i - margin, 0, n)
    hi = np.clip(i + margin + 1, 0, n)
    return (c[hi] - c[lo]) == 0


# ---------------------------------------------------------------------------------------------
# ARX with thermal features


def _ema_coeff(tau_s: float, dt: float) -> float:
    return math.exp(-dt / tau_s)


def _ema(x: np.ndarray, a: float) -> np.ndarray:
    """``y[0] = x[0]``, ``y[k] = a y[k-1] + (1 - a) x[k]`` (exact first-order lag), 1-D."""
    y, _ = scipy.signal.lfilter([1.0 - a], [1.0, -a], x, zi=[a * x[0]])
    return y


class ArxPredictor(DriftPredictor):
    """ARX model of the phase change per tick on filtered telemetry, with a level observer.

    Model (``f[t]`` computed from telemetry up to ``t``)::

        phi[t+1] - phi[t] = theta . f[t] + w[t]
        f[t] = ( s0[t] - s_j[t]  for tau_j in thermal_taus_s,   p0[t] - p_slow[t] )

    ``s0`` is the lab-air temperature smoothed over ``smooth_tau_s``, ``s_j`` the same air
    temperature through first-order lags of time constants ``tau_j``; ``p0``/``p_slow`` the pump
    power over ``smooth_tau_s`` / ``pump_tau_s``. Why: the interferometer follows an enclosure
    that lags the air by an unknown time constant ``tau``; its phase change per tick is
    ``k (1 - exp(-dt/tau)) (T_air - T_enc)``, and ``T_air - T_enc`` is one of (or a blend of) the
    ``s0 - s_j`` features. So the lagged thermal path is linear in ``f`` and least squares
    finds it. The pump term models the mean reversion of the (small) pump-power coupling.

    Fit (:meth:`fit`): direct multi-step least squares. The phase change over ``h`` ticks is the
    sum of the per-tick model, ``z[t+h] - z[t] = theta . sum_{i<h} f[t+i]``; rows for every ``h``
    in ``fit_horizons_ticks`` are stacked (weighted by the inverse std of their noise,
    ``2 R + h Q``) and solved with ``numpy.linalg.lstsq``. Long horizons carry the thermal signal
    far above the measurement noise, which a 1-tick regression would drown in. Windows with
    vibration (accelerometer above the threshold, default 5x the training median) are left out,
    and so is the start of each trace (``fit_skip_s``, default 3x the slowest filter) while the
    filters forget their first reading. Noise, from the residuals (:meth:`_variogram`,
    :meth:`_burst_diffusion`): measurement variance ``R = -cov(r[t], r[t+1])`` of the 1-tick
    residuals (an MA(1) signature); unexplained diffusion per tick ``Q`` = slope of the residual
    variance against ``h`` (``2 R + h Q``); per vibrating tick ``Q_vibration`` = the lasting
    phase change across each burst divided by its length.

    The default bank (5, 15, 45 min) brackets the tens-of-minutes enclosure constants of
    physics.md section 4 on a log scale; a slower filter would need hours of telemetry before it
    is usable (the warm-up of the closed-loop benchmark is 3 h).

    Running: a scalar Kalman observer on the level, ``l <- l + theta . f[t-1]`` each tick
    (process variance ``Q`` or ``Q_vibration``), updated with the measurement when there is one
    (gain ``P / (P + R)``); without measurements it runs on its own predictions and the telemetry.
    Multi-step prediction: direct, ``l + sum_{i<h} theta . f_hat[t+i]`` with the features decaying
    as their filters would if the air and pump power stayed at their smoothed values
    (``f_j[t+i] = a_j^i f_j[t]``), closed form per horizon. Lagged phase changes are not extra
    regressors: while transmitting they would be the model's own output again; measured phase
    enters through the observer.
    """

    name = "arx"

    def __init__(
        self,
        horizons_ticks: Sequence[int] = DEFAULT_HORIZONS_TICKS,
        *,
        tick_s: float = 1.0,
        thermal_taus_s: Sequence[float] = (300.0, 900.0, 2700.0),
        smooth_tau_s: float = 30.0,
        pump_tau_s: float = 1800.0,
        fit_horizons_ticks: Sequence[int] = (1, 10, 60, 300, 900),
        fit_skip_s: float | None = None,
        vibration_threshold_mg: float | None = None,
        telemetry_names: tuple[str, ...] = TELEMETRY_NAMES,
    ) -> None:
        self.horizons_ticks = check_horizons(horizons_ticks, "ArxPredictor")
        self.fit_horizons_ticks = check_horizons(fit_horizons_ticks, "ArxPredictor fit")
        if not tick_s > 0:
            raise ValueError(f"ArxPredictor: tick_s: got {tick_s}, expected > 0")
        taus = tuple(float(t) for t in thermal_taus_s)
        if not taus or any(not t > 0 for t in (*taus, smooth_tau_s, pump_tau_s)):
            raise ValueError(
                f"ArxPredictor: time constants must be > 0, got thermal_taus_s={taus}, "
                f"smooth_tau_s={smooth_tau_s}, pump_tau_s={pump_tau_s}"
            )
        for needed in ("ambient_c", "pump_power_mw"):
            if needed not in telemetry_names:
                raise ValueError(
                    f"ArxPredictor: telemetry_names {telemetry_names} lacks {needed!r}"
                )
        self.tick_s = float(tick_s)
        self.thermal_taus_s = taus
        #: start of each training trace left out of the fit while the filters settle, s
        self.fit_skip_s = 3.0 * max(*taus, pump_tau_s) if fit_skip_s is None else float(fit_skip_s)
        self.smooth_tau_s = float(smooth_tau_s)
        self.pump_tau_s = float(pump_tau_s)
        self.telemetry_names = tuple(telemetry_names)
        self._i_air = telemetry_names.index("ambient_c")
        self._i_pump = telemetry_names.index("pump_power_mw")
        self._i_vib = (
            telemetry_names.index("vibration_mg") if "vibration_mg" in telemetry_names else -1
        )
        dt = self.tick_s
        # filter coefficients: [s0, s_j..., p0, p_slow]
        self._a = np.array(
            [_ema_coeff(self.smooth_tau_s, dt)]
            + [_ema_coeff(t, dt) for t in taus]
            + [_ema_coeff(self.smooth_tau_s, dt), _ema_coeff(self.pump_tau_s, dt)]
        )
        # decay rate of each feature when its inputs hold still (the slow filter catches up)
        self._feature_decay = np.array([_ema_coeff(t, dt) for t in taus] + [self._a[-1]])
        self.n_features = len(taus) + 1
        self.feature_names = (
            *(f"air_s{self.smooth_tau_s:g}-s{t:g}" for t in taus),
            f"pump_s{self.smooth_tau_s:g}-s{self.pump_tau_s:g}",
        )
        #: fitted coefficients (zeros before :meth:`fit`: the model is then persistence)
        self.theta = np.zeros(self.n_features, dtype=np.float64)
        #: measurement variance, rad^2; process variance per tick, quiet and vibrating, rad^2
        self.r_rad2 = 0.05**2
        self.q_rad2 = 1e-5
        self.q_vibration_rad2 = 1e-2
        self.vibration_threshold_mg = (
            5.0 if vibration_threshold_mg is None else float(vibration_threshold_mg)
        )
        self._auto_threshold = vibration_threshold_mg is None
        self._set_theta(self.theta)
        self.reset()

    # -- model pieces ---------------------------------------------------------------------

    def _set_theta(self, theta: np.ndarray) -> None:
        self.theta = np.asarray(theta, dtype=np.float64).copy()
        hs = np.asarray(self.horizons_ticks, dtype=np.float64)
        d = self._feature_decay[None, :]
        # sum_{i<h} d^i = (1 - d^h) / (1 - d)
        sums = (1.0 - d ** hs[:, None]) / (1.0 - d)
        self._m = sums * self.theta[None, :]  # (H, nf)
        self._h_ticks = hs

    def features(self, telemetry: np.ndarray) -> np.ndarray:
        """Features ``f[t]`` (n, n_features) of a whole telemetry record (n, n_telemetry);
        the same values :meth:`step` computes tick by tick from a reset."""
        tel = np.asarray(telemetry, dtype=np.float64)
        air, pump = tel[:, self._i_air], tel[:, self._i_pump]
        s0 = _ema(air, self._a[0])
        f = np.empty((tel.shape[0], self.n_features), dtype=np.float64)
        for j in range(len(self.thermal_taus_s)):
            f[:, j] = s0 - _ema(air, self._a[1 + j])
        f[:, -1] = _ema(pump, self._a[-2]) - _ema(pump, self._a[-1])
        return f

    def reset(self) -> None:
        self._filt: np.ndarray | None = None  # [s0, s_j..., p0, p_slow]
        self._f_prev: np.ndarray | None = None
        self._vib_prev = False
        self._level = _NAN
        self._p = _NAN

    def _update_features(self, telemetry: np.ndarray) -> np.ndarray:
        air = float(telemetry[self._i_air])
        pump = float(telemetry[self._i_pump])
        nt = len(self.thermal_taus_s)
        x = np.empty(nt + 3)
        x[: nt + 1] = air
        x[nt + 1 :] = pump
        if self._filt is None:
            self._filt = x
        else:
            a = self._a
            self._filt = a * self._filt + (1.0 - a) * x
        s = self._filt
        f = np.empty(self.n_features)
        f[:nt] = s[0] - s[1 : nt + 1]
        f[nt] = s[nt + 1] - s[nt + 2]
        return f

    def step(self, phase_rad: float, telemetry: np.ndarray) -> np.ndarray:
        f = self._update_features(telemetry)
        vib = self._i_vib >= 0 and float(telemetry[self._i_vib]) > self.vibration_threshold_mg
        if self._level == self._level:  # initialised: propagate one tick
            assert self._f_prev is not None
            self._level += float(self.theta @ self._f_prev)
            self._p += self.q_vibration_rad2 if (vib or self._vib_prev) else self.q_rad2
        if phase_rad == phase_rad:
            if self._level != self._level:
                self._level, self._p = float(phase_rad), self.r_rad2
            else:
                g = self._p / (self._p + self.r_rad2)
                self._level += g * (float(phase_rad) - self._level)
                self._p *= 1.0 - g
        self._f_prev = f
        self._vib_prev = vib
        return self._level + self._m @ f

    def predicted_std_rad(self) -> np.ndarray:
        return np.sqrt(self._p + self._h_ticks * self.q_rad2)

    # -- fitting ---------------------------------------------------------------------------

    def fit(self, traces: Sequence[DriftTrace]) -> None:
        """Least-squares fit on ``traces`` (class docstring); all ticks' phases are used."""
        h_max = max(self.fit_horizons_ticks)
        skip = round(self.fit_skip_s / self.tick_s)
        _check_traces(traces, "ArxPredictor", skip + 2 * h_max + 2)
        if self._auto_threshold and self._i_vib >= 0:
            med = float(np.median(np.concatenate([tr.telemetry[:, self._i_vib] for tr in traces])))
            self.vibration_threshold_mg = 5.0 * med
        prepared = []
        for tr in traces:
            if tuple(tr.telemetry_names) != self.telemetry_names:
                raise ValueError(
                    f"ArxPredictor.fit: trace telemetry {tr.telemetry_names}, expected "
                    f"{self.telemetry_names}"
                )
            f = self.features(tr.telemetry)[skip:]  # the filters settle over the first ticks
            cum = np.vstack([np.zeros((1, self.n_features)), np.cumsum(f, axis=0)])
            quiet = _quiet_mask(tr, self.vibration_threshold_mg, len(tr), margin=0)[skip:]
            loud_cum = np.concatenate(([0], np.cumsum(~quiet)))
            prepared.append((tr.measured_phase_rad[skip:], f, cum, quiet, loud_cum))

        # first pass: rough noise levels from the raw differences
        dz = np.concatenate([np.diff(z)[q[1:] & q[:-1]] for z, _, _, q, _ in prepared])
        r = max(0.5 * float(np.var(dz)), 1e-12)
        q = 1e-6
        theta = np.zeros(self.n_features)
        for _ in range(2):
            rows_x, rows_y, rows_h = [], [], []
            for z, _, cum, _, loud_cum in prepared:
                n = z.size
                for h in self.fit_horizons_ticks:
                    stride = max(1, h // 10)
                    t = np.arange(0, n - h, stride)
                    t = t[(loud_cum[t + h + 1] - loud_cum[t]) == 0]
                    rows_x.append(cum[t + h] - cum[t])
                    rows_y.append(z[t + h] - z[t])
                    rows_h.append(np.full(t.size, h))
            x, y, hh = np.vstack(rows_x), np.concatenate(rows_y), np.concatenate(rows_h)
            w = 1.0 / np.sqrt(2.0 * r + hh * q)
            theta, *_ = np.linalg.lstsq(w[:, None] * x, w * y, rcond=None)
            r, q = self._variogram(prepared, y - x @ theta, hh, theta)
        q_vib = self._burst_diffusion(prepared, theta, r, q)
        self.r_rad2, self.q_rad2, self.q_vibration_rad2 = r, q, q_vib
        self._set_theta(theta)
        self.reset()

    def _variogram(
        self, prepared: list, residual: np.ndarray, h: np.ndarray, theta: np.ndarray
    ) -> tuple[float, float]:
        """Measurement variance ``R`` and diffusion per tick ``Q`` from the fit residuals.

        ``R`` from the lag-1 covariance of the 1-tick residuals (``-R`` for white measurement
        noise on a random walk); ``Q`` as the slope of the residual variance over ``h`` ticks,
        ``var_h = 2 R + h Q`` (a 1-tick variance hides ``Q`` under ``2 R``: at 0.05 rad noise and
        1e-5 rad^2/tick they differ by 0.2 %)."""
        pairs = []
        for z, f, _, quiet, _ in prepared:
            res = np.diff(z) - f[:-1] @ theta
            ok = quiet[2:] & quiet[1:-1] & quiet[:-2]
            pairs.append(np.stack([res[:-1][ok], res[1:][ok]]))
        lag = np.hstack(pairs)
        lag = lag - lag.mean(axis=1, keepdims=True)
        r = max(-float(np.mean(lag[0] * lag[1])), 1e-10)
        hs = np.asarray([hv for hv in self.fit_horizons_ticks if hv > 1], dtype=np.float64)
        if hs.size == 0:
            var1 = float(np.mean(residual[h == 1] ** 2))
            return r, max(var1 - 2.0 * r, 1e-10)
        excess = np.array([np.mean(residual[h == hv] ** 2) for hv in hs]) - 2.0 * r
        # weighted least squares through the origin, weights ~ 1 / var_h^2 (relative errors)
        wts = 1.0 / (2.0 * r + np.maximum(excess, 0.0)) ** 2
        q = float(np.sum(wts * hs * excess) / np.sum(wts * hs * hs))
        return r, max(q, 1e-10)

    @staticmethod
    def _burst_diffusion(prepared: list, theta: np.ndarray, r: float, q: float) -> float:
        """Phase diffusion per vibrating tick: the lasting phase change across each burst
        (model residual from 5 ticks before to 5 ticks after it, minus the quiet noise), divided
        by the burst length, averaged over bursts. Without bursts: 100 Q."""
        num, den = 0.0, 0
        for z, _, cum, quiet, _ in prepared:
            loud = ~quiet
            edges = np.flatnonzero(np.diff(loud.astype(np.int8)))
            starts = edges[loud[edges + 1]] + 1
            for s0 in starts:
                e0 = s0 + int(np.argmax(quiet[s0:])) if quiet[s0:].any() else z.size
                a, b = s0 - 5, e0 + 5
                if a < 0 or b >= z.size:
                    continue
                res = z[b] - z[a] - float((cum[b] - cum[a]) @ theta)
                num += res * res - 2.0 * r - (b - a) * q
                den += e0 - s0
        return max(num / den, q) if den else 100.0 * q
