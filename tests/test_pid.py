"""PID behaviour against a discrete plant written here, closed forms and naive references."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labctl.pid import PID, PidGains, PidSettings


class LagPlant:
    """First-order lag ``tau dy/dt = -y + K u + d`` with zero-order-hold input, integrated
    exactly over each step: ``y <- a y + (1 - a)(K u + d)``, ``a = exp(-dt/tau)``."""

    def __init__(self, gain: float, tau_s: float, y0: float = 0.0, disturbance: float = 0.0):
        self.gain, self.tau_s, self.y, self.disturbance = gain, tau_s, y0, disturbance

    def step(self, u: float, dt_s: float) -> float:
        a = math.exp(-dt_s / self.tau_s)
        self.y = a * self.y + (1.0 - a) * (self.gain * u + self.disturbance)
        return self.y


def run_loop(pid: PID, plant: LagPlant, n: int, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    ys, us = np.empty(n), np.empty(n)
    for k in range(n):
        u = pid.update(plant.y, dt_s)
        us[k] = u
        ys[k] = plant.step(u, dt_s)
    return ys, us


class NaivePI:
    """Reference without anti-windup: the integral of the error always grows; the output is
    then rate-limited and clamped like the PID's."""

    def __init__(self, kp: float, ki: float, lo: float, hi: float, rate: float = math.inf):
        self.kp, self.ki, self.lo, self.hi, self.rate = kp, ki, lo, hi, rate
        self.integral = 0.0
        self.u = 0.0
        self.setpoint = 0.0

    def update(self, y: float, dt_s: float) -> float:
        e = self.setpoint - y
        v = self.kp * e + self.integral
        self.integral += self.ki * e * dt_s
        step = self.rate * dt_s
        self.u = min(max(v, self.u - step, self.lo), self.u + step, self.hi)
        return self.u


# --------------------------------------------------------------------------- tracking
@pytest.mark.parametrize(
    ("gains", "plant_gain", "disturbance"),
    [
        (PidGains(2.0, 0.6), 5.0, 0.0),
        (PidGains(1.0, 0.1, 0.5), 5.0, -3.0),  # PID, constant load on the plant
        (PidGains(-2.0, -0.6), -5.0, 2.0),  # reverse-acting (cooling) loop
    ],
)
def test_tracks_setpoint_with_zero_steady_state_error(gains, plant_gain, disturbance):
    dt, tau, r = 0.1, 10.0, 8.0
    pid = PID(gains, setpoint=r, derivative_filter_s=0.05)
    plant = LagPlant(plant_gain, tau, disturbance=disturbance)
    ys, us = run_loop(pid, plant, 6000, dt)  # 600 s = 60 tau
    assert ys[-1] == pytest.approx(r, rel=1e-9)
    # the output settles at the value that holds the plant at r: K u + d = r
    assert us[-1] == pytest.approx((r - disturbance) / plant_gain, rel=1e-9)
    assert abs(pid.last_error) < 1e-9 * r


def test_p_only_controller_has_the_closed_form_offset():
    # Proportional control of K/(tau s + 1): steady state y = K kp r / (1 + K kp).
    kp, k = 2.0, 5.0
    pid = PID(PidGains(kp), setpoint=1.0)
    ys, _ = run_loop(pid, LagPlant(k, 10.0), 4000, 0.1)
    assert ys[-1] == pytest.approx(k * kp / (1 + k * kp), rel=1e-9)


def test_terms_add_up_to_the_output_and_are_exposed():
    pid = PID(PidGains(2.0, 0.5, 0.3), setpoint=1.0)
    plant = LagPlant(1.0, 2.0)
    for _ in range(50):
        u = pid.update(plant.y, 0.05)
        plant.step(u, 0.05)
        p, i, d = pid.terms
        assert p + i + d == pytest.approx(u, abs=1e-12)
        assert p == pytest.approx(2.0 * pid.last_error)
        assert not pid.saturated


