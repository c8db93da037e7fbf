"""Loop runner: deadline scheduling, missed ticks, watchdog faults, bumpless reset, threads.

Scheduling tests run on clocks the test controls: the bench's manual ``VirtualClock`` through
an ``AdvancingClock`` (as the lead wires it), or a bare settable clock for late ticks.
"""

from __future__ import annotations

import logging
import math
import threading

import numpy as np
import pytest

from drivers.sim.clock import VirtualClock
from labctl.loop_runner import (
    AdvancingClock,
    LoopRunner,
    LoopSpec,
    LoopStatus,
    Reading,
    WallClock,
)
from labctl.pid import PID, PidGains


class SetClock:
    """A clock the test sets by hand; waiting does nothing (tests call tick_due)."""

    def __init__(self) -> None:
        self.t = 0.0

    def now_s(self) -> float:
        return self.t

    def wait_until(self, t_s: float, stop: threading.Event) -> bool:
        return stop.is_set()


class ThermalStage:
    """``tau dT/dt = -(T - T_amb) + K I``, integrated exactly up to ``now`` at each access
    (the current is held between writes, like the simulated TEC's)."""

    def __init__(self, now, gain=5.0, tau_s=10.0, ambient=22.0):
        self.now, self.gain, self.tau_s, self.ambient = now, gain, tau_s, ambient
        self.t_s = now()
        self.temperature = ambient
        self.current = 0.0
        self.reads: list[float] = []
        self.writes: list[tuple[float, float]] = []

    def _advance(self) -> None:
        t = self.now()
        a = math.exp(-(t - self.t_s) / self.tau_s)
        steady = self.ambient + self.gain * self.current
        self.temperature = steady + (self.temperature - steady) * a
        self.t_s = t

    def read(self) -> float:
        self._advance()
        self.reads.append(self.now())
        return self.temperature

    def write(self, current: float) -> None:
        self._advance()
        self.writes.append((self.now(), current))
        self.current = current


def make_spec(name, plant, period_s=0.1, max_age_s=0.35, **kwargs) -> LoopSpec:
    pid = kwargs.pop("pid", None) or PID(
        PidGains(2.0, 0.6), setpoint=30.0, output_min=-2.0, output_max=2.0
    )
    return LoopSpec(
        name=name,
        pid=pid,
        read=kwargs.pop("read", plant.read),
        write=kwargs.pop("write", plant.write),
        period_s=period_s,
        max_reading_age_s=max_age_s,
        **kwargs,
    )


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock(realtime=False)


@pytest.fixture
def advancing(vclock) -> AdvancingClock:
    return AdvancingClock(vclock.now_s, vclock.advance)


# ------------------------------------------------------------------------- scheduling
def test_two_loops_tick_at_their_own_rates(vclock, advancing):
    fast, slow = ThermalStage(vclock.now_s), ThermalStage(vclock.now_s)
    runner = LoopRunner(
        [make_spec("fast", fast, period_s=0.1), make_spec("slow", slow, period_s=0.25)],
        clock=advancing,
    )
    runner.run_until(3.0)
    np.testing.assert_allclose(fast.reads, np.arange(31) * 0.1, atol=1e-9)
    np.testing.assert_allclose(slow.reads, np.arange(13) * 0.25, atol=1e-9)
    status = runner.status()
    assert status["fast"].ticks == 31 and status["slow"].ticks == 13
    assert status["fast"].missed_ticks == 0 and status["fast"].state == "running"


def test_300_s_of_closed_loop_on_virtual_time(vclock, advancing):
    stage = ThermalStage(vclock.now_s)
    runner = LoopRunner([make_spec("tec", stage)], clock=advancing)
    runner.run_until(300.0)
    status = runner.status()["tec"]
    assert status.ticks == 3001
    assert stage.temperature == pytest.approx(30.0, abs=1e-6)
    assert status.output == pytest.approx((30.0 - 22.0) / 5.0, rel=1e-6)
    assert status.missed_ticks == 0 and status.stale_readings == 0


