"""Room temperature of a simulated bench: a seeded, deterministic disturbance model.

Simulators that exchange heat with the room (the TEC stage and the chip on it,
:mod:`drivers.sim.arroyo`) read the ambient temperature from here at the bench time of each of
their integration steps, through ``bench.environment.ambient_c(t_s)``;
``bench.ambient_c`` is the value at the bench clock's now.

Model
-----
::

    T_amb(t) = mean_c + hvac_amplitude_c * sin(2 pi t / hvac_period_s + hvac_phase_rad)
               + W(t) + sum of the steps delta_c with at_s <= t

* HVAC cycling. A lab's air conditioning holds the room with a thermostat that switches
  between heating and cooling every few minutes; the room swings by +-0.1..0.5 degC with a
  period of 10-20 min. A thermostat's swing is closer to a triangle than a sine, but a loop
  that rejects the fundamental at that period rejects the harmonics (3x the frequency, 1/9 the
  amplitude) better still, so the fundamental alone is kept.
* Slow drift ``W``: an Ornstein-Uhlenbeck process (a random walk pulled back to 0, so it stays
  bounded over a long run) of stationary rms ``drift_rms_c`` and correlation time
  ``drift_time_s``: the weather, the building's load, people. It is drawn on a fixed time grid
  of ``grid_s`` with the exact discretisation ``W[k+1] = a W[k] + sqrt(1 - a^2) drift_rms_c
  xi[k]``, ``a = exp(-grid_s / drift_time_s)``, ``W[0] = 0`` (it reaches its stationary spread
  after about ``drift_time_s``), and interpolated linearly in between. The innovations of grid
  chunk ``c`` come from a generator seeded by ``(seed, tag, c)`` and each chunk starts where the
  previous one ended, so the realisation is one function of time: the same at the same time
  whoever asks, and whatever the order of the questions. Before t = 0, ``W = 0``.
* Steps: :meth:`Environment.step_c` (a door opens, a heater is switched on): from ``at_s`` on
  the room is ``delta_c`` warmer. A simulator that has already integrated past ``at_s`` only
  sees the step from where it is.

Profiles (:meth:`Environment.from_options` ``profile``): ``"quiet"`` (the default: a constant
room at ``mean_c``; every existing test relies on it) and ``"typical_lab"`` (HVAC +-0.3 degC
every 10 min, drift 0.05 degC rms over 30 min): the middle of the range above, enough that a
thermistor loop with the TEC's power-on gains leaves the chip more than 1 mK off while a tuned
host loop holds it within 1 mK (tests/test_sim_environment.py measures both).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, overload

import numpy as np
from scipy.signal import lfilter

if TYPE_CHECKING:
    from drivers.sim.clock import VirtualClock

#: grid points per generated drift chunk
_CHUNK = 4096
_CHUNKS_KEPT = 8
_SEED_TAG = 0xA3B1E7  # separates the drift's random stream from every other stream of the seed

#: named disturbance levels (keys as the constructor's); see the module docstring
PROFILES: dict[str, dict[str, float]] = {
    "quiet": {
        "hvac_amplitude_c": 0.0,
        "hvac_period_s": 600.0,
        "drift_rms_c": 0.0,
        "drift_time_s": 1800.0,
    },
    "typical_lab": {
        "hvac_amplitude_c": 0.3,
        "hvac_period_s": 600.0,
        "drift_rms_c": 0.05,
        "drift_time_s": 1800.0,
    },
}
_NUMBER_KEYS = (
    "mean_c",
    "hvac_amplitude_c",
    "hvac_period_s",
    "hvac_phase_rad",
    "drift_rms_c",
    "drift_time_s",
    "grid_s",
)
OPTION_KEYS = ("profile", "steps", *_NUMBER_KEYS)


class Environment:
    """Ambient temperature (degC) as a function of bench time (see the module docstring).

    Parameters are in degC and seconds. ``clock`` (bound by the
    :class:`~drivers.sim.bench.BenchModel` when not given) is only needed for "now":
    :meth:`now_c` and :meth:`step_c` without ``at_s``.
    """

    def __init__(
        self,
        mean_c: float = 22.0,
        *,
        hvac_amplitude_c: float = 0.0,
        hvac_period_s: float = 600.0,
        hvac_phase_rad: float = 0.0,
        drift_rms_c: float = 0.0,
        drift_time_s: float = 1800.0,
        grid_s: float = 1.0,
        steps: tuple[tuple[float, float], ...] | list[tuple[float, float]] = (),
        seed: int = 0,
        clock: VirtualClock | None = None,
    ) -> None:
        checks = {
            "hvac_amplitude_c": (hvac_amplitude_c, hvac_amplitude_c >= 0, ">= 0"),
            "hvac_period_s": (hvac_period_s, hvac_period_s > 0, "> 0"),
            "drift_rms_c": (drift_rms_c, drift_rms_c >= 0, ">= 0"),
            "drift_time_s": (drift_time_s, drift_time_s > 0, "> 0"),
            "grid_s": (grid_s, grid_s > 0, "> 0"),
        }
        for key, (value, ok, expected) in checks.items():
            if not (ok and math.isfinite(value)):
                raise ValueError(f"environment {key}: got {value!r}, expected a number {expected}")
        self.mean_c = float(mean_c)
        self.hvac_amplitude_c = float(hvac_amplitude_c)
        self.hvac_period_s = float(hvac_period_s)
        self.hvac_phase_rad = float(hvac_phase_rad)
        self.drift_rms_c = float(drift_rms_c)
        self.drift_time_s = float(drift_time_s)
        self.grid_s = float(grid_s)
        self.seed = int(seed)
        self.clock = clock
        self._lock = threading.Lock()
        self._steps: list[tuple[float, float]] = sorted((float(a), float(d)) for a, d in steps)
        a = math.exp(-self.grid_s / self.drift_time_s)
        self._ou_a = a
        self._ou_b = math.sqrt(1.0 - a * a) * self.drift_rms_c
        self._starts = [0.0]  #: W at the first grid point of each chunk computed so far
        self._chunks: OrderedDict[int, np.ndarray] = OrderedDict()

    @classmethod
    def from_options(
        cls,
        options: Mapping[str, Any],
        *,
        mean_c: float = 22.0,
        seed: int = 0,
        clock: VirtualClock | None = None,
    ) -> Environment:
        """Build from a bench file's table, e.g. ``{profile = "typical_lab", mean_c = 21.5}``.

        ``profile`` (``"quiet"`` by default) sets the disturbance levels, any other key
        overrides one of them; ``steps`` is a list of ``[at_s, delta_c]`` pairs. ``mean_c``
        here is the default for the table's own ``mean_c``. Unknown keys and bad values raise
        ValueError naming the key.
        """
        unknown = sorted(set(options) - set(OPTION_KEYS))
        if unknown:
            raise ValueError(
                f"environment: unknown key {unknown[0]!r}, expected one of {list(OPTION_KEYS)}"
            )
        profile = options.get("profile", "quiet")
        if profile not in PROFILES:
            raise ValueError(
                f"environment profile: got {profile!r}, expected one of {sorted(PROFILES)}"
            )
        values: dict[str, Any] = {"mean_c": mean_c, **PROFILES[profile]}
        for key in _NUMBER_KEYS:
            if key in options:
                value = options[key]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"environment {key}: got {value!r}, expected a number")
                values[key] = float(value)
        steps = []
        for i, step in enumerate(options.get("steps", ())):
            if (
                not isinstance(step, list | tuple)
                or len(step) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in step)
            ):
                raise ValueError(f"environment steps[{i}]: got {step!r}, expected [at_s, delta_c]")
            steps.append((float(step[0]), float(step[1])))
        return cls(**values, steps=steps, seed=seed, clock=clock)

    # -- the model -------------------------------------------------------------------------
    @overload
    def ambient_c(self, t_s: float) -> float: ...

    @overload
    def ambient_c(self, t_s: np.ndarray) -> np.ndarray: ...

    def ambient_c(self, t_s: float | np.ndarray) -> float | np.ndarray:
        """Room temperature at bench time(s) ``t_s`` (float64 array in, float64 array out)."""
        t = np.asarray(t_s, dtype=np.float64)
        out = np.full(t.shape, self.mean_c, dtype=np.float64)
        if self.hvac_amplitude_c > 0:
            omega = 2.0 * math.pi / self.hvac_period_s
            out += self.hvac_amplitude_c * np.sin(omega * t + self.hvac_phase_rad)
        if self.drift_rms_c > 0 and t.size:
            out += self._drift_c(t)
        with self._lock:
            steps = list(self._steps)
        for at_s, delta_c in steps:
            out += np.where(t >= at_s, delta_c, 0.0)
        if np.ndim(t_s) == 0:
            return float(out)
        return out

    def now_c(self) -> float:
        """Room temperature at the bound clock's now."""
        return self.ambient_c(self._now_s())

    def constant_between(self, t0_s: float, t1_s: float) -> float | None:
        """The room temperature if it is constant over [t0_s, t1_s], else None.

        Lets a simulator integrate a long quiet stretch in closed form.
        """
        if self.hvac_amplitude_c > 0 or self.drift_rms_c > 0:
            return None
        with self._lock:
            steps = list(self._steps)
        if any(t0_s < at_s <= t1_s for at_s, _ in steps):
            return None
        return self.mean_c + sum(d for at_s, d in steps if at_s <= t0_s)

    def step_c(self, delta_c: float, at_s: float | None = None) -> float:
        """Disturbance hook: the room is ``delta_c`` warmer from ``at_s`` (default: now) on.

        Returns the step's time. Steps add up; step back with ``-delta_c``.
        """
        when = self._now_s() if at_s is None else float(at_s)
        if not math.isfinite(delta_c) or not math.isfinite(when):
            raise ValueError(f"environment step: got {delta_c!r} at {when!r}, expected numbers")
        with self._lock:
            self._steps.append((when, float(delta_c)))
            self._steps.sort()
        return when

    @property
    def steps(self) -> tuple[tuple[float, float], ...]:
        """Every (at_s, delta_c) step, in time order."""
        with self._lock:
            return tuple(self._steps)

    @property
    def is_quiet(self) -> bool:
        """No HVAC cycle, no drift and no steps: a constant room."""
        return self.hvac_amplitude_c == 0 and self.drift_rms_c == 0 and not self.steps

    def _now_s(self) -> float:
        if self.clock is None:
            raise RuntimeError("environment: no clock bound (pass clock= or at_s=)")
        return self.clock.now_s()

    # -- Ornstein-Uhlenbeck drift on its grid ------------------------------------------------
    def _drift_c(self, t: np.ndarray) -> np.ndarray:
        g = np.maximum(t, 0.0) / self.grid_s
        i0 = int(np.floor(np.min(g)))
        i1 = int(np.floor(np.max(g))) + 1
        with self._lock:
            grid_w = self._grid_values(i0, i1)
        return np.interp(g, np.arange(i0, i1 + 1, dtype=np.float64), grid_w)

    def _grid_values(self, i0: int, i1: int) -> np.ndarray:
        """W at grid points i0..i1 inclusive (call under the lock)."""
        c0, c1 = i0 // _CHUNK, i1 // _CHUNK
        parts = [self._chunk(c) for c in range(c0, c1 + 1)]
        values = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return values[i0 - c0 * _CHUNK : i1 - c0 * _CHUNK + 1]

    def _chunk(self, c: int) -> np.ndarray:
        """W at grid points c*CHUNK .. c*CHUNK + CHUNK - 1 (chunks are built in order)."""
        while len(self._starts) <= c:  # the start of chunk c is the end of chunk c - 1
            self._chunk(len(self._starts) - 1)
        values = self._chunks.get(c)
        if values is not None:
            self._chunks.move_to_end(c)
            return values
        xi = np.random.default_rng([self.seed & 0xFFFFFFFF, _SEED_TAG, c]).standard_normal(_CHUNK)
        # W[k+1] = a W[k] + b xi[k]: one first-order recursion over the chunk
        a, b = self._ou_a, self._ou_b
        after, _ = lfilter([b], [1.0, -a], xi, zi=[a * self._starts[c]])
        values = np.concatenate(([self._starts[c]], after[:-1]))
        if len(self._starts) == c + 1:
            self._starts.append(float(after[-1]))
        self._chunks[c] = values
        if len(self._chunks) > _CHUNKS_KEPT:
            self._chunks.popitem(last=False)
        return values


def make_environment(
    environment: Environment | Mapping[str, Any] | None,
    *,
    mean_c: float,
    seed: int,
    clock: VirtualClock,
) -> Environment:
    """The bench's environment from an object, a bench-file table or nothing (a quiet room)."""
    if environment is None:
        return Environment(mean_c, seed=seed, clock=clock)
    if isinstance(environment, Environment):
        if environment.clock is None:
            environment.clock = clock
        return environment
    return Environment.from_options(environment, mean_c=mean_c, seed=seed, clock=clock)
