"""A bench: the drivers of every instrument in a bench file, connected.

Instruments whose ``resource`` is ``"sim"`` get a simulator started
in-process (threads serving real TCP sockets and pseudo-terminals), coupled
through one :class:`~drivers.sim.bench.BenchModel`; every other resource is
opened as given. Either way the same driver code talks over pyvisa.

    with Bench(load_bench()) as bench:
        bench.connect()
        print(bench.instruments["laser1"].wavelength_nm)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from drivers.errors import InstrumentError
from drivers.instrument import Instrument
from drivers.registry import driver_class
from drivers.sim.clock import VirtualClock
from drivers.sim.host import SimHost, SimSpec
from drivers.sim.isaqn import IsaqnNetwork
from labctl.config import BenchConfig, InstrumentConfig

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def sim_specs(config: BenchConfig, *, all_instruments: bool = False) -> list[SimSpec]:
    """Simulator specs for the instruments that are simulated (or all of them).

    On an entanglement bench with a twin, the taggers of its channels take their events from
    the photon-pair source (simulator option ``source``) unless their options name another.
    """
    ent = config.entanglement
    fed = set() if ent is None or ent.sim is None else {c.tagger for c in ent.channels}
    return [
        SimSpec(
            i.name,
            i.model,
            {"source": ent.source, **i.sim} if ent is not None and i.name in fed else i.sim,
        )
        for i in config.instruments.values()
        if all_instruments or i.simulated
    ]


def bench_clock(config: BenchConfig) -> VirtualClock:
    """The simulated bench's clock as the bench file asks (``bench.clock``, ``clock_speed``)."""
    return VirtualClock(realtime=config.clock == "realtime", speed=config.clock_speed)


def start_simulators(
    config: BenchConfig,
    *,
    all_instruments: bool = False,
    clock: VirtualClock | None = None,
) -> SimHost:
    """Start the bench's simulators on real transports and return their host."""
    elements = []
    if config.isaqn is not None and config.isaqn.sim is not None:
        physics, icr = config.isaqn.sim, config.isaqn.icr
        elements.append(lambda bench: IsaqnNetwork(icr, bench, physics))
    ent = config.entanglement
    if ent is not None and ent.sim is not None:
        from drivers.sim.pairsource import PhotonPairSource

        pairs = ent.sim
        elements.append(lambda bench: PhotonPairSource(ent.source, bench, pairs))
    host = SimHost(
        sim_specs(config, all_instruments=all_instruments),
        clock=clock if clock is not None else bench_clock(config),
        seed=config.seed,
        wiring=config.wiring,
        ambient_c=config.ambient_c,
        elements=elements,
        environment=config.ambient,
    )
    host.start()
    return host


def make_driver(icfg: InstrumentConfig, resource: str) -> Instrument:
    """Build (not connect) the driver of one instrument with its bench limits."""
    return driver_class(icfg.model)(
        icfg.name,
        resource,
        limits=icfg.limits,
        ramps=icfg.ramps,
        timeout_s=icfg.timeout_s,
        ramp_step_s=icfg.ramp_step_s,
    )


class Bench:
    """Drivers (and, where asked, simulators) of one bench file."""

    def __init__(self, config: BenchConfig, *, clock: VirtualClock | None = None) -> None:
        self.config = config
        self.sim_host: SimHost | None = None
        self._clock = clock
        self.instruments: dict[str, Instrument] = {}

    @property
    def simulated(self) -> bool:
        return any(i.simulated for i in self.config.instruments.values())

    def resources(self) -> dict[str, str]:
        """Resource string of each instrument (simulators started if needed)."""
        if self.simulated and self.sim_host is None:
            self.sim_host = start_simulators(self.config, clock=self._clock)
        sim_resources = self.sim_host.resources if self.sim_host is not None else {}
        return {
            name: sim_resources[name] if icfg.simulated else icfg.resource
            for name, icfg in self.config.instruments.items()
        }

    def connect(self, progress: Progress | None = None) -> dict[str, Instrument]:
        """Connect every instrument; on a failure close what was opened and re-raise."""
        resources = self.resources()
        total = len(resources)
        try:
            for k, (name, resource) in enumerate(resources.items(), start=1):
                icfg = self.config.instruments[name]
                if progress:
                    progress(f"[{k}/{total}] connecting {name} ({icfg.model}) at {resource}")
                driver = make_driver(icfg, resource)
                driver.connect()
                self.instruments[name] = driver
        except InstrumentError:
            self.close()
            raise
        return self.instruments

    def apply_safe_start(self, progress: Progress | None = None) -> None:
        """Apply each instrument's ``safe_start`` values from the bench file."""
        for name, driver in self.instruments.items():
            values = self.config.instruments[name].safe_start
            if values:
                if progress:
                    progress(f"{name}: applying safe start values {values}")
                driver.apply(values)

    def states(self) -> dict[str, dict[str, Any]]:
        """Identity and every readable setting of each connected instrument."""
        return {
            name: {
                "class": driver.instrument_class,
                "model": driver.model,
                "resource": driver.resource,
                "identity": driver.identity,
                "state": driver.state(),
            }
            for name, driver in self.instruments.items()
        }

    def close(self, *, safe: bool = True) -> None:
        """Safe state and disconnect every instrument, then stop the simulators."""
        for name, driver in list(self.instruments.items()):
            try:
                driver.close(safe=safe)
            except Exception as exc:  # one failing instrument must not strand the rest
                log.error("%s: close failed: %s", name, exc)
        self.instruments.clear()
        if self.sim_host is not None:
            self.sim_host.stop()
            self.sim_host = None

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
