"""Train the phase-drift LSTM with JAX and export it to ONNX (training extra only).

How to (re)train the shipped model
----------------------------------
Install the training extra (CPU only: ``jax[cpu]``, ``optax``, ``onnx``; see pyproject's
``train`` extra), then, from the repository root::

    pip install -e '.[train]'
    python -m models.train_lstm                  # writes models/phase_drift_lstm.onnx
    python -m models.train_lstm --epochs 8 --out /tmp/quick.onnx     # a quick try (~1 min)

Options: ``--seed S`` (default 0: the shipped model), ``--epochs``, ``--batch`` (traces per
update), ``--hours`` (length of each training trace), ``--hidden``, ``--layers``,
``--learning-rate``, ``--out``. The run is deterministic for a given seed, machine and library
versions (numpy and JAX PRNGs seeded from it; XLA on CPU is deterministic). The default run
took about 12 min on the 2-vCPU development machine; it prints the validation error per age
(ticks since the last phase measurement) against persistence and the export parity.

Data
----
Every epoch draws ``--batch`` fresh traces of ``--hours`` hours from
:func:`models.drift.generate_drift` (default :class:`~models.drift.DriftParams`, a random time
of day), seeds ``TRAIN_SEED_BASE + 100_000 * seed + epoch * batch + b``; the validation traces
use ``VALIDATION_SEED_BASE + k``. Both ranges (>= 7,000,000) are disjoint from the seeds the
benchmark (``labctl.bench_predictors``: below 7,000,000) and the tests (small integers) hold
out. Each trace gets a random measurement mask that mimics the closed loop
(:func:`scan_transmit_mask`): an optional dense warm-up, then short scans measured every tick
separated by transmit gaps (phase not measured) from seconds to hours, and some stretches
measured every tick. Through the gaps the LSTM must extrapolate from the telemetry, which is
what the carried hidden state is trained for.

Training
--------
Truncated back-propagation through time over consecutive windows of ``WINDOW_TICKS`` ticks,
the recurrent state carried (not differentiated) from one window to the next, as at run time
where it is carried from tick to tick. Target: the increment ``phase(t + h) - anchor`` divided
by the output scale ``s_h(age)`` (:func:`models.lstm.output_scale_rad`), fitted by
:func:`linear_warm_start` to the error a linear model of the same features reaches at that age,
so every regime (a tick after a scan: tens of mrad; an hour into a gap: tenths of rad) weighs
alike. That linear model also initialises the skip connection (the LSTM head starts at zero),
so training starts from the linear solution and the LSTM learns what is not linear. Loss: Huber
(``HUBER_DELTA``) over the horizons and the ticks with an anchor and a future. Adam (warm-up,
cosine decay, global-norm clipping, decoupled weight decay, non-finite updates skipped); an
exponential moving average of the parameters
(``POLYAK_DECAY``) is validated every ``EVAL_EVERY_EPOCHS`` epochs and the best one exported.

Export
------
:func:`models.lstm.build_onnx` puts the parameters into an ONNX graph (standard ``LSTM`` and
``Gemm`` ops, opset :data:`models.lstm.ONNX_OPSET`) with the normalisation, output scale,
horizons, feature names, the validation error table by age and a description of the training
data in ``metadata_props`` (:class:`models.lstm.LstmMetadata`). Before the file is written,
onnxruntime runs it for ``PARITY_STEPS`` ticks of a validation trace with carried state and
its outputs and states are compared with the JAX model and :func:`models.lstm.reference_step`
(``PARITY_TOL``); a mismatch aborts the export.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import optax
import scipy.optimize

from models.base import DEFAULT_HORIZONS_TICKS
from models.drift import TELEMETRY_NAMES, DriftParams, DriftTrace, generate_drift
from models.lstm import (
    DEFAULT_MODEL_PATH,
    LstmFeatures,
    LstmMetadata,
    LstmWeights,
    build_onnx,
    feature_names,
    output_scale_rad,
    reference_step,
)

MODEL_VERSION = "1.0.0"

HORIZONS_TICKS: tuple[int, ...] = DEFAULT_HORIZONS_TICKS
"""Horizons the model is trained for (the interface default: 1 tick, 10 ticks, 1 min)."""

EMA_CHANNELS: tuple[str, ...] = ("ambient_c",)
"""Telemetry channels that get the EMA filter bank (the air temperature drives the phase through
the enclosure lag; pump power moves it by mrad only; the vibration reading is a burst flag)."""

EMA_TAUS_S: tuple[float, ...] = (30.0, 300.0, 900.0, 2700.0, 8100.0)
"""EMA time constants, s: 30 s smooths the thermometer noise; 300..8100 s (factor 3 apart, the
same bank as the ARX baseline) bracket enclosure lags of "tens of minutes" without assuming the
generator's value."""

