"""Streaming Welch power spectral density, phase PSD, noise floor and strain resolution.

Welch's estimate (physics.md section 1, "Sensing figures of merit")
-------------------------------------------------------------------
A stream x[n] sampled at fs is cut into segments of ``nperseg`` samples starting every
``step = nperseg - noverlap`` samples (segment s covers samples s*step .. s*step+nperseg-1;
samples after the last complete segment wait for the next block). Each segment is detrended
(``"constant"``: its mean removed; ``"linear"``: its least-squares line removed; ``False``:
nothing), multiplied by the window w[n] (``scipy.signal.get_window(window, nperseg)``, the
periodic form) and transformed with an ``nfft``-point DFT X_s[k]. The periodogram of segment
s is

    P_s[k] = c |X_s[k]|^2,   c = 1 / (fs sum_n w[n]^2)   ("density", units^2/Hz)
                             c = 1 / (sum_n w[n])^2      ("spectrum", units^2)

one-sided for real input (bins 0..nfft/2, every bin except DC and, for even nfft, Nyquist
doubled so that the bins sum to the two-sided total), two-sided for complex input (all nfft
bins, in ``np.fft.fftfreq`` order: f >= 0 first, then f < 0). The estimate is the mean over
the K complete segments, PSD[k] = (1/K) sum_s P_s[k], exactly ``scipy.signal.welch`` with
``average="mean"`` on the concatenated stream.

Streaming: :class:`WelchState` carries the samples not yet in a complete segment (fewer than
``nperseg``, plus the overlap: a segment that starts in one block and ends in the next is
cut from the carried tail and the new block), the running sum of the segment periodograms and
the segment count. :func:`welch_update` consumes a block (a strided view of all complete
segments of tail + block, one FFT call per chunk of segments); :func:`welch_result` divides.
Cutting the stream anywhere gives the same segments and therefore the same estimate (up to
the rounding of the summation order, ~1e-16 relative).

Normalisation checks: with "density", sum_k PSD[k] df (df = fs / nfft) is the mean power of
the windowed segments divided by the mean of w^2, i.e. the variance for white noise and
A^2/2 for a sine of amplitude A (its lines integrate to the power). With "spectrum" a sine
that falls on a bin gives a peak of A^2/2 (two-sided: A^2/4 at +-f for a real sine, A^2 for a
complex exponential).

Phase PSD and noise floor
-------------------------
:func:`phase_psd` is the density, one-sided PSD [rad^2/Hz] of an unwrapped phase series with
a linear trend removed per segment: the slow drift (laser phase wander, thermal path-length
change) is, over one segment, mostly a ramp, whose spectrum (~1/f^2 per segment, spread by the
window) would otherwise swamp the low bins: a 40 rad/s ramp in 1 s Hann segments sits 1e3 to
1e7 times above a 1 mrad white floor below ~20 bins (everywhere with a boxcar window). Drift
components slower than ~1/(segment duration) are removed; faster ones stay (they are phase
noise at those frequencies).

:func:`noise_floor` is the median of the PSD bins with f_lo <= |f| <= f_hi, corrected to
the mean. For white Gaussian noise each bin of a periodogram is exponential (chi-square with
2 degrees of freedom, scaled: complex bins of two-sided spectra, and real-input bins other
than DC and Nyquist), and the mean of K independent (non-overlapping) segments is

    PSD[k] ~ S * Gamma(shape=K, scale=1/K)      (chi^2_{2K} * S / (2K))

whose median is S * m_K, m_K = gammaincinv(K, 1/2) / K < 1 (K=1: ln 2 = 0.693; K=8: 0.959;
m_K ~ 1 - 1/(3K) for large K). The median of the bins is robust to a few spectral lines (a
line moves it by at most one rank), but it estimates S m_K, so the floor is
median / m_K. Overlapping segments are not independent: K is then replaced by the
equivalent number of averages (Welch 1967; Percival & Walden eq. 292b)

    K_eff = K / [1 + 2 sum_{m=1}^{K-1} (1 - m/K) rho(m step)^2],
    rho(d) = sum_n w[n] w[n+d] / sum_n w[n]^2

(:func:`equivalent_averages`; a Hann window with 50 % overlap has rho(nperseg/2) = 1/6, so
K_eff = K / (1 + (1/18)(1 - 1/K)): from the same data, ~1.9 times the K of disjoint
segments), the Gamma law with shape K_eff being the usual equivalent-degrees-of-freedom
approximation. DC and Nyquist bins of a one-sided spectrum have half the degrees of freedom:
keep them out of [f_lo, f_hi].

Strain resolution
-----------------
physics.md step 6: d_phi = d_L (2 pi / lambda) xi, xi = n - (1/2) n^3 [(1 - mu) p12 - mu p11]
(:func:`dsp.locate.strain_optic_factor`). A one-sided phase floor S_phi [rad^2/Hz] is an
amplitude spectral density sqrt(S_phi) [rad/sqrt(Hz)], which maps linearly to a length
resolution sqrt(S_phi) lambda / (2 pi xi) [m/sqrt(Hz)] (:func:`length_resolution_m_per_rthz`)
and, divided by the sensing-fibre length L, to a strain resolution [1/sqrt(Hz)]
(:func:`strain_resolution`, via :func:`dsp.locate.strain_from_phase`).

This module imports numpy, scipy and :mod:`dsp.locate` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import fft as sp_fft
from scipy import signal, special

from dsp.locate import phase_to_length_change_m, strain_from_phase

__all__ = [
    "Detrend",
    "Scaling",
    "WelchConfig",
    "WelchState",
    "WindowSpec",
    "equivalent_averages",
    "gamma_median_ratio",
    "length_resolution_m_per_rthz",
    "noise_floor",
    "periodograms",
    "phase_psd",
    "phase_psd_config",
    "strain_resolution",
    "welch_result",
    "welch_update",
]

Detrend = Literal["constant", "linear", False]
Scaling = Literal["density", "spectrum"]
WindowSpec = str | tuple[str | float, ...]

# Segments per FFT call: bounds the temporaries for very long blocks (elements per chunk).
_MAX_CHUNK_ELEMENTS: Final[int] = 1 << 22


def _positive_finite(name: str, value: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}") from None
    if not (math.isfinite(x) and x > 0.0):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return x


def _positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True, eq=False)
class WelchConfig:
    """Parameters of a streaming Welch estimate (those of ``scipy.signal.welch``).

    fs_hz: sample rate [Hz].
    nperseg: segment length [samples].
    noverlap: overlap of consecutive segments [samples], 0 <= noverlap < nperseg
        (None: nperseg // 2, scipy's default).
    window: a ``scipy.signal.get_window`` spec (name or (name, parameter) tuple); the
        periodic window of length nperseg.
    detrend: per-segment detrend, ``"constant"``, ``"linear"`` or False.
    scaling: ``"density"`` (units^2/Hz) or ``"spectrum"`` (units^2).
    onesided: one-sided spectrum of real input (True) or two-sided (False, needed for complex
        input; frequencies in ``np.fft.fftfreq`` order).
    nfft: DFT length >= nperseg (zero-padded; None: nperseg).
    """

    fs_hz: float
    nperseg: int
    noverlap: int | None = None
    window: WindowSpec = "hann"
    detrend: Detrend = "constant"
    scaling: Scaling = "density"
    onesided: bool = True
    nfft: int | None = None
    window_array: NDArray[np.float64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _positive_finite("fs_hz", self.fs_hz)
        nperseg = _positive_int("nperseg", self.nperseg)
        if self.noverlap is None:
            object.__setattr__(self, "noverlap", nperseg // 2)
        elif (
            isinstance(self.noverlap, bool)
            or not isinstance(self.noverlap, int | np.integer)
            or not 0 <= self.noverlap < nperseg
        ):
            raise ValueError(
                f"noverlap: expected an integer in [0, nperseg={nperseg}), got {self.noverlap!r}"
            )
        if self.nfft is None:
            object.__setattr__(self, "nfft", nperseg)
        else:
            _positive_int("nfft", self.nfft, nperseg)
        if self.detrend not in ("constant", "linear", False):
            raise ValueError(
                f"detrend: expected 'constant', 'linear' or False, got {self.detrend!r}"
            )
        if self.scaling not in ("density", "spectrum"):
            raise ValueError(f"scaling: expected 'density' or 'spectrum', got {self.scaling!r}")
        if not isinstance(self.onesided, bool | np.bool_):
            raise ValueError(f"onesided: expected a bool, got {self.onesided!r}")
        try:
            win = np.asarray(signal.get_window(self.window, nperseg), dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"window: not a scipy.signal.get_window spec: {exc}") from None
        if not np.all(np.isfinite(win)) or np.sum(win**2) <= 0.0:
            raise ValueError(f"window: {self.window!r} gives a zero or non-finite window")
        win.setflags(write=False)
        object.__setattr__(self, "window_array", win)

    @property
    def step(self) -> int:
        """Samples between the starts of consecutive segments, nperseg - noverlap."""
        return int(self.nperseg) - int(self.noverlap)  # type: ignore[arg-type]

    @property
    def n_freqs(self) -> int:
        """Number of frequency bins of the result."""
        nfft = int(self.nfft)  # type: ignore[arg-type]
        return nfft // 2 + 1 if self.onesided else nfft

    @property
    def freqs_hz(self) -> NDArray[np.float64]:
        """Bin frequencies [Hz] (``rfftfreq`` one-sided, ``fftfreq`` order two-sided)."""
        nfft = int(self.nfft)  # type: ignore[arg-type]
        d = 1.0 / float(self.fs_hz)
        return sp_fft.rfftfreq(nfft, d) if self.onesided else sp_fft.fftfreq(nfft, d)

    @property
    def scale(self) -> float:
        """Periodogram scale c: 1/(fs sum w^2) ("density") or 1/(sum w)^2 ("spectrum")."""
        w = self.window_array
        if self.scaling == "density":
            return 1.0 / (float(self.fs_hz) * float(np.sum(w * w)))
        return 1.0 / float(np.sum(w)) ** 2

    @property
    def sample_dtype(self) -> type[np.floating] | type[np.complexfloating]:
        """float64 for one-sided (real input), complex128 for two-sided."""
        return np.float64 if self.onesided else np.complex128


@dataclass(frozen=True, eq=False)
class WelchState:
    """Streaming Welch state.

    tail: samples not yet consumed by a complete segment (the start of the next segment on).
    psd_sum: sum of the segment periodograms so far (None before the first segment).
    n_segments: number of complete segments so far.
    """

    tail: NDArray[np.generic] = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    psd_sum: NDArray[np.float64] | None = None
    n_segments: int = 0


def periodograms(segments: ArrayLike, config: WelchConfig) -> NDArray[np.float64]:
    """Periodograms (n_segments, n_freqs) float64 of the rows of ``segments`` (n, nperseg).

    Detrend, window, DFT, scale and (one-sided) fold, exactly as ``scipy.signal.welch`` does
    for each of its segments; the Welch estimate is their mean.
    """
    seg = np.asarray(segments)
    if seg.ndim != 2 or seg.shape[1] != config.nperseg:
        raise ValueError(f"segments: expected shape (n, {config.nperseg}), got {seg.shape}")
    if config.onesided and np.iscomplexobj(seg):
        raise ValueError("segments: complex input needs a two-sided config (onesided=False)")
    seg = seg.astype(config.sample_dtype, copy=False)
    if config.detrend:
        seg = signal.detrend(seg, type=config.detrend, axis=-1)
    seg = seg * config.window_array
    nfft = int(config.nfft)  # type: ignore[arg-type]
    if config.onesided:
        spec = sp_fft.rfft(seg, n=nfft, axis=-1)
    else:
        spec = sp_fft.fft(seg, n=nfft, axis=-1)
    p = (spec.real * spec.real + spec.imag * spec.imag) * config.scale
    if config.onesided:
        if nfft % 2:
            p[:, 1:] *= 2.0
        else:
            p[:, 1:-1] *= 2.0
    return p


def _as_block(block: ArrayLike, config: WelchConfig) -> NDArray[np.generic]:
    x = np.asarray(block)
    if x.ndim != 1:
        raise ValueError(f"block: expected a 1-D array, got shape {x.shape}")
    if config.onesided and np.iscomplexobj(x):
        raise ValueError("block: complex samples need a two-sided config (onesided=False)")
    if not (np.issubdtype(x.dtype, np.number) or x.size == 0):
        raise ValueError(f"block: expected numeric samples, got dtype {x.dtype}")
    return x.astype(config.sample_dtype, copy=False)


def welch_update(block: ArrayLike, state: WelchState, config: WelchConfig) -> WelchState:
    """Consume one block of samples; returns the next state (the input state is unchanged).

    ``block``: 1-D real (one-sided) or real/complex (two-sided) samples, the continuation of
    the stream. All complete segments of (tail + block) are transformed.
    """
    x = _as_block(block, config)
    tail = np.asarray(state.tail).astype(config.sample_dtype, copy=False)
    buf = np.concatenate([tail, x]) if tail.size else x
    nperseg, step = int(config.nperseg), config.step
    n_seg = (buf.size - nperseg) // step + 1 if buf.size >= nperseg else 0
    psd_sum = state.psd_sum
    if n_seg:
        views = np.lib.stride_tricks.sliding_window_view(buf, nperseg)[::step][:n_seg]
        chunk = max(1, _MAX_CHUNK_ELEMENTS // nperseg)
        total = np.zeros(config.n_freqs, dtype=np.float64) if psd_sum is None else psd_sum.copy()
        for start in range(0, n_seg, chunk):
            total += periodograms(views[start : start + chunk], config).sum(axis=0)
        psd_sum = total
    new_tail = buf[n_seg * step :].copy()
    return WelchState(tail=new_tail, psd_sum=psd_sum, n_segments=state.n_segments + n_seg)


def welch_result(
    state: WelchState, config: WelchConfig
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(freqs_hz, psd): the Welch estimate of everything consumed so far.

    psd is in units^2/Hz ("density") or units^2 ("spectrum"). Needs >= 1 complete segment.
    """
    if state.n_segments < 1 or state.psd_sum is None:
        raise ValueError(
            f"state: no complete segment yet (a segment needs nperseg={config.nperseg} samples)"
        )
    if state.psd_sum.shape != (config.n_freqs,):
        raise ValueError(
            f"state: psd_sum has shape {state.psd_sum.shape}, expected ({config.n_freqs},) "
            "for this config"
        )
    return config.freqs_hz, state.psd_sum / state.n_segments


def equivalent_averages(config: WelchConfig, n_segments: int) -> float:
    """Equivalent number of independent averages K_eff of a K-segment Welch estimate.

    K_eff = K / [1 + 2 sum_{m=1}^{K-1} (1 - m/K) rho(m step)^2] with
    rho(d) = sum_n w[n] w[n+d] / sum_n w[n]^2 (module docstring); K for noverlap = 0.
    """
    k = _positive_int("n_segments", n_segments)
    w = config.window_array
    energy = float(np.sum(w * w))
    acc = 0.0
    for m in range(1, k):
        d = m * config.step
        if d >= w.size:
            break
        rho = float(np.dot(w[: w.size - d], w[d:])) / energy
        acc += (1.0 - m / k) * rho * rho
    return k / (1.0 + 2.0 * acc)


def gamma_median_ratio(n_averages: float) -> float:
    """m_K = median / mean of Gamma(shape K, scale 1/K): gammaincinv(K, 1/2) / K."""
    k = _positive_finite("n_averages", n_averages)
    return float(special.gammaincinv(k, 0.5)) / k


def noise_floor(
    freqs_hz: ArrayLike,
    psd: ArrayLike,
    f_lo_hz: float,
    f_hi_hz: float,
    n_averages: float,
) -> float:
    """Mean noise level of ``psd`` over f_lo_hz <= |f| <= f_hi_hz, from the median.

    median(bins) / m_K with m_K = :func:`gamma_median_ratio` (``n_averages``: the number of
    averaged independent segments K, or :func:`equivalent_averages` for overlapped ones).
    Robust to a few lines; for white noise it is an unbiased (to O(1/bins)) estimate of the
    mean level. Same unit as ``psd``.
    """
    f = np.asarray(freqs_hz, dtype=np.float64)
    p = np.asarray(psd, dtype=np.float64)
    if f.ndim != 1 or p.shape != f.shape:
        raise ValueError(f"psd: expected the shape of freqs_hz {f.shape}, got {p.shape}")
    lo, hi = float(f_lo_hz), float(f_hi_hz)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi):
        raise ValueError(f"f_lo_hz, f_hi_hz: expected 0 <= f_lo_hz <= f_hi_hz, got {lo}, {hi}")
    m_k = gamma_median_ratio(n_averages)
    sel = (np.abs(f) >= lo) & (np.abs(f) <= hi)
    if not np.any(sel):
        raise ValueError(f"f_lo_hz, f_hi_hz: no bin with {lo} <= |f| <= {hi} Hz")
    values = p[sel]
    if not np.all(np.isfinite(values)):
        raise ValueError("psd: expected finite values in [f_lo_hz, f_hi_hz]")
    return float(np.median(values)) / m_k


