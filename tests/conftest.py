"""Shared fixtures: simulators on real transports, drivers connected to them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from drivers.instrument import Instrument
from drivers.registry import driver_class
from drivers.sim.clock import VirtualClock
from drivers.sim.host import SimHost, SimSpec


@pytest.fixture
def manual_clock() -> VirtualClock:
    """A virtual clock that only moves when the test advances it."""
    return VirtualClock(realtime=False)


@pytest.fixture
def sim_bench() -> Iterator[Callable[..., SimHost]]:
    """Factory: start simulators on real transports; all stopped at teardown.

    ``host = sim_bench([SimSpec("laser1", "santec_tsl570")], clock=..., wiring=...)``
    """
    hosts: list[SimHost] = []

    def start(specs: list[SimSpec], **kwargs: Any) -> SimHost:
        host = SimHost(specs, **kwargs)
        host.start()
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        host.stop()


@pytest.fixture
def connect() -> Iterator[Callable[..., Instrument]]:
    """Factory: connect a driver to a running simulator; closed (safe state) at teardown."""
    opened: list[Instrument] = []

    def make(host: SimHost, name: str, **kwargs: Any) -> Instrument:
        sim = host.sims[name]
        kwargs.setdefault("timeout_s", 0.5)
        instrument = driver_class(sim.model)(name, host.resources[name], **kwargs)
        instrument.connect()
        opened.append(instrument)
        return instrument

    yield make
    for instrument in opened:
        instrument.close(safe=False)
