"""Simulated photon-pair source of the entanglement network (physics.md section 2).

A bench element (no command set) between the lasers, the TEC and the time taggers: two pump
lasers drive a microring whose resonances follow the chip on the TEC, spontaneous four-wave
mixing (SFWM) emits photon pairs into demultiplexed channels, every photon crosses its user's
unbalanced (Franson) interferometer and is detected by a superconducting nanowire detector
(SNSPD) on an input of a simulated ID1000 (:mod:`drivers.sim.idq_id1000`, option
``source``). Everything here is in TRUE (bench) time; each tagger maps it to its own
free-running clock.

Pumps and ring (read from the simulated instruments when a block is generated)
--------------------------------------------------------------------------------
For each :class:`PumpPhysics` p, its laser emits P_p = ``optical_power_mw()`` (mW; 0 while
emission is off) at nu_p = c / ``wavelength_m``. The ring resonance at chip temperature T
(``chip_temperature_c()`` of the TEC ``physics.tec``: the chip on the stage that the TEC's
thermistor reads, :mod:`drivers.sim.arroyo`) is

    nu_res,p(T) = c / resonance_nm + thermo_optic_hz_per_k * (T - reference_temperature_c)

and the power coupled into the ring is Lorentzian in the detuning D_p = nu_p - nu_res,p:

    P_eff,p = P_p / (1 + (2 D_p / linewidth_hz)^2)      (mW)

so a laser detuned by half a linewidth couples half its power.

Processes (SFWM, channel labels as in physics.md)
-------------------------------------------------
Pump labels p_a, p_b (0 and 10). Every unordered label pair (x, y), x != y, whose sum is
2 p_a, 2 p_b (degenerate) or p_a + p_b (non-degenerate) and where at least one of x, y is a
configured channel, is a process, emitting pairs as a Poisson process at

    R_deg,p = degenerate_hz_per_mw2 * P_eff,p^2,   R_nd = nondegenerate_hz_per_mw2 * P_eff,a P_eff,b

(pairs/s). A partner that is not a configured channel is lost: it only adds singles to the
other channel. So channel 4 pairs with -4 (sum 0), 16 (sum 20) and 6 (sum 10).

Interferometers, ports and detection
------------------------------------
Each photon crosses its channel's user's unbalanced interferometer, short or long arm (long:
+ ``interferometer_delay_ps``), and leaves by port "+" (the only one with a detector) or "-".
For a pair on users U, W with phases phi_U, phi_W: the timing classes SS and LL
(indistinguishable, probability 1/4 each) interfere; with c = cos(phi_U + phi_W) and
V = ``franson_visibility`` the joint ports (++, +-, -+, --) have probabilities
((1 + V c)/4, (1 - V c)/4, (1 - V c)/4, (1 + V c)/4). In the classes SL and LS (1/4 each) the
ports are independent, 1/2 each. Every photon therefore leaves by "+" with probability 1/2,
and a photon whose partner is lost too (arm random). A photon at "+" is detected with
probability eta = transmission * detector_efficiency (independently). For a pair of
configured channels x, y the detected rates are therefore

    both, central (SS + LL):  R eta_x eta_y (1 + V c) / 8     (delay: lat_y - lat_x)
    both, SL and LS:          R eta_x eta_y / 16 each          (delay: lat_y - lat_x -+ D_int)
    x only:                   R eta_x [1/2 - eta_y (2 + V c) / 8]

and a single channel sees R eta / 2 per process. Averaged over the phase a side peak is half
the central peak. The generator draws exactly these categories (Poisson thinning), so no
undetected pair costs any work.

Detection time (true ps, rounded to 1 ps) = t_emission + lat_x + (long arm: D_int) + jitter,
where lat_x = fibre_index * fibre_m / c + latency_ps + ``CONSTANT_LATENCY_PS`` (10 ns, so
the jitter, Gaussian of ``jitter_ps`` rms clipped at +-5 sigma, never moves a detection
before its emission) is :meth:`PhotonPairSource.channel_latency_ps`. Each channel also sees
uncorrelated photons at ``noise_hz_per_mw`` * sum_p P_eff,p and dark counts at ``dark_hz``
(Poisson, uniform, same latency and jitter). :meth:`PhotonPairSource.expected_singles_hz` is
the sum of all of these (before dead time).

SNSPD dead time (non-paralysable): on each detector's time-sorted detections a detection
within ``dead_time_ps`` after the previous REGISTERED one is dropped. Detections of one block
are filtered together, starting from the last registered time of the previous block if that
block had been generated before (otherwise from none). Approximation at block boundaries:
the last ~1 ns of detections of block k-1 and the first of block k may interleave; a
detection of block k closer than the dead time to (or earlier than) the last registered
detection of block k-1 is dropped, so no two registered detections are ever closer than the
dead time, but at such a (rare) boundary the later rather than the earlier one may survive.
A block generated before its predecessor starts with no carried detection.

User phase: phi_U(t) = phase_offset_rad + rad_per_v * V(t) + W_U(k), with V the AWG output
``phase_port`` read at the start of t's block k (0 V without a port) and W_U(k) the
interferometer's own drift at that block start (W_U(k <= 0) = 0). The phase is constant within
a block. :attr:`UserPhysics.phase_drift` chooses W_U:

* ``"random_walk"`` (the default): a random walk over blocks, its variance
  ``drift_rad2_per_s`` times t; its increments are drawn per block from seeds derived from
  the bench seed, the source's name and the user.
* ``"model"``: the project's drift model (:mod:`models.drift`, parameters
  :attr:`UserPhysics.drift`, default :class:`~models.drift.DriftParams`) with the bench's room
  ``bench.environment.ambient_c(t_s)`` as its lab air, the same room that heats the TEC stage:
  thermal drift through the enclosure's lag, random walk, vibration bursts (its measurement
  noise and telemetry are not used). A :class:`~models.drift.DriftProcess` seeded by (bench
  seed, CRC-32 of the source name, :data:`USER_DRIFT_SEED_TAG`, user index) gives the true
  phase D at ticks t = 0, tick_s, 2 tick_s, ... (``start_s = -tick_s``; its burn-in asks the
  room for negative times); W_U(k) = D(k block_s) - D(0), D interpolated linearly between the
  ticks around the block start. With the defaults (1 s ticks, 30 min enclosure lag, 7.1
  rad/K) the thermal part follows the room's slow drift, filtered, and the bursts (about one
  an hour, 20 s) add 0.3 rad jitter and leave 0.3 rad rms offsets: in the ``typical_lab``
  room ~0.4-0.5 rad rms change per hour (measured over a day, three seeds). The ticks are
  generated forward as far as a question needs and kept (8 bytes a tick: 0.7 MB a day at
  1 s), so any block, past or future, in any order, gets one value; a change of the room
  reaches the ticks generated after it.

Blocks, determinism and consistency
-----------------------------------
Events are generated in blocks of ``block_s`` (10 ms) of true emission time, from a random
generator seeded by (bench seed, CRC-32 of the source name, block index). A block holds every
event EMITTED in it (detections may lie up to :attr:`PhotonPairSource.max_latency_ps`
later). The conditions of a block (P_eff of each pump, every user's phase, the dead-time
carry) are measured from the instruments when the block is first generated and remembered
(the last 65536 blocks), so regenerating an evicted block reproduces it exactly; the blocks
themselves are kept in an LRU cache of 256 blocks under a lock, since both taggers'
streaming threads ask concurrently. Both taggers therefore see one realisation: a pair split
over two taggers is detected on both. A change of laser, TEC or AWG takes effect from the
first block generated after it (so within one block of the last generated time).

Reference numbers (dataclass defaults): linewidth 200 MHz (Q ~ 1e6), thermo-optic shift
-2.5 GHz/K, 3e6 pairs/s per degenerate process at 1 mW in the ring and 6e6 per
non-degenerate process at 1 + 1 mW, interferometer delay 800 ps, visibility 0.98, fibre
index 1.468. With eta = 0.025 * 0.7 each channel (three processes, 12e6 pairs/s at 1 mW per
pump) sees about 105 kHz of pair photons: physics.md's 50-150 kHz per channel.

Interferometer reference light (electrical outputs)
---------------------------------------------------
Each user's interferometer also carries classical reference light (a laser outside the
photon channels, split off by the demultiplexer, so it adds no counts), read after a 90-degree
optical hybrid by two photodiodes, in quadrature: the phase-lock loops' error signals. Output
``2k + 1`` of the element is the I photodiode and ``2k + 2`` the Q photodiode of the k-th user
(k = 0, 1, ... in ``physics.users`` order: alice's I is ``"pairs:1"`` on the entanglement
bench, where the element is named after ``[entanglement] source``)::

    V_I(t) = reference_dc_v + reference_amplitude_v * reference_visibility * cos(phi_U(t))
    V_Q(t) = reference_dc_v + reference_amplitude_v * reference_visibility * sin(phi_U(t))

with phi_U the photons' user phase below (its value for the 10 ms block containing t: the
phase of a block already generated is the one its photons saw). The reference light's own
phase would scale with its optical frequency; the constant ratio is a calibration the lock
absorbs, so the photons' phase is used as is. Defaults: 0.2 V mean, 0.15 V amplitude (a few
hundred microwatts on a photodiode with a 1 kOhm transimpedance), visibility 0.95 (a fibre
Michelson's classical fringe contrast with imperfect splitting and polarisation); the swing
0.06..0.34 V stays inside a scope's default +-0.4 V range.

Ground truth for tests: :meth:`pair_rate_hz`, :meth:`pump_power_in_ring_mw`,
:meth:`ring_detuning_hz`, :meth:`channel_latency_ps`, :meth:`user_phase_rad` (and
:meth:`user_phases_rad` for many times),
:meth:`expected_singles_hz` and, with ``keep_truth=True``, :meth:`truth_pair_dt_ps` and
:meth:`truth_singles` (recorded once per block when first generated).
"""

