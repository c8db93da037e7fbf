"""Fault injection for simulated instruments.

Tests (and the GUI's demo mode) inject faults into a running simulator; the
server consults the injector for every message it handles::

    sim.faults.inject(Fault.DELAY, seconds=1.5)      # next reply late
    sim.faults.inject(Fault.NO_REPLY, count=2)       # next two queries unanswered
    sim.faults.inject(Fault.GARBLE)                  # next reply corrupted
    sim.faults.inject(Fault.DROP)                    # close open connections now
    sim.faults.inject(Fault.REFUSE)                  # refuse connections until cleared
    sim.faults.inject(Fault.ERROR, code=-222, text="Data out of range")
    sim.faults.inject(Fault.BUSY, seconds=0.5)       # a long operation: all replies wait
    sim.faults.clear()
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass


class Fault(enum.StrEnum):
    DELAY = "delay"
    NO_REPLY = "no_reply"
    GARBLE = "garble"
    DROP = "drop"
    REFUSE = "refuse"
    ERROR = "error"
    BUSY = "busy"


@dataclass
class FaultSpec:
    kind: Fault
    remaining: int | None  # None: until cleared
    seconds: float = 0.0
    code: int = 0
    text: str = ""


class FaultInjector:
    """Thread-safe store of pending faults, consumed by the server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Fault, FaultSpec] = {}
        self.listeners: list = []  # callables notified on inject/clear (servers)
        self.injected: list[FaultSpec] = []

    def inject(
        self,
        kind: Fault | str,
        *,
        count: int | None = 1,
        seconds: float = 0.0,
        code: int = -200,
        text: str = "Execution error",
    ) -> None:
        spec = FaultSpec(Fault(kind), count, seconds, code, text)
        with self._lock:
            self._pending[spec.kind] = spec
            self.injected.append(spec)
        for listener in list(self.listeners):
            listener(spec)

    def clear(self, kind: Fault | str | None = None) -> None:
        with self._lock:
            if kind is None:
                self._pending.clear()
            else:
                self._pending.pop(Fault(kind), None)
        for listener in list(self.listeners):
            listener(None)

    def active(self, kind: Fault) -> bool:
        with self._lock:
            return kind in self._pending

    def take(self, kind: Fault) -> FaultSpec | None:
        """Consume one occurrence of ``kind`` if pending."""
        with self._lock:
            spec = self._pending.get(kind)
            if spec is None:
                return None
            if spec.remaining is not None:
                spec.remaining -= 1
                if spec.remaining <= 0:
                    del self._pending[kind]
            return spec