PHASE_EMA_TAUS_S: tuple[float, ...] = (3.0, 10.0, 30.0)
"""Time constants of the averages of the measured phase, s: a scan lasts 5..30 ticks; the
random walk (~2e-3 rad per tick) makes averaging over much more than 30 ticks pointless."""

WINDOW_TICKS = 512
"""Truncated-BPTT window, ticks."""

TRAIN_SEED_BASE = 7_000_000
VALIDATION_SEED_BASE = 8_000_000
PARITY_TOL = 1e-4
"""Largest ``|a - b| / (1 + |b|)`` allowed between onnxruntime and the JAX / numpy references
over ``PARITY_STEPS`` carried steps, for the normalised outputs and the state (float32
arithmetic: about 1e-6 per step, accumulated through the cell state)."""

PARITY_STEPS = 1000

AGE_EDGES_TICKS: tuple[float, ...] = (0, 1, 3, 10, 30, 100, 300, 1000, 3000, 1e9)
"""Bins of "ticks since the last measurement" for the validation error table."""


# ---------------------------------------------------------------------------------------------
# Data


def scan_transmit_mask(n: int, rng: np.random.Generator) -> np.ndarray:
    """Bool (n,): ticks whose phase is measured, mimicking scan-and-transmit operation.

    Half the traces start with a stretch measured every tick (0..3 h: a bench warming up with
    its reference light on, as the benchmark's warm-up does). Then scans (5..30 ticks measured
    every tick) alternate with transmit gaps (log-uniform 3..6000 ticks, nothing measured); one
    scan in five is replaced by a stretch measured every tick (100..3000 ticks), so dense data
    stays well represented.
    """
    mask = np.zeros(n, dtype=bool)
    i = 0
    if rng.random() < 0.5:
        i = int(rng.integers(0, 3 * 3600))
        mask[:i] = True
    while i < n:
        scan = int(rng.integers(5, 31))
        if rng.random() < 0.2:
            scan = int(rng.integers(100, 3001))
        mask[i : i + scan] = True
        i += scan + round(math.exp(rng.uniform(math.log(3.0), math.log(6000.0))))
    return mask


@dataclass
class Batch:
    """Features, targets and weights of ``B`` traces, time-major float32 arrays."""

    x: np.ndarray  # (T, B, F) raw features
    target: np.ndarray  # (T, B, n_h) phase(t + h) - anchor, rad (0 where invalid)
    valid: np.ndarray  # (T, B, n_h) 1 where the target is defined
    anchor: np.ndarray  # (T, B) float64
    age: np.ndarray  # (T, B) ticks since the last measurement
    phase: np.ndarray  # (T, B) float64 true phase


