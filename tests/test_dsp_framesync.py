"""Symbol timing, pilot position and frame synchronisation (dsp/framesync.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from dsp.framesync import FrameSync, frame_offset, pilot_offset, symbol_timing
from dsp.pulse import (
    matched_group_delay_samples,
    matched_output_sample,
    matched_taps,
    shape_symbols,
    transmit_pulse,
)

SETTINGS = settings(max_examples=25, deadline=None)
SPS, SPAN = 20, 16
Q = matched_group_delay_samples(SPS, SPAN)


def _cgauss(rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)) / math.sqrt(2)


def _fft_delay(x: np.ndarray, delay_samples: float) -> np.ndarray:
    """Band-limited (periodic) delay of a cyclic waveform: x(t - delay)."""
    f = np.fft.fftfreq(x.size)
    return np.fft.ifft(np.fft.fft(x) * np.exp(-2j * np.pi * f * delay_samples))


def _circ_err(a: float, b: float, period: float) -> float:
    return (a - b + period / 2) % period - period / 2


def _mf_output(a: np.ndarray, beta: float, delay: float, noise_std: float = 0.0, seed: int = 0):
    """RRC-shaped loop of symbols a, delayed by ``delay`` samples, (noise), matched-filtered
    (delay-0 taps, scipy lfilter) at the raw rate; returns the settled second loop."""
    tx = shape_symbols(a, SPS, transmit_pulse(SPS, SPAN, beta))
    rx = np.tile(_fft_delay(tx, delay), 2)
    if noise_std:
        rx = rx + noise_std * _cgauss(np.random.default_rng(seed + 1), rx.size)
    y = scipy.signal.lfilter(matched_taps(SPS, SPAN, beta), 1, rx)
    return y[tx.size :]  # sample 0 here is sample 0 of a loop


# ---------------------------------------------------------------------------------------------
# symbol_timing


@SETTINGS
@given(delay=st.floats(0.0, SPS - 1e-6), beta=st.sampled_from([0.25, 0.5]))
def test_timing_over_a_whole_loop_is_exact(delay, beta):
    """Summed over a whole AWG loop the square-law line has no self-noise: the estimate equals
    the true centre to rounding (its phase is the delay's linear phase, for any data)."""
    a = _cgauss(np.random.default_rng(7), 512)
    est = symbol_timing(_mf_output(a, beta, delay), SPS)
    assert 0.0 <= est.offset_samples < SPS
    assert abs(_circ_err(est.offset_samples, (delay + Q) % SPS, SPS)) < 1e-9
    assert est.n_symbols == 512 and est.sps == SPS


@pytest.mark.parametrize("delay", [0.0, 3.3, 9.99, 14.5, 19.9])
@pytest.mark.parametrize("beta", [0.25, 0.5])
def test_timing_recovers_fractional_delay_on_a_partial_window(delay, beta):
    """A window that is not a whole loop (self-noise present): < 0.02 samples at sps 20."""
    rng = np.random.default_rng(int(delay * 10) + int(beta * 100))
    y = _mf_output(_cgauss(rng, 8192), beta, delay)
    start, n_sym = 1237, 6000  # arbitrary raw-sample start, 6000 symbols
    est = symbol_timing(y[start : start + n_sym * SPS], SPS)
    err = _circ_err(est.offset_samples, (delay + Q - start) % SPS, SPS)
    assert abs(err) < 0.02  # measured rms 0.004 (beta 0.25), 0.002 (0.5) over seeds
    # the delay to give matched_taps, in the window's input coordinates
    d_in = est.input_delay_samples(Q)
    assert abs(_circ_err(d_in, (delay - start) % SPS, SPS)) < 0.02
    assert est.line_ratio == pytest.approx(0.033 if beta == 0.25 else 0.071, rel=0.1)


def test_timing_with_noise_and_line_ratio_falls():
    rng = np.random.default_rng(11)
    a = _cgauss(rng, 4096)  # unit symbol power at the matched-filter output
    clean = symbol_timing(_mf_output(a, 0.35, 6.2), SPS)
    # noise variance 9 per raw sample -> 9 / sps = 0.45 per symbol (SNR 3.5 dB)
    noisy = symbol_timing(_mf_output(a, 0.35, 6.2, noise_std=3.0, seed=3), SPS)
    assert abs(_circ_err(noisy.offset_samples, (6.2 + Q) % SPS, SPS)) < 0.1
    # white noise adds a flat 0.45 to the mean power and nothing to the line (on average)
    assert noisy.line_ratio == pytest.approx(clean.line_ratio / 1.45, rel=0.1)


@SETTINGS
@given(shift=st.integers(-100, 100), delay=st.floats(0.0, SPS - 1e-6))
def test_timing_sign_convention_delay_increases_offset(shift, delay):
    """Delaying the input by k samples moves the estimate by +k (mod sps)."""
    y = _mf_output(_cgauss(np.random.default_rng(1), 256), 0.3, delay)
    base = symbol_timing(y, SPS).offset_samples
    moved = symbol_timing(np.roll(y, shift), SPS).offset_samples
    assert abs(_circ_err(moved, base + shift, SPS)) < 1e-9


def test_timing_then_delayed_matched_filter_recovers_symbols():
    """Full use: estimate with the delay-0 filter, refilter with the estimated delay, sample."""
    rng = np.random.default_rng(21)
    beta, delay, n = 0.3, 12.71, 2048
    a = _cgauss(rng, n)
    rx = _fft_delay(shape_symbols(a, SPS, transmit_pulse(SPS, SPAN, beta)), delay)
    y0 = scipy.signal.lfilter(matched_taps(SPS, SPAN, beta), 1, np.tile(rx, 2))[rx.size :]
    d = symbol_timing(y0, SPS).input_delay_samples(Q)
    y = scipy.signal.lfilter(matched_taps(SPS, SPAN, beta, d), 1, np.tile(rx, 3))
    m = np.arange(n, 2 * n)
    est = y[matched_output_sample(m, SPS, SPAN)]
    assert np.mean(np.abs(est - a[m % n]) ** 2) < 1e-4


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: symbol_timing(np.ones(10), 1), "sps"),
        (lambda: symbol_timing(np.ones(10), 20), "baseband"),
        (lambda: symbol_timing(np.zeros(100), 20), "all zero"),
        (lambda: symbol_timing(np.ones((2, 50)), 20), "baseband"),
    ],
)
def test_timing_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# pilot_offset