def test_late_tick_counts_missed_ticks_and_skips_ahead_without_bursting():
    clock = SetClock()
    stage = ThermalStage(clock.now_s)
    runner = LoopRunner([make_spec("tec", stage, period_s=0.1)], clock=clock)
    assert runner.tick_due() == 1  # t = 0
    clock.t = 0.1
    assert runner.tick_due() == 1
    clock.t = 0.45  # deadline 0.2 started 0.25 s late: 0.2 and 0.3 missed, one tick now
    assert runner.tick_due() == 1
    status = runner.status()["tec"]
    assert len(stage.reads) == 3
    assert status.missed_ticks == 2 and status.consecutive_missed_ticks == 2
    clock.t = 0.49  # next deadline is 0.5, not 0.3 or 0.4: no burst
    assert runner.tick_due() == 0
    clock.t = 0.5
    assert runner.tick_due() == 1
    status = runner.status()["tec"]
    assert status.missed_ticks == 2 and status.consecutive_missed_ticks == 0
    assert status.state == "running" and len(stage.reads) == 4


def test_too_many_consecutive_missed_ticks_fault_the_loop(caplog):
    clock = SetClock()
    stage = ThermalStage(clock.now_s)
    safe_calls = []
    runner = LoopRunner(
        [make_spec("tec", stage, max_missed_ticks=3, safe=lambda: safe_calls.append(clock.t))],
        clock=clock,
    )
    runner.tick_due()
    clock.t = 0.35  # 0.1, 0.2 missed: still below the limit
    runner.tick_due()
    clock.t = 0.65  # 0.4, 0.5 missed: 4 in a row
    with caplog.at_level(logging.ERROR):
        runner.tick_due()
    status = runner.status()["tec"]
    assert status.state == "fault" and "4 consecutive missed ticks" in status.fault_reason
    assert safe_calls == [0.65] and len(stage.reads) == 2
    assert any("'tec' FAULT at t=0.650 s" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- watchdog
def test_failing_sensor_faults_after_max_age_and_the_other_loop_runs(vclock, advancing, caplog):
    tec, other = ThermalStage(vclock.now_s), ThermalStage(vclock.now_s)
    fail_from, period, max_age = 1.0, 0.1, 0.35

    def read():
        if vclock.now_s() >= fail_from - 1e-9:
            raise TimeoutError("TEC:T? timed out")
        return tec.read()

    safe_calls = []
    runner = LoopRunner(
        [
            make_spec("tec", tec, read=read, safe=lambda: safe_calls.append(vclock.now_s())),
            make_spec("other", other, period_s=0.2),
        ],
        clock=advancing,
    )
    with caplog.at_level(logging.WARNING):
        runner.run_until(3.0)
    ticks = np.arange(31) * period
    last_good = ticks[ticks < fail_from - 1e-9][-1]
    expected_fault = ticks[ticks - last_good > max_age + 1e-9][0]
    status = runner.status()
    assert status["tec"].state == "fault"
    assert status["tec"].fault_time_s == pytest.approx(expected_fault)
    assert safe_calls == [pytest.approx(expected_fault)]
    assert "sensor read failed: TimeoutError: TEC:T? timed out" in status["tec"].fault_reason
    # output held: nothing written after the sensor failed
    assert max(t for t, _ in tec.writes) == pytest.approx(last_good)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "'tec' FAULT" in errors[0].getMessage()
    assert "TEC:T? timed out" in errors[0].getMessage()
    # the other loop never stopped
    assert status["other"].state == "running" and status["other"].ticks == 16


def test_stale_reading_faults_the_loop(vclock, advancing):
    stage = ThermalStage(vclock.now_s)
    frozen: list[Reading] = []

    def read() -> Reading:
        value = stage.read()
        if vclock.now_s() < 1.0 - 1e-9:
            return Reading(value, vclock.now_s())
        if not frozen:  # the instrument keeps returning its cached value
            frozen.append(Reading(value, vclock.now_s()))
        return frozen[0]

    safe_calls = []
    runner = LoopRunner(
        [make_spec("tec", stage, read=read, max_age_s=0.25, safe=lambda: safe_calls.append(1))],
        clock=advancing,
    )
    runner.run_until(2.0)
    status = runner.status()["tec"]
    assert status.state == "fault" and "stale reading" in status.fault_reason
    assert status.stale_readings >= 1 and safe_calls == [1]
    # the cached value was used once (fresh at t=1.0), never after: last write at t=1.0
    assert max(t for t, _ in stage.writes) == pytest.approx(1.0)


def test_non_finite_reading_is_a_read_error(vclock, advancing):
    stage = ThermalStage(vclock.now_s)
    runner = LoopRunner(
        [make_spec("tec", stage, read=lambda: math.nan, max_age_s=0.25)], clock=advancing
    )
    runner.run_until(1.0)
    status = runner.status()["tec"]
    assert status.state == "fault" and "non-finite" in status.fault_reason
    ticks = np.arange(11) * 0.1
    fault_at = ticks[ticks > 0.25 + 1e-9][0]  # blind since the start for more than max age
    assert status.fault_time_s == pytest.approx(fault_at)
    assert status.read_errors == np.count_nonzero(ticks <= fault_at + 1e-9)
    assert stage.writes == []


def test_failing_write_faults_at_once_and_a_failing_safe_is_only_logged(vclock, advancing, caplog):
    stage = ThermalStage(vclock.now_s)

    def write(value: float) -> None:
        if vclock.now_s() >= 0.5 - 1e-9:
            raise ConnectionError("link dropped")
        stage.write(value)

    def safe() -> None:
        raise ConnectionError("still dropped")

    runner = LoopRunner([make_spec("tec", stage, write=write, safe=safe)], clock=advancing)
    with caplog.at_level(logging.ERROR):
        runner.run_until(1.0)
    status = runner.status()["tec"]
    assert status.state == "fault" and status.fault_time_s == pytest.approx(0.5)
    assert "actuator write" in status.fault_reason and "link dropped" in status.fault_reason
    assert any("safe() raised" in r.getMessage() and r.exc_info for r in caplog.records)


def test_reset_fault_resumes_bumplessly(vclock, advancing):
    stage = ThermalStage(vclock.now_s)
    broken = threading.Event()

    def read() -> float:
        if broken.is_set():
            raise OSError("thermistor open")
        return stage.read()

    runner = LoopRunner([make_spec("tec", stage, read=read)], clock=advancing)
    runner.run_until(5.0)  # mid-transient
    broken.set()
    runner.run_until(6.0)
    assert runner.status()["tec"].state == "fault"
    last_before = stage.writes[-1][1]
    n_before = len(stage.writes)
    broken.clear()
    assert runner.reset_fault("tec") is True
    assert runner.reset_fault("tec") is False  # not faulted any more
    runner.run_until(8.0)
    status = runner.status()["tec"]
    assert status.state == "running" and status.fault_reason is not None  # last fault kept
    assert stage.writes[n_before][1] == last_before  # first output after the reset: no jump
    runner.run_until(300.0)
    assert stage.temperature == pytest.approx(30.0, abs=1e-6)


def test_reset_fault_from_a_given_output(vclock, advancing):
    stage = ThermalStage(vclock.now_s)
    runner = LoopRunner(
        [make_spec("tec", stage, write=lambda i: (_ for _ in ()).throw(OSError("no")))],
        clock=advancing,
    )
    runner.run_until(0.5)
    assert runner.status()["tec"].state == "fault"
    runner.reset_fault("tec", output=0.0)
    assert runner.status()["tec"].output == 0.0


# --------------------------------------------------------------------- operator API
def test_setpoint_manual_auto_and_gains_are_forwarded(vclock, advancing):
    stage = ThermalStage(vclock.now_s)
    seen: list[LoopStatus] = []
    spec = make_spec("tec", stage, on_tick=lambda name, st: seen.append(st))
    runner = LoopRunner([spec], clock=advancing)
    runner.set_setpoint("tec", 25.0)
    runner.run_until(200.0)
    assert stage.temperature == pytest.approx(25.0, abs=1e-6)
    runner.set_manual("tec", 0.2)
    runner.run_until(201.0)
    assert seen[-1].state == "manual" and stage.current == 0.2
    runner.set_auto("tec")
    runner.set_gains("tec", PidGains(1.0, 0.1))
    runner.run_until(500.0)
    assert spec.pid.gains == PidGains(1.0, 0.1)
    assert seen[-1].state == "running" and seen[-1].setpoint == 25.0
    assert stage.temperature == pytest.approx(25.0, abs=1e-6)
    with pytest.raises(KeyError, match="no loop named 'laser'; loops: tec"):
        runner.set_setpoint("laser", 1.0)
    with pytest.raises(ValueError, match="manual output"):
        runner.set_manual("tec", 5.0)


def test_on_tick_errors_are_logged_and_the_loop_continues(vclock, advancing, caplog):
    stage = ThermalStage(vclock.now_s)

    def bad_sink(name: str, status: LoopStatus) -> None:
        raise RuntimeError("display gone")

    runner = LoopRunner([make_spec("tec", stage, on_tick=bad_sink)], clock=advancing)
    with caplog.at_level(logging.ERROR):
        runner.run_until(1.0)
    assert runner.status()["tec"].ticks == 11
    assert sum("on_tick callback raised" in r.getMessage() for r in caplog.records) == 11


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("period_s", 0.0, "period_s"),
        ("max_reading_age_s", -1.0, "max_reading_age_s"),
        ("max_missed_ticks", 0, "max_missed_ticks"),
        ("name", "", "loop name"),
    ],
)
def test_bad_loop_specs_are_refused(field, value, match):
    kwargs = {
        "name": "tec",
        "pid": PID(PidGains(1.0)),
        "read": lambda: 0.0,
        "write": lambda u: None,
        "period_s": 0.1,
        "max_reading_age_s": 0.3,
    }
    kwargs[field] = value
    with pytest.raises(ValueError, match=match):
        LoopSpec(**kwargs)


