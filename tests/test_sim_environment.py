"""The bench's room (drivers/sim/environment.py) and what it does to the TEC-held microring.

The environment is checked against its closed forms (HVAC sine, steps, the exact
Ornstein-Uhlenbeck recursion); the two-node TEC plant in a cycling room against a numerical
ODE solution; and, driving the simulator's physics directly on a manual clock with a PID in
the test, that a tuned 10 Hz host loop on the stage thermistor holds the chip within 1 mK
under the "typical_lab" disturbances while the controller's power-on gains and badly tuned
host loops do not.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from drivers.sim.arroyo import (
    CHIP_AMBIENT_RESISTANCE_K_PER_W,
    CHIP_CAPACITY_J_PER_K,
    CHIP_STAGE_RESISTANCE_K_PER_W,
    PELTIER_W_PER_A,
    THERMAL_CAPACITY_J_PER_K,
    THERMAL_RESISTANCE_K_PER_W,
    SimArroyo5300,
)
from drivers.sim.bench import BenchModel
from drivers.sim.clock import VirtualClock
from drivers.sim.environment import PROFILES, Environment

DRIFTING = {"drift_rms_c": 0.05, "drift_time_s": 300.0, "grid_s": 1.0, "seed": 9}


# -- the room --------------------------------------------------------------------------------
def test_hvac_cycle_and_steps_are_their_closed_forms():
    clock = VirtualClock(realtime=False)
    env = Environment(21.5, hvac_amplitude_c=0.3, hvac_period_s=600.0, clock=clock)
    t_s = np.linspace(0.0, 1800.0, 1001)
    expected = 21.5 + 0.3 * np.sin(2 * math.pi * t_s / 600.0)
    np.testing.assert_allclose(env.ambient_c(t_s), expected, rtol=0, atol=1e-12)
    assert env.constant_between(0.0, 10.0) is None  # the HVAC never stops

    quiet = Environment(22.0, clock=clock)
    assert quiet.is_quiet and quiet.now_c() == 22.0
    clock.advance(50.0)
    assert quiet.step_c(0.5) == 50.0  # a door opens now
    assert quiet.step_c(-0.2, at_s=80.0) == 80.0
    assert quiet.ambient_c(np.array([49.9, 50.0, 79.9, 80.0])).tolist() == [22.0, 22.5, 22.5, 22.3]
    assert quiet.constant_between(50.0, 79.0) == 22.5
    assert quiet.constant_between(40.0, 60.0) is None
    assert quiet.steps == ((50.0, 0.5), (80.0, -0.2)) and not quiet.is_quiet


def test_drift_is_the_exact_ornstein_uhlenbeck_recursion_on_its_grid():
    env = Environment(0.0, **DRIFTING)
    grid = np.arange(0.0, 200_000.0)
    w = env.ambient_c(grid)
    assert w[0] == 0.0
    a = math.exp(-1.0 / 300.0)
    innovations = (w[1:] - a * w[:-1]) / (math.sqrt(1 - a * a) * 0.05)
    # independent standard normal innovations: unit variance, no correlation between steps
    assert np.std(innovations) == pytest.approx(1.0, abs=0.01)
    assert abs(np.corrcoef(innovations[1:], innovations[:-1])[0, 1]) < 0.01
    assert np.std(w[3000:]) == pytest.approx(0.05, rel=0.1)  # stationary spread (~650 tau)
    # linear interpolation between grid points
    assert env.ambient_c(1234.25) == pytest.approx(0.75 * w[1234] + 0.25 * w[1235], abs=1e-15)
    assert env.ambient_c(-5.0) == 0.0  # before the bench started


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, 30_000.0), min_size=1, max_size=12))
def test_the_realisation_does_not_depend_on_who_asks_first(times):
    fresh = Environment(0.0, **DRIFTING)
    one_by_one = [fresh.ambient_c(t) for t in reversed(times)][::-1]
    together = Environment(0.0, **DRIFTING).ambient_c(np.array(times))
    np.testing.assert_array_equal(np.array(one_by_one), together)


def test_bench_reads_the_room_at_its_clock_and_a_test_can_warm_it():
    clock = VirtualClock(realtime=False)
    bench = BenchModel(clock=clock, seed=3, ambient_c=21.0, environment={"profile": "typical_lab"})
    env = bench.environment
    typical = PROFILES["typical_lab"]
    assert (env.mean_c, env.hvac_amplitude_c, env.drift_rms_c) == (
        21.0,
        typical["hvac_amplitude_c"],
        typical["drift_rms_c"],
    )
    clock.advance(123.4)
    disturbance_c = bench.ambient_c - 21.0
    expected_hvac_c = typical["hvac_amplitude_c"] * math.sin(
        2 * math.pi * 123.4 / typical["hvac_period_s"]
    )
    assert abs(disturbance_c - expected_hvac_c) < 4 * typical["drift_rms_c"]  # plus the drift
    bench.ambient_c = 30.0  # warms the room: the disturbances ride on the new mean
    assert env.mean_c == 30.0
    assert bench.ambient_c - 30.0 == pytest.approx(disturbance_c, abs=1e-12)
    # seeded from the bench: the same seed is the same room, another seed another room
    same = BenchModel(clock=clock, seed=3, ambient_c=30.0, environment={"profile": "typical_lab"})
    other = BenchModel(clock=clock, seed=4, ambient_c=30.0, environment={"profile": "typical_lab"})
    t_s = np.linspace(0.0, 5000.0, 50)
    np.testing.assert_array_equal(same.environment.ambient_c(t_s), env.ambient_c(t_s))
    assert not np.array_equal(other.environment.ambient_c(t_s), env.ambient_c(t_s))
    assert BenchModel(clock=clock).environment.is_quiet  # by default nothing moves


def test_bench_file_table_errors_name_the_key():
    made = Environment.from_options(
        {"mean_c": 20, "hvac_amplitude_c": 0.1, "steps": [[10, 0.5]]}, mean_c=22.0
    )
    assert made.mean_c == 20.0 and made.steps == ((10.0, 0.5),)
    for table, message in [
        ({"hvac_amplitude": 0.1}, "unknown key 'hvac_amplitude'"),
        ({"profile": "office"}, "environment profile: got 'office'"),
        ({"hvac_period_s": 0}, r"hvac_period_s: got 0\.0, expected a number > 0"),
        ({"drift_rms_c": "high"}, "drift_rms_c: got 'high', expected a number"),
        ({"steps": [[10]]}, r"steps\[0\]: got \[10\], expected \[at_s, delta_c\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            Environment.from_options(table)


# -- the TEC-held chip in that room --------------------------------------------------------
def two_node_rhs(ambient, current_a: float):
    cs, rsa, k = THERMAL_CAPACITY_J_PER_K, THERMAL_RESISTANCE_K_PER_W, PELTIER_W_PER_A
    cc, rcs = CHIP_CAPACITY_J_PER_K, CHIP_STAGE_RESISTANCE_K_PER_W
    rca = CHIP_AMBIENT_RESISTANCE_K_PER_W

    def rhs(t: float, x: np.ndarray) -> list[float]:
        stage, chip = x
        room = ambient(t)
        return [
            (-(stage - room) / rsa - (stage - chip) / rcs + k * current_a) / cs,
            (-(chip - stage) / rcs - (chip - room) / rca) / cc,
        ]

    return rhs


def make_tec(environment: dict, seed: int = 1) -> tuple[VirtualClock, SimArroyo5300]:
    clock = VirtualClock(realtime=False)
    bench = BenchModel(clock=clock, seed=seed, ambient_c=22.0, environment=environment)
    sim = SimArroyo5300("tec1", bench)
    bench.add(sim)
    return clock, sim


def test_stage_and_chip_follow_a_cycling_room(manual_clock):
    room = {"hvac_amplitude_c": 0.5, "hvac_period_s": 60.0}
    clock, sim = make_tec(room)

    def ambient(t):
        return 22.0 + 0.5 * math.sin(2 * math.pi * t / 60.0)

    for current_a, commands in ((0.0, []), (0.3, [b"TEC:MODE:ITE", b"TEC:ITE 0.3", b"TEC:OUT 1"])):
        for command in commands:
            sim.process(command)
        t0 = clock.now_s()
        x0 = [sim.temperature_c(), sim.chip_temperature_c()]
        clock.advance(90.0)
        sol = solve_ivp(
            two_node_rhs(ambient, current_a), (t0, t0 + 90.0), x0, rtol=1e-10, atol=1e-12
        )
        # the simulator holds the room over each 10 ms step: ~ amplitude * omega * 5 ms
        assert sim.temperature_c() == pytest.approx(sol.y[0, -1], abs=2e-4)
        assert sim.chip_temperature_c() == pytest.approx(sol.y[1, -1], abs=2e-4)


def test_short_and_long_trajectories_agree():
    """The plant steps short runs directly and long ones through its modes: same states."""
    _, sim = make_tec({})
    room = 22.0 + 0.3 * np.sin(np.arange(500) * 0.05)
    long = sim.plant.trajectory((25.0, 24.9), 0.7, room)
    short = sim.plant.trajectory((25.0, 24.9), 0.7, room[:40])
    np.testing.assert_allclose(short, long[:41], rtol=0, atol=1e-12)
    cs, rsa, cc = THERMAL_CAPACITY_J_PER_K, THERMAL_RESISTANCE_K_PER_W, CHIP_CAPACITY_J_PER_K
    rcs, rca = CHIP_STAGE_RESISTANCE_K_PER_W, CHIP_AMBIENT_RESISTANCE_K_PER_W
    a = [[-(1 / rsa + 1 / rcs) / cs, 1 / (rcs * cs)], [1 / (rcs * cc), -(1 / rcs + 1 / rca) / cc]]
    taus = sorted((-1 / np.linalg.eigvals(np.array(a))).tolist(), reverse=True)
    assert sim.plant.time_constants_s == pytest.approx(taus, rel=1e-12)
    assert taus[0] > rsa * cs and 1.0 < taus[1] < 3.0  # the chip slows the stage; ~2 s lag


def host_loop_max_error_c(
    gains: tuple[float, float, float] | None, *, seed: int = 1, duration_s: float = 1000.0
) -> float:
    """max |chip - its equilibrium at 25 degC| after 300 s of settling, in the typical lab.

    ``gains`` (P A/degC, I 1/s, D s): a 10 Hz PID in this test on the thermistor reading
    (``TEC:T?``), driving the TEC in ITE mode (``TEC:ITE``), current limited to 1.5 A, with
    conditional-integration anti-windup; ``None``: the controller's own PID (T mode) at its
    power-on gains. The chip is sampled every 0.1 s.
    """
    clock, sim = make_tec({"profile": "typical_lab"}, seed=seed)
    setpoint_c, limit_a, period_s = 25.0, 1.5, 0.1

    def ask(command: str) -> str:
        return str(sim.process(command.encode())[0]) if command.endswith("?") else ""

    for command in ("TEC:LIM:ITE 1.5", f"TEC:T {setpoint_c}", "TEC:OUT 0"):
        sim.process(command.encode())
    if gains is not None:
        sim.process(b"TEC:MODE:ITE")
    sim.process(b"TEC:OUT 1")
    integral, last_meas, deriv = 0.0, None, 0.0
    chip = []
    for _ in range(round(duration_s / period_s)):
        clock.advance(period_s)
        if gains is not None:
            p, i_gain, d_gain = gains
            meas = float(ask("TEC:T?"))
            error_c = setpoint_c - meas
            if last_meas is not None:
                deriv += period_s / (0.1 + period_s) * ((meas - last_meas) / period_s - deriv)
            last_meas = meas
            trial = integral + error_c * period_s
            u = p * (error_c + i_gain * trial - d_gain * deriv)
            if abs(u) <= limit_a or (u > 0) != (error_c > 0):
                integral = trial
            u = p * (error_c + i_gain * integral - d_gain * deriv)
            sim.process(f"TEC:ITE {min(max(u, -limit_a), limit_a):.4f}".encode())
        chip.append(sim.chip_temperature_c())
    settled = np.array(chip[round(300.0 / period_s) :])
    return float(np.max(np.abs(settled - sim.chip_equilibrium_c(setpoint_c))))


def test_tuning_matters_a_tuned_host_loop_holds_the_chip_within_a_millikelvin():
    assert host_loop_max_error_c((8.0, 0.5, 0.0)) < 1e-3
    # the controller's power-on gains: too little integral action against the HVAC cycle
    assert host_loop_max_error_c(None) > 1e-3
    # host loops tuned badly: too timid, and so aggressive that the 10 Hz loop oscillates
    assert host_loop_max_error_c((1.0, 0.1, 0.0)) > 1e-3
    assert host_loop_max_error_c((80.0, 0.5, 0.0)) > 1e-3
