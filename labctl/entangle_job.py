"""The entanglement network's main job: pumps on resonance, taggers streaming, live per pair.

Data flows one way: the taggers' :class:`~drivers.tdc.TagBatch` es (instruments) ->
:class:`~labctl.entangle_feed.EntanglementFeed` (the chain replay runs too:
:class:`~labctl.entangle_stream.TagStream` (relabel, clock alignment of a second free-running
tagger, merge) -> :class:`~labctl.entangle_monitor.EntanglementMonitor` (dsp coincidence
engine, Franson scans, BBM92)) -> sinks (live display, JSON, recorder). The job itself drives the
actuators: ring TEC, pump lasers and the users' interferometer phase shifters.

Steps of :meth:`EntanglementJob.run`:

1. the bench file's interlocks armed (:class:`~labctl.bench_control.BenchControl`: their own
   watchdog threads); ring TEC to its setpoint through the controller's own PID (waits until
   within 0.01 degC), pumps to their wavelengths and powers with emission on (waits for the
   diodes), phase shifters to DC, the channels' inputs enabled and every other input disabled;
2. the bench file's ``[[loops]]`` engaged (unless ``loops=False``, ``labctl run --no-loops``):
   every ``autostart`` loop (the ring TEC handed over bumplessly to the host PID, the pump
   wavemeter locks) and the phase lock of every user's interferometer; the job waits until the
   locks hold (``LOCK_TOLERANCE``), then starts the taggers' streams. A loop that holds one of
   the job's actuators must agree with the [entanglement] section (ring temperature, pump
   wavelength, volts per 2 pi), or the job refuses to start;
3. loop: read every tagger, push to the stream, feed the merged tags to the monitor; step the
   users' phases (:func:`~labctl.entangle_monitor.scan_phases`) every ``step_s`` of data,
   leaving ``settle_s`` of data out after each change; a locked user's phase is stepped by
   moving its lock's setpoint with the volts fed forward (the lock then holds the scan phase
   against the interferometer's drift), an unlocked one by writing its phase shifter; every
   ``update_s`` of data emit an :class:`~labctl.entangle_status.EntanglementStatus` with the
   instruments', loops' and interlocks' state;
4. on ``duration_s`` of data, ``stop`` (Ctrl-C) or an error: loops stopped and their actuators
   handed back, watchdog stopped, instruments to their safe state
   (:meth:`labctl.bench.Bench.close`: pumps off, phase shifters off, TEC ramped down and off,
   streams stopped).

With ``bench.clock = "manual"`` the job moves the simulated clock itself (``tick_s`` per
read, ticking the loops due on the way; the interlocks are evaluated at every update), so tests
run it exactly and faster than real time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from drivers.errors import InstrumentError
from drivers.sim.clock import VirtualClock
from drivers.tdc import TagBatch
from labctl.bench import Bench
from labctl.bench_control import BenchControl, ControlError
from labctl.config import BenchConfig
from labctl.entangle_config import EntanglementConfig
from labctl.entangle_feed import EntanglementFeed, FeedError, ReadResult
from labctl.entangle_monitor import scan_phases
from labctl.entangle_status import EntanglementStatus, PumpStatus, TecStatus

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
StatusSink = Callable[[EntanglementStatus], None]
#: TEC within this of its setpoint, for this many readings 50 ms apart, before the pumps go on
TEC_READY_C = 0.01
TEC_STEADY_READINGS = 20
#: lock tolerances before the taggers start (loop units) and how long locking may take (s)
LOCK_TOLERANCE = {"laser_lock": 20.0, "phase_lock": 0.1}
LOCK_TIMEOUT_S = 30.0


class JobError(RuntimeError):
    """The job cannot go on (the message names the instrument and what failed)."""


class EntanglementJob:
    """One run of the entanglement network on a connected bench."""

    def __init__(
        self,
        bench: Bench,
        config: BenchConfig,
        *,
        progress: Progress | None = None,
        tick_s: float = 0.05,
        loops: bool = True,
        interlock_log: Path | None = None,
    ) -> None:
        if config.entanglement is None:
            raise JobError(f"{config.path}: no [entanglement] section")
        self.bench = bench
        self.config = config
        self.ent: EntanglementConfig = config.entanglement
        self.progress = progress or (lambda text: None)
        self.tick_s = tick_s
        try:
            self.feed = EntanglementFeed(self.ent, where=str(config.path), progress=self.progress)
        except FeedError as exc:
            raise JobError(str(exc)) from exc
        self.monitor = self.feed.monitor
        self.stream = self.feed.stream
        self.users = self.feed.users
        #: called with every read's batches and its result, before anything is commanded
        self.read_sink: Callable[[Sequence[tuple[str, TagBatch]], ReadResult], None] | None = None
        #: user -> (phase-lock loop, volts per 2 pi) for the users whose phase a loop holds
        self.phase_locks: dict[str, tuple[str, float]] = {}
        self.control: BenchControl | None = None
        names = self._loop_names() if loops else []
        if names or config.interlocks:
            host = bench.sim_host
            self.control = BenchControl(
                config,
                bench.instruments,
                vclock=None if host is None else host.bench.clock,
                names=names,
                interlock_log=interlock_log,
            )

    def _loop_names(self) -> list[str]:
        """The loops this job runs: every ``autostart`` loop, plus the phase locks of the
        users' interferometers (the phase scan then moves their setpoints). A loop that holds
        one of the job's actuators must agree with the [entanglement] section."""
        ent, path = self.ent, self.config.path
        pumps = {p.laser: p for p in ent.pumps}
        shifters = {u.interferometer: u for u in ent.users if u.interferometer is not None}
        names: list[str] = []
        for cfg in self.config.loops:
            where = f"{path}: loop {cfg.name!r}"
            if cfg.kind == "temperature" and cfg.tec == ent.tec:
                if abs(cfg.setpoint - ent.ring_temperature_c) > 1e-9:
                    raise JobError(
                        f"{where}: setpoint {cfg.setpoint:g} degC differs from "
                        f"entanglement.ring_temperature_c = {ent.ring_temperature_c:g}"
                    )
            if cfg.kind == "laser_lock" and cfg.laser in pumps:
                pump = pumps[cfg.laser]
                assert cfg.setpoint_nm is not None
                if abs(cfg.setpoint_nm - pump.wavelength_nm) > 1e-6:
                    raise JobError(
                        f"{where}: setpoint_nm {cfg.setpoint_nm:.4f} differs from the wavelength "
                        f"of pump {pump.label} ({pump.wavelength_nm:.4f} nm) in "
                        "[[entanglement.pumps]]"
                    )
            if cfg.kind == "phase_lock" and cfg.awg in shifters:
                user = shifters[cfg.awg]
                assert cfg.volts_per_2pi is not None
                if abs(cfg.volts_per_2pi - user.volts_per_2pi) > 1e-9:
                    raise JobError(
                        f"{where}: volts_per_2pi {cfg.volts_per_2pi:g} differs from "
                        f"entanglement.users.{user.name}.volts_per_2pi = {user.volts_per_2pi:g}"
                    )
                self.phase_locks[user.name] = (cfg.name, cfg.volts_per_2pi)
                names.append(cfg.name)
            elif cfg.autostart:
                names.append(cfg.name)
        return names

    def _instrument(self, name: str) -> Any:
        return self.bench.instruments[name]

    def _clock(self) -> VirtualClock | None:
        host = self.bench.sim_host
        return None if host is None else host.bench.clock

    def _wait(self, what: str, ready: Callable[[], bool], timeout_s: float) -> None:
        clock = self._clock()
        start = time.monotonic()
        waited = 0.0
        while not ready():
            if clock is not None and not clock.realtime:
                clock.advance(0.05)
                waited += 0.05
            else:
                time.sleep(0.05)
                waited = time.monotonic() - start
            if waited > timeout_s:
                raise JobError(f"{what} not reached within {timeout_s:g} s")

    # -- set-up ------------------------------------------------------------------------------
    def configure(self) -> None:
        """Interlocks armed; TEC, pumps, phase shifters as the bench file asks; the loops
        engaged and locked; then the taggers streaming."""
        ent = self.ent
        control = self.control
        if control is not None and self.config.interlocks:
            control.start_watchdog()
            self.progress(f"interlocks armed: {', '.join(r.name for r in self.config.interlocks)}")
        tec = self._instrument(ent.tec)
        tec.set("setpoint_c", ent.ring_temperature_c)
        if not tec.get("output"):
            tec.set("output", True)
        self.progress(f"{ent.tec}: ring to {ent.ring_temperature_c:.3f} degC")
        settled: list[float] = []

        def steady() -> bool:  # within TEC_READY_C for TEC_STEADY_READINGS readings in a row
            settled.append(abs(float(tec.get("temperature_c")) - ent.ring_temperature_c))
            return len(settled) >= TEC_STEADY_READINGS and all(
                e < TEC_READY_C for e in settled[-TEC_STEADY_READINGS:]
            )

        self._wait(
            f"{ent.tec}: ring temperature steady within {TEC_READY_C} degC of setpoint",
            steady,
            180.0,
        )
        for pump in ent.pumps:
            laser = self._instrument(pump.laser)
            laser.set("wavelength_nm", pump.wavelength_nm)
            laser.set("power_mw", pump.power_mw)
            laser.set("emission", True)
            self.progress(
                f"{pump.laser}: pump {pump.label} at {pump.wavelength_nm:.4f} nm, "
                f"{pump.power_mw:g} mW, emission on"
            )
        for pump in ent.pumps:
            laser = self._instrument(pump.laser)
            self._wait(
                f"{pump.laser}: power {pump.power_mw} mW",
                lambda laser=laser, p=pump.power_mw: (
                    float(laser.get("measured_power_mw")) >= 0.99 * p
                ),
                10.0,
            )
        self._set_phases(scan_phases(self.users, 0, ent.scan_steps))
        for u in ent.users:
            if u.interferometer is not None:
                awg, ch = u.interferometer
                self._instrument(awg).set("output", True, ch)
        if control is not None and control.configs:
            control.engage(self.progress)
            tolerances = {
                name: LOCK_TOLERANCE[cfg.kind]
                for name, cfg in control.configs.items()
                if cfg.kind in LOCK_TOLERANCE
            }
            try:
                control.wait_locked(tolerances, LOCK_TIMEOUT_S)
            except ControlError as exc:
                raise JobError(str(exc)) from exc
            if tolerances:
                self.progress(f"locked: {', '.join(tolerances)}")
        for name in ent.taggers:
            tagger = self._instrument(name)
            used = {c.input for c in ent.channels if c.tagger == name}
            for inp in tagger.channels:
                tagger.set("enabled", inp in used, inp)
            tagger.start_stream()
            self.progress(f"{name}: streaming inputs {sorted(used)}")

    def _set_phases(self, phases: dict[str, float]) -> None:
        """Each user's phase: a locked one by stepping its lock's setpoint (with the volts the
        step needs fed forward, so it holds the new phase at once); an unlocked one by setting
        its phase shifter to the DC level of the phase (mod 2 pi)."""
        runner = None if self.control is None else self.control.engaged
        for u in self.ent.users:
            if u.interferometer is None:
                continue
            if runner is not None and u.name in self.phase_locks:
                loop, volts_per_2pi = self.phase_locks[u.name]
                target = _wrap_rad(phases[u.name])
                now = runner.status()[loop].setpoint
                step_v = _wrap_rad(target - now) / (2 * math.pi) * volts_per_2pi
                runner.step_setpoint(loop, target, step_v)
                continue
            awg_name, ch = u.interferometer
            awg = self._instrument(awg_name)
            volts = (phases[u.name] % (2 * math.pi)) / (2 * math.pi) * u.volts_per_2pi
            if awg.get("function", ch) != "DC":
                awg.set("function", "DC", ch)
            awg.set("offset_v", volts, ch, ramp=False)

    # -- the loop ----------------------------------------------------------------------------
    @property
    def lost_events(self) -> int:
        return self.feed.lost_events

    def read_once(self) -> ReadResult:
        """Read every tagger once, hand the batches to the feed; command the phase step the
        feed asks for."""
        clock = self._clock()
        if self.control is not None:
            self.control.advance(self.tick_s)  # manual clock: ticks the loops on the way
        elif clock is not None and not clock.realtime:
            clock.advance(self.tick_s)
        batches = [(name, self._instrument(name).read_tags(1.0)) for name in self.ent.taggers]
        try:
            result = self.feed.push_read(batches)
        except FeedError as exc:
            raise JobError(str(exc)) from exc
        if self.read_sink is not None:
            self.read_sink(batches, result)
        if result.phases_rad is not None:
            self._set_phases(result.phases_rad)
        return result

    def status(self, messages: Sequence[str] = ()) -> EntanglementStatus:
        """The feed's update with the pumps', TEC's, loops' and interlocks' state read now."""
        pumps = []
        for pump in self.ent.pumps:
            laser = self._instrument(pump.laser)
            pumps.append(
                PumpStatus(
                    name=pump.laser,
                    label=pump.label,
                    emission=bool(laser.get("emission")),
                    wavelength_nm=float(laser.get("wavelength_nm")),
                    power_mw=float(laser.get("measured_power_mw")),
                )
            )
        tec = self._instrument(self.ent.tec)
        return self.feed.status(
            pumps=pumps,
            tec=TecStatus(
                name=self.ent.tec,
                temperature_c=float(tec.get("temperature_c")),
                setpoint_c=float(tec.get("setpoint_c")),
                current_a=float(tec.get("tec_current_a")),
                output=bool(tec.get("output")),
            ),
            loops=() if self.control is None else self.control.rows(),
            interlocks={} if self.control is None else self.control.interlocks(),
            messages=messages,
        )

    def run(
        self,
        *,
        duration_s: float | None = None,
        stop: threading.Event | None = None,
        sinks: Sequence[StatusSink] = (),
    ) -> EntanglementStatus | None:
        """Configure and stream until ``duration_s`` of data or ``stop``; the last status."""
        self.configure()
        last: EntanglementStatus | None = None
        while True:
            result = self.read_once()
            if result.update_due:
                if self.control is not None:
                    self.control.evaluate()
                last = self.status()
                for sink in sinks:
                    sink(last)
            if duration_s is not None and self.feed.data_time_s + 1e-9 >= duration_s:
                break
            if stop is not None and stop.is_set():
                break
        return last

    def shutdown(self) -> None:
        """Loops stopped and their actuators handed back, interlock watchdog stopped."""
        if self.control is not None:
            self.control.stop()


