"""Shared fixtures: simulators on real transports, drivers connected to them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from drivers.instrument import Instrument
from drivers.registry import driver_class
from drivers.sim.clock import VirtualClock
from drivers.sim.host import SimHost, SimSpec

if TYPE_CHECKING:  # imported by the fixtures: only the sessions that use them pay for it
    from recordings import EntRecording, IsaqnRecording


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


@pytest.fixture(scope="session")
def isaqn_recording(tmp_path_factory: pytest.TempPathFactory) -> IsaqnRecording:
    """3 s of the simulated ISAQN bench recorded with its live statuses, once per session."""
    from recordings import record_isaqn

    return record_isaqn(tmp_path_factory.mktemp("isaqn-recording"))


@pytest.fixture(scope="session")
def ent_recording(tmp_path_factory: pytest.TempPathFactory) -> EntRecording:
    """4 s of the simulated entanglement bench (updates every 0.5 s) with its live statuses,
    frames and final histograms, and a replay of it with a view attached; once per session."""
    from recordings import record_entanglement

    return record_entanglement(tmp_path_factory.mktemp("ent-recording"))
