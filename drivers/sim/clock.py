"""The bench's virtual clock, shared by every simulator of one bench.

In real-time mode virtual time follows the wall clock times ``speed``; in
manual mode it only moves when a test calls :meth:`VirtualClock.advance`, so
physics tests are exact and never sleep.
"""

from __future__ import annotations

import threading
import time


class VirtualClock:
    def __init__(self, *, realtime: bool = True, speed: float = 1.0, start_s: float = 0.0) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be > 0")
        self.realtime = realtime
        self.speed = speed
        self._lock = threading.Lock()
        self._offset_s = start_s
        self._wall0 = time.monotonic()

    def now_s(self) -> float:
        """Virtual time in seconds since the bench started."""
        with self._lock:
            if self.realtime:
                return self._offset_s + (time.monotonic() - self._wall0) * self.speed
            return self._offset_s

    def advance(self, dt_s: float) -> None:
        """Move virtual time forward by ``dt_s`` (manual and real-time modes)."""
        if dt_s < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._offset_s += dt_s
