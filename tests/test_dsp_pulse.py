"""RRC pulse shaping, matched filters and exact-phase upconversion (dsp/pulse.py)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.integrate
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from dsp.ddc import DDCConfig, DDCState, ddc_process
from dsp.pulse import (
    check_cyclic_carrier,
    matched_group_delay_samples,
    matched_output_sample,
    matched_taps,
    rrc_pulse,
    shape_symbols,
    transmit_pulse,
    upconvert,
)

SETTINGS = settings(max_examples=25, deadline=None)


def _rrc_fourier(t: float, beta: float) -> float:
    """Independent reference: inverse Fourier transform of sqrt(raised-cosine spectrum)."""
    f1, f2 = (1 - beta) / 2, (1 + beta) / 2
    tol = {"epsabs": 1e-14, "epsrel": 1e-14, "limit": 200}
    v = 2 * scipy.integrate.quad(lambda f: math.cos(2 * math.pi * f * t), 0, f1, **tol)[0]
    if beta > 0:
        v += (
            2
            * scipy.integrate.quad(
                lambda f: math.cos(math.pi / (2 * beta) * (f - f1)) * math.cos(2 * math.pi * f * t),
                f1,
                f2,
                **tol,
            )[0]
        )
    return v


def _cgauss(rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)) / math.sqrt(2)


def _fft_delay(x: np.ndarray, delay_samples: float) -> np.ndarray:
    """Band-limited (periodic) delay of a cyclic waveform: x(t - delay)."""
    f = np.fft.fftfreq(x.size)
    return np.fft.ifft(np.fft.fft(x) * np.exp(-2j * np.pi * f * delay_samples))


# ---------------------------------------------------------------------------------------------
# rrc_pulse


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_rrc_matches_inverse_fourier_of_sqrt_raised_cosine(beta):
    t = [0.0, 1e-13, 0.3, 1.0, 2.5, 7.3, -4.1]
    if beta > 0:
        ts = 1 / (4 * beta)  # the removable singularity and its neighbourhood
        t += [ts, -ts, ts + 1e-9, ts - 1e-7, ts + 1e-6, ts - 1.0001e-6, ts + 3e-6, ts + 1e-5]
    got = rrc_pulse(np.array(t), beta)
    ref = np.array([_rrc_fourier(x, beta) for x in t])
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


def test_rrc_special_values_and_sinc_limit():
    for beta in (0.2, 0.5, 1.0):
        assert rrc_pulse(np.array([0.0]), beta)[0] == pytest.approx(1 + beta * (4 / np.pi - 1))
        a = np.pi / (4 * beta)
        edge = beta / math.sqrt(2) * ((1 + 2 / np.pi) * math.sin(a) + (1 - 2 / np.pi) * math.cos(a))
        assert rrc_pulse(np.array([1 / (4 * beta)]), beta)[0] == pytest.approx(edge, abs=1e-15)
    t = np.linspace(-10, 10, 2001)
    np.testing.assert_allclose(rrc_pulse(t, 0.0), np.sinc(t), atol=1e-15)


@SETTINGS
@given(beta=st.floats(0.05, 1.0), t=st.floats(-30, 30))
def test_rrc_is_even(beta, t):
    v = rrc_pulse(np.array([t, -t]), beta)
    assert v[0] == v[1]


@pytest.mark.parametrize("beta", [0.25, 0.5])
def test_rrc_unit_energy_and_raised_cosine_self_convolution(beta):
    k = 64  # samples per symbol of the numerical integral
    t = np.arange(-200 * k, 200 * k + 1) / k
    p = rrc_pulse(t, beta)
    assert np.sum(p * p) / k == pytest.approx(1.0, abs=1e-4)
    rc = scipy.signal.fftconvolve(p, p)[::k] / k  # (rrc * rrc)(j), j integer
    centre = rc.size // 2
    assert rc[centre] == pytest.approx(1.0, abs=1e-4)
    assert np.max(np.abs(rc[centre - 20 : centre + 21][np.arange(41) != 20])) < 1e-4


# ---------------------------------------------------------------------------------------------
# transmit_pulse


@pytest.mark.parametrize(("sps", "span", "beta"), [(20, 16, 0.25), (8, 16, 0.5), (3, 4, 0.35)])
def test_transmit_pulse_shape_and_energy(sps, span, beta):
    g = transmit_pulse(sps, span, beta)
    assert g.dtype == np.float64 and g.size == span * sps + 1 and g.size % 2 == 1
    assert np.sum(g**2) == pytest.approx(sps, rel=1e-13)
    np.testing.assert_allclose(g, g[::-1], rtol=0, atol=1e-15)
    assert int(np.argmax(g)) == span * sps // 2
    # it is the sampled analytic pulse up to the energy normalisation (G ~ 1)
    ref = rrc_pulse((np.arange(g.size) - span * sps // 2) / sps, beta)
    scale = g[span * sps // 2] / ref[span * sps // 2]
    assert scale == pytest.approx(1.0, abs=2e-3)
    np.testing.assert_allclose(g, scale * ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("beta", [0.25, 0.3, 0.35, 0.4, 0.45, 0.5])
def test_transmit_pulse_self_convolution_is_nyquist(beta):
    sps, span = 8, 16
    g = transmit_pulse(sps, span, beta)
    rc = np.convolve(g, g)
    centre = g.size - 1
    zeros = rc[centre + sps * np.arange(1, span + 1)]
    assert rc[centre] == pytest.approx(sps, rel=1e-12)  # sum g^2
    rel = np.abs(zeros) / rc[centre]
    # Truncation to 16 symbols: the worst residual is at lag ~span/2 (measured 3.3e-3 for
    # beta = 0.3, 1.4e-3 .. 2e-3 for 0.35 .. 0.45, 5.4e-4 / 1.8e-4 for 0.25 / 0.5); the total
    # ISI power 2 sum rel^2 stays < 3e-5 (measured 2.7e-5 for beta = 0.3).
    assert np.max(rel) < 4e-3
    assert 2 * np.sum(rel**2) < 3e-5
    if beta in (0.25, 0.5):
        assert np.max(rel) < 1e-3
    # span 32: < 1e-3 for every beta (measured <= 6.8e-4)
    g32 = transmit_pulse(sps, 32, beta)
    rc32 = np.convolve(g32, g32)
    c32 = g32.size - 1
    assert np.max(np.abs(rc32[c32 + sps * np.arange(1, 33)])) / rc32[c32] < 1e-3


# ---------------------------------------------------------------------------------------------
# matched_taps


def test_matched_taps_zero_delay_is_time_reversed_pulse():
    sps, span, beta = 20, 16, 0.25
    g = transmit_pulse(sps, span, beta)
    h = matched_taps(sps, span, beta)
    assert h.dtype == np.float64 and h.size == span * sps + sps + 1
    assert np.all(h[:sps] == 0)
    np.testing.assert_allclose(h[sps:], g[::-1] / sps, rtol=1e-12, atol=1e-16)
    assert matched_group_delay_samples(sps, span) == span * sps // 2 + sps
    assert int(np.argmax(h)) == matched_group_delay_samples(sps, span)


@SETTINGS
@given(
    sps=st.sampled_from([2, 4, 8, 20]),
    beta=st.floats(0.1, 1.0),
    frac=st.floats(0.0, 0.999999),
)
def test_matched_taps_noise_gain(sps, beta, frac):
    h = matched_taps(sps, 16, beta, frac * sps)
    assert np.sum(h**2) == pytest.approx(1.0 / sps, rel=1e-12)


def test_matched_filter_output_noise_variance_is_sigma2_over_sps():
    sps, span = 20, 16
    rng = np.random.default_rng(3)
    sigma2 = 2.0  # per complex sample
    w = math.sqrt(sigma2) * _cgauss(rng, 400_000)
    y = scipy.signal.lfilter(matched_taps(sps, span, 0.25, 7.3), 1, w)
    at_symbols = y[matched_group_delay_samples(sps, span) + sps :: sps]  # 20k outputs
    assert np.var(at_symbols) == pytest.approx(sigma2 / sps, rel=0.04)


@SETTINGS
@given(
    sps=st.sampled_from([4, 8, 20]),
    beta=st.sampled_from([0.25, 0.35, 0.5]),
    frac=st.floats(0.0, 0.999999),
    first=st.integers(0, 60),
    seed=st.integers(0, 2**32 - 1),
)
def test_matched_filter_recovers_symbols_at_documented_sample(sps, beta, frac, first, seed):
    """End to end: shape, delay by first + D (band-limited), lfilter, sample, compare."""
    span, n = 16, 256
    delay = frac * sps
    rng = np.random.default_rng(seed)
    a = _cgauss(rng, n)
    tx = shape_symbols(a, sps, transmit_pulse(sps, span, beta))  # one AWG loop
    rx = np.roll(_fft_delay(tx, delay), first)  # symbol m centred at first + delay + m sps
    y = scipy.signal.lfilter(matched_taps(sps, span, beta, delay), 1, np.tile(rx, 3))
    m = np.arange(n, 2 * n)  # symbols of the second loop: filter fully settled
    est = y[matched_output_sample(m, sps, span, first)]
    isi = np.mean(np.abs(est - a[m % n]) ** 2) / np.mean(np.abs(a) ** 2)
    assert isi < 1e-4  # measured 2e-7 .. 2.6e-5 (truncation to 16 symbols)


def test_matched_filter_through_the_ddc():
    """The DDC with matched taps, decim = sps, first output at matched_output_sample(0)."""
    fs, sps, span, beta = 1e9, 20, 16, 0.25
    carriers = (100e6, 200e6, 300e6)
    n = 1024
    rng = np.random.default_rng(5)
    sym = [_cgauss(rng, n) for _ in carriers]
    g = transmit_pulse(sps, span, beta)
    loop = sum(
        upconvert(shape_symbols(a, sps, g), f, fs) for a, f in zip(sym, carriers, strict=True)
    )
    cfg = DDCConfig(fs, carriers, matched_taps(sps, span, beta), sps, "ftf")
    state = DDCState.initial(cfg, matched_output_sample(0, sps, span))
    y, _ = ddc_process(np.tile(loop, 2).astype(np.complex64), state, cfg)
    m = np.arange(n, y.shape[1])
    for i, a in enumerate(sym):
        err = np.mean(np.abs(y[i, m] - a[m % n]) ** 2)
        assert err < 1e-5  # measured ~3e-6: truncation ISI + neighbours + float32


def test_matched_output_sample_scalar_and_array():
    q = matched_group_delay_samples(8, 10)
    assert matched_output_sample(3, 8, 10, 5) == 5 + 24 + q
    assert isinstance(matched_output_sample(3, 8, 10), int)
    arr = matched_output_sample(np.array([0, 1, 2]), 8, 10, 1)
    np.testing.assert_array_equal(arr, 1 + q + 8 * np.arange(3))
    assert arr.dtype == np.int64


# ---------------------------------------------------------------------------------------------
# shape_symbols


def test_shape_linear_matches_direct_convolution():
    rng = np.random.default_rng(1)
    sps, a = 5, _cgauss(rng, 40)
    g = transmit_pulse(sps, 6, 0.3)
    up = np.zeros(a.size * sps, dtype=np.complex128)
    up[::sps] = a
    ref = np.convolve(up, g)[g.size // 2 : g.size // 2 + up.size]
    out = shape_symbols(a, sps, g, cyclic=False)
    assert out.dtype == np.complex128 and out.shape == (a.size * sps,)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-13)


def test_shape_cyclic_equals_middle_of_linear_shaping_of_tiled_sequence():
    rng = np.random.default_rng(2)
    sps, a = 8, _cgauss(rng, 64)
    g = transmit_pulse(sps, 16, 0.25)
    cyc = shape_symbols(a, sps, g)
    lin = shape_symbols(np.tile(a, 3), sps, g, cyclic=False)
    np.testing.assert_allclose(cyc, lin[a.size * sps : 2 * a.size * sps], rtol=0, atol=1e-13)


def test_shape_cyclic_with_pulse_longer_than_loop_and_complex_pulse():
    rng = np.random.default_rng(4)
    sps, a = 3, _cgauss(rng, 4)  # loop of 12 samples, pulse of 25
    pulse = rng.standard_normal(25) + 1j * rng.standard_normal(25)
    m, c = a.size * sps, 12
    ref = np.zeros(m, dtype=np.complex128)
    for n in range(m):
        for k in range(pulse.size):
            for s in range(a.size):
                if (n - s * sps + c - k) % m == 0:
                    ref[n] += a[s] * pulse[k]
    np.testing.assert_allclose(shape_symbols(a, sps, pulse), ref, rtol=0, atol=1e-12)


def test_shape_real_symbols_give_complex128():
    out = shape_symbols(np.array([1.0, -1.0]), 2, np.array([0.5, 1.0, 0.5]))
    np.testing.assert_allclose(out, [1, 0, -1, 0], atol=1e-15)
    assert out.dtype == np.complex128


# ---------------------------------------------------------------------------------------------
# upconvert, check_cyclic_carrier


def _exact_carrier(n: np.ndarray | list[int], f: float, fs: float) -> np.ndarray:
    r = Fraction(f) / Fraction(fs)
    turns = [float(k * r - math.floor(k * r)) for k in n]
    return np.exp(2j * np.pi * np.array(turns))


@pytest.mark.parametrize(
    ("f", "fs"),
    [(100e6, 1e9), (-300e6, 1e9), (123456789.123, 999999999.7), (0.1, 3.0)],
)
def test_upconvert_exact_phase_for_huge_first_sample(f, fs):
    first = 10**15 + 7
    n = 3000
    out = upconvert(np.ones(n), f, fs, first)
    assert out.dtype == np.complex128
    ref = _exact_carrier(range(first, first + n), f, fs)
    assert np.max(np.abs(out - ref)) < 1e-14
    # the naive float64 phase n * (f / fs) is off by orders of magnitude more at this n
    naive = np.exp(2j * np.pi * np.mod((first + np.arange(n)) * (f / fs), 1.0))
    assert np.max(np.abs(naive - ref)) > 1e-4


@SETTINGS
@given(cut=st.integers(0, 500), first=st.integers(0, 10**18), seed=st.integers(0, 1000))
def test_upconvert_cut_anywhere_and_multiplies_baseband(cut, first, seed):
    rng = np.random.default_rng(seed)
    x = _cgauss(rng, 500)
    f, fs = 123.4e6, 1e9
    whole = upconvert(x, f, fs, first)
    parts = np.concatenate(
        [upconvert(x[:cut], f, fs, first), upconvert(x[cut:], f, fs, first + cut)]
    )
    np.testing.assert_allclose(parts, whole, rtol=0, atol=1e-14)
    ref = x * _exact_carrier(range(first, first + x.size), f, fs)
    np.testing.assert_allclose(whole, ref, rtol=0, atol=1e-14)


def test_cyclic_carrier_loop_is_seamless():
    fs, n = 1e9, 20 * 1000
    assert check_cyclic_carrier(n, 100e6, fs) == 2000
    assert check_cyclic_carrier(n, -300e6, fs) == -6000
    x = np.ones(n)
    np.testing.assert_array_equal(upconvert(x, 100e6, fs, n), upconvert(x, 100e6, fs, 0))
    np.testing.assert_array_equal(upconvert(x, 100e6, fs, 7 * n), upconvert(x, 100e6, fs, 0))


def test_cyclic_carrier_rejects_fractional_cycles():
    with pytest.raises(ValueError, match=r"carrier_hz: .*completes 100\.5 cycles"):
        check_cyclic_carrier(1005, 100e6, 1e9)
    with pytest.raises(ValueError, match="n_samples"):
        check_cyclic_carrier(0, 100e6, 1e9)
    with pytest.raises(ValueError, match="fs_hz"):
        check_cyclic_carrier(100, 100e6, 0.0)


# ---------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: rrc_pulse(np.array([0.0]), 1.5), "beta"),
        (lambda: rrc_pulse(np.array([np.nan]), 0.3), "t_symbols"),
        (lambda: transmit_pulse(1, 16, 0.3), "sps"),
        (lambda: transmit_pulse(8, 0, 0.3), "span_symbols"),
        (lambda: transmit_pulse(3, 5, 0.3), "even product"),
        (lambda: transmit_pulse(8.0, 16, 0.3), "sps"),
        (lambda: matched_taps(8, 16, 0.3, 8.0), "delay_samples"),
        (lambda: matched_taps(8, 16, 0.3, -0.1), "delay_samples"),
        (lambda: matched_taps(8, 16, -0.1), "beta"),
        (lambda: matched_output_sample(np.array([0.5]), 8, 16), "symbol_index"),
        (lambda: matched_output_sample(0.5, 8, 16), "symbol_index"),
        (lambda: matched_output_sample(1, 8, 16, 2.5), "first_symbol_sample"),
        (lambda: shape_symbols(np.zeros((2, 2)), 4, np.ones(3)), "symbols"),
        (lambda: shape_symbols(np.zeros(0), 4, np.ones(3)), "symbols"),
        (lambda: shape_symbols(np.zeros(4), 4, np.ones(4)), "pulse"),
        (lambda: shape_symbols(np.zeros(4), 0, np.ones(3)), "sps"),
        (lambda: upconvert(np.zeros((2, 2)), 1e6, 1e9), "baseband"),
        (lambda: upconvert(np.zeros(2), 1e6, -1e9), "fs_hz"),
        (lambda: upconvert(np.zeros(2), math.inf, 1e9), "carrier_hz"),
    ],
)
def test_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
