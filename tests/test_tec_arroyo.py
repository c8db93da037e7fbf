"""Arroyo TECSource 5305 driver against its simulator over a real pseudo-terminal."""

from __future__ import annotations

import numpy as np
import pytest
import serial
from scipy.integrate import solve_ivp

from drivers.arroyo import Arroyo5300, parse_errstr
from drivers.errors import (
    InstrumentCommandError,
    InstrumentTimeout,
    LimitViolation,
    ProtocolError,
)
from drivers.sim.arroyo import (
    CHIP_AMBIENT_RESISTANCE_K_PER_W,
    CHIP_CAPACITY_J_PER_K,
    CHIP_STAGE_RESISTANCE_K_PER_W,
    PELTIER_W_PER_A,
    THERMAL_CAPACITY_J_PER_K,
    THERMAL_RESISTANCE_K_PER_W,
)
from drivers.sim.faults import Fault
from drivers.sim.host import SimSpec
from drivers.sim.scpi import MessageFramer, ieee_block
from drivers.tec import TEC_FAULTS, TecCondition

AMBIENT_C = 22.0
CS, RSA, K = THERMAL_CAPACITY_J_PER_K, THERMAL_RESISTANCE_K_PER_W, PELTIER_W_PER_A
CC, RCS, RCA = CHIP_CAPACITY_J_PER_K, CHIP_STAGE_RESISTANCE_K_PER_W, CHIP_AMBIENT_RESISTANCE_K_PER_W


def two_node(x0: tuple[float, float], current_a: float, duration_s: float) -> np.ndarray:
    """(stage, chip) after ``duration_s`` at a constant current in a constant room: the
    plant's ODEs integrated numerically (an independent check of the simulator's exact step)."""

    def rhs(_t: float, x: np.ndarray) -> list[float]:
        stage, chip = x
        return [
            (-(stage - AMBIENT_C) / RSA - (stage - chip) / RCS + K * current_a) / CS,
            (-(chip - stage) / RCS - (chip - AMBIENT_C) / RCA) / CC,
        ]

    sol = solve_ivp(rhs, (0.0, duration_s), list(x0), method="LSODA", rtol=1e-10, atol=1e-12)
    return sol.y[:, -1]


def held_stage_current_a(stage_c: float) -> float:
    """Steady current holding the stage at ``stage_c``: what leaks to the room through the
    stage and, in series, through the chip."""
    return (stage_c - AMBIENT_C) * (1 / RSA + 1 / (RCS + RCA)) / K


@pytest.fixture
def bench(sim_bench, manual_clock):
    return sim_bench([SimSpec("tec1", "arroyo_5300")], clock=manual_clock, ambient_c=AMBIENT_C)


@pytest.fixture
def sim(bench):
    return bench.sims["tec1"]


@pytest.fixture
def tec(bench, connect):
    return connect(bench, "tec1", limits={"setpoint_c": (10.0, 60.0)})


def test_connect_over_a_serial_line(bench, sim, tec):
    assert tec.resource.startswith("ASRL/dev/pts/")
    assert tec.transport.is_serial and tec.transport.baud_rate == 38400
    assert tec.identity == "Arroyo 5305 TECSource 530512345 2.10"
    # echo off first, identity, temperature mode (each write checked with ERRSTR?)
    assert list(sim.received)[:4] == [b"TERMINAL 0", b"*IDN?", b"TEC:MODE:T", b"ERRSTR?"]


