"""Digital twin of the ISAQN optical network (physics.md section 1), behind the instruments.

The twin is the light between the instruments: it reads what each child node's AWG channels
output (the IQ-modulator drive, carrier included, and the PZT drive), propagates it through
the node's fibre and the splitter back to the center node, beats it with the local oscillator
in the integrated coherent receiver (ICR) and presents the ICR's I and Q outputs as voltages
that the simulated scope digitises (wire ``"scope1:1" = "icr:1"``, ``"scope1:2" = "icr:2"``).
Nothing reaches the scope that was not uploaded to an AWG: turn a node's AWG output off and
its band is empty; turn the center laser's emission off and only electronic noise is left.

Units (per quadrature, shot-noise units)
-----------------------------------------
Inside the twin a receiver sample is normalised so that the shot noise has variance 1 per
quadrature per sample (white over the scope's band). A node symbol of quadrature amplitude a
held for one symbol period 1/R (the mode) and detected with a matched filter of noise gain
1/sps (sps = fs/R) must come out as sqrt(eta T / 2) a over a shot noise of 1 SNU (heterodyne,
physics.md and dsp/cvqkd.py), so node k's field enters a receiver sample with amplitude

    A_k = sqrt(eta T_k / 2) * sqrt(R_k / fs)

times its drive in quadrature units: ``quadrature_per_v`` (the node modulator's response, a
property of the node) times the AWG voltages ``V_I + j V_Q`` read at the node's time. So

    r(t) = L [ sum_k A_k (c_k (V_I + j V_Q)(t - tau_k) + e_k(t - tau_k)) exp(j phi_k(t))
               + n_shot(t) ] + n_el(t)

- L = sqrt(P_laser / P_nominal) while the center laser emits (0 when it does not): signal and
  shot noise scale with the LO field, the electronic noise (variance v_el) does not.
- tau_k = L_k n / c: the fibre delay of the return trip (the modulation happens at the node).
- T_k = 10^(-alpha L_k / 10) / N * 10^(-voa_db / 10): fibre loss, the 1xN splitter on the way
  back and the node's VOA.
- e_k: excess noise: Gaussian noise the node adds to every symbol while it transmits (an
  AWG output of its modulator on; none in a signal-off calibration), xi_k per quadrature
  (referred to the channel input), pulse-shaped like the symbols (root-raised cosine at the
  node's symbol rate, symbols centred on multiples of 1/R from virtual time 0, the same grid as
  an arb played from time 0) and on the node's carrier: after a matched filter it is exactly
  xi_k per symbol, which is what the estimator measures.
- phi_k(t) = theta_k + [phi_L(t) - phi_L(t - 2 tau_k)] + d_k(t) + pzt_k(t - tau_k)
  + events_k(t - tau_k): a fixed offset; the center laser's phase noise (Wiener, linewidth
  dnu: variance 2 pi dnu dt) seen through the round-trip delay (LO and signal come from the
  same laser); a slow thermal drift of the node's fibre (Wiener, ``drift_rad2_per_s``); the
  PZT: ``pzt_rad_per_v`` times the AWG voltage on the node's PZT port (the light crosses the
  wound fibre once, on the way back; the PZT's hysteresis is not modelled); and environmental
  vibration events reaching node k at t_e + |node_k - source| / v.
- n_shot, n_el: complex white Gaussian, variance 1 and v_el per quadrature per sample.

The ICR output is ``icr_v_per_unit * r`` volts (I on output 1, Q on output 2). The scope's own
input noise and ADC then apply (drivers/sim/keysight_infiniium.py).

Ground truth for tests: :meth:`IsaqnNetwork.phase_rad`, :meth:`vibration_rad`,
:meth:`transmittance`, :attr:`NodePhysics.xi_snu`, :meth:`fibre_delay_s`,
:meth:`event_arrival_s`.

Random processes are generated in fixed blocks from seeds derived from (bench seed, node,
process, block), so a record's noise does not depend on how the time axis was cut into
records, and the Wiener processes are generated forward from the first time asked for.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numba as nb
import numpy as np

if TYPE_CHECKING:
    from drivers.sim.bench import BenchModel

SPEED_OF_LIGHT_M_S = 299_792_458.0
_BLOCK = 1 << 16
_RRC_OVERSAMPLE = 256


def rrc_pulse(t_symbols: np.ndarray, beta: float) -> np.ndarray:
    """Root-raised-cosine pulse at times in symbol periods, energy 1 per symbol period.

    The node's own pulse, as the twin's physics (drivers/ does not import dsp/; the receiver's
    copy is :func:`dsp.pulse.rrc_pulse`, and tests/test_isaqn_twin.py runs one against the other).

    Normalised so that sum over one sample grid of p(n / sps)**2 = sps (a unit symbol carries
    the energy of a rectangular pulse held for one symbol); p(0) = 1 - beta + 4 beta / pi.
    """
    t = np.asarray(t_symbols, dtype=np.float64)
    out = np.empty_like(t)
    b = float(beta)
    at0 = np.abs(t) < 1e-12
    sing = np.abs(np.abs(t) - 1.0 / (4.0 * b)) < 1e-9 if b > 0 else np.zeros_like(t, dtype=bool)
    reg = ~(at0 | sing)
    tr = t[reg]
    num = np.sin(np.pi * tr * (1 - b)) + 4 * b * tr * np.cos(np.pi * tr * (1 + b))
    den = np.pi * tr * (1 - (4 * b * tr) ** 2)
    out[reg] = num / den
    out[at0] = 1 - b + 4 * b / np.pi
    if b > 0:
        out[sing] = (b / math.sqrt(2)) * (
            (1 + 2 / np.pi) * math.sin(np.pi / (4 * b))
            + (1 - 2 / np.pi) * math.cos(np.pi / (4 * b))
        )
    return out


@nb.njit(cache=True, nogil=True)
def _shaped_noise_kernel(
    x_sym: np.ndarray,
    symbols: np.ndarray,
    first: int,
    table: np.ndarray,
    half: int,
    over: int,
    out: np.ndarray,
) -> None:
    """out[m] = sum_s symbols[s - first] p(x_sym[m] - s) over the pulse's span (tabulated).

    The real pulse weight scales both parts of a symbol: summed as two real accumulators (the
    values of a complex-by-real product, without its multiplications by a zero imaginary part).
    """
    n_sym = symbols.size
    for m in range(x_sym.size):
        x = x_sym[m]
        s0 = math.floor(x)
        acc_re = 0.0
        acc_im = 0.0
        for s in range(s0 - half + 1, s0 + half + 1):
            u = (x - s + half) * over
            j = int(u)
            if j < 0 or j + 1 >= table.size:
                continue
            w = u - j
            idx = s - first
            if 0 <= idx < n_sym:
                p = table[j] * (1.0 - w) + table[j + 1] * w
                sym = symbols[idx]
                acc_re += sym.real * p
                acc_im += sym.imag * p
        out[m] = complex(acc_re, acc_im)


@nb.njit(cache=True, nogil=True)
def _cis_kernel(angle_rad: np.ndarray, out: np.ndarray) -> None:
    """out[m] = cos(angle[m]) + j sin(angle[m]) = exp(j angle[m]).

    What ``numpy.exp(1j * angle)`` returns (its complex exp of a zero real part is cos + j sin
    of the imaginary part, exp(0) = 1 exactly), at half its cost: no complex argument array,
    no exp of the real part.
    """
    for m in range(angle_rad.size):
        a = angle_rad[m]
        out[m] = complex(math.cos(a), math.sin(a))


def _cis(angle_rad: np.ndarray) -> np.ndarray:
    """exp(j angle) for a float64 array (see :func:`_cis_kernel`)."""
    a = np.ascontiguousarray(angle_rad, dtype=np.float64)
    out = np.empty(a.shape, dtype=np.complex128)
    _cis_kernel(a.ravel(), out.ravel())
    return out


class _BlockNormals:
    """Standard normal draws addressed by index, generated in blocks from derived seeds."""

    def __init__(self, seed: int, key: Sequence[int], complex_valued: bool = False) -> None:
        self.seed = int(seed)
        self.key = tuple(int(k) for k in key)
        self.complex_valued = complex_valued
        self._cache: dict[int, np.ndarray] = {}

    def _block(self, b: int) -> np.ndarray:
        block = self._cache.get(b)
        if block is None:
            u = b + (1 << 40)  # block indices may be negative; seeds may not
            rng = np.random.default_rng([self.seed, *self.key, u & 0xFFFFFFFF, u >> 32])
            if self.complex_valued:
                block = rng.standard_normal(_BLOCK) + 1j * rng.standard_normal(_BLOCK)
            else:
                block = rng.standard_normal(_BLOCK)
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[b] = block
        return block

    def values(self, i0: int, i1: int) -> np.ndarray:
        """Draws i0 .. i1-1 (i0 may be negative)."""
        b0, b1 = i0 // _BLOCK, (i1 - 1) // _BLOCK
        parts = [self._block(b) for b in range(b0, b1 + 1)]
        joined = np.concatenate(parts) if len(parts) > 1 else parts[0]
        start = i0 - b0 * _BLOCK
        return joined[start : start + (i1 - i0)]


@nb.njit(cache=True, nogil=True)
def _interp_unit_grid(x: np.ndarray, i0: int, values: np.ndarray, out: np.ndarray) -> None:
    """out[m] = values interpolated at x[m], values[j] sitting at the integer i0 + j.

    The arithmetic of :func:`numpy.interp` on the grid ``i0 + arange(values.size)`` (numpy's
    ``numpy/_core/src/multiarray/compiled_base.c``: ``slope * (x - xp[j]) + fp[j]``, exactly
    ``fp[j]`` on a grid point, ``fp[-1]`` at and beyond the last point, ``fp[0]`` before the
    first), so the results are bit-identical; but the bracketing index is ``floor(x) - i0``
    instead of a binary search and no grid array is built (the grid spacing 1 makes numpy's
    ``/ (xp[j+1] - xp[j])`` exact).
    """
    last = values.size - 1
    for m in range(x.size):
        xv = x[m]
        xf = math.floor(xv)
        j = int(xf) - i0
        if j >= last:
            out[m] = values[last]
        elif j < 0:  # trimmed while this request was served (one request > 2 keep long)
            out[m] = values[0]
        elif xv == xf:
            out[m] = values[j]
        else:
            out[m] = (values[j + 1] - values[j]) * (xv - xf) + values[j]


class _Wiener:
    """A Wiener process on a grid of step dt_s: W(t) with variance ``rate`` * t, interpolated.

    Generated forward from the first time requested (its value there is ``start_rad``); history
    older than ``keep_s`` before the latest request is dropped. The values live in a buffer
    with room to grow (appending does not copy the history; it is moved down only when the
    buffer's end is reached), and each extension is ``last + cumsum(steps)`` of exactly the
    steps asked for, so the values do not depend on the buffer's layout.
    """

    def __init__(
        self,
        normals: _BlockNormals,
        rate_per_s: float,
        dt_s: float,
        keep_s: float,
        start_rad: float = 0.0,
    ) -> None:
        self.normals = normals
        self.sigma = math.sqrt(max(rate_per_s, 0.0) * dt_s)
        self.dt_s = dt_s
        self.keep = max(4, math.ceil(keep_s / dt_s) + 4)
        self.start_rad = start_rad
        self._i0: int | None = None  # grid index of values[0]
        self._buf = np.zeros(0)  # values are _buf[_start : _start + _size]
        self._start = 0
        self._size = 0

    @property
    def _values(self) -> np.ndarray:
        """The kept values, values[0] at grid index ``_i0`` (a view of the buffer)."""
        return self._buf[self._start : self._start + self._size]

    def _append(self, new: np.ndarray) -> None:
        m = new.size
        if self._start + self._size + m > self._buf.size:
            # history kept at most 4 keep (+ one extension): room for 6 keep moves it rarely
            capacity = max(6 * self.keep, self._size + m)
            if capacity > self._buf.size:
                buf = np.empty(capacity)
                buf[: self._size] = self._values
                self._buf = buf
            else:
                self._buf[: self._size] = self._values.copy()
            self._start = 0
        self._buf[self._start + self._size : self._start + self._size + m] = new
        self._size += m

    def _extend_to(self, i_hi: int) -> None:
        assert self._i0 is not None
        have = self._i0 + self._size
        if i_hi < have:
            return
        steps = self.normals.values(have, i_hi + 1) * self.sigma
        last = self._buf[self._start + self._size - 1] if self._size else self.start_rad
        self._append(last + np.cumsum(steps))
        if self._size > 4 * self.keep:
            drop = self._size - 2 * self.keep
            self._start += drop
            self._size -= drop
            self._i0 += drop

    def at(self, t_s: np.ndarray) -> np.ndarray:
        t = np.asarray(t_s, dtype=np.float64)
        if t.size == 0:
            return np.zeros(0)
        if self.sigma == 0.0:
            return np.full(t.shape, self.start_rad)
        x = t / self.dt_s
        lo = math.floor(float(np.min(x)))
        hi = math.floor(float(np.max(x))) + 1
        if self._i0 is None:  # start far enough back for the round-trip delays
            self._i0 = lo - self.keep // 2
            self._append(np.array([self.start_rad]))
        if lo < self._i0:
            raise ValueError(
                f"the twin's phase history before t = {self._i0 * self.dt_s:.6g} s is gone "
                f"(asked for {lo * self.dt_s:.6g} s)"
            )
        self._extend_to(hi)
        out = np.empty(x.shape, dtype=np.float64)
        _interp_unit_grid(np.ascontiguousarray(x).ravel(), self._i0, self._values, out.ravel())
        return out


@dataclass(frozen=True)
class VibrationEvent:
    """A vibration from a point source: a Hann-windowed sine burst travelling at speed v.

    Reaches a node at distance d at ``t_s + d / speed_m_s``; its phase there is
    ``amplitude_rad * hann(u) * sin(2 pi f u)`` for u in [0, cycles / f).
    """

    x_m: float
    y_m: float
    t_s: float
    freq_hz: float
    cycles: float
    amplitude_rad: float

    def waveform_rad(self, u_s: np.ndarray) -> np.ndarray:
        """The burst at times ``u_s`` since its arrival (0 outside [0, cycles / f)).

        Evaluated only inside the burst (a record mostly misses it): the same expression, in
        the same order, as over the whole array.
        """
        u = np.asarray(u_s, dtype=np.float64)
        dur = self.cycles / self.freq_hz
        out = np.zeros(u.shape, dtype=np.float64)
        if u.size == 0 or float(np.max(u)) < 0 or float(np.min(u)) >= dur:
            return out
        inside = (u >= 0) & (u < dur)
        ui = u[inside]
        w = 0.5 - 0.5 * np.cos(2 * np.pi * ui / dur)
        out[inside] = self.amplitude_rad * w * np.sin(2 * np.pi * self.freq_hz * ui)
        return out


@dataclass(frozen=True)
class NodePhysics:
    """One child node as the twin sees it (truth, not what the operator knows)."""

    name: str
    carrier_hz: float
    symbol_rate_hz: float
    rolloff: float
    drive_i: tuple[str, int]
    drive_q: tuple[str, int]
    quadrature_per_v: float
    fibre_m: float
    x_m: float = 0.0
    y_m: float = 0.0
    pzt: tuple[str, int] | None = None
    pzt_rad_per_v: float = 0.0
    xi_snu: float = 0.0
    voa_db: float = 0.0
    phase_offset_rad: float = 0.0
    drift_rad2_per_s: float = 0.0


@dataclass(frozen=True)
class NetworkPhysics:
    """The center node, the shared optics and the child nodes."""

    nodes: tuple[NodePhysics, ...]
    laser: str
    laser_nominal_mw: float = 1.0
    eta: float = 0.42
    v_el_snu: float = 0.18
    linewidth_hz: float = 100.0
    alpha_db_per_km: float = 0.2
    splitter_ports: int = 8
    fibre_index: float = 1.468
    wave_speed_m_s: float = 6000.0
    icr_v_per_unit: float = 0.02
    pulse_span_symbols: int = 16
    events: tuple[VibrationEvent, ...] = field(default_factory=tuple)


class IsaqnNetwork:
    """The optical network element of a simulated bench; outputs 1 (I) and 2 (Q) of the ICR."""

    def __init__(self, name: str, bench: BenchModel, physics: NetworkPhysics) -> None:
        self.name = name
        self.bench = bench
        self.physics = physics
        self.lock = threading.Lock()
        seed = bench.seed
        max_delay_s = max((self.fibre_delay_s(k) for k in range(len(physics.nodes))), default=0)
        keep_s = 2 * max_delay_s + 1.0
        self._laser = _Wiener(
            _BlockNormals(seed, (101,)), 2 * math.pi * physics.linewidth_hz, 1e-6, keep_s
        )
        self._drift = [
            _Wiener(_BlockNormals(seed, (102, k)), node.drift_rad2_per_s, 1e-3, keep_s)
            for k, node in enumerate(physics.nodes)
        ]
        self._excess = [
            _BlockNormals(seed, (103, k), complex_valued=True) for k in range(len(physics.nodes))
        ]
        self._shot = _BlockNormals(seed, (104,), complex_valued=True)
        self._electronic = _BlockNormals(seed, (105,), complex_valued=True)
        half = physics.pulse_span_symbols // 2
        self._pulse_half = half
        self._pulses = {}
        for node in physics.nodes:
            if node.rolloff not in self._pulses:
                grid = np.arange(2 * half * _RRC_OVERSAMPLE + 2) / _RRC_OVERSAMPLE - half
                self._pulses[node.rolloff] = rrc_pulse(grid, node.rolloff)
        self._cache_key: tuple[float, float, int] | None = None
        self._cache: np.ndarray = np.zeros(0, dtype=np.complex128)

    # -- truth ---------------------------------------------------------------------------
    def node_index(self, node: int | str) -> int:
        if isinstance(node, str):
            for k, n in enumerate(self.physics.nodes):
                if n.name == node:
                    return k
            raise KeyError(f"no node {node!r} in the twin")
        return int(node)

    def fibre_delay_s(self, node: int | str) -> float:
        """tau_k = L_k n / c (one way)."""
        n = self.physics.nodes[self.node_index(node)]
        return n.fibre_m * self.physics.fibre_index / SPEED_OF_LIGHT_M_S

    def transmittance(self, node: int | str) -> float:
        """T_k: fibre loss, the 1xN splitter on the way back, the node's VOA."""
        n = self.physics.nodes[self.node_index(node)]
        p = self.physics
        fibre_db = p.alpha_db_per_km * n.fibre_m / 1000.0
        return 10 ** (-(fibre_db + n.voa_db) / 10.0) / p.splitter_ports

    def event_arrival_s(self, node: int | str, event: int = 0) -> float:
        """When event ``event`` reaches the node (not yet the center: add fibre_delay_s)."""
        n = self.physics.nodes[self.node_index(node)]
        e = self.physics.events[event]
        return e.t_s + math.hypot(n.x_m - e.x_m, n.y_m - e.y_m) / self.physics.wave_speed_m_s

    def vibration_rad(self, node: int | str, t_s: np.ndarray) -> np.ndarray:
        """PZT plus event phase of a node as seen at the center at times ``t_s``."""
        k = self.node_index(node)
        t = np.asarray(t_s, dtype=np.float64) - self.fibre_delay_s(k)
        return self._vibration_at_node(k, t)

    def _vibration_at_node(self, k: int, t_node: np.ndarray) -> np.ndarray:
        node = self.physics.nodes[k]
        phase = np.zeros_like(t_node)
        if node.pzt is not None and node.pzt_rad_per_v:
            volts = self._port_v(node.pzt, t_node)
            phase += node.pzt_rad_per_v * volts
        for e_idx, event in enumerate(self.physics.events):
            phase += event.waveform_rad(t_node - self.event_arrival_s(k, e_idx))
        return phase

    def phase_rad(self, node: int | str, t_s: np.ndarray) -> np.ndarray:
        """phi_k(t): the whole phase of node k's light against the LO at the center (rad)."""
        k = self.node_index(node)
        t = np.asarray(t_s, dtype=np.float64)
        with self.lock:
            return self._phase(k, t)

    def _phase(self, k: int, t: np.ndarray) -> np.ndarray:
        node = self.physics.nodes[k]
        tau = self.fibre_delay_s(k)
        laser = self._laser.at(t) - self._laser.at(t - 2 * tau)
        return (
            node.phase_offset_rad
            + laser
            + self._drift[k].at(t)
            + self._vibration_at_node(k, t - tau)
        )

    # -- optics --------------------------------------------------------------------------
    def _port_v(self, port: tuple[str, int], t_s: np.ndarray) -> np.ndarray:
        sim = self.bench.instruments.get(port[0])
        if sim is None:
            raise KeyError(f"{self.name}: no simulated instrument {port[0]!r} for port {port}")
        return np.asarray(sim.output_v(port[1], t_s), dtype=np.float64)

    def lo_amplitude(self) -> float:
        """sqrt(P / P_nominal) of the center laser (0 when it does not emit)."""
        laser = self.bench.instruments.get(self.physics.laser)
        if laser is None:
            return 0.0
        power = float(laser.optical_power_mw())
        return math.sqrt(max(power, 0.0) / self.physics.laser_nominal_mw)

    def _transmitting(self, node: NodePhysics) -> bool:
        """The node's modulator is driven (either AWG output on): its light, hence its excess
        noise, reaches the center. With both off (the shot-noise calibration) neither does.
        A source that cannot tell (no ``output_enabled``) counts as on."""
        for name, channel in (node.drive_i, node.drive_q):
            sim = self.bench.instruments.get(name)
            enabled = getattr(sim, "output_enabled", None)
            if enabled is None or enabled(channel):
                return True
        return False

    def _excess_noise(self, k: int, t_node: np.ndarray) -> np.ndarray:
        node = self.physics.nodes[k]
        if node.xi_snu <= 0:
            return np.zeros(t_node.shape, dtype=np.complex128)
        x = t_node * node.symbol_rate_hz
        half = self._pulse_half
        first = math.floor(float(np.min(x))) - half
        last = math.floor(float(np.max(x))) + half + 1
        symbols = self._excess[k].values(first, last + 1) * math.sqrt(node.xi_snu)
        out = np.empty(t_node.shape, dtype=np.complex128)
        _shaped_noise_kernel(
            np.ascontiguousarray(x),
            symbols,
            first,
            self._pulses[node.rolloff],
            half,
            _RRC_OVERSAMPLE,
            out,
        )
        return out * _cis(2 * np.pi * np.mod(t_node * node.carrier_hz, 1.0))

    def field(self, t_s: np.ndarray) -> np.ndarray:
        """r(t): the ICR's complex output in shot-noise-normalised units (see module doc)."""
        t = np.asarray(t_s, dtype=np.float64)
        n = t.size
        fs_hz = 1.0 / float(t[1] - t[0]) if n > 1 else 1.0
        p = self.physics
        lo = self.lo_amplitude()
        i0 = round(float(t[0]) * fs_hz)  # noise addressed by the sample's time
        r = np.zeros(n, dtype=np.complex128)
        if lo > 0:
            for k, node in enumerate(p.nodes):
                tau = self.fibre_delay_s(k)
                t_node = t - tau
                drive = self._port_v(node.drive_i, t_node) + 1j * self._port_v(node.drive_q, t_node)
                signal = node.quadrature_per_v * drive
                if self._transmitting(node):  # the node's own noise goes with its light
                    signal = signal + self._excess_noise(k, t_node)
                if not np.any(signal):
                    continue
                amp = math.sqrt(p.eta * self.transmittance(k) / 2.0)
                amp *= math.sqrt(node.symbol_rate_hz / fs_hz)
                r += amp * signal * _cis(self._phase(k, t))
            r += self._shot.values(i0, i0 + n)
            r *= lo
        if p.v_el_snu > 0:
            r += math.sqrt(p.v_el_snu) * self._electronic.values(i0, i0 + n)
        return r

    def output_v(self, channel: int, t_s: np.ndarray) -> np.ndarray:
        """ICR output ``channel`` (1 = I, 2 = Q) in volts at virtual times ``t_s``."""
        if channel not in (1, 2):
            raise ValueError(f"{self.name}: the ICR has outputs 1 (I) and 2 (Q), not {channel}")
        t = np.asarray(t_s, dtype=np.float64)
        key = (float(t[0]), float(t[-1]), int(t.size)) if t.size else (0.0, 0.0, 0)
        with self.lock:
            if key != self._cache_key:
                self._cache = self.field(t) * self.physics.icr_v_per_unit
                self._cache_key = key
            out = self._cache.real if channel == 1 else self._cache.imag
            return out.copy()
