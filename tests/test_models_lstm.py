"""LSTM drift predictor: the shipped ONNX model, its numpy reference, features, interface.

Runs with the default + dev install (numpy, scipy, onnxruntime, onnx; no JAX/torch).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from models.base import DriftPredictor, make_predictor
from models.drift import TELEMETRY_NAMES, DriftParams, generate_drift
from models.lstm import (
    DEFAULT_MODEL_PATH,
    PHASE_FEATURES,
    LstmFeatures,
    LstmFeaturesOne,
    LstmMetadata,
    LstmPredictor,
    LstmWeights,
    build_onnx,
    feature_names,
    load_weights,
    make_session,
    output_scale_rad,
    read_metadata,
    reference_step,
)
from models.predictors import PersistencePredictor

# float32 graph against a float64 reference: absolute + relative tolerance on y, h, c
ATOL = 2e-5
RTOL = 2e-5


@pytest.fixture(scope="module")
def meta() -> LstmMetadata:
    return read_metadata(DEFAULT_MODEL_PATH)


@pytest.fixture(scope="module")
def weights() -> LstmWeights:
    return load_weights(DEFAULT_MODEL_PATH)


def _measured_pattern(n: int, period: int, scan: int) -> np.ndarray:
    """Scan-and-transmit: ``scan`` measured ticks every ``period`` ticks."""
    return (np.arange(n) % period) < scan


def _ema_index(meta: LstmMetadata) -> tuple[int, ...]:
    return tuple(meta.telemetry_names.index(c) for c in meta.ema_channels)


# ---------------------------------------------------------------------------------------------
# The shipped file and its metadata


def test_shipped_model_metadata_is_consistent(meta: LstmMetadata, weights: LstmWeights) -> None:
    assert DEFAULT_MODEL_PATH.is_file()
    n_f, n_h = len(meta.feature_names), len(meta.horizons_ticks)
    assert meta.horizons_ticks == tuple(sorted(set(meta.horizons_ticks)))
    assert all(h >= 1 for h in meta.horizons_ticks)
    assert meta.telemetry_names == TELEMETRY_NAMES
    assert meta.tick_s == DriftParams().tick_s
    assert list(meta.feature_names) == feature_names(
        meta.telemetry_names, meta.ema_taus_s, meta.ema_channels, meta.phase_ema_taus_s
    )
    assert meta.feature_names[: len(PHASE_FEATURES)] == PHASE_FEATURES
    assert meta.input_mean.shape == meta.input_std.shape == (n_f,)
    assert np.all(meta.input_std > 0)
    assert meta.scale_floor_rad.shape == meta.scale_rate_rad_per_tick.shape == (n_h,)
    assert meta.residual_rms_rad.shape == (meta.residual_age_edges_ticks.size - 1, n_h)
    assert np.all(np.isfinite(meta.residual_rms_rad)) and np.all(meta.residual_rms_rad > 0)
    # the weights read from the initializers agree with the metadata
    assert weights.num_layers == meta.num_layers and weights.hidden_size == meta.hidden_size
    assert weights.skip_w.shape == (n_h, n_f) and weights.head_w.shape == (n_h, meta.hidden_size)
    assert weights.w[0].shape == (4 * meta.hidden_size, n_f)
    # training data description: seeds far from the small held-out seeds benchmarks use
    assert meta.training["seed"] is not None
    assert min(meta.training["validation_seeds"]) >= 1_000_000
    # one-thread session, graph I/O as documented
    session = make_session(DEFAULT_MODEL_PATH)
    state = [meta.num_layers, 1, meta.hidden_size]
    assert {i.name: i.shape for i in session.get_inputs()} == {
        "x": [1, n_f],
        "h_in": state,
        "c_in": state,
    }
    assert {o.name: o.shape for o in session.get_outputs()} == {
        "y": [1, n_h],
        "h_out": state,
        "c_out": state,
    }


def test_metadata_round_trip_and_errors(meta: LstmMetadata) -> None:
    props = meta.to_map()
    again = LstmMetadata.from_map(props, "x.onnx")
    assert again.feature_names == meta.feature_names
    np.testing.assert_array_equal(again.input_std, meta.input_std)
    missing = dict(props)
    del missing["horizons_ticks"]
    with pytest.raises(ValueError, match=r"x\.onnx: metadata key 'horizons_ticks' missing"):
        LstmMetadata.from_map(missing, "x.onnx")
    bad = dict(props, input_std="[1.0, 2.0]")
    with pytest.raises(ValueError, match=r"x\.onnx: .*input_std has shape \(2,\)"):
        LstmMetadata.from_map(bad, "x.onnx")
    with pytest.raises(ValueError, match="metadata format"):
        LstmMetadata.from_map(dict(props, format='"other/1"'), "x.onnx")


def test_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.onnx"):
        LstmPredictor(tmp_path / "nope.onnx")


# ---------------------------------------------------------------------------------------------
# Parity: onnxruntime against the numpy reference of the same equations


def test_shipped_model_parity_with_carried_state(meta: LstmMetadata, weights: LstmWeights) -> None:
    """Run the predictor (io-binding path) over a trace with gaps; compare each step with the
    numpy reference carrying its own state, and one step from the ONNX state."""
    trace = generate_drift(400.0, seed=11, start_s=30_000.0)
    measured = _measured_pattern(len(trace), 97, 12)
    p = LstmPredictor()
    layers, hidden = meta.num_layers, meta.hidden_size
    h_ref = np.zeros((layers, hidden))
    c_ref = np.zeros((layers, hidden))
    worst = 0.0
    for i in range(len(trace)):
        h_prev, c_prev = p.state
        z = trace.measured_phase_rad[i] if measured[i] else math.nan
        out = p.step(z, trace.telemetry[i])
        x = p.last_input[0]
        h_ort, c_ort = p.state
        # reference with its own carried state
        y_ref, h_ref, c_ref = reference_step(weights, x, h_ref, c_ref)
        np.testing.assert_allclose(h_ort[:, 0], h_ref, atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(c_ort[:, 0], c_ref, atol=ATOL, rtol=RTOL)
        # reference from the ONNX state of the previous tick
        y_one, h_one, _ = reference_step(weights, x, h_prev[:, 0], c_prev[:, 0])
        np.testing.assert_allclose(h_ort[:, 0], h_one, atol=ATOL, rtol=RTOL)
        # the predictor's output in rad, rebuilt from the reference
        anchor = p.anchor_rad
        scale = output_scale_rad(
            p.age_ticks,
            meta.horizons_ticks,
            meta.scale_floor_rad,
            meta.scale_rate_rad_per_tick,
        )
        expected = anchor + scale * y_ref
        if i < np.argmax(measured):  # no anchor yet
            assert np.isnan(out).all()
        else:
            np.testing.assert_allclose(out, expected, atol=ATOL * scale.max(), rtol=RTOL)
            worst = max(worst, float(np.max(np.abs(y_one - y_ref))))
    assert worst < 10 * ATOL


def _random_weights(
    rng: np.random.Generator, n_f: int, hidden: int, layers: int, n_out: int
) -> LstmWeights:
    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-0.6, 0.6, shape).astype(np.float32)

    return LstmWeights(
        w=tuple(u(4 * hidden, n_f if k == 0 else hidden) for k in range(layers)),
        r=tuple(u(4 * hidden, hidden) for _ in range(layers)),
        wb=tuple(u(4 * hidden) for _ in range(layers)),
        rb=tuple(u(4 * hidden) for _ in range(layers)),
        head_w=u(n_out, hidden),
        skip_w=u(n_out, n_f),
        head_b=u(n_out),
    )


@pytest.mark.parametrize("layers", [1, 2])
def test_export_graph_matches_reference(layers: int, meta: LstmMetadata, tmp_path: Path) -> None:
    """The graph builder (random weights, 1 and 2 layers, separate W and R biases) against the
    reference, state carried both ways; and the weights read back are the ones written."""
    rng = np.random.default_rng(layers)
    n_f, n_h, hidden = len(meta.feature_names), len(meta.horizons_ticks), 8
    weights = _random_weights(rng, n_f, hidden, layers, n_h)
    from dataclasses import replace

    meta2 = replace(meta, hidden_size=hidden, num_layers=layers)
    path = tmp_path / "random.onnx"
    path.write_bytes(build_onnx(weights, meta2).SerializeToString())
    back = load_weights(path)
    for a, b in zip(
        (*weights.w, *weights.r, *weights.wb, *weights.rb, weights.head_w, weights.skip_w),
        (*back.w, *back.r, *back.wb, *back.rb, back.head_w, back.skip_w),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    session = make_session(path)
    h = np.zeros((layers, 1, hidden), dtype=np.float32)
    c = np.zeros_like(h)
    h_ref, c_ref = np.zeros((layers, hidden)), np.zeros((layers, hidden))
    for _ in range(200):
        x = rng.normal(0.0, 1.5, n_f).astype(np.float32)
        y, h, c = session.run(None, {"x": x[None], "h_in": h, "c_in": c})
        y_ref, h_ref, c_ref = reference_step(weights, x, h_ref, c_ref)
        np.testing.assert_allclose(y[0], y_ref, atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(h[:, 0], h_ref, atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(c[:, 0], c_ref, atol=ATOL, rtol=RTOL)
    # the runtime accepts the file and its metadata
    assert LstmPredictor(path).metadata.num_layers == layers


# ---------------------------------------------------------------------------------------------
# Recurrent state


def test_hidden_state_is_carried_and_reset_restores() -> None:
    trace = generate_drift(300.0, seed=12)
    measured = _measured_pattern(len(trace), 60, 10)
    p = LstmPredictor()
    first = p.run(trace, measured)
    state_after = p.state
    # same input, state after the trace vs the reset state: different outputs
    session = make_session(DEFAULT_MODEL_PATH)
    x = p.last_input
    zero = np.zeros_like(state_after[0])
    y_zero, _, _ = session.run(None, {"x": x, "h_in": zero, "c_in": zero})
    y_state, _, _ = session.run(None, {"x": x, "h_in": state_after[0], "c_in": state_after[1]})
    assert np.max(np.abs(y_zero - y_state)) > 1e-2
    second = p.run(trace, measured)  # run() resets first
    np.testing.assert_array_equal(first, second)
    p.reset()
    assert not np.any(p.state[0]) and not np.any(p.state[1])
    assert np.any(state_after[0])
    # the state matters through the predictor too: same last tick, different histories
    p.reset()
    other = trace.measured_phase_rad + 0.5 * np.sin(np.arange(len(trace)) / 7.0)
    for i in range(len(trace) - 1):
        p.step(other[i] if measured[i] else math.nan, trace.telemetry[i])
    h_other = p.state[0]
    assert not np.allclose(h_other, state_after[0], atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Interface


def test_predictor_conforms_to_the_interface(meta: LstmMetadata) -> None:
    p = make_predictor("lstm")
    assert isinstance(p, DriftPredictor) and isinstance(p, LstmPredictor)
    assert p.name == "lstm" and p.horizons_ticks == meta.horizons_ticks
    n_h = len(p.horizons_ticks)
    tel = np.array([22.0, 1.0, 0.5])
    first = p.step(math.nan, tel)
    assert first.dtype == np.float64 and first.shape == (n_h,)
    assert np.isnan(first).all() and np.isnan(p.predicted_std_rad()).all()
    out = p.step(1.25, tel)
    assert out.dtype == np.float64 and out.shape == (n_h,) and np.isfinite(out).all()
    std = p.predicted_std_rad()
    assert std.shape == (n_h,) and np.all(std > 0)
    for _ in range(50):  # missing measurements: keeps predicting, uncertainty does not shrink
        out = p.step(math.nan, tel)
        assert np.isfinite(out).all()
    assert np.all(p.predicted_std_rad() >= std)
    # a missing telemetry reading holds the previous one
    q1, q2 = LstmPredictor(), LstmPredictor()
    for _ in range(3):
        np.testing.assert_array_equal(q1.step(1.25, tel), q2.step(1.25, tel))
    np.testing.assert_array_equal(
        q1.step(math.nan, tel), q2.step(math.nan, np.array([22.0, math.nan, 0.5]))
    )
    # a channel never read yet does not poison the carried state; inf phase = not measured
    r = LstmPredictor()
    r.step(math.inf, np.array([math.nan, 1.0, 0.5]))
    for _ in range(5):
        assert np.isfinite(r.step(0.3, tel)).all()
    assert np.isfinite(r.state[0]).all() and np.isfinite(r.state[1]).all()
    with pytest.raises(ValueError, match=r"telemetry shape \(2,\), expected \(3,\)"):
        p.step(0.0, np.zeros(2))


def test_horizon_subset_selects_model_outputs() -> None:
    full = LstmPredictor()
    hs = full.horizons_ticks
    sub = LstmPredictor(horizons_ticks=hs[1:])
    trace = generate_drift(200.0, seed=13)
    a = full.run(trace)
    b = sub.run(trace)
    np.testing.assert_array_equal(a[:, 1:], b)
    with pytest.raises(ValueError, match=r"predicts .* only"):
        LstmPredictor(horizons_ticks=(hs[-1] + 1,))


# ---------------------------------------------------------------------------------------------
# Features


def test_features_against_independent_references(meta: LstmMetadata) -> None:
    """EMA bank = scipy lfilter first-order lag; phase features from their definitions."""
    trace = generate_drift(900.0, seed=14)
    n = len(trace)
    measured = _measured_pattern(n, 150, 20)
    measured[:5] = False
    z = np.where(measured, trace.measured_phase_rad, np.nan)
    idx = _ema_index(meta)
    f = LstmFeatures(
        3, meta.ema_taus_s, meta.tick_s, ema_channels=idx, phase_ema_taus_s=meta.phase_ema_taus_s
    )
    rows = np.array([f.step(z[i : i + 1], trace.telemetry[i : i + 1])[0].copy() for i in range(n)])
    names = list(meta.feature_names)
    air = trace.telemetry[:, idx[0]]
    for tau in meta.ema_taus_s:
        a = math.exp(-meta.tick_s / tau)
        ema, _ = scipy.signal.lfilter([1.0 - a], [1.0, -a], air, zi=[a * air[0]])
        col = names.index(f"{meta.ema_channels[0]}-ema{tau:g}s")
        np.testing.assert_allclose(rows[:, col], air - ema, atol=1e-9)
        # change of the EMA since the last measurement (0 on measured ticks)
        last = np.maximum.accumulate(np.where(measured, np.arange(n), 0))
        col = names.index(f"{meta.ema_channels[0]}@ema{tau:g}s-anchor")
        ok = np.arange(n) >= np.argmax(measured)
        np.testing.assert_allclose(rows[ok, col], (ema - ema[last])[ok], atol=1e-9)
    m_idx = np.flatnonzero(measured)
    np.testing.assert_array_equal(rows[:, 0], measured.astype(float))
    # increments across gaps and their per-tick rate
    np.testing.assert_allclose(rows[m_idx[1:], 1], np.diff(z[m_idx]), atol=1e-12)
    np.testing.assert_allclose(rows[m_idx[1:], 2], np.diff(z[m_idx]) / np.diff(m_idx), atol=1e-12)
    assert rows[m_idx[0], 1] == 0.0  # no previous anchor
    ages = np.arange(n) - np.maximum.accumulate(np.where(measured, np.arange(n), -1))
    ok = np.arange(n) >= m_idx[0]
    np.testing.assert_allclose(rows[ok, 3], np.log1p(ages[ok]), atol=1e-12)
    j = names.index(meta.telemetry_names[0])
    np.testing.assert_array_equal(rows[:, j : j + 3], trace.telemetry)
    # weighted means of the measured phases, weights exp(-(i - t_j)/tau), minus the anchor
    anchor = np.array([z[m_idx[m_idx <= i][-1]] if i >= m_idx[0] else np.nan for i in range(n)])
    for tau in meta.phase_ema_taus_s:
        avg = np.full(n, np.nan)
        for i in range(m_idx[0], n):
            t_j = m_idx[m_idx <= i]
            w = np.exp(-(t_j[-1] - t_j) * meta.tick_s / tau)
            avg[i] = np.sum(w * z[t_j]) / np.sum(w)
        col = names.index(f"phase_ema{tau:g}s-anchor")
        np.testing.assert_allclose(rows[ok, col], (avg - anchor)[ok], atol=1e-12)
        assert np.all(rows[~ok, col] == 0.0)


@settings(max_examples=40, deadline=None)
@given(
    pattern=st.lists(st.booleans(), min_size=1, max_size=80),
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 4),
)
def test_batched_features_equal_the_fast_path(pattern: list[bool], seed: int, batch: int) -> None:
    """The batched builder (training) and the batch-1 float builder (run time) agree, with NaN
    phases and NaN telemetry readings."""
    rng = np.random.default_rng(seed)
    n = len(pattern)
    taus = (30.0, 300.0, 2700.0)
    phases = np.where(
        np.array(pattern)[:, None] & (rng.random((n, batch)) < 0.8),
        rng.normal(0, 3, (n, batch)),
        np.nan,
    )
    tel = rng.normal(22.0, 1.0, (n, batch, 3))
    tel[rng.random((n, batch, 3)) < 0.05] = np.nan
    tel[0] = np.where(np.isnan(tel[0]), 22.0, tel[0])
    kw = {"ema_channels": (0, 2), "phase_ema_taus_s": (2.0, 9.0)}
    batched = LstmFeatures(3, taus, 1.0, batch=batch, **kw)
    singles = [LstmFeaturesOne(3, taus, 1.0, **kw) for _ in range(batch)]
    for t in range(n):
        rows = batched.step(phases[t], tel[t])
        for b in range(batch):
            one = singles[b].step(float(phases[t, b]), tel[t, b].tolist())
            np.testing.assert_allclose(one, rows[b], rtol=1e-12, atol=1e-12)
            assert singles[b].anchor_rad == batched.anchor_rad[b] or (
                math.isnan(singles[b].anchor_rad) and math.isnan(batched.anchor_rad[b])
            )
            assert singles[b].age_ticks == batched.age_ticks[b]


def test_constant_telemetry_gives_zero_thermal_features(meta: LstmMetadata) -> None:
    f = LstmFeatures(
        3,
        meta.ema_taus_s,
        1.0,
        ema_channels=_ema_index(meta),
        phase_ema_taus_s=meta.phase_ema_taus_s,
    )
    tel = np.array([[21.3, 1.0, 0.5]])
    for i in range(50):
        row = f.step(np.array([0.1 * i if i % 10 == 0 else np.nan]), tel)[0]
    first_ema = list(meta.feature_names).index(
        f"{meta.ema_channels[0]}@ema{meta.ema_taus_s[0]:g}s-anchor"
    )
    assert np.all(row[first_ema:] == 0.0)


# ---------------------------------------------------------------------------------------------
# Prediction quality (held-out trace, margins far from the measured ones)


def _rmse(pred: np.ndarray, phase: np.ndarray, h: int, keep: np.ndarray) -> float:
    e = pred[:-h] - phase[h:]
    sel = keep[:-h] & np.isfinite(e)
    return float(np.sqrt(np.mean(e[sel] ** 2)))


def test_beats_persistence_on_a_held_out_trace() -> None:
    """Scans of 15 ticks every 10 min (the rest transmitting) on a held-out 3 h trace: in the
    gaps the LSTM must extrapolate from telemetry; persistence cannot."""
    trace = generate_drift(3 * 3600.0, seed=3, start_s=40_000.0)
    n = len(trace)
    measured = _measured_pattern(n, 615, 15)
    lstm = LstmPredictor()
    persistence = PersistencePredictor(lstm.horizons_ticks)
    out_l = lstm.run(trace, measured)
    out_p = persistence.run(trace, measured)
    keep = np.arange(n) >= 1800  # after the EMAs settle
    for k, h in enumerate(lstm.horizons_ticks):
        r_l = _rmse(out_l[:, k], trace.phase_rad, h, keep)
        r_p = _rmse(out_p[:, k], trace.phase_rad, h, keep)
        assert r_l < 0.7 * r_p, (h, r_l, r_p)
    # with the phase measured every tick, the 1-tick prediction beats the last measurement
    dense_l = lstm.run(trace)
    dense_p = persistence.run(trace)
    h0 = lstm.horizons_ticks[0]
    assert _rmse(dense_l[:, 0], trace.phase_rad, h0, keep) < 0.8 * _rmse(
        dense_p[:, 0], trace.phase_rad, h0, keep
    )


def test_session_is_single_threaded() -> None:
    p = LstmPredictor()
    options = p.session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
