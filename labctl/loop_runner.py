"""Run PID loops at their set rates through plain callables, with a watchdog.

A loop is a :class:`LoopSpec`: a :class:`~labctl.pid.PID`, a sensor ``read()`` returning a
float or a :class:`Reading`, an actuator ``write(value)``, a period and the watchdog limits.
The runner knows nothing of instruments: the bench binds ``read``/``write``/``safe`` to driver
calls (e.g. ``lambda: tec.temperature_c`` and ``lambda i: setattr(tec, "current_a", i)``).

Threading model
---------------
One scheduler thread runs every loop. Lab loops spend their time in instrument I/O that
releases the GIL, and a single thread gives a total order of reads and writes (two loops
sharing one instrument never interleave inside a tick), one place to reason about overruns
and no per-loop thread to leak or join. The cost: a slow ``read``/``write`` delays the other
loops, which the missed-tick accounting below makes visible. The runner's lock protects the
PIDs and the status; it is never held during ``read``, ``write``, ``safe`` or ``on_tick``, so
``set_setpoint``/``status`` from a GUI thread never wait for an instrument. Once a PID is given
to a runner, change it only through the runner's methods.

Scheduling
----------
Deadlines are absolute: loop ``n``'s k-th deadline is ``t0 + k * period_s`` (``t0``: when the
runner started or the loop was reset), so the schedule does not drift with tick durations.
At each pass the due loops run in deadline order. When a tick starts ``late`` seconds after
its deadline, ``floor(late / period_s)`` deadlines were missed: they are counted (total and
consecutive) and skipped, and the next deadline is the first one after now. The schedule never
bursts to catch up; the PID's ``dt_s`` is the real time between the measurements it uses, so
a late tick integrates over the real interval. A tick that overruns simply delays the next
pass; ``max_missed_ticks`` consecutive missed deadlines (a tick on time resets the count) fault
the loop: it cannot hold its rate.

Watchdog
--------
A tick whose sensor read raises, returns a non-finite value, returns a :class:`Reading` older
than ``max_reading_age_s`` (stale: e.g. an instrument returning a cached value) or a reading not
newer than the last one used, does not update the PID: the output is held (nothing is
written). When the loop has had no fresh measurement for more than ``max_reading_age_s``, it
FAULTS. A write that raises faults it at once, and so do too many missed ticks. On a fault the
runner calls ``safe()`` once (its exceptions are logged, never propagated), logs the reason
with the time at ERROR level, and stops ticking that loop until :meth:`LoopRunner.reset_fault`,
which resumes bumplessly. Other loops keep running.

Clocks
------
:class:`LoopClock` is ``now_s()`` plus ``wait_until(t_s, stop)``. :class:`WallClock` sleeps on
``time.monotonic``. :class:`AdvancingClock` drives a simulated bench on a manual virtual clock:
waiting *advances* virtual time, so 300 s of loop time run in a fraction of that.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

from labctl.pid import PID, PidGains

LoopState = Literal["running", "manual", "fault", "stopped"]

#: tolerance (s) when comparing clock readings with deadlines: an AdvancingClock lands on a
#: deadline up to rounding (now + (t - now) need not equal t in floating point).
_EPS_S = 1e-9

_log = logging.getLogger(__name__)


class LoopClock(Protocol):
    """The time base of a runner (seconds, any origin, monotonic)."""

    def now_s(self) -> float:
        """Current time in seconds."""
        ...

    def wait_until(self, t_s: float, stop: threading.Event) -> bool:
        """Return when the clock reaches ``t_s`` (False) or as soon as ``stop`` is set (True;
        the runner also sets it to wake the scheduler after a ``reset_fault``)."""
        ...


class WallClock:
    """Real time: ``time.monotonic`` and a wait on the stop event."""

    def now_s(self) -> float:
        return time.monotonic()

    def wait_until(self, t_s: float, stop: threading.Event) -> bool:
        while True:
            remaining = t_s - time.monotonic()
            if remaining <= 0.0:
                return stop.is_set()
            if stop.wait(remaining):
                return True


class AdvancingClock:
    """Virtual time from two callables: ``now_s()`` and ``advance_s(dt_s)``.

    ``wait_until`` advances the virtual clock to ``t_s`` if it is behind instead of sleeping.
    Built for a simulated bench on a manual clock, e.g.
    ``AdvancingClock(vclock.now_s, vclock.advance)`` with a ``drivers.sim.clock.VirtualClock``.
    """

    def __init__(self, now_s: Callable[[], float], advance_s: Callable[[float], None]) -> None:
        if not callable(now_s) or not callable(advance_s):
            raise TypeError("AdvancingClock needs two callables: now_s() and advance_s(dt_s)")
        self._now = now_s
        self._advance = advance_s

    def now_s(self) -> float:
        return float(self._now())

    def wait_until(self, t_s: float, stop: threading.Event) -> bool:
        if stop.is_set():
            return True
        dt = t_s - self.now_s()
        if dt > 0.0:
            self._advance(dt)
        return stop.is_set()


@dataclass(frozen=True, slots=True)
class Reading:
    """What a sensor returns. A bare float is also accepted (timestamp = when read returned)."""

    value: float
    #: when the value was measured, on the runner's clock (s)
    timestamp_s: float


@dataclass(frozen=True, slots=True)
class LoopStatus:
    """Snapshot of one loop (thread-safe copy; values in the loop's units)."""

    name: str
    state: LoopState
    setpoint: float
    effective_setpoint: float
    #: last measurement used by the PID (NaN before the first)
    measurement: float
    #: PID output (the value last commanded or held)
    output: float
    error: float
    p_term: float
    i_term: float
    d_term: float
    saturated: bool
    #: ticks executed (read attempted)
    ticks: int
    missed_ticks: int
    consecutive_missed_ticks: int
    #: readings refused for their age (older than max_reading_age_s)
    stale_readings: int
    #: reads that raised or returned a non-finite value
    read_errors: int
    #: reason and clock time of the last fault (kept after reset_fault; None if never)
    fault_reason: str | None
    fault_time_s: float | None
    #: clock time of the last tick (NaN before the first)
    last_tick_s: float


TickCallback = Callable[[str, LoopStatus], None]


@dataclass
class LoopSpec:
    """One control loop. ``read``, ``write`` and ``safe`` may raise (see the watchdog).

    ``period_s``: tick period (s). ``max_reading_age_s``: a reading older than this is stale,
    and a loop without a fresh reading for longer than this faults (s). ``max_missed_ticks``:
    consecutive missed deadlines before the loop faults. ``safe``: drive the actuator to its
    safe state on a fault. ``on_tick(name, status)``: called after each tick of this loop
    (from the scheduler thread; keep it short, exceptions are logged).
    """

    name: str
    pid: PID
    read: Callable[[], float | Reading]
    write: Callable[[float], None]
    period_s: float
    max_reading_age_s: float
    max_missed_ticks: int = 5
    safe: Callable[[], None] | None = None
    on_tick: TickCallback | None = None
    #: actuator period (e.g. a phase shifter's volts per 2 pi): an output held at a limit
    #: moves one period back into the range (:meth:`labctl.pid.PID.shift_output`)
    output_wrap: float | None = None

    def __post_init__(self) -> None:
        where = f"loop {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"loop name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.pid, PID):
            raise TypeError(f"{where}: pid must be a labctl.pid.PID, got {type(self.pid)}")
        for attr in ("read", "write"):
            if not callable(getattr(self, attr)):
                raise TypeError(f"{where}: {attr} must be callable")
        for attr in ("safe", "on_tick"):
            value = getattr(self, attr)
            if value is not None and not callable(value):
                raise TypeError(f"{where}: {attr} must be callable or None")
        if self.output_wrap is not None:
            wrap = float(self.output_wrap)
            span = self.pid.settings.output_max - self.pid.settings.output_min
            if not (math.isfinite(wrap) and 0.0 < wrap <= span):
                raise ValueError(
                    f"{where}: output_wrap must be > 0 and fit in the output range ({span:g}), "
                    f"got {self.output_wrap!r}"
                )
            self.output_wrap = wrap
        for attr in ("period_s", "max_reading_age_s"):
            value = float(getattr(self, attr))
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{where}: {attr} must be > 0 s, got {value!r}")
            setattr(self, attr, value)
        if isinstance(self.max_missed_ticks, bool) or not isinstance(self.max_missed_ticks, int):
            raise TypeError(f"{where}: max_missed_ticks must be an int")
        if self.max_missed_ticks < 1:
            raise ValueError(f"{where}: max_missed_ticks must be >= 1, got {self.max_missed_ticks}")


