"""Pilot phase, streaming unwrap, interpolation and rotation (dsp/phase.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsp.phase import (
    PhaseState,
    PilotPattern,
    UnwrapState,
    flush,
    interp_rotate,
    pilot_phase,
    pilot_phase_process,
    rotate,
    unwrap_stream,
)

SETTINGS = settings(max_examples=30, deadline=None)


def _wrap(x: np.ndarray) -> np.ndarray:
    return np.angle(np.exp(1j * x))


def _split(x: np.ndarray, cuts) -> list[np.ndarray]:
    return np.split(x, sorted(c % (len(x) + 1) for c in cuts))


def _unwrap_in_parts(phase: np.ndarray, cuts) -> np.ndarray:
    state = UnwrapState()
    parts = []
    for part in _split(phase, cuts):
        out, state = unwrap_stream(part, state)
        parts.append(out)
    return np.concatenate(parts)


@SETTINGS
@given(
    steps=st.lists(
        st.floats(-3.14, 3.14, allow_nan=False, allow_infinity=False), min_size=1, max_size=300
    ),
    start=st.floats(-100, 100, allow_nan=False),
    cuts=st.lists(st.integers(0, 400), max_size=6),
)
def test_unwrap_on_any_split_is_np_unwrap(steps, start, cuts):
    """Wrapped random walks with steps < pi: bitwise np.unwrap, and the walk comes back."""
    walk = start + np.cumsum(steps)
    wrapped = _wrap(walk)
    got = _unwrap_in_parts(wrapped, cuts)
    np.testing.assert_array_equal(got, np.unwrap(wrapped))
    np.testing.assert_allclose(got - got[0], walk - walk[0], atol=1e-9)


@SETTINGS
@given(
    phase=st.lists(st.floats(-50, 50, allow_nan=False), min_size=0, max_size=200),
    cuts=st.lists(st.integers(0, 300), max_size=5),
)
def test_unwrap_of_arbitrary_sequences_is_np_unwrap(phase, cuts):
    """Not only random walks: jumps of any size, exact +-pi steps, unwrapped inputs."""
    p = np.array([*phase, 0.0, np.pi, 0.0, -np.pi, 2 * np.pi], dtype=np.float64)
    np.testing.assert_array_equal(_unwrap_in_parts(p, cuts), np.unwrap(p))


def test_pilot_phase_is_atan2():
    z = np.array([1, 1j, -1, -1j, 1 + 1j, -3 - 4j, 0], dtype=np.complex64)
    np.testing.assert_array_equal(pilot_phase(z), np.angle(z.astype(np.complex128)))
    assert pilot_phase(z).dtype == np.float64


def _symbols(n: int, period: int, phase: np.ndarray, seed: int = 0, offset: int = 0):
    """Symbol stream: pilots 10 + 0j, quantum N(0, 1) + jN(0, 1), rotated by phase."""
    rng = np.random.default_rng(seed)
    tx = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    is_pilot = (np.arange(n) - offset) % period == 0
    tx[is_pilot] = 10.0
    return tx, is_pilot, (tx * np.exp(1j * phase)).astype(np.complex64)


def _process_in_parts(rx: np.ndarray, pattern: PilotPattern, cuts) -> dict[str, np.ndarray]:
    state = PhaseState()
    results = []
    for part in _split(rx, cuts):
        res, state = pilot_phase_process(part, state, pattern)
        results.append(res.as_dict())
    res, state = flush(state)
    results.append(res.as_dict())
    return {k: np.concatenate([r[k] for r in results]) for k in results[0]}


def _reference(rx: np.ndarray, pattern: PilotPattern) -> dict[str, np.ndarray]:
    idx = np.arange(rx.size)
    is_pilot = (idx - pattern.offset) % pattern.period == 0
    ph = np.unwrap(np.angle(rx[is_pilot].astype(np.complex128)))
    q_idx = idx[~is_pilot]
    q_ph = np.interp(q_idx, idx[is_pilot], ph)
    return {
        "pilot_index": idx[is_pilot],
        "pilot_phase_rad": ph,
        "symbol_index": q_idx,
        "symbols": rx[~is_pilot] * np.exp(-1j * q_ph),
        "symbol_phase_rad": q_ph,
    }


def test_pilot_phase_follows_890_rad_vibration_without_slips():
    n, period = 40_000, 8
    s = np.arange(n)
    truth = 0.4 + 890.0 * np.sin(2 * np.pi * s / 30_000)  # max 0.19 rad per symbol
    _, is_pilot, rx = _symbols(n, period, truth)
    out = _process_in_parts(rx, PilotPattern(period), [1234, 5000, 5001, 33_333])
    np.testing.assert_array_equal(out["pilot_index"], s[is_pilot])
    # float32 symbols: ~1e-7 rad per pilot, no 2 pi slip anywhere over +-890 rad
    np.testing.assert_allclose(out["pilot_phase_rad"], truth[is_pilot], atol=1e-5)
    assert np.ptp(out["pilot_phase_rad"]) > 1700


@SETTINGS
@given(
    period=st.integers(1, 12),
    offset_frac=st.floats(0, 0.999),
    cuts=st.lists(st.integers(0, 3000), max_size=8),
    seed=st.integers(0, 1000),
)
def test_pilot_stage_on_any_split_matches_numpy(period, offset_frac, cuts, seed):
    offset = int(offset_frac * period)
    n = 2500
    rng = np.random.default_rng(seed)
    truth = np.cumsum(rng.uniform(-0.2, 0.2, n)) + rng.uniform(-3, 3)
    _, _, rx = _symbols(n, period, truth, seed, offset)
    pattern = PilotPattern(period, offset)
    whole = _process_in_parts(rx, pattern, [])
    parts = _process_in_parts(rx, pattern, [*cuts, 1, 2])
    for key in whole:
        np.testing.assert_array_equal(parts[key], whole[key], err_msg=key)
    ref = _reference(rx, pattern)
    for key in ("pilot_index", "symbol_index"):
        np.testing.assert_array_equal(whole[key], ref[key])
    np.testing.assert_allclose(whole["pilot_phase_rad"], ref["pilot_phase_rad"], atol=1e-12)
    np.testing.assert_allclose(whole["symbol_phase_rad"], ref["symbol_phase_rad"], atol=1e-12)
    np.testing.assert_allclose(whole["symbols"], ref["symbols"], atol=2e-6 * 5)


def test_rotation_recovers_quantum_symbols():
    n, period = 20_000, 10
    s = np.arange(n)
    truth = 1.0 + 300.0 * np.sin(2 * np.pi * s / 9000) + 0.002 * s
    tx, is_pilot, rx = _symbols(n, period, truth, seed=5)
    out = _process_in_parts(rx, PilotPattern(period), [7777])
    q = tx[~is_pilot]
    np.testing.assert_array_equal(out["symbol_index"], s[~is_pilot])
    corr = np.abs(np.vdot(q, out["symbols"])) / np.linalg.norm(q) / np.linalg.norm(out["symbols"])
    assert corr > 0.9999
    # linear interpolation between pilots: error ~ curvature * period^2 / 8 (the symbols
    # after the last pilot get its phase held, so leave them out)
    inside = out["symbol_index"] < s[is_pilot][-1]
    err = out["symbol_phase_rad"][inside] - truth[out["symbol_index"][inside]]
    assert np.max(np.abs(err)) < 0.01


def test_symbols_wait_for_the_next_pilot_and_flush_holds_the_last():
    pattern = PilotPattern(4)
    rx = np.array([10, 1, 2, 3, 10j, 5, 6], dtype=np.complex64)
    res, state = pilot_phase_process(rx, PhaseState(), pattern)
    np.testing.assert_array_equal(res.symbol_index, [1, 2, 3])  # 5, 6 wait for pilot 8
    np.testing.assert_allclose(res.symbol_phase_rad, [np.pi / 8, np.pi / 4, 3 * np.pi / 8])
    assert state.pending.size == 2 and state.last_pilot_index == 4
    res, state = flush(state)
    np.testing.assert_array_equal(res.symbol_index, [5, 6])
    np.testing.assert_allclose(res.symbol_phase_rad, [np.pi / 2, np.pi / 2])
    np.testing.assert_allclose(res.symbols, [-5j, -6j], atol=1e-6)  # rotated by -pi/2
    assert state.pending.size == 0


def test_before_the_first_pilot_its_phase_is_held_and_without_pilots_nan():
    pattern = PilotPattern(5, offset=3)
    rx = np.array([1j, 2j, 3j, 10j, 4j], dtype=np.complex64)
    res, state = pilot_phase_process(rx[:2], PhaseState(), pattern)
    assert res.symbol_index.size == 0 and state.pending.size == 2
    res, state = pilot_phase_process(rx[2:], state, pattern)
    np.testing.assert_array_equal(res.symbol_index, [0, 1, 2])
    np.testing.assert_allclose(res.symbols, [1, 2, 3], atol=1e-6)
    res, _ = flush(pilot_phase_process(rx[:2], PhaseState(), pattern)[1])
    assert np.all(np.isnan(res.symbol_phase_rad)) and res.symbol_index.tolist() == [0, 1]


def test_pilot_only_mode_every_symbol_a_pilot():
    truth = np.linspace(0, 200, 3000)
    rx = (5 * np.exp(1j * truth)).astype(np.complex64)
    out = _process_in_parts(rx, PilotPattern(1), [100, 2000])
    np.testing.assert_allclose(out["pilot_phase_rad"], truth, atol=1e-5)
    assert out["symbols"].size == 0


def test_interp_rotate_and_rotate_match_numpy():
    rng = np.random.default_rng(2)
    p_idx = np.sort(rng.choice(10_000, 50, replace=False))
    p_ph = np.cumsum(rng.uniform(-2, 2, 50)) * 10
    q_idx = np.sort(rng.choice(np.setdiff1d(np.arange(-50, 10_050), p_idx), 3000, replace=False))
    q = (rng.standard_normal(3000) + 1j * rng.standard_normal(3000)).astype(np.complex64)
    rotated, ph = interp_rotate(q, q_idx, p_idx, p_ph)
    np.testing.assert_allclose(ph, np.interp(q_idx, p_idx, p_ph), rtol=0, atol=1e-12)
    np.testing.assert_allclose(rotated, q * np.exp(-1j * ph), atol=5e-6)
    big = rng.uniform(-1e5, 1e5, 3000)  # quadrant reduction far from zero
    np.testing.assert_allclose(rotate(q, big), q * np.exp(-1j * big), atol=5e-6)
    with pytest.raises(ValueError, match="at least one pilot"):
        interp_rotate(q, q_idx, p_idx[:0], p_ph[:0])


@pytest.mark.parametrize(("period", "offset"), [(0, 0), (3, 3), (3, -1), (2.5, 0)])
def test_pilot_pattern_refuses_bad_values(period, offset):
    with pytest.raises(ValueError, match="pilot"):
        PilotPattern(period, offset)
