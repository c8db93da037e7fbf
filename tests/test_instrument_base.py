"""The shared safe set path, fault recovery and locking, exercised on a real socket.

The Santec simulator stands in for "an instrument"; everything here is the
base-class behaviour every driver inherits.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import (
    InstrumentCommandError,
    InstrumentDisconnected,
    InstrumentTimeout,
    LimitViolation,
    ProtocolError,
)
from drivers.instrument import Instrument
from drivers.registry import MODELS, driver_class
from drivers.santec import SantecTSL570
from drivers.sim.faults import Fault
from drivers.sim.host import SimSpec


@pytest.fixture
def bench(sim_bench, manual_clock):
    return sim_bench([SimSpec("laser1", "santec_tsl570")], clock=manual_clock)


@pytest.fixture
def laser(bench, connect):
    return connect(bench, "laser1", limits={"power_mw": (0.04, 5.0)}, ramps={"power_mw": 50.0})


# -- faults: exception type, recovery, no stale reply ---------------------------
def test_no_reply_times_out_then_recovers(bench, laser):
    laser.power_mw = 2.5
    bench.sims["laser1"].faults.inject(Fault.NO_REPLY)
    with pytest.raises(InstrumentTimeout) as info:
        _ = laser.power_mw
    assert info.value.instrument == "laser1" and info.value.command == ":POW?"
    assert laser.power_mw == pytest.approx(2.5)


def test_garbled_reply_is_a_protocol_error_then_recovers(bench, laser):
    laser.wavelength_nm = 1549.5
    bench.sims["laser1"].faults.inject(Fault.GARBLE)
    with pytest.raises(ProtocolError):
        _ = laser.wavelength_nm
    assert laser.wavelength_nm == pytest.approx(1549.5)


def test_dropped_connection_reconnects(bench, laser):
    laser.power_mw = 1.25
    bench.sims["laser1"].faults.inject(Fault.DROP)
    with pytest.raises((InstrumentTimeout, InstrumentDisconnected)):
        _ = laser.power_mw
    assert laser.power_mw == pytest.approx(1.25)


def test_refused_connection_is_disconnected_until_cleared(bench, laser):
    sim = bench.sims["laser1"]
    sim.faults.inject(Fault.REFUSE)
    with pytest.raises((InstrumentTimeout, InstrumentDisconnected)):
        _ = laser.power_mw
    with pytest.raises(InstrumentDisconnected, match=r"could not reconnect.*refused"):
        _ = laser.power_mw
    sim.faults.clear()
    assert laser.emission is False


def test_refused_at_connect(bench):
    resource = bench.resources["laser1"]
    bench.sims["laser1"].faults.inject(Fault.REFUSE)
    driver = SantecTSL570("laser1", resource, timeout_s=0.3)
    with pytest.raises(InstrumentDisconnected, match="refused"):
        driver.connect()


def test_busy_instrument_late_reply_is_discarded(bench, laser):
    laser.power_mw = 3.0
    sim = bench.sims["laser1"]
    sim.faults.inject(Fault.DELAY, seconds=0.7)
    with pytest.raises(InstrumentTimeout):
        _ = laser.wavelength_nm  # its reply arrives late, on the old connection
    sim.faults.inject(Fault.BUSY, seconds=0.2)
    assert laser.power_mw == pytest.approx(3.0)  # waits out the busy period, no stale reply


def test_injected_instrument_error_is_raised_with_text(bench, laser):
    bench.sims["laser1"].faults.inject(Fault.ERROR, code=-240, text="Hardware error;LD driver")
    with pytest.raises(InstrumentCommandError, match="-240: Hardware error;LD driver") as info:
        laser.emission = False
    assert info.value.code == -240 and info.value.instrument == "laser1"


def test_failed_ramp_ends_in_safe_state(bench, laser):
    sim = bench.sims["laser1"]
    laser.power_mw = 1.0
    laser.emission = True
    sim.faults.inject(Fault.ERROR, code=-222, text="Data out of range")
    with pytest.raises(InstrumentCommandError):
        laser.power_mw = 4.0
    assert sim.emission is False


def test_close_puts_laser_in_safe_state(bench):
    sim = bench.sims["laser1"]
    driver = SantecTSL570("laser1", bench.resources["laser1"], timeout_s=0.5)
    driver.connect()
    driver.emission = True
    driver.close()
    assert sim.emission is False


# -- limits -----------------------------------------------------------------------
def test_wrong_types_and_channels_are_refused_before_sending(bench, laser):
    sim = bench.sims["laser1"]
    before = list(sim.received)
    for name, value in [("power_mw", "lots"), ("power_mw", float("nan")), ("emission", 2)]:
        with pytest.raises(LimitViolation, match=name):
            laser.set(name, value)
    with pytest.raises(LimitViolation, match="channel"):
        laser.set("power_mw", 1.0, channel=2)
    with pytest.raises(LimitViolation, match="read-only"):
        laser.set("measured_power_mw", 1.0)
    with pytest.raises(LimitViolation):
        laser.apply({"emission": True, "power_mw": 99.0})  # batch refused whole
    assert list(sim.received) == before


def test_bench_limit_outside_model_range_is_refused():
    with pytest.raises(ValueError, match="exceeds the model's range"):
        SantecTSL570("l", "TCPIP0::127.0.0.1::1::SOCKET", limits={"power_mw": (0.04, 30.0)})


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(-10, 30, allow_nan=False),
    target=st.floats(0.04, 5.0, allow_nan=False),
    rate=st.floats(0.1, 100.0),
    step_s=st.floats(0.001, 0.5),
)
def test_ramp_steps_stay_in_limits_and_bounded(start, target, rate, step_s):
    driver = SantecTSL570(
        "l",
        "TCPIP0::127.0.0.1::1::SOCKET",
        limits={"power_mw": (0.04, 5.0)},
        ramps={"power_mw": rate},
        ramp_step_s=step_s,
    )
    steps = driver.ramp_steps("power_mw", start, target)
    assert steps[-1] == pytest.approx(target)
    assert np.all((steps >= 0.04 - 1e-12) & (steps <= 5.0 + 1e-12))
    begin = min(max(start, 0.04), 5.0)
    deltas = np.abs(np.diff(np.concatenate(([begin], steps[-len(steps) + (begin != start) :]))))
    assert np.all(deltas <= rate * step_s * (1 + 1e-9) + 1e-12)


# -- locking ----------------------------------------------------------------------
def test_concurrent_threads_never_interleave(bench, laser):
    """Several threads share one driver; every reply matches its own query."""
    laser.wavelength_nm = 1550.5
    laser.power_mw = 2.0
    errors: list[str] = []

    def reader(name: str, expected: float) -> None:
        for _ in range(40):
            value = laser.get(name)
            if abs(value - expected) > 1e-6:
                errors.append(f"{name} read {value}")

    def writer() -> None:
        for _ in range(20):
            laser.set("emission", False)

    threads = [
        threading.Thread(target=reader, args=("wavelength_nm", 1550.5)),
        threading.Thread(target=reader, args=("power_mw", 2.0)),
        threading.Thread(target=reader, args=("wavelength_nm", 1550.5)),
        threading.Thread(target=writer),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    received = list(bench.sims["laser1"].received)
    # every message is one whole command: nothing was split or merged
    assert all(m in {b":WAV?", b":POW?", b":POW:STAT 0", b":SYST:ERR?"} for m in received[-160:])


# -- conventions every driver follows (meta-test) -------------------------------------
@pytest.mark.parametrize("model", sorted(MODELS))
def test_driver_conventions(model):
    cls = driver_class(model)
    assert issubclass(cls, Instrument)
    assert cls.model == model and cls.instrument_class == MODELS[model][0]
    assert cls.modelled_on, f"{cls.__name__} must say which real instrument it follows"
    assert cls.__doc__ and cls.__module__ and driver_class(model).__module__.startswith("drivers.")
    settings_ = cls.settings()
    for name in getattr(cls, "required_settings", ()):
        assert name in settings_, f"{cls.__name__} lacks required setting {name}"
    for name, setting in settings_.items():
        assert setting.doc, f"{cls.__name__}.{name} has no doc"
        assert setting.units is not None
        if setting.rampable:
            assert setting.model_range is not None, f"{name}: rampable needs a range"


# -- setting listeners (recorder, GUI) ------------------------------------------------
def test_setting_listeners_hear_every_written_setting_once_and_never_fail_it(bench, laser):
    heard: list[tuple] = []
    laser.add_setting_listener(lambda *change: heard.append(change))

    def broken(*change):
        raise RuntimeError("listener bug")

    laser.add_setting_listener(broken)
    laser.set("wavelength_nm", 1550.5)
    laser.set("power_mw", 2.0)  # ramped at 50 mW/s: one notification with the final value
    with pytest.raises(LimitViolation):
        laser.set("power_mw", 9.0)  # refused: not written, not heard
    assert heard == [("laser1", "wavelength_nm", None, 1550.5), ("laser1", "power_mw", None, 2.0)]
    assert laser.get("power_mw") == pytest.approx(2.0)
    laser.remove_setting_listener(broken)
    laser.emission = True
    assert heard[-1] == ("laser1", "emission", None, True)
