"""Streaming pilot phase recovery for the ISAQN receiver (physics.md section 1, steps 3-5).

Per band, on the stream of symbol-centre samples from the DDC:

3. **Pilot phase**: pilots are time-division multiplexed: symbol s (global index, counted
   from the start of the stream) is a pilot iff ``s % period == offset``. A pilot is sent as
   x = A, p = 0, so its received phase is theta + phi = atan2(P, X) (float64, in (-pi, pi]).
4. **Unwrapping**: add 2 pi k wherever consecutive pilot phases jump by more than pi. The
   streaming unwrap carries (last wrapped phase, accumulated correction) and reproduces
   ``np.unwrap`` on the concatenated stream exactly (same operations in the same order:
   bitwise equal).
5. **Quantum-symbol rotation**: the unwrapped pilot phase is interpolated linearly (the
   formula of ``np.interp``) onto the quantum symbols between two pilots and each quantum
   symbol is rotated by exp(-j phase). A quantum symbol can only be rotated once the pilot
   *after* it has arrived, so the state keeps the quantum symbols received after the last
   pilot (at most ``period - 1``) and emits them with the next block; :func:`flush` emits the
   rest at the end of a stream with the last pilot's phase held (what ``np.interp`` does past
   its last point; symbols before the first pilot get the first pilot's phase likewise).

Every function takes a block plus a state and returns results plus the next state, so a stream
can be cut anywhere: the concatenated outputs equal those of one long block (bitwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba as nb
import numpy as np

__all__ = [
    "PhaseResult",
    "PhaseState",
    "PilotPattern",
    "UnwrapState",
    "flush",
    "interp_rotate",
    "pilot_phase",
    "pilot_phase_process",
    "rotate",
    "unwrap_stream",
]

_PI = math.pi
_TWO_PI = 2.0 * math.pi


# ---------------------------------------------------------------------------------------------
# Kernels (no fastmath: they must reproduce numpy's rounding)


@nb.njit(cache=True, nogil=True)
def _np_mod(a: float, b: float) -> float:
    """numpy's float ``mod`` (npy_divmod): fmod, shifted into the sign of b; +0.0 for zero."""
    mod = np.fmod(a, b)
    if mod != 0.0:
        if (b < 0.0) != (mod < 0.0):
            mod += b
    else:
        mod = math.copysign(0.0, b)
    return mod


@nb.njit(cache=True, nogil=True)
def _unwrap_step(p: float, last: float, offset: float) -> float:
    """Accumulated correction after wrapped sample p that follows ``last`` (np.unwrap's ops).

    For dd = p - last: ddmod = mod(dd + pi, 2 pi) - pi (pi if that is -pi and dd > 0),
    correction ddmod - dd, 0 where |dd| < pi, accumulated left to right like np.cumsum.
    """
    dd = p - last
    ddmod = _np_mod(dd - (-_PI), _TWO_PI) + (-_PI)
    if ddmod == -_PI and dd > 0.0:
        ddmod = _PI
    corr = ddmod - dd
    if abs(dd) < _PI:
        corr = 0.0
    return offset + corr


@nb.njit(cache=True, nogil=True)
def _unwrap_kernel(
    phase: np.ndarray, out: np.ndarray, last: float, offset: float, started: bool
) -> tuple[float, float, bool]:
    """Unwrap ``phase`` into ``out`` continuing from (last, offset); returns the next state.

    The first sample of a stream is kept as is (like np.unwrap); the output is the wrapped
    sample plus the accumulated correction.
    """
    for i in range(phase.shape[0]):
        p = phase[i]
        if started:
            offset = _unwrap_step(p, last, offset)
        else:
            started = True
        out[i] = p + offset
        last = p
    return last, offset, started