def test_duplicate_names_are_refused():
    stage = ThermalStage(lambda: 0.0)
    with pytest.raises(ValueError, match="repeated: tec"):
        LoopRunner([make_spec("tec", stage), make_spec("tec", stage)])


# ------------------------------------------------------------------------- threads
def test_wall_clock_thread_starts_and_stops_cleanly():
    clock = WallClock()
    stage = ThermalStage(clock.now_s)
    enough = threading.Event()

    def on_tick(name: str, status: LoopStatus) -> None:
        if status.ticks >= 5:
            enough.set()

    runner = LoopRunner([make_spec("tec", stage, period_s=0.005, on_tick=on_tick)], clock=clock)
    with runner:
        assert enough.wait(60.0)
        with pytest.raises(RuntimeError, match="scheduler thread is running"):
            runner.tick_due()
        assert runner.status()["tec"].state == "running"
    assert not any(t.name == "labctl-loops" for t in threading.enumerate())
    assert runner.status()["tec"].state == "stopped"
    n = len(stage.reads)
    assert n >= 5 and runner.status()["tec"].ticks == n


def test_thread_on_an_advancing_clock_runs_virtual_time(vclock, advancing):
    stage = ThermalStage(vclock.now_s)
    reached = threading.Event()

    def on_tick(name: str, status: LoopStatus) -> None:
        if status.last_tick_s >= 100.0:
            reached.set()

    runner = LoopRunner([make_spec("tec", stage, on_tick=on_tick)], clock=advancing)
    runner.start()
    try:
        assert reached.wait(60.0)
    finally:
        runner.stop()
    assert stage.temperature == pytest.approx(30.0, abs=1e-3)
    # restart: schedules restart at the current time, the PID resumes from its output
    last = stage.writes[-1][1]
    n = len(stage.writes)
    t_restart = vclock.now_s()
    runner.run_until(t_restart + 1.0)
    assert stage.writes[n][1] == last and stage.writes[n][0] == pytest.approx(t_restart)
    assert runner.status()["tec"].missed_ticks == 0


