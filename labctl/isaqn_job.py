"""The ISAQN main job: drive the nodes' AWGs, calibrate, acquire continuously, analyse, report.

Data flows one way: the scope's records (instruments) -> :class:`~labctl.isaqn_feed.IsaqnFeed`
(the chain replay runs too: :class:`IsaqnReceiver` (dsp) ->
:class:`~labctl.isaqn_monitor.NetworkMonitor` (per-node analysis)) -> sinks (live display,
HDF5 recorder). Actuators are only touched by the job itself: at start (uploads, PZT drives),
for the calibration (laser emission, AWG outputs) and at the end (safe state through
:meth:`labctl.bench.Bench.close`).

Steps of :meth:`IsaqnJob.run`:

1. configure the scope (rate, record length, channel scale) and upload every node's looped
   waveform (:func:`labctl.isaqn_pipeline.awg_waveform`) to its AWG channels; PZT drives as
   configured;
2. calibration: ``calibration_records`` records with the laser off (electronic noise), then
   laser on and node outputs off (shot noise), then node outputs on;
3. the loop: acquire a record (overload flags checked), hand it to the record sink, push it
   to the :class:`~labctl.isaqn_feed.IsaqnFeed` (calibration on the first data record,
   synchronisation, processing, monitors, re-synchronisation of a band that lost lock), pass
   the :class:`NetworkStatus` it emits every ``update_s`` of data to the sinks;
4. on Ctrl-C, an error or the end of ``duration_s``: sinks closed (the recording stays
   readable), instruments to their safe state (outputs off, laser off).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from drivers.errors import InstrumentError
from drivers.sim.clock import VirtualClock
from labctl.bench import Bench
from labctl.config import BenchConfig
from labctl.isaqn_feed import FeedError, IsaqnFeed, Record
from labctl.isaqn_pipeline import awg_waveform
from labctl.isaqn_status import NetworkStatus

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
StatusSink = Callable[[NetworkStatus], None]


class JobError(RuntimeError):
    """The job cannot go on (what and why in the message)."""


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
        #: the laser's wavelength, for the strain figures (and the recording)
        self.wavelength_nm = float(self._instrument(self.isaqn.laser).get("wavelength_nm"))
        self.feed = IsaqnFeed(
            self.isaqn, config.seed, self.wavelength_nm * 1e-9, progress=self.progress
        )
        self.sequences = self.feed.sequences
        self.receiver = self.feed.receiver
        self.monitor = self.feed.monitor
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
        """One record of both ICR outputs; an ADC overload is reported, not hidden. The
        record goes to the record sink (the recorder) before anything analyses it."""
        cfg = self.isaqn
        scope = self._instrument(cfg.scope)
        waves = scope.acquire([cfg.channel_i, cfg.channel_q])
        wi, wq = waves[cfg.channel_i], waves[cfg.channel_q]
        overloads = 0
        for ch in (cfg.channel_i, cfg.channel_q):
            if scope.overloaded(ch):
                overloads += 1
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
            overloads=overloads,
        )
        self.records_acquired += 1
        self.overloads += overloads
        if self.record_sink is not None:
            self.record_sink(record)
        return record

    def calibrate(self) -> None:
        """Electronic-noise records (LO off), shot-noise records (signal off), each pushed to
        the feed, which then calibrates the receiver; then the node outputs on."""
        cfg = self.isaqn
        laser = self._instrument(cfg.laser)
        self._node_outputs(False)
        laser.set("emission", False)
        self.progress(f"calibration: {cfg.calibration_records} records with the LO off")
        for _ in range(cfg.calibration_records):
            self.feed.push(self.acquire("electronic"))
        laser.set("emission", True)
        self._wait_for_laser()
        self.progress(f"calibration: {cfg.calibration_records} records of shot noise")
        for _ in range(cfg.calibration_records):
            self.feed.push(self.acquire("shot"))
        try:
            self.feed.calibrate()
        except FeedError as exc:
            raise JobError(str(exc)) from exc
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
        last: NetworkStatus | None = None
        while True:
            try:
                status = self.feed.push(self.acquire())
            except FeedError as exc:
                raise JobError(str(exc)) from exc
            if status is not None:
                last = status
                for sink in sinks:
                    sink(status)
            if duration_s is not None and self.feed.data_s + 1e-9 >= duration_s:
                break
            if stop is not None and stop.is_set():
                break
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