def phase_psd_config(
    fs_hz: float, nperseg: int, noverlap: int | None = None, window: WindowSpec = "hann"
) -> WelchConfig:
    """Welch config of :func:`phase_psd`: one-sided density, linear detrend per segment."""
    return WelchConfig(
        fs_hz=fs_hz,
        nperseg=nperseg,
        noverlap=noverlap,
        window=window,
        detrend="linear",
        scaling="density",
        onesided=True,
    )


def phase_psd(
    phase_rad: ArrayLike,
    fs_hz: float,
    nperseg: int,
    noverlap: int | None = None,
    window: WindowSpec = "hann",
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(freqs_hz, PSD [rad^2/Hz]) of an unwrapped phase series sampled at ``fs_hz``.

    One-sided, linear trend removed per segment (the slow drift). For a stream use
    :func:`welch_update` / :func:`welch_result` with :func:`phase_psd_config`; this is the
    same on one block.
    """
    config = phase_psd_config(fs_hz, nperseg, noverlap, window)
    p = np.asarray(phase_rad)
    if np.iscomplexobj(p):
        raise ValueError("phase_rad: expected real (unwrapped) phases in rad, got complex")
    state = welch_update(p, WelchState(), config)
    return welch_result(state, config)


def _floor_amplitude(phase_floor_rad2_per_hz: float) -> float:
    try:
        s = float(phase_floor_rad2_per_hz)
    except (TypeError, ValueError):
        raise ValueError(
            f"phase_floor_rad2_per_hz: expected a finite number >= 0, got "
            f"{phase_floor_rad2_per_hz!r}"
        ) from None
    if not (math.isfinite(s) and s >= 0.0):
        raise ValueError(f"phase_floor_rad2_per_hz: expected a finite number >= 0, got {s!r}")
    return math.sqrt(s)


def strain_resolution(
    phase_floor_rad2_per_hz: float,
    wavelength_m: float,
    sensing_length_m: float,
    n: float = 1.468,
    poisson: float = 0.17,
    p11: float = 0.121,
    p12: float = 0.270,
    *,
    passes: int = 1,
) -> float:
    """Strain resolution [1/sqrt(Hz)] of a one-sided phase noise floor [rad^2/Hz].

    sqrt(floor) lambda / (2 pi xi passes L), :func:`dsp.locate.strain_from_phase` of the
    amplitude spectral density; multiply by 1e9 for n-epsilon/sqrt(Hz).
    """
    amp = _floor_amplitude(phase_floor_rad2_per_hz)
    return float(
        strain_from_phase(amp, wavelength_m, sensing_length_m, n, poisson, p11, p12, passes=passes)
    )


def length_resolution_m_per_rthz(
    phase_floor_rad2_per_hz: float,
    wavelength_m: float,
    n: float = 1.468,
    poisson: float = 0.17,
    p11: float = 0.121,
    p12: float = 0.270,
    *,
    passes: int = 1,
) -> float:
    """Fibre-length resolution [m/sqrt(Hz)]: sqrt(floor) lambda / (2 pi xi passes)."""
    amp = _floor_amplitude(phase_floor_rad2_per_hz)
    return float(phase_to_length_change_m(amp, wavelength_m, n, poisson, p11, p12, passes=passes))