def test_settings_round_trip_with_the_wire_commands(sim, tec):
    tec.setpoint_c = 31.5
    tec.current_limit_a = 1.5
    tec.temperature_high_limit_c = 45.0
    tec.temperature_low_limit_c = 5.0
    tec.set_pid(1.5, 0.2, 0.4)
    tec.set_tolerance(0.05, 3.0)
    tec.output = True
    sent = list(sim.received)
    for command in (
        b"TEC:T 31.5000",
        b"TEC:LIM:ITE 1.500",
        b"TEC:LIM:THI 45.000",
        b"TEC:LIM:TLO 5.000",
        b"TEC:PID 1.5000,0.2000,0.4000",
        b"TEC:TOL 0.050,3.000",
        b"TEC:OUT 1",
    ):
        assert command in sent
        assert sent[sent.index(command) + 1] == b"ERRSTR?"
    assert (sim.setpoint_c, sim.current_limit_a, sim.pid) == (31.5, 1.5, (1.5, 0.2, 0.4))
    assert (sim.t_low_c, sim.t_high_c, sim.tolerance_c, sim.tolerance_time_s) == (5, 45, 0.05, 3)
    assert tec.setpoint_c == 31.5
    assert tec.current_limit_a == 1.5
    assert tec.pid_gains() == (1.5, 0.2, 0.4)
    assert (tec.tolerance_c, tec.tolerance_time_s) == (0.05, 3.0)
    assert tec.output is True
    assert tec.temperature_c == pytest.approx(AMBIENT_C, abs=0.01)

    # one gain alone: the driver reads the triple and writes it back whole
    sim.received.clear()
    tec.pid_i = 0.25
    assert list(sim.received) == [b"TEC:PID?", b"TEC:PID 1.5000,0.2500,0.4000", b"ERRSTR?"]
    assert (tec.pid_p, tec.pid_i, tec.pid_d) == (1.5, 0.25, 0.4)


def test_gains_and_limits_are_refused_before_sending(sim, tec):
    before = list(sim.received)
    with pytest.raises(LimitViolation, match="pid_d"):
        tec.set_pid(1.0, 0.1, -0.5)  # P and I are fine: nothing may be sent anyway
    with pytest.raises(LimitViolation, match="pid_p"):
        tec.set_pid(11.0, 0.1, 0.5)
    with pytest.raises(LimitViolation, match="pid_i"):
        tec.pid_i = 20.0
    with pytest.raises(LimitViolation, match=r"current_limit_a=6\.0 refused: allowed \[0, 5\] A"):
        tec.current_limit_a = 6.0
    with pytest.raises(LimitViolation, match=r"\[10, 60\] degC"):  # the bench file's limit
        tec.setpoint_c = 70.0
    with pytest.raises(LimitViolation, match="tolerance_c"):
        tec.set_tolerance(0.001, 1.0)
    with pytest.raises(LimitViolation, match="read-only"):
        tec.set("temperature_c", 25.0)
    assert list(sim.received) == before


def test_setpoint_ramp_steps_are_bounded(bench, sim, connect):
    tec = connect(bench, "tec1", ramps={"setpoint_c": 100.0})
    tec.ramp_step_s = 0.001  # 100 degC/s * 1 ms = 0.1 degC per step
    tec.setpoint_c = 25.0
    sim.received.clear()
    tec.setpoint_c = 27.0
    writes = [float(m.split()[1]) for m in sim.received if m.startswith(b"TEC:T ")]
    assert len(writes) == 20
    steps = [b - a for a, b in zip([25.0, *writes], writes, strict=False)]
    assert max(steps) <= 0.1 + 1e-9 and min(steps) > 0
    assert writes[-1] == 27.0 and sim.setpoint_c == 27.0


def test_stage_settles_on_the_setpoint_and_relaxes_to_ambient(bench, sim, tec, manual_clock):
    tec.set_pid(2.0, 0.3, 0.5)
    tec.current_limit_a = 2.0
    tec.setpoint_c = 30.0
    tec.output_on()
    manual_clock.advance(5.0)
    early = tec.temperature_c
    assert AMBIENT_C + 1.0 < early < 29.9  # on its way, not there yet
    manual_clock.advance(55.0)
    assert tec.temperature_c == pytest.approx(30.0, abs=0.05)
    assert tec.is_settled()
    # steady state: the TEC supplies what leaks to ambient, about (T - T_amb) / R_sa = 1.6 A
    assert tec.tec_current_a == pytest.approx(held_stage_current_a(30.0), abs=0.02)

    tec.output_off()
    start = (sim.temperature_c(), sim.chip_temperature_c())
    manual_clock.advance(10.0)  # about one thermal time constant R_sa * C_s
    stage, chip = two_node(start, 0.0, 10.0)
    assert sim.chip_temperature_c() == pytest.approx(chip, abs=1e-7)
    assert tec.temperature_c == pytest.approx(stage, abs=0.002)  # the thermistor: 0.3 mK noise
    manual_clock.advance(120.0)
    assert tec.temperature_c == pytest.approx(AMBIENT_C, abs=0.005)
    assert tec.tec_current_a == 0.0
    assert tec.status() == TecCondition.OUT_OF_TOLERANCE  # output off: not held


