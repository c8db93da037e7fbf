"""Small LSTM phase-drift predictor run with onnxruntime, one call per control tick.

The model (trained and exported by :mod:`models.train_lstm`, shipped as
``models/phase_drift_lstm.onnx``) predicts the interferometer phase ``h`` ticks ahead for each
horizon in ``horizons_ticks`` from the phase measurements seen so far (missing while the link
transmits) and the telemetry (thermometers, ...). It needs only numpy and onnxruntime; the
training extra (JAX) is never imported here.

Features (built per tick by :class:`LstmFeatures`, identical in training and at run time)
-------------------------------------------------------------------------------------------
The *anchor* is the last measured phase (rad); everything phase-related is relative to it, so
the network never sees the absolute (unwrapped, unbounded) phase:

* ``measured``: 1 if the phase was measured this tick, else 0;
* ``dphi_rad``: this measurement minus the previous anchor (0 when not measured): the phase
  increment across the last gap;
* ``dphi_rate_rad_per_tick``: that increment divided by the gap length in ticks;
* ``log_age``: ``log1p(ticks since the last measurement)`` (0 on a measured tick);
* ``phase_ema{tau}s-anchor`` for each ``tau`` in ``phase_ema_taus_s`` (a few ticks): the
  exponentially weighted mean of the measured phases, minus the anchor. Weights
  ``exp(-(t - t_j) tick_s / tau)`` for the measurement at tick ``t_j``, normalised by their
  sum (so a short scan after a long gap is a plain average of its readings, not dominated by
  its first one). Within a scan it averages out the measurement noise of the anchor (a linear
  combination of a few tau also removes the lag a drift gives an average); after a long gap
  it restarts at the new measurements;
* every telemetry channel's value (``telemetry_names``; the vibration reading flags bursts);
* for each channel in ``ema_channels`` (the lab-air temperature) and each time constant
  ``tau`` of the filter bank ``ema_taus_s``: ``name@ema{tau}s-anchor`` = the exponential
  moving average EMA_tau(t) minus its value at the anchor tick (how much a first-order thermal
  lag of time constant tau has moved since the phase was last seen; a combination of a few
  log-spaced tau approximates the unknown enclosure lag), and ``name-ema{tau}s`` = value minus
  EMA_tau(t) (the lag's rate of change: dT_lag/dt = (T - T_lag)/tau, i.e. where it is going).
  Why: the interferometer phase follows the enclosure temperature, a lagged copy of the air
  temperature (physics.md section 4, :mod:`models.drift`), so the phase change since the
  anchor is close to a linear function of these features; the LSTM adds what is not linear
  (bursts, when to trust a fresh measurement, noise averaging over a scan).

EMA recursion (exact discretisation of a first-order lag sampled every ``tick_s``):
``ema <- a ema + (1 - a) value`` with ``a = exp(-tick_s/tau)``, started at the first value.
NaN telemetry holds the previous value. Each feature is normalised
``(f - input_mean) / input_std`` with the training-set statistics stored in the model.

Architecture
------------
``num_layers`` stacked LSTM layers (ONNX ``LSTM`` op, hidden size ``hidden_size``, gate order
i, o, f, c as in the ONNX spec) followed by a linear head on the last layer's output plus a
linear skip from the normalised input features:

    i = sigmoid(W_i x + R_i h + Wb_i + Rb_i)     o = sigmoid(W_o x + R_o h + Wb_o + Rb_o)
    f = sigmoid(W_f x + R_f h + Wb_f + Rb_f)     g = tanh(W_c x + R_c h + Wb_c + Rb_c)
    c' = f * c + i * g                          h' = o * tanh(c')
    y = head_w h'_last + skip_w x + head_b

The graph takes ``x`` (1, n_features), ``h_in`` and ``c_in`` (num_layers, 1, hidden_size) and
returns ``y`` (1, n_horizons), ``h_out`` and ``c_out``: the recurrent state is carried by the
caller between calls (one call per tick). Output ``k`` is the normalised increment of the phase
``horizons_ticks[k]`` ticks ahead relative to the anchor:

    phase(t + h_k) = anchor + s_k(age) * y[k]
    s_k(age) = sqrt(scale_floor_rad[k]^2 + (scale_rate_rad_per_tick[k] * (age + h_k))^2)

``s_k`` (:func:`output_scale_rad`) is the typical size of the increment after ``age + h_k``
ticks without a measurement (fitted on the training data: measurement noise floor plus a
drift growing linearly with time), so the network works on increments of order one whether
the phase was measured a tick ago or an hour ago, and the training loss weighs every regime
alike instead of letting the long gaps (rad) drown the dense ones (tens of mrad).

Before the first measurement there is no anchor and the predictions are NaN.

Weights: :func:`load_weights` reads them back from the ONNX initializers (needs the ``onnx``
package, a dev/train dependency: onnxruntime does not expose initializers), and
:func:`reference_step` runs the same equations in float64 numpy: the parity tests compare the
shipped file against it. :func:`build_onnx` writes the graph (used by the training script).

Uncertainty: :meth:`LstmPredictor.predicted_std_rad` returns the RMS error measured on the
validation traces for the current age (metadata ``residual_rms_rad`` per age bin).

Run time (measured on the 2-vCPU development machine, other jobs running): the session call
binds preallocated input/output buffers once (``io_binding``, two bindings that swap the state
buffers every tick): 9 us median against 33 us for ``session.run`` with feeds. The features
are built in plain Python floats (:class:`LstmFeaturesOne`; tiny numpy calls cost about 1 us
each). A whole :meth:`LstmPredictor.step` takes about 18 us median, 55-80 us p99.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from models.base import DriftPredictor

DEFAULT_MODEL_PATH = Path(__file__).with_name("phase_drift_lstm.onnx")
"""The shipped trained model."""

METADATA_FORMAT = "labctl.phase_drift_lstm/1"
"""Value of the ``format`` metadata key this module understands."""

PHASE_FEATURES: tuple[str, ...] = ("measured", "dphi_rad", "dphi_rate_rad_per_tick", "log_age")
"""Phase-derived features, first in the feature vector (see the module docstring)."""

INPUT_NAMES: tuple[str, ...] = ("x", "h_in", "c_in")
"""Graph inputs: normalised features (1, F), hidden and cell state (layers, 1, hidden)."""
OUTPUT_NAMES: tuple[str, ...] = ("y", "h_out", "c_out")
"""Graph outputs: normalised predictions (1, n_horizons), next hidden and cell state."""


def feature_names(
    telemetry_names: tuple[str, ...],
    ema_taus_s: tuple[float, ...],
    ema_channels: tuple[str, ...],
    phase_ema_taus_s: tuple[float, ...],
) -> list[str]:
    """Names of the model inputs, in order (see the module docstring)."""
    names = list(PHASE_FEATURES)
    names += [f"phase_ema{tau:g}s-anchor" for tau in phase_ema_taus_s]
    names += list(telemetry_names)
    names += [f"{n}@ema{tau:g}s-anchor" for n in ema_channels for tau in ema_taus_s]
    names += [f"{n}-ema{tau:g}s" for n in ema_channels for tau in ema_taus_s]
    return names


class LstmFeatures:
    """Streaming feature builder for a batch of independent sequences (batch 1 at run time).

    ``step(phase_rad, telemetry)`` takes this tick's phases (batch,) (NaN = not measured) and
    telemetry (batch, n_telemetry) and returns the raw (unnormalised) features
    (batch, n_features) float64, in the order of :func:`feature_names`; ``ema_channels`` are
    the indices of the telemetry columns that get the EMA bank. ``anchor_rad`` holds the last
    measured phase per sequence (NaN before the first measurement), ``age_ticks`` the ticks
    since it.
    """

    def __init__(
        self,
        n_telemetry: int,
        ema_taus_s: tuple[float, ...],
        tick_s: float,
        *,
        ema_channels: tuple[int, ...],
        phase_ema_taus_s: tuple[float, ...],
        batch: int = 1,
    ) -> None:
        if tick_s <= 0 or not all(tau > 0 for tau in (*ema_taus_s, *phase_ema_taus_s)):
            raise ValueError(
                f"LstmFeatures: tick_s ({tick_s}), ema_taus_s ({ema_taus_s}) and "
                f"phase_ema_taus_s ({phase_ema_taus_s}) must be > 0"
            )
        if not all(0 <= i < n_telemetry for i in ema_channels):
            raise ValueError(
                f"LstmFeatures: ema_channels {ema_channels} out of range for {n_telemetry} "
                "telemetry columns"
            )
        self.n_telemetry = n_telemetry
        self.batch = batch
        self.ema_channels = np.asarray(ema_channels, dtype=np.intp)
        self.ema_taus_s = tuple(float(t) for t in ema_taus_s)
        # (1, 1, K): broadcast over (batch, channel, tau)
        self._a = np.exp(-tick_s / np.asarray(self.ema_taus_s, dtype=np.float64))[None, None, :]
        self._n_ema = len(ema_channels) * len(self.ema_taus_s)
        self.phase_ema_taus_s = tuple(float(t) for t in phase_ema_taus_s)
        self._pa = np.exp(-tick_s / np.asarray(self.phase_ema_taus_s, dtype=np.float64))[None, :]
        self._n_pema = len(self.phase_ema_taus_s)
        self._j_tel = len(PHASE_FEATURES) + self._n_pema
        self.n_features = self._j_tel + n_telemetry + 2 * self._n_ema
        self.reset()

    def reset(self) -> None:
        """Forget everything (no anchor, EMAs restart at the next telemetry)."""
        b, n, k = self.batch, self.ema_channels.size, len(self.ema_taus_s)
        self.anchor_rad = np.full(b, np.nan)
        self.age_ticks = np.zeros(b)
        self._tel = np.full((b, self.n_telemetry), np.nan)
        self._ema = np.full((b, n, k), np.nan)
        self._ema_anchor = np.full((b, n, k), np.nan)
        self._pema = np.full((b, self._n_pema), np.nan)
        self._pden = np.zeros((b, self._n_pema))
        self._out = np.zeros((b, self.n_features))

    def step(self, phase_rad: np.ndarray, telemetry: np.ndarray) -> np.ndarray:
        """Advance one tick; returns the feature matrix (batch, n_features) (a reused buffer)."""
        phase = np.asarray(phase_rad, dtype=np.float64).reshape(self.batch)
        tel = np.asarray(telemetry, dtype=np.float64).reshape(self.batch, self.n_telemetry)
        if np.isnan(tel).any():  # hold the previous reading of a missing channel
            tel = np.where(np.isnan(tel), self._tel, tel)
        self._tel = tel
        src = tel[:, self.ema_channels, None]
        ema = self._a * self._ema + (1.0 - self._a) * src
        self._ema = np.where(np.isnan(self._ema), src, ema)  # start at the first reading

        measured = np.isfinite(phase)
        gap = self.age_ticks + 1.0
        dphi = np.where(measured & np.isfinite(self.anchor_rad), phase - self.anchor_rad, 0.0)
        self.anchor_rad = np.where(measured, phase, self.anchor_rad)
        self.age_ticks = np.where(measured, 0.0, gap)
        reanchor = measured[:, None, None] | np.isnan(self._ema_anchor)
        self._ema_anchor = np.where(reanchor, self._ema, self._ema_anchor)
        # exponentially weighted mean of the measured phases (irregular samples, normalised
        # weights): den = sum of weights, the old ones decayed by a^gap
        den = self._pa ** gap[:, None] * self._pden + 1.0
        pema = np.where(np.isnan(self._pema), phase[:, None], self._pema)
        pema = pema + (phase[:, None] - pema) / den
        self._pema = np.where(measured[:, None], pema, self._pema)
        self._pden = np.where(measured[:, None], den, self._pden)

        out = self._out
        m, n = self._n_ema, self.n_telemetry
        out[:, 0] = measured
        out[:, 1] = dphi
        out[:, 2] = dphi / gap
        out[:, 3] = np.log1p(self.age_ticks)
        j = len(PHASE_FEATURES)
        out[:, j : self._j_tel] = np.nan_to_num(self._pema - self.anchor_rad[:, None])
        j = self._j_tel
        out[:, j : j + n] = tel
        j += n
        out[:, j : j + m] = (self._ema - self._ema_anchor).reshape(self.batch, m)
        j += m
        out[:, j : j + m] = (src - self._ema).reshape(self.batch, m)
        return out


class LstmFeaturesOne:
    """Batch-1 form of :class:`LstmFeatures` in plain Python floats, for the control tick.

    The same arithmetic in the same order (IEEE doubles either way), so the features agree
    with the batched builder used in training (tested); a few dozen float operations cost
    less here than the same number of tiny numpy calls.
    """

    def __init__(
        self,
        n_telemetry: int,
        ema_taus_s: tuple[float, ...],
        tick_s: float,
        *,
        ema_channels: tuple[int, ...],
        phase_ema_taus_s: tuple[float, ...],
    ) -> None:
        ref = LstmFeatures(  # validates the arguments
            n_telemetry,
            ema_taus_s,
            tick_s,
            ema_channels=ema_channels,
            phase_ema_taus_s=phase_ema_taus_s,
        )
        self.n_telemetry = n_telemetry
        self.n_features = ref.n_features
        self._channels = [int(i) for i in ema_channels]
        self._a = [float(v) for v in ref._a.ravel()]
        self._b = [1.0 - a for a in self._a]
        self._pa = [float(v) for v in ref._pa.ravel()]
        self._n_tau = len(self._a)
        self.reset()

    def reset(self) -> None:
        """Forget everything (no anchor, EMAs restart at the next telemetry)."""
        n_ema = len(self._channels) * self._n_tau
        self.anchor_rad = math.nan
        self.age_ticks = 0.0
        self._tel = [math.nan] * self.n_telemetry
        self._ema = [math.nan] * n_ema
        self._ema_anchor = [math.nan] * n_ema
        self._pema = [math.nan] * len(self._pa)
        self._pden = [0.0] * len(self._pa)

    def step(self, phase_rad: float, telemetry: list[float]) -> list[float]:
        """Advance one tick; ``phase_rad`` NaN = not measured. Returns the raw features."""
        tel = self._tel
        for i, v in enumerate(telemetry):
            if v == v:  # NaN holds the previous reading
                tel[i] = v
        ema, ema_anchor = self._ema, self._ema_anchor
        k = 0
        for c in self._channels:
            src = tel[c]
            for a, b in zip(self._a, self._b, strict=True):
                e = ema[k]
                ema[k] = src if e != e else a * e + b * src
                k += 1
        anchor = self.anchor_rad
        gap = self.age_ticks + 1.0
        pema = self._pema
        if phase_rad == phase_rad:  # measured
            dphi = phase_rad - anchor if anchor == anchor else 0.0
            self.anchor_rad = anchor = phase_rad
            self.age_ticks = 0.0
            ema_anchor[:] = ema
            pden = self._pden
            for j, pa in enumerate(self._pa):
                pden[j] = pa**gap * pden[j] + 1.0
                m = pema[j]
                if m != m:
                    m = phase_rad
                pema[j] = m + (phase_rad - m) / pden[j]
            feats = [1.0, dphi, dphi / gap, 0.0]
        else:
            for j, e in enumerate(ema_anchor):
                if e != e:
                    ema_anchor[j] = ema[j]
            self.age_ticks = gap
            feats = [0.0, 0.0, 0.0, math.log1p(gap)]
        if anchor == anchor:
            feats += [m - anchor for m in pema]
        else:
            feats += [0.0] * len(pema)
        feats += tel
        feats += [e - a for e, a in zip(ema, ema_anchor, strict=True)]
        k = 0
        for c in self._channels:
            src = tel[c]
            feats += [src - e for e in ema[k : k + self._n_tau]]
            k += self._n_tau
        return feats


@dataclass(frozen=True)
class LstmMetadata:
    """What the ONNX file says about itself (``metadata_props``, values JSON-encoded)."""

    version: str
    tick_s: float
    horizons_ticks: tuple[int, ...]
    telemetry_names: tuple[str, ...]
    ema_channels: tuple[str, ...]
    ema_taus_s: tuple[float, ...]
    phase_ema_taus_s: tuple[float, ...]
    feature_names: tuple[str, ...]
    input_mean: np.ndarray  # float32 (n_features,)
    input_std: np.ndarray  # float32 (n_features,)
    scale_floor_rad: np.ndarray  # float64 (n_horizons,)
    scale_rate_rad_per_tick: np.ndarray  # float64 (n_horizons,)
    hidden_size: int
    num_layers: int
    residual_age_edges_ticks: np.ndarray  # float64 (n_bins + 1,)
    residual_rms_rad: np.ndarray  # float64 (n_bins, n_horizons): validation rms error by age
    training: dict[str, Any]

    @classmethod
    def from_map(cls, props: Mapping[str, str], source: str) -> LstmMetadata:
        """Parse and check the metadata map; errors name the file and the key."""

        def get(key: str) -> Any:
            if key not in props:
                raise ValueError(f"{source}: metadata key {key!r} missing")
            try:
                return json.loads(props[key])
            except json.JSONDecodeError as exc:
                raise ValueError(f"{source}: metadata key {key!r} is not JSON: {exc}") from None

        fmt = get("format")
        if fmt != METADATA_FORMAT:
            raise ValueError(f"{source}: metadata format {fmt!r}, expected {METADATA_FORMAT!r}")
        meta = cls(
            version=str(get("version")),
            tick_s=float(get("tick_s")),
            horizons_ticks=tuple(int(h) for h in get("horizons_ticks")),
            telemetry_names=tuple(str(n) for n in get("telemetry_names")),
            ema_channels=tuple(str(n) for n in get("ema_channels")),
            ema_taus_s=tuple(float(t) for t in get("ema_taus_s")),
            phase_ema_taus_s=tuple(float(t) for t in get("phase_ema_taus_s")),
            feature_names=tuple(str(n) for n in get("feature_names")),
            input_mean=np.asarray(get("input_mean"), dtype=np.float32),
            input_std=np.asarray(get("input_std"), dtype=np.float32),
            scale_floor_rad=np.asarray(get("scale_floor_rad"), dtype=np.float64),
            scale_rate_rad_per_tick=np.asarray(get("scale_rate_rad_per_tick"), dtype=np.float64),
            hidden_size=int(get("hidden_size")),
            num_layers=int(get("num_layers")),
            residual_age_edges_ticks=np.asarray(get("residual_age_edges_ticks"), dtype=np.float64),
            residual_rms_rad=np.asarray(get("residual_rms_rad"), dtype=np.float64),
            training=dict(get("training")),
        )
        meta.check(source)
        return meta

    def check(self, source: str) -> None:
        """Raise ValueError (naming ``source`` and the field) on inconsistent metadata."""
        n_f, n_h = len(self.feature_names), len(self.horizons_ticks)
        expected = feature_names(
            self.telemetry_names, self.ema_taus_s, self.ema_channels, self.phase_ema_taus_s
        )
        problems = []
        unknown = [c for c in self.ema_channels if c not in self.telemetry_names]
        if unknown:
            problems.append(f"ema_channels {unknown} not in telemetry_names")
        if list(self.feature_names) != expected:
            problems.append(f"feature_names {list(self.feature_names)} != expected {expected}")
        for name, arr, n in (
            ("input_mean", self.input_mean, n_f),
            ("input_std", self.input_std, n_f),
            ("scale_floor_rad", self.scale_floor_rad, n_h),
            ("scale_rate_rad_per_tick", self.scale_rate_rad_per_tick, n_h),
        ):
            if arr.shape != (n,) or not np.all(np.isfinite(arr)):
                problems.append(f"{name} has shape {arr.shape} (expected ({n},), finite)")
        if np.any(self.input_std <= 0) or np.any(self.scale_floor_rad <= 0):
            problems.append("input_std and scale_floor_rad must be > 0")
        if np.any(self.scale_rate_rad_per_tick < 0):
            problems.append("scale_rate_rad_per_tick must be >= 0")
        if n_h == 0 or any(h < 1 for h in self.horizons_ticks):
            problems.append(f"horizons_ticks {self.horizons_ticks} must be >= 1")
        n_bins = self.residual_age_edges_ticks.size - 1
        if self.residual_rms_rad.shape != (n_bins, n_h):
            problems.append(
                f"residual_rms_rad shape {self.residual_rms_rad.shape} != ({n_bins}, {n_h})"
            )
        if problems:
            raise ValueError(f"{source}: inconsistent LSTM metadata: " + "; ".join(problems))

    def to_map(self) -> dict[str, str]:
        """The ``metadata_props`` map (inverse of :meth:`from_map`)."""
        values: dict[str, Any] = {
            "format": METADATA_FORMAT,
            "version": self.version,
            "tick_s": self.tick_s,
            "horizons_ticks": list(self.horizons_ticks),
            "telemetry_names": list(self.telemetry_names),
            "ema_channels": list(self.ema_channels),
            "ema_taus_s": list(self.ema_taus_s),
            "phase_ema_taus_s": list(self.phase_ema_taus_s),
            "feature_names": list(self.feature_names),
            "input_mean": self.input_mean.astype(float).tolist(),
            "input_std": self.input_std.astype(float).tolist(),
            "scale_floor_rad": self.scale_floor_rad.tolist(),
            "scale_rate_rad_per_tick": self.scale_rate_rad_per_tick.tolist(),
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "residual_age_edges_ticks": self.residual_age_edges_ticks.tolist(),
            "residual_rms_rad": self.residual_rms_rad.tolist(),
            "training": self.training,
        }
        return {k: json.dumps(v) for k, v in values.items()}


def read_metadata(model_path: str | os.PathLike[str] = DEFAULT_MODEL_PATH) -> LstmMetadata:
    """Metadata of an exported model, read through onnxruntime (no ``onnx`` package needed)."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    return LstmMetadata.from_map(props, str(model_path))