def _symbols_with_pilots(rng, n, period, residue, amplitude=20.0, va=12.0):
    s = math.sqrt(va) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    s[residue::period] = amplitude
    return s + _cgauss(rng, n)  # plus vacuum noise


@SETTINGS
@given(period=st.integers(2, 40), data=st.data())
def test_pilot_offset_finds_the_pilot_residue(period, data):
    residue = data.draw(st.integers(0, period - 1))
    start = data.draw(st.integers(0, 3 * period))  # the stream does not start on a pilot
    rng = np.random.default_rng(period * 100 + residue)
    s = _symbols_with_pilots(rng, 2000 + 3 * period, period, residue)[start:]
    assert pilot_offset(s, period) == (residue - start) % period


def test_pilot_offset_rejects_no_pilots_and_wrong_period():
    rng = np.random.default_rng(0)
    s = _symbols_with_pilots(rng, 5000, 10, 3)
    assert pilot_offset(s, 10) == 3
    with pytest.raises(ValueError, match="symbols: no pilot residue stands out"):
        pilot_offset(math.sqrt(12) * _cgauss(rng, 5000), 10)
    with pytest.raises(ValueError, match="symbols: no pilot residue"):
        pilot_offset(s, 7)  # the comb does not line up with period 7
    with pytest.raises(ValueError, match="period"):
        pilot_offset(s, 1)
    with pytest.raises(ValueError, match="symbols"):
        pilot_offset(s[:5], 10)
    with pytest.raises(ValueError, match="symbols: no pilot residue"):
        pilot_offset(np.zeros(50), 10)
    with pytest.raises(ValueError, match="min_ratio"):
        pilot_offset(s, 10, min_ratio=1.0)


# ---------------------------------------------------------------------------------------------
# frame_offset


def _brute_force(received, known, cyclic, segment):
    """Loop reference: metric per lag, argmax, least-squares gains (np.vdot per lag)."""
    n, length = received.size, known.size
    lags = range(length) if cyclic else range(length - n + 1)
    metric = []
    for d in lags:
        window = known[(d + np.arange(n)) % length]
        corr = sum(
            abs(np.vdot(window[k : k + segment], received[k : k + segment]))
            for k in range(0, n, segment)
        )
        metric.append(corr / math.sqrt(np.vdot(window, window).real))
    metric = np.array(metric)
    d = int(np.argmax(metric))
    window = known[(d + np.arange(n)) % length]
    gain = np.vdot(window, received) / np.vdot(window, window).real
    rms = math.sqrt(np.mean(np.delete(metric, d) ** 2))
    return metric, d, gain, metric[d] / rms


