"""Drift generator: streaming == block generation, exact discretisations, documented statistics."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import freqz

from models.drift import (
    TELEMETRY_NAMES,
    DriftParams,
    DriftProcess,
    fibre_phase_per_kelvin_rad,
    generate_drift,
)

# Every random term off: the phase is the enclosure's response to the deterministic air cycles.
QUIET = DriftParams(
    hvac_amplitude_c=0.0,
    ambient_ou_std_c=0.0,
    random_walk_rad2_per_s=0.0,
    burst_rate_per_hour=0.0,
    measurement_noise_rad=0.0,
    telemetry_noise_c=0.0,
    pump_power_rel_std=0.0,
    pump_power_noise_mw=0.0,
)


def _stream(params: DriftParams, n: int, seed: int, block: int, start_s: float = 0.0):
    proc = DriftProcess(params, seed=seed, start_s=start_s, block_ticks=block)
    phase, tel, meas, burst, t = [], [], [], [], []
    for _ in range(n):
        p, x = proc.step()
        phase.append(p)
        tel.append(x)
        meas.append(proc.measured_phase_rad)
        burst.append(proc.burst)
        t.append(proc.t_s)
    return np.array(t), np.array(phase), np.array(meas), np.array(tel), np.array(burst)


def test_generate_drift_equals_concatenated_process_steps() -> None:
    params = replace(DriftParams(), burst_rate_per_hour=30.0)  # bursts inside the record
    n = 3000
    tr = generate_drift(n * params.tick_s, params, seed=7, start_s=5000.0)
    for block in (1, 7, 1024):
        t, phase, meas, tel, burst = _stream(params, n, seed=7, block=block, start_s=5000.0)
        np.testing.assert_array_equal(t, tr.t_s)
        np.testing.assert_allclose(phase, tr.phase_rad, rtol=0, atol=1e-9)
        np.testing.assert_allclose(meas, tr.measured_phase_rad, rtol=0, atol=1e-9)
        np.testing.assert_allclose(tel, tr.telemetry, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(burst, tr.burst)
    assert tr.burst.any()


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 300),
    block=st.integers(1, 64),
    start_s=st.floats(0.0, 86_400.0),
)
def test_realisation_does_not_depend_on_the_block_size(
    seed: int, n: int, block: int, start_s: float
) -> None:
    params = DriftParams(burn_in_s=600.0, burst_rate_per_hour=60.0)
    tr = generate_drift(n * params.tick_s, params, seed=seed, start_s=start_s)
    _, phase, meas, tel, burst = _stream(params, n, seed=seed, block=block, start_s=start_s)
    np.testing.assert_allclose(phase, tr.phase_rad, rtol=0, atol=1e-9)
    np.testing.assert_allclose(meas, tr.measured_phase_rad, rtol=0, atol=1e-9)
    np.testing.assert_allclose(tel, tr.telemetry, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(burst, tr.burst)


def test_trace_shapes_dtypes_and_times() -> None:
    params = DriftParams(tick_s=2.0)
    tr = generate_drift(100.0, params, seed=1, start_s=1000.0)
    assert len(tr) == 50
    for a in (tr.t_s, tr.phase_rad, tr.measured_phase_rad):
        assert a.dtype == np.float64 and a.shape == (50,)
    assert tr.telemetry.dtype == np.float64 and tr.telemetry.shape == (50, len(TELEMETRY_NAMES))
    assert tr.telemetry_names == TELEMETRY_NAMES
    assert tr.burst.dtype == bool and tr.burst.shape == (50,)
    np.testing.assert_allclose(tr.t_s, 1000.0 + 2.0 * np.arange(1, 51))


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    a = generate_drift(500.0, seed=3)
    b = generate_drift(500.0, seed=3)
    c = generate_drift(500.0, seed=4)
    np.testing.assert_array_equal(a.phase_rad, b.phase_rad)
    assert not np.allclose(a.phase_rad, c.phase_rad)


def test_enclosure_lag_is_the_exact_first_order_response_to_the_daily_cycle() -> None:
    """Noise off: phase / k = enclosure - mean, the steady-state response of the recursion
    y[k] = a y[k-1] + (1 - a) x[k] to the daily cosine; reference: scipy.signal.freqz."""
    p = replace(QUIET, thermal_lag_s=3600.0, daily_amplitude_c=0.8, burn_in_s=40 * 3600.0)
    tr = generate_drift(86_400.0, p, seed=0)
    a = math.exp(-p.tick_s / p.thermal_lag_s)
    w = 2.0 * math.pi * p.tick_s / 86_400.0
    _, h = freqz([1.0 - a], [1.0, -a], worN=[w])
    expected = (
        p.daily_amplitude_c
        * np.abs(h[0])
        * np.cos(2.0 * math.pi * (tr.t_s - p.daily_peak_hour * 3600.0) / 86_400.0 + np.angle(h[0]))
    )
    np.testing.assert_allclose(tr.phase_rad / p.phase_per_kelvin_rad, expected, atol=1e-9)
    # the lag delays the peak by ~atan(w tau)/w (continuous-time value) and shrinks it
    assert np.abs(h[0]) == pytest.approx(1.0 / math.hypot(1.0, w * 3600.0), rel=1e-4)
    # the thermometer reads the air, unlagged
    air = p.ambient_mean_c + p.daily_amplitude_c * np.cos(
        2.0 * math.pi * (tr.t_s - p.daily_peak_hour * 3600.0) / 86_400.0
    )
    np.testing.assert_allclose(tr.telemetry[:, 0], air, atol=1e-12)


def test_random_walk_increments_have_variance_q_dt() -> None:
    p = replace(QUIET, daily_amplitude_c=0.0, random_walk_rad2_per_s=4e-4, tick_s=0.5)
    tr = generate_drift(200_000 * p.tick_s, p, seed=2)
    for lag in (1, 20):
        d = tr.phase_rad[lag:] - tr.phase_rad[:-lag]
        expected = p.random_walk_rad2_per_s * p.tick_s * lag
        n_eff = d.size / lag
        assert np.var(d) == pytest.approx(expected, rel=6.0 * math.sqrt(2.0 / n_eff))


def test_ambient_ou_has_the_stated_std_and_correlation_time() -> None:
    p = replace(QUIET, daily_amplitude_c=0.0, ambient_ou_std_c=0.3, ambient_ou_tau_s=50.0)
    tr = generate_drift(400_000.0, p, seed=3)
    air = tr.telemetry[:, 0] - p.ambient_mean_c
    n_eff = air.size / (2 * 50.0)
    assert np.std(air) == pytest.approx(0.3, rel=6.0 / math.sqrt(2 * n_eff))
    lag = 50
    rho = np.corrcoef(air[lag:], air[:-lag])[0, 1]
    assert rho == pytest.approx(math.exp(-lag / 50.0), abs=6.0 / math.sqrt(n_eff))


def test_burst_fraction_matches_the_poisson_start_probability() -> None:
    """A tick is inside a burst iff a burst started within the last D ticks:
    P = 1 - (1 - p)^D with p = 1 - exp(-rate dt)."""
    p = replace(QUIET, burst_rate_per_hour=120.0, burst_duration_s=10.0)
    n = 300_000
    tr = generate_drift(float(n), p, seed=4)
    pstart = -math.expm1(-p.burst_rate_per_hour / 3600.0)
    expected = 1.0 - (1.0 - pstart) ** p.burst_ticks
    # bursts are ~10-tick runs: about n / 10 independent samples
    assert tr.burst.mean() == pytest.approx(expected, abs=6.0 * math.sqrt(expected / (n / 10)))
    # the accelerometer tells bursts apart with the 5x-median threshold the predictors use
    vib = tr.telemetry[:, TELEMETRY_NAMES.index("vibration_mg")]
    assert np.mean((vib > 5.0 * np.median(vib)) == tr.burst) > 0.999


def test_measurement_and_thermometer_noise_have_the_stated_std() -> None:
    p = replace(QUIET, measurement_noise_rad=0.05, telemetry_noise_c=0.01, daily_amplitude_c=0.0)
    tr = generate_drift(100_000.0, p, seed=5)
    rel = 6.0 * math.sqrt(1.0 / (2 * len(tr)))
    assert np.std(tr.measured_phase_rad - tr.phase_rad) == pytest.approx(0.05, rel=rel)
    assert np.std(tr.telemetry[:, 0] - p.ambient_mean_c) == pytest.approx(0.01, rel=rel)


def test_fibre_phase_coefficient_is_the_textbook_formula() -> None:
    k = fibre_phase_per_kelvin_rad(
        delay_s=800e-12, wavelength_m=1550e-9, group_index=1.468, dn_dt_per_k=1e-5, n_alpha_per_k=0
    )
    path_m = 299_792_458.0 * 800e-12 / 1.468
    assert k == pytest.approx(2 * math.pi * path_m * 1e-5 / 1550e-9, rel=1e-12)
    assert DriftParams().phase_per_kelvin_rad == pytest.approx(fibre_phase_per_kelvin_rad())


@settings(max_examples=25, deadline=None)
@given(
    delay=st.floats(1e-12, 1e-8),
    scale=st.floats(0.1, 10.0),
)
def test_fibre_phase_coefficient_is_linear_in_delay_and_inverse_in_wavelength(
    delay: float, scale: float
) -> None:
    base = fibre_phase_per_kelvin_rad(delay_s=delay)
    assert fibre_phase_per_kelvin_rad(delay_s=delay * scale) == pytest.approx(base * scale)
    assert fibre_phase_per_kelvin_rad(delay_s=delay, wavelength_m=1550e-9 * scale) == pytest.approx(
        base / scale
    )


def test_default_drift_is_several_radians_per_hour() -> None:
    tr = generate_drift(24 * 3600.0, seed=11)
    d = tr.phase_rad[3600:] - tr.phase_rad[:-3600]
    rms_per_hour = float(np.sqrt(np.mean(d**2)))
    assert 1.0 < rms_per_hour < 20.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tick_s", 0.0),
        ("thermal_lag_s", -1.0),
        ("random_walk_rad2_per_s", -1e-6),
        ("measurement_noise_rad", float("nan")),
    ],
)
def test_bad_parameters_are_refused_with_their_name(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"DriftParams.{field}"):
        DriftParams(**{field: value})


def test_too_short_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="duration_s"):
        generate_drift(0.1, seed=1)


# --------------------------------------------------------------------------- external air (air_c)


def _wavy_room(t_s: np.ndarray) -> np.ndarray:
    """A room for the tests: a 15 min cycle and a 40 min swing, defined for any time."""
    return 21.5 + 0.4 * np.sin(2.0 * math.pi * t_s / 900.0) + 0.2 * np.cos(t_s / 2400.0)


def test_constant_external_air_leaves_every_other_source_unchanged() -> None:
    """A constant room at the model's mean: no thermal term, and the walk, bursts, pump and
    noises are the very numbers of a run with the internal air (same seed): a run whose air
    terms are all zero is reproduced exactly, and a run with the internal (moving) air but no
    thermal coefficient has the same phase."""
    params = replace(DriftParams(), burst_rate_per_hour=30.0)  # bursts inside the record
    n = 4000

    def room(t_s: np.ndarray) -> np.ndarray:
        return np.full(t_s.shape, params.ambient_mean_c, dtype=np.float64)

    ext = generate_drift(float(n), params, seed=21, start_s=3000.0, air_c=room)
    still = replace(params, daily_amplitude_c=0.0, hvac_amplitude_c=0.0, ambient_ou_std_c=0.0)
    internal_still = generate_drift(float(n), still, seed=21, start_s=3000.0)
    np.testing.assert_array_equal(ext.t_s, internal_still.t_s)
    np.testing.assert_allclose(ext.phase_rad, internal_still.phase_rad, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ext.telemetry, internal_still.telemetry, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(ext.burst, internal_still.burst)
    assert ext.burst.any()

    no_thermal = replace(params, phase_per_kelvin_rad=0.0)
    moving = generate_drift(float(n), no_thermal, seed=21, start_s=3000.0)
    np.testing.assert_allclose(ext.phase_rad, moving.phase_rad, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ext.measured_phase_rad, moving.measured_phase_rad, atol=1e-12)
    np.testing.assert_allclose(ext.telemetry[:, 1:], moving.telemetry[:, 1:], atol=1e-12)

    # a room 1.5 K above the model's mean: the enclosure sits there, a constant phase offset
    warm = generate_drift(float(n), params, seed=21, start_s=3000.0, air_c=lambda t: room(t) + 1.5)
    offset = params.phase_per_kelvin_rad * 1.5
    np.testing.assert_allclose(warm.phase_rad - ext.phase_rad, offset, rtol=0, atol=1e-9)
    np.testing.assert_allclose(warm.telemetry[:, 0] - ext.telemetry[:, 0], 1.5, atol=1e-12)


@pytest.mark.parametrize("tick_s", [1.0, 2.5])
def test_step_of_the_external_air_gives_the_first_order_lag_response(tick_s: float) -> None:
    """Air 22 degC, then 23 degC from the tick after t0 (held over each tick, as the model's
    discretisation assumes): phase = k (1 - exp(-(t - t0) / tau)) at the ticks after t0, 0
    before; the thermometer reads the air unlagged."""
    p = replace(QUIET, tick_s=tick_s, thermal_lag_s=300.0, burn_in_s=1000.0)
    t0_s = 40 * tick_s  # a tick time
    asked: list[np.ndarray] = []

    def room(t_s: np.ndarray) -> np.ndarray:
        asked.append(t_s.copy())
        return np.where(t_s > t0_s, 23.0, 22.0)

    tr = generate_drift(2000 * tick_s, p, seed=3, air_c=room)
    after = tr.t_s > t0_s
    expected = np.where(
        after,
        p.phase_per_kelvin_rad * -np.expm1(-(tr.t_s - t0_s) / p.thermal_lag_s),
        0.0,
    )
    np.testing.assert_allclose(tr.phase_rad, expected, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(tr.telemetry[:, 0], np.where(after, 23.0, 22.0))
    # the burn-in asked the room for the negative times before the start, one tick apart
    times = np.concatenate(asked)
    assert times.dtype == np.float64
    assert times.min() == pytest.approx(tick_s - p.burn_in_ticks * tick_s, abs=1e-9)
    np.testing.assert_allclose(np.diff(times), tick_s, rtol=0, atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 300),
    block=st.integers(1, 64),
    start_s=st.floats(-3600.0, 86_400.0),
)
def test_realisation_with_external_air_does_not_depend_on_the_block_size(
    seed: int, n: int, block: int, start_s: float
) -> None:
    params = DriftParams(burn_in_s=600.0, burst_rate_per_hour=60.0)
    tr = generate_drift(n * params.tick_s, params, seed=seed, start_s=start_s, air_c=_wavy_room)
    proc = DriftProcess(params, seed=seed, start_s=start_s, block_ticks=block, air_c=_wavy_room)
    rows = [proc.step() for _ in range(n)]
    np.testing.assert_allclose([r[0] for r in rows], tr.phase_rad, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.array([r[1] for r in rows]), tr.telemetry, rtol=0, atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 80), min_size=1, max_size=8),
    steps_first=st.integers(0, 5),
    block=st.integers(1, 16),
)
def test_advance_gives_the_ticks_of_as_many_steps(
    cuts: list[int], steps_first: int, block: int
) -> None:
    """Steps, then advances of any sizes, continue one realisation (seed as a sequence)."""
    params = DriftParams(burn_in_s=300.0, burst_rate_per_hour=120.0)
    seed = (5, 0xABCDEF, 2)
    n = steps_first + sum(cuts)
    tr = generate_drift(n * params.tick_s, params, seed=seed, air_c=_wavy_room)
    proc = DriftProcess(params, seed=seed, block_ticks=block, air_c=_wavy_room)
    phases = [proc.step()[0] for _ in range(steps_first)]
    parts = [proc.advance(c) for c in cuts]
    got = np.concatenate([np.array(phases, dtype=np.float64), *[p.phase_rad for p in parts]])
    np.testing.assert_allclose(got, tr.phase_rad, rtol=0, atol=1e-9)
    joined_t = np.concatenate([p.t_s for p in parts])
    np.testing.assert_array_equal(joined_t, tr.t_s[steps_first:])
    assert proc.t_s == tr.t_s[-1] and proc.burst == bool(tr.burst[-1])
    assert all(p.telemetry.dtype == np.float64 and p.telemetry.shape[0] == len(p) for p in parts)


def test_a_seed_sequence_is_one_realisation_and_other_entries_another() -> None:
    a = generate_drift(300.0, seed=(1, 2, 3))
    b = generate_drift(300.0, seed=[1, 2, 3])
    c = generate_drift(300.0, seed=(1, 2, 4))
    np.testing.assert_array_equal(a.phase_rad, b.phase_rad)
    assert not np.allclose(a.phase_rad, c.phase_rad)


@pytest.mark.parametrize(
    "room",
    [
        lambda t: np.full(t.size + 1, 22.0),  # wrong shape
        lambda t: np.where(t > -100.0, np.nan, 22.0),  # not finite
    ],
    ids=["shape", "nan"],
)
def test_a_bad_external_air_is_refused_naming_air_c(room) -> None:
    with pytest.raises(ValueError, match=r"air_c: at t_s .* expected shape"):
        generate_drift(100.0, seed=1, air_c=room)


def test_advance_refuses_a_non_positive_count() -> None:
    proc = DriftProcess(DriftParams(burn_in_s=0.0), seed=1)
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match=r"DriftProcess\.advance: n"):
            proc.advance(bad)  # type: ignore[arg-type]