from __future__ import annotations

import math
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba as nb
import numpy as np

from models.drift import DriftParams, DriftProcess

if TYPE_CHECKING:
    from drivers.sim.bench import BenchModel

SPEED_OF_LIGHT_M_S = 299_792_458.0
#: added to every channel's latency: keeps clipped jitter from moving a detection before emission
CONSTANT_LATENCY_PS = 10_000
JITTER_CLIP_SIGMAS = 5.0
CACHE_BLOCKS = 256
CONDITIONS_KEPT = 1 << 16
_WALK_CHUNK = 4096
_NONE_PS = -(1 << 62)  # "no registered detection yet"
#: seed tag of the drift-model phase of each user (keeps its streams apart from the others)
USER_DRIFT_SEED_TAG = 0xD21F7
#: the drift choices of :attr:`UserPhysics.phase_drift`
PHASE_DRIFTS = ("random_walk", "model")
_DEGENERATE_A, _DEGENERATE_B, _NONDEGENERATE = 0, 1, 2


@dataclass(frozen=True)
class PumpPhysics:
    """One pump: its label, the simulated laser that emits it and its ring resonance."""

    label: int  #: channel label of the pump (physics.md: 0 and 10)
    laser: str  #: name of the simulated laser instrument
    resonance_nm: float  #: ring resonance (vacuum wavelength) at the reference temperature