def make_batch(
    traces: Sequence[DriftTrace], masks: Sequence[np.ndarray], horizons: Sequence[int]
) -> Batch:
    """Run the streaming feature builder over ``traces`` (all the same length) with ``masks``."""
    n, b = len(traces[0]), len(traces)
    feats = LstmFeatures(
        len(TELEMETRY_NAMES),
        EMA_TAUS_S,
        float(traces[0].t_s[1] - traces[0].t_s[0]),
        batch=b,
        ema_channels=tuple(TELEMETRY_NAMES.index(c) for c in EMA_CHANNELS),
        phase_ema_taus_s=PHASE_EMA_TAUS_S,
    )
    z = np.stack(
        [np.where(m, tr.measured_phase_rad, np.nan) for tr, m in zip(traces, masks, strict=True)], 1
    )
    tel = np.stack([tr.telemetry for tr in traces], 1)
    phase = np.stack([tr.phase_rad for tr in traces], 1)
    x = np.empty((n, b, feats.n_features), dtype=np.float32)
    anchor = np.empty((n, b))
    age = np.empty((n, b))
    for t in range(n):
        x[t] = feats.step(z[t], tel[t])
        anchor[t] = feats.anchor_rad
        age[t] = feats.age_ticks
    n_h = len(horizons)
    target = np.zeros((n, b, n_h), dtype=np.float32)
    valid = np.zeros((n, b, n_h), dtype=np.float32)
    for k, h in enumerate(horizons):
        d = phase[h:] - anchor[:-h]
        ok = np.isfinite(d)
        target[:-h, :, k] = np.where(ok, d, 0.0)
        valid[:-h, :, k] = ok
    return Batch(x, target, valid, anchor, age, phase)


def draw_traces(
    seeds: Sequence[int], hours: float, rng: np.random.Generator
) -> tuple[list[DriftTrace], list[np.ndarray]]:
    """Traces (random time of day) and their scan/transmit masks."""
    traces, masks = [], []
    for s in seeds:
        start_s = float(rng.integers(0, 24 * 3600))
        tr = generate_drift(hours * 3600.0, DriftParams(), seed=int(s), start_s=start_s)
        traces.append(tr)
        masks.append(scan_transmit_mask(len(tr), rng))
    return traces, masks


# ---------------------------------------------------------------------------------------------
# Model (same equations and layout as models.lstm.reference_step)

Params = dict[str, Any]


def init_params(key: jax.Array, n_in: int, hidden: int, layers: int, n_out: int) -> Params:
    """Uniform(+-1/sqrt(H)) weights (PyTorch's LSTM init), forget-gate bias +1, zero head."""
    keys = jax.random.split(key, 2 * layers + 1)
    bound = 1.0 / math.sqrt(hidden)
    params: Params = {"w": [], "r": [], "b": []}
    for layer in range(layers):
        n = n_in if layer == 0 else hidden
        params["w"].append(
            jax.random.uniform(keys[2 * layer], (4 * hidden, n), minval=-bound, maxval=bound)
        )
        params["r"].append(
            jax.random.uniform(
                keys[2 * layer + 1], (4 * hidden, hidden), minval=-bound, maxval=bound
            )
        )
        params["b"].append(jnp.zeros(4 * hidden).at[2 * hidden : 3 * hidden].set(1.0))
    params["head_w"] = jnp.zeros((n_out, hidden))  # start from the linear skip alone
    params["skip_w"] = jnp.zeros((n_out, n_in))
    params["head_b"] = jnp.zeros(n_out)
    return params


