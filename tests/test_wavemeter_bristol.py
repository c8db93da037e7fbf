"""Bristol 871A driver against its simulator over a real TCP socket, reading a simulated
Santec TSL-570 wired to its input (``"wm0:1" = "pump0:1"``) on a manual bench clock."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from drivers.errors import (
    InstrumentCommandError,
    InstrumentDisconnected,
    InstrumentTimeout,
    LimitViolation,
    ProtocolError,
)
from drivers.sim.faults import Fault
from drivers.sim.host import SimSpec
from drivers.wavemeter import WavemeterCondition, WavemeterNoSignal, WavemeterReading

C_M_S = 299_792_458.0
WIRING = {"wm0:1": "pump0:1"}
P_FALSE_FAIL = 1e-6  # two-sided probability that a statistical check fails by chance


def make_bench(sim_bench, clock, *, laser=None, wavemeter=None, wiring=WIRING, seed=3):
    specs = [
        SimSpec("pump0", "santec_tsl570", laser or {}),
        SimSpec("wm0", "bristol_871", wavemeter or {}),
    ]
    return sim_bench(specs, clock=clock, wiring=wiring, seed=seed)


@pytest.fixture
def bench(sim_bench, manual_clock):
    return make_bench(sim_bench, manual_clock)


@pytest.fixture
def wm(bench, connect):
    return connect(bench, "wm0")


@pytest.fixture
def laser(bench, connect):
    return connect(bench, "pump0")


def light_on(laser, clock, *, power_mw=1.0, wavelength_nm=1550.12):
    laser.wavelength_nm = wavelength_nm
    laser.power_mw = power_mw
    laser.emission = True
    clock.advance(1.0)  # 20 turn-on time constants


def next_frame(bench, clock):
    """Advance the clock to the completion of the next measurement."""
    sim = bench.sims["wm0"]
    clock.advance(sim.frame_time_s(sim.latest_index() + 1) - clock.now_s())


def truth_hz(bench, reading: WavemeterReading) -> float:
    """The laser's actual frequency when the measurement completed, plus the calibration
    offset: what the reading should be but for the repeatability noise."""
    wm_sim, laser_sim = bench.sims["wm0"], bench.sims["pump0"]
    t_s = wm_sim.frame_time_s(reading.scan_index)
    return laser_sim.optical_frequency_hz(t_s) + wm_sim.accuracy_offset_hz


def check_gaussian(residuals: np.ndarray, sigma: float) -> None:
    """Mean 0 and variance sigma^2, each at false-failure probability P_FALSE_FAIL."""
    n = residuals.size
    z = stats.norm.isf(P_FALSE_FAIL / 2)
    assert abs(residuals.mean()) < z * sigma / math.sqrt(n)
    low, high = stats.chi2.ppf([P_FALSE_FAIL / 2, 1 - P_FALSE_FAIL / 2], n)
    assert low < np.sum(residuals**2) / sigma**2 < high


# -- identity and connection -------------------------------------------------------------------
def test_connect_reads_identity_and_selects_mw(bench, wm):
    sim = bench.sims["wm0"]
    assert wm.identity.startswith("BRISTOL WAVELENGTH METER, 871A")
    assert sim.power_unit_mw is True
    assert list(sim.received)[:3] == [b"*IDN?", b":UNIT:POW MW", b":SYST:ERR?"]
    assert wm.power_unit == "mW"


def test_safe_state_sends_nothing(bench, wm):
    sim = bench.sims["wm0"]
    before = list(sim.received)
    wm.safe_state()
    assert list(sim.received) == before


# -- readings against the simulated laser ---------------------------------------------------------
def test_readings_follow_the_drifting_laser_within_the_repeatability(
    sim_bench, manual_clock, connect
):
    drifting = {"free_running_drift": True, "drift_rate_hz_per_s": 1e6}
    bench = make_bench(sim_bench, manual_clock, laser=drifting)
    wm, laser = connect(bench, "wm0"), connect(bench, "pump0")
    light_on(laser, manual_clock)
    sigma = bench.sims["wm0"].noise_rms_hz
    residuals, drift = [], []
    for _ in range(400):
        manual_clock.advance(0.5)
        next_frame(bench, manual_clock)
        reading = wm.measure()
        residuals.append(reading.frequency_hz - truth_hz(bench, reading))
        drift.append(bench.sims["pump0"].drift_hz())
        assert reading.wavelength_nm == pytest.approx(C_M_S / reading.frequency_hz * 1e9)
        assert reading.power_mw == pytest.approx(1.0, abs=1e-6)
        assert reading.condition == WavemeterCondition.NONE and not reading.questionable
    # the laser drifted by many sigmas of the wavemeter; the readings followed it
    assert np.ptp(drift) > 20 * sigma
    check_gaussian(np.array(residuals), sigma)


def test_setting_readings_agree_with_the_measurement(bench, wm, laser, manual_clock):
    light_on(laser, manual_clock, power_mw=2.0)
    reading = wm.measure()
    # the single-quantity replies carry fewer digits: THz with 7 decimals (100 kHz)
    assert wm.frequency_hz == pytest.approx(reading.frequency_hz, abs=60e3)
    assert wm.wavelength_nm == pytest.approx(reading.wavelength_nm, abs=1e-7)
    assert wm.power_mw == pytest.approx(2.0, abs=1e-6)
    # the calibration offset is the sim option, the noise its repeatability (6 sigma)
    expected = C_M_S / 1550.12e-9 + 5e6
    assert reading.frequency_hz == pytest.approx(expected, abs=6 * 0.6e6)


def test_power_reading_in_dbm_is_converted(bench, wm, laser, manual_clock):
    light_on(laser, manual_clock, power_mw=2.0)
    wm.power_unit = "dBm"
    assert wm.query(":FETC:POW?") == f"{10 * math.log10(2.0):.2f}"
    assert wm.measure().power_mw == pytest.approx(2.0, rel=2e-3)  # 0.01 dB resolution


# -- staleness --------------------------------------------------------------------------------
def test_between_updates_the_same_measurement_is_returned(bench, wm, laser, manual_clock):
    light_on(laser, manual_clock)
    first = wm.measure()
    manual_clock.advance(0.4 / bench.sims["wm0"].rate_hz)  # less than one update period
    again = wm.measure()
    assert again.scan_index == first.scan_index
    assert again.frequency_hz == first.frequency_hz
    assert not again.is_newer_than(first)
    assert WavemeterCondition.ALREADY_READ in again.condition
    assert WavemeterCondition.ALREADY_READ not in first.condition
    assert not again.questionable  # already read is not a doubt about the value
    next_frame(bench, manual_clock)
    new = wm.measure()
    assert new.scan_index == first.scan_index + 1 and new.is_newer_than(first)
    assert WavemeterCondition.ALREADY_READ not in new.condition
    assert new.frequency_hz != first.frequency_hz  # a new draw of the repeatability noise


def test_fresh_measurement_waits_for_the_next_update(bench, wm, laser, manual_clock):
    light_on(laser, manual_clock)
    sim = bench.sims["wm0"]
    period_s = 1.0 / sim.rate_hz
    latest = wm.measure()
    fresh = wm.measure(fresh=True)  # :READ: the next measurement; the manual clock moves on
    assert fresh.scan_index == latest.scan_index + 1
    assert manual_clock.now_s() == pytest.approx(sim.frame_time_s(fresh.scan_index))
    before = manual_clock.now_s()
    wm.query(":MEAS:FREQ?")  # :MEASure: the one after the next
    assert manual_clock.now_s() == pytest.approx(before + 2 * period_s)


def test_update_rate_setting(bench, wm, laser, manual_clock):
    light_on(laser, manual_clock)
    wm.measurement_rate_hz = 100
    assert wm.measurement_rate_hz == 100
    first = wm.measure(fresh=True)
    manual_clock.advance(1.0)
    assert wm.measure().scan_index == first.scan_index + 100
    sim = bench.sims["wm0"]
    before = list(sim.received)
    with pytest.raises(LimitViolation, match="measurement_rate_hz"):
        wm.measurement_rate_hz = 30  # not one of the 871's rates
    with pytest.raises(LimitViolation, match="average_count"):
        wm.average_count = 200
    assert list(sim.received) == before
    with pytest.raises(InstrumentCommandError, match="-222"):
        wm.write(":TRIG:SEQ:RATE 30")


@given(
    start=st.integers(0, 2**32 - 1),
    step=st.integers(1, 2**31 - 1),
)
def test_scan_index_order_survives_the_32_bit_wrap(start, step):
    def reading(index: int) -> WavemeterReading:
        return WavemeterReading(index, 1.9e14, 1550.0, 1.0, WavemeterCondition.NONE)

    older, newer = reading(start), reading((start + step) % 2**32)
    assert newer.is_newer_than(older)
    assert not older.is_newer_than(newer)
    assert not older.is_newer_than(older)
    assert older.is_newer_than(None)


def test_scan_index_wraps_at_32_bits_on_the_wire(bench, wm, laser, manual_clock):
    light_on(laser, manual_clock)
    sim = bench.sims["wm0"]
    manual_clock.advance(sim.frame_time_s(2**32 - 1) - manual_clock.now_s())
    last = wm.measure()
    assert last.scan_index == 2**32 - 1
    next_frame(bench, manual_clock)
    wrapped = wm.measure()
    assert wrapped.scan_index == 0 and wrapped.is_newer_than(last)


# -- no light -----------------------------------------------------------------------------------
def test_no_light_is_never_a_frequency(bench, wm, laser, manual_clock):
    light_on(laser, manual_clock)
    assert wm.measure().frequency_hz > 0
    laser.emission = False
    next_frame(bench, manual_clock)
    with pytest.raises(WavemeterNoSignal, match="NO_SIGNAL") as info:
        wm.measure()
    assert info.value.instrument == "wm0" and info.value.command == ":FETC:ALL?"
    assert WavemeterCondition.NO_SIGNAL in info.value.condition
    assert wm.frequency_hz is None and wm.wavelength_nm is None
    assert wm.power_mw == 0.0
    assert WavemeterCondition.NO_SIGNAL in wm.condition
    state = wm.state()  # what `labctl instruments` shows: no bogus number
    assert state["frequency_hz"] is None and state["wavelength_nm"] is None


def test_unwired_input_has_no_signal(sim_bench, manual_clock, connect):
    bench = make_bench(sim_bench, manual_clock, wiring={})
    wm, laser = connect(bench, "wm0"), connect(bench, "pump0")
    light_on(laser, manual_clock)
    with pytest.raises(WavemeterNoSignal):
        wm.measure()


@pytest.mark.parametrize(
    ("tap_fraction", "has_reading", "flag"),
    [
        (1e-4, False, WavemeterCondition.NO_SIGNAL),  # 0.1 uW: below the 1 uW threshold
        (5e-3, True, WavemeterCondition.LOW_SIGNAL),  # 5 uW: a reading, flagged
        (1.0, True, WavemeterCondition.NONE),
        (20.0, True, WavemeterCondition.SATURATED),  # 20 mW on the detector
    ],
)
def test_power_thresholds(sim_bench, manual_clock, connect, tap_fraction, has_reading, flag):
    bench = make_bench(sim_bench, manual_clock, wavemeter={"tap_fraction": tap_fraction})
    wm, laser = connect(bench, "wm0"), connect(bench, "pump0")
    light_on(laser, manual_clock, power_mw=1.0)
    if not has_reading:
        with pytest.raises(WavemeterNoSignal) as info:
            wm.measure()
        assert flag in info.value.condition
        return
    reading = wm.measure()
    assert reading.condition == flag
    assert reading.questionable is (flag != WavemeterCondition.NONE)
    assert reading.power_mw == pytest.approx(tap_fraction, rel=1e-6)


def test_wavelength_outside_the_model_range_has_no_reading(sim_bench, manual_clock, connect):
    bench = make_bench(sim_bench, manual_clock, wavemeter={"wavelength_range_nm": [1000, 1500]})
    wm, laser = connect(bench, "wm0"), connect(bench, "pump0")
    light_on(laser, manual_clock)
    with pytest.raises(WavemeterNoSignal, match="WAVELENGTH_OUT_OF_RANGE"):
        wm.measure()


# -- averaging ---------------------------------------------------------------------------------
def test_averaging_divides_the_noise_variance_by_the_count(bench, wm, laser, manual_clock):
    light_on(laser, manual_clock)
    count = 16
    wm.apply({"average_count": count, "averaging": True})
    assert wm.averaging is True and wm.average_count == count
    sim = bench.sims["wm0"]
    residuals = []
    for _ in range(250):
        manual_clock.advance(count / sim.rate_hz)  # disjoint windows: independent readings
        reading = wm.measure()
        residuals.append(reading.frequency_hz - truth_hz(bench, reading))
    check_gaussian(np.array(residuals), sim.noise_rms_hz / math.sqrt(count))


def test_average_restarts_when_the_light_comes_back(bench, wm, laser, manual_clock):
    light_on(laser, manual_clock)
    wm.apply({"average_count": 8, "averaging": True})
    sim = bench.sims["wm0"]
    laser.emission = False
    next_frame(bench, manual_clock)
    with pytest.raises(WavemeterNoSignal):
        wm.measure()
    laser.emission = True
    manual_clock.advance(0.5)  # turned on again, above the threshold after ~0.1 us
    first = wm.measure()
    frames = [sim.frame(first.scan_index - i) for i in range(8)]
    assert all(f.has_reading for f in frames)  # 10 frames of light: a full window
    # (the :ALL? wavelength has 7 decimals of nm: 12.5 kHz steps)
    assert first.frequency_hz == pytest.approx(np.mean([f.frequency_hz for f in frames]), abs=2e4)
    laser.emission = False
    next_frame(bench, manual_clock)
    with pytest.raises(WavemeterNoSignal):
        wm.measure()
    laser.emission = True
    # two frames later: only the frames since the light came back are averaged
    next_frame(bench, manual_clock)
    next_frame(bench, manual_clock)
    reading = wm.measure()
    window = [sim.frame(reading.scan_index - i) for i in range(3)]
    assert [f.has_reading for f in window] == [True, True, False]
    expected = np.mean([f.frequency_hz for f in window[:2]])
    assert reading.frequency_hz == pytest.approx(expected, abs=2e4)


# -- the laser's mode hop and fine tuning seen by the wavemeter ---------------------------------
def test_mode_hop_is_seen_and_stays_until_the_laser_is_retuned(bench, wm, laser, manual_clock):
    light_on(laser, manual_clock)
    sigma = bench.sims["wm0"].noise_rms_hz
    before = wm.measure()
    bench.sims["pump0"].mode_hop(-2.5e9)
    next_frame(bench, manual_clock)
    hopped = wm.measure()
    assert hopped.frequency_hz - before.frequency_hz == pytest.approx(-2.5e9, abs=8 * sigma)
    # fine tuning moves the laser on its new mode: the hop stays
    target_pm = 10.0
    laser.fine_tuning_pm = target_pm
    next_frame(bench, manual_clock)
    tuned = wm.measure()
    shift_hz = C_M_S / (1550.12e-9 + target_pm * 1e-12) - C_M_S / 1550.12e-9
    assert tuned.frequency_hz - before.frequency_hz == pytest.approx(
        -2.5e9 + shift_hz, abs=8 * sigma
    )
    # re-tuning lands it back on the intended mode (fine tuning ends too)
    laser.wavelength_nm = 1550.12
    next_frame(bench, manual_clock)
    back = wm.measure()
    assert back.frequency_hz - before.frequency_hz == pytest.approx(0.0, abs=8 * sigma)
    assert laser.fine_tuning_pm == 0.0


def test_a_setting_change_shows_from_the_next_measurement(bench, wm, laser, manual_clock):
    light_on(laser, manual_clock)
    before = wm.measure()
    bench.sims["pump0"].mode_hop(1e9)  # after the latest measurement completed
    same = wm.measure()
    assert same.scan_index == before.scan_index and same.frequency_hz == before.frequency_hz
    next_frame(bench, manual_clock)
    assert wm.measure().frequency_hz - before.frequency_hz > 0.9e9


# -- faults: typed errors, then recovery -------------------------------------------------------
def test_no_reply_times_out_then_recovers(bench, wm, laser, manual_clock):
    light_on(laser, manual_clock)
    bench.sims["wm0"].faults.inject(Fault.NO_REPLY)
    with pytest.raises(InstrumentTimeout) as info:
        wm.measure()
    assert info.value.instrument == "wm0" and info.value.command == ":FETC:ALL?"
    assert wm.measure().frequency_hz > 0


def test_garbled_reply_is_a_protocol_error_then_recovers(bench, wm, laser, manual_clock):
    light_on(laser, manual_clock)
    bench.sims["wm0"].faults.inject(Fault.GARBLE)
    with pytest.raises(ProtocolError):
        wm.measure()
    assert wm.measure().power_mw == pytest.approx(1.0, abs=1e-6)


def test_dropped_link_reconnects(bench, wm, laser, manual_clock):
    light_on(laser, manual_clock)
    bench.sims["wm0"].faults.inject(Fault.DROP)
    with pytest.raises((InstrumentTimeout, InstrumentDisconnected)):
        wm.measure()
    assert wm.measure().frequency_hz > 0


def test_instrument_error_on_a_setting_is_raised_with_its_text(bench, wm):
    bench.sims["wm0"].faults.inject(Fault.ERROR, code=-240, text="Hardware error;detector")
    with pytest.raises(InstrumentCommandError, match="-240: Hardware error;detector") as info:
        wm.averaging = True
    assert info.value.code == -240 and info.value.command == ":SENS:AVER:STAT ON"


def test_reading_in_another_unit_is_refused(bench, wm, laser, manual_clock, monkeypatch):
    """A real 871 set to display THz would answer :ALL? with ~193: not taken for nm."""
    light_on(laser, manual_clock)
    sim = bench.sims["wm0"]
    monkeypatch.setattr(
        sim, "_format", lambda quantity, f, cond: f"{f.index},0,{f.frequency_hz * 1e-12:.6f},1.0"
    )
    with pytest.raises(ProtocolError, match="not a wavelength in nm"):
        wm.measure()


def test_simulator_options_are_checked(bench):
    from drivers.sim.bristol_871 import SimBristol871

    with pytest.raises(ValueError, match=r"unknown bristol_871 simulator option.*noise_mhz"):
        SimBristol871("wmx", bench.bench, {"noise_mhz": 1.0})
    with pytest.raises(ValueError, match="update_rate_hz must be one of"):
        SimBristol871("wmx", bench.bench, {"update_rate_hz": 30})
    with pytest.raises(ValueError, match="noise_rms_mhz must be >= 0"):
        SimBristol871("wmx", bench.bench, {"noise_rms_mhz": -1.0})
