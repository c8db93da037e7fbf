"""ISAQN receiver: the per-node DSP chain of physics.md section 1, streaming, for all nodes.

:class:`ReceiverChain` composes

1-2. :mod:`dsp.ddc`: FDM band separation, coherent demodulation and decimation of every band
     in one pass (frequency-translating FIR, taps from :func:`default_taps`);
     symbol sampling: the DDC's outputs are placed on the symbol centres (the centre of each
     held symbol delayed by the filter's group delay), so with ``decim == samples per symbol``
     every output is a symbol; with a smaller ``decim`` every ``sps / decim``-th is;
3-5. :mod:`dsp.phase`: pilot phase atan2, streaming unwrap, interpolation of the pilot phase
     onto the quantum symbols and their rotation,

with one ``process(block)`` that carries every state, so a capture can be fed in blocks of
any size (and cut anywhere) with the same result as one call.

:func:`synthetic_capture` generates a capture following the signal model of physics.md, block
by block (no whole-capture temporaries), and :func:`reference_chain` is the same chain written
straightforwardly with numpy/scipy (``np.exp`` mixing, ``scipy.signal.lfilter``, slicing,
``np.angle``, ``np.unwrap``, ``np.interp``): what the tests check against and what
``labctl bench isaqn`` compares with.

Units: frequencies in Hz, rates in samples (symbols) per second, phases in rad, sample and
symbol indices count from the start of the stream. Symbol s of every node occupies raw samples
``[t0 + s * sps, t0 + (s + 1) * sps)`` (``t0 = symbol_start_sample``, ``sps = fs / R``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.signal

from dsp.ddc import DDCConfig, DDCState, Method, ddc_process, worker_pool
from dsp.phase import PhaseResult, PhaseState, PilotPattern, flush, pilot_phase_process

__all__ = [
    "ReceiverChain",
    "SyntheticCapture",
    "default_taps",
    "reference_chain",
    "reference_ddc",
    "samples_per_symbol",
    "symbol_centre_sample",
    "synthetic_capture",
]

PhaseSpec = None | float | Callable[[np.ndarray], np.ndarray]
BandResult = dict[str, np.ndarray]


def samples_per_symbol(fs_hz: float, symbol_rate_hz: float) -> int:
    """fs / R, which must be an integer (the AWG holds each symbol for whole samples)."""
    sps = fs_hz / symbol_rate_hz
    if not (sps >= 1 and abs(sps - round(sps)) < 1e-9 * sps):
        raise ValueError(
            f"fs_hz / symbol_rate_hz: got {fs_hz} / {symbol_rate_hz} = {sps}, expected an integer"
        )
    return round(sps)


def default_taps(fs_hz: float, symbol_rate_hz: float, n_taps: int | None = None) -> np.ndarray:
    """Low-pass prototype for the DDC: ``firwin(n_taps, 0.8 R, window=('kaiser', 6), fs)``.

    Default length 4 * sps (80 taps at 1 GS/s, 50 MBd). The Kaiser beta 6 gives ~63 dB
    stopband; the transition is ~0.97 R wide around 0.8 R, so the main lobe of the node's own
    held symbols (|f| < R/2) passes and a neighbour one band spacing (2 R in the reference
    build) away is rejected by > 60 dB (tests/test_dsp_ddc.py measures it).
    """
    sps = samples_per_symbol(fs_hz, symbol_rate_hz)
    n = 4 * sps if n_taps is None else int(n_taps)
    return scipy.signal.firwin(n, 0.8 * symbol_rate_hz, window=("kaiser", 6.0), fs=fs_hz)


def symbol_centre_sample(symbol_start_sample: int, sps: int, n_taps: int) -> int:
    """Raw sample at which the filtered symbol 0 is at its centre.

    Centre of the held symbol (sps - 1)/2 after its start, plus the FIR group delay
    (n_taps - 1)/2; rounded down when that is a half sample.
    """
    return int(symbol_start_sample) + (sps - 1 + n_taps - 1) // 2


def _pattern(pilot: PilotPattern | int) -> PilotPattern:
    return pilot if isinstance(pilot, PilotPattern) else PilotPattern(int(pilot))


class ReceiverChain:
    """Streaming receiver: raw complex64 blocks in, per-band pilot phase and symbols out.

    Parameters
    ----------
    fs_hz, carriers_hz, symbol_rate_hz: raw sample rate, node carriers, symbol rate R.
    pilot: :class:`PilotPattern` or its period (pilots at symbols 0, K, 2K, ...), or one
        pattern per band.
    taps: DDC low-pass prototype (default :func:`default_taps`), or one row per band (e.g.
        matched filters with each node's fractional delay, see :mod:`dsp.pulse`).
    decim: DDC decimation (default fs / R: one output per symbol); must divide fs / R.
    symbol_start_sample: raw sample at which symbol 0 starts.
    method: DDC method (``"auto"``, ``"ftf"``, ``"pfb"``, see :mod:`dsp.ddc`).
    threads: worker threads: the DDC splits each block's outputs, the pilot stage runs the
        bands in parallel (bitwise the same result for any value).
    first_output_sample: raw sample of the first symbol-centre output; default: from
        ``symbol_start_sample`` and the taps' group delay (:func:`symbol_centre_sample`).

    ``process(block)`` returns ``{band: {"pilot_index", "pilot_phase_rad", "symbol_index",
    "symbols", "symbol_phase_rad"}}`` for this block (see :class:`dsp.phase.PhaseResult`;
    quantum symbols are emitted once the next pilot has arrived); ``flush()`` emits what is
    left at the end of a stream.
    """

    def __init__(
        self,
        fs_hz: float,
        carriers_hz: Sequence[float],
        symbol_rate_hz: float,
        pilot: PilotPattern | int | Sequence[PilotPattern],
        *,
        taps: np.ndarray | None = None,
        decim: int | None = None,
        symbol_start_sample: int = 0,
        method: Method = "auto",
        threads: int = 1,
        first_output_sample: int | None = None,
    ) -> None:
        self.sps = samples_per_symbol(fs_hz, symbol_rate_hz)
        self.symbol_rate_hz = float(symbol_rate_hz)
        n_bands = len(carriers_hz)
        if isinstance(pilot, PilotPattern | int):
            self.patterns = [_pattern(pilot)] * n_bands
        else:
            self.patterns = [_pattern(p) for p in pilot]
            if len(self.patterns) != n_bands:
                raise ValueError(f"pilot: got {len(self.patterns)} patterns for {n_bands} bands")
        self.pattern = self.patterns[0]
        taps = default_taps(fs_hz, symbol_rate_hz) if taps is None else np.asarray(taps)
        decim = self.sps if decim is None else int(decim)
        if decim < 1 or self.sps % decim:
            raise ValueError(f"decim: got {decim}, expected a divisor of fs/R = {self.sps}")
        self.outputs_per_symbol = self.sps // decim
        self.ddc_config = DDCConfig(fs_hz, tuple(carriers_hz), taps, decim, method)
        self.symbol_start_sample = int(symbol_start_sample)
        if first_output_sample is None:
            first_output_sample = symbol_centre_sample(
                symbol_start_sample, self.sps, taps.shape[-1]
            )
        self.first_output_sample = int(first_output_sample)
        self.threads = int(threads)
        self._scratch = np.zeros(0, dtype=np.complex64)
        self.reset()

    @property
    def n_bands(self) -> int:
        return self.ddc_config.n_bands

    def reset(self) -> None:
        """Forget everything: the next block is the start of a stream."""
        self.ddc_state = DDCState.initial(self.ddc_config, self.first_output_sample)
        self.phase_states = [PhaseState() for _ in range(self.n_bands)]

    def symbol_time_s(self, symbol_index: np.ndarray) -> np.ndarray:
        """Time (s from the first raw sample) of the centre of the given symbols."""
        s = np.asarray(symbol_index, dtype=np.float64)
        centre = self.symbol_start_sample + s * self.sps + (self.sps - 1) / 2
        return centre / self.ddc_config.fs_hz

    def process(self, block: np.ndarray) -> dict[int, BandResult]:
        """Run one block of raw complex64 samples through the chain."""
        k = self.outputs_per_symbol
        first = (-self.ddc_state.outputs_out) % k
        need = self.n_bands * self.ddc_state.outputs_for(len(block), self.ddc_config.decim)
        if self._scratch.size < need:  # one reused buffer: no fresh pages every block
            self._scratch = np.zeros(need, dtype=np.complex64)
        baseband, self.ddc_state = ddc_process(
            block, self.ddc_state, self.ddc_config, threads=self.threads, out=self._scratch
        )

        def band(b: int) -> tuple[PhaseResult, PhaseState]:
            symbols = baseband[b, first::k] if k > 1 else baseband[b]
            return pilot_phase_process(symbols, self.phase_states[b], self.patterns[b])

        if self.threads > 1 and self.n_bands > 1:
            results = list(worker_pool(self.threads).map(band, range(self.n_bands)))
        else:
            results = [band(b) for b in range(self.n_bands)]
        out: dict[int, BandResult] = {}
        for b, (result, state) in enumerate(results):
            self.phase_states[b] = state
            out[b] = result.as_dict()
        return out

    def flush(self) -> dict[int, BandResult]:
        """End of stream: the quantum symbols after the last pilot (last pilot phase held)."""
        out: dict[int, BandResult] = {}
        for b in range(self.n_bands):
            result, self.phase_states[b] = flush(self.phase_states[b])
            out[b] = result.as_dict()
        return out

    def run(self, capture: np.ndarray, block_samples: int = 1 << 20) -> dict[int, BandResult]:
        """Whole capture in blocks (views, no copy) plus flush; results concatenated per band."""
        parts: list[dict[int, BandResult]] = []
        for start in range(0, len(capture), block_samples):
            parts.append(self.process(capture[start : start + block_samples]))
        parts.append(self.flush())
        return concat_results(parts)


def concat_results(parts: Sequence[dict[int, BandResult]]) -> dict[int, BandResult]:
    """Concatenate per-block results band by band and key by key."""
    if not parts:
        return {}
    return {
        b: {key: np.concatenate([p[b][key] for p in parts]) for key in parts[0][b]}
        for b in parts[0]
    }


# ---------------------------------------------------------------------------------------------
# Synthetic capture (physics.md section 1, signal model at the receiver)


@dataclass(frozen=True, eq=False)
class SyntheticCapture:
    """A generated capture and its ground truth.

    samples: complex64 raw I+jQ at fs_hz.
    symbols: (n_nodes, n_symbols) complex64 transmitted a_i = x + jp (pilots included).
    pattern: pilot positions; phases: phase spec per node (see :func:`synthetic_capture`).
    """

    samples: np.ndarray
    symbols: np.ndarray
    fs_hz: float
    carriers_hz: tuple[float, ...]
    symbol_rate_hz: float
    pattern: PilotPattern
    phases: tuple[PhaseSpec, ...]
    symbol_start_sample: int

    def phase_rad(self, node: int, t_s: np.ndarray) -> np.ndarray:
        """theta_i + phi_i(t) of a node at times t (s)."""
        return _eval_phase(self.phases[node], np.asarray(t_s, dtype=np.float64))

    def symbol_time_s(self, symbol_index: np.ndarray) -> np.ndarray:
        """Time of the centre of the given symbols (s)."""
        sps = samples_per_symbol(self.fs_hz, self.symbol_rate_hz)
        s = np.asarray(symbol_index, dtype=np.float64)
        return (self.symbol_start_sample + s * sps + (sps - 1) / 2) / self.fs_hz


def _eval_phase(spec: PhaseSpec, t: np.ndarray) -> np.ndarray:
    if spec is None:
        return np.zeros_like(t)
    if callable(spec):
        return np.broadcast_to(np.asarray(spec(t), dtype=np.float64), t.shape)
    return np.full_like(t, float(spec))


def synthetic_capture(
    n_samples: int,
    fs_hz: float,
    carriers_hz: Sequence[float],
    symbol_rate_hz: float,
    pilot_period: int | PilotPattern,
    phases: Sequence[PhaseSpec] | None,
    rng: np.random.Generator,
    *,
    pilot_amplitude: float = 20.0,
    va_snu: float = 12.0,
    gains: Sequence[float] | None = None,
    noise_std: float = 1.0,
    symbol_start_sample: int = 0,
    block_samples: int = 1 << 16,
    out: np.ndarray | None = None,
) -> SyntheticCapture:
    """Raw receiver samples following physics.md's signal model at the receiver:

        r[n] = sum_i sqrt(g_i) a_i(t_n) exp(j (2 pi f_i t_n + phase_i(t_n))) + w[n]

    - a_i: node i's symbols held for one symbol period (the AWG's zero-order hold, rectangular
      pulse); quantum symbols x, p i.i.d. N(0, va_snu); pilots (TDM, ``pilot_period`` or a
      :class:`PilotPattern`) x = ``pilot_amplitude``, p = 0. Before ``symbol_start_sample``
      the nodes send nothing.
    - phase_i(t) = theta_i + phi_i(t): ``phases[i]`` is None (0), a constant (rad) or a
      callable t_s -> rad (vectorised), e.g. ``lambda t: 0.3 + 890 * np.sin(2 pi 1e3 t)``.
    - g_i: power gains (default 1); w: complex white Gaussian noise, ``noise_std`` per
      quadrature per raw sample (the DDC filter keeps a fraction sum(h^2) of its power,
      ~0.08 for :func:`default_taps`).

    The carrier phase 2 pi f_i n / fs is computed as 2 pi frac(f_i n / fs) in float64 (exact
    for n < 2**53 / f_i * fs rounding). Generated ``block_samples`` at a time into ``out``
    (complex64, allocated if None): no temporary larger than a block.
    """
    n_samples = int(n_samples)
    sps = samples_per_symbol(fs_hz, symbol_rate_hz)
    pattern = _pattern(pilot_period)
    carriers = tuple(float(f) for f in carriers_hz)
    n_nodes = len(carriers)
    phase_specs: tuple[PhaseSpec, ...] = tuple(phases) if phases is not None else (None,) * n_nodes
    if len(phase_specs) != n_nodes:
        raise ValueError(f"phases: got {len(phase_specs)} entries, expected {n_nodes}")
    amp = np.sqrt(np.ones(n_nodes) if gains is None else np.asarray(gains, dtype=np.float64))
    t0 = int(symbol_start_sample)
    n_symbols = max(0, -(-(n_samples - t0) // sps))
    symbols = np.empty((n_nodes, n_symbols), dtype=np.complex64)
    is_pilot = (np.arange(n_symbols) - pattern.offset) % pattern.period == 0
    sigma = math.sqrt(va_snu)
    for i in range(n_nodes):
        q = rng.standard_normal((2, n_symbols)) * sigma
        symbols[i] = np.where(is_pilot, pilot_amplitude + 0j, q[0] + 1j * q[1])
    if out is None:
        out = np.empty(n_samples, dtype=np.complex64)
    elif out.shape != (n_samples,) or out.dtype != np.complex64:
        raise ValueError("out: expected a complex64 array of n_samples")
    for start in range(0, n_samples, block_samples):
        stop = min(n_samples, start + block_samples)
        n = np.arange(start, stop, dtype=np.int64)
        t = n / fs_hz
        acc = noise_std * (
            rng.standard_normal(stop - start) + 1j * rng.standard_normal(stop - start)
        )
        s_idx = (n - t0) // sps
        active = s_idx >= 0
        s_idx = np.clip(s_idx, 0, max(n_symbols - 1, 0))
        for i, f in enumerate(carriers):
            a = np.where(active, symbols[i, s_idx], 0) if n_symbols else 0
            cycles = np.mod(n * (f / fs_hz), 1.0)
            ph = 2 * np.pi * cycles + _eval_phase(phase_specs[i], t)
            acc += amp[i] * a * np.exp(1j * ph)
        out[start:stop] = acc
    return SyntheticCapture(
        samples=out,
        symbols=symbols,
        fs_hz=float(fs_hz),
        carriers_hz=carriers,
        symbol_rate_hz=float(symbol_rate_hz),
        pattern=pattern,
        phases=phase_specs,
        symbol_start_sample=t0,
    )


# ---------------------------------------------------------------------------------------------
# Straightforward numpy/scipy reference of the same chain


def reference_ddc(
    capture: np.ndarray,
    fs_hz: float,
    carriers_hz: Sequence[float],
    taps: np.ndarray,
    decim: int,
    first_output_sample: int = 0,
    *,
    method: str = "lfilter",
) -> np.ndarray:
    """Mix with np.exp, low-pass with scipy, keep every decim-th sample from the given one.

    ``method="lfilter"``: ``lfilter(taps, 1, x * exp(-j 2 pi f n / fs))[first::decim]``
    (every sample filtered, then sliced). ``method="upfirdn"``: the same outputs from
    ``scipy.signal.upfirdn(taps, ., down=decim)`` (polyphase: only the kept outputs),
    the strongest plain-scipy way. Returns complex128 (n_bands, n_out).
    """
    x = np.asarray(capture)
    n = np.arange(x.size)
    rows = []
    for f in carriers_hz:
        mixed = x * np.exp(-2j * np.pi * (f / fs_hz) * n)
        if method == "lfilter":
            rows.append(scipy.signal.lfilter(taps, 1.0, mixed)[first_output_sample::decim])
        elif method == "upfirdn":
            r = first_output_sample % decim
            pad = np.concatenate([np.zeros(decim - r, dtype=mixed.dtype), mixed])
            y = scipy.signal.upfirdn(taps, pad, up=1, down=decim)
            k0 = first_output_sample // decim + 1
            n_out = len(range(first_output_sample, x.size, decim))
            rows.append(y[k0 : k0 + n_out])
        else:
            raise ValueError(f"method: got {method!r}, expected 'lfilter' or 'upfirdn'")
    return np.array(rows)


def reference_chain(
    capture: np.ndarray,
    fs_hz: float,
    carriers_hz: Sequence[float],
    symbol_rate_hz: float,
    pilot: PilotPattern | int,
    *,
    taps: np.ndarray | None = None,
    symbol_start_sample: int = 0,
    ddc_method: str = "lfilter",
) -> dict[int, BandResult]:
    """The receiver chain on a whole capture with plain numpy/scipy (complex128).

    Per band: mix, ``lfilter``, take the symbol centres, ``np.angle`` of the pilots,
    ``np.unwrap``, ``np.interp`` onto the quantum symbols, rotate by ``exp(-j phase)``.
    Same keys as :meth:`ReceiverChain.process` (and its concatenated stream plus flush).
    """
    sps = samples_per_symbol(fs_hz, symbol_rate_hz)
    pattern = _pattern(pilot)
    taps = default_taps(fs_hz, symbol_rate_hz) if taps is None else np.asarray(taps)
    first = symbol_centre_sample(symbol_start_sample, sps, taps.size)
    base = reference_ddc(capture, fs_hz, carriers_hz, taps, sps, first, method=ddc_method)
    out: dict[int, BandResult] = {}
    for b in range(len(carriers_hz)):
        sym = base[b]
        idx = np.arange(sym.size)
        is_pilot = (idx - pattern.offset) % pattern.period == 0
        pilot_phase = np.unwrap(np.angle(sym[is_pilot]))
        q_idx = idx[~is_pilot]
        if pilot_phase.size:
            q_phase = np.interp(q_idx, idx[is_pilot], pilot_phase)
        else:
            q_phase = np.full(q_idx.size, np.nan)
        out[b] = {
            "pilot_index": idx[is_pilot],
            "pilot_phase_rad": pilot_phase,
            "pilot_symbols": sym[is_pilot],
            "symbol_index": q_idx,
            "symbols": sym[~is_pilot] * np.exp(-1j * q_phase),
            "symbol_phase_rad": q_phase,
        }
    return out