def run_model(
    params: Params, x: jax.Array, h0: jax.Array, c0: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Normalised inputs ``x`` (T, B, F), state (L, B, H) -> outputs (T, B, n_out), final state.

    ``b`` holds ``Wb + Rb`` (the ONNX export splits it as ``Wb = b``, ``Rb = 0``).
    """
    hidden = params["r"][0].shape[1]
    layers = len(params["w"])
    x_proj = x @ params["w"][0].T + params["b"][0]  # layer-0 input projection, all ticks at once

    def cell(carry: tuple[jax.Array, jax.Array], inp: tuple[jax.Array, jax.Array]) -> Any:
        h, c = carry
        xp, xt = inp
        hs, cs = [], []
        below = None
        for layer in range(layers):
            if layer == 0:
                gates = xp + h[0] @ params["r"][0].T
            else:
                gates = below @ params["w"][layer].T + h[layer] @ params["r"][layer].T
                gates = gates + params["b"][layer]
            i = jax.nn.sigmoid(gates[:, :hidden])
            o = jax.nn.sigmoid(gates[:, hidden : 2 * hidden])
            f = jax.nn.sigmoid(gates[:, 2 * hidden : 3 * hidden])
            g = jnp.tanh(gates[:, 3 * hidden :])
            c_new = f * c[layer] + i * g
            h_new = o * jnp.tanh(c_new)
            hs.append(h_new)
            cs.append(c_new)
            below = h_new
        y = below @ params["head_w"].T + xt @ params["skip_w"].T + params["head_b"]
        return (jnp.stack(hs), jnp.stack(cs)), y

    (h, c), y = jax.lax.scan(cell, (h0, c0), (x_proj, x))
    return y, h, c


HUBER_DELTA = 3.0
"""Huber loss threshold, in units of the output scale (the error a linear model reaches at that
age): errors beyond it, i.e. vibration bursts, count linearly, so their unpredictable jitter
does not dominate the gradients. For the symmetric burst noise this keeps the predictor
unbiased."""


def _loss(params: Params, x: jax.Array, tgt: jax.Array, valid: jax.Array, h0: Any, c0: Any) -> Any:
    y, h, c = run_model(params, x, h0, c0)
    err = optax.losses.huber_loss(y, tgt, delta=HUBER_DELTA) * valid
    loss = jnp.sum(err) / jnp.maximum(jnp.sum(valid), 1.0)
    return loss, (h, c)


def to_weights(params: Params) -> LstmWeights:
    """Float32 numpy weights in the ONNX layout (all the bias in ``Wb``, ``Rb = 0``)."""
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    return LstmWeights(
        w=tuple(f32(w) for w in params["w"]),
        r=tuple(f32(r) for r in params["r"]),
        wb=tuple(f32(b) for b in params["b"]),
        rb=tuple(np.zeros_like(f32(b)) for b in params["b"]),
        head_w=f32(params["head_w"]),
        skip_w=f32(params["skip_w"]),
        head_b=f32(params["head_b"]),
    )


# ---------------------------------------------------------------------------------------------
# ONNX export


def _rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / (1 + |b|): absolute for small values, relative for large ones."""
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a64 - b64) / (1.0 + np.abs(b64))))


def check_parity(
    model: onnx.ModelProto, params: Params, weights: LstmWeights, x_norm: np.ndarray
) -> dict[str, float]:
    """Run ``x_norm`` (T, F) through onnxruntime, JAX and the numpy reference, state carried
    by each; returns the largest :func:`_rel_diff` of y, h and c per pair.

    Raises RuntimeError above :data:`PARITY_TOL`.
    """
    session = make_session_from_bytes(model.SerializeToString())
    layers, hidden = weights.num_layers, weights.hidden_size
    n = x_norm.shape[0]
    h = np.zeros((layers, 1, hidden), dtype=np.float32)
    c = np.zeros_like(h)
    h_ref = np.zeros((layers, hidden))
    c_ref = np.zeros((layers, hidden))
    y_ort = np.empty((n, weights.head_w.shape[0]))
    hc_ort = np.empty((n, 2, layers, hidden))
    y_ref = np.empty_like(y_ort)
    hc_ref = np.empty_like(hc_ort)
    for t, xt in enumerate(x_norm.astype(np.float32)):
        y, h, c = session.run(None, {"x": xt[None], "h_in": h, "c_in": c})
        y_ort[t], hc_ort[t, 0], hc_ort[t, 1] = y[0], h[:, 0], c[:, 0]
        y_ref[t], h_ref, c_ref = reference_step(weights, xt, h_ref, c_ref)
        hc_ref[t, 0], hc_ref[t, 1] = h_ref, c_ref
    zeros = jnp.zeros((layers, 1, hidden))
    y_jax, h_jax, c_jax = run_model(params, jnp.asarray(x_norm[:, None, :]), zeros, zeros)
    result = {
        "y_vs_numpy": _rel_diff(y_ort, y_ref),
        "state_vs_numpy": _rel_diff(hc_ort, hc_ref),
        "y_vs_jax": _rel_diff(y_ort, np.asarray(y_jax)[:, 0]),
        "final_state_vs_jax": max(
            _rel_diff(hc_ort[-1, 0], np.asarray(h_jax)[:, 0]),
            _rel_diff(hc_ort[-1, 1], np.asarray(c_jax)[:, 0]),
        ),
        "max_abs_c": float(np.max(np.abs(hc_ref[:, 1]))),
        "steps": n,
    }
    worst = max(v for k, v in result.items() if k not in ("max_abs_c", "steps"))
    if worst > PARITY_TOL:
        raise RuntimeError(f"ONNX export parity failed: {result} (tolerance {PARITY_TOL})")
    return result