@nb.njit(cache=True, nogil=True)
def _pilot_stage_kernel(
    z: np.ndarray,
    s0: int,
    period: int,
    offset: int,
    pend: np.ndarray,
    wrapped: np.ndarray,
    prev_idx: int,
    prev_phase: float,
    uw_last: float,
    uw_offset: float,
    uw_started: bool,
    pil_idx: np.ndarray,
    pil_phase: np.ndarray,
    q_out: np.ndarray,
    q_idx: np.ndarray,
    q_phase: np.ndarray,
) -> tuple[int, int, int, float, float, bool]:
    """Unwrap and interpolation of the pilot phase for one block of a band (periodic pilots).

    ``wrapped``: atan2 of the block's pilots z[p0::period], p0 = (offset - s0) % period.
    Stream: ``pend`` (quantum symbols s0 - len(pend) .. s0 - 1, after the latest pilot
    ``prev_idx``, -1 if none yet) then ``z`` (symbols s0 ..). Writes the block's pilots
    (global index, unwrapped phase), and every quantum symbol before the latest pilot
    (unrotated symbol, index, interpolated phase). Returns (n_pilots, n_quantum, keep_from,
    unwrap last, unwrap offset, unwrap started); ``keep_from`` is the position in the
    combined stream (pend then z) from which the symbols stay pending.
    """
    n = z.shape[0]
    n_pend = pend.shape[0]
    p0 = (offset - s0) % period
    n_pil = 0
    for p in range(p0, n, period):
        ph = wrapped[n_pil]
        if uw_started:
            uw_offset = _unwrap_step(ph, uw_last, uw_offset)
        else:
            uw_started = True
        uw_last = ph
        pil_idx[n_pil] = s0 + p
        pil_phase[n_pil] = ph + uw_offset
        n_pil += 1
    latest = s0 + p0 + (n_pil - 1) * period if n_pil > 0 else prev_idx
    start = s0 - n_pend  # global index of the combined stream's first symbol
    n_q = 0
    # the quantum symbols between pilot k-1 and pilot k of this block (k = 0: the previous
    # block's last pilot, or none at the start of the stream: hold pilot 0's phase)
    for k in range(n_pil):
        gr = s0 + p0 + k * period
        gl = gr - period
        phr = pil_phase[k]
        has_left = True
        phl = 0.0
        if k > 0:
            phl = pil_phase[k - 1]
        elif prev_idx >= 0:
            phl = prev_phase
        else:
            has_left = False
        slope = (phr - phl) / (np.float64(gr) - np.float64(gl))
        for g in range(max(gl + 1, start), gr):
            i = g - start
            q_out[n_q] = pend[i] if i < n_pend else z[i - n_pend]
            q_idx[n_q] = g
            if has_left:
                q_phase[n_q] = slope * (np.float64(g) - np.float64(gl)) + phl
            else:
                q_phase[n_q] = phr
            n_q += 1
    keep_from = max(0, latest + 1 - start)
    return n_pil, n_q, keep_from, uw_last, uw_offset, uw_started


@nb.njit(cache=True, nogil=True)
def _interp_kernel(
    index: np.ndarray, pilot_index: np.ndarray, pilot_phase: np.ndarray, out: np.ndarray
) -> None:
    """np.interp(index, pilot_index, pilot_phase) into ``out``, for increasing ``index``.

    Same formula as numpy (``slope_j * (x - x_j) + phase_j``, slope_j = dphase / dindex of
    pilot interval j); the nearest pilot's phase is held outside the pilots. At least one
    pilot.
    """
    n_p = pilot_index.shape[0]
    n = index.shape[0]
    if n == 0:
        return
    j = 0
    interpolate = False
    bound = index[0]  # the interval is re-evaluated once x reaches this index
    hold = 0.0
    slope = 0.0
    x0 = 0.0
    for i in range(n):
        x = index[i]
        if x >= bound:
            while j < n_p - 1 and pilot_index[j + 1] <= x:
                j += 1
            if x <= pilot_index[0]:
                interpolate = False
                hold = pilot_phase[0]
                bound = pilot_index[0] + 1
            elif j == n_p - 1:
                interpolate = False
                hold = pilot_phase[n_p - 1]
                bound = index[n - 1] + 1
            else:
                interpolate = True
                x0 = np.float64(pilot_index[j])
                slope = (pilot_phase[j + 1] - pilot_phase[j]) / (
                    np.float64(pilot_index[j + 1]) - x0
                )
                bound = pilot_index[j + 1]
        if interpolate:
            out[i] = slope * (np.float64(x) - x0) + pilot_phase[j]
        else:
            out[i] = hold


