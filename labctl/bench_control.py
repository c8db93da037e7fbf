"""The bench's feedback loops and interlock watchdog, run around a job.

:class:`BenchControl` is what ``labctl loops`` runs on its own and what the main jobs
(``labctl run``) run beside their acquisition:

* the interlock watchdog (:class:`~labctl.interlocks.InterlockWatchdog`) on its own threads, or,
  on a manual bench clock, evaluated whenever the job calls :meth:`BenchControl.evaluate`;
* the chosen ``[[loops]]`` (:class:`~labctl.loops.BenchLoops`): on a real-time clock their
  runner has its own thread; on a manual bench clock the job moves time with
  :meth:`BenchControl.advance`, which ticks every loop whose deadline falls in the step (so the
  loops see exactly the virtual time the instruments see);
* an interlock action that drives an instrument safe pauses the loops writing to it
  (they fault, and stay stopped until the operator resets them).

:meth:`BenchControl.stop` hands the actuators back (the TEC to its own PID) and stops the
watchdog; the caller then closes the bench (every instrument to its safe state).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.instrument import Instrument
from drivers.sim.clock import VirtualClock
from labctl.config import BenchConfig
from labctl.interlocks import InterlockWatchdog, RuleStatus
from labctl.loop_config import LoopConfig
from labctl.loop_runner import LoopClock, LoopRunner, LoopStatus
from labctl.loops import BenchLoops

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class ControlError(RuntimeError):
    """A loop did not lock in time (the message names the loop and its error)."""


@dataclass(frozen=True)
class LoopRow:
    """One loop in a status: its configuration's identity and the runner's snapshot."""

    name: str
    kind: str
    units: tuple[str, str]
    status: LoopStatus


def switch_on_for_locks(
    instruments: Mapping[str, Instrument], loops: Iterable[LoopConfig], progress: Progress
) -> None:
    """Emission on for every laser a ``laser_lock`` holds (a lock needs light), at the power
    the instrument is set to."""
    for cfg in loops:
        if cfg.kind == "laser_lock" and cfg.laser is not None:
            laser = instruments[cfg.laser]
            if not laser.get("emission"):
                laser.set("emission", True)
                progress(f"{cfg.laser}: emission on for loop {cfg.name!r}")


class BenchControl:
    """Loops ``names`` (default: every ``autostart`` loop) and every interlock of ``config``
    on connected ``instruments``. ``vclock``: the simulated bench's clock (None on hardware).
    """

    def __init__(
        self,
        config: BenchConfig,
        instruments: Mapping[str, Instrument],
        *,
        vclock: VirtualClock | None = None,
        names: Sequence[str] | None = None,
        interlock_log: Path | None = None,
    ) -> None:
        self.config = config
        self.instruments = instruments
        self.vclock = vclock
        self.manual = vclock is not None and not vclock.realtime
        self.watchdog = InterlockWatchdog(
            list(config.interlocks),
            instruments,
            clock=vclock.now_s if vclock is not None else time.monotonic,
            log_path=interlock_log,
        )
        self.loops = BenchLoops(config.loops, instruments, vclock=vclock, only=names)
        self.watchdog.add_listener(self._pause_on_trip)
        self._runner: LoopRunner | None = None

    @property
    def clock(self) -> LoopClock:
        """The clock the loops run on (virtual time on a simulated bench)."""
        return self.loops.clock

    @property
    def runner(self) -> LoopRunner:
        if self._runner is None:
            raise RuntimeError("bench control not started")
        return self._runner

    @property
    def engaged(self) -> LoopRunner | None:
        """The runner once :meth:`engage` ran, else None."""
        return self._runner

    @property
    def configs(self) -> dict[str, LoopConfig]:
        return self.loops.configs

    def start_watchdog(self) -> None:
        """Interlocks armed: their own threads on a real-time clock (manual: :meth:`evaluate`)."""
        if not self.manual:
            self.watchdog.start()

    def engage(self, progress: Progress | None = None) -> LoopRunner:
        """Hand the actuators to the loops; on a real-time clock their thread starts now."""
        say = progress or (lambda text: None)
        if not self.loops.configs:
            raise ControlError(f"{self.config.path}: no loops to engage")
        switch_on_for_locks(self.instruments, self.loops.configs.values(), say)
        self._runner = self.loops.engage()
        if not self.manual:
            self._runner.start()
        if self.loops.configs:
            say(f"loops engaged: {', '.join(self.loops.configs)}")
        return self._runner

    def advance(self, dt_s: float) -> None:
        """Manual clock: move virtual time by ``dt_s``, ticking every loop due on the way.
        Real time: nothing (the loops tick on their own thread)."""
        if self.manual:
            self.run_until(self.clock.now_s() + dt_s)

    def run_until(self, t_s: float) -> None:
        """Manual clock: move virtual time to ``t_s``, ticking the loops due on the way."""
        if not self.manual:
            return
        if self._runner is not None:
            self._runner.run_until(t_s)
        else:
            assert self.vclock is not None
            dt = t_s - self.vclock.now_s()
            if dt > 0:
                self.vclock.advance(dt)

    def evaluate(self) -> None:
        """Manual clock: one evaluation of every interlock rule (real time: its threads do)."""
        if self.manual:
            self.watchdog.evaluate_once()

    def wait_locked(
        self,
        tolerances: Mapping[str, float],
        timeout_s: float,
        stop: Any = None,
    ) -> None:
        """Run until every loop in ``tolerances`` has |error| below its tolerance (its units)
        for five ticks in a row; ControlError naming the loops still out after ``timeout_s``."""
        if not tolerances:
            return
        good = dict.fromkeys(tolerances, 0)
        last_tick = dict.fromkeys(tolerances, -1)
        t_end = self.clock.now_s() + timeout_s
        while True:
            status = self.runner.status()
            for name, tol in tolerances.items():
                s = status[name]
                if s.state == "fault":
                    raise ControlError(f"loop {name!r} faulted while locking: {s.fault_reason}")
                if s.ticks != last_tick[name]:
                    last_tick[name] = s.ticks
                    ok = math.isfinite(s.error) and abs(s.error) < tol
                    good[name] = good[name] + 1 if ok else 0
            if all(n >= 5 for n in good.values()):
                return
            now = self.clock.now_s()
            if now >= t_end:
                out = ", ".join(
                    f"{n} (error {status[n].error:+.3g} {self.configs[n].units[0]}, "
                    f"tolerance {tolerances[n]:g})"
                    for n, k in good.items()
                    if k < 5
                )
                raise ControlError(f"not locked within {timeout_s:g} s: {out}")
            if self.manual:
                self.run_until(now + 0.05)
            else:
                time.sleep(0.05)
            if stop is not None and stop.is_set():
                return

    def rows(self) -> tuple[LoopRow, ...]:
        snapshot = self.loops.status()
        return tuple(
            LoopRow(name, cfg.kind, cfg.units, snapshot[name])
            for name, cfg in self.loops.configs.items()
            if name in snapshot
        )

    def interlocks(self) -> dict[str, RuleStatus]:
        return self.watchdog.status()

    def stop(self) -> None:
        """Loops stopped and their actuators handed back, watchdog stopped (never raises)."""
        try:
            self.loops.release()
        except Exception:
            log.exception("handing the loops' actuators back failed")
        self._runner = None
        try:
            self.watchdog.stop()
        except Exception:
            log.exception("stopping the interlock watchdog failed")

    def _pause_on_trip(self, event: Any) -> None:
        """An interlock drove an instrument safe: the loops writing to it stop until reset."""
        if getattr(event, "event", None) == "action":
            for instrument in event.instruments:
                self.loops.pause_for(instrument, f"{event.rule}: {event.reason}")
