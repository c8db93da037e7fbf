"""``labctl loops``: run a bench file's feedback loops and interlocks, with a live table.

Steps of :func:`run_loops`:

1. connect, apply the safe start values, start the interlock watchdog (its own threads; on a
   manual bench clock it is evaluated at every update instead);
2. switch on the emission of every laser a ``laser_lock`` loop holds (a lock needs light;
   at the power the bench file's safe start gives it);
3. hand the actuators to the loops (:class:`~labctl.loops.BenchLoops`) and run them; every
   ``update_s`` a :class:`LoopsStatus` goes to the sinks (live table, JSON);
4. on ``duration_s``, ``stop`` (Ctrl-C) or an error: loops stopped and their actuators handed
   back, watchdog stopped, every instrument to its safe state.

A loop fault or an interlock trip does not end the run: the table shows it, the log says why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from drivers.errors import InstrumentError
from drivers.sim.clock import VirtualClock
from labctl.bench import Bench
from labctl.config import BenchConfig
from labctl.interlocks import InterlockWatchdog, RuleStatus
from labctl.loop_config import LoopConfig
from labctl.loop_runner import LoopStatus
from labctl.loops import BenchLoops

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class LoopsJobError(RuntimeError):
    """The loops cannot run (the message names the loop or instrument and what failed)."""


@dataclass(frozen=True)
class LoopRow:
    """One loop in a status: its configuration's identity and the runner's snapshot."""

    name: str
    kind: str
    units: tuple[str, str]
    status: LoopStatus


@dataclass(frozen=True)
class LoopsStatus:
    time_s: float  #: bench clock time of the snapshot (s)
    loops: tuple[LoopRow, ...]
    interlocks: dict[str, RuleStatus] = field(default_factory=dict)
    messages: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "time_s": self.time_s,
            "loops": {
                r.name: {"kind": r.kind, "units": list(r.units), **asdict(r.status)}
                for r in self.loops
            },
            "interlocks": {name: asdict(s) for name, s in self.interlocks.items()},
            "messages": list(self.messages),
        }


StatusSink = Callable[[LoopsStatus], None]


def _emission_for_locks(bench: Bench, loops: Sequence[LoopConfig], progress: Progress) -> None:
    for cfg in loops:
        if cfg.kind == "laser_lock" and cfg.laser is not None:
            laser = bench.instruments[cfg.laser]
            if not laser.get("emission"):
                laser.set("emission", True)
                progress(f"{cfg.laser}: emission on for loop {cfg.name!r}")


def run_loops(
    config: BenchConfig,
    *,
    duration_s: float | None = None,
    only: Sequence[str] | None = None,
    update_s: float = 1.0,
    sinks: Sequence[StatusSink] = (),
    progress: Progress | None = None,
    clock: VirtualClock | None = None,
    stop: threading.Event | None = None,
    interlock_log: Path | None = None,
    hook: Callable[[Bench, BenchLoops, InterlockWatchdog], None] | None = None,
) -> LoopsStatus | None:
    """Run the bench's loops (``only`` these names, else every autostart loop) and interlocks.

    ``hook(bench, loops, watchdog)`` runs once the loops are engaged (tests inject faults from
    it). Returns the last status.
    """
    say = progress or (lambda text: None)
    stop = stop or threading.Event()
    if not config.loops:
        raise LoopsJobError(f"{config.path}: no [[loops]] tables: nothing to run")
    bench = Bench(config, clock=clock)
    watchdog: InterlockWatchdog | None = None
    loops: BenchLoops | None = None
    last: LoopsStatus | None = None
    try:
        bench.connect(progress=say)
        bench.apply_safe_start(progress=say)
        vclock = bench.sim_host.bench.clock if bench.sim_host is not None else None
        manual = vclock is not None and not vclock.realtime
        watchdog = InterlockWatchdog(
            list(config.interlocks),
            bench.instruments,
            clock=vclock.now_s if vclock is not None else time.monotonic,
            log_path=interlock_log,
        )
        loops = BenchLoops(config.loops, bench.instruments, vclock=vclock, only=only)
        # an interlock that drives an actuator safe pauses the loops writing to it
        watchdog.add_listener(lambda event, lp=loops: _pause_on_trip(lp, event))
        if not manual:
            watchdog.start()
        _emission_for_locks(bench, list(loops.configs.values()), say)
        runner = loops.engage()
        say(f"loops engaged: {', '.join(loops.configs)}")
        if hook is not None:
            hook(bench, loops, watchdog)
        clock_ = loops.clock
        t0 = clock_.now_s()
        if not manual:
            runner.start()
        next_update = t0 + update_s
        while True:
            if manual:
                runner.run_until(next_update)
                watchdog.evaluate_once()
            else:
                clock_.wait_until(next_update, stop)
            last = _status(clock_.now_s() - t0, loops, watchdog)
            for sink in sinks:
                sink(last)
            next_update += update_s
            if duration_s is not None and last.time_s + 1e-9 >= duration_s:
                break
            if stop.is_set():
                break
        return last
    except InstrumentError as exc:
        raise LoopsJobError(str(exc)) from exc
    finally:
        if loops is not None:
            loops.release()
        if watchdog is not None:
            watchdog.stop()
        bench.close()


def _pause_on_trip(loops: BenchLoops, event: Any) -> None:
    """An interlock drove an instrument safe: the loops writing to it stop until reset."""
    if getattr(event, "event", None) == "action":
        for instrument in event.instruments:
            loops.pause_for(instrument, f"{event.rule}: {event.reason}")


def _status(time_s: float, loops: BenchLoops, watchdog: InterlockWatchdog) -> LoopsStatus:
    snapshot = loops.status()
    rows = tuple(
        LoopRow(name, cfg.kind, cfg.units, snapshot[name])
        for name, cfg in loops.configs.items()
        if name in snapshot
    )
    return LoopsStatus(time_s=time_s, loops=rows, interlocks=watchdog.status())