def output_scale_rad(
    age_ticks: np.ndarray | float,
    horizons_ticks: tuple[int, ...],
    floor_rad: np.ndarray,
    rate_rad_per_tick: np.ndarray,
) -> np.ndarray:
    """Scale of the network outputs, rad: ``sqrt(floor^2 + (rate * (age + h))^2)``.

    ``age_ticks`` any shape; returns shape ``(*age.shape, n_horizons)``.
    """
    span = np.asarray(age_ticks, dtype=np.float64)[..., None] + np.asarray(horizons_ticks)
    return np.sqrt(floor_rad**2 + (rate_rad_per_tick * span) ** 2)


def make_session(model_path: str | os.PathLike[str]) -> ort.InferenceSession:
    """A one-thread, sequential CPU session (a control tick must not fan out to a thread pool)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------
# Numpy reference of the graph (parity tests, training-time export check)


ONNX_OPSET = 17
"""Opset of the exported graph (LSTM, Gemm, Gather...: onnxruntime >= 1.14 runs it)."""
ONNX_IR_VERSION = 8


def _onnx_modules() -> tuple[Any, Any, Any, Any]:
    """``onnx`` and its helpers, imported on demand (not needed to run a model)."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "building or reading ONNX graphs needs the 'onnx' package "
            "(pip install labctl[dev] or labctl[train])"
        ) from exc
    return onnx, helper, numpy_helper, TensorProto