# ------------------------------------------------------------------------- derivative
def test_setpoint_step_does_not_kick_the_derivative():
    gains = PidGains(kp=1.5, ki=0.2, kd=4.0)
    dt, step = 0.01, 2.0
    pid = PID(gains)
    for _ in range(10):  # at rest: y = r = 0
        assert pid.update(0.0, dt) == 0.0
    pid.setpoint = step
    jump = pid.update(0.0, dt)
    # derivative on measurement: only P moves; derivative on error would add kd*step/dt
    assert jump == pytest.approx(gains.kp * step, rel=1e-12)
    assert pid.terms.d == 0.0


def test_filtered_derivative_of_a_measurement_step_matches_the_closed_form():
    kd, tf, dt, dy = 0.8, 0.05, 0.01, 0.3
    pid = PID(PidGains(kp=0.0, kd=kd), derivative_filter_s=tf)
    pid.update(0.0, dt)
    d_terms = []
    for _ in range(20):
        pid.update(dy, dt)
        d_terms.append(pid.terms.d)
    # backward-difference first-order filter: D_k = -kd dy/(tf+dt) (tf/(tf+dt))^k
    k = np.arange(20)
    expected = -kd * dy / (tf + dt) * (tf / (tf + dt)) ** k
    np.testing.assert_allclose(d_terms, expected, rtol=1e-12)


def test_unfiltered_derivative_of_a_ramp_is_minus_kd_times_slope():
    kd, slope, dt = 0.7, 3.0, 0.02
    pid = PID(PidGains(kp=0.0, kd=kd))
    for k in range(5):
        pid.update(slope * k * dt, dt)
    assert pid.terms.d == pytest.approx(-kd * slope, rel=1e-9)


# ------------------------------------------------------------------------ anti-windup
def overshoot(ys: np.ndarray, r: float) -> float:
    return max(float(np.max(ys) - r), 0.0)


def test_anti_windup_on_output_limits_against_a_naive_integrator():
    # Thermal stage: 5 degC/A, tau 10 s; +-2 A; a 0 -> 8 degC step needs 1.6 A in steady
    # state but saturates the output for the first ~15 s.
    dt, r, kp, ki = 0.1, 8.0, 2.0, 0.6
    pid = PID(PidGains(kp, ki), setpoint=r, output_min=-2.0, output_max=2.0)
    naive = NaivePI(kp, ki, -2.0, 2.0)
    naive.setpoint = r
    ys, us = run_loop(pid, LagPlant(5.0, 10.0), 1500, dt)
    ys_naive, _ = run_loop(naive, LagPlant(5.0, 10.0), 1500, dt)  # type: ignore[arg-type]
    assert np.all(us <= 2.0) and np.any(us == 2.0)
    assert overshoot(ys_naive, r) > 0.1 * r  # the reference really winds up
    assert overshoot(ys, r) < 0.01 * overshoot(ys_naive, r)
    assert ys[-1] == pytest.approx(r, rel=1e-9)


def first_index(condition: np.ndarray) -> int:
    """Index of the first True (len if none)."""
    hits = np.flatnonzero(condition)
    return int(hits[0]) if hits.size else condition.size


def test_quick_recovery_after_a_long_saturation():
    # 300 s at an unreachable setpoint (10 degC is the most 2 A can hold), then a reachable one:
    # the output must leave the limit within a few ticks, the naive integrator stays stuck.
    dt = 0.1
    pid = PID(PidGains(2.0, 0.6), setpoint=15.0, output_min=-2.0, output_max=2.0)
    naive = NaivePI(2.0, 0.6, -2.0, 2.0)
    naive.setpoint = 15.0
    plant, plant_naive = LagPlant(5.0, 10.0), LagPlant(5.0, 10.0)
    run_loop(pid, plant, 3000, dt)
    run_loop(naive, plant_naive, 3000, dt)  # type: ignore[arg-type]
    assert pid.saturated and naive.u == 2.0
    pid.setpoint = naive.setpoint = 8.0
    _, us = run_loop(pid, plant, 1500, dt)
    _, us_naive = run_loop(naive, plant_naive, 1500, dt)  # type: ignore[arg-type]
    stuck = first_index(us < 2.0)
    stuck_naive = first_index(us_naive < 2.0)
    assert stuck <= 2  # the P term alone takes it off the limit
    assert stuck_naive > 100 * max(stuck, 1)
    assert plant.y == pytest.approx(8.0, rel=1e-6)


