"""ISAQN receiver chain end to end (dsp/receiver.py) and its benchmark command."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsp.phase import PilotPattern
from dsp.receiver import (
    ReceiverChain,
    concat_results,
    default_taps,
    reference_chain,
    samples_per_symbol,
    synthetic_capture,
)
from labctl import bench_isaqn

FS = 1e9
CARRIERS = (100e6, 200e6, 300e6)
R = 50e6
K = 10
T0 = 3  # symbol 0 starts at raw sample 3
PHASES = (
    lambda t: 0.3 + 890.0 * np.sin(2 * np.pi * 1e3 * t),  # vibrating node, 890 rad peak
    1.0,  # quiet node, constant offset
    lambda t: -2.0 + 4e4 * t,  # slow drift
)
N = 1 << 19  # 0.52 ms at 1 GS/s: node 0 sweeps ~0 -> 890 -> -100 rad


@pytest.fixture(scope="module")
def capture():
    rng = np.random.default_rng(11)
    return synthetic_capture(N, FS, CARRIERS, R, K, PHASES, rng, symbol_start_sample=T0)


@pytest.fixture(scope="module")
def chain_out(capture):
    chain = ReceiverChain(FS, CARRIERS, R, K, symbol_start_sample=T0)
    return chain.run(capture.samples, block_samples=100_003)


def test_synthetic_capture_follows_the_signal_model():
    """One node, no noise, constant phase: r[n] = a(t_n) exp(j(2 pi f n / fs + theta))."""
    rng = np.random.default_rng(0)
    cap = synthetic_capture(
        1000, FS, (100e6,), R, 4, (0.5,), rng, noise_std=0.0, gains=(0.25,), block_samples=77
    )
    assert cap.samples.dtype == np.complex64 and cap.samples.shape == (1000,)
    n = np.arange(1000)
    a = np.repeat(cap.symbols[0], 20)[:1000]
    expected = 0.5 * a * np.exp(1j * (2 * np.pi * 0.1 * n + 0.5))
    np.testing.assert_allclose(cap.samples, expected, atol=1e-5)
    assert np.all(cap.symbols[0, ::4] == 20.0)  # pilots
    q = np.delete(cap.symbols[0], np.s_[::4])
    assert np.all(q.imag != 0)


def test_pilot_phase_tracks_truth_in_every_band(capture, chain_out):
    """Unwrapped pilot phase vs theta_i + phi_i(t) at the symbol centres, 890 rad included."""
    for b in range(len(CARRIERS)):
        res = chain_out[b]
        truth = capture.phase_rad(b, capture.symbol_time_s(res["pilot_index"]))
        err = res["pilot_phase_rad"] - truth
        steady = err[2:]  # the very first pilot sees the filter's start-up
        # ISI of the neighbouring quantum symbols and shot noise: ~0.03 rad rms
        assert np.sqrt(np.mean(steady**2)) < 0.06, b
        assert np.max(np.abs(steady)) < 0.5, b  # no 2 pi slip anywhere
    assert np.ptp(chain_out[0]["pilot_phase_rad"]) > 900


def test_rotation_recovers_the_quantum_symbols(capture, chain_out):
    for b in range(len(CARRIERS)):
        res = chain_out[b]
        tx = capture.symbols[b, res["symbol_index"]]
        rx = res["symbols"]
        corr = np.abs(np.vdot(tx, rx)) / np.linalg.norm(tx) / np.linalg.norm(rx)
        assert corr > 0.95, (b, corr)
        gain = np.vdot(tx, rx) / np.vdot(tx, tx)
        assert abs(np.angle(gain)) < 0.05  # no residual rotation


def test_chain_matches_the_numpy_scipy_reference(capture, chain_out):
    ref = reference_chain(capture.samples, FS, CARRIERS, R, K, symbol_start_sample=T0)
    for b in range(len(CARRIERS)):
        got, want = chain_out[b], ref[b]
        np.testing.assert_array_equal(got["pilot_index"], want["pilot_index"])
        np.testing.assert_array_equal(got["symbol_index"], want["symbol_index"])
        np.testing.assert_allclose(got["pilot_phase_rad"], want["pilot_phase_rad"], atol=2e-5)
        np.testing.assert_allclose(got["symbol_phase_rad"], want["symbol_phase_rad"], atol=2e-5)
        scale = np.sqrt(np.mean(np.abs(want["symbols"]) ** 2))
        assert np.max(np.abs(got["symbols"] - want["symbols"])) < 2e-5 * scale


@settings(max_examples=8, deadline=None)
@given(cuts=st.lists(st.integers(0, 1 << 16), min_size=1, max_size=6))
def test_chain_on_any_split_is_bitwise_one_block(capture, cuts):
    x = capture.samples[: 1 << 16]
    chain = ReceiverChain(FS, CARRIERS, R, K, symbol_start_sample=T0)
    whole = chain.run(x, block_samples=x.size)
    chain.reset()
    parts = [chain.process(p) for p in np.split(x, sorted(cuts))] + [chain.flush()]
    got = concat_results(parts)
    for b in whole:
        for key in whole[b]:
            np.testing.assert_array_equal(got[b][key], whole[b][key], err_msg=f"{b} {key}")


def test_two_threads_and_pfb_and_two_outputs_per_symbol(capture, chain_out):
    x = capture.samples[: 1 << 17]
    base = ReceiverChain(FS, CARRIERS, R, K, symbol_start_sample=T0).run(x, 1 << 15)
    two = ReceiverChain(FS, CARRIERS, R, K, symbol_start_sample=T0, threads=2).run(x, 1 << 15)
    pfb = ReceiverChain(FS, CARRIERS, R, K, symbol_start_sample=T0, method="pfb").run(x)
    half = ReceiverChain(FS, CARRIERS, R, K, symbol_start_sample=T0, decim=10).run(x, 12_345)
    for b in base:
        np.testing.assert_array_equal(two[b]["symbols"], base[b]["symbols"])
        for other in (pfb, half):
            np.testing.assert_array_equal(other[b]["pilot_index"], base[b]["pilot_index"])
            np.testing.assert_allclose(
                other[b]["pilot_phase_rad"], base[b]["pilot_phase_rad"], atol=1e-5
            )


def test_pilot_only_mode_for_a_fast_vibration():
    """SPM step 2: a node sends pilots only; every symbol carries the phase."""
    rng = np.random.default_rng(4)
    fast = (lambda t: 600.0 * np.sin(2 * np.pi * 20e3 * t), None, None)
    cap = synthetic_capture(1 << 17, FS, CARRIERS, R, PilotPattern(1), fast, rng)
    out = ReceiverChain(FS, CARRIERS, R, 1).run(cap.samples)
    truth = cap.phase_rad(0, cap.symbol_time_s(out[0]["pilot_index"]))
    assert np.max(np.abs(out[0]["pilot_phase_rad"][2:] - truth[2:])) < 0.2
    assert out[0]["symbols"].size == 0


def test_bad_rates_are_refused():
    with pytest.raises(ValueError, match="integer"):
        samples_per_symbol(1e9, 30e6)
    with pytest.raises(ValueError, match="decim"):
        ReceiverChain(FS, CARRIERS, R, K, decim=3)
    assert default_taps(FS, R).size == 80


def test_bench_isaqn_json_smoke(capsys):
    """The benchmark runs end to end on a tiny capture (no timing asserted)."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    bench_isaqn.add_parser(sub)
    args = parser.parse_args(
        ["isaqn", "--json", "--samples", "65536", "--repeat", "1", "--reference-samples", "65536"]
    )
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    for key in (
        "labctl_msps_per_core",
        "reference_msps_per_core",
        "ratio",
        "threads_2_msps",
        "capture_bytes",
    ):
        assert out[key] > 0, key
    # RSS growth: small captures may reuse pages already resident, so only >= 0 here
    assert out["peak_memory_bytes"] >= 0 and out["peak_traced_bytes"] > 0
    assert out["capture_bytes"] == 65536 * 8
    assert out["pilot_phase_rms_error_rad"] < 0.1


def test_bench_isaqn_refuses_bad_options(capsys):
    parser = argparse.ArgumentParser()
    bench_isaqn.add_parser(parser.add_subparsers())
    args = parser.parse_args(["isaqn", "--samples", "10"])
    assert args.func(args) == 2
    assert "--samples" in capsys.readouterr().err