def test_condition_bits_decode_to_named_flags(sim, tec, manual_clock):
    tec.current_limit_a = 1.0  # at most 5 degC above ambient: 30 degC is out of reach
    tec.setpoint_c = 30.0
    tec.output_on()
    manual_clock.advance(60.0)
    condition = tec.status()
    assert condition == (
        TecCondition.CURRENT_LIMIT | TecCondition.OUT_OF_TOLERANCE | TecCondition.OUTPUT_ON
    )
    assert int(condition) == 1 | 512 | 1024
    assert tec.temperature_c == pytest.approx(AMBIENT_C + 5.0, abs=0.02)
    assert not tec.is_settled()
    assert not tec.faults()
    named = tec.describe_condition(condition)
    assert named["CURRENT_LIMIT"] and named["OUTPUT_ON"] and not named["SENSOR_OPEN"]


def test_temperature_limit_switches_the_output_off(bench, sim, tec, manual_clock):
    tec.temperature_high_limit_c = 30.0
    tec.current_limit_a = 0.5  # can pump at most 2.5 degC below ambient
    tec.setpoint_c = 25.0
    tec.output_on()
    bench.bench.ambient_c = 40.0  # the room warms up
    manual_clock.advance(60.0)
    condition = tec.status()
    assert TecCondition.TEMPERATURE_HIGH_LIMIT in condition
    assert TecCondition.OUTPUT_ON not in condition
    assert tec.output is False
    assert tec.faults() == TecCondition.TEMPERATURE_HIGH_LIMIT
    assert tec.temperature_c > 30.0


def test_sensor_open_fault_forces_the_output_off(sim, tec, manual_clock):
    tec.output_on()
    manual_clock.advance(1.0)
    sim.set_sensor_open()
    condition = tec.status()
    assert TecCondition.SENSOR_OPEN in condition and TecCondition.OUTPUT_ON not in condition
    assert tec.faults() & TEC_FAULTS == TecCondition.SENSOR_OPEN
    with pytest.raises(InstrumentCommandError, match="sensor open") as info:
        tec.output_on()
    assert info.value.command == "TEC:OUT 1"
    sim.set_sensor_open(False)
    tec.output_on()
    assert tec.output is True


def test_instrument_error_text_is_raised(sim, tec):
    tec.temperature_high_limit_c = 40.0
    tec.setpoint_c = 30.0
    with pytest.raises(InstrumentCommandError, match=r"outside \[-10, 40\]") as info:
        tec.setpoint_c = 45.0  # inside the bench limits, beyond the instrument's THI
    assert info.value.code == -222
    assert info.value.command == "TEC:T 45.0000"
    assert sim.setpoint_c == 30.0
    assert tec.read_errors() == []  # ERRSTR? drained the queue


def test_errstr_parsing():
    assert parse_errstr("0") == []
    assert parse_errstr("-222,Data out of range;x outside [-10, 40],-113,Undefined header") == [
        (-222, "Data out of range;x outside [-10, 40]"),
        (-113, "Undefined header"),
    ]
    assert parse_errstr("201,Value out of range") == [(201, "Value out of range")]
    with pytest.raises(ValueError):
        parse_errstr("Data out of range")