# Cody-Waite split of pi/2 (33 + 53 bits): k * _PIO2_HI is exact for |k| < 2**20
_PIO2_HI = 1.5707963267341256e00
_PIO2_LO = 6.077100506506192e-11
_TWO_OVER_PI = 2.0 / math.pi


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _cos_sin(p: float) -> tuple[float, float]:
    """(cos p, sin p) in float64 without a libm call, so loops using it vectorise.

    Quadrant reduction with a Cody-Waite split of pi/2, then Taylor polynomials on
    [-pi/4, pi/4] (truncation < 3e-14). For |p| beyond ~1.6e6 rad the reduction loses
    ~1e-16 * |p| rad.
    """
    k = np.rint(p * _TWO_OVER_PI)
    r = (p - k * _PIO2_HI) - k * _PIO2_LO
    r2 = r * r
    sn = 1.0 / 6227020800.0  # sin: r - r^3/3! + ... - r^15/15! (Horner in r^2)
    sn = sn * r2 - 1.0 / 39916800.0
    sn = sn * r2 + 1.0 / 362880.0
    sn = sn * r2 - 1.0 / 5040.0
    sn = sn * r2 + 1.0 / 120.0
    sn = sn * r2 - 1.0 / 6.0
    sn = r + r * r2 * sn
    cs = -1.0 / 87178291200.0  # cos: 1 - r^2/2! + ... - r^14/14!
    cs = cs * r2 + 1.0 / 479001600.0
    cs = cs * r2 - 1.0 / 3628800.0
    cs = cs * r2 + 1.0 / 40320.0
    cs = cs * r2 - 1.0 / 720.0
    cs = cs * r2 + 1.0 / 24.0
    cs = cs * r2 - 0.5
    cs = 1.0 + r2 * cs
    q = np.int64(k) & 3  # quadrant: (cos, sin) = (c, s), (-s, c), (-c, -s), (s, -c)
    sign_c = 1.0 - 2.0 * (((q + 1) >> 1) & 1)
    sign_s = 1.0 - 2.0 * ((q >> 1) & 1)
    c = sign_c * (sn if q & 1 else cs)
    s = sign_s * (cs if q & 1 else sn)
    return c, s


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
def _rotate_kernel(symf: np.ndarray, phase: np.ndarray, outf: np.ndarray) -> None:
    """out[i] = sym[i] * exp(-j phase[i]) on interleaved float32 views (float64 inside)."""
    for i in range(phase.shape[0]):
        c, s = _cos_sin(phase[i])
        xr = np.float64(symf[2 * i])
        xi = np.float64(symf[2 * i + 1])
        outf[2 * i] = xr * c + xi * s
        outf[2 * i + 1] = xi * c - xr * s


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
def _rotate_inplace_kernel(zf: np.ndarray, phase: np.ndarray) -> None:
    """z[i] *= exp(-j phase[i]) in place (one array argument: no aliasing, vectorised)."""
    for i in range(phase.shape[0]):
        c, s = _cos_sin(phase[i])
        xr = np.float64(zf[2 * i])
        xi = np.float64(zf[2 * i + 1])
        zf[2 * i] = xr * c + xi * s
        zf[2 * i + 1] = xi * c - xr * s


# ---------------------------------------------------------------------------------------------
# Functional building blocks


def pilot_phase(pilots: np.ndarray) -> np.ndarray:
    """Phase atan2(P, X) of pilot symbols (complex), float64 rad in [-pi, pi].

    numpy's ``arctan2`` on float64 components (its SIMD implementation measured ~8x faster
    than a libm call per pilot in a Numba loop); bitwise ``np.angle`` of the same values.
    """
    z = np.asarray(pilots)
    if not np.iscomplexobj(z):
        z = z.astype(np.complex128)
    return np.arctan2(z.imag.astype(np.float64), z.real.astype(np.float64))


@dataclass(frozen=True, eq=False)
class UnwrapState:
    """Streaming unwrap state: the last wrapped phase and the correction accumulated so far."""

    last_rad: float = 0.0
    offset_rad: float = 0.0
    started: bool = False


