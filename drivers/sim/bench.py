"""The shared bench model: one virtual clock, every simulator, and their wiring.

Simulators look each other up here, which is how physics couples them:
``wiring`` maps a destination port to a source port, e.g.
``{"scope1:1": "awg1:1"}`` puts AWG channel 1's output on scope channel 1.
A source may also be a passive *element* (optics with no command set, e.g. the ISAQN network
of :mod:`drivers.sim.isaqn`), added with :meth:`BenchModel.add_element`.

The room is :attr:`BenchModel.environment` (:mod:`drivers.sim.environment`): simulators read
the ambient temperature at the bench time of each integration step with
``bench.environment.ambient_c(t_s)``. ``bench.ambient_c`` is the ambient at the clock's now;
assigning to it sets the environment's mean (a test warms the room).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from drivers.sim.clock import VirtualClock
from drivers.sim.environment import Environment, make_environment

if TYPE_CHECKING:
    from drivers.sim.base import SimInstrument


class SignalSource(Protocol):
    """Anything with outputs the bench can wire: ``output_v(channel, t_s) -> volts``."""

    name: str

    def output_v(self, channel: int, t_s: np.ndarray) -> np.ndarray: ...


def parse_port(port: str) -> tuple[str, int]:
    """``"awg1:2"`` -> ("awg1", 2)."""
    name, sep, channel = port.partition(":")
    if not sep or not channel.isdigit() or not name:
        raise ValueError(f"port {port!r} is not of the form NAME:CHANNEL")
    return name, int(channel)


class BenchModel:
    """State shared by the simulators of one bench.

    ``environment``: the room, as an :class:`~drivers.sim.environment.Environment`, a bench
    file's ``[bench] ambient`` table (``{profile = "typical_lab", ...}``, see
    :meth:`Environment.from_options <drivers.sim.environment.Environment.from_options>`) or
    None (a constant room at ``ambient_c``). ``ambient_c`` is the default mean of a table
    without ``mean_c``; the environment's realisation is seeded from ``seed``.
    """

    def __init__(
        self,
        *,
        clock: VirtualClock | None = None,
        seed: int = 0,
        wiring: Mapping[str, str] | None = None,
        ambient_c: float = 22.0,
        environment: Environment | Mapping[str, Any] | None = None,
    ) -> None:
        self.clock = clock if clock is not None else VirtualClock()
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.environment = make_environment(
            environment, mean_c=ambient_c, seed=seed, clock=self.clock
        )
        self.instruments: dict[str, SimInstrument] = {}
        self.elements: dict[str, SignalSource] = {}
        self.wiring: dict[tuple[str, int], tuple[str, int]] = {}
        for dest, src in (wiring or {}).items():
            self.wiring[parse_port(dest)] = parse_port(src)

    @property
    def ambient_c(self) -> float:
        """Room temperature (degC) at the bench clock's now."""
        return self.environment.now_c()

    @ambient_c.setter
    def ambient_c(self, value_c: float) -> None:
        """Set the room's mean temperature (degC); disturbances stay on top of it."""
        self.environment.mean_c = float(value_c)

    def add(self, sim: SimInstrument) -> None:
        if sim.name in self.instruments:
            raise ValueError(f"duplicate simulated instrument {sim.name!r}")
        self.instruments[sim.name] = sim

    def add_element(self, element: SignalSource) -> None:
        if element.name in self.instruments or element.name in self.elements:
            raise ValueError(f"duplicate bench element {element.name!r}")
        self.elements[element.name] = element

    def source_of(self, name: str, channel: int) -> tuple[Any, int] | None:
        """The simulator or element, and its output channel, wired to input ``name:channel``."""
        src = self.wiring.get((name, channel))
        if src is None:
            return None
        sim: Any = self.instruments.get(src[0]) or self.elements.get(src[0])
        return None if sim is None else (sim, src[1])