def test_delay_fault_recovers_on_the_serial_line_without_a_stale_reply(sim, tec):
    tec.setpoint_c = 31.0
    tec.current_limit_a = 1.234
    port = tec.transport._resource
    sim.faults.inject(Fault.DELAY, seconds=0.8)
    with pytest.raises(InstrumentTimeout):
        _ = tec.setpoint_c
    # the late "31.0000" arrives while the driver resynchronises; it must not
    # be taken for the current limit
    assert tec.current_limit_a == pytest.approx(1.234)
    assert tec.setpoint_c == pytest.approx(31.0)
    assert tec.transport._resource is port  # serial: resynchronised, not reopened
    assert list(sim.received).count(b"*IDN?") == 2


def test_no_reply_and_garbled_reply_recover(sim, tec):
    tec.setpoint_c = 33.0
    sim.faults.inject(Fault.NO_REPLY)
    with pytest.raises(InstrumentTimeout):
        _ = tec.setpoint_c
    assert tec.setpoint_c == 33.0
    sim.faults.inject(Fault.GARBLE)
    with pytest.raises(ProtocolError):
        _ = tec.setpoint_c
    assert tec.setpoint_c == 33.0
    assert tec.output is False


def test_unplugged_cable_then_recovery_after_clear(bench, sim, connect):
    tec = connect(bench, "tec1", resync_timeout_s=0.2)
    tec.setpoint_c = 28.0
    sim.faults.inject(Fault.DROP)  # on a serial line: nothing gets through either way
    with pytest.raises(InstrumentTimeout):
        _ = tec.temperature_c
    with pytest.raises(InstrumentTimeout, match="could not resynchronise"):
        _ = tec.temperature_c
    sim.faults.clear()
    assert tec.setpoint_c == 28.0
    assert tec.identity.startswith("Arroyo 5305 ")


def test_driver_connects_when_terminal_echo_was_left_on(sim_bench, manual_clock, connect):
    host = sim_bench([SimSpec("tec1", "arroyo_5300", {"echo": True})], clock=manual_clock)
    tec = connect(host, "tec1")
    assert tec.identity == "Arroyo 5305 TECSource 530512345 2.10"
    assert host.sims["tec1"].echo is False
    tec.setpoint_c = 26.0
    assert tec.setpoint_c == 26.0


def test_third_party_raw_serial_sequence(bench, sim):
    """What NIST/foxtrot/PIserial-style clients send: CR, LF or CR LF, ';' chains."""
    path = bench.resources["tec1"].removeprefix("ASRL").removesuffix("::INSTR")
    with serial.Serial(path, 38400, timeout=2.0) as port:

        def ask(raw: bytes) -> bytes:
            port.write(raw)
            return port.read_until(b"\r\n")

        assert ask(b"*IDN?\r").startswith(b"Arroyo 5305 TECSource ")
        assert ask(b"TEC:MODE?\n") == b"T\r\n"
        assert ask(b"TEC:T 30;TEC:OUT 1;ERRSTR?\r\n") == b"0\r\n"  # MSL-style check
        assert ask(b"TEC:PID 0.2500,0.0200,0.6000;ERRSTR?\r") == b"0\r\n"  # PIserial's 3 bytes
        assert ask(b"tec:pid?\r") == b"0.2500,0.0200,0.6000\r\n"
        assert ask(b"TEC:COND?\r") == b"1536\r\n"  # output on, not yet in tolerance
        port.write(b"TERMINAL 1\r")
        assert ask(b"TEC:OUT?\r") == b"TEC:OUT?\r\n"  # the echo comes first
        assert port.read_until(b"\r\n") == b"1\r\n"
        assert ask(b"TERMINAL 0\r\n") == b"TERMINAL 0\r\n"  # echoed: echo was on on arrival
        assert ask(b"TEC:OUT 0;TEC:OUT?\r") == b"0\r\n"
        assert ask(b"TEC:BOGUS 1;ERRSTR?\r").startswith(b"-113,Undefined header")
    assert sim.setpoint_c == 30.0 and sim.pid == (0.25, 0.02, 0.6)


