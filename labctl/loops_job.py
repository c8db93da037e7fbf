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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from drivers.errors import InstrumentError
from drivers.sim.clock import VirtualClock
from labctl.bench import Bench
from labctl.bench_control import BenchControl, LoopRow
from labctl.config import BenchConfig
from labctl.interlocks import InterlockWatchdog, RuleStatus
from labctl.loops import BenchLoops

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class LoopsJobError(RuntimeError):
    """The loops cannot run (the message names the loop or instrument and what failed)."""


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
    control: BenchControl | None = None
    last: LoopsStatus | None = None
    try:
        bench.connect(progress=say)
        bench.apply_safe_start(progress=say)
        vclock = bench.sim_host.bench.clock if bench.sim_host is not None else None
        control = BenchControl(
            config, bench.instruments, vclock=vclock, names=only, interlock_log=interlock_log
        )
        control.start_watchdog()
        control.engage(say)
        if hook is not None:
            hook(bench, control.loops, control.watchdog)
        clock_ = control.clock
        t0 = clock_.now_s()
        next_update = t0 + update_s
        while True:
            if control.manual:
                control.run_until(next_update)
                control.evaluate()
            else:
                clock_.wait_until(next_update, stop)
            last = LoopsStatus(
                time_s=clock_.now_s() - t0, loops=control.rows(), interlocks=control.interlocks()
            )
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
        if control is not None:
            control.stop()
        bench.close()
