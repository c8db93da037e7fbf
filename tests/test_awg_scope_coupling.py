"""End to end: the AWG driver programs a waveform, the scope driver measures it.

Both instruments are simulated on real sockets and coupled through the bench
wiring ``scope1:1 <- awg1:1`` and ``scope1:2 <- awg1:2``; nothing here touches
simulator state except to read ground truth.
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim.host import SimSpec

NOISE_V = 2e-3
ARB_POINTS = 1000
ARB_RATE_HZ = 10e6  # 1000 points at 10 MSa/s: a 10 kHz sine
SINE_HZ = ARB_RATE_HZ / ARB_POINTS
SCOPE_RATE_HZ = 1e6
SCOPE_POINTS = 5000  # 5 ms: 50 periods


@pytest.fixture
def bench(sim_bench, manual_clock):
    return sim_bench(
        [
            SimSpec("awg1", "keysight_33500b"),
            SimSpec("scope1", "keysight_infiniium", {"noise_v": NOISE_V, "adc_bits": 10}),
        ],
        clock=manual_clock,
        wiring={"scope1:1": "awg1:1", "scope1:2": "awg1:2"},
    )


@pytest.fixture
def awg(bench, connect):
    return connect(bench, "awg1")


@pytest.fixture
def scope(bench, connect):
    scope = connect(bench, "scope1")
    scope.sample_rate_hz = SCOPE_RATE_HZ
    scope.record_length = SCOPE_POINTS
    return scope


def sine_fit(t_s: np.ndarray, volts: np.ndarray, hz: float) -> tuple[float, float, float]:
    """Least-squares amplitude, phase (rad) and offset of a sine of known frequency."""
    w = 2 * np.pi * hz * t_s
    design = np.column_stack([np.sin(w), np.cos(w), np.ones_like(t_s)])
    (a, b, c), *_ = np.linalg.lstsq(design, volts, rcond=None)
    return float(np.hypot(a, b)), float(np.arctan2(b, a)), float(c)


def test_uploaded_arb_is_seen_by_the_scope(bench, awg, scope, manual_clock):
    samples = np.sin(2 * np.pi * np.arange(ARB_POINTS) / ARB_POINTS)
    awg.upload_arb(1, "sine10k", samples, ARB_RATE_HZ)
    awg.amplitude_vpp[1] = 2.0
    awg.offset_v[1] = 0.5
    awg.output_on(1)
    scope.channel_scale_v_per_div[1] = 0.5  # +-2 V around the offset
    scope.channel_offset_v[1] = 0.5

    t_start_s = manual_clock.now_s()  # the record starts now (nothing acquired before)
    record = scope.acquire([1])[1]

    assert record.n_points == SCOPE_POINTS and record.dt_s == pytest.approx(1 / SCOPE_RATE_HZ)
    assert record.t0_s == pytest.approx(-SCOPE_POINTS / SCOPE_RATE_HZ / 2)  # trigger at centre
    assert manual_clock.now_s() == pytest.approx(t_start_s + SCOPE_POINTS / SCOPE_RATE_HZ)
    t_virtual = t_start_s + np.arange(SCOPE_POINTS) / SCOPE_RATE_HZ
    expected = 0.5 + 1.0 * np.sin(2 * np.pi * SINE_HZ * t_virtual)

    assert np.corrcoef(record.volts, expected)[0, 1] > 0.999
    lsb_v = 8 * 0.5 / 2**10
    rms_error = float(np.sqrt(np.mean((record.volts - expected) ** 2)))
    assert rms_error < 1.5 * np.hypot(NOISE_V, lsb_v / np.sqrt(12))
    amplitude, phase, offset = sine_fit(t_virtual, record.volts, SINE_HZ)
    assert amplitude == pytest.approx(1.0, abs=3e-3)
    assert offset == pytest.approx(0.5, abs=2e-3)
    assert phase == pytest.approx(0.0, abs=5e-3)

    awg.output_off(1)
    dark = scope.acquire([1])[1]
    assert abs(float(dark.volts.mean())) < lsb_v
    assert float(dark.volts.std()) < 2 * NOISE_V


def test_two_channels_each_see_their_own_source(bench, awg, scope, manual_clock):
    ramp = np.linspace(-1.0, 1.0, 500, endpoint=False)
    awg.upload_arb(1, "saw", ramp, 1e6)  # 2 kHz sawtooth
    awg.amplitude_vpp[1] = 1.0
    awg.function[2] = "SIN"
    awg.frequency_hz[2] = 25e3
    awg.amplitude_vpp[2] = 0.4
    awg.offset_v[2] = -0.1
    awg.output_on(1)
    awg.output_on(2)
    for ch in (1, 2):
        scope.channel_scale_v_per_div[ch] = 0.2

    t_start_s = manual_clock.now_s()
    records = scope.acquire([1, 2])
    t_virtual = t_start_s + np.arange(SCOPE_POINTS) / SCOPE_RATE_HZ
    # sawtooth sampled exactly on arb points: index = t * 1 MSa/s modulo 500
    saw = 0.5 * np.rint(ramp[np.arange(SCOPE_POINTS) % 500] * 32767) / 32767
    sine = -0.1 + 0.2 * np.sin(2 * np.pi * 25e3 * t_virtual)
    lsb_v = 8 * 0.2 / 2**10
    for ch, expected in ((1, saw), (2, sine)):
        error = records[ch].volts - expected
        assert np.max(np.abs(error)) < lsb_v / 2 + 6 * NOISE_V, f"channel {ch}"
    assert np.corrcoef(records[1].volts, records[2].volts)[0, 1] < 0.5


def test_overdriven_input_clips_and_reports_overload(bench, awg, scope):
    awg.upload_arb(1, "sine", np.sin(2 * np.pi * np.arange(100) / 100), 1e6)
    awg.amplitude_vpp[1] = 4.0
    awg.output_on(1)
    scope.channel_scale_v_per_div[1] = 0.1  # +-0.4 V full scale
    record = scope.acquire([1])[1]
    assert scope.overloaded(1) is True
    assert record.volts.max() < 0.4 and record.volts.min() >= -0.4
    assert np.mean(np.abs(record.volts) > 0.39) > 0.7


def test_closing_the_awg_leaves_the_scope_input_dark(bench, awg, scope):
    awg.function[1] = "SQU"
    awg.amplitude_vpp[1] = 1.0
    awg.output_on(1)
    scope.channel_scale_v_per_div[1] = 0.2
    assert float(scope.acquire([1])[1].volts.std()) == pytest.approx(0.5, abs=0.01)
    awg.close()  # safe state: every output off
    assert [ch.output for ch in bench.sims["awg1"].channels.values()] == [False, False]
    assert float(scope.acquire([1])[1].volts.std()) < 2 * NOISE_V
