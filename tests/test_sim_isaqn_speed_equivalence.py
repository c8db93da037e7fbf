"""The fast paths of the ISAQN twin and its AWGs against straightforward references.

drivers/sim/isaqn.py and drivers/sim/keysight_33500b.py compute some things faster than the
obvious way (uniform-grid interpolation of the Wiener phase history, vibration bursts evaluated
only inside their window, exp(j x) as cos + j sin, the excess-noise pulse sum on real
accumulators, the arb's float shape converted once). Each must return what the obvious way
returns: bit for bit where the arithmetic is the same, within 2 ulp where a library routine
(the complex exp) is replaced by another (it is bit-identical on the development machine).
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.sim.bench import BenchModel
from drivers.sim.dac import band_limited
from drivers.sim.isaqn import (
    _RRC_OVERSAMPLE,
    VibrationEvent,
    _BlockNormals,
    _cis,
    _shaped_noise_kernel,
    _Wiener,
    rrc_pulse,
)
from drivers.sim.keysight_33500b import DAC_MAX, SimKeysight33500B


class _ReferenceWiener:
    """The Wiener process as first written: the whole history re-concatenated on every
    extension and np.interp over an arange of it (the reference for _Wiener)."""

    def __init__(self, normals: _BlockNormals, rate: float, dt_s: float, keep_s: float) -> None:
        self.normals = normals
        self.sigma = math.sqrt(rate * dt_s)
        self.dt_s = dt_s
        self.keep = max(4, math.ceil(keep_s / dt_s) + 4)
        self.i0: int | None = None
        self.values = np.zeros(0)

    def at(self, t: np.ndarray) -> np.ndarray:
        x = t / self.dt_s
        lo, hi = math.floor(float(np.min(x))), math.floor(float(np.max(x))) + 1
        if self.i0 is None:
            self.i0 = lo - self.keep // 2
            self.values = np.array([0.0])
        have = self.i0 + self.values.size
        if hi >= have:
            steps = self.normals.values(have, hi + 1) * self.sigma
            self.values = np.concatenate([self.values, self.values[-1] + np.cumsum(steps)])
            if self.values.size > 4 * self.keep:
                drop = self.values.size - 2 * self.keep
                self.values = self.values[drop:]
                self.i0 += drop
        return np.interp(x, self.i0 + np.arange(self.values.size), self.values)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    start_s=st.floats(-3.0, 3.0),
    dt_s=st.sampled_from([1e-6, 1e-3, 0.37e-3]),
    records=st.lists(
        st.tuples(st.floats(0.0, 0.3), st.integers(1, 3000), st.booleans()),
        min_size=1,
        max_size=8,
    ),
)
def test_wiener_is_np_interp_over_its_history(seed, start_s, dt_s, records) -> None:
    """Consecutive requests (uniform records, random times, exact grid points, the trimming of
    old history) give the same values, and the same history is kept."""
    keep_s = 2000 * dt_s  # longer than one request: a request never outlives its history
    fast = _Wiener(_BlockNormals(seed, (7,)), 3.0, dt_s, keep_s)
    ref = _ReferenceWiener(_BlockNormals(seed, (7,)), 3.0, dt_s, keep_s)
    rng = np.random.default_rng(seed)
    t0 = start_s
    for advance_s, n, on_grid in records:
        t0 += advance_s * 1e4 * dt_s  # forward, by up to 3000 grid steps: trims history
        if on_grid:  # exact grid points and halves: numpy's x == xp[j] branch
            t = (math.floor(t0 / dt_s) + np.arange(n) / 2.0) * dt_s
        else:
            t = t0 + rng.uniform(0.0, 100 * dt_s, n)
        np.testing.assert_array_equal(fast.at(t), ref.at(t))
        assert fast._i0 == ref.i0
        np.testing.assert_array_equal(fast._values, ref.values)


def test_wiener_refuses_history_that_is_gone() -> None:
    w = _Wiener(_BlockNormals(1, (7,)), 1.0, 1e-3, 0.05)
    w.at(np.array([0.0]))
    w.at(np.array([1.0]))  # trims everything older than ~0.1 s
    try:
        w.at(np.array([0.0]))
    except ValueError as exc:
        assert "is gone" in str(exc)
    else:
        raise AssertionError("asking for dropped history must raise")


def _reference_waveform(event: VibrationEvent, u: np.ndarray) -> np.ndarray:
    dur = event.cycles / event.freq_hz
    inside = (u >= 0) & (u < dur)
    w = np.where(inside, 0.5 - 0.5 * np.cos(2 * np.pi * u / dur), 0.0)
    return event.amplitude_rad * w * np.sin(2 * np.pi * event.freq_hz * u)


@settings(max_examples=40, deadline=None)
@given(
    freq_hz=st.floats(1.0, 200.0),
    cycles=st.floats(0.5, 10.0),
    amplitude_rad=st.floats(-5.0, 5.0),
    start=st.floats(-2.0, 2.0),
    span=st.floats(1e-4, 3.0),
    n=st.integers(0, 2000),
    shuffled=st.booleans(),
)
def test_vibration_waveform_is_the_whole_array_expression(
    freq_hz, cycles, amplitude_rad, start, span, n, shuffled
) -> None:
    """Inside, outside and across the burst's edges, sorted or not."""
    event = VibrationEvent(0.0, 0.0, 0.0, freq_hz, cycles, amplitude_rad)
    u = start + np.linspace(0.0, span, n)
    dur = cycles / freq_hz
    u = np.concatenate([u, [0.0, dur, np.nextafter(dur, 0.0), -0.0]])
    if shuffled:
        u = np.random.default_rng(n).permutation(u)
    out = event.waveform_rad(u)
    assert out.dtype == np.float64 and out.shape == u.shape
    np.testing.assert_array_equal(out, _reference_waveform(event, u))