@dataclass(frozen=True)
class ChannelPhysics:
    """One demultiplexed channel, its path to its detector and the detector."""

    label: int  #: channel label (pair labels sum to 2 p_a, 2 p_b or p_a + p_b)
    user: str  #: user whose interferometer the channel passes
    tagger: str  #: simulated tagger instrument the detector feeds
    input: int  #: tagger input (1..4)
    transmission: float  #: demux + fibre + interferometer insertion loss (0, 1]
    fibre_m: float  #: fibre from the source to the detector (latency n L / c)
    detector_efficiency: float  #: SNSPD system detection efficiency (0, 1]
    dark_hz: float  #: SNSPD dark counts
    jitter_ps: float  #: SNSPD timing jitter (rms, Gaussian)
    dead_time_ps: float  #: SNSPD recovery (non-paralysable)
    noise_hz_per_mw: float = 0.0  #: uncorrelated pump-induced photons detected, per mW in ring
    latency_ps: float = 0.0  #: cable and electronics latency to the tagger input


@dataclass(frozen=True)
class UserPhysics:
    """One user's unbalanced (Franson) interferometer."""

    name: str
    phase_port: tuple[str, int] | None  #: AWG output driving the phase shifter (None: fixed)
    rad_per_v: float  #: phase shifter gain
    phase_offset_rad: float  #: phase at 0 V
    drift_rad2_per_s: float  #: random-walk phase drift (variance per second; "random_walk" only)
    #: "random_walk" (per-block walk of drift_rad2_per_s) or "model" (models.drift, the room)
    phase_drift: str = "random_walk"
    #: drift-model parameters ("model" only; None: DriftParams() defaults)
    drift: DriftParams | None = None


@dataclass(frozen=True)
class PairSourcePhysics:
    """The whole source: pumps, ring, channels, users. Truth, not what the operator knows."""

    pumps: tuple[PumpPhysics, PumpPhysics]
    tec: str  #: simulated TEC holding the ring
    channels: tuple[ChannelPhysics, ...]
    users: tuple[UserPhysics, ...]
    reference_temperature_c: float = 25.0  #: resonances are at resonance_nm here
    thermo_optic_hz_per_k: float = -2.5e9  #: resonance shift with ring temperature
    linewidth_hz: float = 200e6  #: loaded resonance linewidth (FWHM), Q ~ 1e6
    degenerate_hz_per_mw2: float = 3.0e6  #: pairs/s of a degenerate process at 1 mW in ring
    nondegenerate_hz_per_mw2: float = 6.0e6  #: pairs/s of a non-degenerate process, 1+1 mW
    interferometer_delay_ps: float = 800.0  #: long-short arm delay of every interferometer
    franson_visibility: float = 0.98  #: intrinsic two-photon interference visibility
    fibre_index: float = 1.468
    block_s: float = 0.01  #: generation block (events are drawn block by block)
    reference_dc_v: float = 0.2  #: mean voltage of each reference-light photodiode
    reference_amplitude_v: float = 0.15  #: fringe amplitude at visibility 1
    reference_visibility: float = 0.95  #: classical fringe visibility of the reference light


@nb.njit(cache=True, nogil=True)
def _dead_time_kernel(
    detector: np.ndarray, times: np.ndarray, dead_ps: np.ndarray, last: np.ndarray
) -> np.ndarray:
    """Non-paralysable dead time on detections sorted by (detector, time); updates ``last``."""
    keep = np.zeros(times.size, dtype=np.bool_)
    for i in range(times.size):
        d = detector[i]
        if times[i] - last[d] >= dead_ps[d]:
            keep[i] = True
            last[d] = times[i]
    return keep


@dataclass(frozen=True)
class _Process:
    a: int  #: the smaller label
    b: int
    kind: int  #: _DEGENERATE_A, _DEGENERATE_B or _NONDEGENERATE
    ch_a: int  #: index of a's channel, -1 if a is not a configured channel
    ch_b: int


@dataclass(frozen=True)
class _Conditions:
    """What a block was generated with (measured from the instruments when first generated)."""

    p_eff_mw: tuple[float, float]
    phases: dict[str, float]
    carry_in: np.ndarray  #: last registered detection time per detector before the block


@dataclass
class _Block:
    per_tagger: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  #: emit, detect, input
    carry_out: np.ndarray


