"""Root-raised-cosine pulse shaping (AWG side) and matched filtering (receiver side) for ISAQN.

physics.md section 1: each child node sends Gaussian quantum symbols and TDM pilots,
pulse-shaped, on its own carrier f_i, through an AWG that loops a waveform. The receiver must
recover every symbol with (almost) no inter-symbol interference (ISI): ISI looks like excess
noise, and CV-QKD excess noise is a few mSNU. So the transmit pulse and the receive filter are
both root-raised-cosine (RRC); their cascade is a raised-cosine (RC) Nyquist pulse, zero at
every nonzero multiple of the symbol period.

Maths
-----
Times are in symbol periods T (``t_symbols``), roll-off ``beta`` in [0, 1]. The RC spectrum
P(f) (f in cycles per symbol) is 1 for |f| <= (1 - beta)/2, (1 + cos(pi/beta (|f| - (1 -
beta)/2)))/2 up to (1 + beta)/2, 0 beyond. The RRC pulse is the inverse Fourier transform of
sqrt(P(f)):

    rrc(t) = [sin(pi t (1 - beta)) + 4 beta t cos(pi t (1 + beta))]
             / [pi t (1 - (4 beta t)^2)]
    rrc(0) = 1 + beta (4/pi - 1)
    rrc(+-1/(4 beta)) = beta/sqrt(2) [(1 + 2/pi) sin(pi/(4 beta)) + (1 - 2/pi) cos(pi/(4 beta))]

Normalisation of :func:`rrc_pulse`: integral of rrc(t)^2 dt = 1 (t in symbols), i.e. its
spectrum is 1 at DC, and (rrc * rrc)(t) = RC(t) with RC(0) = 1, RC(k) = 0 for integer k != 0.

Sampled at ``sps`` samples per symbol, truncated to ``span_symbols`` symbols:

- transmit pulse g[n] = G rrc((n - c)/sps), n = 0 .. 2c, c = span * sps / 2 (centred, odd
  length), G such that sum g^2 = sps: a unit symbol carries the energy of a rectangular pulse
  of height 1 held for sps samples (G = 1 up to the truncation, since sum rrc(n/sps)^2 ~ sps
  * integral rrc^2).
- the shaped waveform s[n] = sum_m a_m g[n - m sps + c] (:func:`shape_symbols`): the centre
  of symbol m is sample m * sps.

Matched filter and sample conventions
-------------------------------------
The received stream is r[n] = sum_m a_m G rrc((n - n0 - D - m sps)/sps) + w[n]: symbol m is
centred at the (real) sample position ``n0 + D + m * sps`` where ``n0`` (``first_symbol_sample``)
is an integer and ``D`` (``delay_samples``) is the fractional delay in [0, sps) (an arbitrary
fibre delay splits into these two parts). :func:`matched_taps` returns the L = span * sps +
sps + 1 taps

    h[k] = H rrc((Q - D - k)/sps)  where |Q - D - k| <= c,  0 elsewhere,  Q = c + sps,

(the time-reversed pulse delayed by D, evaluated analytically, so the delay is a fractional-
delay matched filter; the window of length L holds the whole pulse for every D in [0, sps)),
with H such that

    sum_k h[k]^2 = 1 / sps        (noise gain).

Applied as y[n] = sum_k h[k] r[n - k] (``scipy.signal.lfilter(h, 1, r)``, or the DDC of
:mod:`dsp.ddc`, which computes exactly this after mixing), the estimate of symbol m is

    y[n0 + m * sps + Q] = a_m + (ISI ~ 0) + noise,      Q = span * sps / 2 + sps,

for every D (:func:`matched_output_sample`, :func:`matched_group_delay_samples`): the group
delay Q is the same for every D, so changing D changes the taps but not where to sample. With
the DDC: ``decim = sps`` and ``DDCState.initial(config, matched_output_sample(0, sps, span,
n0))``. Unit gain: sum_k h[k] G rrc((Q - D - k)/sps) = H G sum_k rrc(.)^2 ~ H G sps, and
H G sps = 1 exactly for D = 0 (then h[k + sps] = g[k] / sps), to the truncation (~1e-6) for
other D. ISI: sum_k rrc(u_k) rrc(u_k + j) ~ sps RC(j) = 0 for j != 0 (the sampled sum of the
product equals the integral because both factors are band-limited to (1 + beta)/(2 sps) <
1/2 cycles per sample), up to the truncation of the pulses.

Noise: white noise of variance sigma^2 per (complex) input sample gives sigma^2 sum h^2 =
sigma^2 / sps at the output, exactly as integrate-and-dump (the mean of the sps samples of a
held unit symbol). This defines the shot-noise unit at symbol level: N0_symbol = N0_sample /
sps, and the SNR per symbol is sps times the SNR per sample.

Carrier
-------
:func:`upconvert` multiplies by exp(+j 2 pi f n / fs) with n the absolute sample index. The
phase in turns, frac(f n / fs), is computed exactly from the rational value of f / fs (the
exact values of the two floats) with integer arithmetic, so it does not degrade for large n
(two correctly rounded table entries and a few roundings: error ~1e-15 rad). The DDC
undoes it with its 64-bit NCO (frequency quantised to fs / 2**64). An AWG plays the waveform
in a loop, so the carrier must complete an integer number of cycles per loop
(:func:`check_cyclic_carrier`) and the symbol shaping must be circular (``cyclic=True``).
"""

