"""ISAQN pipeline: what the nodes send, and the receiver from raw I/Q records to per-node results.

Nothing here talks to an instrument: the job (:mod:`labctl.isaqn_job`) uploads what
:func:`awg_waveform` returns and feeds scope records to :class:`IsaqnReceiver`; a replay feeds
recorded records to the same receiver.

Per node (physics.md section 1, DSP chain):

1. **Transmitter** (:func:`node_sequence`, :func:`awg_waveform`): a known cyclic sequence of
   ``sequence_symbols`` symbols, pilots A + 0j at s % P == 0, Gaussian quantum symbols
   (variance V_A per quadrature) elsewhere; root-raised-cosine shaped (circularly, the AWG
   loops it), digitally up-converted to the node's carrier, scaled to volts by the node
   modulator's ``quadrature_per_v``, normalised to the AWG's full scale.
2. **Calibration** (:meth:`IsaqnReceiver.calibrate`): an LO-off capture (electronic noise) and
   a signal-off capture (shot noise), through the same matched filter as the data: the
   shot-noise unit per band at symbol level and v_el in SNU.
3. **Synchronisation** (:meth:`IsaqnReceiver.synchronise`): per band, Oerder-Meyr symbol
   timing on the matched filter's raw-rate output, the pilot residue, then frame sync by
   cross-correlating the pilot-corrected quantum symbols with the node's known sequence.
   The result is one :class:`dsp.receiver.ReceiverChain` whose per-band taps are matched
   filters delayed by each node's fractional delay, so every band is sampled at its symbol
   centres from one shared output grid.
4. **Streaming** (:meth:`IsaqnReceiver.process`): band separation, demodulation, pilot phase,
   unwrap, interpolation and rotation of the quantum symbols; SNU normalisation; parameter
   estimation sums (T, xi); band power; pilot phase for vibration sensing. A band whose
   correlation with its known sequence collapses (a gap in the stream, a re-upload) is
   re-synchronised on the next record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dsp.cvqkd import PeSums, calibrate_shot_noise
from dsp.ddc import DDCConfig, DDCState, ddc_process
from dsp.framesync import frame_offset, pilot_offset, symbol_timing
from dsp.phase import PilotPattern
from dsp.pulse import (
    check_cyclic_carrier,
    matched_group_delay_samples,
    matched_taps,
    shape_symbols,
    transmit_pulse,
    upconvert,
)
from dsp.receiver import ReceiverChain
from labctl.isaqn_config import IsaqnConfig, NodeConfig

#: a band is re-synchronised when its per-record gain falls below this fraction of the gain
#: measured at synchronisation
LOCK_FRACTION = 0.5


# ---------------------------------------------------------------------------------------------
# Transmitters


@dataclass(frozen=True, eq=False)
class NodeSequence:
    """The cyclic symbol sequence a node loops (its "Alice" data, known to the center node
    for the disclosed symbols).

    symbols: complex128 (L,), x + jp in SNU, pilots included; is_pilot: bool (L,).
    """

    node: NodeConfig
    symbols: np.ndarray
    is_pilot: np.ndarray

    @property
    def quantum(self) -> np.ndarray:
        """The sequence with the pilots set to 0 (what frame sync correlates with)."""
        return np.where(self.is_pilot, 0.0, self.symbols)


def node_sequence(node: NodeConfig, seed: int, index: int) -> NodeSequence:
    """Node ``index``'s sequence: pilots at s % P == 0, quantum symbols N(0, V_A) per quadrature."""
    rng = np.random.default_rng([int(seed), 0x15A9, int(index)])
    n = node.sequence_symbols
    sigma = math.sqrt(node.va_snu)
    symbols = sigma * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    is_pilot = np.arange(n) % node.pilot_period == 0
    symbols[is_pilot] = node.pilot_amplitude
    return NodeSequence(node, symbols.astype(np.complex128), is_pilot)


@dataclass(frozen=True, eq=False)
class AwgWaveform:
    """One node's drive: I and Q normalised to [-1, 1] and the amplitude that scales them."""

    i_norm: np.ndarray
    q_norm: np.ndarray
    amplitude_vpp: float
    sample_rate_hz: float


