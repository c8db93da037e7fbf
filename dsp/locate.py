"""Locating a vibration source from the waveforms of three or more ISAQN nodes.

Model (docs/physics.md section 1, "Locating the vibration source"). A vibration event is
emitted at the unknown point r0 = (x0, y0) at the unknown time t0. It propagates through the
ground with speed v and reaches child node k, at the known position r_k, at

    t_k = t0 + |r_k - r0| / v.

Node k imprints the vibration on its light, which reaches the center node after the fibre
delay L_k n / c (L_k the node's fibre length, n the group index of the fibre, c the speed of
light in vacuum). The center node therefore sees node k's waveform at

    T_k = t_k + L_k n / c = t0 + |r_k - r0| / v + L_k n / c.

The T_k are what cross-correlating the recovered waveforms measures (:func:`tdoa_s`,
:func:`arrival_times_s`; only differences matter, the common origin is absorbed in t0).
:func:`locate_source` subtracts the fibre delays, tau_k = T_k - L_k n / c, and solves

    tau_k = t0 + |r_k - r0| / v,    k = 0 .. N-1,

for (x0, y0, t0) by nonlinear least squares. This is the brief's system
(x_k - x0)^2 + (y_k - y0)^2 = (v (t_k - t0))^2 with the emission time made explicit. (The
brief's pairwise form "t_2 - t_3 = dt_12 + (L_2 - L_3)/c" mixes index labels and leaves the
sign of dt implicit; with dt defined as the difference of arrival times *at the center node*,
T_2 - T_3, the correction is t_2 - t_3 = (T_2 - T_3) - (L_2 - L_3) n / c. The code uses the
unambiguous per-node model above.)

Number of solutions. Three unknowns need N >= 3 nodes. With exactly three nodes the system is
square: the time-difference hyperbolae intersect in one or two points, both fitting the data
exactly. Subtracting node 0's equation from the others gives equations linear in
(x0, y0, t0); with three nodes (x0, y0) is then affine in t0 and node 0's equation becomes a
quadratic in t0 whose (up to two) roots are the closed-form candidates. :func:`locate_source`
refines those candidates, a linear least-squares solution (N >= 4) and the local minima of a
grid search (t0 profiled out) with ``scipy.optimize.least_squares``, returns the solution with
the smallest residual and lists every other distinct solution that fits the data about as well
in :attr:`Location.alternatives` (``ambiguous`` is then True). In the reference geometry the
solution is unique inside the triangle except within ~2 km of a node; near and behind a node,
and in much of the plane outside the triangle, two exact solutions are common (then the
"best" one is an arbitrary pick between equally good fits: check ``alternatives``). Four or
more non-collinear nodes generically remove the ambiguity.

Uncertainty. Given a timing standard deviation sigma_k of each arrival time (scalar or per
node), the covariance of (x0, y0, t0) is the linearised (J^T W J)^-1, J the Jacobian of the
modelled arrival times at the solution, W = diag(1/sigma_k^2). It is exact to first order in
sigma; with three nodes it is the propagation of the timing noise through the exact solution.

Magnitude. The vibration phase at a node converts to a change of the sensing-fibre length
(physics.md, DSP chain step 6):

    d_phi = d_L (2 pi / lambda) xi,    xi = n - (1/2) n^3 [(1 - mu) p12 - mu p11],

see :func:`strain_optic_factor`, :func:`phase_to_length_change_m` and
:func:`strain_from_phase`.

Time delay estimation accuracy (:func:`tdoa_s`). The cross-correlation of the two
waveforms is the inverse DFT of their (zero-padded) cross-spectrum; its trigonometric
interpolation is exact for band-limited signals. The default ``interpolation="fourier"``
searches that interpolant on a 1/4-sample grid and polishes the maximum with a bounded Brent
search: this is the "fit on the cross-correlation around the peak" without any assumption on
the peak's shape. Measured on noise-free Gaussian-windowed multi-tone bursts with random
fractional delays (tests/test_locate.py): error below 1e-6 sample (typically 1e-7) for
content up to 0.45 fs. The three-point parabolic fit (``interpolation="parabolic"``) is biased
towards the integer lag: up to ~0.005 sample for content up to 0.1 fs, ~0.05 sample up to
0.3 fs, and it can lock onto a side lobe for content near Nyquist. With noise, both are limited
by the Cramer-Rao bound of time delay estimation, sigma_D^2 ~ 1 / (4 pi^2 B_rms^2 E/N0)
(B_rms the rms bandwidth, E/N0 the energy-to-noise ratio of the waveforms).

This module is pure numpy/scipy and imports nothing from the rest of the project.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import fft as sp_fft
from scipy import ndimage, optimize, signal

__all__ = [
    "SPEED_OF_LIGHT_M_S",
    "Interpolation",
    "Location",
    "LocationCandidate",
    "LocationInputError",
    "arrival_times_s",
    "fibre_delay_s",
    "locate_source",
    "phase_to_length_change_m",
    "strain_from_phase",
    "strain_optic_factor",
    "tdoa_s",
]

#: Speed of light in vacuum [m/s] (exact, SI).
SPEED_OF_LIGHT_M_S: Final[float] = 299_792_458.0

Interpolation = Literal["fourier", "parabolic"]
_INTERPOLATIONS: Final[tuple[str, ...]] = ("fourier", "parabolic")
# Coarse grid of the interpolated cross-correlation: 1/_UPSAMPLE sample.
_UPSAMPLE: Final[int] = 4

# Grid search: half-width of the square (in units of the array radius S) and points per axis.
_GRID_HALF_WIDTH: Final[float] = 3.0
_GRID_POINTS: Final[int] = 81
_GRID_STARTS: Final[int] = 6
# Two refined solutions closer than this (in units of S) are the same solution.
_SAME_SOLUTION: Final[float] = 1e-5
# Default ambiguity tolerance without a timing sigma (rms residual, in units of S / v).
_EXACT_FIT: Final[float] = 1e-6


class LocationInputError(ValueError):
    """Invalid input to this module; ``argument`` names the offending parameter."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _positive_finite(name: str, value: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise LocationInputError(name, f"must be a positive finite number, got {value!r}") from None
    if not (math.isfinite(x) and x > 0.0):
        raise LocationInputError(name, f"must be a positive finite number, got {value!r}")
    return x