from __future__ import annotations

import math
import operator
from fractions import Fraction

import numpy as np
import scipy.fft
import scipy.signal

__all__ = [
    "check_cyclic_carrier",
    "matched_group_delay_samples",
    "matched_output_sample",
    "matched_taps",
    "rrc_pulse",
    "shape_symbols",
    "transmit_pulse",
    "upconvert",
]

#: Within this distance (in symbols) of t = +-1/(4 beta) the closed form loses accuracy to
#: cancellation (~1e-16 / distance); there the pulse is linearly interpolated between the
#: exact limit and the closed form at this distance (error ~ 1e-12 + 1e-10).
_SINGULAR_TOL = 1e-6
#: |t| below this (symbols) is evaluated as t = 0 (error O(t^2)).
_ZERO_TOL = 1e-12


def _int_arg(name: str, value: object, minimum: int) -> int:
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name}: got {value!r}, expected an integer >= {minimum}") from None
    if v < minimum:
        raise ValueError(f"{name}: got {v}, expected an integer >= {minimum}")
    return v


def _check_beta(beta: float) -> float:
    b = float(beta)
    if not 0.0 <= b <= 1.0:
        raise ValueError(f"beta: got {beta}, expected a roll-off in [0, 1]")
    return b


def _check_span(sps: int, span_symbols: int) -> tuple[int, int]:
    sps = _int_arg("sps", sps, 2)
    span = _int_arg("span_symbols", span_symbols, 1)
    if (sps * span) % 2:
        raise ValueError(
            f"span_symbols * sps: got {span} * {sps}, expected an even product (odd-length, "
            "centred pulse)"
        )
    return sps, span


def _rrc_closed(t: np.ndarray, beta: float) -> np.ndarray:
    """The closed form at t != 0, |4 beta t| != 1 (no special cases)."""
    num = np.sin(np.pi * t * (1.0 - beta)) + 4.0 * beta * t * np.cos(np.pi * t * (1.0 + beta))
    return num / (np.pi * t * (1.0 - (4.0 * beta * t) ** 2))


def _rrc_singular_value(beta: float) -> float:
    a = np.pi / (4.0 * beta)
    return beta / math.sqrt(2.0) * ((1 + 2 / np.pi) * math.sin(a) + (1 - 2 / np.pi) * math.cos(a))


