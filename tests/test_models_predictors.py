"""Classical predictors: closed forms, independent matrix references, recovery of known systems."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from models.base import (
    DEFAULT_PREDICTOR,
    PREDICTORS,
    DriftPredictor,
    make_predictor,
    predictor_class,
)
from models.drift import TELEMETRY_NAMES, DriftParams, DriftTrace, generate_drift
from models.predictors import (
    ArxPredictor,
    KalmanParams,
    KalmanPredictor,
    PersistencePredictor,
    _cv_matrices,
    kalman_innovations,
    steady_state_prior_covariance,
)

CLASSICAL = ("persistence", "kalman", "arx")


def _trace(phase: np.ndarray, measured: np.ndarray | None = None, telemetry=None) -> DriftTrace:
    n = phase.size
    if telemetry is None:
        telemetry = np.zeros((n, len(TELEMETRY_NAMES)))
        telemetry[:, 0] = 22.0
        telemetry[:, 1] = 1.0
        telemetry[:, 2] = 0.5
    return DriftTrace(
        np.arange(1, n + 1, dtype=np.float64),
        phase.astype(np.float64),
        (phase if measured is None else measured).astype(np.float64),
        telemetry,
        TELEMETRY_NAMES,
        np.zeros(n, dtype=bool),
    )


def _rmse(pred: np.ndarray, phase: np.ndarray, h: int, start: int = 0) -> float:
    e = pred[start : phase.size - h] - phase[start + h :]
    return float(np.sqrt(np.mean(e**2)))


# ---------------------------------------------------------------------------------------------
# Interface and registry


@pytest.mark.parametrize("name", CLASSICAL)
def test_predictors_conform_to_the_interface(name: str) -> None:
    p = make_predictor(name, horizons_ticks=(1, 5, 20))
    assert isinstance(p, DriftPredictor)
    assert p.name == name and p.horizons_ticks == (1, 5, 20)
    tel = np.array([22.0, 1.0, 0.5])
    first = p.step(math.nan, tel)
    assert first.dtype == np.float64 and first.shape == (3,)
    assert np.isnan(first).all()  # nothing measured yet
    out = p.step(0.3, tel)
    assert out.dtype == np.float64 and out.shape == (3,) and np.isfinite(out).all()
    assert p.predicted_std_rad().shape == (3,)
    p.reset()
    assert np.isnan(p.step(math.nan, tel)).all()


def test_registry_names_the_four_predictors_and_refuses_others() -> None:
    assert set(PREDICTORS) == {"persistence", "kalman", "arx", "lstm"}
    assert predictor_class("arx") is ArxPredictor
    assert DEFAULT_PREDICTOR in PREDICTORS
    with pytest.raises(ValueError, match="unknown predictor 'nope'"):
        make_predictor("nope")


@pytest.mark.parametrize("bad", [(), (0, 1), (5, 5), (10, 1)])
def test_bad_horizons_are_refused(bad: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="horizons_ticks"):
        PersistencePredictor(bad)


# ---------------------------------------------------------------------------------------------
# Persistence


def test_persistence_rmse_is_rate_times_horizon_on_a_ramp() -> None:
    rate = 0.003
    phase = 0.5 + rate * np.arange(2000.0)
    p = PersistencePredictor((1, 10, 60))
    pred = p.run(_trace(phase))
    for k, h in enumerate(p.horizons_ticks):
        assert _rmse(pred[:, k], phase, h) == pytest.approx(rate * h, rel=1e-9)


def test_persistence_error_is_the_noise_of_the_last_reading() -> None:
    """Constant phase, noisy readings: the error at any horizon is the last reading's noise."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 0.05, 5000)
    phase = np.full(5000, 1.0)
    p = PersistencePredictor((3,))
    pred = p.run(_trace(phase, measured=phase + noise))
    e = pred[:-3, 0] - phase[3:]
    np.testing.assert_allclose(e, noise[:-3], atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(-100, 100)), min_size=1, max_size=50))