def test_safe_state_ramps_to_the_safe_temperature_then_switches_off(bench, sim, connect):
    tec = connect(bench, "tec1", ramps={"setpoint_c": 50.0}, safe_temperature_c=25.0)
    tec.ramp_step_s = 0.001  # 0.05 degC per step
    tec.setpoint_c = 25.0
    tec.setpoint_c = 27.0
    tec.output_on()
    sim.received.clear()
    tec.safe_state()
    sent = list(sim.received)
    ramp = [float(m.split()[1]) for m in sent if m.startswith(b"TEC:T ")]
    assert ramp[0] < 27.0 and ramp[-1] == 25.0 and len(ramp) == 40
    assert max(abs(b - a) for a, b in zip([27.0, *ramp], ramp, strict=False)) <= 0.05 + 1e-9
    assert sent.index(b"TEC:OUT 0") > sent.index(b"TEC:T 25.0000")
    assert sim.output is False and sim.setpoint_c == 25.0

    sim.received.clear()
    tec.safe_state()  # output already off: nothing to ramp
    assert [m for m in sim.received if m.startswith(b"TEC:")] == [b"TEC:OUT?", b"TEC:OUT 0"]


def test_safe_state_ramp_refused_by_the_instrument_still_switches_off(bench, sim, connect):
    tec = connect(bench, "tec1", ramps={"setpoint_c": 50.0}, safe_temperature_c=25.0)
    tec.ramp_step_s = 0.001
    tec.setpoint_c = 23.0
    tec.temperature_high_limit_c = 24.0  # the instrument refuses setpoints above 24 degC
    tec.output_on()
    sim.received.clear()
    with pytest.raises(InstrumentCommandError, match="outside"):
        tec.safe_state()
    # the failed ramp calls the safe state again, which goes straight to output off
    assert list(sim.received).count(b"TEC:T 24.0500") == 1
    assert list(sim.received)[-2:] == [b"TEC:OUT 0", b"ERRSTR?"]
    assert sim.output is False
    assert sim.setpoint_c == 24.0


def test_safe_temperature_outside_the_limits_is_refused_at_construction(bench):
    with pytest.raises(LimitViolation, match="setpoint_c"):
        Arroyo5300(
            "tec1",
            bench.resources["tec1"],
            limits={"setpoint_c": (10.0, 40.0)},
            safe_temperature_c=45.0,
        )


def test_framer_with_several_terminators():
    framer = MessageFramer((b"\r", b"\n"))
    assert framer.feed(b"A?\rB 1\nC?\r") == [b"A?", b"B 1", b"C?"]
    assert framer.feed(b"\nD") == []  # the LF of a CR LF pair is no message
    assert framer.feed(b"\r\n\r\n") == [b"D"]  # blank lines are dropped
    block = ieee_block(b"x\ry\nz")
    assert framer.feed(b"DATA " + block + b"\r\n") == [b"DATA " + block]
    # one terminator: behaviour unchanged, an empty line is still a message
    assert MessageFramer(b"\n").feed(b"A\r\n\nB\n") == [b"A", b"", b"B"]
    with pytest.raises(ValueError):
        MessageFramer((b"\r", b""))


# -- two-node plant: the thermistor reads the stage, the ring follows the chip ---------------
def test_chip_lags_the_stage_and_settles_short_of_it(bench, sim, tec, manual_clock):
    tec.set_pid(2.0, 0.3, 0.5)
    tec.setpoint_c = 25.0
    tec.output_on()
    manual_clock.advance(2.0)
    assert sim.chip_temperature_c() < sim.temperature_c() - 0.05  # heated from below, ~2 s lag
    manual_clock.advance(200.0)
    # equilibrium: the chip sits R_cs / (R_cs + R_ca) of the way from the stage to the room
    expected_chip = 25.0 - (25.0 - AMBIENT_C) * RCS / (RCS + RCA)
    assert sim.chip_equilibrium_c(25.0) == pytest.approx(expected_chip, abs=1e-12)
    assert sim.chip_temperature_c() == pytest.approx(expected_chip, abs=2e-4)
    assert sim.temperature_c() == pytest.approx(25.0, abs=2e-4)
    assert tec.tec_current_a == pytest.approx(held_stage_current_a(25.0), abs=2e-3)


