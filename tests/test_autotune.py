"""Step-response fits against closed forms and scipy.signal, SIMC gains in closed loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from drivers.sim.clock import VirtualClock
from labctl.autotune import (
    MIN_TAU_C_FRACTION,
    Fopdt,
    Sopdt,
    fit_fopdt,
    fit_sopdt,
    simc_gains,
    step_test,
)
from labctl.loop_runner import AdvancingClock, Reading
from labctl.pid import PID, PidGains


def fopdt_step(t: np.ndarray, gain: float, tau: float, theta: float, du: float) -> np.ndarray:
    """Closed-form FOPDT step response (written here independently of the module)."""
    return np.where(t > theta, gain * du * (1.0 - np.exp(-(t - theta) / tau)), 0.0)


def sopdt_step(t: np.ndarray, gain: float, tau1: float, tau2: float, theta: float) -> np.ndarray:
    """Unit-step response of K/((tau1 s + 1)(tau2 s + 1)) delayed by theta, by scipy.signal."""
    system = signal.lti([gain], np.polymul([tau1, 1.0], [tau2, 1.0]))
    after = t > theta
    y = np.zeros_like(t)
    _, y[after] = signal.step(system, T=t[after] - theta)
    return y


# ------------------------------------------------------------------------------ fits
@pytest.mark.parametrize(
    ("gain", "tau", "theta"),
    [(5.0, 10.0, 2.0), (-0.8, 3.0, 0.0), (2.0, 10.0, 0.55), (0.05, 1.0, 0.3)],
)
def test_fit_fopdt_recovers_a_noisy_synthetic_step(gain, tau, theta):
    rng = np.random.default_rng(7)
    dt = tau / 100.0
    t = np.arange(-20, 800) * dt  # 20 baseline samples, 8 tau after the step
    u_before, u_after = 0.5, 2.0
    du = u_after - u_before
    sigma = 0.02 * abs(gain * du)  # 2% of the step
    y = 22.0 + fopdt_step(t, gain, tau, theta, du) + rng.normal(0.0, sigma, t.size)
    fit = fit_fopdt(t, y, u_before, u_after)
    assert fit.gain == pytest.approx(gain, rel=0.01)
    assert fit.time_constant_s == pytest.approx(tau, rel=0.03)
    assert fit.dead_time_s == pytest.approx(theta, abs=2 * dt)  # within two samples
    assert fit.baseline == pytest.approx(22.0, abs=3 * sigma / math.sqrt(20))
    assert fit.rmse == pytest.approx(sigma, rel=0.1)  # residuals are the noise
    np.testing.assert_allclose(fit.response(t, du) - 22.0, fopdt_step(t, gain, tau, theta, du),
                               atol=5 * sigma)  # fmt: skip


def test_fit_sopdt_recovers_a_second_order_plant_and_beats_fopdt():
    gain, tau1, tau2, theta = 4.0, 8.0, 2.0, 1.0
    rng = np.random.default_rng(3)
    t = np.arange(-20, 900) * 0.1
    sigma = 0.02
    y = 20.0 + sopdt_step(t, gain, tau1, tau2, theta) + rng.normal(0.0, sigma, t.size)
    fit = fit_sopdt(t, y, 0.0, 1.0)
    assert isinstance(fit, Sopdt)
    assert fit.gain == pytest.approx(gain, rel=0.01)
    assert fit.time_constant_s == pytest.approx(tau1, rel=0.05)
    assert fit.time_constant2_s == pytest.approx(tau2, rel=0.1)
    assert fit.dead_time_s == pytest.approx(theta, abs=0.2)
    assert fit.rmse == pytest.approx(sigma, rel=0.1)
    # the S-shape is invisible to a first-order model: its residuals are clearly larger
    assert fit_fopdt(t, y, 0.0, 1.0).rmse > 1.3 * fit.rmse


def test_fits_refuse_bad_records():
    t = np.arange(100) * 0.1
    flat = np.random.default_rng(0).normal(0.0, 0.01, t.size)
    with pytest.raises(ValueError, match="no step response"):
        fit_fopdt(t, flat, 0.0, 1.0)
    with pytest.raises(ValueError, match="non-zero step"):
        fit_fopdt(t, t, 1.0, 1.0)
    with pytest.raises(ValueError, match="y has non-finite"):
        fit_fopdt(t, np.where(t > 5, np.nan, t), 0.0, 1.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        fit_fopdt(t[::-1], t, 0.0, 1.0)
    with pytest.raises(ValueError, match="one length"):
        fit_fopdt(t, t[:-1], 0.0, 1.0)


# --------------------------------------------------------------------------- SIMC
def test_simc_rules():
    model = Fopdt(gain=5.0, time_constant_s=10.0, dead_time_s=2.0, rmse=0.0)
    # tau_c = theta = 2: Kc = 10 / (5 * 4) = 0.5; Ti = min(10, 16) = 10
    assert simc_gains(model) == PidGains(0.5, 0.05, 0.0)
    # lag dominant, tau_c = 0.5: Kc = 10 / (5 * 2.5) = 0.8; Ti = min(10, 4 * 2.5) = 10
    slow = simc_gains(model, closed_loop_tau_s=0.5)
    assert slow.kp == pytest.approx(0.8) and slow.integral_time_s == pytest.approx(10.0)
    lag = Fopdt(gain=5.0, time_constant_s=100.0, dead_time_s=11.0, rmse=0.0)
    # Ti = 4 (tau_c + theta) = 88 < tau: SIMC's cure for sluggish disturbance rejection
    assert simc_gains(lag).integral_time_s == pytest.approx(88.0)
    # dead time below the floor: tau_c = 0.1 tau = 10, Ti = 4 (10 + 2) = 48
    short = simc_gains(Fopdt(gain=5.0, time_constant_s=100.0, dead_time_s=2.0, rmse=0.0))
    assert short.integral_time_s == pytest.approx(4 * (MIN_TAU_C_FRACTION * 100.0 + 2.0))
    # half a sample of dead time from the sample-and-hold
    sampled = simc_gains(model, sample_period_s=1.0)
    assert sampled.kp == pytest.approx(10.0 / (5.0 * 5.0))
    # no dead time: tau_c floored at a fraction of tau
    no_delay = simc_gains(Fopdt(2.0, 4.0, 0.0, 0.0))
    tau_c = MIN_TAU_C_FRACTION * 4.0
    assert no_delay.kp == pytest.approx(4.0 / (2.0 * tau_c))
    # reverse acting plant: reverse acting controller
    assert simc_gains(Fopdt(-5.0, 10.0, 2.0, 0.0)) == PidGains(-0.5, -0.05, 0.0)
    # SOPDT: series PID (Kc 0.5, Ti 10, Td 3) in parallel form
    pid = simc_gains(Sopdt(5.0, 10.0, 3.0, 2.0, 0.0))
    assert pid.kp == pytest.approx(0.5 * (1 + 3.0 / 10.0))
    assert pid.ki == pytest.approx(0.05) and pid.kd == pytest.approx(1.5)
    with pytest.raises(ValueError, match="gain"):
        simc_gains(Fopdt(0.0, 1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="closed_loop_tau_s"):
        simc_gains(model, closed_loop_tau_s=-1.0)


def simulate_closed_loop(pid: PID, plant_step, n: int, dt: float) -> np.ndarray:
    ys = np.empty(n)
    y = 0.0
    for k in range(n):
        y = plant_step(pid.update(y, dt))
        ys[k] = y
    return ys


def fopdt_plant(gain: float, tau: float, theta: float, dt: float):
    """Exact discretisation with the dead time as a whole number of samples."""
    a = math.exp(-dt / tau)
    queue = [0.0] * round(theta / dt)
    state = {"y": 0.0}

    def step(u: float) -> float:
        queue.append(u)
        state["y"] = a * state["y"] + (1 - a) * gain * queue.pop(0)
        return state["y"]

    return step


def sopdt_plant(gain: float, tau1: float, tau2: float, theta: float, dt: float):
    """Two exact first-order lags in series, dead time in samples."""
    a1, a2 = math.exp(-dt / tau1), math.exp(-dt / tau2)
    queue = [0.0] * round(theta / dt)
    state = {"x": 0.0, "y": 0.0}

    def step(u: float) -> float:
        queue.append(u)
        x_prev = state["x"]
        state["x"] = a1 * x_prev + (1 - a1) * gain * queue.pop(0)
        state["y"] = a2 * state["y"] + (1 - a2) * x_prev  # ZOH on the first lag's output
        return state["y"]

    return step


@pytest.mark.parametrize(("gain", "tau", "theta"), [(5.0, 10.0, 2.0), (-2.0, 5.0, 0.0)])
def test_simc_gains_from_a_fit_close_the_loop_with_bounded_overshoot(gain, tau, theta):
    dt = 0.1
    rng = np.random.default_rng(11)
    t = np.arange(-10, 600) * dt
    y = fopdt_step(t, gain, tau, theta, 1.0) + rng.normal(0.0, 0.01 * abs(gain), t.size)
    gains = simc_gains(fit_fopdt(t, y, 0.0, 1.0), sample_period_s=dt)
    r = 1.0
    pid = PID(gains, setpoint=r)
    ys = simulate_closed_loop(pid, fopdt_plant(gain, tau, theta, dt), 4000, dt)
    assert np.max(ys) - r < 0.2 * r
    assert ys[-1] == pytest.approx(r, rel=1e-6)


def test_simc_pid_from_a_sopdt_fit_closes_the_loop_with_bounded_overshoot():
    gain, tau1, tau2, theta, dt = 4.0, 8.0, 2.0, 1.0, 0.05
    rng = np.random.default_rng(5)
    t = np.arange(-20, 1800) * dt
    y = sopdt_step(t, gain, tau1, tau2, theta) + rng.normal(0.0, 0.02, t.size)
    model = fit_sopdt(t, y, 0.0, 1.0)
    gains = simc_gains(model, sample_period_s=dt)
    assert gains.kd > 0.0
    r = 2.0
    pid = PID(gains, setpoint=r, derivative_filter_s=model.time_constant2_s / 10)
    ys = simulate_closed_loop(pid, sopdt_plant(gain, tau1, tau2, theta, dt), 6000, dt)
    assert np.max(ys) - r < 0.2 * r
    assert ys[-1] == pytest.approx(r, rel=1e-6)


# ----------------------------------------------------------------------- step_test
class Heater:
    """First-order stage (no dead time) on a virtual clock, integrated exactly between accesses."""

    def __init__(self, clock: VirtualClock, gain: float, tau: float) -> None:
        self.clock, self.gain, self.tau = clock, gain, tau
        self.t, self.y, self.u = clock.now_s(), 0.0, 0.0
        self.writes: list[float] = []

    def _advance(self) -> None:
        now = self.clock.now_s()
        a = math.exp(-(now - self.t) / self.tau)
        self.y = self.gain * self.u + (self.y - self.gain * self.u) * a
        self.t = now

    def read(self) -> Reading:
        self._advance()
        return Reading(self.y, self.clock.now_s())

    def write(self, u: float) -> None:
        self._advance()
        self.u = u
        self.writes.append(u)


def test_step_test_records_on_virtual_time_and_the_fit_finds_the_plant():
    vclock = VirtualClock(realtime=False, start_s=100.0)
    heater = Heater(vclock, gain=5.0, tau=10.0)
    clock = AdvancingClock(vclock.now_s, vclock.advance)
    t, y = step_test(heater.read, heater.write, 0.0, 0.4, 60.0, 0.1, clock, baseline_s=1.0)
    assert t.dtype == np.float64 and y.dtype == np.float64
    np.testing.assert_allclose(t, np.arange(-10, 601) * 0.1, atol=1e-9)
    assert heater.writes == [0.0, 0.4, 0.0]  # restored at the end
    fit = fit_fopdt(t, y, 0.0, 0.4)
    assert fit.gain == pytest.approx(5.0, rel=1e-6)
    assert fit.time_constant_s == pytest.approx(10.0, rel=1e-6)
    assert fit.dead_time_s == pytest.approx(0.0, abs=1e-6)


def test_step_test_restores_the_actuator_when_the_sensor_fails():
    vclock = VirtualClock(realtime=False)
    heater = Heater(vclock, gain=5.0, tau=10.0)

    def read() -> Reading:
        if vclock.now_s() > 2.0:
            raise TimeoutError("sensor timed out")
        return heater.read()

    with pytest.raises(TimeoutError, match="sensor timed out"):
        step_test(read, heater.write, 0.0, 1.0, 10.0, 0.1,
                  AdvancingClock(vclock.now_s, vclock.advance))  # fmt: skip
    assert heater.writes == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="period_s"):
        step_test(read, heater.write, 0.0, 1.0, 10.0, 0.0,
                  AdvancingClock(vclock.now_s, vclock.advance))  # fmt: skip