class _PhaseWalk:
    """W(k): a random walk over block index k (W(k <= 0) = 0), steps N(0, sigma^2)."""

    def __init__(self, key: tuple[int, ...], sigma: float) -> None:
        self.key = key
        self.sigma = sigma
        self._starts = [0.0]  #: W at the start of each chunk computed so far
        self._chunks: OrderedDict[int, np.ndarray] = OrderedDict()

    def _chunk(self, c: int) -> np.ndarray:
        """W(c * CHUNK + i) for i in 0..CHUNK-1, given W at the chunk start."""
        values = self._chunks.get(c)
        if values is None:
            steps = np.random.default_rng([*self.key, c]).standard_normal(_WALK_CHUNK)
            walk = np.cumsum(steps * self.sigma)
            values = self._starts[c] + np.concatenate(([0.0], walk[:-1]))
            self._chunks[c] = values
            if len(self._chunks) > 8:
                self._chunks.popitem(last=False)
            if len(self._starts) == c + 1:
                self._starts.append(self._starts[c] + float(walk[-1]))
        return values

    def at(self, k: int) -> float:
        if k <= 0 or self.sigma == 0.0:
            return 0.0
        c = k // _WALK_CHUNK
        while len(self._starts) <= c:  # walk forward chunk by chunk
            self._chunk(len(self._starts) - 1)
        return float(self._chunk(c)[k - c * _WALK_CHUNK])


class _ModelDrift:
    """W(k) = D(k block_s) - D(0) of one user from the drift model (module docstring).

    The true phase D at ticks 0, tick_s, 2 tick_s, ... is kept in a growing float64 array
    (capacity doubled as needed) and extended forward only as far as a question needs. Not
    locked: the source calls it under its own lock.
    """

    def __init__(
        self,
        params: DriftParams,
        seed: tuple[int, ...],
        air_c: Callable[[np.ndarray], np.ndarray],
        block_s: float,
    ) -> None:
        self.params = params
        self.block_s = block_s
        # first tick at t = 0: D(0) is a tick, the reference of W
        self._process = DriftProcess(
            params, seed=seed, start_s=-params.tick_s, block_ticks=1, air_c=air_c
        )
        first = self._process.advance(1)
        self._d0 = float(first.phase_rad[0])
        self._w = np.zeros(1024, dtype=np.float64)  #: D(i tick_s) - D(0), i < self._n
        self._n = 1

    def _extend(self, n: int) -> None:
        """Make ticks 0..n-1 available."""
        if n <= self._n:
            return
        if n > self._w.size:
            grown = np.empty(max(n, 2 * self._w.size), dtype=np.float64)
            grown[: self._n] = self._w[: self._n]
            self._w = grown
        trace = self._process.advance(n - self._n)
        self._w[self._n : n] = trace.phase_rad - self._d0
        self._n = n

    def at(self, ks: np.ndarray) -> np.ndarray:
        """W at the starts of blocks ``ks`` (int64), float64; 0 for k <= 0."""
        ks = np.asarray(ks, dtype=np.int64)
        out = np.zeros(ks.shape, dtype=np.float64)
        later = ks > 0
        if not later.any():
            return out
        g = ks[later].astype(np.float64) * self.block_s / self.params.tick_s
        i = np.floor(g).astype(np.int64)
        self._extend(int(i.max()) + 2)
        frac = g - i
        w = self._w
        out[later] = w[i] + frac * (w[i + 1] - w[i])
        return out