def _wrap_rad(phase_rad: float) -> float:
    """``phase_rad`` in [-pi, pi)."""
    return (phase_rad + math.pi) % (2 * math.pi) - math.pi


def run_entanglement(
    config: BenchConfig,
    *,
    duration_s: float | None = None,
    sinks: Sequence[StatusSink] = (),
    progress: Progress | None = None,
    clock: VirtualClock | None = None,
    stop: threading.Event | None = None,
    job_hook: Callable[[EntanglementJob], None] | None = None,
    loops: bool = True,
    interlock_log: Path | None = None,
) -> tuple[EntanglementStatus | None, dict]:
    """Connect, run the job (with the bench's loops and interlocks unless ``loops`` is False:
    then the TEC's own PID holds the ring and the phase shifters are stepped open-loop), always
    leave the instruments safe. Returns (last status, info)."""
    bench = Bench(config, clock=clock)
    job: EntanglementJob | None = None
    try:
        bench.connect(progress=progress)
        bench.apply_safe_start(progress=progress)
        job = EntanglementJob(
            bench, config, progress=progress, loops=loops, interlock_log=interlock_log
        )
        if job_hook is not None:
            job_hook(job)
        last = job.run(duration_s=duration_s, sinks=sinks, stop=stop)
        return last, {"lost_events": job.lost_events, "scans": job.monitor.scans_done}
    except (InstrumentError, ControlError) as exc:
        raise JobError(str(exc)) from exc
    finally:
        if job is not None:
            job.shutdown()
        bench.close()