def test_anti_windup_on_the_rate_limit():
    dt, r, kp, ki, rate = 0.1, 8.0, 2.0, 0.6, 0.1
    pid = PID(PidGains(kp, ki), setpoint=r, rate_limit_per_s=rate)
    naive = NaivePI(kp, ki, -math.inf, math.inf, rate)
    naive.setpoint = r
    ys, us = run_loop(pid, LagPlant(5.0, 10.0), 3000, dt)
    ys_naive, _ = run_loop(naive, LagPlant(5.0, 10.0), 3000, dt)  # type: ignore[arg-type]
    assert np.all(np.abs(np.diff(us)) <= rate * dt * (1 + 1e-9))
    assert overshoot(ys_naive, r) > 0.1 * r
    assert overshoot(ys, r) < 0.05 * overshoot(ys_naive, r)
    assert ys[-1] == pytest.approx(r, rel=1e-6)


# ---------------------------------------------------------------------- limits (property)
def _gains() -> st.SearchStrategy[PidGains]:
    mag = st.floats(0.0, 50.0)
    return st.tuples(mag, mag, mag, st.sampled_from([1.0, -1.0])).map(
        lambda g: PidGains(g[0] * g[3], g[1] * g[3], g[2] * g[3])
    )


_actions = st.one_of(
    st.tuples(st.just("update"), st.floats(-100.0, 100.0) | st.just(math.nan), st.floats(1e-3, 2)),
    st.tuples(st.just("setpoint"), st.floats(-100.0, 100.0), st.just(0.0)),
    st.tuples(st.just("manual"), st.floats(0.0, 1.0), st.just(0.0)),
    st.tuples(st.just("auto"), st.just(0.0), st.just(0.0)),
    st.tuples(st.just("gains"), st.floats(0.0, 20.0), st.just(0.0)),
)


@settings(max_examples=150, deadline=None)
@given(
    gains=_gains(),
    lo=st.floats(-50.0, 49.0),
    width=st.floats(0.5, 100.0),
    rate=st.floats(1e-3, 1e3),
    tf=st.floats(0.0, 1.0),
    ramp=st.none() | st.floats(1e-2, 1e2),
    actions=st.lists(_actions, min_size=1, max_size=60),
)
def test_output_respects_limits_and_rate_every_update(gains, lo, width, rate, tf, ramp, actions):
    hi = lo + width
    pid = PID(
        gains,
        output_min=lo,
        output_max=hi,
        rate_limit_per_s=rate,
        derivative_filter_s=tf,
        setpoint_ramp_per_s=ramp,
        initial_output=lo + 0.5 * width,
    )
    u_prev = pid.output
    for kind, a, dt in actions:
        if kind == "update":
            u = pid.update(a, dt)
            assert lo <= u <= hi
            assert abs(u - u_prev) <= rate * dt * (1 + 1e-9) + 1e-9
            u_prev = u
        elif kind == "setpoint":
            pid.setpoint = a
        elif kind == "manual":
            pid.set_manual(lo + a * width)
        elif kind == "auto":
            pid.set_auto()
        else:  # scale the gains at run time
            pid.gains = PidGains(gains.kp * a, gains.ki * a, gains.kd * a)


# --------------------------------------------------------------------------- bumpless
def test_manual_output_is_rate_limited_and_auto_resumes_without_a_jump():
    dt, rate = 0.1, 0.5
    pid = PID(PidGains(2.0, 0.6), setpoint=8.0, output_min=-2.0, output_max=2.0,
              rate_limit_per_s=rate)  # fmt: skip
    plant = LagPlant(5.0, 10.0)
    run_loop(pid, plant, 600, dt)
    u_auto = pid.output
    pid.set_manual(-1.0)
    assert pid.mode == "manual"
    _, us = run_loop(pid, plant, 100, dt)
    # the operator's value is reached through the rate limit: a straight ramp, then held
    n_ramp = math.ceil((u_auto + 1.0) / (rate * dt) - 1e-9)
    expected = np.maximum(u_auto - rate * dt * np.arange(1, 101), -1.0)
    np.testing.assert_allclose(us, expected, atol=1e-12)
    assert n_ramp < 100 and us[-1] == -1.0
    pid.set_auto()
    first = pid.update(plant.y, dt)
    assert first == us[-1]  # no jump: the integral was initialised from the held output
    ys, us_after = run_loop(pid, plant, 2000, dt)
    assert np.all(np.abs(np.diff(np.r_[first, us_after])) <= rate * dt * (1 + 1e-9))
    assert ys[-1] == pytest.approx(8.0, rel=1e-6)