def test_persistence_holds_the_last_measured_phase(values: list[float | None]) -> None:
    p = PersistencePredictor((1, 7))
    last = math.nan
    for v in values:
        out = p.step(math.nan if v is None else v, np.zeros(3))
        if v is not None:
            last = v
        np.testing.assert_array_equal(out, np.full(2, last))


# ---------------------------------------------------------------------------------------------
# Kalman


def test_kalman_predicts_a_pure_ramp_exactly() -> None:
    rate = 2e-3
    phase = -1.0 + rate * np.arange(3000.0)
    p = KalmanPredictor((1, 10, 60), KalmanParams(1e-6, 1e-9, 2.5e-3))
    pred = p.run(_trace(phase))
    for k, h in enumerate(p.horizons_ticks):
        assert _rmse(pred[:, k], phase, h, start=2000) < 1e-9
    # and keeps doing so through a gap with no measurement
    measured = np.arange(3000) < 2500
    pred = p.run(_trace(phase), measured=measured)
    np.testing.assert_allclose(pred[2500:-60, 2], phase[2560:], atol=1e-8)


def _kalman_matrix_reference(z: np.ndarray, prm: KalmanParams, dt: float, horizons) -> tuple:
    """Textbook matrix Kalman filter (independent of the class's scalar algebra)."""
    f = np.array([[1.0, dt], [0.0, 1.0]])
    q = prm.q_phase_rad2_per_s * np.array([[dt, 0], [0, 0]]) + prm.q_rate_rad2_per_s3 * np.array(
        [[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]]
    )
    h = np.array([[1.0, 0.0]])
    x = p = None
    preds, stds = [], []
    for zi in z:
        if x is None:
            if np.isnan(zi):
                preds.append(np.full(len(horizons), np.nan))
                stds.append(np.full(len(horizons), np.nan))
                continue
            x = np.array([zi, 0.0])
            p = np.diag([prm.measurement_var_rad2, prm.initial_rate_std_rad_per_s**2])
        else:
            x = f @ x
            p = f @ p @ f.T + q
            if not np.isnan(zi):
                s = (h @ p @ h.T)[0, 0] + prm.measurement_var_rad2
                k = (p @ h.T)[:, 0] / s
                x = x + k * (zi - x[0])
                p = (np.eye(2) - np.outer(k, h[0])) @ p
        out, sd = [], []
        for hh in horizons:
            fh = np.array([[1.0, hh * dt], [0.0, 1.0]])
            # process noise accumulated over hh ticks, exact for the continuous model
            th = hh * dt
            qh = prm.q_phase_rad2_per_s * th + prm.q_rate_rad2_per_s3 * th**3 / 3
            out.append((fh @ x)[0])
            sd.append(math.sqrt((fh @ p @ fh.T)[0, 0] + qh))
        preds.append(np.array(out))
        stds.append(np.array(sd))
    return np.array(preds), np.array(stds)