def test_stop_reports_a_tick_stuck_in_an_instrument_call():
    clock = WallClock()
    stage = ThermalStage(clock.now_s)
    entered, release = threading.Event(), threading.Event()

    def hung_read() -> float:
        entered.set()
        release.wait()  # blocks until the test releases it: a hung instrument call
        return stage.read()

    runner = LoopRunner([make_spec("tec", stage, read=hung_read)], clock=clock)
    runner.start()
    try:
        assert entered.wait(60.0)
        with pytest.raises(TimeoutError, match="tick of loop 'tec' still running"):
            runner.stop(timeout_s=0.01)
    finally:
        release.set()
    runner.stop()
    assert runner.status()["tec"].state == "stopped"


# ------------------------------------------------------------------------- periodic actuators
def test_phase_lock_wraps_its_output_by_one_period_and_stays_locked(vclock, advancing):
    """A phase shifter of 2 V per 2 pi on a 0..2.5 V range against a drift of 3 periods: the
    output jumps back by exactly one period at the end of its range, the lock holds."""
    volts_per_2pi = 2.0
    drift_rad_per_s = 2 * math.pi / 40.0  # one period every 40 s
    writes: list[float] = [1.0]

    def phase() -> float:  # measured phase, wrapped like a real quadrature readout
        raw = -drift_rad_per_s * vclock.now_s() + 2 * math.pi * writes[-1] / volts_per_2pi
        return (raw + math.pi) % (2 * math.pi) - math.pi

    pid = PID(
        PidGains(0.3, 3.0),
        setpoint=0.5,
        output_min=0.0,
        output_max=2.5,
        error_wrap=2 * math.pi,
        initial_output=1.0,
    )
    errors: list[float] = []
    spec = LoopSpec(
        "phase",
        pid,
        read=phase,
        write=writes.append,
        period_s=0.1,
        max_reading_age_s=0.5,
        output_wrap=volts_per_2pi,
        on_tick=lambda name, st: errors.append(st.error),
    )
    LoopRunner([spec], clock=advancing).run_until(120.0)
    out = np.array(writes)
    assert out.min() >= 0.0 and out.max() <= 2.5
    jumps = np.diff(out)
    wraps = jumps[jumps < -1.0]
    # each wrap is one period; with them the output followed the whole drift (3 periods
    # from t = 0 to 120 s: 6 V), after the first 10 s of pull-in
    np.testing.assert_allclose(wraps, -volts_per_2pi, atol=0.05)
    followed = out[-1] - out[100] + volts_per_2pi * wraps.size
    assert wraps.size >= 2
    assert followed == pytest.approx(volts_per_2pi * (120.0 - 10.0) / 40.0, abs=0.05)
    # ramp tracking error of a PI: rate / (K ki) = 0.157 / (pi * 3) = 0.017 rad; never unlocks
    assert np.abs(np.array(errors[100:])).max() < 0.03


