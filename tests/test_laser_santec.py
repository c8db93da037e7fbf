"""Santec TSL-570 driver against its simulator over a real TCP socket."""

from __future__ import annotations

import pytest

from drivers.errors import InstrumentCommandError, LimitViolation
from drivers.sim.faults import Fault
from drivers.sim.host import SimSpec


@pytest.fixture
def bench(sim_bench, manual_clock):
    return sim_bench([SimSpec("laser1", "santec_tsl570")], clock=manual_clock)


@pytest.fixture
def laser(bench, connect):
    return connect(bench, "laser1", limits={"power_mw": (0.04, 5.0)}, ramps={"power_mw": 100.0})


def test_connect_selects_scpi_mode_and_mw(bench, laser):
    sim = bench.sims["laser1"]
    assert laser.identity.startswith("SANTEC,TSL-570")
    assert sim.scpi_mode is True
    assert sim.power_unit_mw is True
    assert list(sim.received)[:3] == [b"*IDN?", b":SYST:COMM:COD 1", b":SYST:ERR?"]


def test_wavelength_round_trip_in_metres_on_the_wire(bench, laser):
    sim = bench.sims["laser1"]
    laser.wavelength_nm = 1550.1234
    assert sim.wavelength_m == pytest.approx(1550.1234e-9, abs=1e-16)
    assert b":WAV 1550.1234NM" in sim.received
    assert laser.wavelength_nm == pytest.approx(1550.1234, abs=1e-6)


def test_legacy_mode_bare_number_is_nm(bench, laser):
    sim = bench.sims["laser1"]
    laser.write(":SYST:COMM:COD 0")
    laser.write(":WAV 1551.5")
    assert sim.wavelength_m == pytest.approx(1551.5e-9)
    assert laser.query(":WAV?") == "1551.5000"


def test_emission_and_monitored_power(bench, laser, manual_clock):
    laser.power_mw = 2.0
    laser.emission_on()
    assert laser.query("*OPC?") == "0"  # diode still turning on
    manual_clock.advance(1.0)
    assert laser.query("*OPC?") == "1"
    assert laser.emission is True
    assert laser.measured_power_mw == pytest.approx(2.0, rel=1e-3)
    laser.safe_state()
    assert bench.sims["laser1"].snapshot()["optical_power_mw"] == 0.0


def test_power_ramp_steps_are_bounded(bench, laser):
    sim = bench.sims["laser1"]
    laser.ramp_step_s = 0.001
    laser.power_mw = 1.0
    sim.received.clear()
    laser.power_mw = 4.0  # 100 mW/s * 1 ms = 0.1 mW per step
    writes = [m for m in sim.received if m.startswith(b":POW ")]
    values = [float(m.split()[1]) for m in writes]
    assert len(values) == 30
    assert max(abs(b - a) for a, b in zip([1.0, *values], values, strict=False)) <= 0.1 + 1e-9
    assert values[-1] == pytest.approx(4.0)


def test_out_of_range_is_refused_before_sending(bench, laser):
    sim = bench.sims["laser1"]
    before = list(sim.received)
    with pytest.raises(LimitViolation) as info:
        laser.power_mw = 7.5
    message = str(info.value)
    assert "laser1" in message and "power_mw" in message and "7.5" in message
    assert "[0.04, 5]" in message
    with pytest.raises(LimitViolation, match="wavelength_nm"):
        laser.wavelength_nm = 1700.0  # outside the model's own range
    assert list(sim.received) == before


def test_instrument_error_text_is_raised(bench, laser):
    bench.sims["laser1"].alert = "No07. Interlock"
    with pytest.raises(InstrumentCommandError, match="Interlock") as info:
        laser.emission = True
    assert info.value.code == -221
    assert info.value.command == ":POW:STAT 1"


def test_alerts(bench, laser):
    assert laser.alerts() == "No alerts."


def test_delay_fault_recovers_without_stale_reply(bench, laser):
    from drivers.errors import InstrumentTimeout

    sim = bench.sims["laser1"]
    laser.wavelength_nm = 1550.0
    laser.power_mw = 1.5
    sim.faults.inject(Fault.DELAY, seconds=0.8)
    with pytest.raises(InstrumentTimeout):
        _ = laser.wavelength_nm
    # the late wavelength reply must not be taken for the power
    assert laser.power_mw == pytest.approx(1.5)
    assert laser.wavelength_nm == pytest.approx(1550.0)