@dataclass(frozen=True)
class LstmWeights:
    """Parameters in the ONNX layout (gate order i, o, f, c along the 4*hidden axis)."""

    w: tuple[np.ndarray, ...]  # per layer (4H, n_in_layer)
    r: tuple[np.ndarray, ...]  # per layer (4H, H)
    wb: tuple[np.ndarray, ...]  # per layer (4H,)
    rb: tuple[np.ndarray, ...]  # per layer (4H,)
    head_w: np.ndarray  # (n_out, H)
    skip_w: np.ndarray  # (n_out, n_features)
    head_b: np.ndarray  # (n_out,)

    @property
    def hidden_size(self) -> int:
        return int(self.r[0].shape[1])

    @property
    def num_layers(self) -> int:
        return len(self.w)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1/(1+exp(-z)) without overflow warnings


def reference_step(
    weights: LstmWeights, x: np.ndarray, h: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One tick of the model in float64 numpy: the equations of the module docstring.

    ``x`` normalised features (n_features,); ``h``, ``c`` (num_layers, hidden). Returns
    ``(y (n_out,), h', c')``, all float64.
    """
    x = np.asarray(x, dtype=np.float64)
    hs, cs = [], []
    inp = x
    size = weights.hidden_size
    for layer in range(weights.num_layers):
        gates = (
            weights.w[layer].astype(np.float64) @ inp
            + weights.r[layer].astype(np.float64) @ np.asarray(h[layer], dtype=np.float64)
            + weights.wb[layer]
            + weights.rb[layer]
        )
        i = _sigmoid(gates[:size])
        o = _sigmoid(gates[size : 2 * size])
        f = _sigmoid(gates[2 * size : 3 * size])
        g = np.tanh(gates[3 * size :])
        c_new = f * np.asarray(c[layer], dtype=np.float64) + i * g
        h_new = o * np.tanh(c_new)
        hs.append(h_new)
        cs.append(c_new)
        inp = h_new
    y = weights.head_w.astype(np.float64) @ inp + weights.skip_w.astype(np.float64) @ x
    y = y + weights.head_b
    return y, np.stack(hs), np.stack(cs)


def build_onnx(weights: LstmWeights, meta: LstmMetadata) -> Any:
    """The inference graph of one tick (module docstring), metadata attached, checked.

    Needs the ``onnx`` package (train/dev extras). Parameters are stored as initializers named
    ``lstm_w{k}``, ``lstm_r{k}``, ``lstm_b{k}`` (ONNX ``LSTM`` layout, one direction),
    ``head_w``, ``skip_w``, ``head_b``: :func:`load_weights` reads them back.
    """
    onnx, helper, numpy_helper, TensorProto = _onnx_modules()
    hidden, layers = weights.hidden_size, weights.num_layers
    n_f, n_out = weights.skip_w.shape[1], weights.head_w.shape[0]
    f32 = TensorProto.FLOAT
    inits = [
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([1, hidden], dtype=np.int64), "shape_1h"),
        numpy_helper.from_array(weights.head_w.astype(np.float32), "head_w"),
        numpy_helper.from_array(weights.skip_w.astype(np.float32), "skip_w"),
        numpy_helper.from_array(weights.head_b.astype(np.float32), "head_b"),
    ]
    nodes = [helper.make_node("Unsqueeze", ["x", "axis0"], ["x_seq"])]  # (1 step, 1 batch, F)
    below = "x_seq"
    h_outs, c_outs = [], []
    for k in range(layers):
        b = np.concatenate([weights.wb[k], weights.rb[k]]).astype(np.float32)
        inits += [
            numpy_helper.from_array(weights.w[k][None].astype(np.float32), f"lstm_w{k}"),
            numpy_helper.from_array(weights.r[k][None].astype(np.float32), f"lstm_r{k}"),
            numpy_helper.from_array(b[None], f"lstm_b{k}"),
            numpy_helper.from_array(np.array([k], dtype=np.int64), f"layer{k}"),
        ]
        nodes += [
            helper.make_node("Gather", ["h_in", f"layer{k}"], [f"h{k}"], axis=0),
            helper.make_node("Gather", ["c_in", f"layer{k}"], [f"c{k}"], axis=0),
            helper.make_node(
                "LSTM",
                [below, f"lstm_w{k}", f"lstm_r{k}", f"lstm_b{k}", "", f"h{k}", f"c{k}"],
                [f"y{k}", f"h_out{k}", f"c_out{k}"],
                hidden_size=hidden,
                name=f"lstm{k}",
            ),
            # Y is (seq, num_directions, batch, H): drop num_directions for the next layer
            helper.make_node("Squeeze", [f"y{k}", "axis1"], [f"seq{k}"]),
        ]
        below = f"seq{k}"
        h_outs.append(f"h_out{k}")
        c_outs.append(f"c_out{k}")
    for name, parts in (("h_out", h_outs), ("c_out", c_outs)):
        if layers == 1:
            nodes.append(helper.make_node("Identity", parts, [name]))
        else:
            nodes.append(helper.make_node("Concat", parts, [name], axis=0))
    nodes += [
        helper.make_node("Reshape", [h_outs[-1], "shape_1h"], ["h_last"]),
        helper.make_node("Gemm", ["h_last", "head_w"], ["y_head"], transB=1),
        helper.make_node("Gemm", ["x", "skip_w", "head_b"], ["y_skip"], transB=1),
        helper.make_node("Add", ["y_head", "y_skip"], ["y"]),
    ]
    state = [layers, 1, hidden]
    graph = helper.make_graph(
        nodes,
        "phase_drift_lstm",
        [
            helper.make_tensor_value_info("x", f32, [1, n_f]),
            helper.make_tensor_value_info("h_in", f32, state),
            helper.make_tensor_value_info("c_in", f32, state),
        ],
        [
            helper.make_tensor_value_info("y", f32, [1, n_out]),
            helper.make_tensor_value_info("h_out", f32, state),
            helper.make_tensor_value_info("c_out", f32, state),
        ],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="labctl.models.train_lstm",
        producer_version=meta.version,
        doc_string="Phase-drift LSTM, one control tick per call; see models/lstm.py.",
    )
    model.ir_version = ONNX_IR_VERSION
    helper.set_model_props(model, meta.to_map())
    onnx.checker.check_model(model, full_check=True)
    return model


def load_weights(model_path: str | os.PathLike[str] = DEFAULT_MODEL_PATH) -> LstmWeights:
    """Read the parameters back from the ONNX initializers (needs the ``onnx`` package).

    ``onnx`` is a dev/train dependency only: onnxruntime does not expose initializers, and the
    parity test must read the weights from the very file it runs.
    """
    onnx, _, numpy_helper, _ = _onnx_modules()
    model = onnx.load(str(model_path))
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    n_layers = sum(1 for name in arrays if name.startswith("lstm_w"))
    try:
        b = [arrays[f"lstm_b{k}"][0] for k in range(n_layers)]
        return LstmWeights(
            w=tuple(arrays[f"lstm_w{k}"][0] for k in range(n_layers)),
            r=tuple(arrays[f"lstm_r{k}"][0] for k in range(n_layers)),
            wb=tuple(v[: v.size // 2] for v in b),
            rb=tuple(v[v.size // 2 :] for v in b),
            head_w=arrays["head_w"],
            skip_w=arrays["skip_w"],
            head_b=arrays["head_b"],
        )
    except KeyError as exc:
        raise ValueError(f"{model_path}: initializer {exc} missing") from None


# ---------------------------------------------------------------------------------------------
# The predictor


class LstmPredictor(DriftPredictor):
    """Phase-drift predictor running the exported LSTM with onnxruntime, one call per tick.

    ``LstmPredictor(model_path=None, *, horizons_ticks=None)`` loads the shipped
    ``phase_drift_lstm.onnx`` (or ``model_path``). The horizons, telemetry channels and
    normalisation come from the model's metadata (:attr:`metadata`); ``horizons_ticks`` may
    select a subset of the model's horizons (anything else is refused: the horizons are
    trained in). ``step`` expects telemetry in the order of ``metadata.telemetry_names``.
    The session is created with one intra-op and one inter-op thread, sequential execution.
    """

    name = "lstm"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        horizons_ticks: Sequence[int] | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else DEFAULT_MODEL_PATH
        if not self.model_path.is_file():
            raise FileNotFoundError(f"LSTM model file not found: {self.model_path}")
        self.session = make_session(self.model_path)
        meta = LstmMetadata.from_map(
            self.session.get_modelmeta().custom_metadata_map, str(self.model_path)
        )
        self.metadata = meta
        self._check_graph()
        if horizons_ticks is None:
            self.horizons_ticks = meta.horizons_ticks
        else:
            self.horizons_ticks = tuple(int(h) for h in horizons_ticks)
            missing = [h for h in self.horizons_ticks if h not in meta.horizons_ticks]
            if missing or not self.horizons_ticks:
                raise ValueError(
                    f"LstmPredictor: horizons_ticks {tuple(horizons_ticks)}: the model "
                    f"{self.model_path.name} predicts {meta.horizons_ticks} only"
                )
        cols = np.array([meta.horizons_ticks.index(h) for h in self.horizons_ticks])
        n_f, n_h = len(meta.feature_names), len(meta.horizons_ticks)
        state_shape = (meta.num_layers, 1, meta.hidden_size)
        self._features = LstmFeaturesOne(
            len(meta.telemetry_names),
            meta.ema_taus_s,
            meta.tick_s,
            ema_channels=tuple(meta.telemetry_names.index(c) for c in meta.ema_channels),
            phase_ema_taus_s=meta.phase_ema_taus_s,
        )
        # normalisation as (mean, 1/std) pairs of Python floats
        self._norm = list(
            zip(
                meta.input_mean.astype(np.float64).tolist(),
                (1.0 / meta.input_std.astype(np.float64)).tolist(),
                strict=True,
            )
        )
        # Preallocated buffers shared with onnxruntime (OrtValues wrap the numpy memory).
        self._x = np.zeros((1, n_f), dtype=np.float32)
        self._y = np.zeros((1, n_h), dtype=np.float32)
        self._h = [np.zeros(state_shape, dtype=np.float32) for _ in range(2)]
        self._c = [np.zeros(state_shape, dtype=np.float32) for _ in range(2)]
        x_v = ort.OrtValue.ortvalue_from_numpy(self._x)
        y_v = ort.OrtValue.ortvalue_from_numpy(self._y)
        h_v = [ort.OrtValue.ortvalue_from_numpy(a) for a in self._h]
        c_v = [ort.OrtValue.ortvalue_from_numpy(a) for a in self._c]
        self._bindings = []
        for k in range(2):  # binding k reads state buffer k and writes buffer 1 - k
            io = self.session.io_binding()
            io.bind_ortvalue_input("x", x_v)
            io.bind_ortvalue_input("h_in", h_v[k])
            io.bind_ortvalue_input("c_in", c_v[k])
            io.bind_ortvalue_output("y", y_v)
            io.bind_ortvalue_output("h_out", h_v[1 - k])
            io.bind_ortvalue_output("c_out", c_v[1 - k])
            self._bindings.append(io)
        self._keepalive = (x_v, y_v, h_v, c_v)
        self._n_tel = len(meta.telemetry_names)
        # per returned horizon: (model output column, h, floor^2, rate^2) as Python numbers
        self._out_spec = [
            (
                int(k),
                float(meta.horizons_ticks[k]),
                float(meta.scale_floor_rad[k]) ** 2,
                float(meta.scale_rate_rad_per_tick[k]) ** 2,
            )
            for k in cols
        ]
        self._age_edges = meta.residual_age_edges_ticks.tolist()
        self._n_age_bins = len(self._age_edges) - 1
        self._std_table = meta.residual_rms_rad[:, cols].copy()
        self._nan_std = np.full(cols.size, np.nan)
        self._std_rad = self._nan_std
        self.reset()

    def _check_graph(self) -> None:
        meta = self.metadata
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        state = [meta.num_layers, 1, meta.hidden_size]
        expected_in = {"x": [1, len(meta.feature_names)], "h_in": state, "c_in": state}
        expected_out = {"y": [1, len(meta.horizons_ticks)], "h_out": state, "c_out": state}
        if inputs != expected_in or outputs != expected_out:
            raise ValueError(
                f"{self.model_path}: graph inputs {inputs} / outputs {outputs} do not match the "
                f"metadata (expected {expected_in} / {expected_out})"
            )

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the carried recurrent state (h, c), each (num_layers, 1, hidden) float32."""
        return self._h[self._cur].copy(), self._c[self._cur].copy()

    @property
    def anchor_rad(self) -> float:
        """The last measured phase, rad (NaN before the first measurement)."""
        return self._features.anchor_rad

    @property
    def age_ticks(self) -> float:
        """Ticks since the last measurement."""
        return self._features.age_ticks

    @property
    def last_input(self) -> np.ndarray:
        """Copy of the normalised feature vector of the last step (1, n_features) float32."""
        return self._x.copy()

    def reset(self) -> None:
        self._cur = 0
        for a in (*self._h, *self._c):
            a.fill(0.0)
        self._features.reset()
        self._std_rad = self._nan_std

    def step(self, phase_rad: float, telemetry: np.ndarray) -> np.ndarray:
        """One control tick (see :class:`models.base.DriftPredictor`).

        ``phase_rad`` NaN (or inf) = not measured. A NaN telemetry reading holds the channel's
        previous reading (its training mean if it was never read).
        """
        tel = telemetry.tolist() if isinstance(telemetry, np.ndarray) else list(telemetry)
        if len(tel) != self._n_tel or (tel and isinstance(tel[0], list)):
            raise ValueError(
                f"LstmPredictor.step: telemetry shape {np.shape(telemetry)}, expected "
                f"({self._n_tel},) = {self.metadata.telemetry_names}"
            )
        z = float(phase_rad)
        if not math.isfinite(z):  # NaN or inf: not measured
            z = math.nan
        feats = self._features.step(z, tel)
        x = [(f - m) * s for f, (m, s) in zip(feats, self._norm, strict=True)]
        total = sum(x)
        if total != total:  # a channel never read yet: count it at its training mean (0)
            x = [v if v == v else 0.0 for v in x]
        self._x[0] = x  # float32 buffer bound to the session
        self.session.run_with_iobinding(self._bindings[self._cur])
        self._cur = 1 - self._cur
        features = self._features
        anchor = features.anchor_rad
        age = features.age_ticks
        y = self._y[0].tolist()
        # phase(t + h) = anchor + output_scale_rad(age) * y  (NaN before the first measurement)
        out = np.array(
            [
                anchor + math.sqrt(f2 + r2 * (h + age) * (h + age)) * y[k]
                for k, h, f2, r2 in self._out_spec
            ]
        )
        if anchor == anchor:
            k = min(bisect.bisect_right(self._age_edges, age) - 1, self._n_age_bins - 1)
            self._std_rad = self._std_table[k]
        else:
            self._std_rad = self._nan_std
        return out

    def predicted_std_rad(self) -> np.ndarray:
        """RMS prediction error per horizon measured on validation traces at this age.

        Age = ticks since the last phase measurement, binned as in
        ``metadata.residual_age_edges_ticks``; NaN before the first measurement.
        """
        return self._std_rad.copy()