def awg_waveform(
    sequence: NodeSequence, sample_rate_hz: float, rolloff: float, span_symbols: int
) -> AwgWaveform:
    """The node's looped waveform at the AWG's sample rate (RRC shaped, on its carrier)."""
    node = sequence.node
    sps_f = sample_rate_hz / node.symbol_rate_hz
    sps = round(sps_f)
    if abs(sps_f - sps) > 1e-9 * sps_f:
        raise ValueError(
            f"{node.name}: AWG rate {sample_rate_hz:g} Sa/s is not a whole number of samples "
            f"per symbol at {node.symbol_rate_hz:g} Bd"
        )
    pulse = transmit_pulse(sps, span_symbols, rolloff)
    base = shape_symbols(sequence.symbols, sps, pulse, cyclic=True)
    check_cyclic_carrier(base.size, node.carrier_hz, sample_rate_hz)
    volts = upconvert(base, node.carrier_hz, sample_rate_hz) / node.quadrature_per_v
    peak = float(max(np.max(np.abs(volts.real)), np.max(np.abs(volts.imag))))
    return AwgWaveform(volts.real / peak, volts.imag / peak, 2.0 * peak, float(sample_rate_hz))


# ---------------------------------------------------------------------------------------------
# Receiver


@dataclass(frozen=True)
class BandCalibration:
    """Shot-noise unit of one band at symbol level (matched filter output)."""

    n0_raw: float  # variance per quadrature of one SNU [V^2]
    n0_rel_se: float  # relative standard error of n0_raw (from the calibration's length)
    v_el_snu: float
    offset: complex  # mean of the shot-noise capture's symbols [V] (reported, see _normalise)


@dataclass(frozen=True)
class BandSync:
    """Where a band's symbols are: fractional delay, pilot residue, frame offset, gain."""

    delay_samples: float
    pilot_residue: int
    frame_offset: int  # known-sequence index of stream symbol 0
    gain: complex  # received ~ gain * known (SNU), from frame sync
    peak_to_sidelobe: float
    timing_line_ratio: float


@dataclass
class BandRecord:
    """What one record gave for one band."""

    pilot_t_s: np.ndarray  # stream time of each pilot [s]
    pilot_phase_rad: np.ndarray  # unwrapped pilot phase [rad]
    pilots_snu: np.ndarray  # the pilots themselves, complex128 [SNU] (SPM works on them)
    pilot_power_snu: float  # mean |pilot|^2 [SNU]
    band_power_snu: float  # mean |y|^2 over all symbols [SNU]
    pe: PeSums  # sums of (known quantum symbol, received normalised symbol)
    gain: complex  # per-record gain received/known (SNU)
    locked: bool
    #: the record's received quantum symbols y, phase-corrected and normalised, complex128
    #: x + jp [SNU] in stream order (what pe sums; the dashboard's constellation shows them)
    symbols_snu: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.complex128))


@dataclass
class _BandStream:
    sync: BandSync
    lock_gain: float
    resync: bool = False


@dataclass
class RecordResult:
    """Per band results of one record (empty while not synchronised)."""

    t0_s: float
    bands: dict[int, BandRecord] = field(default_factory=dict)
    resynchronised: list[int] = field(default_factory=list)