def test_kalman_matches_a_matrix_reference_with_missing_measurements() -> None:
    rng = np.random.default_rng(1)
    n = 400
    z = np.cumsum(rng.normal(0.0, 0.05, n)) + rng.normal(0.0, 0.05, n)
    z[rng.random(n) < 0.4] = np.nan
    z[:3] = np.nan
    prm = KalmanParams(2e-5, 3e-8, 1e-3, initial_rate_std_rad_per_s=0.01)
    horizons = (1, 4, 30)
    p = KalmanPredictor(horizons, prm, tick_s=0.5)
    ref_pred, ref_std = _kalman_matrix_reference(z, prm, 0.5, horizons)
    for i in range(n):
        out = p.step(float(z[i]), np.zeros(3))
        np.testing.assert_allclose(out, ref_pred[i], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(p.predicted_std_rad(), ref_std[i], rtol=1e-10)


@pytest.mark.parametrize(
    "prm",
    [
        KalmanParams(1e-5, 1e-9, 2.5e-3),
        KalmanParams(1e-9, 1e-14, 1.0),
        KalmanParams(1e-2, 1e-3, 1e-6),
    ],
)
def test_doubling_riccati_solution_equals_scipy_dare(prm: KalmanParams) -> None:
    f, q = _cv_matrices(prm, 1.0)
    h = np.array([[1.0], [0.0]])
    ref = scipy.linalg.solve_discrete_are(f.T, h, q, np.array([[prm.measurement_var_rad2]]))
    np.testing.assert_allclose(steady_state_prior_covariance(prm, 1.0), ref, rtol=1e-9)


def test_steady_state_innovations_equal_the_running_filter_once_converged() -> None:
    rng = np.random.default_rng(2)
    z = np.cumsum(np.cumsum(rng.normal(0, 1e-4, 3000))) + rng.normal(0, 0.05, 3000)
    prm = KalmanParams(1e-5, 1e-8, 2.5e-3)
    e_ss, s = kalman_innovations(z, prm, 1.0)
    p = KalmanPredictor((1,), prm)
    e_run = np.empty(z.size - 1)
    prev = p.step(float(z[0]), np.zeros(3))[0]
    for i in range(1, z.size):
        e_run[i - 1] = z[i] - prev
        prev = p.step(float(z[i]), np.zeros(3))[0]
    np.testing.assert_allclose(e_ss[2000:], e_run[1999:], atol=1e-6)
    assert s > prm.measurement_var_rad2


def test_kalman_fit_recovers_the_intensities_of_a_constant_velocity_system() -> None:
    rng = np.random.default_rng(3)
    true = KalmanParams(4e-6, 2e-9, 2.5e-3)
    n = 40_000
    # exact simulation of the continuous model sampled every second
    q = true.q_phase_rad2_per_s * np.array([[1, 0], [0, 0]]) + true.q_rate_rad2_per_s3 * np.array(
        [[1 / 3, 1 / 2], [1 / 2, 1]]
    )
    w = rng.multivariate_normal(np.zeros(2), q, n)
    # x1[i] = x1[i-1] + w1[i];  x0[i] = x0[i-1] + x1[i-1] + w0[i]
    rate = np.cumsum(w[:, 1])
    phase = np.cumsum(np.concatenate(([0.0], rate[:-1])) + w[:, 0])
    meas = phase + rng.normal(0, math.sqrt(true.measurement_var_rad2), n)
    tr = _trace(phase, measured=meas)
    p = KalmanPredictor((1,), KalmanParams(1e-4, 1e-7, 1e-2))
    p.fit([tr])
    got = p.params
    assert got.measurement_var_rad2 == pytest.approx(true.measurement_var_rad2, rel=0.05)
    assert got.q_rate_rad2_per_s3 == pytest.approx(true.q_rate_rad2_per_s3, rel=0.5)
    assert got.q_phase_rad2_per_s == pytest.approx(true.q_phase_rad2_per_s, rel=0.5)


# ---------------------------------------------------------------------------------------------
# ARX


def _known_arx_trace(
    theta: np.ndarray, n: int, seed: int, q: float, r: float
) -> tuple[DriftTrace, ArxPredictor]:
    """Telemetry from the drift model; phase built from the ARX model itself with the
    predictor's own features: phi[t+1] = phi[t] + theta . f[t] + N(0, q), measured + N(0, r)."""
    base = generate_drift(float(n), DriftParams(burst_rate_per_hour=0.0), seed=seed)
    arx = ArxPredictor((1, 10, 60))
    f = arx.features(base.telemetry)
    rng = np.random.default_rng(seed)
    inc = f[:-1] @ theta + rng.normal(0.0, math.sqrt(q), n - 1)
    phase = np.concatenate(([0.0], np.cumsum(inc)))
    meas = phase + rng.normal(0.0, math.sqrt(r), n)
    return _trace(phase, measured=meas, telemetry=base.telemetry), arx


def test_arx_recovers_a_known_arx_system() -> None:
    theta = np.array([0.002, 0.004, -0.001, 0.05])
    tr, arx = _known_arx_trace(theta, 60_000, seed=4, q=4e-6, r=2.5e-3)
    arx.fit([tr])
    # each coefficient within 10 % of the largest thermal one
    np.testing.assert_allclose(arx.theta[:3], theta[:3], atol=4e-4)
    assert arx.r_rad2 == pytest.approx(2.5e-3, rel=0.05)
    assert arx.q_rad2 == pytest.approx(4e-6, rel=0.5)


def test_arx_features_match_the_streaming_filters() -> None:
    tr = generate_drift(2000.0, seed=5)
    arx = ArxPredictor()
    f_block = arx.features(tr.telemetry)
    arx.reset()
    for i in range(len(tr)):
        f_step = arx._update_features(tr.telemetry[i])
        np.testing.assert_allclose(f_step, f_block[i], rtol=1e-9, atol=1e-12)


def test_arx_extrapolates_through_gaps_with_its_own_predictions() -> None:
    """Noise-free known system: with the true coefficients the 1-tick prediction stays exact
    while no phase is measured (it runs on the telemetry and its own level)."""
    theta = np.array([0.002, 0.004, -0.001, 0.05])
    tr, arx = _known_arx_trace(theta, 20_000, seed=6, q=0.0, r=0.0)
    arx._set_theta(theta)
    arx.r_rad2 = 1e-12
    measured = (np.arange(len(tr)) % 2000) < 15  # a short scan every 2000 ticks
    pred = arx.run(tr, measured=measured)
    np.testing.assert_allclose(pred[:-1, 0], tr.phase_rad[1:], atol=1e-8)
    # persistence drifts away over the same gaps: the test is not trivial
    pers = PersistencePredictor((1,)).run(tr, measured=measured)
    assert np.max(np.abs(pers[:-1, 0] - tr.phase_rad[1:])) > 100 * 1e-8


def test_arx_direct_horizons_equal_iterated_steps_when_telemetry_holds_still() -> None:
    """With the smoothed air and pump power held constant, the features decay exactly as the
    closed-form horizon sums assume: the h-tick prediction equals iterating h single ticks."""
    n0 = 5000
    tel = generate_drift(float(n0), seed=7).telemetry
    arx = ArxPredictor((1, 10, 60), smooth_tau_s=1e-9)  # s0 = the reading itself
    arx._set_theta(np.array([0.003, 0.002, 0.001, 0.02]))
    for i in range(n0):
        out = arx.step(0.1 if i == 0 else math.nan, tel[i])
    hold = tel[-1].copy()
    levels = []
    for _ in range(60):
        levels.append(arx.step(math.nan, hold)[0])
    np.testing.assert_allclose(out[1], levels[8], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out[2], levels[58], rtol=0, atol=1e-12)


def test_arx_beats_kalman_and_persistence_on_held_out_drift_with_gaps() -> None:
    """On held-out drift (other seeds), scans of 15 ticks every 300: the thermal model
    extrapolates through the gaps, the telemetry-blind ones cannot."""
    train = [generate_drift(16 * 3600.0, seed=s) for s in (21, 22)]
    test = generate_drift(6 * 3600.0, seed=23)
    measured = (np.arange(len(test)) % 300) < 15
    warm = 3 * 3600
    measured[:warm] = True
    errs = {}
    for p in (
        PersistencePredictor((1,)),
        KalmanPredictor((1,), fit_max_ticks=20_000),
        ArxPredictor((1,)),
    ):
        p.fit(train)
        pred = p.run(test, measured=measured)
        gap = ~measured[warm + 1 :]
        e = pred[warm:-1, 0] - test.phase_rad[warm + 1 :]
        errs[p.name] = float(np.sqrt(np.mean(e[gap] ** 2)))
    assert errs["arx"] < 0.7 * errs["kalman"]
    assert errs["arx"] < 0.7 * errs["persistence"]


def test_arx_refuses_traces_with_other_telemetry() -> None:
    tr = generate_drift(20_000.0, seed=8)
    other = replace(tr, telemetry_names=("a", "b", "c"))
    with pytest.raises(ValueError, match="telemetry"):
        ArxPredictor(fit_skip_s=0.0).fit([other])


def test_fit_refuses_too_short_traces() -> None:
    short = generate_drift(50.0, seed=9)
    with pytest.raises(ValueError, match="at least"):
        ArxPredictor().fit([short])
    with pytest.raises(ValueError, match="no training traces"):
        KalmanPredictor().fit([])
