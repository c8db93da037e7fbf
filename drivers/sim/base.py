"""Base class of the simulated instruments.

A simulator holds the instrument's state, registers its command set on a
:class:`~drivers.sim.scpi.ScpiEngine` and is served over a real transport by
:mod:`drivers.sim.server`. It belongs to one
:class:`~drivers.sim.bench.BenchModel`, through which simulators read each
other's state (the scope sees what the AWG outputs; the ring follows the TEC).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from drivers.sim.faults import Fault, FaultInjector, FaultSpec
from drivers.sim.scpi import Reply, ScpiEngine

if TYPE_CHECKING:
    from drivers.sim.bench import BenchModel


class SimInstrument:
    """State plus command set of one simulated instrument."""

    instrument_class: ClassVar[str] = ""
    model: ClassVar[str] = ""
    #: "tcp" (raw socket on 127.0.0.1) or "pty" (serial line)
    transport: ClassVar[str] = "tcp"
    #: input terminator, or a tuple of accepted terminators (see MessageFramer)
    terminator: ClassVar[bytes | tuple[bytes, ...]] = b"\n"
    reply_terminator: ClassVar[bytes] = b"\n"
    identity: ClassVar[str] = "LABCTL,SIM,0,0.1"

    def __init__(self, name: str, bench: BenchModel, options: Mapping[str, Any] | None = None):
        self.name = name
        self.bench = bench
        self.options = dict(options or {})
        self.lock = threading.RLock()
        self.engine = ScpiEngine(self.identity)
        self.engine.on_reset = self.reset
        self.engine.wait_for_operations = self._wait_busy
        self.faults = FaultInjector()
        self.faults.listeners.append(self._on_fault)
        #: every program message received, newest last (tests check what was sent)
        self.received: deque[bytes] = deque(maxlen=100_000)
        self._busy_until = 0.0
        self.reset()
        self.register()

    # -- to override -----------------------------------------------------------
    def register(self) -> None:
        """Register the command set on ``self.engine``."""

    def reset(self) -> None:
        """Return to the power-on state (``*RST``)."""

    def snapshot(self) -> dict[str, Any]:
        """Ground truth of the instrument's state, for tests."""
        return {}

    # -- served by the transport ---------------------------------------------
    def process(self, message: bytes) -> list[Reply]:
        self.received.append(message)
        self._wait_busy()
        with self.lock:
            return self.engine.execute(message)

    def _wait_busy(self) -> None:
        remaining = self._busy_until - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    def _on_fault(self, spec: FaultSpec | None) -> None:
        if spec is None:
            self._busy_until = 0.0
            return
        if spec.kind is Fault.ERROR:
            self.faults.take(Fault.ERROR)
            with self.lock:
                self.engine.push_error(spec.code, spec.text)
        elif spec.kind is Fault.BUSY:
            self.faults.take(Fault.BUSY)
            self._busy_until = time.monotonic() + spec.seconds

    def now_s(self) -> float:
        return self.bench.clock.now_s()