def test_initial_output_starts_stage_and_chip_in_equilibrium(sim_bench, manual_clock):
    options = {"initial_temperature_c": 25.0, "initial_output": True}
    host = sim_bench([SimSpec("tec1", "arroyo_5300", options)], clock=manual_clock)
    sim = host.sims["tec1"]
    expected_chip = 25.0 - (25.0 - AMBIENT_C) * RCS / (RCS + RCA)
    assert sim.chip_temperature_c() == pytest.approx(expected_chip, abs=1e-12)
    manual_clock.advance(30.0)  # already settled: only the sensor noise moves it
    assert sim.chip_temperature_c() == pytest.approx(expected_chip, abs=1e-4)
    assert sim.snapshot()["tec_current_a"] == pytest.approx(held_stage_current_a(25.0), abs=1e-3)


# -- constant-current (ITE) mode for host-side loops -----------------------------------------
def test_constant_current_mode_drives_the_plant(sim, tec, manual_clock):
    tec.current_limit_a = 1.5
    tec.mode = "ITE"
    tec.current_setpoint_a = 0.8
    assert list(sim.received)[-4:] == [b"TEC:MODE:ITE", b"ERRSTR?", b"TEC:ITE 0.8000", b"ERRSTR?"]
    assert tec.mode == "ITE" and tec.current_setpoint_a == 0.8
    assert tec.tec_current_a == 0.0  # output still off
    tec.output_on()
    assert tec.tec_current_a == 0.8
    start = (sim.temperature_c(), sim.chip_temperature_c())
    manual_clock.advance(3.0)
    stage, chip = two_node(start, 0.8, 3.0)
    assert sim.temperature_c() == pytest.approx(stage, abs=1e-7)
    assert sim.chip_temperature_c() == pytest.approx(chip, abs=1e-7)
    manual_clock.advance(300.0)
    # steady state: k I = (T_s - T_amb) (1 / R_sa + 1 / (R_cs + R_ca))
    stage_ss = AMBIENT_C + 0.8 / held_stage_current_a(AMBIENT_C + 1.0)
    assert tec.temperature_c == pytest.approx(stage_ss, abs=0.002)
    assert tec.status() == TecCondition.OUTPUT_ON  # the set current is driven: in tolerance
    assert tec.setpoint_c == 25.0  # T-mode setpoint untouched

    tec.current_setpoint_a = 3.0  # beyond TEC:LIM:ITE: clamped
    assert tec.tec_current_a == 1.5
    assert tec.status() == (
        TecCondition.CURRENT_LIMIT | TecCondition.OUT_OF_TOLERANCE | TecCondition.OUTPUT_ON
    )
    tec.current_setpoint_a = -0.4  # cooling
    assert tec.tec_current_a == -0.4
    manual_clock.advance(300.0)
    assert tec.temperature_c == pytest.approx(
        AMBIENT_C - 0.4 * (stage_ss - AMBIENT_C) / 0.8, abs=2e-3
    )


def test_mode_change_switches_the_output_off_but_reselecting_does_not(sim, tec, manual_clock):
    tec.output_on()
    tec.mode = "T"  # already T: nothing happens (the driver does this on every connect)
    assert tec.output is True
    tec.mode = "ITE"
    assert tec.output is False and tec.tec_current_a == 0.0
    tec.current_setpoint_a = 0.5
    tec.output_on()
    manual_clock.advance(1.0)
    tec.mode = "T"
    assert tec.output is False and tec.mode == "T"
    assert sim.current_setpoint_a == 0.5  # kept for the next time ITE is selected