def test_manual_output_outside_limits_is_refused():
    pid = PID(PidGains(1.0), output_min=0.0, output_max=1.0)
    with pytest.raises(ValueError, match="manual output"):
        pid.set_manual(1.5)
    assert pid.mode == "auto"


def test_gain_change_is_bumpless():
    dt = 0.1
    pid = PID(PidGains(2.0, 0.6, 0.5), setpoint=8.0)
    plant = LagPlant(5.0, 10.0)
    run_loop(pid, plant, 3, dt)  # early transient: error and integral are both large
    y = plant.y
    pid.update(y, dt)  # hold y for two updates: the derivative estimate returns to 0
    pid.update(y, dt)
    reference = copy.deepcopy(pid)
    pid.gains = PidGains(6.0, 0.2, 1.5)
    assert abs(pid.last_error) > 1.0  # a naive change would jump by 4 A/degC x this
    assert pid.update(y, dt) == pytest.approx(reference.update(y, dt), abs=1e-12)


def test_changing_ki_alone_never_moves_the_output():
    dt = 0.1
    pid = PID(PidGains(2.0, 0.6, 0.5), setpoint=8.0)
    plant = LagPlant(5.0, 10.0)
    run_loop(pid, plant, 25, dt)
    reference = copy.deepcopy(pid)
    pid.gains = PidGains(2.0, 3.0, 0.5)
    plant.step(pid.output, dt)
    assert pid.update(plant.y, dt) == reference.update(plant.y, dt)


def test_reset_with_an_output_restarts_from_it():
    pid = PID(PidGains(2.0, 0.6, 0.2), setpoint=8.0)
    run_loop(pid, LagPlant(5.0, 10.0), 50, 0.1)
    pid.reset(output=0.7)
    assert math.isnan(pid.last_error)
    assert pid.update(3.0, 0.1) == 0.7
    pid.reset()
    assert pid.update(8.0, 0.1) == 0.0  # fresh: zero integral, zero error, no derivative


# ------------------------------------------------------------------------ setpoint ramp
def test_setpoint_ramp_moves_at_the_set_speed_from_the_measurement():
    dt, ramp, y = 0.1, 0.5, 2.0
    pid = PID(PidGains(0.0, 0.0), setpoint=10.0, setpoint_ramp_per_s=ramp)
    eff = []
    for _ in range(200):
        pid.update(y, dt)
        eff.append(pid.effective_setpoint)
    expected = np.minimum(y + ramp * dt * np.arange(1, 201), 10.0)
    np.testing.assert_allclose(eff, expected, rtol=1e-12)
    assert pid.setpoint == 10.0
    pid.setpoint = 9.0  # downwards, from where the ramp stands
    pid.update(y, dt)
    assert pid.effective_setpoint == pytest.approx(10.0 - ramp * dt)


def test_setpoint_ramp_drives_the_closed_loop_at_the_ramp_speed():
    dt, ramp = 0.1, 0.05
    pid = PID(PidGains(20.0, 20.0), setpoint=4.0, setpoint_ramp_per_s=ramp)
    plant = LagPlant(1.0, 1.0)
    ys, _ = run_loop(pid, plant, 600, dt)
    # a fast loop follows the ramp: the mid-ramp slope of y is the ramp speed
    slope = np.polyfit(np.arange(200, 400) * dt, ys[200:400], 1)[0]
    assert slope == pytest.approx(ramp, rel=1e-3)


# --------------------------------------------------------------------------- phase loops
@settings(max_examples=200, deadline=None)
@given(r=st.floats(-10.0, 10.0), y=st.floats(-10.0, 10.0))
def test_wrapped_error_is_the_shortest_angle(r, y):
    pid = PID(PidGains(1.0), setpoint=r, error_wrap=2 * math.pi)
    pid.update(y, 1.0)
    e = pid.last_error
    assert -math.pi <= e < math.pi
    assert np.exp(1j * e) == pytest.approx(np.exp(1j * (r - y)), abs=1e-9)