def unwrap_stream(phase_rad: np.ndarray, state: UnwrapState) -> tuple[np.ndarray, UnwrapState]:
    """Unwrap one block of a phase stream; equals ``np.unwrap`` of the concatenated stream."""
    p = np.ascontiguousarray(phase_rad, dtype=np.float64)
    out = np.empty_like(p)
    last, offset, started = _unwrap_kernel(
        p, out, float(state.last_rad), float(state.offset_rad), bool(state.started)
    )
    return out, UnwrapState(last, offset, started)


def interp_rotate(
    symbols: np.ndarray,
    symbol_index: np.ndarray,
    pilot_index: np.ndarray,
    pilot_phase_rad: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate symbols by minus the pilot phase interpolated (np.interp) at their indices.

    Returns (rotated complex64 symbols, interpolated phase float64 rad). Needs >= 1 pilot.
    """
    q = np.ascontiguousarray(symbols, dtype=np.complex64)
    qi = np.ascontiguousarray(symbol_index, dtype=np.int64)
    pi = np.ascontiguousarray(pilot_index, dtype=np.int64)
    pp = np.ascontiguousarray(pilot_phase_rad, dtype=np.float64)
    if pi.size == 0:
        raise ValueError("interp_rotate: needs at least one pilot")
    ph = np.empty(q.size, dtype=np.float64)
    _interp_kernel(qi, pi, pp, ph)
    return rotate(q, ph), ph


def rotate(symbols: np.ndarray, phase_rad: np.ndarray) -> np.ndarray:
    """``symbols * exp(-j phase_rad)`` as complex64 (float64 internally)."""
    q = np.ascontiguousarray(symbols, dtype=np.complex64)
    ph = np.ascontiguousarray(phase_rad, dtype=np.float64)
    if q.shape != ph.shape or q.ndim != 1:
        raise ValueError(f"rotate: shapes {q.shape} and {ph.shape}, expected equal 1-D")
    out = np.empty_like(q)
    _rotate_kernel(q.view(np.float32), ph, out.view(np.float32))
    return out


# ---------------------------------------------------------------------------------------------
# The per-band pilot stage


@dataclass(frozen=True, eq=False)
class PilotPattern:
    """TDM pilot positions: symbol s is a pilot iff ``s % period == offset``."""

    period: int
    offset: int = 0

    def __post_init__(self) -> None:
        if int(self.period) != self.period or self.period < 1:
            raise ValueError(f"pilot period: got {self.period}, expected an integer >= 1")
        if not 0 <= self.offset < self.period:
            raise ValueError(f"pilot offset: got {self.offset}, expected 0 <= offset < period")


def _empty_c64() -> np.ndarray:
    return np.zeros(0, dtype=np.complex64)


def _empty_i64() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class PhaseState:
    """State of the pilot stage between blocks.

    next_symbol: global index of the next symbol.
    unwrap: streaming unwrap state of the pilot phase.
    last_pilot_index / last_pilot_phase_rad: the latest pilot (index -1: none yet).
    pending: the quantum symbols after the latest pilot (global indices
        ``next_symbol - len(pending)`` .. ``next_symbol - 1``), waiting for the next pilot.
    """

    next_symbol: int = 0
    unwrap: UnwrapState = field(default_factory=UnwrapState)
    last_pilot_index: int = -1
    last_pilot_phase_rad: float = 0.0
    pending: np.ndarray = field(default_factory=_empty_c64)


@dataclass(frozen=True, eq=False)
class PhaseResult:
    """What one block of the pilot stage yields (arrays may be empty).

    pilot_index: global symbol index of each pilot in the block (int64).
    pilot_phase_rad: its unwrapped phase theta + phi (float64 rad).
    pilot_symbols: the pilots themselves (complex64, the band's power and castdown).
    symbol_index: global index of each emitted quantum symbol (int64, increasing).
    symbols: the quantum symbols rotated by exp(-j phase) (complex64).
    symbol_phase_rad: the interpolated phase used for each (float64 rad).
    """

    pilot_index: np.ndarray
    pilot_phase_rad: np.ndarray
    pilot_symbols: np.ndarray
    symbol_index: np.ndarray
    symbols: np.ndarray
    symbol_phase_rad: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {
            "pilot_index": self.pilot_index,
            "pilot_phase_rad": self.pilot_phase_rad,
            "pilot_symbols": self.pilot_symbols,
            "symbol_index": self.symbol_index,
            "symbols": self.symbols,
            "symbol_phase_rad": self.symbol_phase_rad,
        }


def pilot_phase_process(
    symbols: np.ndarray, state: PhaseState, pattern: PilotPattern
) -> tuple[PhaseResult, PhaseState]:
    """Pilot phase, unwrap, interpolation and rotation for one block of symbols of one band.

    ``symbols``: complex symbol-centre samples, the next ``len(symbols)`` symbols of the
    stream (global indices from ``state.next_symbol``).
    """
    z = np.ascontiguousarray(symbols, dtype=np.complex64)
    if z.ndim != 1:
        raise ValueError(f"symbols: got shape {z.shape}, expected 1-D")
    n = z.size
    pend = state.pending
    p0 = (pattern.offset - state.next_symbol) % pattern.period
    pilots = z[p0 :: pattern.period]
    wrapped = pilot_phase(pilots)
    pil_idx = np.empty(wrapped.size, dtype=np.int64)
    pil_phase = np.empty(wrapped.size, dtype=np.float64)
    q = np.empty(pend.size + n, dtype=np.complex64)
    q_idx = np.empty(q.size, dtype=np.int64)
    q_phase = np.empty(q.size, dtype=np.float64)
    n_pil, n_q, keep_from, uw_last, uw_offset, uw_started = _pilot_stage_kernel(
        z,
        state.next_symbol,
        pattern.period,
        pattern.offset,
        pend,
        wrapped,
        state.last_pilot_index,
        state.last_pilot_phase_rad,
        state.unwrap.last_rad,
        state.unwrap.offset_rad,
        state.unwrap.started,
        pil_idx,
        pil_phase,
        q,
        q_idx,
        q_phase,
    )
    q_phase = q_phase[:n_q]
    rotated = q[:n_q]
    _rotate_inplace_kernel(rotated.view(np.float32), q_phase)
    if n_pil:
        last_idx, last_ph = int(pil_idx[n_pil - 1]), float(pil_phase[n_pil - 1])
    else:
        last_idx, last_ph = state.last_pilot_index, state.last_pilot_phase_rad
    if keep_from >= pend.size:
        pending = z[keep_from - pend.size :].copy()
    else:
        pending = np.concatenate([pend[keep_from:], z])
    result = PhaseResult(
        pilot_index=pil_idx[:n_pil],
        pilot_phase_rad=pil_phase[:n_pil],
        pilot_symbols=pilots[:n_pil].copy(),
        symbol_index=q_idx[:n_q],
        symbols=rotated,
        symbol_phase_rad=q_phase,
    )
    new_state = PhaseState(
        next_symbol=state.next_symbol + n,
        unwrap=UnwrapState(uw_last, uw_offset, uw_started),
        last_pilot_index=last_idx,
        last_pilot_phase_rad=last_ph,
        pending=pending,
    )
    return result, new_state


def flush(state: PhaseState) -> tuple[PhaseResult, PhaseState]:
    """End of stream: emit the pending quantum symbols with the last pilot's phase held.

    With no pilot ever seen the phase is unknown: the symbols come out as NaN with phase NaN
    (as ``np.interp`` cannot interpolate without points, the reference gives NaN too).
    """
    n_pend = state.pending.size
    idx = np.arange(state.next_symbol - n_pend, state.next_symbol, dtype=np.int64)
    if state.last_pilot_index >= 0:
        phase = np.full(n_pend, state.last_pilot_phase_rad)
    else:
        phase = np.full(n_pend, np.nan)
    result = PhaseResult(
        pilot_index=_empty_i64(),
        pilot_phase_rad=np.zeros(0),
        pilot_symbols=_empty_c64(),
        symbol_index=idx,
        symbols=rotate(state.pending, phase),
        symbol_phase_rad=phase,
    )
    return result, PhaseState(
        next_symbol=state.next_symbol,
        unwrap=state.unwrap,
        last_pilot_index=state.last_pilot_index,
        last_pilot_phase_rad=state.last_pilot_phase_rad,
    )
