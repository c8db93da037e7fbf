"""DAC reconstruction: what an arbitrary waveform generator's output is between its samples.

A real AWG does not output straight lines between samples. Its reconstruction ("anti-imaging")
filter makes the output the band-limited signal through the samples: flat up to a large
fraction of the Nyquist frequency, the images above it suppressed. Modelled here as
windowed-sinc interpolation of the cyclic sample memory:

    v(t) = sum_k s[(i + k) mod N] * h(x - (i + k)),   x = t * rate,  i = floor(x),

with h the sinc low-pass cut at half the sample rate, Kaiser-windowed over ``2 * HALF_TAPS``
samples (beta 8.6, tabulated ``OVERSAMPLE`` times per sample and linearly interpolated in the
table). Measured by tests/test_sim_dac.py: gain flat within 1e-3 up to 0.4 * rate, sample
values reproduced exactly at the sample instants (the kernel is 1 at 0 and 0 at the other
integers).

:func:`zero_order_hold` and :func:`linear` are the two other reconstructions instruments
offer (the 33500B's ``FUNC:ARB:FILT OFF`` and ``STEP``).
"""

from __future__ import annotations

import numba as nb
import numpy as np
import scipy.signal

HALF_TAPS = 16
OVERSAMPLE = 512
KAISER_BETA = 8.6


def _kernel_table() -> np.ndarray:
    """h at x = j / OVERSAMPLE - HALF_TAPS for j = 0 .. 2 * HALF_TAPS * OVERSAMPLE (+1 pad)."""
    n = 2 * HALF_TAPS * OVERSAMPLE + 1
    x = np.arange(n) / OVERSAMPLE - HALF_TAPS
    window = scipy.signal.windows.kaiser(n, KAISER_BETA)
    table = np.sinc(x) * window
    return np.concatenate([table, [0.0]])


_TABLE = _kernel_table()


@nb.njit(cache=True, nogil=True)
def _sinc_kernel(
    samples: np.ndarray, x: np.ndarray, table: np.ndarray, half: int, over: int, out: np.ndarray
) -> None:
    n_mem = samples.size
    for m in range(x.size):
        xm = x[m]
        i = np.floor(xm)
        frac = xm - i
        base = int(i) % n_mem
        # sample base + k sits k - frac from x: table position (k - frac + half) * over, which
        # is u0 + k * over with one interpolation weight w for every k
        u0 = (half - frac) * over
        j0 = int(u0)
        w = u0 - j0
        acc = 0.0
        first = base - half + 1
        if first >= 0 and base + half < n_mem:
            for k in range(-half + 1, half + 1):
                j = j0 + k * over
                acc += samples[base + k] * (table[j] * (1.0 - w) + table[j + 1] * w)
        else:
            for k in range(-half + 1, half + 1):
                j = j0 + k * over
                acc += samples[(base + k) % n_mem] * (table[j] * (1.0 - w) + table[j + 1] * w)
        out[m] = acc


@nb.njit(cache=True, nogil=True)
def _fir_kernel(
    samples: np.ndarray, base: int, step: int, taps: np.ndarray, out: np.ndarray
) -> None:
    """out[m] = sum_k samples[(base + m * step + k) mod N] * taps[k] (fixed fractional phase)."""
    n_mem = samples.size
    n_taps = taps.size
    for m in range(out.size):
        start = base + m * step
        acc = 0.0
        if start >= 0 and start + n_taps <= n_mem:
            for k in range(n_taps):
                acc += samples[start + k] * taps[k]
        else:
            for k in range(n_taps):
                acc += samples[(start + k) % n_mem] * taps[k]
        out[m] = acc


def _uniform_step(x: np.ndarray) -> int | None:
    """The integer sample step if ``x`` is an evenly spaced grid with one fractional phase."""
    if x.ndim != 1 or x.size < 64:
        return None
    step = (x[-1] - x[0]) / (x.size - 1)
    k = round(step)
    if k < 1 or abs(step - k) > 1e-9 * max(1.0, abs(x[-1])) / x.size:
        return None
    frac = x - np.floor(x)
    return k if np.ptp(frac) < 1e-6 else None


def band_limited(samples: np.ndarray, sample_rate_hz: float, t_s: np.ndarray) -> np.ndarray:
    """Cyclic memory ``samples`` played at ``sample_rate_hz``, band-limited output at ``t_s``.

    When ``t_s`` is a uniform grid whose spacing is a whole number of sample periods (a scope
    sampling at the AWG's rate or a divisor of it) every output has the same fractional phase:
    the kernel is then a fixed FIR over the memory (same values, several times faster).
    """
    mem = np.ascontiguousarray(samples, dtype=np.float64)
    x = np.ascontiguousarray(np.asarray(t_s, dtype=np.float64) * sample_rate_hz)
    out = np.empty(x.shape, dtype=np.float64)
    step = _uniform_step(x)
    if step is not None:
        i0 = np.floor(x[0])
        frac = float(np.mean(x - np.floor(x)))
        k = np.arange(-HALF_TAPS + 1, HALF_TAPS + 1)
        pos = (k - frac + HALF_TAPS) * OVERSAMPLE
        j = pos.astype(np.int64)
        w = pos - j
        taps = _TABLE[j] * (1.0 - w) + _TABLE[j + 1] * w
        base = int(i0) % mem.size - HALF_TAPS + 1
        _fir_kernel(mem, base, step, taps, out)
        return out
    _sinc_kernel(mem, x.ravel(), _TABLE, HALF_TAPS, OVERSAMPLE, out.ravel())
    return out


def zero_order_hold(samples: np.ndarray, sample_rate_hz: float, t_s: np.ndarray) -> np.ndarray:
    """Each sample held for one sample period (no reconstruction filter)."""
    mem = np.asarray(samples, dtype=np.float64)
    i = np.floor(np.asarray(t_s, dtype=np.float64) * sample_rate_hz)
    return mem[np.mod(i, mem.size).astype(np.int64)]


def linear(samples: np.ndarray, sample_rate_hz: float, t_s: np.ndarray) -> np.ndarray:
    """Straight lines between consecutive samples (a smooth step)."""
    mem = np.asarray(samples, dtype=np.float64)
    x = np.asarray(t_s, dtype=np.float64) * sample_rate_hz
    base = np.floor(x)
    frac = x - base
    i0 = np.mod(base, mem.size).astype(np.int64)
    i1 = (i0 + 1) % mem.size
    return mem[i0] * (1.0 - frac) + mem[i1] * frac
