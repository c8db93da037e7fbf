"""The bench's feedback loops: ``[[loops]]`` tables bound to the connected instruments.

:class:`BenchLoops` turns each :class:`~labctl.loop_config.LoopConfig` into a
:class:`~labctl.loop_runner.LoopSpec` whose ``read``/``write``/``safe`` go through the drivers
(so every write is validated against the bench limits before a byte is sent), hands the
actuators over to the loops (:meth:`BenchLoops.engage`), runs them on one
:class:`~labctl.loop_runner.LoopRunner` and hands them back (:meth:`BenchLoops.release`).

Hand-over per kind:

``temperature``
    The controller is switched to constant-current mode (``mode = "ITE"``) at the current its
    own PID was applying, and the labctl PID starts from that current, so the stage sees no step.
    Release switches it back to temperature mode at the loop's setpoint (its own PID holds).
``laser_lock``
    The laser's wavelength is set to ``setpoint_nm`` once if it is elsewhere (which zeroes the
    fine tuning); the lock then acts through the fine tuning only. Release leaves the tuning.
``phase_lock``
    The AWG channel is put in DC with its output on; the loop starts from its present offset.

Clocks: a simulated bench on a manual clock runs the loops on virtual time (waiting advances
it); a real-time simulated bench waits for its virtual time (``clock_speed`` faster than the
wall clock); hardware uses the wall clock.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from drivers.instrument import Instrument
from drivers.sim.clock import VirtualClock
from labctl.loop_config import LoopConfig, fine_tuning_mhz_per_pm
from labctl.loop_runner import (
    AdvancingClock,
    LoopClock,
    LoopRunner,
    LoopSpec,
    LoopStatus,
    Reading,
    TickCallback,
    WallClock,
)
from labctl.pid import PID

log = logging.getLogger(__name__)


class VirtualTimeClock:
    """Loop clock of a real-time simulated bench: virtual seconds, waited for on the wall."""

    def __init__(self, vclock: VirtualClock) -> None:
        self.vclock = vclock

    def now_s(self) -> float:
        return self.vclock.now_s()

    def wait_until(self, t_s: float, stop: threading.Event) -> bool:
        remaining = (t_s - self.vclock.now_s()) / self.vclock.speed
        if remaining > 0:
            return stop.wait(remaining)
        return stop.is_set()


def loop_clock(vclock: VirtualClock | None) -> LoopClock:
    """The clock loops of a bench run on (see the module docstring)."""
    if vclock is None:
        return WallClock()
    if not vclock.realtime:
        return AdvancingClock(vclock.now_s, vclock.advance)
    return VirtualTimeClock(vclock)


def quadrature_phase_rad(i_v: float, q_v: float, dc_v: float) -> float:
    """Phase of a fringe read by two photodiodes in quadrature, in (-pi, pi]."""
    return math.atan2(q_v - dc_v, i_v - dc_v)


class LoopBinding:
    """read/write/safe/engage/release of one loop over the drivers."""

    def __init__(self, cfg: LoopConfig, instruments: Mapping[str, Instrument], clock: LoopClock):
        self.cfg = cfg
        self.instruments = instruments
        self.clock = clock
        self._last_scan: int | None = None
        self._last_scan_s = math.nan

    def instrument(self, name: str | None) -> Any:
        assert name is not None
        try:
            return self.instruments[name]
        except KeyError:
            raise KeyError(
                f"loop {self.cfg.name!r}: instrument {name!r} is not connected"
            ) from None

    # -- engage: hand the actuator to the loop; returns the loop's initial output -------------
    def present_output(self) -> float:
        """The output :meth:`engage` starts the loop from, read without writing anything:
        temperature: the current the TEC's own PID drives (0 A with its output off);
        laser_lock: the fine-tuning correction (0 when engage re-tunes to ``setpoint_nm``);
        phase_lock: the AWG's DC offset; each clamped to the loop's output range."""
        cfg = self.cfg
        if cfg.kind == "temperature":
            tec = self.instrument(cfg.tec)
            current = float(tec.get("tec_current_a")) if tec.get("output") else 0.0
            return cfg.settings.clamp(current)
        if cfg.kind == "laser_lock":
            assert cfg.setpoint_nm is not None
            laser = self.instrument(cfg.laser)
            if abs(float(laser.get("wavelength_nm")) - cfg.setpoint_nm) > 5e-5:
                return 0.0
            pm = float(laser.get("fine_tuning_pm"))
            return cfg.settings.clamp(-pm * fine_tuning_mhz_per_pm(cfg.setpoint_nm))
        awg_name, ch = cfg.awg or ("", 0)
        return cfg.settings.clamp(float(self.instrument(awg_name).get("offset_v", ch)))

    def engage(self) -> float:
        cfg = self.cfg
        initial = self.present_output()
        if cfg.kind == "temperature":
            tec = self.instrument(cfg.tec)
            if tec.get("mode") != "ITE":
                tec.set("mode", "ITE")
            tec.set("current_setpoint_a", initial)
            if not tec.get("output"):
                tec.set("output", True)
        elif cfg.kind == "laser_lock":
            laser = self.instrument(cfg.laser)
            assert cfg.setpoint_nm is not None
            if abs(float(laser.get("wavelength_nm")) - cfg.setpoint_nm) > 5e-5:
                laser.set("wavelength_nm", cfg.setpoint_nm)  # zeroes the fine tuning
        else:
            awg_name, ch = cfg.awg or ("", 0)
            awg = self.instrument(awg_name)
            if awg.get("function", ch) != "DC":
                awg.set("function", "DC", ch)
            awg.set("offset_v", initial, ch, ramp=False)
            if not awg.get("output", ch):
                awg.set("output", True, ch)
        return initial

    def release(self, setpoint: float) -> None:
        """Hand the actuator back (loop stopped in order, not faulted)."""
        if self.cfg.kind == "temperature":
            tec = self.instrument(self.cfg.tec)
            was_on = bool(tec.get("output"))  # off: a fault or an interlock; leave it off
            tec.set("setpoint_c", setpoint, ramp=False)
            tec.set("mode", "T")
            if was_on and not tec.get("output"):
                tec.set("output", True)

    # -- the loop's callables ------------------------------------------------------------------
    def read(self) -> float | Reading:
        cfg = self.cfg
        if cfg.kind == "temperature":
            return float(self.instrument(cfg.tec).get("temperature_c"))
        if cfg.kind == "laser_lock":
            reading = self.instrument(cfg.wavemeter).measure()
            now = self.clock.now_s()
            if reading.scan_index != self._last_scan:
                self._last_scan, self._last_scan_s = reading.scan_index, now
            return Reading((reading.frequency_hz - cfg.reference_hz) / 1e6, self._last_scan_s)
        scope = self.instrument(cfg.scope)
        assert cfg.i_channel is not None and cfg.q_channel is not None and cfg.dc_v is not None
        i_v = float(scope.mean_voltage_v(cfg.i_channel))
        q_v = float(scope.mean_voltage_v(cfg.q_channel))
        return quadrature_phase_rad(i_v, q_v, cfg.dc_v)

    def write(self, output: float) -> None:
        cfg = self.cfg
        if cfg.kind == "temperature":
            self.instrument(cfg.tec).set("current_setpoint_a", output)
        elif cfg.kind == "laser_lock":
            assert cfg.setpoint_nm is not None
            pm = -output / fine_tuning_mhz_per_pm(cfg.setpoint_nm)
            self.instrument(cfg.laser).set("fine_tuning_pm", round(pm, 2), ramp=False)
        else:
            awg_name, ch = cfg.awg or ("", 0)
            self.instrument(awg_name).set("offset_v", output, ch, ramp=False)

    def safe(self) -> Callable[[], None] | None:
        if self.cfg.kind == "temperature":
            return self.instrument(self.cfg.tec).safe_state
        return None


class BenchLoops:
    """The bench file's loops on connected instruments, run by one :class:`LoopRunner`."""

    def __init__(
        self,
        configs: Sequence[LoopConfig],
        instruments: Mapping[str, Instrument],
        *,
        vclock: VirtualClock | None = None,
        on_tick: TickCallback | None = None,
        only: Sequence[str] | None = None,
    ) -> None:
        chosen = [c for c in configs if (c.name in only if only is not None else c.autostart)]
        if only is not None:
            unknown = set(only) - {c.name for c in configs}
            if unknown:
                known = ", ".join(c.name for c in configs) or "none"
                raise KeyError(f"no loop named {', '.join(sorted(unknown))} (bench loops: {known})")
        self.configs = {c.name: c for c in chosen}
        self.clock = loop_clock(vclock)
        self.bindings = {c.name: LoopBinding(c, instruments, self.clock) for c in chosen}
        self.on_tick = on_tick
        self.runner: LoopRunner | None = None

    def engage(self) -> LoopRunner:
        """Hand every actuator to its loop and build the runner (not started)."""
        specs = []
        for name, binding in self.bindings.items():
            cfg = binding.cfg
            initial = binding.engage()
            pid = PID.from_settings(
                cfg.gains, cfg.settings, setpoint=cfg.setpoint, initial_output=initial
            )
            specs.append(
                LoopSpec(
                    name=name,
                    pid=pid,
                    read=binding.read,
                    write=binding.write,
                    period_s=cfg.period_s,
                    max_reading_age_s=cfg.max_reading_age_s,
                    max_missed_ticks=cfg.max_missed_ticks,
                    safe=binding.safe(),
                    on_tick=self.on_tick,
                    output_wrap=cfg.volts_per_2pi if cfg.kind == "phase_lock" else None,
                )
            )
            log.info(
                "loop %r engaged on %s at output %g %s", name, cfg.actuator, initial, cfg.units[1]
            )
        self.runner = LoopRunner(specs, clock=self.clock)
        return self.runner

    def start(self) -> LoopRunner:
        """Engage and start the runner's thread."""
        runner = self.runner or self.engage()
        runner.start()
        return runner

    def release(self) -> None:
        """Stop the runner and hand the actuators back (the TEC to its own PID)."""
        if self.runner is None:
            return
        runner, self.runner = self.runner, None
        runner.stop()
        status = runner.status()
        for name, binding in self.bindings.items():
            if status[name].state == "fault":
                continue  # its safe() already ran
            try:
                binding.release(status[name].effective_setpoint)
            except Exception:
                log.exception("loop %r: handing %s back failed", name, binding.cfg.actuator)

    def status(self) -> dict[str, LoopStatus]:
        return {} if self.runner is None else self.runner.status()

    def pause_for(self, instrument: str, reason: str) -> list[str]:
        """Fault every loop driving ``instrument`` (an interlock made it safe): they stop writing
        until reset by the operator. Returns the loops paused."""
        if self.runner is None:
            return []
        paused = []
        for name, cfg in self.configs.items():
            if cfg.actuator == instrument:
                self.runner.fault(name, f"interlock: {reason}")
                paused.append(name)
        return paused

    def __enter__(self) -> BenchLoops:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