class _Loop:
    """Mutable runtime state of one loop (guarded by the runner's lock)."""

    def __init__(self, spec: LoopSpec) -> None:
        self.spec = spec
        self.t0_s: float | None = None
        self.k = 0
        self.faulted = False
        self.fault_reason: str | None = None
        self.fault_time_s: float | None = None
        self.ticks = 0
        self.missed = 0
        self.missed_consecutive = 0
        self.stale = 0
        self.read_errors = 0
        self.last_reading_ts: float | None = None
        self.last_fresh_s = math.nan
        self.last_tick_s = math.nan
        self.last_written: float | None = None
        self.blind = False
        #: held for a whole tick and by :meth:`LoopRunner.step_setpoint`: one writer at a time
        self.io = threading.Lock()

    def rebase(self, now_s: float) -> None:
        """Restart the schedule at ``now_s`` (first tick due at once)."""
        self.t0_s = now_s
        self.k = 0
        self.missed_consecutive = 0
        self.last_reading_ts = None
        self.last_fresh_s = now_s
        self.blind = False

    @property
    def deadline_s(self) -> float:
        assert self.t0_s is not None
        return self.t0_s + self.k * self.spec.period_s


class LoopRunner:
    """Tick several :class:`LoopSpec` loops from one scheduler thread (see the module doc).

    ``start()``/``stop()`` (or ``with runner:``) run the thread; ``tick_due()`` runs one
    scheduler pass on the calling thread and ``run_until(t_s)`` runs passes until the clock
    reaches ``t_s`` (tests, offline simulations with an :class:`AdvancingClock`). ``stop``
    leaves the actuators at their last output; driving them safe is the bench's job.
    """

    def __init__(
        self,
        loops: Sequence[LoopSpec],
        clock: LoopClock | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        names = [spec.name for spec in loops]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"loop names must be unique; repeated: {', '.join(duplicates)}")
        pids = [id(spec.pid) for spec in loops]
        if len(set(pids)) != len(pids):
            raise ValueError("each loop needs its own PID instance")
        self._loops = {spec.name: _Loop(spec) for spec in loops}
        self._clock: LoopClock = clock if clock is not None else WallClock()
        self._log = logger if logger is not None else _log
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop_requested = False
        self._active = False
        self._thread: threading.Thread | None = None
        self._current: str | None = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def clock(self) -> LoopClock:
        return self._clock

    @property
    def names(self) -> list[str]:
        return list(self._loops)

    def start(self) -> None:
        """Start the scheduler thread. Every schedule restarts now (first ticks at once); a
        loop that ran before (``tick_due``, or a previous ``start``/``stop``) resumes
        bumplessly from the last output it wrote."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("loop runner already started")
        self._stop_requested = False
        self._wake.clear()
        with self._lock:
            self._active = False  # "start" means now: restart schedules even after tick_due
        self._activate()
        self._thread = threading.Thread(target=self._run, name="labctl-loops", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the scheduler thread after the tick in progress; raise TimeoutError if it is
        still inside a tick (a hung instrument call) after ``timeout_s``."""
        self._stop_requested = True
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                raise TimeoutError(
                    f"loop runner did not stop within {timeout_s} s "
                    f"(tick of loop {self._current!r} still running)"
                )
            self._thread = None
        with self._lock:
            self._active = False

    def __enter__(self) -> LoopRunner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _activate(self) -> None:
        """First pass after construction or ``stop``: (re)start every schedule now; a loop that
        ran before resumes bumplessly from the last output it wrote."""
        with self._lock:
            if self._active:
                return
            now = self._clock.now_s()
            for loop in self._loops.values():
                if loop.ticks > 0 and not loop.faulted:
                    pid = loop.spec.pid
                    pid.reset(output=pid.output if loop.last_written is None else loop.last_written)
                loop.rebase(now)
            self._active = True

    def _check_not_threaded(self, what: str) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError(f"{what}() cannot run while the scheduler thread is running")

    def _run(self) -> None:
        while not self._stop_requested:
            self._wake.clear()
            try:
                self._pass()
            except Exception:  # a bug must not kill the thread silently
                self._log.exception("loop runner: scheduler pass failed")
            # returns early when woken: stop requested, or a loop was reset
            self._clock.wait_until(self._next_wakeup_s(), self._wake)

    def _next_wakeup_s(self) -> float:
        with self._lock:
            active = [lp for lp in self._loops.values() if not lp.faulted]
            if active:
                return min(lp.deadline_s for lp in active)
            # all faulted: poll so a reset_fault is picked up even without a wake-up
            idle = min(lp.spec.period_s for lp in self._loops.values())
            return self._clock.now_s() + idle

    # ----------------------------------------------------------------- scheduling
    def tick_due(self) -> int:
        """Run one scheduler pass on the calling thread: tick every loop whose deadline has
        come. Returns how many loops ticked (or faulted on a missed-tick count)."""
        self._check_not_threaded("tick_due")
        return self._pass()

    def _pass(self) -> int:
        self._activate()
        now = self._clock.now_s()
        with self._lock:
            due = sorted(
                (lp for lp in self._loops.values() if not lp.faulted),
                key=lambda lp: lp.deadline_s,
            )
            due = [lp for lp in due if lp.deadline_s <= now + _EPS_S]
        for loop in due:
            self._current = loop.spec.name
            try:
                self._tick(loop)
            finally:
                self._current = None
        return len(due)

    def run_until(self, t_end_s: float) -> None:
        """Run scheduler passes on the calling thread until the clock reaches ``t_end_s``
        (with an :class:`AdvancingClock`: as fast as the loops' callables allow)."""
        self._check_not_threaded("run_until")
        self._stop_requested = False
        while not self._stop_requested:
            self._wake.clear()
            self._pass()
            if self._clock.now_s() >= t_end_s - _EPS_S:
                return
            self._clock.wait_until(min(self._next_wakeup_s(), t_end_s), self._wake)

    def _tick(self, loop: _Loop) -> None:
        with loop.io:
            self._tick_locked(loop)

    def _tick_locked(self, loop: _Loop) -> None:
        spec, pid = loop.spec, loop.spec.pid
        start = self._clock.now_s()
        fault: str | None = None
        with self._lock:
            if loop.faulted:
                return
            late = max(0.0, start - loop.deadline_s)
            missed = math.floor(late / spec.period_s + _EPS_S)
            loop.k += missed + 1
            loop.missed += missed
            loop.missed_consecutive = loop.missed_consecutive + missed if missed else 0
            if loop.missed_consecutive >= spec.max_missed_ticks:
                fault = (
                    f"{loop.missed_consecutive} consecutive missed ticks (period "
                    f"{spec.period_s:g} s, max_missed_ticks {spec.max_missed_ticks}): the "
                    "loop cannot hold its rate"
                )
        if fault is not None:
            self._fault(loop, fault, start)
            self._notify(loop)
            return

        error: BaseException | None = None
        raw: float | Reading = math.nan
        try:
            raw = spec.read()
        except Exception as exc:
            error = exc
        read_done = self._clock.now_s()

        to_write: float | None = None
        with self._lock:
            loop.ticks += 1
            loop.last_tick_s = start
            problem, value, ts = self._judge(loop, raw, error, read_done)
            if problem is None:
                last_ts = loop.last_reading_ts
                dt = spec.period_s if last_ts is None else ts - last_ts
                try:
                    to_write = pid.update(value, dt)
                    if spec.output_wrap is not None and pid.saturated:
                        to_write = self._wrap_output(spec, to_write)
                except Exception as exc:  # validated inputs: a bug, not a bench problem
                    fault = f"PID update failed: {type(exc).__name__}: {exc}"
                loop.last_reading_ts = ts
                loop.last_fresh_s = start
                if loop.blind:
                    self._log.warning("loop %r: fresh readings again at t=%.3f s", spec.name, start)
                loop.blind = False
            else:
                if not loop.blind:
                    self._log.warning(
                        "loop %r: output held at t=%.3f s: %s", spec.name, start, problem
                    )
                loop.blind = True
                blind_s = start - loop.last_fresh_s
                if blind_s > spec.max_reading_age_s:
                    fault = (
                        f"{problem}; no fresh reading for {blind_s:.3f} s "
                        f"(max_reading_age_s {spec.max_reading_age_s:g} s)"
                    )
        if fault is None and to_write is not None:
            try:
                spec.write(to_write)
            except Exception as exc:
                fault = f"actuator write of {to_write:g} failed: {type(exc).__name__}: {exc}"
            else:
                with self._lock:
                    loop.last_written = to_write
        if fault is not None:
            self._fault(loop, fault, self._clock.now_s())
        self._notify(loop)

    def _wrap_output(self, spec: LoopSpec, output: float) -> float:
        """An output held at a limit of a periodic actuator, moved one period into the range."""
        pid, wrap = spec.pid, float(spec.output_wrap or 0.0)
        s = pid.settings
        if (
            pid.terms.p + pid.terms.i + pid.terms.d >= s.output_max
            and output - wrap >= s.output_min
        ):
            pid.shift_output(-wrap)
        elif (
            pid.terms.p + pid.terms.i + pid.terms.d <= s.output_min
            and output + wrap <= s.output_max
        ):
            pid.shift_output(wrap)
        else:
            return output
        self._log.info(
            "loop %r: output wrapped by one period (%g) to %g", spec.name, wrap, pid.output
        )
        return pid.output

    def _judge(
        self, loop: _Loop, raw: float | Reading, error: BaseException | None, read_done_s: float
    ) -> tuple[str | None, float, float]:
        """(problem or None, value, timestamp) of one sensor read; counts the failures."""
        if error is not None:
            loop.read_errors += 1
            return f"sensor read failed: {type(error).__name__}: {error}", math.nan, math.nan
        if isinstance(raw, Reading):
            value, ts = raw.value, raw.timestamp_s
        else:
            value, ts = raw, read_done_s
        try:
            value, ts = float(value), float(ts)
        except (TypeError, ValueError):
            loop.read_errors += 1
            return f"sensor returned {raw!r}, not a number or Reading", math.nan, math.nan
        if not (math.isfinite(value) and math.isfinite(ts)):
            loop.read_errors += 1
            return f"sensor returned a non-finite reading ({value} at t={ts:.3f} s)", value, ts
        age = read_done_s - ts
        if age > loop.spec.max_reading_age_s:
            loop.stale += 1
            return (
                f"stale reading: measured at t={ts:.3f} s, {age:.3f} s old "
                f"(max_reading_age_s {loop.spec.max_reading_age_s:g} s)",
                value,
                ts,
            )
        if loop.last_reading_ts is not None and ts <= loop.last_reading_ts:
            return f"no new reading since t={loop.last_reading_ts:.3f} s", value, ts
        return None, value, ts

    def fault(self, name: str, reason: str, *, run_safe: bool = False) -> None:
        """Fault loop ``name`` from outside (e.g. an interlock drove its actuator to a safe
        state): it stops writing until :meth:`reset_fault`. ``run_safe``: also call its
        ``safe()`` (an interlock that already acted does not need it)."""
        loop = self._get(name)
        self._fault(loop, reason, self._clock.now_s(), run_safe=run_safe)
        self._notify(loop)

    def _fault(self, loop: _Loop, reason: str, t_s: float, *, run_safe: bool = True) -> None:
        spec = loop.spec
        with self._lock:
            if loop.faulted:
                return
            loop.faulted = True
            loop.fault_reason = reason
            loop.fault_time_s = t_s
            held = spec.pid.output
        self._log.error(
            "loop %r FAULT at t=%.3f s: %s (output held at %g; %s)",
            spec.name,
            t_s,
            reason,
            held,
            "driving the actuator to its safe state"
            if spec.safe and run_safe
            else "no safe() action",
        )
        if spec.safe is not None and run_safe:
            try:
                spec.safe()
            except Exception:
                self._log.exception("loop %r: safe() raised while handling the fault", spec.name)

    def _notify(self, loop: _Loop) -> None:
        callback = loop.spec.on_tick
        if callback is None:
            return
        status = self._status(loop)
        try:
            callback(loop.spec.name, status)
        except Exception:
            self._log.exception("loop %r: on_tick callback raised", loop.spec.name)

    # --------------------------------------------------------------- operator API
    def _get(self, name: str) -> _Loop:
        try:
            return self._loops[name]
        except KeyError:
            raise KeyError(f"no loop named {name!r}; loops: {', '.join(self._loops)}") from None

    @contextmanager
    def _locked(self, name: str) -> Iterator[_Loop]:
        loop = self._get(name)
        with self._lock:
            yield loop

    def set_setpoint(self, name: str, value: float) -> None:
        """Set loop ``name``'s target setpoint (ramped if the PID has a setpoint ramp)."""
        with self._locked(name) as loop:
            loop.spec.pid.setpoint = value

    def step_setpoint(self, name: str, value: float, output_step: float) -> float:
        """Step loop ``name``'s setpoint to ``value`` with feed-forward: the output moves at once
        by ``output_step`` (what the plant model says the new setpoint needs; for a loop with an
        ``output_wrap``, by a period less or more if that keeps it in range), the integral with
        it, and the new output is written now, on the calling thread, between two ticks. The
        loop then only corrects what the model missed. A faulted loop is left alone (its
        setpoint is still updated for when it is reset). Returns the output written (or held).
        """
        loop = self._get(name)
        with loop.io:
            with self._lock:
                pid, spec = loop.spec.pid, loop.spec
                pid.setpoint = value
                pid.reset_ramp()
                if loop.faulted:
                    return pid.output
                s = pid.settings
                target = pid.output + float(output_step)
                wrap = spec.output_wrap
                if wrap is not None:
                    while target > s.output_max and target - wrap >= s.output_min:
                        target -= wrap
                    while target < s.output_min and target + wrap <= s.output_max:
                        target += wrap
                target = s.clamp(target)
                pid.shift_output(target - pid.output)
                output = pid.output
            spec.write(output)
            with self._lock:
                loop.last_written = output
        return output

    def set_manual(self, name: str, output: float) -> None:
        """Hold loop ``name``'s output at ``output`` (reached through the rate limit)."""
        with self._locked(name) as loop:
            loop.spec.pid.set_manual(output)

    def set_auto(self, name: str) -> None:
        """Close loop ``name`` again, bumplessly from its current output."""
        with self._locked(name) as loop:
            loop.spec.pid.set_auto()

    def set_gains(self, name: str, gains: PidGains) -> None:
        """Change loop ``name``'s gains bumplessly."""
        with self._locked(name) as loop:
            loop.spec.pid.gains = gains

    def reset_fault(self, name: str, output: float | None = None) -> bool:
        """Clear loop ``name``'s fault and resume it at the next pass. The PID restarts
        bumplessly from ``output`` (default: the last output written before the fault); its
        schedule restarts now. Returns False (and does nothing) if the loop was not faulted."""
        with self._locked(name) as loop:
            if not loop.faulted:
                return False
            pid = loop.spec.pid
            if output is None:
                output = loop.last_written if loop.last_written is not None else pid.output
            pid.reset(output=output)
            loop.faulted = False
            loop.rebase(self._clock.now_s())
        self._log.warning("loop %r: fault reset, resuming from output %g", name, output)
        self._wake.set()
        return True

    def status(self) -> dict[str, LoopStatus]:
        """Snapshot of every loop (consistent: taken under the runner's lock)."""
        with self._lock:
            return {name: self._status(loop) for name, loop in self._loops.items()}

    def _status(self, loop: _Loop) -> LoopStatus:
        with self._lock:
            pid = loop.spec.pid
            state: LoopState
            if loop.faulted:
                state = "fault"
            elif not self._active:
                state = "stopped"
            else:
                state = "manual" if pid.mode == "manual" else "running"
            p, i, d = pid.terms
            return LoopStatus(
                name=loop.spec.name,
                state=state,
                setpoint=pid.setpoint,
                effective_setpoint=pid.effective_setpoint,
                measurement=pid.last_measurement,
                output=pid.output,
                error=pid.last_error,
                p_term=p,
                i_term=i,
                d_term=d,
                saturated=pid.saturated,
                ticks=loop.ticks,
                missed_ticks=loop.missed,
                consecutive_missed_ticks=loop.missed_consecutive,
                stale_readings=loop.stale,
                read_errors=loop.read_errors,
                fault_reason=loop.fault_reason,
                fault_time_s=loop.fault_time_s,
                last_tick_s=loop.last_tick_s,
            )
