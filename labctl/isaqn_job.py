"""The ISAQN main job: drive the nodes' AWGs, calibrate, acquire continuously, analyse, report.

Data flows one way: the scope's records (instruments) -> :class:`IsaqnReceiver` (dsp) ->
:class:`~labctl.isaqn_monitor.NetworkMonitor` (per-node analysis) -> sinks (live display,
HDF5 recorder). Actuators are only touched by the job itself: at start (uploads, PZT drives),
for the calibration (laser emission, AWG outputs) and at the end (safe state through
:meth:`labctl.bench.Bench.close`).

Steps of :meth:`IsaqnJob.run`:

1. configure the scope (rate, record length, channel scale) and upload every node's looped
   waveform (:func:`labctl.isaqn_pipeline.awg_waveform`) to its AWG channels; PZT drives as
   configured;
2. calibration: ``calibration_records`` records with the laser off (electronic noise), then
   laser on and node outputs off (shot noise), then node outputs on;
3. synchronisation on the first data record, then a loop: acquire, check the scope's
   overload flags, process, update the monitors, emit a :class:`NetworkStatus` every
   ``update_s`` of data, re-synchronise a band that lost lock;
4. on Ctrl-C, an error or the end of ``duration_s``: sinks closed (the recording stays
   readable), instruments to their safe state (outputs off, laser off).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers.errors import InstrumentError
from drivers.sim.clock import VirtualClock
from labctl.bench import Bench
from labctl.config import BenchConfig
from labctl.isaqn_monitor import NetworkMonitor
from labctl.isaqn_pipeline import IsaqnReceiver, NodeSequence, awg_waveform, node_sequence
from labctl.isaqn_status import NetworkStatus

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
StatusSink = Callable[[NetworkStatus], None]


class JobError(RuntimeError):
    """The job cannot go on (what and why in the message)."""


@dataclass
class Record:
    """One scope record: complex volts I + jQ and the raw codes for the recorder."""

    samples: np.ndarray  # complex128 volts
    codes_i: np.ndarray  # int16
    codes_q: np.ndarray  # int16
    volts_per_code: tuple[float, float]
    offset_v: tuple[float, float]
    index: int
    kind: str  # "electronic" (LO off), "shot" (signal off) or "data"


class IsaqnJob:
    """Runs the ISAQN network on a connected :class:`Bench`."""

    def __init__(
        self,
        bench: Bench,
        config: BenchConfig,
        *,
        progress: Progress | None = None,
        record_sink: Callable[[Record], None] | None = None,
    ) -> None:
        if config.isaqn is None:
            raise JobError(f"{config.path}: no [isaqn] section: not an ISAQN bench")
        self.bench = bench
        self.config = config
        self.isaqn = config.isaqn
        self.progress = progress or (lambda message: None)
        self.record_sink = record_sink
        self.sequences: list[NodeSequence] = [
            node_sequence(node, config.seed, k) for k, node in enumerate(self.isaqn.nodes)
        ]
        self.receiver = IsaqnReceiver(self.isaqn, self.sequences)
        wavelength_nm = float(self._instrument(self.isaqn.laser).get("wavelength_nm"))
        self.monitor = NetworkMonitor(self.isaqn, self.receiver, wavelength_m=wavelength_nm * 1e-9)
        self.records_acquired = 0
        self.overloads = 0

    # -- instruments ------------------------------------------------------------------
    def _instrument(self, name: str) -> Any:  # the driver of the instrument's class
        try:
            return self.bench.instruments[name]
        except KeyError:
            raise JobError(f"instrument {name!r} is not connected") from None

    def configure(self) -> None:
        """Scope acquisition and channels; node waveforms uploaded (outputs still off)."""
        cfg = self.isaqn
        scope = self._instrument(cfg.scope)
        scope.apply({"sample_rate_hz": cfg.sample_rate_hz, "record_length": cfg.record_length})
        for ch in (cfg.channel_i, cfg.channel_q):
            scope.set("channel_scale_v_per_div", cfg.scope_scale_v_per_div, ch)
            scope.set("channel_offset_v", 0.0, ch)
        for k, seq in enumerate(self.sequences):
            node = seq.node
            self.progress(f"{node.name}: uploading {node.sequence_symbols} symbols")
            wave = awg_waveform(seq, cfg.sample_rate_hz, cfg.rolloff, cfg.pulse_span_symbols)
            for port, data, tag in ((node.awg_i, wave.i_norm, "I"), (node.awg_q, wave.q_norm, "Q")):
                awg = self._instrument(port[0])
                awg.output_off(port[1])
                awg.upload_arb(port[1], f"NODE{k + 1}{tag}", data, wave.sample_rate_hz)
                if "arb_filter" in awg.settings():
                    awg.set("arb_filter", "normal", port[1])
                awg.set("offset_v", 0.0, port[1])
                awg.set("amplitude_vpp", wave.amplitude_vpp, port[1])
            if node.pzt is not None and node.pzt_drive is not None:
                awg = self._instrument(node.pzt[0])
                drive = node.pzt_drive
                awg.set("function", drive.function, node.pzt[1])
                awg.set("frequency_hz", drive.freq_hz, node.pzt[1])
                awg.set("offset_v", 0.0, node.pzt[1])
                awg.set("amplitude_vpp", drive.amplitude_vpp, node.pzt[1])

    def _node_outputs(self, on: bool) -> None:
        for node in self.isaqn.nodes:
            ports = [node.awg_i, node.awg_q]
            if node.pzt is not None and node.pzt_drive is not None:
                ports.append(node.pzt)
            for port in ports:
                awg = self._instrument(port[0])
                (awg.output_on if on else awg.output_off)(port[1])

    def acquire(self, kind: str = "data") -> Record:
        """One record of both ICR outputs; an ADC overload is reported, not hidden."""
        cfg = self.isaqn
        scope = self._instrument(cfg.scope)
        waves = scope.acquire([cfg.channel_i, cfg.channel_q])
        wi, wq = waves[cfg.channel_i], waves[cfg.channel_q]
        for ch in (cfg.channel_i, cfg.channel_q):
            if scope.overloaded(ch):
                self.overloads += 1
                log.warning("%s channel %d clipped: raise scope_scale_v_per_div", cfg.scope, ch)
                scope.clear_protection(ch)
        record = Record(
            samples=wi.volts + 1j * wq.volts,
            codes_i=wi.codes,
            codes_q=wq.codes,
            volts_per_code=(wi.volts_per_code, wq.volts_per_code),
            offset_v=(wi.offset_v, wq.offset_v),
            index=self.records_acquired,
            kind=kind,
        )
        self.records_acquired += 1
        if self.record_sink is not None:
            self.record_sink(record)
        return record

    def calibrate(self) -> None:
        """Electronic-noise records (LO off), shot-noise records (signal off)."""
        cfg = self.isaqn
        laser = self._instrument(cfg.laser)
        self._node_outputs(False)
        laser.set("emission", False)
        self.progress(f"calibration: {cfg.calibration_records} records with the LO off")
        electronic = [self.acquire("electronic").samples for _ in range(cfg.calibration_records)]
        laser.set("emission", True)
        self._wait_for_laser()
        self.progress(f"calibration: {cfg.calibration_records} records of shot noise")
        shot = [self.acquire("shot").samples for _ in range(cfg.calibration_records)]
        calibration = self.receiver.calibrate(electronic, shot)
        for node, cal in zip(self.isaqn.nodes, calibration, strict=True):
            self.progress(f"{node.name}: v_el = {cal.v_el_snu:.4f} SNU")
        self._node_outputs(True)

    def _wait_for_laser(self, timeout_s: float = 10.0) -> None:
        """Wait until the laser's power is within 1 % of its setpoint (it turns on slowly)."""
        laser = self._instrument(self.isaqn.laser)
        target = float(laser.get("power_mw"))
        clock = self._clock()
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            power = float(laser.get("measured_power_mw"))
            if power >= 0.99 * target:
                return
            if clock is not None and not clock.realtime:
                clock.advance(0.05)
            else:
                time.sleep(0.05)
        raise JobError(f"{self.isaqn.laser}: power did not reach {target} mW in {timeout_s} s")

    def _clock(self) -> VirtualClock | None:
        host = self.bench.sim_host
        return None if host is None else host.bench.clock

    # -- the loop ---------------------------------------------------------------------
    def run(
        self,
        *,
        duration_s: float | None = None,
        stop: threading.Event | None = None,
        sinks: Sequence[StatusSink] = (),
    ) -> NetworkStatus | None:
        """Configure, calibrate and stream until ``duration_s`` of data, ``stop`` or Ctrl-C.

        Returns the last status (None if the loop never produced one)."""
        self.configure()
        self.calibrate()
        cfg = self.isaqn
        record_s = cfg.record_length / cfg.sample_rate_hz
        data_s = 0.0
        next_update_s = cfg.update_s
        last: NetworkStatus | None = None
        messages: list[str] = []  # what happened since the previous status
        first = self.acquire()
        syncs = self.receiver.synchronise(first.samples, 0.0)
        for node, s in zip(cfg.nodes, syncs, strict=True):
            self.progress(
                f"{node.name}: locked, delay {s.delay_samples:.3f} samples, frame at symbol "
                f"{s.frame_offset}, peak/sidelobe {s.peak_to_sidelobe:.1f}"
            )
        record = first
        while True:
            result = self.receiver.process(record.samples)
            self.monitor.update(result)
            data_s += record_s
            if data_s + 1e-9 >= next_update_s:
                next_update_s += cfg.update_s
                last = self.monitor.status(overloads=self.overloads, messages=tuple(messages))
                messages.clear()
                for sink in sinks:
                    sink(last)
            if duration_s is not None and data_s + 1e-9 >= duration_s:
                break
            if stop is not None and stop.is_set():
                break
            record = self.acquire()
            if self.receiver.needs_resync:
                streams = zip(cfg.nodes, self.receiver.streams, strict=True)
                lost = [n.name for n, st in streams if st.resync]
                text = f"{', '.join(lost)} lost lock at t = {data_s:.2f} s: re-synchronised"
                self.progress(text)
                messages.append(text)
                self.receiver.synchronise(record.samples, data_s)
                self.monitor.reset_streams()
        return last


def run_isaqn(
    config: BenchConfig,
    *,
    duration_s: float | None = None,
    sinks: Sequence[StatusSink] = (),
    progress: Progress | None = None,
    record_sink_factory: Callable[[IsaqnJob], Callable[[Record], None]] | None = None,
    clock: VirtualClock | None = None,  # simulated benches (tests: a manual clock)
    stop: threading.Event | None = None,
) -> tuple[NetworkStatus | None, dict]:
    """Connect, run the job, always leave the instruments safe. Returns (last status, info)."""
    bench = Bench(config, clock=clock)
    try:
        bench.connect(progress=progress)
        bench.apply_safe_start(progress=progress)
        job = IsaqnJob(bench, config, progress=progress)
        if record_sink_factory is not None:
            job.record_sink = record_sink_factory(job)
        last = job.run(duration_s=duration_s, sinks=sinks, stop=stop)
        info = {"records": job.records_acquired, "overloads": job.overloads}
        return last, info
    except InstrumentError as exc:
        raise JobError(str(exc)) from exc
    finally:
        bench.close()
