"""Symbol timing, pilot position and frame synchronisation for the ISAQN receiver.

physics.md section 1, DSP chain step 5. The receiver does not know (a) the fractional symbol
timing of each node (the fibre delays are arbitrary), (b) which received symbols are the TDM
pilots, (c) where in the node's known, cyclically played sequence of L symbols the received
stream starts. Three estimators, in the order the chain uses them:

Symbol timing (Oerder & Meyr 1988)
----------------------------------
Non-data-aided square-law timing recovery. y[n] is the matched-filter output at the raw rate
(one output per raw sample, ``sps`` samples per symbol, e.g. ``lfilter(matched_taps(sps, span,
beta), 1, x)`` from :mod:`dsp.pulse`). For random symbols the mean power E|y[n]|^2 = sum_m
|p(n - tau - m sps)|^2 (p the overall raised-cosine pulse, tau the position of the symbol
centres) is periodic in n with period sps and, for a Nyquist pulse with roll-off beta > 0,
largest at the symbol centres: its Fourier coefficient at the symbol rate is c e^{-j 2 pi tau /
sps} with c = integral P(f) P(1 - f) df > 0 (the overlap of the two roll-off bands). Hence

    X = sum_n |y[n]|^2 exp(-j 2 pi n / sps),      tau = -sps / (2 pi) arg X   (mod sps).

Sign convention: ``offset_samples`` = tau in [0, sps) means the symbol centres of y are at
samples tau + m sps (y[0] is sample 0): delaying the input by d samples increases tau by d
(mod sps). The sum runs over the first floor(len / sps) whole symbol periods, so the DC term
of |y|^2 cancels exactly. The quality metric ``line_ratio`` = |X| / sum |y[n]|^2 (in [0, 1]) is
the normalised strength of the spectral line: ~E[c]/(sps E[P^2]) for random data (grows with
beta; 0 for beta = 0, where the method fails), falls towards 0 with noise. Self-noise: the
estimate fluctuates with the data pattern; its standard deviation falls as 1/sqrt(number of
symbols) (measured in tests/test_dsp_framesync.py).

Pilot position
--------------
Pilots (x = A, p = 0, A much larger than the quantum symbols' standard deviation) are every
``period`` symbols. :func:`pilot_offset` returns the residue r (mod period) that maximises the
mean |y_k|^2 over k = r mod period, after checking that it stands out from the next strongest
residue by a factor ``min_ratio`` (ValueError otherwise).

Frame synchronisation
---------------------
Received symbols r_k (k < n, roughly phase-corrected) are a piece of the known sequence s_j
(j < L, played cyclically by the AWG) with an unknown complex gain g: r_k ~ g s_{d + k}. The
correlation at lag d is

    c[d] = sum_k r_k conj(s_{(d + k) mod L})      (cyclic: d = 0 .. L-1, n <= L)
    c[d] = sum_k r_k conj(s_{d + k})              (linear: d = 0 .. L-n)

computed for every lag at once with FFTs (O(L log L)). The detection statistic is the
normalised correlation m[d] = |c[d]| / sqrt(E[d]), E[d] = sum_k |s_{d+k}|^2 the energy of the
known window: by Cauchy-Schwarz m[d] <= |g| sqrt(E[true]) with equality at the true lag only,
so without noise the true lag is the maximum even for short windows of Gaussian symbols (the
raw |c[d]| can peak elsewhere when a window has more energy). ``offset`` = argmax m, ``peak``
= c[offset] / E[offset] (the least-squares complex gain g), ``peak_to_sidelobe`` = m[offset]
/ rms(m over the other lags). With white noise of variance sigma^2 per symbol, m at a wrong lag
has rms ~ sigma (plus the sequence's own sidelobes ~ |g| sqrt(E/L)), at the true lag |g|
sqrt(E), so the PSR ~ |g| sqrt(n var(s)) / sigma: the SNR per symbol times sqrt(n).

Noncoherent mode (``noncoherent=S``): when the phase still rotates slowly (residual frequency
offset, vibration), the received stream is cut into segments of S symbols (the last may be
shorter), and m[d] = sum_j |c_j[d]| / sqrt(E[d]) with c_j the correlation of segment j alone
(same lag d for all segments). By Cauchy-Schwarz again the true lag is the maximum without
noise, for any phase per segment; the phase may rotate by up to ~1 rad over a segment with
little loss. Cost: two FFTs of length L per segment (O(n/S L log L); ~0.15 s per segment
for L = 2**20 on the development VM), so keep S large for long sequences. ``peak`` is then
sum_j |c_j| / E (the gain's magnitude, real) and :attr:`FrameSync.segment_gains` the complex
least-squares gain of every segment (their phases track the rotation).

Periodic pilots in both sequences correlate at every multiple of the pilot period: pass only
the quantum symbols, or zero the pilots in both ``received`` and ``known``.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
import scipy.fft

__all__ = [
    "FrameSync",
    "TimingEstimate",
    "frame_offset",
    "pilot_offset",
    "symbol_timing",
]

#: Segments are correlated in batches of at most this many samples (rows x L) at once.
_BATCH_SAMPLES = 1 << 21


def _int_arg(name: str, value: object, minimum: int) -> int:
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name}: got {value!r}, expected an integer >= {minimum}") from None
    if v < minimum:
        raise ValueError(f"{name}: got {v}, expected an integer >= {minimum}")
    return v


def _complex_1d(name: str, x: np.ndarray, min_size: int = 1) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or a.size < min_size or not np.issubdtype(a.dtype, np.number):
        raise ValueError(
            f"{name}: got shape {a.shape} ({a.dtype}), expected a 1-D numeric array of >= "
            f"{min_size} elements"
        )
    a = a.astype(np.complex128)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: expected finite values")
    return a


# ---------------------------------------------------------------------------------------------
# Symbol timing


@dataclass(frozen=True)
class TimingEstimate:
    """Result of :func:`symbol_timing`.

    offset_samples: tau in [0, sps): the symbol centres of the filter output are at samples
        tau + m * sps (sample 0 = the first input sample).
    line_ratio: |X| / sum |y|^2 in [0, 1], the normalised strength of the symbol-rate line
        (0: no timing information).
    sps: samples per symbol used.
    n_symbols: number of whole symbol periods summed.
    """

    offset_samples: float
    line_ratio: float
    sps: int
    n_symbols: int

    def input_delay_samples(self, group_delay_samples: float) -> float:
        """Symbol-centre position in the filter's *input*, (tau - group delay) mod sps.

        With the filter ``dsp.pulse.matched_taps(sps, span, beta)`` (delay 0), whose group
        delay is ``dsp.pulse.matched_group_delay_samples(sps, span)``, this is the fractional
        delay D to give to ``matched_taps(..., delay_samples=D)`` (first_symbol_sample 0, or
        any multiple of sps).
        """
        d = (self.offset_samples - float(group_delay_samples)) % self.sps
        return 0.0 if d >= self.sps else d


def symbol_timing(baseband: np.ndarray, sps: int) -> TimingEstimate:
    """Oerder-Meyr square-law symbol timing of a matched-filter output at the raw rate.

    ``baseband``: y[n], the matched-filter output, one sample per raw sample (complex or real,
    filter transient already dropped), at least one whole symbol period. tau = -sps/(2 pi)
    arg(sum_n |y[n]|^2 exp(-j 2 pi n / sps)) over the first floor(len/sps)*sps samples,
    wrapped to [0, sps). See the module docstring for the sign convention.
    """
    sps = _int_arg("sps", sps, 2)
    y = _complex_1d("baseband", baseband, sps)
    n_sym = y.size // sps
    power = (y.real**2 + y.imag**2)[: n_sym * sps].reshape(n_sym, sps).sum(axis=0)
    total = float(np.sum(power))
    if total == 0.0:
        raise ValueError("baseband: all zero, expected a signal to time")
    line = complex(np.dot(power, np.exp(-2j * np.pi * np.arange(sps) / sps)))
    tau = (-sps / (2.0 * np.pi) * math.atan2(line.imag, line.real)) % sps
    if tau >= sps:  # -tiny % sps rounds to sps
        tau = 0.0
    return TimingEstimate(
        offset_samples=float(tau), line_ratio=abs(line) / total, sps=sps, n_symbols=n_sym
    )


# ---------------------------------------------------------------------------------------------
# Pilot position


def pilot_offset(symbols: np.ndarray, period: int, *, min_ratio: float = 2.0) -> int:
    """Residue r in [0, period) of the pilots: symbols[k] is a pilot iff k % period == r.

    r maximises the mean |symbols[k]|^2 over k = r (mod period) (every residue needs at least
    one symbol: len(symbols) >= period). ValueError if that mean is not at least ``min_ratio``
    times the next largest residue's (no clear pilot comb: wrong period, no pilots, or too
    few symbols).
    """
    period = _int_arg("period", period, 2)
    y = _complex_1d("symbols", symbols, period)
    if not min_ratio > 1.0:
        raise ValueError(f"min_ratio: got {min_ratio}, expected > 1")
    residue = np.arange(y.size) % period
    power = np.bincount(residue, weights=y.real**2 + y.imag**2, minlength=period)
    mean = power / np.bincount(residue, minlength=period)
    order = np.argsort(mean)
    best, second = int(order[-1]), int(order[-2])
    if not (mean[best] > 0.0 and mean[best] >= min_ratio * mean[second]):
        ratio = mean[best] / mean[second] if mean[second] > 0 else math.inf
        raise ValueError(
            f"symbols: no pilot residue stands out for period {period}: residue {best} has "
            f"{ratio:.3g} x the mean power of residue {second}, expected >= {min_ratio}"
        )
    return best


# ---------------------------------------------------------------------------------------------
# Frame synchronisation


@dataclass(frozen=True, eq=False)
class FrameSync:
    """Result of :func:`frame_offset`.

    offset: index into ``known`` of received[0] (received[k] ~ peak * known[(offset + k) % L]).
    peak: coherent: the least-squares complex gain c[offset] / E[offset]; noncoherent: its
        magnitude sum_j |c_j[offset]| / E[offset] (real, phase in ``segment_gains``).
    peak_to_sidelobe: metric[offset] / rms(metric at the other lags) (inf with one lag, 0
        when the metric is 0 everywhere).
    metric: float64 detection statistic per lag, |c[d]| / sqrt(E[d]) (noncoherent: sum over
        segments of |c_j[d]|, over sqrt(E[d])); 0 where E[d] = 0 (below 1e-12 max E).
    segment_gains: complex128 least-squares gain of each segment at ``offset`` (one element,
        equal to ``peak``, in coherent mode).
    """

    offset: int
    peak: complex
    peak_to_sidelobe: float
    metric: np.ndarray
    segment_gains: np.ndarray


def _segment_correlations(
    received: np.ndarray, known_fft: np.ndarray, segment: int, n_lags: int
) -> np.ndarray:
    """sum_j |c_j[d]| for d < n_lags, c_j the cyclic correlation of segment j with known.

    Segment j sits at its own position k0 in an otherwise zero row of length L, so the
    cyclic correlation of the row with ``known`` is directly c_j[d] = sum_i r[k0 + i]
    conj(known[(d + k0 + i) mod L]). Rows are transformed in batches (2-D FFT along axis 1).
    """
    n = received.size
    length = known_fft.size
    starts = np.arange(0, n, segment)
    acc = np.zeros(n_lags, dtype=np.float64)
    rows = max(1, _BATCH_SAMPLES // length)
    for lo in range(0, starts.size, rows):
        batch = starts[lo : lo + rows]
        pad = np.zeros((batch.size, length), dtype=np.complex128)
        for i, k0 in enumerate(batch):  # one row per segment, not per sample
            seg = received[k0 : k0 + segment]
            pad[i, k0 : k0 + seg.size] = seg
        spec = scipy.fft.fft(pad, axis=1, overwrite_x=True)
        # conj(c_j) = ifft(known_fft * conj(fft(row))): |c_j| = |that|
        spec = np.conj(spec, out=spec)
        spec *= known_fft[None, :]
        corr = scipy.fft.ifft(spec, axis=1, overwrite_x=True)
        acc += np.abs(corr[:, :n_lags]).sum(axis=0)
    return acc


def frame_offset(
    received: np.ndarray,
    known: np.ndarray,
    *,
    cyclic: bool = True,
    noncoherent: int | None = None,
) -> FrameSync:
    """Position of ``received`` (n symbols) in the ``known`` sequence (L >= n symbols).

    FFT cross-correlation at every lag (see the module docstring): ``cyclic=True`` lags d = 0
    .. L-1 with indices into ``known`` taken mod L (the AWG loops ``known``), ``cyclic=False``
    lags 0 .. L-n (received lies inside one copy). ``noncoherent=S``: sum |correlation| over
    segments of S symbols, to tolerate a slowly rotating phase. ``offset`` = argmax of the
    normalised statistic; ``peak`` estimates the complex gain.
    """
    r = _complex_1d("received", received)
    s = _complex_1d("known", known)
    n, length = r.size, s.size
    energy_known = s.real**2 + s.imag**2
    if not np.any(energy_known > 0):
        raise ValueError("known: all zero, expected a sequence to correlate with")
    if n > length:
        raise ValueError(
            f"received: got {n} symbols, expected at most len(known) = {length} (pass one "
            "loop's worth)"
        )
    segment = n if noncoherent is None else _int_arg("noncoherent", noncoherent, 1)
    n_lags = length if cyclic else length - n + 1
    cum = np.concatenate([[0.0], np.cumsum(np.concatenate([energy_known, energy_known]))])
    lags = np.arange(n_lags)
    energy = np.maximum(cum[lags + n] - cum[lags], 0.0)
    corr = _segment_correlations(r, scipy.fft.fft(s), segment, n_lags)
    # windows of (numerically) zero energy: cumsum rounding must not make them peak
    valid = energy > 1e-12 * float(np.max(energy))
    metric = np.divide(corr, np.sqrt(energy), out=np.zeros(n_lags), where=valid)
    offset = int(np.argmax(metric))
    others = np.delete(metric, offset)
    rms = float(np.sqrt(np.mean(others**2))) if others.size else 0.0
    peak_metric = float(metric[offset])
    # no other lag (or all zero): inf if something was found, 0 if nothing anywhere
    fallback = math.inf if peak_metric > 0 else 0.0
    psr = peak_metric / rms if rms > 0 else fallback

    aligned = s[(offset + np.arange(n)) % length]
    starts = np.arange(0, n, segment)
    dots = np.add.reduceat(r * np.conj(aligned), starts)
    seg_energy = np.add.reduceat(aligned.real**2 + aligned.imag**2, starts)
    gains = np.divide(dots, seg_energy, out=np.zeros_like(dots), where=seg_energy > 0)
    e_total = float(np.sum(seg_energy))
    if e_total == 0.0:
        peak = 0j
    elif noncoherent is None:
        peak = complex(dots.sum() / e_total)
    else:
        peak = complex(np.abs(dots).sum() / e_total)
    return FrameSync(
        offset=offset,
        peak=peak,
        peak_to_sidelobe=psr,
        metric=metric,
        segment_gains=gains.astype(np.complex128),
    )
