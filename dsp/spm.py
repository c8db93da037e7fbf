"""Spectrum phase monitoring (SPM): which ISAQN node vibrates, and when it must go pilot-only.

physics.md section 1, "Spectrum phase monitoring (SPM) protocol". Per band (node) the input
is the stream of its complex pilot symbols after the DDC, z[m] = A exp(j(theta[m] + phi[m]))
+ w[m], one every P symbols (pilot rate f_p = R / P): theta the slow drift (laser phase
wander, thermal path-length change), phi the vibration, w circular complex Gaussian noise.
(With only the receiver's unwrapped pilot phase at hand, exp(j pilot_phase_rad) works too:
the noise is then pure phase noise, which changes nothing below.)

Signal model in the spectrum
----------------------------
A quiet node's pilot is a single line near DC on a white floor N0 = sigma_w^2 / f_p
[pilot units^2/Hz] (two-sided). A sinusoidal vibration phi = beta sin(2 pi f_v t) splits it
(Jacobi-Anger) into lines at k f_v, k in Z, of powers J_k(beta)^2 A^2: the central line drops
to J_0(beta)^2 of the pilot power ("castdown": 0.55 dB at beta = 0.5 rad, 21 dB at 30 rad)
and sidebands appear at +-f_v (+-k f_v; for beta >> 1 the strongest near |k| ~ beta, Carson
band +-beta f_v, aliased modulo f_p).

Drift handling
--------------
1. Derotation. The pilots are multiplied by the conjugate phasor of a heavily smoothed copy
   of themselves: y[m] = (1 - a) y[m-1] + a z[m] (one-pole complex low-pass,
   a = 1 - exp(-2 pi f_d / f_p), bandwidth f_d = ``derotation_bandwidth_hz``, default half a
   bin), z'[m] = z[m] conj(y[m]) / |y[m]|. The phase of y follows theta below ~f_d (a
   frequency offset, i.e. a linear thermal ramp, is followed exactly in steady state: an LTI
   filter maps exp(j w m) to H(w) exp(j w m)), so the pilot line stays at DC instead of
   wandering and smearing. The phase is high-passed by |1 - H(f)| = (f/f_d) /
   sqrt(1 + (f/f_d)^2): > 0.99 from 7 f_d on, i.e. everywhere in the search band. No
   unwrapping is needed (a complex average), so this works however fast phi moves.
2. Central band. Bins |k| < k_c (k_c = max(guard d, ceil(``drift_cutoff_hz`` / df)),
   df = f_p / nperseg) hold the line and what is left of the drift; they are never tested and
   never used as noise cells.
3. Local floor. A random-walk drift has a phase PSD ~ D / f^2 that stays above the white
   floor up to a corner f_x = sqrt(Delta_nu f_p SNR / (2 pi)) (Delta_nu the Wiener
   linewidth): 300 Hz for Delta_nu = 0.1 Hz at 30 dB pilot SNR, f_p = 6.25 kHz. Derotation
   cannot remove phase noise above its bandwidth (it *is* phase motion at those frequencies),
   and a single, global floor would call it a vibration. The floor is therefore estimated
   locally, for each tested bin, as the median of reference cells on both sides (a smooth
   skirt is followed; the median of a monotonic profile over a symmetric window is its centre
   value); a vibration is a *line* standing out of its neighbourhood. This is the
   order-statistic CFAR of radar (OS-CFAR, Rohling 1983).

Line test and threshold
-----------------------
The Welch estimate uses K = ``n_segments`` non-overlapping, windowed (Hann by default),
two-sided, density-scaled periodograms of nperseg pilots. Under the null (Gaussian noise with
a locally flat mean S_k) every bin is S_k Gamma(K, 1/K) exactly (the DFT bin of Gaussian
noise is circular complex Gaussian for any window, so each periodogram bin is exponential).
Bins are tested separately, not folded (+f with -f): phase noise (drift) is real, its +-f
bins are fully correlated, and folding would double the assumed degrees of freedom there.

For tested bin k the reference cells are the bins k +- o for o = d, d + s, d + 2s, ... <= h_k,
h_k = min(h, |k| - k_c) (the window is kept symmetric so a sloped floor is not biased, and it
never reaches into the central band): W_k = 2 n_k cells. The guard d is the smallest bin
distance at which a line anywhere within half a bin of k leaks < -30 dB into a cell (Hann: 3),
so the line under test does not raise its own floor; the spacing s is the smallest lag at
which the window's bin-to-bin power correlation rho^2 <= 0.05 (Hann: s = 2, rho^2 = 0.028),
which makes the cells independent. The floor is Z_k = the r-th smallest cell, r = W//2 + 1
(the median, upper one for even W), and bin k is significant when S_k > alpha(W_k) Z_k with

    P(X > alpha Z) = integral Q(K, K alpha z) f_Z(z) dz = p_bin,
    f_Z(z) = W! / ((r-1)! (W-r)!) F(z)^(r-1) (1 - F(z))^(W-r) f(z),

X and the cells iid Gamma(K, 1/K) (F, f, Q its CDF, density and upper regularised incomplete
gamma): the floor estimate's own scatter is in the threshold, so the false-alarm rate is
exact for any W, not only for large ones (:func:`os_cfar_factor`, integrated numerically on
a log grid; for K = 1 it equals Rohling's closed form prod_{i<r} (W-i)/(W-i+alpha)).
Over the M tested bins (two-sided search band f_lo <= |f| <= f_hi) the per-bin level is
Sidak's p_bin = 1 - (1 - p_fa)^(1/M), so that P(any bin exceeds | null) = p_fa for
independent bins (adjacent Hann bins are correlated, rho^2 = 0.44, which makes Sidak slightly
conservative). Measured with the defaults (nperseg 2048, K = 8, f_p = 6.25 kHz) on 3000
windows of Wiener drift + ramp + noise, for p_fa = 1e-3 / 0.01 / 0.05 / 0.2: 0.0013 / 0.0083 /
0.045 / 0.195 at 15 dB pilot SNR, and 0.0010 / 0.011 / 0.051 / 0.191 at 30 dB with a drift
skirt above the white floor up to ~300 Hz. Sensitivity at p_fa = 1e-3 (same setup): a
sinusoid of 0.05 rad peak is detected in every window at 10 dB pilot SNR (0.04 rad: 85 % at
37 Hz, near the low edge where fewer cells raise the threshold, 100 % at 500 Hz), 0.15 rad
at 0 dB.

Lowest detectable frequency: a tested bin needs ``min_floor_cells`` = n_min cells on its
inner side, so the search starts at |k| >= k_lo = k_c + d + (n_min - 1) s, i.e. with the
defaults (Hann, n_min = 3) at 10 bins, f_lo = 10 f_p / nperseg (30.5 Hz for f_p = 6.25 kHz,
nperseg = 2048; 1 Hz needs nperseg ~ 64 k pilots, 10 s segments). Slower vibrations stay in
the central band: no line test (their castdown is counted as central power, so neither).

Castdown
--------
From the same spectrum: total power P = sum_k S_k df, central power P_c = sum_{|k|<k_c} S_k df,
white floor N0 = median of the search-band bins / m_K (m_K the median-to-mean ratio of
Gamma(K, 1/K), :func:`dsp.spectrum.noise_floor`), pilot power S = P - N0 f_p. The central
fraction c = (P_c - N0 (2 k_c - 1) df) / S is J_0(beta)^2 for a sinusoidal vibration with
f_v above the central band and ~1 for a quiet node; castdown = -10 log10 c dB (capped at
60 dB). It catches large vibrations of any waveform. Its null scatter from the noise is
~0.01 / SNR relative (tiny) but any non-line phase noise outside the central band (a
laser-noise pedestal, a strong drift skirt) shows as a small static castdown, so the test is a
plain threshold (``castdown_threshold_db``, default 3 dB, i.e. beta > 1.1 rad; None disables)
rather than a calibrated one; at 3 dB its false-alarm contribution is nil for pilot SNR above
~ -10 dB. The decision is ``line or castdown``.

Hysteresis: ``vibrating`` switches on after ``on_count`` consecutive detections and off after
``off_count`` consecutive non-detections. A decision is made every ``hop_segments`` segments
on the last ``n_segments`` (default: non-overlapping frames of K nperseg pilots).

Pilot-only decision
-------------------
TDM pilots track the phase only while it moves by less than pi between consecutive pilots
(the unwrapping ambiguity). :func:`pilot_tracking_update` takes the unwrapped pilot phase
(the receiver's ``pilot_phase_rad``) and, per window of ``window_pilots`` increments
d[m] = phi[m] - phi[m-1], computes the risk = fraction of |d| > ``increment_threshold_rad``
(default pi/2, i.e. a phase slope above pi f_p / 2, half the trackable limit). A sinusoid
whose peak slope beta 2 pi f_v exceeds pi f_p / 2 by a factor g spends a fraction
(2/pi) arccos(1/g) of the time above it (0.28 for g = 1.1), so the risk jumps from ~0 to
tens of percent at the limit. Since unwrapped TDM increments are confined to [-pi, pi], an
increment that truly exceeds pi shows as one of the opposite sign and |d| > pi/2 is still seen
(except at exactly 2 pi multiples, an unavoidable aliasing). Hysteresis: pilot-only after
``enter_windows`` consecutive windows with risk >= ``enter_fraction`` (1 %), back after
``exit_windows`` consecutive windows with risk <= ``exit_fraction`` (0.1 %). In pilot-only
mode feed the phase at the TDM pilot positions (every P-th symbol of the unwrapped dense
phase; its increments may then exceed pi and are used as they are) so the criterion keeps
referring to the spacing QKD will use. Noise alone gives d ~ N(0, 1/SNR) (pilot SNR
A^2 / sigma_w^2), i.e. a risk 2 Q(pi / (2 sqrt(1/SNR))): 7e-7 at 10 dB, 5e-3 at 5 dB, so the
defaults need a pilot SNR above ~8 dB to come back from pilot-only.

Streaming: every function takes a block plus a frozen state and returns the results and the
next state; a stream cut anywhere gives the same decisions (bitwise the same statistics).
This module imports numpy, scipy and :mod:`dsp.spectrum` only.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, signal, special, stats

from dsp.spectrum import WelchConfig, WindowSpec, gamma_median_ratio, noise_floor, periodograms

__all__ = [
    "PilotTracking",
    "PilotTrackingConfig",
    "PilotTrackingDecision",
    "PilotTrackingState",
    "SpmConfig",
    "SpmDecision",
    "SpmDetector",
    "SpmState",
    "os_cfar_factor",
    "pilot_tracking_update",
    "spm_update",
]

#: Leakage (power, relative to the line's peak) a line may put into a reference cell.
GUARD_LEAKAGE: Final[float] = 1e-3
#: Largest bin-to-bin power correlation rho^2 between two reference cells.
CELL_CORRELATION: Final[float] = 0.05
#: Castdown is reported up to this value (central fraction floored at 1e-6).
CASTDOWN_MAX_DB: Final[float] = 60.0
# Segments per FFT call in spm_update (bounds the temporaries of very long blocks).
_CHUNK_SEGMENTS: Final[int] = 64


# ---------------------------------------------------------------------------------------------
# Validation helpers


def _positive_finite(name: str, value: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}") from None
    if not (math.isfinite(x) and x > 0.0):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return x


def _int_at_least(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _probability(name: str, value: float) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a probability in (0, 1), got {value!r}") from None
    if not 0.0 < p < 1.0:
        raise ValueError(f"{name}: expected a probability in (0, 1), got {value!r}")
    return p


# ---------------------------------------------------------------------------------------------
# OS-CFAR threshold


@functools.lru_cache(maxsize=256)
def _os_cfar_cached(p_bin: float, k: float, w: int, r: int) -> float:
    g = stats.gamma(k, scale=1.0 / k)
    z_lo = max(float(g.ppf(1e-30)), 1e-300)
    z_hi = float(g.isf(1e-30))
    t = np.linspace(math.log(z_lo), math.log(z_hi), 6001)
    dt = float(t[1] - t[0])
    z = np.exp(t)
    log_coef = special.gammaln(w + 1) - special.gammaln(r) - special.gammaln(w - r + 1)
    # density of the r-th order statistic, per unit of t = ln z
    log_fz = log_coef + (r - 1) * g.logcdf(z) + (w - r) * g.logsf(z) + g.logpdf(z) + t
    target = math.log(p_bin)

    kz = k * z

    def excess(log_alpha: float) -> float:
        with np.errstate(divide="ignore"):
            terms = np.log(special.gammaincc(k, math.exp(log_alpha) * kz)) + log_fz
        return float(special.logsumexp(terms)) + math.log(dt) - target

    lo, hi = math.log(1e-3), math.log(1e6)
    if excess(lo) < 0.0 or excess(hi) > 0.0:
        raise ValueError(f"p_bin: {p_bin!r} outside the range this solver brackets")
    return math.exp(optimize.brentq(excess, lo, hi, xtol=1e-12, rtol=1e-12))


def os_cfar_factor(p_bin: float, n_averages: float, n_cells: int, rank: int | None = None) -> float:
    """OS-CFAR threshold factor alpha: P(X > alpha Z) = p_bin.

    X and the ``n_cells`` reference cells are iid Gamma(K, 1/K) (K = ``n_averages``: a
    K-segment Welch bin of Gaussian noise over its mean); Z is the ``rank``-th smallest cell
    (1-based; default ``n_cells // 2 + 1``, the median). Exact up to the numerical
    integration (relative ~1e-9); for K = 1 it is Rohling's prod_{i<r} (W-i)/(W-i+alpha).
    """
    p = _probability("p_bin", p_bin)
    k = _positive_finite("n_averages", n_averages)
    w = _int_at_least("n_cells", n_cells, 1)
    r = w // 2 + 1 if rank is None else _int_at_least("rank", rank, 1)
    if r > w:
        raise ValueError(f"rank: expected 1 <= rank <= n_cells={w}, got {r}")
    return _os_cfar_cached(p, k, w, r)


# ---------------------------------------------------------------------------------------------
# SPM configuration


def _window_geometry(window: NDArray[np.float64]) -> tuple[int, int]:
    """(guard d, cell spacing s) of a window, in bins (see the module docstring)."""
    n = window.size
    idx = np.arange(n, dtype=np.float64)
    w2 = window * window
    energy = float(np.sum(w2))
    spacing = 0
    for m in range(1, 65):
        rho = abs(np.sum(w2 * np.exp(-2j * np.pi * m * idx / n))) / energy
        if rho * rho <= CELL_CORRELATION:
            spacing = m
            break
    peak = abs(float(np.sum(window))) ** 2
    guard = 0
    for d in range(1, 65):
        offsets = d - np.linspace(0.0, 0.5, 11)
        resp = np.abs(np.exp(-2j * np.pi * np.outer(offsets, idx) / n) @ window) ** 2
        if float(np.max(resp)) <= GUARD_LEAKAGE * peak:
            guard = d
            break
    if spacing == 0 or guard == 0:
        raise ValueError("window: leaks or correlates over more than 64 bins; use e.g. 'hann'")
    return max(guard, spacing), spacing


@dataclass(frozen=True, eq=False)
class _CellGroup:
    """Tested bins sharing a number of reference cells."""

    positions: NDArray[np.intp]  # positions in SpmConfig.search_index
    test_index: NDArray[np.intp]  # FFT indices of the tested bins
    cells: NDArray[np.intp]  # (n, W) FFT indices of their reference cells
    alpha: float


@dataclass(frozen=True, eq=False)
class SpmConfig:
    """SPM detector parameters (one config for all bands of a receiver).

    pilot_rate_hz: f_p = R / P [Hz].
    nperseg: pilots per segment (bin width df = f_p / nperseg).
    n_segments: K, non-overlapping segments averaged per decision.
    hop_segments: a decision every this many segments (None: K, non-overlapping frames).
    false_alarm_probability: P(a quiet node is detected in one decision), line test.
    window: segment window (``scipy.signal.get_window`` spec).
    drift_cutoff_hz: central band |f| below this (at least the window's guard) is the line
        and drift: excluded from the search and the noise cells.
    derotation_bandwidth_hz: bandwidth of the smoothed phasor the pilots are derotated by
        (None: df / 2; 0: no derotation).
    floor_half_width_bins: h, largest distance of a reference cell from the tested bin.
    min_floor_cells: n_min, reference cells needed on each side of a tested bin.
    min_frequency_hz, max_frequency_hz: optional limits of the search band |f| (it never
        starts below the lowest testable bin; None: no limit, up to f_p / 2).
    castdown_threshold_db: castdown above this also counts as a detection (None: off).
    on_count, off_count: hysteresis of the ``vibrating`` flag (consecutive decisions).
    """

    pilot_rate_hz: float
    nperseg: int = 2048
    n_segments: int = 8
    hop_segments: int | None = None
    false_alarm_probability: float = 1e-3
    window: WindowSpec = "hann"
    drift_cutoff_hz: float = 0.0
    derotation_bandwidth_hz: float | None = None
    floor_half_width_bins: int = 32
    min_floor_cells: int = 3
    min_frequency_hz: float | None = None
    max_frequency_hz: float | None = None
    castdown_threshold_db: float | None = 3.0
    on_count: int = 1
    off_count: int = 3
    welch: WelchConfig = field(init=False, repr=False)
    guard_bins: int = field(init=False)
    cell_spacing_bins: int = field(init=False)
    central_bins: int = field(init=False)
    search_index: NDArray[np.intp] = field(init=False, repr=False)
    bin_false_alarm_probability: float = field(init=False)
    derotation_coefficient: float = field(init=False)
    _groups: tuple[_CellGroup, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        fp = _positive_finite("pilot_rate_hz", self.pilot_rate_hz)
        n = _int_at_least("nperseg", self.nperseg, 16)
        k = _int_at_least("n_segments", self.n_segments, 1)
        hop = k if self.hop_segments is None else self.hop_segments
        hop = _int_at_least("hop_segments", hop, 1)
        if hop > k:
            raise ValueError(f"hop_segments: expected 1 <= hop_segments <= {k}, got {hop}")
        object.__setattr__(self, "hop_segments", hop)
        p_fa = _probability("false_alarm_probability", self.false_alarm_probability)
        h = _int_at_least("floor_half_width_bins", self.floor_half_width_bins, 1)
        n_min = _int_at_least("min_floor_cells", self.min_floor_cells, 1)
        _int_at_least("on_count", self.on_count, 1)
        _int_at_least("off_count", self.off_count, 1)
        if self.castdown_threshold_db is not None:
            _positive_finite("castdown_threshold_db", self.castdown_threshold_db)
        drift = float(self.drift_cutoff_hz)
        if not (math.isfinite(drift) and drift >= 0.0):
            raise ValueError(f"drift_cutoff_hz: expected a finite value >= 0, got {drift!r}")
        welch = WelchConfig(
            fs_hz=fp,
            nperseg=n,
            noverlap=0,
            window=self.window,
            detrend=False,
            scaling="density",
            onesided=False,
        )
        object.__setattr__(self, "welch", welch)
        df = fp / n
        guard, spacing = _window_geometry(welch.window_array)
        kc = max(guard, math.ceil(drift / df - 1e-9))
        object.__setattr__(self, "guard_bins", guard)
        object.__setattr__(self, "cell_spacing_bins", spacing)
        object.__setattr__(self, "central_bins", kc)
        if h < guard + (n_min - 1) * spacing:
            raise ValueError(
                f"floor_half_width_bins: expected >= guard + (min_floor_cells - 1) * spacing = "
                f"{guard + (n_min - 1) * spacing} for this window, got {h}"
            )
        if h > n // 4:
            raise ValueError(f"floor_half_width_bins: expected <= nperseg // 4 = {n // 4}, got {h}")
        bw = df / 2.0 if self.derotation_bandwidth_hz is None else self.derotation_bandwidth_hz
        bw = float(bw)
        if not (math.isfinite(bw) and 0.0 <= bw < fp / 2.0):
            raise ValueError(
                f"derotation_bandwidth_hz: expected 0 <= value < pilot_rate_hz / 2, got {bw!r}"
            )
        object.__setattr__(self, "derotation_bandwidth_hz", bw)
        object.__setattr__(self, "derotation_coefficient", -math.expm1(-2.0 * math.pi * bw / fp))

        signed = np.fft.fftfreq(n, 1.0 / n).astype(np.intp)  # bin numbers k, fftfreq order
        mag = np.abs(signed)
        k_lo = kc + guard + (n_min - 1) * spacing
        f_abs = mag * df
        sel = mag >= k_lo
        if self.min_frequency_hz is not None:
            sel &= f_abs >= float(self.min_frequency_hz)
        if self.max_frequency_hz is not None:
            sel &= f_abs <= float(self.max_frequency_hz)
        search = np.flatnonzero(sel).astype(np.intp)
        if search.size == 0:
            raise ValueError(
                f"nperseg: no testable bin: the search starts at {k_lo} bins = {k_lo * df:g} Hz "
                "(check min_frequency_hz / max_frequency_hz / drift_cutoff_hz)"
            )
        object.__setattr__(self, "search_index", search)
        m = search.size
        p_bin = -math.expm1(math.log1p(-p_fa) / m)
        object.__setattr__(self, "bin_false_alarm_probability", p_bin)

        cells_per_side = (np.minimum(h, mag[search] - kc) - guard) // spacing + 1
        groups = []
        for c in np.unique(cells_per_side):
            pos = np.flatnonzero(cells_per_side == c).astype(np.intp)
            offsets = guard + spacing * np.arange(int(c))
            tk = signed[search[pos]]
            cells = np.concatenate([tk[:, None] - offsets, tk[:, None] + offsets], axis=1) % n
            w = 2 * int(c)
            alpha = os_cfar_factor(p_bin, float(k), w)
            groups.append(_CellGroup(pos, search[pos], cells.astype(np.intp), alpha))
        object.__setattr__(self, "_groups", tuple(groups))

    @property
    def bin_width_hz(self) -> float:
        """df = f_p / nperseg [Hz]."""
        return float(self.pilot_rate_hz) / int(self.nperseg)

    @property
    def freqs_hz(self) -> NDArray[np.float64]:
        """Bin frequencies [Hz] of the two-sided spectrum (``np.fft.fftfreq`` order)."""
        return self.welch.freqs_hz

    @property
    def lowest_frequency_hz(self) -> float:
        """Lowest |f| searched for a vibration line [Hz]."""
        return float(np.min(np.abs(self.freqs_hz[self.search_index])))

    @property
    def highest_frequency_hz(self) -> float:
        """Highest |f| searched [Hz]."""
        return float(np.max(np.abs(self.freqs_hz[self.search_index])))

    @property
    def window_pilots(self) -> int:
        """Pilots per decision, n_segments * nperseg."""
        return int(self.n_segments) * int(self.nperseg)

    @property
    def thresholds(self) -> NDArray[np.float64]:
        """alpha(W_k) of every tested bin (order of ``search_index``): S_k > alpha Z_k."""
        out = np.empty(self.search_index.size)
        for g in self._groups:
            out[g.positions] = g.alpha
        return out


# ---------------------------------------------------------------------------------------------
# SPM state, decisions and update


def _empty_complex() -> NDArray[np.complex128]:
    return np.zeros(0, dtype=np.complex128)


def _empty_rows() -> NDArray[np.float64]:
    return np.zeros((0, 0), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class SpmState:
    """Streaming SPM state of one band.

    n_pilots: pilots consumed so far (global index of the next pilot).
    derotation_zi: state of the one-pole smoother ((1 - a) times its last output).
    tail: derotated pilots not yet in a complete segment (complex128).
    recent: periodograms of the latest (up to n_segments) segments, shape (m, nperseg).
    n_segments: complete segments so far.
    vibrating, streak: hysteresis flag and the run of decisions disagreeing with it.
    """

    n_pilots: int = 0
    derotation_zi: complex = 0j
    tail: NDArray[np.complex128] = field(default_factory=_empty_complex)
    recent: NDArray[np.float64] = field(default_factory=_empty_rows)
    n_segments: int = 0
    vibrating: bool = False
    streak: int = 0


@dataclass(frozen=True)
class SpmDecision:
    """One SPM decision of one band, on pilots [start_pilot, stop_pilot).

    detected: line_detected or castdown_detected (this window alone).
    vibrating: the hysteresis output.
    line_score: max over tested bins of S_k / (alpha_k Z_k); the line test fires iff > 1.
    line_snr: that bin over its local mean floor (Z_k / m_K); line_threshold: alpha_k m_K,
        so line_score = line_snr / line_threshold.
    peak_frequency_hz: |f| of that (most significant) bin.
    vibration_frequency_hz: |f| of the lowest significant local maximum (the first
        sideband, i.e. the vibration frequency of a sinusoid; NaN if no line is detected).
    castdown_db: -10 log10 of the central fraction of the pilot power (>= 0 for a drop).
    pilot_snr_db: pilot power over the white noise power in f_p (estimated).
    noise_floor_per_hz: white floor N0 [pilot units^2 / Hz], two-sided.
    """

    start_pilot: int
    stop_pilot: int
    detected: bool
    vibrating: bool
    line_detected: bool
    line_score: float
    line_snr: float
    line_threshold: float
    peak_frequency_hz: float
    vibration_frequency_hz: float
    castdown_db: float
    castdown_detected: bool
    pilot_snr_db: float
    noise_floor_per_hz: float


@dataclass(frozen=True)
class _Stats:
    line_detected: bool
    line_score: float
    line_snr: float
    line_threshold: float
    peak_frequency_hz: float
    vibration_frequency_hz: float
    castdown_db: float
    castdown_detected: bool
    pilot_snr_db: float
    noise_floor_per_hz: float


def _statistics(psd: NDArray[np.float64], config: SpmConfig) -> _Stats:
    """Line test and castdown of one averaged two-sided density spectrum."""
    n = int(config.nperseg)
    k = int(config.n_segments)
    m_k = gamma_median_ratio(k)
    search = config.search_index
    score = np.empty(search.size)
    floor = np.empty(search.size)
    alpha = np.empty(search.size)
    tiny = np.finfo(np.float64).tiny
    for g in config._groups:
        w = g.cells.shape[1]
        z = np.partition(psd[g.cells], w // 2, axis=1)[:, w // 2]
        z = np.maximum(z, tiny)
        score[g.positions] = psd[g.test_index] / (g.alpha * z)
        floor[g.positions] = z
        alpha[g.positions] = g.alpha
    best = int(np.argmax(score))
    freqs = config.freqs_hz
    best_bin = int(search[best])
    line_detected = bool(score[best] > 1.0)
    line_snr = float(psd[best_bin] * m_k / floor[best])
    line_threshold = float(alpha[best] * m_k)
    significant = search[score > 1.0]
    if significant.size:
        left = psd[(significant - 1) % n]
        right = psd[(significant + 1) % n]
        peaks = significant[(psd[significant] >= left) & (psd[significant] >= right)]
        if peaks.size == 0:
            peaks = significant
        vib_f = float(np.min(np.abs(freqs[peaks])))
    else:
        vib_f = math.nan

    fp = float(config.pilot_rate_hz)
    df = fp / n
    f_abs = np.abs(freqs[search])
    n0 = noise_floor(freqs, psd, float(np.min(f_abs)), float(np.max(f_abs)), k)
    total = float(np.sum(psd)) * df
    kc = int(config.central_bins)
    central_idx = np.arange(-(kc - 1), kc) % n
    central = float(np.sum(psd[central_idx])) * df
    pilot_power = total - n0 * fp
    if pilot_power > 0.0 and n0 > 0.0:
        fraction = (central - n0 * central_idx.size * df) / pilot_power
        castdown = min(-10.0 * math.log10(max(fraction, 1e-6)), CASTDOWN_MAX_DB)
        snr_db = 10.0 * math.log10(pilot_power / (n0 * fp))
    else:
        castdown = math.nan
        snr_db = -math.inf if n0 > 0.0 else math.inf
    thr = config.castdown_threshold_db
    castdown_detected = bool(thr is not None and math.isfinite(castdown) and castdown > thr)
    return _Stats(
        line_detected=line_detected,
        line_score=float(score[best]),
        line_snr=line_snr,
        line_threshold=line_threshold,
        peak_frequency_hz=float(abs(freqs[best_bin])),
        vibration_frequency_hz=vib_f,
        castdown_db=float(castdown),
        castdown_detected=castdown_detected,
        pilot_snr_db=float(snr_db),
        noise_floor_per_hz=float(n0),
    )


def _derotate(
    z: NDArray[np.complex128], zi: complex, config: SpmConfig
) -> tuple[NDArray[np.complex128], complex]:
    """z conj(y) / |y| with y the one-pole smoothed pilots; returns (derotated, next zi)."""
    a = float(config.derotation_coefficient)
    if a == 0.0 or z.size == 0:
        return z, zi
    y, zf = signal.lfilter([a], [1.0, -(1.0 - a)], z, zi=np.array([zi], dtype=np.complex128))
    mag = np.abs(y)
    phasor = np.where(mag > 0.0, np.conj(y) / np.where(mag > 0.0, mag, 1.0), 1.0)
    return z * phasor, complex(zf[0])


def _as_pilots(name: str, values: ArrayLike) -> NDArray[np.complex128]:
    z = np.asarray(values)
    if z.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of complex pilots, got shape {z.shape}")
    if z.size and not np.issubdtype(z.dtype, np.number):
        raise ValueError(f"{name}: expected complex pilot symbols, got dtype {z.dtype}")
    z = z.astype(np.complex128, copy=False)
    if not np.all(np.isfinite(z)):
        raise ValueError(f"{name}: expected finite pilot symbols")
    return z


def spm_update(
    pilots: ArrayLike, state: SpmState, config: SpmConfig
) -> tuple[tuple[SpmDecision, ...], SpmState]:
    """Consume a block of one band's complex pilots; returns (decisions, next state).

    A decision is emitted for every completed window (every ``hop_segments`` segments once
    ``n_segments`` are in), in stream order; most blocks yield none or one.
    """
    z = _as_pilots("pilots", pilots)
    n = int(config.nperseg)
    k = int(config.n_segments)
    hop = int(config.hop_segments)  # type: ignore[arg-type]
    rotated, zi = _derotate(z, state.derotation_zi, config)
    buf = np.concatenate([state.tail, rotated]) if state.tail.size else rotated
    n_full = buf.size // n
    recent = state.recent if state.recent.size else np.zeros((0, n), dtype=np.float64)
    n_seg = state.n_segments
    vibrating, streak = state.vibrating, state.streak
    decisions: list[SpmDecision] = []
    for c0 in range(0, n_full, _CHUNK_SEGMENTS):
        c1 = min(n_full, c0 + _CHUNK_SEGMENTS)
        pgrams = periodograms(buf[c0 * n : c1 * n].reshape(c1 - c0, n), config.welch)
        for row in pgrams:
            recent = np.concatenate([recent[-(k - 1) :] if k > 1 else recent[:0], row[None]])
            n_seg += 1
            if n_seg >= k and (n_seg - k) % hop == 0:
                st = _statistics(np.mean(recent, axis=0), config)
                detected = st.line_detected or st.castdown_detected
                if detected != vibrating:
                    streak += 1
                    if streak >= (config.on_count if detected else config.off_count):
                        vibrating, streak = detected, 0
                else:
                    streak = 0
                stop = n_seg * n  # segments tile the stream from pilot 0
                decisions.append(
                    SpmDecision(
                        start_pilot=stop - k * n,
                        stop_pilot=stop,
                        detected=detected,
                        vibrating=vibrating,
                        **dataclasses.asdict(st),
                    )
                )
    new_state = SpmState(
        n_pilots=state.n_pilots + z.size,
        derotation_zi=zi,
        tail=buf[n_full * n :].copy(),
        recent=recent,
        n_segments=n_seg,
        vibrating=vibrating,
        streak=streak,
    )
    return tuple(decisions), new_state


def _update_bands(
    blocks: Mapping[int, ArrayLike] | Sequence[ArrayLike],
    states: list,
    argument: str,
    step: Callable,
    config: object,
) -> dict:
    """Run ``step(block, state, config)`` for each band given, updating ``states`` in place."""
    items = blocks.items() if isinstance(blocks, Mapping) else enumerate(blocks)
    out: dict = {}
    for band, block in items:
        if not (isinstance(band, int | np.integer) and 0 <= band < len(states)):
            raise ValueError(f"{argument}: band {band!r} is not in 0..{len(states) - 1}")
        out[int(band)], states[band] = step(block, states[band], config)
    return out


class SpmDetector:
    """SPM for all bands of a receiver: one :class:`SpmState` per band.

    ``update({band: pilots})`` (or a sequence indexed by band) returns
    ``{band: (SpmDecision, ...)}`` for the bands given; bands not given keep their state.
    """

    def __init__(self, config: SpmConfig, n_bands: int) -> None:
        self.config = config
        self.n_bands = _int_at_least("n_bands", n_bands, 1)
        self.reset()

    def reset(self) -> None:
        """Start every band afresh."""
        self.states = [SpmState() for _ in range(self.n_bands)]

    def update(
        self, pilots: Mapping[int, ArrayLike] | Sequence[ArrayLike]
    ) -> dict[int, tuple[SpmDecision, ...]]:
        return _update_bands(pilots, self.states, "pilots", spm_update, self.config)

    @property
    def vibrating(self) -> list[bool]:
        """Current hysteresis flag of every band."""
        return [s.vibrating for s in self.states]


# ---------------------------------------------------------------------------------------------
# Pilot-only decision


@dataclass(frozen=True, eq=False)
class PilotTrackingConfig:
    """Pilot-only decision parameters.

    pilot_rate_hz: f_p [Hz] of the phases fed in (the TDM pilot rate).
    window_pilots: phase increments per decision window.
    increment_threshold_rad: |increment| counted as risky (default pi/2: slope pi f_p / 2).
    enter_fraction: risk (fraction of risky increments) from which a window votes pilot-only.
    exit_fraction: risk up to which a window votes for returning to QKD.
    enter_windows, exit_windows: consecutive votes needed to switch.
    """

    pilot_rate_hz: float
    window_pilots: int = 1024
    increment_threshold_rad: float = math.pi / 2.0
    enter_fraction: float = 0.01
    exit_fraction: float = 0.001
    enter_windows: int = 1
    exit_windows: int = 3

    def __post_init__(self) -> None:
        _positive_finite("pilot_rate_hz", self.pilot_rate_hz)
        _int_at_least("window_pilots", self.window_pilots, 1)
        thr = _positive_finite("increment_threshold_rad", self.increment_threshold_rad)
        if thr > math.pi:
            raise ValueError(f"increment_threshold_rad: expected <= pi, got {thr!r}")
        enter = _probability("enter_fraction", self.enter_fraction)
        exit_ = float(self.exit_fraction)
        if not (math.isfinite(exit_) and 0.0 <= exit_ <= enter):
            raise ValueError(
                f"exit_fraction: expected 0 <= exit_fraction <= enter_fraction={enter}, "
                f"got {self.exit_fraction!r}"
            )
        _int_at_least("enter_windows", self.enter_windows, 1)
        _int_at_least("exit_windows", self.exit_windows, 1)


def _empty_float() -> NDArray[np.float64]:
    return np.zeros(0, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class PilotTrackingState:
    """Streaming state of one band's pilot-only decision.

    n_pilots: phases consumed so far. last_phase_rad: the latest one (NaN before the first).
    pending: increments of the current, incomplete window.
    pilot_only, streak: hysteresis flag and the run of windows voting against it.
    """

    n_pilots: int = 0
    last_phase_rad: float = math.nan
    pending: NDArray[np.float64] = field(default_factory=_empty_float)
    pilot_only: bool = False
    streak: int = 0


@dataclass(frozen=True)
class PilotTrackingDecision:
    """Pilot-only decision on the increments ending at pilots [start_pilot, stop_pilot).

    risk: fraction of |increment| > increment_threshold_rad.
    max_increment_rad: largest |increment|; slope_ratio: it over pi (the estimated peak
        phase slope over pi f_p: 1 is the tracking limit).
    rms_slope_rad_per_s: rms increment times f_p.
    pilot_only: the hysteresis output (True: stop quantum modulation, send pilot only).
    """

    start_pilot: int
    stop_pilot: int
    risk: float
    max_increment_rad: float
    slope_ratio: float
    rms_slope_rad_per_s: float
    pilot_only: bool


def pilot_tracking_update(
    phase_rad: ArrayLike, state: PilotTrackingState, config: PilotTrackingConfig
) -> tuple[tuple[PilotTrackingDecision, ...], PilotTrackingState]:
    """Consume a block of one band's unwrapped pilot phase [rad]; returns (decisions, state).

    A decision per completed window of ``window_pilots`` increments, in stream order.
    """
    p = np.asarray(phase_rad)
    if p.ndim != 1 or np.iscomplexobj(p):
        raise ValueError(f"phase_rad: expected a real 1-D array [rad], got {p.dtype} {p.shape}")
    p = p.astype(np.float64, copy=False)
    if not np.all(np.isfinite(p)):
        raise ValueError("phase_rad: expected finite phases")
    if p.size == 0:
        return (), state
    if math.isnan(state.last_phase_rad):
        inc = np.diff(p)
        first_end = state.n_pilots + 1  # pilot at which the first increment ends
    else:
        inc = np.diff(np.concatenate([[state.last_phase_rad], p]))
        first_end = state.n_pilots
    buf = np.concatenate([state.pending, inc]) if state.pending.size else inc
    first_end -= state.pending.size
    w = int(config.window_pilots)
    n_win = buf.size // w
    fp = float(config.pilot_rate_hz)
    thr = float(config.increment_threshold_rad)
    pilot_only, streak = state.pilot_only, state.streak
    decisions: list[PilotTrackingDecision] = []
    if n_win:
        rows = np.abs(buf[: n_win * w].reshape(n_win, w))
        risks = np.count_nonzero(rows > thr, axis=1) / w
        maxima = rows.max(axis=1)
        rms = np.sqrt(np.mean(rows * rows, axis=1))
        for i in range(n_win):
            risk = float(risks[i])
            vote = risk >= config.enter_fraction if not pilot_only else risk > config.exit_fraction
            if vote != pilot_only:
                streak += 1
                needed = config.enter_windows if vote else config.exit_windows
                if streak >= needed:
                    pilot_only, streak = vote, 0
            else:
                streak = 0
            start = first_end + i * w
            decisions.append(
                PilotTrackingDecision(
                    start_pilot=start,
                    stop_pilot=start + w,
                    risk=risk,
                    max_increment_rad=float(maxima[i]),
                    slope_ratio=float(maxima[i]) / math.pi,
                    rms_slope_rad_per_s=float(rms[i]) * fp,
                    pilot_only=pilot_only,
                )
            )
    new_state = PilotTrackingState(
        n_pilots=state.n_pilots + p.size,
        last_phase_rad=float(p[-1]),
        pending=buf[n_win * w :].copy(),
        pilot_only=pilot_only,
        streak=streak,
    )
    return tuple(decisions), new_state


class PilotTracking:
    """Pilot-only decisions for all bands: one :class:`PilotTrackingState` per band.

    ``update({band: unwrapped pilot phase})`` returns ``{band: (PilotTrackingDecision, ...)}``.
    """

    def __init__(self, config: PilotTrackingConfig, n_bands: int) -> None:
        self.config = config
        self.n_bands = _int_at_least("n_bands", n_bands, 1)
        self.reset()

    def reset(self) -> None:
        """Start every band afresh (QKD mode)."""
        self.states = [PilotTrackingState() for _ in range(self.n_bands)]

    def update(
        self, phases: Mapping[int, ArrayLike] | Sequence[ArrayLike]
    ) -> dict[int, tuple[PilotTrackingDecision, ...]]:
        return _update_bands(phases, self.states, "phases", pilot_tracking_update, self.config)

    @property
    def pilot_only(self) -> list[bool]:
        """Current pilot-only flag of every band."""
        return [s.pilot_only for s in self.states]