class PhotonPairSource:
    """The photon-pair source element of a simulated bench (see the module docstring).

    ``SimHost(..., elements=[lambda bench: PhotonPairSource("pairs", bench, physics)])``; the
    taggers name it with their ``source`` option. Instruments are looked up when used.
    """

    def __init__(
        self,
        name: str,
        bench: BenchModel,
        physics: PairSourcePhysics,
        *,
        keep_truth: bool = False,
    ) -> None:
        self.name = name
        self.bench = bench
        self.physics = physics
        self._lock = threading.RLock()
        p = physics
        self._check(p)
        self._pump_labels = (p.pumps[0].label, p.pumps[1].label)
        self._channels = tuple(p.channels)
        self._index = {ch.label: i for i, ch in enumerate(self._channels)}
        self._users = {u.name: u for u in p.users}
        self._processes = self._find_processes()
        self._block_ps = round(p.block_s * 1e12)
        self._eta = np.array([c.transmission * c.detector_efficiency for c in self._channels])
        self._latency = np.array([self.channel_latency_ps(c.label) for c in self._channels])
        self._dead_ps = np.array([math.ceil(c.dead_time_ps) for c in self._channels], np.int64)
        self._taggers = sorted({c.tagger for c in self._channels})
        self._seed_key = (int(bench.seed) & 0xFFFFFFFF, zlib.crc32(name.encode()))
        self._walks = {
            u.name: _PhaseWalk(
                (*self._seed_key, 0x57A1C, i), math.sqrt(max(u.drift_rad2_per_s, 0.0) * p.block_s)
            )
            for i, u in enumerate(p.users)
            if u.phase_drift == "random_walk"
        }
        #: drift-model phases, built on first use (the burn-in asks the room then)
        self._model_drifts: dict[str, _ModelDrift] = {}
        self._cache: OrderedDict[int, _Block] = OrderedDict()
        self._conditions: OrderedDict[int, _Conditions] = OrderedDict()
        self._truth: dict[int, tuple[dict, dict]] | None = {} if keep_truth else None
        self._tagger_of = np.array([self._taggers.index(c.tagger) for c in self._channels])
        self._input_of = np.array([c.input for c in self._channels], dtype=np.uint8)

    # -- configuration -----------------------------------------------------------------------
    @staticmethod
    def _check(p: PairSourcePhysics) -> None:
        pumps = {pump.label for pump in p.pumps}
        if len(pumps) != 2:
            raise ValueError("the two pumps need different labels")
        labels = [c.label for c in p.channels]
        if len(set(labels)) != len(labels):
            raise ValueError("channel labels must be unique")
        detectors = [(c.tagger, c.input) for c in p.channels]
        if len(set(detectors)) != len(detectors):
            raise ValueError("two channels on one tagger input")
        users = {u.name for u in p.users}
        for u in p.users:
            if u.phase_drift not in PHASE_DRIFTS:
                raise ValueError(
                    f"user {u.name}: phase_drift {u.phase_drift!r}, expected one of {PHASE_DRIFTS}"
                )
            if u.phase_drift == "model" and u.drift_rad2_per_s != 0:
                raise ValueError(
                    f"user {u.name}: drift_rad2_per_s {u.drift_rad2_per_s!r} with phase_drift "
                    "'model' is ambiguous (the model has its own random walk); set it to 0"
                )
            if u.phase_drift == "random_walk" and u.drift is not None:
                raise ValueError(
                    f"user {u.name}: drift parameters given with phase_drift 'random_walk'; "
                    "they are used by phase_drift 'model' only"
                )
        for c in p.channels:
            if c.label in pumps:
                raise ValueError(f"channel {c.label} is a pump label")
            if c.user not in users:
                raise ValueError(f"channel {c.label}: no user {c.user!r}")
            if not 1 <= c.input <= 4:
                raise ValueError(f"channel {c.label}: tagger input {c.input} not in 1..4")
            if not (0 < c.transmission <= 1 and 0 < c.detector_efficiency <= 1):
                raise ValueError(f"channel {c.label}: transmission and efficiency in (0, 1]")
            if not (c.jitter_ps >= 0 and c.dead_time_ps >= 0 and c.dark_hz >= 0):
                raise ValueError(f"channel {c.label}: negative jitter, dead time or dark rate")
            if JITTER_CLIP_SIGMAS * c.jitter_ps >= CONSTANT_LATENCY_PS:
                raise ValueError(f"channel {c.label}: jitter too large for the constant latency")
        if not (p.block_s > 0 and p.linewidth_hz > 0 and 0 <= p.franson_visibility <= 1):
            raise ValueError("block_s and linewidth_hz must be > 0, visibility in [0, 1]")
        if not (p.reference_amplitude_v >= 0 and 0 <= p.reference_visibility <= 1):
            raise ValueError(
                f"reference light: amplitude {p.reference_amplitude_v!r} V must be >= 0 and "
                f"visibility {p.reference_visibility!r} in [0, 1]"
            )

    def _find_processes(self) -> tuple[_Process, ...]:
        pa, pb = self._pump_labels
        kinds = {2 * pa: _DEGENERATE_A, 2 * pb: _DEGENERATE_B, pa + pb: _NONDEGENERATE}
        found: dict[tuple[int, int], int] = {}
        for ch in self._channels:
            for total, kind in kinds.items():
                partner = total - ch.label
                if partner != ch.label:
                    found[(min(ch.label, partner), max(ch.label, partner))] = kind
        return tuple(
            _Process(a, b, kind, self._index.get(a, -1), self._index.get(b, -1))
            for (a, b), kind in sorted(found.items())
        )

    def _process(self, x: int, y: int) -> _Process | None:
        a, b = min(x, y), max(x, y)
        for proc in self._processes:
            if (proc.a, proc.b) == (a, b):
                return proc
        return None

    @property
    def processes(self) -> tuple[tuple[int, int], ...]:
        """Every process (a, b), a < b (at least one of them a configured channel)."""
        return tuple((proc.a, proc.b) for proc in self._processes)

    # -- physics now ---------------------------------------------------------------------------
    def output_v(self, channel: int, t_s: np.ndarray) -> np.ndarray:
        """Reference-light photodiode voltages at true times ``t_s`` (bench SignalSource
        protocol): channel 2k + 1 is the I and 2k + 2 the Q output of the k-th user (module
        docstring). float64 volts, the shape of ``t_s``."""
        users = self.physics.users
        if isinstance(channel, bool) or not 1 <= channel <= 2 * len(users):
            names = [u.name for u in users]
            raise ValueError(
                f"{self.name}: no output {channel!r}; outputs 1..{2 * len(users)} are the I, Q "
                f"reference photodiodes of users {names} in that order"
            )
        phase = self.user_phases_rad(users[(channel - 1) // 2].name, t_s)
        p = self.physics
        swing_v = p.reference_amplitude_v * p.reference_visibility
        quadrature = np.cos(phase) if channel % 2 == 1 else np.sin(phase)
        return p.reference_dc_v + swing_v * quadrature

    def _pump(self, label: int) -> PumpPhysics:
        for pump in self.physics.pumps:
            if pump.label == label:
                return pump
        raise KeyError(f"{self.name}: no pump labelled {label}")

    def ring_temperature_c(self) -> float:
        """The microring's (chip's) temperature now (degC), from the TEC simulator."""
        return float(self.bench.instruments[self.physics.tec].chip_temperature_c())

    def ring_detuning_hz(self, label: int) -> float:
        """nu_laser - nu_res(T) of the pump ``label`` now (Hz)."""
        return self._detuning_hz(self._pump(label), self.ring_temperature_c())

    def _detuning_hz(self, pump: PumpPhysics, temperature_c: float) -> float:
        p = self.physics
        laser = self.bench.instruments[pump.laser]
        nu_res = SPEED_OF_LIGHT_M_S / (pump.resonance_nm * 1e-9) + p.thermo_optic_hz_per_k * (
            temperature_c - p.reference_temperature_c
        )
        return SPEED_OF_LIGHT_M_S / float(laser.wavelength_m) - nu_res

    def _power_in_ring_mw(self, pump: PumpPhysics, temperature_c: float) -> float:
        power = float(self.bench.instruments[pump.laser].optical_power_mw())
        x = 2.0 * self._detuning_hz(pump, temperature_c) / self.physics.linewidth_hz
        return max(power, 0.0) / (1.0 + x * x)

    def pump_power_in_ring_mw(self, label: int) -> float:
        """P_eff of pump ``label`` now (mW)."""
        return self._power_in_ring_mw(self._pump(label), self.ring_temperature_c())

    def _p_eff_now(self) -> tuple[float, float]:
        temperature = self.ring_temperature_c()
        a, b = (self._power_in_ring_mw(pump, temperature) for pump in self.physics.pumps)
        return a, b

    def _rate_hz(self, proc: _Process, p_eff: tuple[float, float]) -> float:
        p = self.physics
        if proc.kind == _NONDEGENERATE:
            return p.nondegenerate_hz_per_mw2 * p_eff[0] * p_eff[1]
        power = p_eff[0] if proc.kind == _DEGENERATE_A else p_eff[1]
        return p.degenerate_hz_per_mw2 * power * power

    def pair_rate_hz(self, x: int, y: int) -> float:
        """Pairs/s generated now by process (x, y) (0 if it is not a process)."""
        proc = self._process(x, y)
        return 0.0 if proc is None else self._rate_hz(proc, self._p_eff_now())

    def channel_latency_ps(self, label: int) -> float:
        """Emission to detection through the short arm: n L / c + latency + constant (ps)."""
        c = self._channels[self._index[label]]
        fibre_ps = self.physics.fibre_index * c.fibre_m / SPEED_OF_LIGHT_M_S * 1e12
        return fibre_ps + c.latency_ps + CONSTANT_LATENCY_PS

    @property
    def max_latency_ps(self) -> int:
        """The largest detection-minus-emission delay (long arm, jitter clipped at 5 sigma)."""
        worst = [
            self.channel_latency_ps(c.label)
            + self.physics.interferometer_delay_ps
            + JITTER_CLIP_SIGMAS * c.jitter_ps
            for c in self._channels
        ]
        return math.ceil(max(worst, default=CONSTANT_LATENCY_PS)) + 1

    def expected_singles_hz(self, label: int) -> float:
        """Detections/s of channel ``label`` now, before dead time (pairs, noise, dark)."""
        i = self._index[label]
        c = self._channels[i]
        p_eff = self._p_eff_now()
        rate = sum(
            self._rate_hz(proc, p_eff) for proc in self._processes if label in (proc.a, proc.b)
        )
        return rate / 2.0 * self._eta[i] + c.noise_hz_per_mw * sum(p_eff) + c.dark_hz

    def _air_c(self, t_s: np.ndarray) -> np.ndarray:
        """The bench's room (degC) at true times ``t_s``: the drift model's lab air."""
        return np.asarray(
            self.bench.environment.ambient_c(np.asarray(t_s, dtype=np.float64)), dtype=np.float64
        )

    def _drift_at(self, user: UserPhysics, ks: np.ndarray) -> np.ndarray:
        """W_U at the starts of blocks ``ks`` (float64, rad); call under the lock."""
        if user.phase_drift == "random_walk":
            walk = self._walks[user.name]
            return np.array([walk.at(int(k)) for k in ks.tolist()], dtype=np.float64)
        drift = self._model_drifts.get(user.name)
        if drift is None:
            index = next(i for i, u in enumerate(self.physics.users) if u.name == user.name)
            drift = _ModelDrift(
                user.drift or DriftParams(),
                (*self._seed_key, USER_DRIFT_SEED_TAG, index),
                self._air_c,
                self.physics.block_s,
            )
            self._model_drifts[user.name] = drift
        return drift.at(ks)

    def _phase_now(self, user: UserPhysics, k: int) -> float:
        volts = 0.0
        if user.phase_port is not None:
            name, channel = user.phase_port
            t_s = np.array([k * self._block_ps * 1e-12])
            volts = float(self.bench.instruments[name].output_v(channel, t_s)[0])
        drift = float(self._drift_at(user, np.array([k], dtype=np.int64))[0])
        return user.phase_offset_rad + user.rad_per_v * volts + drift

    def user_phase_rad(self, user: str, t_s: float) -> float:
        """phi_U at true time ``t_s``: the phase its block was generated with (or would be now)."""
        k = math.floor(round(t_s * 1e12) / self._block_ps)
        with self._lock:
            cond = self._conditions.get(k)
            if cond is not None:
                return cond.phases[user]
            return self._phase_now(self._users[user], k)

    def user_phases_rad(self, user: str, t_s: np.ndarray) -> np.ndarray:
        """phi_U at every true time of ``t_s`` (float64, its shape), as :meth:`user_phase_rad`;
        evaluated once per 10 ms block (the phase is constant within a block)."""
        u = self._users[user]
        t = np.asarray(t_s, dtype=np.float64)
        blocks = np.floor(np.rint(t * 1e12) / self._block_ps).astype(np.int64)
        ks, where = np.unique(blocks, return_inverse=True)
        phases = np.empty(ks.size, dtype=np.float64)
        with self._lock:
            fresh = []
            for i, k in enumerate(ks.tolist()):
                cond = self._conditions.get(k)
                if cond is not None:
                    phases[i] = cond.phases[user]
                else:
                    fresh.append(i)
            if fresh:  # blocks not generated yet: their phase now, one shifter read for all
                k_fresh = ks[fresh]
                volts = np.zeros(k_fresh.size)
                if u.phase_port is not None:
                    name, channel = u.phase_port
                    starts_s = k_fresh * self._block_ps * 1e-12
                    volts = np.asarray(self.bench.instruments[name].output_v(channel, starts_s))
                drift = self._drift_at(u, k_fresh)
                phases[fresh] = u.phase_offset_rad + u.rad_per_v * volts + drift
        return phases[where].reshape(t.shape)

    # -- generation ----------------------------------------------------------------------------
    def generate_for(
        self, tagger: str, t0_true_ps: int, t1_true_ps: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(inputs uint8, true detection times int64 ps) of ``tagger``'s registered detections
        EMITTED in [t0, t1) (detection times may lie beyond t1), in no particular order."""
        t0, t1 = int(t0_true_ps), int(t1_true_ps)
        inputs: list[np.ndarray] = []
        times: list[np.ndarray] = []
        if t1 > t0 and tagger in self._taggers:
            with self._lock:
                for k in range(t0 // self._block_ps, (t1 - 1) // self._block_ps + 1):
                    emit, detect, inp = self._block(k).per_tagger[tagger]
                    start, end = k * self._block_ps, (k + 1) * self._block_ps
                    if t0 > start or t1 < end:
                        sel = (emit >= t0) & (emit < t1)
                        detect, inp = detect[sel], inp[sel]
                    inputs.append(inp)
                    times.append(detect)
        if not times:
            return np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64)
        return np.concatenate(inputs), np.concatenate(times)

    def _block(self, k: int) -> _Block:
        block = self._cache.get(k)
        if block is not None:
            self._cache.move_to_end(k)
            return block
        block = self._make_block(k)
        self._cache[k] = block
        if len(self._cache) > CACHE_BLOCKS:
            self._cache.popitem(last=False)
        return block

    def _measure(self, k: int) -> _Conditions:
        previous = self._cache.get(k - 1)
        if previous is not None:
            carry = previous.carry_out.copy()
        else:
            carry = np.full(len(self._channels), _NONE_PS, dtype=np.int64)
            previous_cond = self._conditions.get(k - 1)
            if previous_cond is not None:  # generated, evicted: regenerate for its carry
                carry = self._make_block(k - 1, record=False).carry_out.copy()
        phases = {u.name: self._phase_now(u, k) for u in self.physics.users}
        cond = _Conditions(self._p_eff_now(), phases, carry)
        self._conditions[k] = cond
        if len(self._conditions) > CONDITIONS_KEPT:
            self._conditions.popitem(last=False)
        return cond

    def _rng(self, k: int) -> np.random.Generator:
        u = k + (1 << 40)  # block indices may be negative; seeds may not
        return np.random.default_rng([*self._seed_key, 0x9A125, u & 0xFFFFFFFF, u >> 32])

    def _make_block(self, k: int, *, record: bool = True) -> _Block:
        """Draw block k's registered detections (see the module docstring for the model)."""
        cond = self._conditions.get(k)
        first = cond is None
        if cond is None:
            cond = self._measure(k)
        p = self.physics
        rng = self._rng(k)
        start = k * self._block_ps
        span_s = self._block_ps * 1e-12
        delay = p.interferometer_delay_ps
        channels = self._channels
        # segments of detections: (channel index, emission ps, detection ps)
        seg_ch: list[int] = []
        seg_emit: list[np.ndarray] = []
        seg_det: list[np.ndarray] = []

        def detect(i: int, emit: np.ndarray, long_arm: np.ndarray | float) -> int:
            sigma = channels[i].jitter_ps
            jitter = rng.normal(0.0, sigma, emit.size) if sigma > 0 else np.zeros(emit.size)
            clip = JITTER_CLIP_SIGMAS * sigma
            offset = self._latency[i] + delay * long_arm + np.clip(jitter, -clip, clip)
            seg_ch.append(i)
            seg_emit.append(emit)
            seg_det.append(emit + np.rint(offset).astype(np.int64))
            return len(seg_ch) - 1

        def emissions(rate_hz: float) -> np.ndarray:
            n = rng.poisson(max(rate_hz, 0.0) * span_s)
            return start + rng.integers(0, self._block_ps, n, dtype=np.int64)

        pairs: list[tuple[_Process, int, int]] = []
        for proc in self._processes:
            rate = self._rate_hz(proc, cond.p_eff_mw)
            if proc.ch_a >= 0 and proc.ch_b >= 0:
                ua = channels[proc.ch_a].user
                ub = channels[proc.ch_b].user
                vc = p.franson_visibility * math.cos(cond.phases[ua] + cond.phases[ub])
                eta_a, eta_b = self._eta[proc.ch_a], self._eta[proc.ch_b]
                both = rate * eta_a * eta_b
                # timing classes (arm of a, arm of b): SS, LL (central), SL, LS
                for weight, arm_a, arm_b in (
                    ((1 + vc) / 16, 0.0, 0.0),
                    ((1 + vc) / 16, 1.0, 1.0),
                    (1 / 16, 0.0, 1.0),
                    (1 / 16, 1.0, 0.0),
                ):
                    emit = emissions(both * weight)
                    pairs.append(
                        (proc, detect(proc.ch_a, emit, arm_a), detect(proc.ch_b, emit, arm_b))
                    )
                for i, eta_i, eta_other in (
                    (proc.ch_a, eta_a, eta_b),
                    (proc.ch_b, eta_b, eta_a),
                ):
                    emit = emissions(rate * eta_i * (0.5 - eta_other * (2 + vc) / 8))
                    detect(i, emit, rng.integers(0, 2, emit.size).astype(np.float64))
            else:  # the partner is lost: only this channel's half of the pairs
                i = proc.ch_a if proc.ch_a >= 0 else proc.ch_b
                emit = emissions(rate * self._eta[i] / 2)
                detect(i, emit, rng.integers(0, 2, emit.size).astype(np.float64))
        total_p = sum(cond.p_eff_mw)
        for i, c in enumerate(channels):
            detect(i, emissions(c.noise_hz_per_mw * total_p + c.dark_hz), 0.0)

        sizes = np.array([e.size for e in seg_emit], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(sizes)))
        ch = np.repeat(np.array(seg_ch, dtype=np.int64), sizes)
        emit_all = np.concatenate(seg_emit)
        det_all = np.concatenate(seg_det)
        order = np.lexsort((det_all, ch))
        carry = cond.carry_in.copy()
        kept = _dead_time_kernel(ch[order], det_all[order], self._dead_ps, carry)
        registered = np.empty(det_all.size, dtype=bool)
        registered[order] = kept

        per_tagger = {}
        for t_index, tagger in enumerate(self._taggers):
            sel = registered & (self._tagger_of[ch] == t_index)
            per_tagger[tagger] = (emit_all[sel], det_all[sel], self._input_of[ch[sel]])
        block = _Block(per_tagger, carry)

        if record and first and self._truth is not None:
            pair_truth: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
            for proc, sa, sb in pairs:
                ra = registered[offsets[sa] : offsets[sa + 1]]
                rb = registered[offsets[sb] : offsets[sb + 1]]
                ok = ra & rb
                dt = seg_det[sb][ok] - seg_det[sa][ok]
                pair_truth.setdefault((proc.a, proc.b), []).append((seg_emit[sa][ok], dt))
            pairs_joined = {
                key: (np.concatenate([e for e, _ in v]), np.concatenate([d for _, d in v]))
                for key, v in pair_truth.items()
            }
            singles = {
                c.label: np.sort(emit_all[registered & (ch == i)]) for i, c in enumerate(channels)
            }
            self._truth[k] = (pairs_joined, singles)
        return block

    # -- truth -------------------------------------------------------------------------------
    def start_truth_log(self) -> None:
        """Record the truth of every block generated from now on (as ``keep_truth=True``);
        for a source built by the bench loader, which does not ask for it."""
        with self._lock:
            if self._truth is None:
                self._truth = {}

    def _truth_blocks(self, t0_s: float, t1_s: float) -> list[tuple[dict, dict]]:
        if self._truth is None:
            raise RuntimeError(f"{self.name}: constructed without keep_truth=True")
        k0 = math.floor(round(t0_s * 1e12) / self._block_ps)
        k1 = math.floor(round(t1_s * 1e12) / self._block_ps)
        with self._lock:
            return [self._truth[k] for k in range(k0, k1 + 1) if k in self._truth]

    def truth_pair_dt_ps(self, x: int, y: int, t0_s: float, t1_s: float) -> np.ndarray:
        """t_y - t_x (true ps) of every pair of process (x, y) with both photons REGISTERED,
        emitted in [t0_s, t1_s) (blocks not generated contribute nothing)."""
        a, b = min(x, y), max(x, y)
        sign = 1 if (x, y) == (a, b) else -1
        lo, hi = round(t0_s * 1e12), round(t1_s * 1e12)
        parts = [np.zeros(0, dtype=np.int64)]
        for pairs, _ in self._truth_blocks(t0_s, t1_s):
            if (a, b) in pairs:
                emit, dt = pairs[(a, b)]
                sel = (emit >= lo) & (emit < hi)
                parts.append(sign * dt[sel])
        return np.concatenate(parts).astype(np.int64)

    def truth_singles(self, label: int, t0_s: float, t1_s: float) -> int:
        """Registered detections of channel ``label`` emitted in [t0_s, t1_s)."""
        lo, hi = round(t0_s * 1e12), round(t1_s * 1e12)
        total = 0
        for _, singles in self._truth_blocks(t0_s, t1_s):
            emit = singles[label]
            total += int(np.searchsorted(emit, hi) - np.searchsorted(emit, lo))
        return total