def rrc_pulse(t_symbols: np.ndarray, beta: float) -> np.ndarray:
    """Root-raised-cosine impulse response at times ``t_symbols`` (symbol periods), float64.

    Normalised to unit energy, integral rrc(t)^2 dt = 1 (t in symbols): its spectrum is 1 at
    DC, rrc(0) = 1 + beta (4/pi - 1), and rrc convolved with itself is the raised cosine with
    RC(0) = 1 and zeros at the nonzero integers. t = 0 and t = +-1/(4 beta) take their exact
    limits; near the latter the closed form is replaced by a linear interpolation (see
    ``_SINGULAR_TOL``), so the result is accurate to ~1e-10 everywhere. ``beta`` in [0, 1]
    (0: the sinc pulse).
    """
    b = _check_beta(beta)
    t = np.asarray(t_symbols, dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise ValueError("t_symbols: expected finite times")
    at = np.abs(t)
    out = np.empty_like(t)
    zero = at < _ZERO_TOL
    out[zero] = 1.0 + b * (4.0 / np.pi - 1.0)
    regular = ~zero
    if b > 0.0:
        ts = 1.0 / (4.0 * b)
        dist = at - ts
        near = np.abs(dist) < _SINGULAR_TOL
        regular &= ~near
        if np.any(near):
            d = dist[near]
            side = np.where(d >= 0.0, 1.0, -1.0)
            v0 = _rrc_singular_value(b)
            v1 = _rrc_closed(ts + side * _SINGULAR_TOL, b)
            out[near] = v0 + (v1 - v0) * (np.abs(d) / _SINGULAR_TOL)
    out[regular] = _rrc_closed(t[regular], b)
    return out


def transmit_pulse(sps: int, span_symbols: int, beta: float) -> np.ndarray:
    """Transmit RRC pulse g (float64, length span*sps + 1, centred), sum(g**2) == sps.

    g[n] = G rrc((n - c) / sps), c = span*sps/2 (g[c] is the peak), G > 0 normalising the
    energy: a unit symbol carries the energy of a unit rectangular pulse held for sps samples.
    ``sps >= 2``, ``span_symbols >= 1`` with span*sps even, ``beta`` in [0, 1].
    """
    sps, span = _check_span(sps, span_symbols)
    b = _check_beta(beta)
    c = span * sps // 2
    g = rrc_pulse((np.arange(2 * c + 1, dtype=np.float64) - c) / sps, b)
    return g * math.sqrt(sps / float(np.sum(g * g)))


def matched_group_delay_samples(sps: int, span_symbols: int) -> int:
    """Q = span*sps/2 + sps: symbol m centred at n0 + D + m*sps is estimated at output
    n0 + m*sps + Q of :func:`matched_taps` (any delay D in [0, sps))."""
    sps, span = _check_span(sps, span_symbols)
    return span * sps // 2 + sps


def matched_output_sample(
    symbol_index: int | np.ndarray,
    sps: int,
    span_symbols: int,
    first_symbol_sample: int = 0,
) -> int | np.ndarray:
    """Filter output sample holding the estimate of symbol ``symbol_index``.

    ``first_symbol_sample + symbol_index * sps + matched_group_delay_samples(sps, span)``,
    where the centre of symbol 0 in the filter's input is at ``first_symbol_sample +
    delay_samples`` (integer part and the fractional ``delay_samples`` in [0, sps) given to
    :func:`matched_taps`) and output n is y[n] = sum_k h[k] x[n - k] (``lfilter``; sample 0
    of the output is the first input sample). int for a scalar index, int64 array otherwise.
    """
    sps, span = _check_span(sps, span_symbols)
    q = span * sps // 2 + sps
    try:
        n0 = operator.index(first_symbol_sample)
    except TypeError:
        raise ValueError(
            f"first_symbol_sample: got {first_symbol_sample!r}, expected an integer"
        ) from None
    idx = np.asarray(symbol_index)
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"symbol_index: got {symbol_index!r}, expected integer(s)")
    if idx.ndim == 0:
        return n0 + int(idx) * sps + q
    return n0 + idx.astype(np.int64) * sps + q


def matched_taps(
    sps: int, span_symbols: int, beta: float, delay_samples: float = 0.0
) -> np.ndarray:
    """Receiver matched-filter taps (float64, length span*sps + sps + 1), sum(h**2) == 1/sps.

    h[k] = H rrc((Q - D - k)/sps) for |Q - D - k| <= span*sps/2, else 0 (Q =
    :func:`matched_group_delay_samples`, D = ``delay_samples`` in [0, sps)): the time-reversed
    transmit pulse delayed by D. For a stream whose symbol m is centred at ``n0 + D + m*sps``,
    ``lfilter(h, 1, x)[n0 + m*sps + Q]`` is a_m with unit gain and ISI ~ 0 (see the module
    docstring; :func:`matched_output_sample`). White noise of variance sigma^2 per sample comes
    out with variance sigma^2 / sps (integrate-and-dump).
    """
    sps, span = _check_span(sps, span_symbols)
    b = _check_beta(beta)
    d = float(delay_samples)
    if not 0.0 <= d < sps:
        raise ValueError(f"delay_samples: got {delay_samples}, expected 0 <= delay < sps={sps}")
    c = span * sps // 2
    q = c + sps
    u = (q - np.arange(2 * c + sps + 1, dtype=np.float64)) - d  # samples from the pulse centre
    h = np.where(np.abs(u) <= c, rrc_pulse(u / sps, b), 0.0)
    return h / math.sqrt(sps * float(np.sum(h * h)))


