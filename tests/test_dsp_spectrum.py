"""Streaming Welch PSD, phase PSD, noise floor and strain resolution (dsp/spectrum.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from dsp.spectrum import (
    WelchConfig,
    WelchState,
    equivalent_averages,
    gamma_median_ratio,
    length_resolution_m_per_rthz,
    noise_floor,
    phase_psd,
    phase_psd_config,
    strain_resolution,
    welch_result,
    welch_update,
)

SETTINGS = settings(max_examples=40, deadline=None)
WINDOWS = ["hann", "hamming", "blackman", "boxcar", "flattop", ("kaiser", 6.0), ("tukey", 0.3)]


def _split(x: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    return np.split(x, sorted(c % (len(x) + 1) for c in cuts))


def _stream(x: np.ndarray, cuts: list[int], config: WelchConfig) -> WelchState:
    state = WelchState()
    for part in _split(x, cuts):
        state = welch_update(part, state, config)
    return state


@st.composite
def _welch_case(draw, complex_input: bool):
    nperseg = draw(st.integers(8, 96))
    noverlap = draw(st.integers(0, nperseg - 1))
    n = draw(st.integers(nperseg, 6 * nperseg + 50))
    return {
        "nperseg": nperseg,
        "noverlap": noverlap,
        "n": n,
        "window": draw(st.sampled_from(WINDOWS)),
        "detrend": draw(st.sampled_from(["constant", "linear", False])),
        "scaling": draw(st.sampled_from(["density", "spectrum"])),
        "nfft": draw(st.one_of(st.none(), st.integers(nperseg, nperseg + 40))),
        "fs": draw(st.floats(0.5, 5e4)),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "cuts": draw(st.lists(st.integers(0, 10_000), max_size=8)),
        "complex": complex_input,
    }


def _check_against_scipy(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["n"]) + 0.3 * np.arange(case["n"]) / case["n"]
    if case["complex"]:
        x = x + 1j * rng.standard_normal(case["n"])
    config = WelchConfig(
        fs_hz=case["fs"],
        nperseg=case["nperseg"],
        noverlap=case["noverlap"],
        window=case["window"],
        detrend=case["detrend"],
        scaling=case["scaling"],
        onesided=not case["complex"],
        nfft=case["nfft"],
    )
    f, p = welch_result(_stream(x, case["cuts"], config), config)
    f_ref, p_ref = scipy.signal.welch(
        x,
        fs=case["fs"],
        window=case["window"],
        nperseg=case["nperseg"],
        noverlap=case["noverlap"],
        nfft=case["nfft"],
        detrend=case["detrend"],
        return_onesided=not case["complex"],
        scaling=case["scaling"],
        average="mean",
    )
    np.testing.assert_allclose(f, f_ref, rtol=1e-13, atol=0)
    np.testing.assert_allclose(p, p_ref, rtol=1e-9, atol=1e-12 * np.max(p_ref))
    assert p.dtype == np.float64 and p.shape == (config.n_freqs,)


@SETTINGS
@given(case=_welch_case(complex_input=False))
def test_real_stream_on_any_split_is_scipy_welch(case):
    _check_against_scipy(case)


@SETTINGS
@given(case=_welch_case(complex_input=True))
def test_complex_stream_on_any_split_is_scipy_two_sided_welch(case):
    _check_against_scipy(case)


def test_real_input_two_sided_matches_scipy():
    x = np.random.default_rng(3).standard_normal(3000)
    config = WelchConfig(fs_hz=10.0, nperseg=128, onesided=False)
    f, p = welch_result(welch_update(x, WelchState(), config), config)
    f_ref, p_ref = scipy.signal.welch(x, fs=10.0, nperseg=128, return_onesided=False)
    np.testing.assert_allclose(f, f_ref)
    np.testing.assert_allclose(p, p_ref, rtol=1e-10)


def test_update_leaves_the_input_state_alone_and_counts_segments():
    config = WelchConfig(fs_hz=1.0, nperseg=16, noverlap=8)
    x = np.random.default_rng(0).standard_normal(100)
    s1 = welch_update(x[:40], WelchState(), config)
    before = s1.psd_sum.copy()
    s2 = welch_update(x[40:], s1, config)
    np.testing.assert_array_equal(s1.psd_sum, before)
    assert s1.n_segments == (40 - 16) // 8 + 1
    assert s2.n_segments == (100 - 16) // 8 + 1
    assert s2.tail.size == 100 - 8 * s2.n_segments  # from the start of the next segment on


def test_sine_lines_integrate_to_their_power():
    fs, amp, f0 = 1000.0, 3.0, 123.4
    t = np.arange(1 << 15) / fs
    config = WelchConfig(fs_hz=fs, nperseg=1024, window="hann", detrend="constant")
    x = amp * np.sin(2 * np.pi * f0 * t + 0.7)
    f, p = welch_result(welch_update(x, WelchState(), config), config)
    df = f[1] - f[0]
    near = np.abs(f - f0) <= 6 * df
    np.testing.assert_allclose(np.sum(p[near]) * df, amp**2 / 2, rtol=1e-3)
    # complex exponential, two-sided: all its power A^2 at +f0, nothing at -f0
    config2 = WelchConfig(fs_hz=fs, nperseg=1024, window="hann", onesided=False)
    z = amp * np.exp(2j * np.pi * f0 * t)
    f2, p2 = welch_result(welch_update(z, WelchState(), config2), config2)
    np.testing.assert_allclose(np.sum(p2[np.abs(f2 - f0) <= 6 * df]) * df, amp**2, rtol=1e-3)
    assert np.sum(p2[np.abs(f2 + f0) <= 6 * df]) * df < 1e-6 * amp**2


def test_flattop_spectrum_scaling_gives_the_line_power():
    fs, amp, f0 = 2000.0, 1.7, 311.3
    x = amp * np.cos(2 * np.pi * f0 * np.arange(1 << 15) / fs)
    config = WelchConfig(fs_hz=fs, nperseg=2048, window="flattop", scaling="spectrum")
    _, p = welch_result(welch_update(x, WelchState(), config), config)
    np.testing.assert_allclose(np.max(p), amp**2 / 2, rtol=5e-3)  # flat top: < 0.02 dB scallop


@pytest.mark.parametrize("k", [1, 4, 16])
def test_white_noise_floor_within_its_statistical_tolerance(k):
    """Boxcar, disjoint segments: bins iid mean * Gamma(K, 1/K); median / m_K is the mean."""
    fs, sigma, nperseg = 200.0, 1.5, 4096
    rng = np.random.default_rng(10 + k)
    x = sigma * rng.standard_normal(k * nperseg)
    config = WelchConfig(fs_hz=fs, nperseg=nperseg, noverlap=0, window="boxcar")
    f, p = welch_result(welch_update(x, WelchState(), config), config)
    true = 2 * sigma**2 / fs  # one-sided density of white noise
    df = f[1] - f[0]
    m_bins = int(np.count_nonzero((f >= df) & (f <= fs / 2 - df)))
    est = noise_floor(f, p, df, fs / 2 - df, k)
    # asymptotic sd of a sample median: 1 / (2 pdf(median) sqrt(M)), in units of the mean
    g = scipy.stats.gamma(k, scale=1 / k)
    sd = 1 / (2 * g.pdf(g.median()) * math.sqrt(m_bins)) / g.median()
    assert abs(est / true - 1) < 5 * sd
    raw = float(np.median(p[(f >= df) & (f <= fs / 2 - df)])) / true
    assert abs(raw - gamma_median_ratio(k)) < 5 * sd * gamma_median_ratio(k)
    if 1 - gamma_median_ratio(k) > 10 * sd:
        assert abs(raw - 1) > 5 * sd  # the correction matters (K = 1, 4)
    assert gamma_median_ratio(1) == pytest.approx(math.log(2))


def test_noise_floor_ignores_a_few_lines():
    f = np.linspace(0, 100, 1001)
    p = np.full(f.size, 2.0)
    p[[100, 300, 301, 700]] = 1e6
    assert noise_floor(f, p, 1.0, 99.0, 1e9) == pytest.approx(2.0, rel=1e-6)


def test_equivalent_averages_closed_form_and_data():
    disjoint = WelchConfig(fs_hz=1.0, nperseg=256, noverlap=0, window="hann")
    assert equivalent_averages(disjoint, 12) == pytest.approx(12.0)
    half = WelchConfig(fs_hz=1.0, nperseg=256, noverlap=128, window="hann")
    for k in (2, 7, 40):  # periodic Hann at 50 %: rho = sum sin^2 cos^2 / sum sin^4 = 1/6
        assert equivalent_averages(half, k) == pytest.approx(k / (1 + (1 / 18) * (1 - 1 / k)))
    # the data: relative variance of the bins of an estimate is 1 / K_eff (75 % overlap,
    # where the correction is large); 6 estimates x 509 bins: ~4 % sampling sd
    quarter = WelchConfig(fs_hz=1.0, nperseg=1024, noverlap=768, window="hann")
    rng = np.random.default_rng(4)
    rel = []
    for _ in range(6):
        state = welch_update(rng.standard_normal(8 * 1024), WelchState(), quarter)
        _, p = welch_result(state, quarter)
        rel.append(p[2:-2] / np.mean(p[2:-2]))
    k = state.n_segments
    assert k == 29
    k_eff = equivalent_averages(quarter, k)
    assert 1 / np.var(np.concatenate(rel)) == pytest.approx(k_eff, rel=0.12)
    assert k_eff < 0.6 * k  # the overlap correction is far outside that tolerance


def test_phase_psd_removes_the_drift_and_keeps_line_and_floor():
    fs, n = 1000.0, 1 << 16
    t = np.arange(n) / fs
    rng = np.random.default_rng(7)
    sigma = 1e-3
    drift = 40.0 * t + 3.0 * (t / t[-1]) ** 2  # thermal ramp, hundreds of rad
    line = 0.01 * np.sin(2 * np.pi * 50.0 * t)
    phase = drift + line + sigma * rng.standard_normal(n)
    f, p = phase_psd(phase, fs, 1024)
    df = f[1] - f[0]
    k_eff = equivalent_averages(phase_psd_config(fs, 1024), (n - 1024) // 512 + 1)
    floor = noise_floor(f, p, 100.0, 450.0, k_eff)
    assert floor == pytest.approx(2 * sigma**2 / fs, rel=0.05)
    near = np.abs(f - 50.0) <= 5 * df
    np.testing.assert_allclose(np.sum(p[near]) * df, 0.01**2 / 2, rtol=0.02)
    # the low bins are at the floor too; without the linear detrend the ramp swamps them
    low = (f > 5.0) & (f < 20.0)
    assert np.median(p[low]) == pytest.approx(floor * gamma_median_ratio(k_eff), rel=0.2)
    _, p_raw = scipy.signal.welch(phase, fs=fs, nperseg=1024, detrend="constant")
    assert np.median(p_raw[low]) > 100 * floor
    # streaming with the same config gives the same estimate
    config = phase_psd_config(fs, 1024)
    state = WelchState()
    for part in np.array_split(phase, 7):
        state = welch_update(part, state, config)
    # (the 2600 rad ramp cancels in the detrend: rounding ~1e-16 * 2600^2 relative to 2e-9)
    np.testing.assert_allclose(welch_result(state, config)[1], p, rtol=1e-6)


def test_strain_and_length_resolution_closed_form():
    floor = 4e-10  # rad^2/Hz -> 2e-5 rad/sqrt(Hz)
    lam, length = 1550e-9, 5.0
    n, mu, p11, p12 = 1.468, 0.17, 0.121, 0.270
    xi = n - 0.5 * n**3 * ((1 - mu) * p12 - mu * p11)
    assert xi == pytest.approx(1.146058, abs=1e-6)
    d_l = 2e-5 * lam / (2 * math.pi * xi)
    assert length_resolution_m_per_rthz(floor, lam) == pytest.approx(d_l, rel=1e-12)
    assert strain_resolution(floor, lam, length) == pytest.approx(d_l / length, rel=1e-12)
    assert strain_resolution(floor, lam, length, passes=2) == pytest.approx(d_l / length / 2)
    assert strain_resolution(0.0, lam, length) == 0.0


def test_bad_input_names_the_argument():
    cases = [
        (lambda: WelchConfig(fs_hz=0.0, nperseg=8), "fs_hz"),
        (lambda: WelchConfig(fs_hz=1.0, nperseg=0), "nperseg"),
        (lambda: WelchConfig(fs_hz=1.0, nperseg=8, noverlap=8), "noverlap"),
        (lambda: WelchConfig(fs_hz=1.0, nperseg=8, nfft=4), "nfft"),
        (lambda: WelchConfig(fs_hz=1.0, nperseg=8, detrend="quadratic"), "detrend"),
        (lambda: WelchConfig(fs_hz=1.0, nperseg=8, scaling="power"), "scaling"),
        (lambda: WelchConfig(fs_hz=1.0, nperseg=8, window="no-such-window"), "window"),
        (
            lambda: welch_update(np.ones(9, complex), WelchState(), WelchConfig(1.0, 8)),
            "block",
        ),
        (lambda: welch_update(np.ones((3, 3)), WelchState(), WelchConfig(1.0, 8)), "block"),
        (lambda: welch_result(WelchState(), WelchConfig(1.0, 8)), "state"),
        (lambda: noise_floor([0.0, 1.0], [1.0, 1.0], 5.0, 6.0, 1), "f_lo_hz"),
        (lambda: noise_floor([0.0, 1.0], [1.0], 0.0, 1.0, 1), "psd"),
        (lambda: noise_floor([0.0, 1.0], [1.0, 1.0], 0.0, 1.0, 0), "n_averages"),
        (lambda: strain_resolution(-1.0, 1.55e-6, 1.0), "phase_floor_rad2_per_hz"),
        (lambda: strain_resolution(1e-9, 1.55e-6, 0.0), "sensing_length_m"),
        (lambda: phase_psd(np.ones(64, complex), 1.0, 16), "phase_rad"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()
