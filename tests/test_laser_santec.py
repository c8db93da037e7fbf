"""Santec TSL-570 driver against its simulator over a real TCP socket."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from drivers.errors import InstrumentCommandError, LimitViolation
from drivers.santec import fine_tuning_pm_for_offset
from drivers.sim.clock import VirtualClock
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


# -- fine tuning, free-running drift and mode hops (the twin behind a wavemeter lock) ------------
C_M_S = 299_792_458.0
P_FALSE_FAIL = 1e-6  # two-sided probability that a statistical check fails by chance


def test_fine_tuning_round_trip_and_frequency(bench, laser):
    sim = bench.sims["laser1"]
    laser.wavelength_nm = 1550.12
    laser.fine_tuning_pm = -12.34
    assert b":WAV:FIN -12.34" in sim.received
    assert sim.fine_tuning_pm == pytest.approx(-12.34)
    assert laser.fine_tuning_pm == pytest.approx(-12.34)
    assert laser.wavelength_nm == pytest.approx(1550.12)  # :WAV? keeps the coarse setting
    expected_hz = C_M_S / (1550.12e-9 - 12.34e-12)
    assert sim.optical_frequency_hz() == pytest.approx(expected_hz, rel=1e-15)
    assert sim.wavelength_m == pytest.approx(1550.12e-9 - 12.34e-12, rel=1e-15)
    # a new wavelength ends fine tuning, and so does :WAV:FIN:DIS
    laser.wavelength_nm = 1550.2
    assert laser.fine_tuning_pm == 0.0
    laser.fine_tuning_pm = 3.0
    laser.end_fine_tuning()
    assert sim.fine_tuning_pm == 0.0 and laser.fine_tuning_pm == 0.0
    assert sim.optical_frequency_hz() == pytest.approx(C_M_S / 1550.2e-9, rel=1e-15)


def test_fine_tuning_range_and_resolution(bench, laser):
    sim = bench.sims["laser1"]
    before = list(sim.received)
    with pytest.raises(LimitViolation, match="fine_tuning_pm"):
        laser.fine_tuning_pm = 100.5
    assert list(sim.received) == before
    with pytest.raises(InstrumentCommandError, match="-222"):
        laser.write(":WAV:FIN 150")  # the instrument refuses it as well
    laser.write(":WAV:FIN 1.234")  # quantised to the 0.01 pm step
    assert sim.fine_tuning_pm == pytest.approx(1.23, abs=1e-12)


@given(
    offset_hz=st.floats(-10e9, 10e9, allow_nan=False),
    wavelength_nm=st.floats(1480.0, 1640.0),
)
def test_fine_tuning_offset_for_a_frequency_step_is_exact(offset_hz, wavelength_nm):
    pm = fine_tuning_pm_for_offset(offset_hz, wavelength_nm)
    moved_hz = C_M_S / (wavelength_nm * 1e-9 + pm * 1e-12) - C_M_S / (wavelength_nm * 1e-9)
    # exact up to the float64 cancellation of two ~2e14 Hz numbers (ulp 0.03 Hz)
    assert moved_hz == pytest.approx(offset_hz, rel=1e-9, abs=0.2)
    # first order: -lambda^2 / c per Hz
    first_order = -((wavelength_nm * 1e-9) ** 2) / C_M_S * offset_hz * 1e12
    assert pm == pytest.approx(first_order, rel=1e-4, abs=1e-9)


def test_a_frequency_step_through_the_driver_lands_within_half_a_step(bench, laser):
    sim = bench.sims["laser1"]
    laser.wavelength_nm = 1550.12
    start_hz = sim.optical_frequency_hz()
    for offset_hz in (-3.7e6, 0.9e6, 250e6, -1.2e9):
        laser.fine_tuning_pm = fine_tuning_pm_for_offset(offset_hz, 1550.12)
        half_step_hz = 0.005e-12 * C_M_S / 1550.12e-9**2  # 0.005 pm: 0.62 MHz
        assert abs(sim.optical_frequency_hz() - start_hz - offset_hz) <= half_step_hz * 1.001


def test_no_drift_by_default(bench, laser, manual_clock):
    sim = bench.sims["laser1"]
    laser.wavelength_nm = 1550.12
    frequency_hz = sim.optical_frequency_hz()
    manual_clock.advance(3600.0)
    assert sim.optical_frequency_hz() == frequency_hz == C_M_S / 1550.12e-9
    assert sim.snapshot()["drift_hz"] == 0.0


def drifting_bench(sim_bench, clock, name="laser1", seed=5, **options):
    opts = {"free_running_drift": True, **options}
    return sim_bench([SimSpec(name, "santec_tsl570", opts)], clock=clock, seed=seed)


def test_free_running_drift_has_random_walk_statistics(sim_bench, manual_clock):
    """Increments over dt are independent N(a dt, D dt) (closed form of a Wiener process
    with linear drift), sampled on the seeded manual clock."""
    rate, diffusion, dt_s, n = 2e6, 1e12, 1.0, 3000
    host = drifting_bench(
        sim_bench, manual_clock, drift_rate_hz_per_s=rate, drift_diffusion_hz2_per_s=diffusion
    )
    sim = host.sims["laser1"]
    samples = [sim.optical_frequency_hz()]
    for _ in range(n):
        manual_clock.advance(dt_s)
        samples.append(sim.optical_frequency_hz())
    steps = np.diff(samples)
    sigma = math.sqrt(diffusion * dt_s)
    z = stats.norm.isf(P_FALSE_FAIL / 2)
    assert abs(steps.mean() - rate * dt_s) < z * sigma / math.sqrt(n)
    low, high = stats.chi2.ppf([P_FALSE_FAIL / 2, 1 - P_FALSE_FAIL / 2], n)
    assert low < np.sum((steps - rate * dt_s) ** 2) / sigma**2 < high
    # consecutive increments are uncorrelated (|r| < z / sqrt(n) under independence)
    r = np.corrcoef(steps[:-1], steps[1:])[0, 1]
    assert abs(r) < z / math.sqrt(n - 1)


def test_drift_is_reproducible_per_seed_and_name(sim_bench, manual_clock):
    def trace(name, seed):
        clock = VirtualClock(realtime=False)
        sim = drifting_bench(sim_bench, clock, name=name, seed=seed).sims[name]
        return [sim.optical_frequency_hz(t) for t in np.linspace(0.0, 600.0, 61)]

    assert trace("pump0", 5) == trace("pump0", 5)
    assert trace("pump0", 5) != trace("pump10", 5)
    assert trace("pump0", 5) != trace("pump0", 6)


def test_drift_walk_is_linear_between_grid_points(sim_bench, manual_clock):
    host = drifting_bench(sim_bench, manual_clock, drift_rate_hz_per_s=0.0, drift_step_s=0.5)
    sim = host.sims["laser1"]
    a, b = sim.drift_hz(10.0), sim.drift_hz(10.5)
    assert sim.drift_hz(10.2) == pytest.approx(a + 0.4 * (b - a), rel=1e-12, abs=1e-6)
    assert a != b


def test_frequency_history_answers_for_earlier_times(bench, laser, manual_clock):
    sim = bench.sims["laser1"]
    laser.wavelength_nm = 1550.0
    manual_clock.advance(1.0)
    t_before = manual_clock.now_s()
    manual_clock.advance(1.0)
    laser.wavelength_nm = 1551.0
    assert sim.optical_frequency_hz(t_before) == pytest.approx(C_M_S / 1550e-9, rel=1e-15)
    assert sim.optical_frequency_hz() == pytest.approx(C_M_S / 1551e-9, rel=1e-15)
    laser.power_mw = 2.0
    laser.emission = True
    assert sim.optical_power_mw(t_before) == 0.0  # it was off then
    manual_clock.advance(1.0)
    assert sim.optical_power_mw() == pytest.approx(2.0, rel=1e-6)


def test_mode_hop_stays_until_retuned(bench, laser, manual_clock):
    sim = bench.sims["laser1"]
    laser.wavelength_nm = 1550.12
    nominal_hz = C_M_S / 1550.12e-9
    sim.mode_hop(4.1e9)
    sim.mode_hop(-1.0e9)  # hops add up
    manual_clock.advance(100.0)
    assert sim.optical_frequency_hz() == pytest.approx(nominal_hz + 3.1e9, rel=1e-15)
    laser.fine_tuning_pm = 5.0  # fine tuning keeps the wrong mode
    tuned_hz = C_M_S / (1550.12e-9 + 5e-12)
    assert sim.optical_frequency_hz() == pytest.approx(tuned_hz + 3.1e9, rel=1e-15)
    laser.end_fine_tuning()
    assert sim.snapshot()["mode_hop_hz"] == pytest.approx(3.1e9)
    laser.wavelength_nm = 1550.12  # re-tuning lands on the intended mode
    assert sim.optical_frequency_hz() == pytest.approx(nominal_hz, rel=1e-15)
    sim.mode_hop(2e9)
    laser.write("*RST")
    assert sim.snapshot()["mode_hop_hz"] == 0.0
    with pytest.raises(ValueError, match="finite"):
        sim.mode_hop(float("nan"))


def test_wavelength_m_is_the_actual_wavelength(sim_bench, manual_clock):
    sim = drifting_bench(sim_bench, manual_clock).sims["laser1"]
    sim.wavelength_m = 1540.56e-9  # what the pair-source tests do: re-tune the twin
    manual_clock.advance(120.0)
    assert sim.drift_hz() != 0.0
    assert sim.wavelength_m == pytest.approx(C_M_S / sim.optical_frequency_hz(), rel=1e-15)
    assert sim.set_wavelength_m == 1540.56e-9
    assert sim.optical_frequency_hz() == pytest.approx(
        C_M_S / 1540.56e-9 + sim.drift_hz(), rel=1e-15
    )


def test_simulator_options_are_checked(sim_bench, manual_clock):
    with pytest.raises(ValueError, match=r"unknown santec_tsl570 simulator option.*drift_hz"):
        sim_bench([SimSpec("l", "santec_tsl570", {"drift_hz": 1.0})], clock=manual_clock)
    with pytest.raises(ValueError, match="free_running_drift must be true or false"):
        sim_bench([SimSpec("l", "santec_tsl570", {"free_running_drift": 1})], clock=manual_clock)
    with pytest.raises(ValueError, match="drift step must be > 0"):
        drifting_bench(sim_bench, manual_clock, drift_step_s=0.0)
