"""Streaming multi-band DDC (dsp/ddc.py) against scipy, across cuts, and its selectivity."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from dsp.ddc import DDCConfig, DDCState, ddc_process, nco_phase_word
from dsp.receiver import reference_ddc

FS = 1e9
TAPS = scipy.signal.firwin(80, 40e6, window=("kaiser", 6.0), fs=FS)
CARRIERS = (100e6, 200e6, 300e6)
SETTINGS = settings(max_examples=25, deadline=None)


def _noise(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)


X = _noise(40_000)


def _run(x: np.ndarray, cfg: DDCConfig, cuts=(), first: int = 0, threads: int = 1) -> np.ndarray:
    state = DDCState.initial(cfg, first)
    outs = []
    for part in np.split(x, sorted(cuts)):
        y, state = ddc_process(part, state, cfg, threads=threads)
        outs.append(y)
    return np.concatenate(outs, axis=1)


@pytest.mark.parametrize(
    ("carriers", "method", "decim", "first"),
    [
        (CARRIERS, "ftf", 20, 49),
        (CARRIERS, "pfb", 20, 49),
        ((123.4e6, -77.7e6, 250e6, 10e6), "ftf", 7, 3),  # off-grid, 4 bands (3 + 1)
        ((-400e6, -100e6, 100e6, 200e6, 300e6, 400e6), "pfb", 10, 0),  # 6 bands, M = 10
        ((150e6,), "ftf", 1, 0),  # single band, no decimation
    ],
)
def test_ddc_matches_scipy_mix_lfilter_decimate(carriers, method, decim, first):
    cfg = DDCConfig(FS, carriers, TAPS, decim, method)
    y = _run(X, cfg, first=first)
    ref = reference_ddc(X, FS, carriers, TAPS, decim, first)
    assert y.shape == ref.shape and y.dtype == np.complex64
    rms = np.sqrt(np.mean(np.abs(ref) ** 2, axis=1, keepdims=True))
    # float32 taps/accumulation against float64 scipy: ~1e-7 relative, well under 2e-6
    assert np.max(np.abs(y - ref) / rms) < 2e-6


def test_auto_method_choice():
    assert DDCConfig(FS, CARRIERS, TAPS, 20).resolved_method == "ftf"
    nine = tuple(k * 50e6 for k in (-4, -3, -2, -1, 1, 2, 3, 4, 5))  # M = 20
    assert DDCConfig(FS, nine, TAPS, 20).resolved_method == "pfb"
    assert DDCConfig(FS, nine, TAPS, 20).n_channels == 20
    off_grid = (*nine[:-1], 301.234567e6)
    assert DDCConfig(FS, off_grid, TAPS, 20).resolved_method == "ftf"


def test_upfirdn_reference_equals_lfilter_reference():
    a = reference_ddc(X[:5000], FS, CARRIERS, TAPS, 20, 49, method="lfilter")
    b = reference_ddc(X[:5000], FS, CARRIERS, TAPS, 20, 49, method="upfirdn")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@SETTINGS
@given(
    cuts=st.lists(st.integers(0, 6000), max_size=8),
    method=st.sampled_from(["ftf", "pfb"]),
    first=st.integers(0, 60),
)
def test_streaming_cut_anywhere_is_bitwise_one_block(cuts, method, first):
    x = X[:6000]
    cfg = DDCConfig(FS, CARRIERS, TAPS, 20, method)
    whole = _run(x, cfg, first=first)
    np.testing.assert_array_equal(_run(x, cfg, cuts, first=first), whole)


@SETTINGS
@given(cuts=st.lists(st.integers(0, 3000), max_size=6), decim=st.integers(1, 25))
def test_streaming_tiny_blocks_off_grid(cuts, decim):
    """Blocks shorter than the filter, any decimation phase, 4 off-grid bands."""
    x = X[:3000]
    cfg = DDCConfig(FS, (123.4e6, -77.7e6, 250e6, 10e6), TAPS, decim)
    cuts = [*cuts, 1, 2, 3, 40, 41]
    np.testing.assert_array_equal(_run(x, cfg, cuts), _run(x, cfg))


def test_threads_give_bitwise_the_same_outputs():
    cfg = DDCConfig(FS, CARRIERS, TAPS, 20)
    np.testing.assert_array_equal(_run(X, cfg, threads=2), _run(X, cfg))
    np.testing.assert_array_equal(_run(X, cfg, [777, 20_001], threads=3), _run(X, cfg))


def test_state_bookkeeping():
    cfg = DDCConfig(FS, CARRIERS, TAPS, 20)
    state = DDCState.initial(cfg, 49)
    y, state = ddc_process(X[:1000], state, cfg)
    assert y.shape == (3, len(range(49, 1000, 20)))
    assert state.samples_in == 1000 and state.outputs_out == y.shape[1]
    assert state.next_output == 49 + 20 * y.shape[1] - 1000
    np.testing.assert_array_equal(state.history, X[1000 - 79 : 1000])
    inc = nco_phase_word(100e6, FS)
    assert state.nco_word[0] == inc * 1000 % 2**64
    np.testing.assert_allclose(state.nco_phase_rad()[0], 2 * np.pi * ((1000 * 0.1) % 1), atol=1e-9)
    # an empty block changes nothing but the object
    y0, state0 = ddc_process(X[:0], state, cfg)
    assert y0.shape == (3, 0) and state0.samples_in == state.samples_in


@SETTINGS
@given(
    a=st.complex_numbers(max_magnitude=10, allow_nan=False, allow_infinity=False),
    b=st.complex_numbers(max_magnitude=10, allow_nan=False, allow_infinity=False),
    seed=st.integers(0, 2**16),
)
def test_channelizer_is_linear(a, b, seed):
    x = _noise(2000, seed)
    y = _noise(2000, seed + 1)
    cfg = DDCConfig(FS, CARRIERS, TAPS, 20)
    lhs = _run((a * x.astype(np.complex128) + b * y).astype(np.complex64), cfg)
    rhs = a * _run(x, cfg).astype(np.complex128) + b * _run(y, cfg)
    scale = (abs(a) + abs(b)) * np.sqrt(np.mean(np.abs(_run(x, cfg)) ** 2)) + 1e-30
    assert np.max(np.abs(lhs - rhs)) <= 1e-5 * scale


@pytest.mark.parametrize("method", ["ftf", "pfb"])
@pytest.mark.parametrize("df_hz", [-12.5e6, 3.125e6, 10e6])
def test_tone_lands_at_df_in_its_band_and_is_rejected_elsewhere(method, df_hz):
    n = np.arange(20_000)
    decim = 20
    cfg = DDCConfig(FS, CARRIERS, TAPS, decim, method)
    h = scipy.signal.freqz(TAPS, worN=[df_hz], fs=FS)[1][0]
    for i, f in enumerate(CARRIERS):
        tone = np.exp(2j * np.pi * ((f + df_hz) / FS * n % 1.0)).astype(np.complex64)
        y = _run(tone, cfg)[:, 10:]  # skip the filter's start-up
        m = np.arange(10, 10 + y.shape[1])
        expected = h * np.exp(2j * np.pi * df_hz / FS * m * decim)  # at df, gain H(df)
        np.testing.assert_allclose(y[i], expected, atol=2e-6)
        for j in range(len(CARRIERS)):
            if j != i:
                rejection_db = -20 * np.log10(np.max(np.abs(y[j])))
                assert rejection_db > 60, (i, j, rejection_db)


def test_nco_does_not_drift_after_1e12_samples():
    """A carrier-exact tone far into the stream still comes out at phase 0."""
    cfg = DDCConfig(FS, CARRIERS, TAPS, 20)
    n0 = 10**12
    state = DDCState.initial(cfg)
    state = replace(
        state,
        samples_in=n0,
        outputs_out=n0 // 20,
        nco_word=tuple(inc * n0 % 2**64 for inc in cfg.phase_inc),
    )
    n = np.arange(4000)
    for i, k in enumerate((1, 2, 3)):  # f_i = k * fs / 10: exact phase from integers
        tone = np.exp(2j * np.pi * ((k * (n0 + n)) % 10) / 10).astype(np.complex64)
        y, _ = ddc_process(tone, state, cfg)
        settled = y[i, 5:]
        np.testing.assert_allclose(np.angle(settled), 0.0, atol=1e-6)
        np.testing.assert_allclose(np.abs(settled), np.sum(TAPS), rtol=1e-5)


def test_non_complex64_input_is_converted_per_block():
    cfg = DDCConfig(FS, CARRIERS, TAPS, 20)
    x128 = X[:3000].astype(np.complex128)
    np.testing.assert_array_equal(_run(x128, cfg), _run(X[:3000], cfg))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"carriers_hz": (600e6,)}, "fs/2"),
        ({"carriers_hz": ()}, "at least one"),
        ({"decim": 0}, "decim"),
        ({"taps": np.zeros((2, 2))}, "taps"),
        ({"method": "fft"}, "method"),
        ({"carriers_hz": (123.456789e6,), "method": "pfb"}, "grid"),
        ({"fs_hz": -1.0}, "fs_hz"),
    ],
)
def test_config_refuses_bad_values(kwargs, match):
    args = {"fs_hz": FS, "carriers_hz": CARRIERS, "taps": TAPS, "decim": 20, **kwargs}
    with pytest.raises(ValueError, match=match):
        DDCConfig(**args)


def test_state_of_another_config_is_refused():
    cfg = DDCConfig(FS, CARRIERS, TAPS, 20)
    other = DDCConfig(FS, CARRIERS, TAPS[:40], 20)
    with pytest.raises(ValueError, match="history"):
        ddc_process(X[:100], DDCState.initial(other), cfg)