def test_output_wrap_must_fit_the_output_range():
    pid = PID(PidGains(1.0), output_min=0.0, output_max=1.0)
    with pytest.raises(ValueError, match="output_wrap"):
        LoopSpec(
            "x",
            pid,
            read=lambda: 0.0,
            write=lambda v: None,
            period_s=0.1,
            max_reading_age_s=1.0,
            output_wrap=2.0,
        )


def test_step_setpoint_feeds_the_output_forward_and_wraps_it_into_range(vclock, advancing):
    """A setpoint step with the plant's known gain fed forward: the new output is written at
    once (not at the next tick), wrapped by a period to stay in range, and the loop holds the
    new setpoint from there without a transient (the integral moved with the output)."""
    volts_per_2pi = 2.0
    offset_rad = 1.0
    writes: list[float] = [0.5]

    def phase() -> float:
        raw = offset_rad + 2 * math.pi * writes[-1] / volts_per_2pi
        return (raw + math.pi) % (2 * math.pi) - math.pi

    pid = PID(
        PidGains(0.1, 0.6),
        setpoint=phase(),
        output_min=0.0,
        output_max=2.05,
        error_wrap=2 * math.pi,
        initial_output=0.5,
    )
    errors: list[float] = []
    spec = LoopSpec(
        "phase",
        pid,
        read=phase,
        write=writes.append,
        period_s=0.2,
        max_reading_age_s=1.0,
        output_wrap=volts_per_2pi,
        on_tick=lambda name, st: errors.append(st.error),
    )
    runner = LoopRunner([spec], clock=advancing)
    runner.run_until(2.0)
    assert abs(errors[-1]) < 1e-9
    target = phase() + 2.5  # a step of 2.5 rad: +0.796 V from 0.5 V, inside the range
    n = len(writes)
    written = runner.step_setpoint("phase", target, 2.5 / (2 * math.pi) * volts_per_2pi)
    assert len(writes) == n + 1 and writes[-1] == pytest.approx(0.5 + 2.5 / math.pi)
    assert written == writes[-1]
    # a step of -2 rad from 1.296 V would need 0.66 V: inside; one of +3 rad needs 2.25 V:
    # outside 2.05, so the output goes one period down to 0.25 V (the same phase)
    runner.step_setpoint("phase", target + 3.0, 3.0 / math.pi)
    assert writes[-1] == pytest.approx(0.5 + 2.5 / math.pi + 3.0 / math.pi - volts_per_2pi)
    errors.clear()
    runner.run_until(4.0)
    assert max(abs(e) for e in errors) < 1e-9  # no transient: the feed-forward was exact
    status = runner.status()["phase"]
    assert status.setpoint == pytest.approx(target + 3.0)
    assert status.effective_setpoint == pytest.approx(target + 3.0)