def _real_1d(name: str, values: ArrayLike, min_length: int) -> NDArray[np.float64]:
    arr = np.asarray(values)
    if np.iscomplexobj(arr):
        raise LocationInputError(name, "must be real-valued")
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise LocationInputError(name, "must be numeric") from None
    if arr.ndim != 1:
        raise LocationInputError(name, f"must be one-dimensional, got shape {arr.shape}")
    if arr.size < min_length:
        raise LocationInputError(name, f"needs at least {min_length} values, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise LocationInputError(name, f"must be finite; element {bad} is {arr[bad]}")
    return arr


# --------------------------------------------------------------------------------------------
# Time difference of arrival
# --------------------------------------------------------------------------------------------


def _fourier_peak(
    a: NDArray[np.float64], b: NDArray[np.float64], int_peak: int, low: float, high: float
) -> float:
    """Lag [samples] of the maximum of the band-limited interpolation of corr(b, a).

    The cross-correlation is the inverse DFT of the cross-spectrum B(f) A*(f) (zero-padded so
    it is the linear, not circular, correlation); its trigonometric interpolation is exact for
    band-limited signals. Coarse search on a grid of 1/``_UPSAMPLE`` sample (the integer grid
    alone can miss the true peak by more than a side lobe for content near Nyquist), then a
    bounded Brent search within +-1/2 sample of the best grid point, limited to [low, high].
    """
    n_fft = sp_fft.next_fast_len(a.size + b.size - 1, real=True)
    cross = sp_fft.rfft(b, n_fft) * np.conj(sp_fft.rfft(a, n_fft))
    weights = np.full(cross.size, 2.0)
    weights[0] = 1.0
    if n_fft % 2 == 0:
        weights[-1] = 1.0  # Nyquist bin counted once (cosine interpolation)
    coeff = weights * cross / n_fft
    omega = 2.0 * np.pi * np.arange(cross.size, dtype=np.float64) / n_fft

    def negative_corr(lag: float) -> float:
        return -float(np.real(np.sum(coeff * np.exp(1j * omega * lag))))

    # Same interpolant on the fine grid: irfft of the zero-padded spectrum, with the Nyquist
    # bin halved so that it is counted once like in ``weights``.
    padded = cross.copy()
    if n_fft % 2 == 0:
        padded[-1] *= 0.5
    n_up = _UPSAMPLE * n_fft
    fine = sp_fft.irfft(padded, n_up) * _UPSAMPLE
    j_low, j_high = math.ceil(low * _UPSAMPLE), math.floor(high * _UPSAMPLE)
    j = np.arange(j_low, j_high + 1)
    values = fine[j % n_up]
    coarse = float(j[int(np.argmax(values))]) / _UPSAMPLE
    start = coarse if -negative_corr(coarse) >= -negative_corr(float(int_peak)) else int_peak
    best_lag, best_value = float(start), negative_corr(float(start))
    lo, hi = max(low, start - 0.5), min(high, start + 0.5)
    if hi > lo:
        res = optimize.minimize_scalar(
            negative_corr, bounds=(lo, hi), method="bounded", options={"xatol": 1e-9}
        )
        if negative_corr(float(res.x)) < best_value:
            best_lag = float(res.x)
    return best_lag


def tdoa_s(
    waveform_a: ArrayLike,
    waveform_b: ArrayLike,
    sample_rate_hz: float,
    max_lag_s: float | None = None,
    *,
    interpolation: Interpolation = "fourier",
) -> float:
    """Time difference of arrival [s] of ``waveform_b`` relative to ``waveform_a``.

    Sign convention: **positive when b lags a**, i.e. for b(t) = a(t - D) the result is D > 0.
    Both waveforms are real, sampled at ``sample_rate_hz`` [Hz] on a common clock (sample 0 of
    each at the same instant); they may differ in length. Their means are removed, then
    ``scipy.signal.correlate(b, a, method="fft")`` with ``correlation_lags`` gives the integer
    lag of the largest (positive) correlation, searched within +-``max_lag_s`` [s] if given.

    ``interpolation``: ``"fourier"`` (default) maximises the exact band-limited interpolation
    of the cross-correlation (error < 1e-6 sample on noise-free band-limited signals with
    content up to 0.45 fs); ``"parabolic"`` fits a parabola through the integer peak and its
    two neighbours (biased by ~0.005 sample at 0.1 fs, ~0.05 sample at 0.3 fs). See the
    module docstring.
    """
    if interpolation not in _INTERPOLATIONS:
        raise LocationInputError(
            "interpolation", f"must be one of {_INTERPOLATIONS}, got {interpolation!r}"
        )
    fs = _positive_finite("sample_rate_hz", sample_rate_hz)
    a = _real_1d("waveform_a", waveform_a, 2)
    b = _real_1d("waveform_b", waveform_b, 2)
    a = a - a.mean()
    b = b - b.mean()
    if not np.any(a):
        raise LocationInputError("waveform_a", "is constant; no delay can be estimated")
    if not np.any(b):
        raise LocationInputError("waveform_b", "is constant; no delay can be estimated")

    corr = signal.correlate(b, a, mode="full", method="fft")
    lags = signal.correlation_lags(b.size, a.size, mode="full")
    low, high = float(lags[0]), float(lags[-1])
    if max_lag_s is not None:
        max_lag = _positive_finite("max_lag_s", max_lag_s) * fs
        if max_lag < 1.0:
            raise LocationInputError(
                "max_lag_s", f"must be at least one sample period (1/fs = {1.0 / fs:g} s)"
            )
        low, high = max(low, -max_lag), min(high, max_lag)
        allowed = (lags >= low) & (lags <= high)
    else:
        allowed = np.ones(lags.size, dtype=bool)
    idx = np.flatnonzero(allowed)
    i_peak = int(idx[np.argmax(corr[idx])])
    peak = int(lags[i_peak])

    if interpolation == "parabolic":
        if 0 < i_peak < corr.size - 1 and allowed[i_peak - 1] and allowed[i_peak + 1]:
            y_m, y_0, y_p = corr[i_peak - 1], corr[i_peak], corr[i_peak + 1]
            denom = y_m - 2.0 * y_0 + y_p
            offset = 0.5 * (y_m - y_p) / denom if denom < 0.0 else 0.0
            lag = peak + float(np.clip(offset, -0.5, 0.5))
        else:
            lag = float(peak)
    else:
        lag = _fourier_peak(a, b, peak, low, high)
    return lag / fs


def arrival_times_s(
    waveforms: Sequence[ArrayLike],
    sample_rate_hz: float,
    max_lag_s: float | None = None,
    *,
    interpolation: Interpolation = "fourier",
) -> NDArray[np.float64]:
    """Arrival time [s] of each node's waveform relative to node 0 (element 0 is 0.0).

    ``waveforms[k]`` is node k's recovered vibration waveform as sampled *at the center node*
    (common clock), so the result includes the fibre delays and feeds
    :func:`locate_source` (``arrival_s``) directly. Element k is
    ``tdoa_s(waveforms[0], waveforms[k], ...)``: positive when node k's waveform arrives after
    node 0's.
    """
    if isinstance(waveforms, np.ndarray) and waveforms.ndim == 2:
        rows: list[ArrayLike] = list(waveforms)
    else:
        try:
            rows = list(waveforms)
        except TypeError:
            raise LocationInputError("waveforms", "must be a sequence of 1-D arrays") from None
    if len(rows) < 2:
        raise LocationInputError("waveforms", f"needs at least 2 waveforms, got {len(rows)}")
    out = np.zeros(len(rows), dtype=np.float64)
    for k in range(1, len(rows)):
        try:
            out[k] = tdoa_s(
                rows[0], rows[k], sample_rate_hz, max_lag_s, interpolation=interpolation
            )
        except LocationInputError as exc:
            if exc.argument in ("waveform_a", "waveform_b"):
                index = 0 if exc.argument == "waveform_a" else k
                text = str(exc).split(": ", 1)[1]
                raise LocationInputError(f"waveforms[{index}]", text) from None
            raise
    return out


# --------------------------------------------------------------------------------------------
# Source location
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LocationCandidate:
    """One solution (x0, y0, t0) of the location problem and how well it fits."""

    x_m: float
    y_m: float
    t0_s: float
    #: Modelled minus measured fibre-corrected arrival time per node [s].
    residuals_s: NDArray[np.float64]
    #: Root-mean-square of ``residuals_s`` [s].
    rms_residual_s: float


@dataclass(frozen=True, eq=False)
class Location:
    """Result of :func:`locate_source`: best solution, its fit, uncertainty and alternatives.

    ``t0_s`` is the emission time on the clock of ``arrival_s`` (fibre delays removed).
    ``covariance`` is the 3x3 covariance of (x_m, y_m, t0_s) [m^2, m s, s^2] when a timing
    sigma was given, else None. ``alternatives`` are the other distinct solutions whose rms
    residual is within the ambiguity tolerance of the best one, best first; ``ambiguous`` is
    True when there is at least one.
    """

    x_m: float
    y_m: float
    t0_s: float
    residuals_s: NDArray[np.float64]
    rms_residual_s: float
    #: Source-to-node distances |r_k - r0| [m].
    distances_m: NDArray[np.float64]
    #: Fibre delays L_k n / c subtracted from the arrival times [s].
    fibre_delays_s: NDArray[np.float64]
    covariance: NDArray[np.float64] | None
    alternatives: tuple[LocationCandidate, ...]
    ambiguous: bool

    @property
    def sigma_x_m(self) -> float:
        """Standard deviation of x0 [m] (nan without a timing sigma)."""
        return self._sigma(0)

    @property
    def sigma_y_m(self) -> float:
        """Standard deviation of y0 [m] (nan without a timing sigma)."""
        return self._sigma(1)

    @property
    def sigma_t0_s(self) -> float:
        """Standard deviation of t0 [s] (nan without a timing sigma)."""
        return self._sigma(2)

    def _sigma(self, i: int) -> float:
        if self.covariance is None:
            return math.nan
        return math.sqrt(max(float(self.covariance[i, i]), 0.0))


def fibre_delay_s(fibre_m: ArrayLike, fibre_index: float = 1.468) -> NDArray[np.float64]:
    """Propagation delay L n / c [s] of fibres of length ``fibre_m`` [m] and group index n."""
    try:
        n = float(fibre_index)
    except (TypeError, ValueError):
        n = math.nan
    if not (math.isfinite(n) and n >= 1.0):
        raise LocationInputError("fibre_index", f"must be finite and >= 1, got {fibre_index!r}")
    lengths = np.atleast_1d(np.asarray(fibre_m, dtype=np.float64))
    if not np.all(np.isfinite(lengths)) or np.any(lengths < 0.0):
        raise LocationInputError("fibre_m", "must be finite and non-negative")
    return lengths * n / SPEED_OF_LIGHT_M_S


def _closed_form_starts(
    nodes: NDArray[np.float64], tau: NDArray[np.float64]
) -> list[NDArray[np.float64]]:
    """Algebraic candidates (x, y, t0) in scaled units (v = 1); see the module docstring."""
    d_nodes = nodes[1:] - nodes[0]
    d_tau = tau[1:] - tau[0]
    rhs = np.sum(nodes[1:] ** 2, axis=1) - np.sum(nodes[0] ** 2) - (tau[1:] ** 2 - tau[0] ** 2)
    starts: list[NDArray[np.float64]] = []
    # Linear in (x, y, t0): 2 (r_k - r_0).r - 2 (tau_k - tau_0) t0 = rhs_k.
    a_full = np.column_stack([2.0 * d_nodes, -2.0 * d_tau])
    if a_full.shape[0] >= 3:
        sol, _, rank, _ = np.linalg.lstsq(a_full, rhs, rcond=None)
        if rank == 3:
            starts.append(sol)
    # (x, y) affine in t0, then node 0's circle: quadratic in t0.
    a_xy = 2.0 * d_nodes
    pinv = np.linalg.pinv(a_xy)
    p = pinv @ rhs
    q = pinv @ (2.0 * d_tau)
    w = p - nodes[0]
    qa = float(q @ q - 1.0)
    qb = float(2.0 * (w @ q + tau[0]))
    qc = float(w @ w - tau[0] ** 2)
    roots: list[float] = []
    if abs(qa) < 1e-12:
        if abs(qb) > 1e-300:
            roots.append(-qc / qb)
    else:
        disc = qb * qb - 4.0 * qa * qc
        if disc >= 0.0:
            sq = math.sqrt(disc)
            roots.extend([(-qb + sq) / (2.0 * qa), (-qb - sq) / (2.0 * qa)])
        else:  # noisy near-tangent case: the vertex is the best algebraic guess
            roots.append(-qb / (2.0 * qa))
    for t0 in roots:
        xy = p + q * t0
        starts.append(np.array([xy[0], xy[1], t0]))
    return [s for s in starts if np.all(np.isfinite(s))]


def _grid_starts(
    nodes: NDArray[np.float64], tau: NDArray[np.float64], weights: NDArray[np.float64]
) -> list[NDArray[np.float64]]:
    """Local minima of the t0-profiled weighted cost on a square grid (scaled units)."""
    axis = np.linspace(-_GRID_HALF_WIDTH, _GRID_HALF_WIDTH, _GRID_POINTS)
    gx, gy = np.meshgrid(axis, axis, indexing="ij")
    dist = np.hypot(gx[..., None] - nodes[:, 0], gy[..., None] - nodes[:, 1])
    e = tau - dist  # = t0 for a perfect fit
    w2 = weights**2
    t0 = np.sum(w2 * e, axis=-1) / np.sum(w2)
    cost = np.sum(w2 * (e - t0[..., None]) ** 2, axis=-1)
    is_min = cost == ndimage.minimum_filter(cost, size=3, mode="nearest")
    ii, jj = np.nonzero(is_min)
    order = np.argsort(cost[ii, jj])[:_GRID_STARTS]
    return [
        np.array([gx[i, j], gy[i, j], t0[i, j]]) for i, j in zip(ii[order], jj[order], strict=True)
    ]


def _refine(
    start: NDArray[np.float64],
    nodes: NDArray[np.float64],
    tau: NDArray[np.float64],
    weights: NDArray[np.float64],
) -> NDArray[np.float64] | None:
    def residuals(u: NDArray[np.float64]) -> NDArray[np.float64]:
        dist = np.hypot(nodes[:, 0] - u[0], nodes[:, 1] - u[1])
        return weights * (u[2] + dist - tau)

    def jacobian(u: NDArray[np.float64]) -> NDArray[np.float64]:
        dx = u[0] - nodes[:, 0]
        dy = u[1] - nodes[:, 1]
        dist = np.maximum(np.hypot(dx, dy), 1e-12)
        return weights[:, None] * np.column_stack([dx / dist, dy / dist, np.ones_like(dist)])

    try:
        res = optimize.least_squares(
            residuals,
            start,
            jac=jacobian,
            method="lm",
            xtol=1e-14,
            ftol=1e-14,
            gtol=1e-14,
            max_nfev=400,
        )
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not np.all(np.isfinite(res.x)):
        return None
    return np.asarray(res.x, dtype=np.float64)


def locate_source(
    node_xy_m: ArrayLike,
    arrival_s: ArrayLike,
    speed_m_s: float,
    fibre_m: ArrayLike | None = None,
    fibre_index: float = 1.468,
    *,
    timing_sigma_s: float | ArrayLike | None = None,
    ambiguity_tol_s: float | None = None,
) -> Location:
    """Locate a vibration source from arrival times measured at the center node.

    Parameters
    ----------
    node_xy_m
        Node positions, shape (N, 2) [m], N >= 3, not all on one line.
    arrival_s
        When each node's waveform reached the center node [s], fibre delay included, any
        common origin (e.g. :func:`arrival_times_s`: relative to node 0). Length N.
    speed_m_s
        Propagation speed v of the vibration in the ground [m/s] (reference 6 km/s).
    fibre_m
        Fibre length L_k from node k to the center [m], length N. None: equal fibres (their
        common delay is absorbed in t0, so no correction is needed).
    fibre_index
        Group index n of the fibre (default 1.468); fibre delay L_k n / c.
    timing_sigma_s
        Standard deviation of the arrival times [s], scalar or one per node. Weights the fit
        and enables :attr:`Location.covariance`.
    ambiguity_tol_s
        Another solution is reported as an alternative when its rms residual exceeds the best
        one's by at most this [s]. Default: 3 * (rms of ``timing_sigma_s``) if given, else
        1e-6 * S / v (S the array radius): only solutions that fit as exactly as the best.

    Returns
    -------
    Location
        Best solution (smallest weighted residual), residuals, covariance, alternatives.

    Raises
    ------
    LocationInputError
        (a ValueError) naming the argument: fewer than 3 nodes, length mismatch, non-finite or
        negative values, coincident or collinear nodes.
    """
    nodes_m = np.asarray(node_xy_m, dtype=np.float64) if _is_numeric(node_xy_m) else None
    if nodes_m is None or nodes_m.ndim != 2 or nodes_m.shape[1] != 2:
        raise LocationInputError("node_xy_m", "must have shape (N, 2) (x, y per node) in metres")
    n_nodes = nodes_m.shape[0]
    if n_nodes < 3:
        raise LocationInputError("node_xy_m", f"needs at least 3 nodes, got {n_nodes}")
    if not np.all(np.isfinite(nodes_m)):
        raise LocationInputError("node_xy_m", "must be finite")
    arrivals = _real_1d("arrival_s", arrival_s, 1)
    if arrivals.size != n_nodes:
        raise LocationInputError(
            "arrival_s", f"needs one value per node ({n_nodes}), got {arrivals.size}"
        )
    v = _positive_finite("speed_m_s", speed_m_s)
    if fibre_m is None:
        delays = np.zeros(n_nodes)
        fibre_delay_s([0.0], fibre_index)  # validates fibre_index
    else:
        lengths = _real_1d("fibre_m", fibre_m, 1)
        if lengths.size != n_nodes:
            raise LocationInputError(
                "fibre_m", f"needs one length per node ({n_nodes}), got {lengths.size}"
            )
        delays = fibre_delay_s(lengths, fibre_index)
    sigmas: NDArray[np.float64] | None = None
    if timing_sigma_s is not None:
        try:
            sigmas = np.broadcast_to(
                np.asarray(timing_sigma_s, dtype=np.float64), (n_nodes,)
            ).copy()
        except (TypeError, ValueError):
            raise LocationInputError(
                "timing_sigma_s", f"must be a number or one value per node ({n_nodes})"
            ) from None
        if not (np.all(np.isfinite(sigmas)) and np.all(sigmas > 0.0)):
            raise LocationInputError("timing_sigma_s", "must be positive and finite")
    if ambiguity_tol_s is not None:
        tol_s = float(ambiguity_tol_s)
        if not (math.isfinite(tol_s) and tol_s >= 0.0):
            raise LocationInputError("ambiguity_tol_s", "must be finite and non-negative")

    # Geometry checks and scaling: positions about the centroid in units of the array radius S,
    # times in units of S / v (so the speed is 1), origin at the earliest arrival.
    centroid = nodes_m.mean(axis=0)
    rel = nodes_m - centroid
    radius = float(np.max(np.hypot(rel[:, 0], rel[:, 1])))
    if radius == 0.0:
        raise LocationInputError("node_xy_m", "all nodes coincide")
    pair = np.hypot(*(rel[:, None, :] - rel[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(pair, np.inf)
    if np.min(pair) <= 1e-9 * radius:
        i, j = np.unravel_index(np.argmin(pair), pair.shape)
        raise LocationInputError("node_xy_m", f"nodes {min(i, j)} and {max(i, j)} coincide")
    singular = np.linalg.svd(rel, compute_uv=False)
    if singular[-1] <= 1e-9 * singular[0]:
        raise LocationInputError(
            "node_xy_m", "nodes are collinear; the source is undetermined up to a reflection"
        )
    scale_t = radius / v
    nodes = rel / radius
    tau_s = arrivals - delays
    tau_ref = float(np.min(tau_s))
    tau = (tau_s - tau_ref) / scale_t
    if sigmas is None:
        weights = np.ones(n_nodes)
    else:
        weights = 1.0 / sigmas
        weights = weights / np.sqrt(np.mean(weights**2))

    starts = _closed_form_starts(nodes, tau) + _grid_starts(nodes, tau, weights)
    unique_starts: list[NDArray[np.float64]] = []
    for s in starts:
        if all(np.hypot(*(s[:2] - u[:2])) > 1e-3 for u in unique_starts):
            unique_starts.append(s)

    solutions: list[tuple[float, NDArray[np.float64]]] = []
    for s in unique_starts:
        u = _refine(s, nodes, tau, weights)
        if u is None:
            continue
        dist = np.hypot(nodes[:, 0] - u[0], nodes[:, 1] - u[1])
        wres = weights * (u[2] + dist - tau)
        cost = float(np.sqrt(np.mean(wres**2)))
        if any(
            np.hypot(*(u[:2] - o[:2])) <= _SAME_SOLUTION * max(1.0, np.hypot(*u[:2]))
            for _, o in solutions
        ):
            continue
        solutions.append((cost, u))
    if not solutions:  # pragma: no cover - least_squares always returns a finite point here
        raise RuntimeError("locate_source: no solution converged")
    solutions.sort(key=lambda item: item[0])

    def to_candidate(u: NDArray[np.float64]) -> LocationCandidate:
        x_m = float(centroid[0] + u[0] * radius)
        y_m = float(centroid[1] + u[1] * radius)
        t0 = float(tau_ref + u[2] * scale_t)
        dist_m = np.hypot(nodes_m[:, 0] - x_m, nodes_m[:, 1] - y_m)
        res_s = t0 + dist_m / v - tau_s
        return LocationCandidate(x_m, y_m, t0, res_s, float(np.sqrt(np.mean(res_s**2))))

    best_cost, best_u = solutions[0]
    best = to_candidate(best_u)

    if ambiguity_tol_s is not None:
        tol_scaled = float(ambiguity_tol_s) / scale_t
    elif sigmas is not None:
        tol_scaled = 3.0 * float(np.sqrt(np.mean(sigmas**2))) / scale_t
    else:
        tol_scaled = _EXACT_FIT
    # Compare weighted costs in scaled units (weights have unit rms, so they are comparable to
    # a plain rms residual).
    alternatives = tuple(
        to_candidate(u) for cost, u in solutions[1:] if cost <= best_cost + tol_scaled
    )

    covariance: NDArray[np.float64] | None = None
    if sigmas is not None:
        dx = best_u[0] - nodes[:, 0]
        dy = best_u[1] - nodes[:, 1]
        dist = np.maximum(np.hypot(dx, dy), 1e-12)
        jac = np.column_stack([dx / dist, dy / dist, np.ones(n_nodes)])
        sig_scaled = sigmas / scale_t
        fisher = jac.T @ (jac / sig_scaled[:, None] ** 2)
        try:
            cov_scaled = np.linalg.inv(fisher)
        except np.linalg.LinAlgError:
            cov_scaled = np.full((3, 3), np.inf)
        unit = np.array([radius, radius, scale_t])
        covariance = cov_scaled * np.outer(unit, unit)

    return Location(
        x_m=best.x_m,
        y_m=best.y_m,
        t0_s=best.t0_s,
        residuals_s=best.residuals_s,
        rms_residual_s=best.rms_residual_s,
        distances_m=np.hypot(nodes_m[:, 0] - best.x_m, nodes_m[:, 1] - best.y_m),
        fibre_delays_s=delays,
        covariance=covariance,
        alternatives=alternatives,
        ambiguous=bool(alternatives),
    )


def _is_numeric(values: ArrayLike) -> bool:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return arr.dtype == np.float64


# --------------------------------------------------------------------------------------------
# Magnitude: phase to fibre length change and strain
# --------------------------------------------------------------------------------------------


def strain_optic_factor(
    n: float = 1.468, poisson: float = 0.17, p11: float = 0.121, p12: float = 0.270
) -> float:
    """xi = n - (1/2) n^3 [(1 - mu) p12 - mu p11] (dimensionless; silica defaults: ~1.146).

    The phase of light in a fibre stretched by d_L changes by d_L (2 pi / lambda) xi: the
    geometric term n reduced by the photo-elastic change of the index (physics.md, step 6).
    """
    n_val = _positive_finite("n", n)
    mu = float(poisson)
    if not (math.isfinite(mu) and -1.0 < mu < 0.5):
        raise LocationInputError("poisson", f"must be in (-1, 0.5), got {poisson!r}")
    for name, value in (("p11", p11), ("p12", p12)):
        if not math.isfinite(float(value)):
            raise LocationInputError(name, f"must be finite, got {value!r}")
    xi = n_val - 0.5 * n_val**3 * ((1.0 - mu) * float(p12) - mu * float(p11))
    if xi <= 0.0:
        raise LocationInputError("n", f"gives a non-positive strain-optic factor {xi:g}")
    return xi


def phase_to_length_change_m(
    delta_phi_rad: ArrayLike,
    wavelength_m: float,
    n: float = 1.468,
    poisson: float = 0.17,
    p11: float = 0.121,
    p12: float = 0.270,
    *,
    passes: int = 1,
) -> float | NDArray[np.float64]:
    """Fibre length change d_L [m] that produces the phase change ``delta_phi_rad`` [rad].

    d_L = d_phi lambda / (2 pi xi passes), xi from :func:`strain_optic_factor`. ``passes`` is
    how often the light crosses the stretched fibre (the physics.md formula is one pass; a
    round-trip layout that reads the phase after the return trip through the same PZT fibre
    accumulates it twice: ``passes=2``). Scalar in, float out; array in, array out.
    """
    lam = _positive_finite("wavelength_m", wavelength_m)
    if not (isinstance(passes, int | np.integer) and passes >= 1):
        raise LocationInputError("passes", f"must be a positive integer, got {passes!r}")
    xi = strain_optic_factor(n, poisson, p11, p12)
    phi = np.asarray(delta_phi_rad, dtype=np.float64)
    if not np.all(np.isfinite(phi)):
        raise LocationInputError("delta_phi_rad", "must be finite")
    d_l = phi * lam / (2.0 * math.pi * xi * int(passes))
    return float(d_l) if d_l.ndim == 0 else d_l


def strain_from_phase(
    delta_phi_rad: ArrayLike,
    wavelength_m: float,
    sensing_length_m: float,
    n: float = 1.468,
    poisson: float = 0.17,
    p11: float = 0.121,
    p12: float = 0.270,
    *,
    passes: int = 1,
) -> float | NDArray[np.float64]:
    """Axial strain d_L / L (dimensionless) of a sensing fibre of length ``sensing_length_m``.

    Same formula as :func:`phase_to_length_change_m`, divided by the stretched length. Applied
    to a phase PSD amplitude [rad/sqrt(Hz)] it gives the strain resolution [1/sqrt(Hz)].
    """
    length = _positive_finite("sensing_length_m", sensing_length_m)
    d_l = phase_to_length_change_m(delta_phi_rad, wavelength_m, n, poisson, p11, p12, passes=passes)
    return d_l / length
