"""AWG reconstruction filters of the simulators (drivers/sim/dac.py) against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.sim import dac

N = 4096


@pytest.mark.parametrize("cycles", [41, 410, 1230, 1638])  # up to 0.4 of the sample rate
def test_band_limited_reproduces_a_sine_between_samples(cycles: int) -> None:
    f = cycles / N
    memory = np.cos(2 * np.pi * f * np.arange(N))
    rng = np.random.default_rng(cycles)
    x = np.sort(rng.uniform(0, 3 * N, 3000))  # arbitrary times, across the loop's wrap
    got = dac.band_limited(memory, 1.0, x)
    assert np.max(np.abs(got - np.cos(2 * np.pi * f * x))) < 1e-4


@settings(max_examples=25, deadline=None)
@given(frac=st.floats(0.0, 0.999), step=st.integers(1, 3), start=st.integers(-N, 2 * N))
def test_uniform_grid_fast_path_equals_the_general_kernel(frac: float, step: int, start: int):
    memory = np.random.default_rng(7).standard_normal(N)
    x = start + frac + step * np.arange(500, dtype=np.float64)
    fast = dac.band_limited(memory, 1.0, x)
    general = np.empty_like(x)
    dac._sinc_kernel(memory, x, dac._TABLE, dac.HALF_TAPS, dac.OVERSAMPLE, general)
    np.testing.assert_allclose(fast, general, atol=1e-9)


def test_sample_instants_give_the_samples_exactly() -> None:
    memory = np.random.default_rng(1).standard_normal(N)
    t = np.arange(-N, 2 * N, dtype=np.float64) / 1e6
    np.testing.assert_allclose(dac.band_limited(memory, 1e6, t), np.tile(memory, 3), atol=1e-12)
    np.testing.assert_array_equal(dac.zero_order_hold(memory, 1e6, t + 0.4e-6), np.tile(memory, 3))


def test_linear_is_the_straight_line_between_samples() -> None:
    memory = np.array([0.0, 1.0, -1.0, 0.5] * 4)
    np.testing.assert_allclose(
        dac.linear(memory, 1.0, np.array([0.5, 1.25, 15.5])), [0.5, 0.5, 0.25]
    )