class IsaqnReceiver:
    """Calibration, synchronisation and streaming analysis of all nodes' bands."""

    def __init__(self, config: IsaqnConfig, sequences: Sequence[NodeSequence]) -> None:
        self.config = config
        self.sequences = list(sequences)
        self.nodes = [s.node for s in self.sequences]
        rates = {n.symbol_rate_hz for n in self.nodes}
        if len(rates) != 1:
            raise ValueError(f"all nodes must share one symbol rate, got {sorted(rates)} Bd")
        self.symbol_rate_hz = rates.pop()
        self.fs_hz = config.sample_rate_hz
        self.sps = round(self.fs_hz / self.symbol_rate_hz)
        self.span = config.pulse_span_symbols
        self.group_delay = matched_group_delay_samples(self.sps, self.span)
        self.carriers_hz = tuple(n.carrier_hz for n in self.nodes)
        self.centred_taps = matched_taps(self.sps, self.span, config.rolloff)
        self.calibration: list[BandCalibration] | None = None
        self.chain: ReceiverChain | None = None
        self.streams: list[_BandStream] = []
        self.samples_in = 0  # samples of the current stream consumed
        self._stream_t0 = 0.0

    # -- calibration -------------------------------------------------------------------
    def _ddc_once(
        self,
        carriers_hz: tuple[float, ...],
        taps: np.ndarray,
        decim: int,
        first_output_sample: int,
        record: np.ndarray,
    ) -> np.ndarray:
        """One record through a fresh DDC: (n_bands, n_out) complex64."""
        cfg = DDCConfig(self.fs_hz, carriers_hz, taps, decim, "ftf")
        state = DDCState.initial(cfg, first_output_sample)
        out, _ = ddc_process(np.asarray(record, np.complex64), state, cfg)
        return out

    def symbol_outputs(self, record: np.ndarray) -> np.ndarray:
        """Matched-filter outputs at the symbol rate (any timing), (n_bands, n) complex64,
        the filter's start-up transient dropped."""
        out = self._ddc_once(self.carriers_hz, self.centred_taps, self.sps, 0, record)
        return out[:, self.span + 2 :]

    def calibrate(
        self, electronic_records: Sequence[np.ndarray], shot_records: Sequence[np.ndarray]
    ) -> list[BandCalibration]:
        """Shot-noise unit per band from LO-off and signal-off records (raw complex volts)."""
        elec = np.concatenate([self.symbol_outputs(r) for r in electronic_records], axis=1)
        shot = np.concatenate([self.symbol_outputs(r) for r in shot_records], axis=1)
        result = []
        for b in range(len(self.nodes)):
            # I and Q pooled: one SNU for both quadratures (a heterodyne receiver's outputs are
            # balanced by construction; the pooled estimate has half the variance)
            cal = calibrate_shot_noise(
                np.concatenate([shot[b].real, shot[b].imag]),
                np.concatenate([elec[b].real, elec[b].imag]),
            )
            result.append(
                BandCalibration(
                    n0_raw=cal.n0_raw,
                    n0_rel_se=cal.n0_se_raw / cal.n0_raw,
                    v_el_snu=cal.v_el_snu,
                    offset=complex(np.mean(shot[b])),
                )
            )
        self.calibration = result
        return result

    # -- synchronisation ---------------------------------------------------------------
    def _sync_band(self, record: np.ndarray, b: int) -> BandSync:
        seq = self.sequences[b]
        node = seq.node
        carrier = (node.carrier_hz,)
        raw = self._ddc_once(carrier, self.centred_taps, 1, 0, record)
        skip = (self.span + 2) * self.sps
        timing = symbol_timing(raw[0, skip:], self.sps)
        # symbol centres in the filter output at skip + tau + m sps; in its input minus Q
        delay = (skip + timing.offset_samples - self.group_delay) % self.sps
        delay = 0.0 if delay >= self.sps else delay
        taps = matched_taps(self.sps, self.span, self.config.rolloff, delay)[None, :]
        symbols = self._ddc_once(carrier, taps, self.sps, self.group_delay, record)[0]
        first = self.span + 2
        residue = (first + pilot_offset(symbols[first:], node.pilot_period)) % node.pilot_period
        chain = ReceiverChain(
            self.fs_hz,
            carrier,
            self.symbol_rate_hz,
            PilotPattern(node.pilot_period, residue),
            taps=taps,
            first_output_sample=self.group_delay,
            method="ftf",
        )
        out = chain.run(np.asarray(record, np.complex64))[0]
        idx = out["symbol_index"]
        keep = idx >= first
        dense = np.zeros(int(idx[-1]) + 1 - first, dtype=np.complex128)
        dense[idx[keep] - first] = out["symbols"][keep]
        dense = self._normalise(b, dense)
        sync = frame_offset(dense, seq.quantum, cyclic=True)
        offset = (sync.offset - first) % seq.symbols.size
        # stream symbol m is a pilot iff m % P == residue, and it is known symbol m + offset,
        # a pilot iff (m + offset) % P == 0: so offset = -residue (mod P)
        if offset % node.pilot_period != (-residue) % node.pilot_period:
            raise ValueError(
                f"{node.name}: frame sync at symbol {offset} disagrees with the pilot positions "
                f"(residue {residue}); no lock (peak/sidelobe {sync.peak_to_sidelobe:.1f})"
            )
        return BandSync(
            delay_samples=float(delay),
            pilot_residue=int(residue),
            frame_offset=int(offset),
            gain=complex(sync.peak),
            peak_to_sidelobe=float(sync.peak_to_sidelobe),
            timing_line_ratio=float(timing.line_ratio),
        )

    def _normalise(self, b: int, y: np.ndarray) -> np.ndarray:
        """Symbols in SNU. No offset is subtracted: an ADC offset is at 0 Hz, where no band's
        carrier sits, so the matched filter already rejects it (``BandCalibration.offset``
        only reports what is left of it)."""
        if self.calibration is None:
            raise RuntimeError("calibrate() before synchronising or processing")
        return np.asarray(y, dtype=np.complex128) / math.sqrt(self.calibration[b].n0_raw)

    def synchronise(self, record: np.ndarray, t0_s: float = 0.0) -> list[BandSync]:
        """Find every band's timing, pilots and frame in ``record`` (which starts at time
        ``t0_s``) and start a new stream at its first sample: pass ``record`` to
        :meth:`process` next."""
        syncs = [self._sync_band(record, b) for b in range(len(self.nodes))]
        self._start_stream(syncs)
        self._stream_t0 = float(t0_s)
        return syncs

    def _start_stream(self, syncs: list[BandSync]) -> None:
        taps = np.stack(
            [matched_taps(self.sps, self.span, self.config.rolloff, s.delay_samples) for s in syncs]
        )
        self.chain = ReceiverChain(
            self.fs_hz,
            self.carriers_hz,
            self.symbol_rate_hz,
            [
                PilotPattern(n.pilot_period, s.pilot_residue)
                for n, s in zip(self.nodes, syncs, strict=True)
            ],
            taps=taps,
            first_output_sample=self.group_delay,
            method="ftf",
        )
        self.streams = [_BandStream(s, abs(s.gain)) for s in syncs]
        self.samples_in = 0

    # -- streaming ---------------------------------------------------------------------
    def process(self, record: np.ndarray) -> RecordResult:
        """The next contiguous record of raw complex volts (I + jQ) of the stream."""
        if self.chain is None:
            raise RuntimeError("synchronise() before process()")
        x = np.asarray(record, dtype=np.complex64)
        out = self.chain.process(x)
        self.samples_in += x.size
        result = RecordResult(t0_s=self._stream_t0 + (self.samples_in - x.size) / self.fs_hz)
        first_valid = self.span + 2
        for b, stream in enumerate(self.streams):
            seq = self.sequences[b]
            band = out[b]
            sync = stream.sync
            # pilots: time of each symbol centre (stream start at t0 of the sync record)
            p_idx = band["pilot_index"]
            t_pilot = self._stream_t0 + (sync.delay_samples + p_idx * self.sps) / self.fs_hz
            pil_valid = p_idx >= first_valid
            q_idx = band["symbol_index"]
            ok = q_idx >= first_valid
            y = self._normalise(b, band["symbols"][ok])
            known_idx = (q_idx[ok] + sync.frame_offset) % seq.symbols.size
            a = seq.symbols[known_idx]
            pe = PeSums.of(a, y) if y.size else PeSums()
            gain = complex(np.vdot(a, y) / np.vdot(a, a)) if y.size else 0j
            locked = abs(gain) >= LOCK_FRACTION * stream.lock_gain
            if not locked and y.size > 100:
                stream.resync = True
            pilots = self._normalise(b, band["pilot_symbols"][pil_valid])
            result.bands[b] = BandRecord(
                pilot_t_s=t_pilot[pil_valid],
                pilot_phase_rad=band["pilot_phase_rad"][pil_valid],
                pilots_snu=pilots,
                pilot_power_snu=float(np.mean(np.abs(pilots) ** 2)) if pilots.size else 0.0,
                band_power_snu=float(np.mean(np.abs(y) ** 2)) if y.size else 0.0,
                pe=pe if locked else PeSums(),
                gain=gain,
                locked=locked,
                symbols_snu=y,
            )
        return result

    @property
    def needs_resync(self) -> bool:
        return any(s.resync for s in self.streams)