@settings(max_examples=20, deadline=None)
@given(scale=st.sampled_from([1.0, 2 * np.pi, 1e3, 1e6]), seed=st.integers(0, 2**31 - 1))
def test_cis_is_numpy_complex_exp(scale, seed) -> None:
    angle = np.random.default_rng(seed).uniform(-scale, scale, 4096)
    np.testing.assert_allclose(_cis(angle), np.exp(1j * angle), rtol=0, atol=4.5e-16)
    carrier = 2 * np.pi * np.mod(angle * 3.1e5, 1.0)
    np.testing.assert_allclose(
        _cis(carrier), np.exp(2j * np.pi * np.mod(angle * 3.1e5, 1.0)), rtol=0, atol=4.5e-16
    )


def test_shaped_noise_kernel_is_the_complex_pulse_sum() -> None:
    """Against the sum over symbols written directly with complex numpy arithmetic."""
    rng = np.random.default_rng(3)
    half, over, beta = 8, _RRC_OVERSAMPLE, 0.3
    grid = np.arange(2 * half * over + 2) / over - half
    table = rrc_pulse(grid, beta)
    x = 1234.0 + np.sort(rng.uniform(0.0, 50.0, 700))
    first = math.floor(x.min()) - half
    last = math.floor(x.max()) + half + 1
    symbols = rng.standard_normal(last + 1 - first) + 1j * rng.standard_normal(last + 1 - first)
    out = np.empty(x.size, dtype=np.complex128)
    _shaped_noise_kernel(x, symbols, first, table, half, over, out)
    expected = np.empty_like(out)
    for m, xm in enumerate(x):
        s = np.arange(math.floor(xm) - half + 1, math.floor(xm) + half + 1)
        u = (xm - s + half) * over
        j = u.astype(np.int64)
        w = u - j
        p = table[j] * (1.0 - w) + table[j + 1] * w
        acc = 0j
        for sym, pk in zip(symbols[s - first], p, strict=True):
            acc += sym * pk
        expected[m] = acc
    np.testing.assert_array_equal(out, expected)


def test_awg_arb_output_follows_the_loaded_waveform() -> None:
    """The arb's float shape is converted once and cached: output_v stays what the codes
    selected now give through the reconstruction filter, after a reload of the same name and
    after another arb is selected (SCPI commands into the simulator's engine)."""
    awg = SimKeysight33500B("awg1", BenchModel(seed=1))
    awg.register()
    t = np.arange(400) / 40e3 + 0.25e-5  # between samples: the filter's weights all matter
    rng = np.random.default_rng(5)

    def upload(name: str) -> np.ndarray:
        codes = rng.integers(-DAC_MAX, DAC_MAX + 1, 64)
        values = ",".join(str(int(c)) for c in codes)
        awg.engine.execute(f"DATA:ARB:DAC {name},{values}".encode())
        return codes

    awg.engine.execute(b"OUTP1 ON;:FUNC ARB;:FUNC:ARB:SRAT 40000")
    a = upload("A")
    awg.engine.execute(b"FUNC:ARB A")
    first = awg.output_v(1, t)
    np.testing.assert_array_equal(awg.output_v(1, t), first)  # from the cache
    b = upload("B")
    awg.engine.execute(b"FUNC:ARB B")
    second = awg.output_v(1, t)
    awg.engine.execute(b"DATA:VOL:CLE")
    c = upload("A")
    awg.engine.execute(b"FUNC:ARB A")
    third = awg.output_v(1, t)
    half = awg.channels[1].amplitude_vpp / 2.0
    offset = awg.channels[1].offset_v
    for out, codes in ((first, a), (second, b), (third, c)):
        expected = offset + half * band_limited(codes / DAC_MAX, 40e3, t)
        np.testing.assert_array_equal(out, expected)
    assert not np.array_equal(first, third)
    assert awg.engine.errors == []