def shape_symbols(
    symbols: np.ndarray, sps: int, pulse: np.ndarray, *, cyclic: bool = True
) -> np.ndarray:
    """Upsample ``symbols`` by ``sps`` and filter with ``pulse``: complex128, len(symbols)*sps.

    out[n] = sum_m a_m pulse[n - m*sps + c], c = (len(pulse) - 1)/2 (``pulse`` has odd length
    and is centred, e.g. :func:`transmit_pulse`): sample m*sps is the centre of symbol m.
    ``cyclic=True``: n - m*sps is taken modulo len(symbols)*sps (circular convolution, the
    waveform an AWG loops; seamless wrap; computed with the FFT). ``cyclic=False``: linear
    convolution (the tails of the first and last symbols beyond the output are cut).
    """
    a = np.asarray(symbols)
    if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"symbols: got shape {a.shape}, expected a non-empty 1-D numeric array")
    a = a.astype(np.complex128)
    sps = _int_arg("sps", sps, 1)
    p = np.asarray(pulse)
    if p.ndim != 1 or p.size % 2 == 0 or not np.issubdtype(p.dtype, np.number):
        raise ValueError(f"pulse: got shape {p.shape}, expected a 1-D array of odd length")
    p = p.astype(np.complex128 if np.iscomplexobj(p) else np.float64)
    c = (p.size - 1) // 2
    m = a.size * sps
    if cyclic:
        # fold the pulse onto the circle: taps at offset j = k - c (mod m)
        idx = (np.arange(p.size) - c) % m
        folded = np.bincount(idx, weights=p.real, minlength=m).astype(np.complex128)
        if np.iscomplexobj(p):
            folded += 1j * np.bincount(idx, weights=p.imag, minlength=m)
        # DFT of the upsampled symbols: the symbols' DFT repeated sps times
        spectrum = np.tile(scipy.fft.fft(a), sps) * scipy.fft.fft(folded)
        return np.asarray(scipy.fft.ifft(spectrum), dtype=np.complex128)
    full = scipy.signal.upfirdn(p, a, up=sps)  # length (N-1)*sps + len(pulse)
    out = np.zeros(m, dtype=np.complex128)
    seg = full[c : c + m]
    out[: seg.size] = seg
    return out


def _turns_table(start: int, count: int, step: int, num: int, den: int) -> np.ndarray:
    """frac((start + i*step) * num / den) for i < count, each correctly rounded (float64)."""
    return np.array(
        [((start + i * step) * num % den) / den for i in range(count)], dtype=np.float64
    )


def upconvert(
    baseband: np.ndarray, carrier_hz: float, fs_hz: float, first_sample: int = 0
) -> np.ndarray:
    """``baseband[i] * exp(+j 2 pi carrier_hz n / fs_hz)``, n = first_sample + i (complex128).

    The phase in turns frac(f n / fs) uses the exact rational f/fs = p/q of the given floats:
    with n = first_sample + a*B + b (B ~ sqrt(len)), frac(n p / q) = frac(A[a] + F[b]) where
    A[a] = ((first_sample + a B) p mod q) / q and F[b] = (b p mod q) / q are computed with
    Python integers (2 sqrt(len) of them) and each rounded once to float64. The phase error
    is therefore ~1e-15 rad however large ``first_sample`` is.
    """
    x = np.asarray(baseband)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"baseband: got shape {x.shape}, expected a 1-D numeric array")
    if not (math.isfinite(fs_hz) and fs_hz > 0):
        raise ValueError(f"fs_hz: got {fs_hz}, expected a positive finite rate")
    if not math.isfinite(carrier_hz):
        raise ValueError(f"carrier_hz: got {carrier_hz}, expected a finite frequency")
    n0 = operator.index(first_sample)
    n = x.size
    ratio = Fraction(carrier_hz) / Fraction(fs_hz)
    num, den = ratio.numerator, ratio.denominator
    block = max(1, math.isqrt(max(n - 1, 0)) + 1)
    n_blocks = -(-n // block)
    coarse = _turns_table(n0, n_blocks, block, num, den)
    fine = _turns_table(0, block, 1, num, den)
    turns = (coarse[:, None] + fine[None, :]).ravel()[:n]
    turns -= np.rint(turns)  # in [-1/2, 1/2]
    turns *= 2.0 * np.pi
    carrier = np.empty(n, dtype=np.complex128)
    np.cos(turns, out=carrier.real)
    np.sin(turns, out=carrier.imag)
    carrier *= x
    return carrier


def check_cyclic_carrier(n_samples: int, carrier_hz: float, fs_hz: float) -> int:
    """Number of carrier cycles in a loop of ``n_samples``; ValueError if not an integer.

    An AWG loops its waveform: the upconverted loop is seamless only if f * n_samples / fs is
    an integer (exactly, for the given float values). Returns that integer.
    """
    n = _int_arg("n_samples", n_samples, 1)
    if not (math.isfinite(fs_hz) and fs_hz > 0):
        raise ValueError(f"fs_hz: got {fs_hz}, expected a positive finite rate")
    if not math.isfinite(carrier_hz):
        raise ValueError(f"carrier_hz: got {carrier_hz}, expected a finite frequency")
    cycles = Fraction(carrier_hz) * n / Fraction(fs_hz)
    if cycles.denominator != 1:
        raise ValueError(
            f"carrier_hz: {carrier_hz} Hz completes {float(cycles)!r} cycles in n_samples={n} "
            f"at fs_hz={fs_hz}; expected an integer number of cycles (a multiple of fs/n = "
            f"{fs_hz / n!r} Hz) for a seamless loop"
        )
    return int(cycles)
