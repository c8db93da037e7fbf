"""Start and stop the simulators of a bench on real transports."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from drivers.registry import simulator_class
from drivers.sim.base import SimInstrument
from drivers.sim.bench import BenchModel, SignalSource
from drivers.sim.clock import VirtualClock
from drivers.sim.server import PtyServer, TcpServer


@dataclass
class SimSpec:
    """What to simulate: instrument name, model key and simulator options."""

    name: str
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)


class SimHost:
    """Owns a :class:`BenchModel`, its simulators and their servers.

    Use as a context manager, or call :meth:`start` / :meth:`stop`::

        with SimHost([SimSpec("laser1", "santec_tsl570")]) as host:
            resource = host.resources["laser1"]
    """

    def __init__(
        self,
        specs: list[SimSpec],
        *,
        clock: VirtualClock | None = None,
        seed: int = 0,
        wiring: Mapping[str, str] | None = None,
        ambient_c: float = 22.0,
        elements: Sequence[Callable[[BenchModel], SignalSource]] = (),
        environment: Mapping[str, Any] | None = None,
    ) -> None:
        self.bench = BenchModel(
            clock=clock, seed=seed, wiring=wiring, ambient_c=ambient_c, environment=environment
        )
        self.sims: dict[str, SimInstrument] = {}
        self.servers: dict[str, Any] = {}
        for spec in specs:
            sim = simulator_class(spec.model)(spec.name, self.bench, spec.options)
            self.bench.add(sim)
            self.sims[spec.name] = sim
        for make_element in elements:  # passive optics between the instruments
            self.bench.add_element(make_element(self.bench))

    @property
    def resources(self) -> dict[str, str]:
        """pyvisa resource string of each running simulator."""
        return {name: server.resource for name, server in self.servers.items()}

    def start(self) -> dict[str, str]:
        for name, sim in self.sims.items():
            server: Any = PtyServer(sim) if sim.transport == "pty" else TcpServer(sim)
            server.start()
            self.servers[name] = server
            start_extra = getattr(sim, "start_extra_servers", None)
            if start_extra is not None:
                start_extra()
        return self.resources

    def stop(self) -> None:
        for name, server in list(self.servers.items()):
            stop_extra = getattr(self.sims[name], "stop_extra_servers", None)
            if stop_extra is not None:
                stop_extra()
            server.stop()
        self.servers.clear()

    def __enter__(self) -> SimHost:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