def test_phase_loop_takes_the_short_way_across_pi():
    # plant: phase integrates the actuator, phi' = g u, reported wrapped into [-pi, pi)
    dt, g = 0.01, 1.0
    pid = PID(PidGains(5.0, 2.0, 0.05), setpoint=-3.0, error_wrap=2 * math.pi,
              derivative_filter_s=0.01)  # fmt: skip
    phi = 3.0  # unwrapped plant phase
    path = []
    for _ in range(3000):
        measured = (phi + math.pi) % (2 * math.pi) - math.pi
        phi += g * pid.update(measured, dt) * dt
        path.append(phi)
    # short way: +0.28 rad through +pi (not -6 rad through 0)
    assert path[-1] == pytest.approx(-3.0 + 2 * math.pi, abs=1e-6)
    assert min(path) > 2.9


def test_derivative_is_wrapped_across_pi():
    kd, dt = 0.5, 0.1
    pid = PID(PidGains(0.0, 0.0, kd), error_wrap=2 * math.pi)
    pid.update(math.pi - 0.01, dt)
    pid.update(-math.pi + 0.01, dt)
    assert pid.terms.d == pytest.approx(-kd * 0.02 / dt, rel=1e-9)


# ------------------------------------------------------------------- invalid inputs
def test_nan_measurement_holds_the_output_and_keeps_the_state():
    pid = PID(PidGains(2.0, 0.6, 0.3), setpoint=8.0, derivative_filter_s=0.05)
    plant = LagPlant(5.0, 10.0)
    run_loop(pid, plant, 20, 0.1)
    reference = copy.deepcopy(pid)
    held = pid.output
    assert pid.update(math.nan, 0.1) == held
    assert pid.update(math.inf, 0.1) == held
    assert pid.invalid_measurements == 2
    for _ in range(5):
        assert pid.update(plant.y, 0.1) == reference.update(plant.y, 0.1)
        plant.step(pid.output, 0.1)


@pytest.mark.parametrize("dt", [0.0, -0.1, math.nan, math.inf])
def test_bad_dt_is_refused(dt):
    pid = PID(PidGains(1.0))
    with pytest.raises(ValueError, match="dt_s"):
        pid.update(1.0, dt)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"output_min": 1.0, "output_max": 1.0}, "output_min"),
        ({"output_min": 2.0, "output_max": 1.0}, "output_min"),
        ({"output_max": math.nan}, "output_max"),
        ({"rate_limit_per_s": -1.0}, "rate_limit_per_s"),
        ({"rate_limit_per_s": 0.0}, "rate_limit_per_s"),
        ({"setpoint_ramp_per_s": -0.5}, "setpoint_ramp_per_s"),
        ({"derivative_filter_s": -0.1}, "derivative_filter_s"),
        ({"error_wrap": 0.0}, "error_wrap"),
        ({"error_wrap": math.inf}, "error_wrap"),
        ({"tracking_time_s": -1.0}, "tracking_time_s"),
        ({"setpoint": math.nan}, "setpoint"),
        ({"initial_output": 5.0, "output_max": 1.0}, "initial_output"),
    ],
)
def test_bad_settings_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PID(PidGains(1.0), **kwargs)


@pytest.mark.parametrize(
    ("gains", "name"),
    [((math.nan, 0, 0), "kp"), ((1, math.inf, 0), "ki"), ((1.0, -0.1, 0.0), "mix signs")],
)
def test_bad_gains_name_the_parameter(gains, name):
    with pytest.raises(ValueError, match=name):
        PidGains(*gains)


def test_settings_validate_before_any_controller_exists():
    settings_ = PidSettings(output_min=-2.0, output_max=2.0, rate_limit_per_s=1.0)
    pid = PID.from_settings(PidGains(1.0, 0.1), settings_, setpoint=3.0)
    assert pid.settings == settings_ and pid.setpoint == 3.0
    assert PidGains(2.0, 0.5, 1.0).integral_time_s == 4.0
    assert PidGains(2.0, 0.5, 1.0).derivative_time_s == 0.5
