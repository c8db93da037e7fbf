"""Tests of dsp.locate: TDOA estimation and vibration-source location (physics.md section 1).

Reference geometry: three nodes on an equilateral triangle, 10 km from the center node at its
centre (node spacing 10 km * sqrt(3) = 17.3 km), v = 6 km/s, 10 km fibres. Arrival times are
synthesised in closed form from a known source: T_k = t0 + |r_k - r0| / v + L_k n / c.
Statistical comparisons use fixed seeds and a 4-sigma tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from dsp import locate

N_SIGMA = 4.0
RADIUS_M = 10e3
SPEED_M_S = 6e3
FIBRE_INDEX = 1.468
T0_S = 0.3
NODES_M = RADIUS_M * np.array(
    [[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in (90.0, 210.0, 330.0)]
)
SPACING_M = RADIUS_M * math.sqrt(3.0)
EQUAL_FIBRES_M = np.array([10e3, 10e3, 10e3])
UNEQUAL_FIBRES_M = np.array([10e3, 12e3, 25e3])
# A fourth node that removes the three-node ambiguity.
NODES4_M = np.vstack([NODES_M, [[-6e3, 14e3]]])


def _arrivals(
    source_m: tuple[float, float] | NDArray[np.float64],
    nodes_m: NDArray[np.float64] = NODES_M,
    fibres_m: NDArray[np.float64] | None = EQUAL_FIBRES_M,
    t0_s: float = T0_S,
) -> NDArray[np.float64]:
    """Closed-form arrival times at the center node (fibre delay included)."""
    dist = np.hypot(*(nodes_m - np.asarray(source_m)).T)
    fibre = 0.0 if fibres_m is None else fibres_m * FIBRE_INDEX / locate.SPEED_OF_LIGHT_M_S
    return t0_s + dist / SPEED_M_S + fibre


def _error_m(loc: locate.Location | locate.LocationCandidate, source_m: tuple[float, float]):
    return math.hypot(loc.x_m - source_m[0], loc.y_m - source_m[1])


def _burst(
    t: NDArray[np.float64], seed: int, f_max: float = 0.3, centre: float = 1000.0
) -> NDArray[np.float64]:
    """Gaussian-windowed multi-tone burst (band-limited to ~f_max cycles/sample), at time t."""
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(0.03, f_max, 8)
    phases = rng.uniform(0.0, 2.0 * np.pi, 8)
    amps = rng.uniform(0.5, 1.0, 8)
    env = np.exp(-0.5 * ((t - centre) / 60.0) ** 2)
    return env * np.sum(amps[:, None] * np.cos(2 * np.pi * freqs[:, None] * t + phases[:, None]), 0)


# --------------------------------------------------------------------------------------------
# Time difference of arrival
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delay_samples", [12.3, -12.3, 0.5, -0.5, 0.27, -7.81, 37.0])
@pytest.mark.parametrize("fs_hz", [1.0, 5e3])
def test_tdoa_fractional_delay_and_sign(delay_samples: float, fs_hz: float) -> None:
    """b(t) = a(t - D): result +D (positive when b lags a), to < 1e-6 sample."""
    n = np.arange(2048.0)
    a = _burst(n, seed=7)
    b = _burst(n - delay_samples, seed=7)
    got = locate.tdoa_s(a, b, fs_hz)
    assert math.copysign(1.0, got) == math.copysign(1.0, delay_samples)
    assert abs(got * fs_hz - delay_samples) < 1e-6
    assert locate.tdoa_s(b, a, fs_hz) * fs_hz == pytest.approx(-delay_samples, abs=1e-6)


@pytest.mark.parametrize("f_max", [0.1, 0.3, 0.45])
def test_tdoa_fourier_beats_parabolic(f_max: float) -> None:
    """Fourier refinement: < 1e-6 sample up to 0.45 fs; parabolic: biased, documented bounds."""
    rng = np.random.default_rng(11)
    n = np.arange(2048.0)
    err_fourier, err_parabolic = [], []
    for seed in range(12):
        delay = rng.uniform(-30.0, 30.0)
        a = _burst(n, seed, f_max)
        b = _burst(n - delay, seed, f_max)
        err_fourier.append(locate.tdoa_s(a, b, 1.0) - delay)
        err_parabolic.append(locate.tdoa_s(a, b, 1.0, interpolation="parabolic") - delay)
    assert np.max(np.abs(err_fourier)) < 1e-6
    if f_max <= 0.3:
        # documented parabolic bias: ~0.005 sample at 0.1 fs, ~0.05 sample at 0.3 fs
        assert np.max(np.abs(err_parabolic)) < (0.01 if f_max <= 0.1 else 0.1)
        assert np.max(np.abs(err_parabolic)) > 10 * np.max(np.abs(err_fourier))


def test_tdoa_different_lengths_and_max_lag() -> None:
    n_a, n_b = np.arange(1500.0), np.arange(2600.0)
    a = _burst(n_a, seed=3, centre=700.0)
    # b holds a strong copy delayed by 400.25 samples and a weaker one delayed by 5.5 samples
    b = 2.0 * _burst(n_b - 400.25, seed=3, centre=700.0) + _burst(n_b - 5.5, seed=3, centre=700.0)
    assert locate.tdoa_s(a, b, 1.0) == pytest.approx(400.25, abs=1e-3)
    assert locate.tdoa_s(a, b, 1.0, max_lag_s=50.0) == pytest.approx(5.5, abs=1e-2)
    assert locate.tdoa_s(a, b, 2.0, max_lag_s=25.0) == pytest.approx(5.5 / 2.0, abs=1e-2)


def test_tdoa_noisy_waveforms_are_unbiased() -> None:
    """With white noise the Fourier estimate stays unbiased (within 4 standard errors)."""
    rng = np.random.default_rng(5)
    n = np.arange(2048.0)
    delay = 3.37
    a0, b0 = _burst(n, seed=9), _burst(n - delay, seed=9)
    errors = np.array(
        [
            locate.tdoa_s(a0 + rng.normal(0, 0.3, n.size), b0 + rng.normal(0, 0.3, n.size), 1.0)
            - delay
            for _ in range(60)
        ]
    )
    std = errors.std(ddof=1)
    assert 0.0 < std < 0.1
    assert abs(errors.mean()) < N_SIGMA * std / math.sqrt(errors.size)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    delay=st.floats(-40.0, 40.0, allow_nan=False),
    f_max=st.floats(0.05, 0.4),
)
def test_tdoa_antisymmetric(seed: int, delay: float, f_max: float) -> None:
    n = np.arange(1024.0)
    a = _burst(n, seed, f_max, centre=500.0)
    b = _burst(n - delay, seed, f_max, centre=500.0)
    forward = locate.tdoa_s(a, b, 1.0)
    assert forward == pytest.approx(delay, abs=1e-5)
    assert locate.tdoa_s(b, a, 1.0) == pytest.approx(-forward, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    delay=st.floats(-20.0, 20.0, allow_nan=False),
    common=st.integers(0, 300),
    extra=st.integers(-200, 200),
)
def test_tdoa_shift_invariance(seed: int, delay: float, common: int, extra: int) -> None:
    """Delaying both waveforms changes nothing; delaying b by m samples adds m / fs."""
    fs = 250.0
    n = np.arange(1024.0)
    a = _burst(n, seed, centre=500.0)
    b = _burst(n - delay, seed, centre=500.0)
    base = locate.tdoa_s(a, b, fs)
    pad = np.zeros(common)
    assert locate.tdoa_s(np.r_[pad, a], np.r_[pad, b], fs) == pytest.approx(base, abs=1e-8)
    if extra >= 0:
        a2, b2 = a, np.r_[np.zeros(extra), b]
    else:
        a2, b2 = np.r_[np.zeros(-extra), a], b
    assert locate.tdoa_s(a2, b2, fs) == pytest.approx(base + extra / fs, abs=1e-8)


def test_arrival_times_relative_to_node_zero() -> None:
    n = np.arange(3000.0)
    delays = [0.0, 17.25, -8.6, 40.125]
    rows = np.stack([_burst(n - d, seed=2, centre=1500.0) for d in delays])
    fs = 1e3
    got = locate.arrival_times_s(rows, fs)
    assert got[0] == 0.0
    np.testing.assert_allclose(got * fs, delays, atol=1e-6)
    got_list = locate.arrival_times_s(list(rows), fs, max_lag_s=0.1)
    np.testing.assert_allclose(got_list, got, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Source location, reference geometry
# --------------------------------------------------------------------------------------------


def test_reference_geometry() -> None:
    assert np.hypot(*NODES_M.T) == pytest.approx(RADIUS_M)
    assert np.hypot(*(NODES_M[0] - NODES_M[1])) == pytest.approx(SPACING_M)
    assert locate.fibre_delay_s(10e3)[0] == pytest.approx(10e3 * 1.468 / 299_792_458.0)
    assert locate.fibre_delay_s(10e3)[0] == pytest.approx(48.966e-6, rel=1e-4)


@pytest.mark.parametrize(
    "source_m",
    [(0.0, 0.0), (2e3, 1e3), (-3e3, -4e3), (5e3, -2e3), (30e3, 5e3), (-12e3, -20e3)],
)
@pytest.mark.parametrize("fibres_m", [EQUAL_FIBRES_M, UNEQUAL_FIBRES_M], ids=["equal", "unequal"])
def test_locate_noise_free(source_m: tuple[float, float], fibres_m: NDArray[np.float64]) -> None:
    loc = locate.locate_source(
        NODES_M, _arrivals(source_m, fibres_m=fibres_m), SPEED_M_S, fibres_m, FIBRE_INDEX
    )
    assert _error_m(loc, source_m) < 1e-6 * SPACING_M  # brief asks for 1e-2 of the spacing
    assert loc.t0_s == pytest.approx(T0_S, abs=1e-12)
    assert loc.rms_residual_s < 1e-12
    assert not loc.ambiguous and loc.alternatives == ()
    assert loc.covariance is None and math.isnan(loc.sigma_x_m)
    np.testing.assert_allclose(loc.distances_m, np.hypot(*(NODES_M - source_m).T), atol=1e-6)
    np.testing.assert_allclose(loc.fibre_delays_s, fibres_m * FIBRE_INDEX / 299_792_458.0)


def test_unequal_fibres_need_the_correction() -> None:
    """Ignoring unequal fibre delays (25 km vs 10 km: 73 us) biases the fix by ~0.3 m."""
    source = (2e3, 1e3)
    arrivals = _arrivals(source, fibres_m=UNEQUAL_FIBRES_M)
    corrected = locate.locate_source(NODES_M, arrivals, SPEED_M_S, UNEQUAL_FIBRES_M)
    ignored = locate.locate_source(NODES_M, arrivals, SPEED_M_S)
    assert _error_m(corrected, source) < 1e-6
    assert 0.1 < _error_m(ignored, source) < 1.0
    # equal fibres: the common delay only shifts t0
    equal = locate.locate_source(NODES_M, _arrivals(source), SPEED_M_S)
    assert _error_m(equal, source) < 1e-6
    assert equal.t0_s == pytest.approx(T0_S + 10e3 * FIBRE_INDEX / 299_792_458.0, abs=1e-12)


def test_three_node_ambiguity_reported_and_resolved_by_a_fourth_node() -> None:
    """Behind node 0 the two TDOA hyperbolae intersect twice; both fit exactly."""
    source = (0.0, 15e3)
    loc = locate.locate_source(NODES_M, _arrivals(source), SPEED_M_S, EQUAL_FIBRES_M)
    assert loc.ambiguous
    candidates = [loc, *loc.alternatives]
    assert len(candidates) == 2
    assert min(_error_m(c, source) for c in candidates) < 1e-6
    assert all(c.rms_residual_s < 1e-12 for c in candidates)
    assert abs(candidates[0].y_m - candidates[1].y_m) > 1e3  # genuinely distinct
    assert loc.rms_residual_s <= loc.alternatives[0].rms_residual_s

    fibres4 = np.full(4, 10e3)
    loc4 = locate.locate_source(NODES4_M, _arrivals(source, NODES4_M, fibres4), SPEED_M_S, fibres4)
    assert not loc4.ambiguous
    assert _error_m(loc4, source) < 1e-6


@settings(max_examples=40, deadline=None)
@given(
    x=st.floats(-40e3, 40e3, allow_nan=False),
    y=st.floats(-40e3, 40e3, allow_nan=False),
    t0=st.floats(-5.0, 5.0, allow_nan=False),
)
def test_locate_recovers_any_source(x: float, y: float, t0: float) -> None:
    """3 nodes: the truth is the best or a listed alternative; 4 nodes: the unique best."""
    source = (x, y)
    loc3 = locate.locate_source(NODES_M, _arrivals(source, t0_s=t0), SPEED_M_S, EQUAL_FIBRES_M)
    assert min(_error_m(c, source) for c in (loc3, *loc3.alternatives)) < 1e-4
    fibres4 = np.full(4, 10e3)
    loc4 = locate.locate_source(
        NODES4_M, _arrivals(source, NODES4_M, fibres4, t0), SPEED_M_S, fibres4
    )
    assert _error_m(loc4, source) < 1e-4
    assert not loc4.ambiguous


# --------------------------------------------------------------------------------------------
# Timing noise: error scaling and covariance
# --------------------------------------------------------------------------------------------


def _noisy_errors(
    nodes_m: NDArray[np.float64],
    source: tuple[float, float],
    sigma_s: float,
    unit_noise: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], list[locate.Location]]:
    fibres = np.full(len(nodes_m), 10e3)
    clean = _arrivals(source, nodes_m, fibres)
    errors, locs = [], []
    for z in unit_noise:
        loc = locate.locate_source(
            nodes_m, clean + sigma_s * z, SPEED_M_S, fibres, timing_sigma_s=sigma_s
        )
        errors.append([loc.x_m - source[0], loc.y_m - source[1]])
        locs.append(loc)
    errors_arr = np.asarray(errors)
    mahalanobis2 = np.array(
        [
            e @ np.linalg.solve(loc.covariance[:2, :2], e)
            for e, loc in zip(errors_arr, locs, strict=True)
        ]
    )
    return errors_arr, mahalanobis2, locs


def test_timing_noise_error_scales_linearly_and_matches_covariance() -> None:
    source = (2e3, 1e3)
    unit = np.random.default_rng(2024).standard_normal((200, 3))
    rms = {}
    for sigma in (1e-4, 1e-3):
        errors, m2, locs = _noisy_errors(NODES_M, source, sigma, unit)
        rms[sigma] = float(np.sqrt(np.mean(np.sum(errors**2, axis=1))))
        # squared Mahalanobis distance ~ chi2(2): mean 2, variance 4
        assert abs(m2.mean() - 2.0) < N_SIGMA * 2.0 / math.sqrt(m2.size)
        predicted = math.hypot(locs[0].sigma_x_m, locs[0].sigma_y_m)
        assert rms[sigma] == pytest.approx(predicted, rel=0.2)
        assert rms[sigma] < 1e-2 * SPACING_M
        assert not any(loc.ambiguous for loc in locs)
    # same unit noise, 10x sigma: 10x error (linear regime)
    assert rms[1e-3] / rms[1e-4] == pytest.approx(10.0, rel=0.01)
    # 1 ms timing at 6 km/s is ~6 m of range; the fix error is of that order
    assert 2.0 < rms[1e-3] < 20.0


def test_overdetermined_five_nodes_with_noise() -> None:
    angles = np.radians([90.0, 162.0, 234.0, 306.0, 18.0])
    nodes5 = RADIUS_M * np.column_stack([np.cos(angles), np.sin(angles)])
    source = (-1.5e3, 3e3)
    fibres = np.full(5, 10e3)
    exact = locate.locate_source(nodes5, _arrivals(source, nodes5, fibres), SPEED_M_S, fibres)
    assert _error_m(exact, source) < 1e-6 and not exact.ambiguous

    sigma = 5e-4
    unit = np.random.default_rng(7).standard_normal((150, 5))
    _, m2, locs = _noisy_errors(nodes5, source, sigma, unit)
    assert abs(m2.mean() - 2.0) < N_SIGMA * 2.0 / math.sqrt(m2.size)
    # weighted residual sum of squares ~ chi2(N - 3)
    chi2 = np.array([np.sum((loc.residuals_s / sigma) ** 2) for loc in locs])
    assert abs(chi2.mean() - 2.0) < N_SIGMA * 2.0 / math.sqrt(chi2.size)
    # more nodes, smaller error than the 3-node fix for the same sigma
    three = locate.locate_source(
        NODES_M, _arrivals(source), SPEED_M_S, EQUAL_FIBRES_M, timing_sigma_s=sigma
    )
    assert math.hypot(locs[0].sigma_x_m, locs[0].sigma_y_m) < math.hypot(
        three.sigma_x_m, three.sigma_y_m
    )


def test_per_node_sigma_weights_the_fit() -> None:
    """A node with a huge sigma barely pulls the fix when its arrival is corrupted."""
    angles = np.radians([90.0, 162.0, 234.0, 306.0, 18.0])
    nodes5 = RADIUS_M * np.column_stack([np.cos(angles), np.sin(angles)])
    source = (1e3, -2e3)
    arrivals = _arrivals(source, nodes5, None)
    arrivals[4] += 0.05  # 300 m of range error on node 4
    plain = locate.locate_source(nodes5, arrivals, SPEED_M_S, timing_sigma_s=1e-3)
    weighted = locate.locate_source(
        nodes5, arrivals, SPEED_M_S, timing_sigma_s=[1e-3, 1e-3, 1e-3, 1e-3, 1.0]
    )
    assert _error_m(weighted, source) < 0.01 * _error_m(plain, source)
    assert weighted.sigma_x_m > 0.0 and weighted.covariance.shape == (3, 3)


# --------------------------------------------------------------------------------------------
# End to end: waveforms at the center node -> arrival times -> source
# --------------------------------------------------------------------------------------------


def test_waveforms_to_location_end_to_end() -> None:
    fs = 5e3
    t = np.arange(int(2.5 * fs)) / fs
    source = (-2.5e3, 4e3)
    arrivals = _arrivals(source, fibres_m=UNEQUAL_FIBRES_M, t0_s=-0.5)  # spans 0.2 .. 1.6 s
    rng = np.random.default_rng(1)
    freqs = rng.uniform(20.0, 1500.0, 6)
    phases = rng.uniform(0.0, 2 * np.pi, 6)

    def vibration(tt: NDArray[np.float64]) -> NDArray[np.float64]:
        env = np.exp(-0.5 * (tt / 0.02) ** 2)
        return env * np.sum(np.cos(2 * np.pi * freqs[:, None] * tt + phases[:, None]), axis=0)

    assert arrivals.min() > 0.1 and arrivals.max() < 2.0
    waveforms = [vibration(t - arrival) for arrival in arrivals]
    measured = locate.arrival_times_s(waveforms, fs, max_lag_s=2.0)
    np.testing.assert_allclose(measured, arrivals - arrivals[0], atol=1e-9)
    loc = locate.locate_source(NODES_M, measured, SPEED_M_S, UNEQUAL_FIBRES_M)
    assert _error_m(loc, source) < 1e-3
    assert loc.t0_s == pytest.approx(-0.5 - arrivals[0], abs=1e-8)


# --------------------------------------------------------------------------------------------
# Magnitude
# --------------------------------------------------------------------------------------------


def test_phase_to_length_against_hand_calculation() -> None:
    # n^3 = 1.468^3 = 3.163575232
    # (1 - mu) p12 - mu p11 = 0.83 * 0.270 - 0.17 * 0.121 = 0.2241 - 0.02057 = 0.20353
    # xi = 1.468 - 0.5 * 3.163575232 * 0.20353 = 1.468 - 0.3219412335 = 1.1460587665
    assert locate.strain_optic_factor() == pytest.approx(1.1460587665, rel=1e-10)
    # 890 rad at 1550 nm: d_L = 890 * 1.55e-6 / (2 pi * 1.1460587665) = 1.91573e-4 m
    d_l = locate.phase_to_length_change_m(890.0, 1550e-9)
    assert isinstance(d_l, float)
    assert d_l == pytest.approx(1.91573e-4, rel=1e-5)
    # 1 rad -> 0.215 um; linear and odd in the phase; two passes halve it
    one = locate.phase_to_length_change_m(1.0, 1550e-9)
    assert one == pytest.approx(2.15251e-7, rel=1e-5)
    arr = locate.phase_to_length_change_m(np.array([-2.0, 0.0, 3.0]), 1550e-9)
    np.testing.assert_allclose(arr, [-2.0 * one, 0.0, 3.0 * one], rtol=1e-14)
    assert locate.phase_to_length_change_m(1.0, 1550e-9, passes=2) == pytest.approx(one / 2)
    # back to the phase with the physics.md formula
    xi = 1.468 - 0.5 * 1.468**3 * ((1 - 0.17) * 0.270 - 0.17 * 0.121)
    assert d_l * (2 * math.pi / 1550e-9) * xi == pytest.approx(890.0, rel=1e-12)
    # no photo-elastic effect: xi = n
    assert locate.strain_optic_factor(1.5, 0.0, 0.0, 0.0) == 1.5


def test_strain_from_phase() -> None:
    one = locate.phase_to_length_change_m(1.0, 1550e-9)
    assert locate.strain_from_phase(1.0, 1550e-9, 5.0) == pytest.approx(one / 5.0)
    # 1e-6 rad/sqrt(Hz) floor on a 5 m PZT coil: ~4.3e-14 /sqrt(Hz)
    assert locate.strain_from_phase(1e-6, 1550e-9, 5.0) == pytest.approx(4.305e-14, rel=1e-3)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"node_xy_m": NODES_M[:2], "arrival_s": [0.0, 1.0]}, "node_xy_m"),
        ({"node_xy_m": [1.0, 2.0, 3.0]}, "node_xy_m"),
        ({"node_xy_m": [[0, 0], [1, 1], [np.inf, 0]]}, "node_xy_m"),
        ({"node_xy_m": [[0, 0], [1, 1], [2, 2]]}, "node_xy_m"),
        ({"node_xy_m": [[0, 0], [1, 0], [1, 0]]}, "node_xy_m"),
        ({"arrival_s": [0.0, 1.0]}, "arrival_s"),
        ({"arrival_s": [0.0, math.nan, 1.0]}, "arrival_s"),
        ({"speed_m_s": 0.0}, "speed_m_s"),
        ({"speed_m_s": -6e3}, "speed_m_s"),
        ({"speed_m_s": math.inf}, "speed_m_s"),
        ({"fibre_m": [1.0, 2.0]}, "fibre_m"),
        ({"fibre_m": [1.0, -2.0, 3.0]}, "fibre_m"),
        ({"fibre_index": 0.5}, "fibre_index"),
        ({"fibre_index": math.nan}, "fibre_index"),
        ({"timing_sigma_s": -1.0}, "timing_sigma_s"),
        ({"timing_sigma_s": [1.0, 0.0, 1.0]}, "timing_sigma_s"),
        ({"timing_sigma_s": [1.0, 1.0]}, "timing_sigma_s"),
        ({"fibre_index": "glass"}, "fibre_index"),
        ({"ambiguity_tol_s": -1.0}, "ambiguity_tol_s"),
    ],
)
def test_locate_validation(kwargs: dict, argument: str) -> None:
    call = {"node_xy_m": NODES_M, "arrival_s": [0.0, 0.1, 0.2], "speed_m_s": SPEED_M_S}
    call.update(kwargs)
    with pytest.raises(locate.LocationInputError) as info:
        locate.locate_source(**call)
    assert info.value.argument == argument
    assert str(info.value).startswith(f"{argument}: ")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("args", "kwargs", "argument"),
    [
        (([1.0, 2.0, 1.0], [1.0, 3.0, 1.0], 0.0), {}, "sample_rate_hz"),
        (([1.0, math.nan, 1.0], [1.0, 3.0, 1.0], 1.0), {}, "waveform_a"),
        (([1.0, 2.0, 1.0], [2.0, 2.0, 2.0], 1.0), {}, "waveform_b"),
        (([[1.0, 2.0]], [1.0, 3.0, 1.0], 1.0), {}, "waveform_a"),
        (([1.0, 2.0, 1.0], [1j, 3.0, 1.0], 1.0), {}, "waveform_b"),
        (([1.0], [1.0, 3.0, 1.0], 1.0), {}, "waveform_a"),
        (([1.0, 2.0, 1.0], [1.0, 3.0, 1.0], 1.0), {"max_lag_s": 0.5}, "max_lag_s"),
        (([1.0, 2.0, 1.0], [1.0, 3.0, 1.0], 1.0), {"interpolation": "cubic"}, "interpolation"),
    ],
)
def test_tdoa_validation(args: tuple, kwargs: dict, argument: str) -> None:
    with pytest.raises(locate.LocationInputError) as info:
        locate.tdoa_s(*args, **kwargs)
    assert info.value.argument == argument


def test_arrival_times_and_magnitude_validation() -> None:
    with pytest.raises(locate.LocationInputError, match=r"^waveforms: needs at least 2"):
        locate.arrival_times_s([np.ones(4)], 1.0)
    good = _burst(np.arange(200.0), seed=1, centre=100.0)
    with pytest.raises(locate.LocationInputError, match=r"^waveforms\[2\]: must be finite"):
        locate.arrival_times_s([good, good, np.full(200, np.nan)], 1.0)
    with pytest.raises(locate.LocationInputError, match=r"^wavelength_m"):
        locate.phase_to_length_change_m(1.0, 0.0)
    with pytest.raises(locate.LocationInputError, match=r"^delta_phi_rad"):
        locate.phase_to_length_change_m(math.inf, 1550e-9)
    with pytest.raises(locate.LocationInputError, match=r"^passes"):
        locate.phase_to_length_change_m(1.0, 1550e-9, passes=0)
    with pytest.raises(locate.LocationInputError, match=r"^poisson"):
        locate.strain_optic_factor(poisson=0.6)
    with pytest.raises(locate.LocationInputError, match=r"^sensing_length_m"):
        locate.strain_from_phase(1.0, 1550e-9, -1.0)