def test_temperature_limits_trip_the_output_in_constant_current_mode(sim, tec, manual_clock):
    tec.current_limit_a = 2.0
    tec.temperature_high_limit_c = 25.0
    tec.mode = "ITE"
    tec.current_setpoint_a = 2.0  # would take the stage 10 degC above the room
    tec.output_on()
    start = (sim.temperature_c(), sim.chip_temperature_c())
    manual_clock.advance(2.0)
    assert tec.output is True
    manual_clock.advance(58.0)
    assert tec.output is False
    assert sim.snapshot()["tec_current_a"] == 0.0
    # it tripped when the stage crossed 25 degC, then relaxed towards the room
    crossing = solve_ivp(
        lambda _t, x: [
            (-(x[0] - AMBIENT_C) / RSA - (x[0] - x[1]) / RCS + K * 2.0) / CS,
            (-(x[1] - x[0]) / RCS - (x[1] - AMBIENT_C) / RCA) / CC,
        ],
        (0.0, 60.0),
        list(start),
        events=lambda _t, x: x[0] - 25.0,
        rtol=1e-10,
        atol=1e-12,
    )
    t_trip = float(crossing.t_events[0][0])
    at_trip = crossing.y_events[0][0]
    assert 2.0 < t_trip < 60.0
    stage, _ = two_node((at_trip[0], at_trip[1]), 0.0, 60.0 - t_trip)
    assert sim.temperature_c() == pytest.approx(stage, abs=1e-3)  # the trip time: +-10 ms
    assert sim.temperature_c() < 25.0


def test_current_setpoint_is_validated_against_the_bench_current_limit(bench, sim, connect):
    tec = connect(bench, "tec1", limits={"current_limit_a": (0.0, 1.5)})
    before = list(sim.received)
    with pytest.raises(
        LimitViolation, match=r"current_setpoint_a=2\.0 refused: allowed \[-1\.5, 1\.5\]"
    ):
        tec.current_setpoint_a = 2.0
    with pytest.raises(LimitViolation, match="mode"):
        tec.mode = "R"  # resistance mode: not supported by this driver
    assert list(sim.received) == before
    tec.current_setpoint_a = -1.5
    assert sim.current_setpoint_a == -1.5
    unlimited = connect(bench, "tec1")
    with pytest.raises(LimitViolation, match=r"allowed \[-5, 5\] A"):
        unlimited.current_setpoint_a = 5.5


def test_safe_state_in_constant_current_mode_only_switches_off(bench, sim, connect):
    tec = connect(bench, "tec1", ramps={"setpoint_c": 50.0}, safe_temperature_c=25.0)
    tec.mode = "ITE"
    tec.current_setpoint_a = 0.5
    tec.output_on()
    sim.received.clear()
    tec.safe_state()
    sent = [m for m in sim.received if m != b"ERRSTR?"]
    assert sent == [b"TEC:OUT?", b"TEC:MODE?", b"TEC:OUT 0"]  # no setpoint ramp
    assert sim.output is False


def test_third_party_constant_current_sequence(bench, sim):
    path = bench.resources["tec1"].removeprefix("ASRL").removesuffix("::INSTR")
    with serial.Serial(path, 38400, timeout=2.0) as port:

        def ask(raw: bytes) -> bytes:
            port.write(raw)
            return port.read_until(b"\r\n")

        assert ask(b"TEC:MODE:ITE;TEC:ITE 0.25;TEC:OUT 1;ERRSTR?\r") == b"0\r\n"
        assert ask(b"TEC:MODE?\r") == b"ITE\r\n"
        assert ask(b"TEC:SET:ITE?\r") == b"0.2500\r\n"
        assert ask(b"TEC:ITE?\r") == b"0.2500\r\n"
        assert ask(b"TEC:ITE 9;ERRSTR?\r").startswith(b"-222,")  # beyond the 5 A model range
        assert ask(b"TEC:MODE:R;ERRSTR?\r").startswith(b"-113,")  # R mode: not simulated
        assert ask(b"TEC:MODE:T;TEC:OUT?\r") == b"0\r\n"
    assert sim.mode == "T" and sim.current_setpoint_a == 0.25