@SETTINGS
@given(
    length=st.integers(8, 60),
    data=st.data(),
    cyclic=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_frame_offset_matches_brute_force(length, data, cyclic, seed):
    n = data.draw(st.integers(3, length - 1))
    segment = data.draw(st.one_of(st.none(), st.integers(1, n)))
    rng = np.random.default_rng(seed)
    known = _cgauss(rng, length)
    received = _cgauss(rng, n)  # arbitrary data: compares every lag, not just the peak
    got = frame_offset(received, known, cyclic=cyclic, noncoherent=segment)
    metric, d, gain, psr = _brute_force(received, known, cyclic, segment or n)
    np.testing.assert_allclose(got.metric, metric, rtol=1e-9, atol=1e-12)
    assert got.offset == d
    assert got.peak_to_sidelobe == pytest.approx(psr, rel=1e-9)
    if segment is None:
        assert got.peak == pytest.approx(gain, rel=1e-9)
        assert got.segment_gains.shape == (1,)


@SETTINGS
@given(
    length=st.integers(16, 300),
    data=st.data(),
    gain_abs=st.floats(0.01, 100.0),
    gain_arg=st.floats(-math.pi, math.pi),
    seed=st.integers(0, 2**32 - 1),
)
def test_frame_offset_noiseless_recovers_offset_and_gain(length, data, gain_abs, gain_arg, seed):
    n = data.draw(st.integers(4, length))
    offset = data.draw(st.integers(0, length - 1))
    rng = np.random.default_rng(seed)
    known = _cgauss(rng, length)
    g = gain_abs * complex(math.cos(gain_arg), math.sin(gain_arg))
    received = g * known[(offset + np.arange(n)) % length]
    got = frame_offset(received, known)
    assert isinstance(got, FrameSync)
    assert got.offset == offset
    assert got.peak == pytest.approx(g, rel=1e-9)


def test_frame_offset_in_noise_linear_and_cyclic():
    rng = np.random.default_rng(8)
    known = math.sqrt(12) * _cgauss(rng, 8192)  # V_A = 12 SNU
    g = 0.15 * np.exp(0.7j)  # received signal variance ~0.27 SNU
    for cyclic, offset in [(True, 8000), (False, 3000)]:
        received = g * known[(offset + np.arange(4096)) % known.size]
        received += _cgauss(rng, received.size)  # 1 SNU shot noise per symbol
        got = frame_offset(received, known, cyclic=cyclic)
        assert got.offset == offset
        assert abs(got.peak - g) < 0.02  # LS gain: std ~ 1/sqrt(E) ~ 0.0045
        # PSR ~ SNR per symbol * sqrt(n) ~ sqrt(0.27 * 4096) ~ 33
        assert got.peak_to_sidelobe > 20
        assert got.metric.size == (known.size if cyclic else known.size - 4096 + 1)
    # pure noise: no peak stands out
    noise = frame_offset(_cgauss(rng, 4096), known)
    assert noise.peak_to_sidelobe < 6


def test_frame_offset_noncoherent_tolerates_rotating_phase():
    rng = np.random.default_rng(9)
    known = _cgauss(rng, 2048)
    offset, n, drift = 777, 2048, 2 * np.pi * 0.005  # 10 turns over the stream
    phase = 0.4 + drift * np.arange(n)
    received = 0.8 * np.exp(1j * phase) * known[(offset + np.arange(n)) % known.size]
    received += 0.5 * _cgauss(rng, n)
    coherent = frame_offset(received, known)
    nc = frame_offset(received, known, noncoherent=16)
    assert nc.offset == offset
    # coherently the rotation averages the true lag away: it does not stand out
    rms = np.sqrt(np.mean(np.delete(coherent.metric, offset) ** 2))
    assert coherent.metric[offset] < 3 * rms
    # noncoherently it stands > 10 standard deviations above the floor (whose mean is not 0,
    # so peak_to_sidelobe, peak over rms, is only ~4 here: thresholds differ between modes)
    others = np.delete(nc.metric, offset)
    assert (nc.metric[offset] - others.mean()) / others.std() > 10
    assert nc.peak_to_sidelobe > 3
    # the magnitude of the gain, reduced by the rotation within a segment (sinc ~ 0.98)
    assert nc.peak.imag == 0 and nc.peak.real == pytest.approx(0.8, rel=0.05)
    # segment phases follow the rotation: drift * 16 per segment
    steps = np.angle(nc.segment_gains[1:] / nc.segment_gains[:-1])
    assert nc.segment_gains.shape == (n // 16,)
    assert np.median(steps) == pytest.approx(drift * 16, abs=0.02)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: frame_offset(np.ones(11), np.ones(10)), "received: got 11 symbols"),
        (lambda: frame_offset(np.ones(0), np.ones(10)), "received"),
        (lambda: frame_offset(np.ones(3), np.ones(0)), "known"),
        (lambda: frame_offset(np.ones((2, 2)), np.ones(10)), "received"),
        (lambda: frame_offset(np.ones(3), np.ones(10), noncoherent=0), "noncoherent"),
        (lambda: frame_offset(np.array([np.nan]), np.ones(10)), "received"),
        (lambda: frame_offset(np.ones(3), np.zeros(10)), "known: all zero"),
    ],
)
def test_frame_offset_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_frame_offset_all_zero_received_is_no_detection():
    got = frame_offset(np.zeros(8), _cgauss(np.random.default_rng(0), 32))
    assert got.peak == 0 and got.peak_to_sidelobe == 0.0


def test_frame_offset_sparse_known_zero_windows_do_not_peak():
    known = np.zeros(64, dtype=np.complex128)
    known[40:48] = _cgauss(np.random.default_rng(2), 8)
    got = frame_offset(2j * known[40:44], known, cyclic=False)
    assert got.offset == 40 and got.peak == pytest.approx(2j)
    assert np.all(got.metric[:37] == 0)  # windows 0..36 see only zeros