def make_session_from_bytes(model_bytes: bytes) -> ort.InferenceSession:
    """Like :func:`models.lstm.make_session` but from an in-memory model."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainConfig:
    """Command-line settings (see the module docstring)."""

    seed: int = 0
    epochs: int = 64
    batch: int = 64
    hours: float = 6.0
    hidden: int = 32
    layers: int = 1
    learning_rate: float = 1.5e-3
    validation_traces: int = 8
    validation_hours: float = 12.0
    out: Path = DEFAULT_MODEL_PATH


POLYAK_DECAY = 0.99
"""Exponential moving average of the parameters (per update) that is validated and exported:
it averages out the noise of the last updates (each window's traces are correlated in time)."""

EVAL_EVERY_EPOCHS = 4

WEIGHT_DECAY = 1e-4
"""AdamW decoupled weight decay (per unit learning rate)."""


def predict_batch(params: Params, batch: Batch, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Normalised outputs (T, B, n_h) of the model over a whole batch from the reset state."""
    layers, hidden = len(params["w"]), params["r"][0].shape[1]
    zeros = jnp.zeros((layers, batch.x.shape[1], hidden))
    x = jnp.asarray((batch.x - mean) / std)
    y, _, _ = jax.jit(run_model)(params, x, zeros, zeros)
    return np.asarray(y)


def residual_table(
    pred_rad: np.ndarray, batch: Batch, horizons: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """RMS error (rad) per age bin and horizon, plus the overall RMS per horizon."""
    edges = np.asarray(AGE_EDGES_TICKS)
    err = pred_rad - (batch.target + batch.anchor[..., None])
    for k, h in enumerate(horizons):  # truth: phase(t + h)
        err[:-h, :, k] = pred_rad[:-h, :, k] - batch.phase[h:]
        err[-h:, :, k] = np.nan
    err[batch.valid == 0] = np.nan
    table = np.empty((edges.size - 1, len(horizons)))
    bins = np.clip(np.searchsorted(edges, batch.age, side="right") - 1, 0, edges.size - 2)
    for j in range(edges.size - 1):
        sel = err[bins == j]
        table[j] = np.sqrt(np.nanmean(sel**2, axis=0)) if sel.size else np.nan
    # bins never seen in validation: fall back on the next populated bin (conservative)
    for j in range(edges.size - 2, -1, -1):
        missing = ~np.isfinite(table[j])
        if missing.any():
            table[j, missing] = table[j + 1, missing] if j + 1 < edges.size - 1 else np.nan
    overall = np.sqrt(np.nanmean(err**2, axis=(0, 1)))
    return table, overall


def fit_scale_curve(span_ticks: np.ndarray, sq_rad2: np.ndarray) -> tuple[float, float]:
    """Fit ``E[sq] = floor^2 + (rate * span)^2``; returns ``(floor_rad, rate_rad_per_tick)``.

    Mean of ``sq`` in log-spaced bins of ``span`` (so every time scale counts, whatever its
    number of ticks), then non-negative least squares on the relative misfit of each bin.
    """
    edges = np.unique(np.round(np.logspace(0, 5, 41)))
    idx = np.digitize(span_ticks, edges)
    rows, ys = [], []
    for j in np.unique(idx):
        sel = idx == j
        if sel.sum() >= 100:
            rows.append([1.0, float(np.mean(span_ticks[sel])) ** 2])
            ys.append(float(np.mean(sq_rad2[sel])))
    a = np.asarray(rows)
    w = 1.0 / np.asarray(ys)
    coef, _ = scipy.optimize.nnls(a * w[:, None], np.asarray(ys) * w)
    return math.sqrt(max(coef[0], 1e-8)), math.sqrt(coef[1])


RIDGE = 1e-3
"""Ridge penalty of the linear warm start, per row (features are normalised): the thermal
features are strongly collinear, and an unpenalised fit can cancel huge coefficients, which
float32 inference would not reproduce."""


def _ridge(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ridge least squares, last column (intercept) unpenalised."""
    n, p = design.shape
    penalty = math.sqrt(RIDGE * n) * np.eye(p)[:-1]
    a = np.vstack([design, penalty])
    coef, *_ = np.linalg.lstsq(a, np.concatenate([y, np.zeros(p - 1)]), rcond=None)
    return coef


def linear_warm_start(
    batch: Batch, x_norm: np.ndarray, horizons: Sequence[int], stride: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Output scale and a linear model of the normalised target on the normalised features.

    1. Scale = size of the increment ``phase(t + h) - anchor`` vs ``age + h``.
    2. Twice: least squares of ``target / scale`` on the features (every ``stride``-th tick),
       then scale := RMS error of that linear model vs ``age + h``, i.e. the scale becomes the
       error a linear predictor reaches at that age (mrad right after a scan, ~0.1 rad an hour
       later), and the loss compares the LSTM with what is achievable in every regime.
    Returns ``(floor_rad, rate_rad_per_tick, skip_w (n_h, F), head_b (n_h,))``: the linear
    model initialises the LSTM's skip connection, so training starts from the linear solution.
    """
    n_h = len(horizons)
    xs = x_norm[::stride].reshape(-1, x_norm.shape[-1]).astype(np.float64)
    design = np.hstack([xs, np.ones((xs.shape[0], 1))])
    age = batch.age[::stride].reshape(-1)
    floor, rate = np.empty(n_h), np.empty(n_h)
    skip_w = np.zeros((n_h, xs.shape[1]))
    head_b = np.zeros(n_h)
    for k, h in enumerate(horizons):
        ok = batch.valid[::stride, :, k].reshape(-1) > 0
        tgt = batch.target[::stride, :, k].reshape(-1).astype(np.float64)[ok]
        span = age[ok] + h
        floor[k], rate[k] = fit_scale_curve(span, tgt**2)
        for _ in range(2):
            scale = np.sqrt(floor[k] ** 2 + (rate[k] * span) ** 2)
            coef = _ridge(design[ok], tgt / scale)
            resid = design[ok] @ coef * scale - tgt
            floor[k], rate[k] = fit_scale_curve(span, resid**2)
        scale = np.sqrt(floor[k] ** 2 + (rate[k] * span) ** 2)
        coef = _ridge(design[ok], tgt / scale)
        skip_w[k], head_b[k] = coef[:-1], coef[-1]
    return floor, rate, skip_w, head_b


def train(config: TrainConfig, log: Any = print) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Train, validate and build the exported model (not written). Returns (model, report)."""
    t_start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    horizons = HORIZONS_TICKS
    names = feature_names(TELEMETRY_NAMES, EMA_TAUS_S, EMA_CHANNELS, PHASE_EMA_TAUS_S)

    val_seeds = [VALIDATION_SEED_BASE + k for k in range(config.validation_traces)]
    val_rng = np.random.default_rng(VALIDATION_SEED_BASE)
    val = make_batch(*draw_traces(val_seeds, config.validation_hours, val_rng), horizons)

    def epoch_batch(epoch: int) -> Batch:
        base = TRAIN_SEED_BASE + 100_000 * config.seed + epoch * config.batch
        seeds = [base + b for b in range(config.batch)]
        return make_batch(*draw_traces(seeds, config.hours, rng), horizons)

    first = epoch_batch(0)
    flat = first.x.reshape(-1, first.x.shape[-1]).astype(np.float64)
    mean32 = flat.mean(axis=0).astype(np.float32)
    std = flat.std(axis=0)
    std32 = np.where(std > 1e-12, std, 1.0).astype(np.float32)
    first_x = (first.x - mean32) / std32
    floor, rate, skip_w, head_b = linear_warm_start(first, first_x, horizons)
    del first_x
    log(f"output scale: floor {np.round(floor, 4)} rad, rate {np.round(rate, 6)} rad/tick")

    def to_rad(y: np.ndarray, b: Batch) -> np.ndarray:
        return b.anchor[..., None] + output_scale_rad(b.age, horizons, floor, rate) * y

    def normalise(b: Batch) -> tuple[np.ndarray, np.ndarray]:
        x = (b.x - mean32) / std32
        scale = output_scale_rad(b.age, horizons, floor, rate)
        tgt = (b.target / scale * b.valid).astype(np.float32)
        return x, tgt

    params = init_params(
        jax.random.PRNGKey(config.seed), len(names), config.hidden, config.layers, len(horizons)
    )
    params["skip_w"] = jnp.asarray(skip_w, dtype=jnp.float32)
    params["head_b"] = jnp.asarray(head_b, dtype=jnp.float32)
    n_windows = first.x.shape[0] // WINDOW_TICKS
    total_steps = config.epochs * n_windows
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, min(200, total_steps // 10), total_steps, 0.05
    )
    # AdamW (a little weight decay keeps the integrating cells from running away), and an
    # update whose gradients are not finite is skipped rather than applied
    opt = optax.apply_if_finite(
        optax.chain(
            optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=WEIGHT_DECAY)
        ),
        max_consecutive_errors=20,
    )
    opt_state = opt.init(params)
    avg = params

    @jax.jit
    def update(p: Params, state: Any, avg: Params, x: Any, tgt: Any, valid: Any, h: Any, c: Any):
        (loss, (h, c)), grads = jax.value_and_grad(_loss, has_aux=True)(p, x, tgt, valid, h, c)
        updates, state = opt.update(grads, state, p)
        p = optax.apply_updates(p, updates)
        avg = jax.tree.map(lambda a, q: POLYAK_DECAY * a + (1.0 - POLYAK_DECAY) * q, avg, p)
        return p, state, avg, loss, h, c

    val_x, val_tgt = normalise(val)

    def val_loss(p: Params) -> float:
        y = predict_batch(p, val, mean32, std32)
        err = np.asarray(optax.losses.huber_loss(y, val_tgt, delta=HUBER_DELTA))
        return float(np.sum(err * val.valid) / np.sum(val.valid))

    best: tuple[float, Params, int] | None = None
    for epoch in range(config.epochs):
        batch = first if epoch == 0 else epoch_batch(epoch)
        x, tgt = normalise(batch)
        h = jnp.zeros((config.layers, config.batch, config.hidden))
        c = jnp.zeros_like(h)
        losses = []
        for w in range(n_windows):
            s = slice(w * WINDOW_TICKS, (w + 1) * WINDOW_TICKS)
            params, opt_state, avg, loss, h, c = update(
                params, opt_state, avg, x[s], tgt[s], batch.valid[s], h, c
            )
            losses.append(float(loss))
        last = epoch == config.epochs - 1
        if (epoch + 1) % EVAL_EVERY_EPOCHS == 0 or last:
            vl = val_loss(avg)
            if best is None or vl < best[0]:
                best = (vl, avg, epoch)
            table, _ = residual_table(
                to_rad(predict_batch(avg, val, mean32, std32), val), val, horizons
            )
            log(
                f"epoch {epoch:3d}  train loss {np.mean(losses):.4f}  val loss {vl:.4f}  "
                f"val rmse age 0 {np.round(table[0], 4)}  age 30-100 {np.round(table[4], 3)}"
                f"  age >= 1000 {np.round(table[-2], 3)}  ({time.perf_counter() - t_start:.0f} s)"
            )
    assert best is not None
    best_loss, params, best_epoch = best
    log(f"exporting the averaged parameters of epoch {best_epoch} (val loss {best_loss:.4f})")

    y_val = predict_batch(params, val, mean32, std32)
    table, rmse = residual_table(to_rad(y_val, val), val, horizons)
    persistence = np.repeat(val.anchor[..., None], len(horizons), axis=-1)
    table_p, rmse_persist = residual_table(persistence, val, horizons)

    weights = to_weights(params)
    per_h = lambda v: dict(zip(map(str, horizons), np.round(v, 5).tolist(), strict=True))  # noqa: E731
    meta = LstmMetadata(
        version=MODEL_VERSION,
        tick_s=DriftParams().tick_s,
        horizons_ticks=horizons,
        telemetry_names=TELEMETRY_NAMES,
        ema_channels=EMA_CHANNELS,
        ema_taus_s=EMA_TAUS_S,
        phase_ema_taus_s=PHASE_EMA_TAUS_S,
        feature_names=tuple(names),
        input_mean=mean32,
        input_std=std32,
        scale_floor_rad=floor,
        scale_rate_rad_per_tick=rate,
        hidden_size=config.hidden,
        num_layers=config.layers,
        residual_age_edges_ticks=np.asarray(AGE_EDGES_TICKS, dtype=np.float64),
        residual_rms_rad=table,
        training={
            "generator": "models.drift.generate_drift, DriftParams() defaults, random time of day",
            "train_seeds": f"{TRAIN_SEED_BASE + 100_000 * config.seed} + epoch * batch + b",
            "validation_seeds": [int(s) for s in val_seeds],
            "seed": config.seed,
            "epochs": config.epochs,
            "exported_epoch": best_epoch,
            "batch": config.batch,
            "hours_per_trace": config.hours,
            "window_ticks": WINDOW_TICKS,
            "learning_rate": config.learning_rate,
            "polyak_decay": POLYAK_DECAY,
            "mask": scan_transmit_mask.__doc__.split("\n\n", 1)[1].strip().replace("\n", " "),
            "validation_loss": best_loss,
            "validation_rmse_rad": per_h(rmse),
            "validation_rmse_persistence_rad": per_h(rmse_persist),
            "jax": jax.__version__,
            "optax": optax.__version__,
            "onnx": onnx.__version__,
        },
    )
    meta.check("train_lstm")
    model = build_onnx(weights, meta)
    x_check = val_x[:PARITY_STEPS, 0]
    parity = check_parity(model, params, weights, x_check)
    report = {
        "validation_rmse_rad": rmse.tolist(),
        "validation_rmse_persistence_rad": rmse_persist.tolist(),
        "validation_rmse_by_age_rad": table.tolist(),
        "validation_rmse_persistence_by_age_rad": table_p.tolist(),
        "parity": parity,
        "train_time_s": time.perf_counter() - t_start,
    }
    log(f"validation rmse (rad)     {per_h(rmse)}")
    log(f"persistence rmse (rad)    {per_h(rmse_persist)}")
    for j, lo in enumerate(AGE_EDGES_TICKS[:-1]):
        log(
            f"  age >= {lo:>5g}: lstm {np.round(table[j], 4)}  "
            f"persistence {np.round(table_p[j], 4)}"
        )
    log(f"parity {parity}; {report['train_time_s']:.0f} s")
    return model, report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.train_lstm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = TrainConfig()
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch", type=int, default=d.batch, help="traces per update")
    parser.add_argument("--hours", type=float, default=d.hours, help="length of each trace")
    parser.add_argument("--hidden", type=int, default=d.hidden)
    parser.add_argument("--layers", type=int, default=d.layers)
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate)
    parser.add_argument("--out", type=Path, default=d.out)
    args = parser.parse_args(argv)
    config = TrainConfig(
        seed=args.seed,
        epochs=args.epochs,
        batch=args.batch,
        hours=args.hours,
        hidden=args.hidden,
        layers=args.layers,
        learning_rate=args.learning_rate,
        out=args.out,
    )
    model, _ = train(config)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(config.out))
    print(f"wrote {config.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
