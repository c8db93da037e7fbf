"""``labctl autotune`` on the shipped entanglement bench's simulators, manual clock.

Everything goes through the real drivers over the simulators' sockets and ptys; the bench runs
on a manual clock, so a minute of step test takes about a second. Truth comes from the twin:
the Arroyo plant's closed-form steady state and its exact step response (state space written
here from the simulator's constants and solved with scipy.signal), the laser's fine-tuning
grid, the phase shifter's 2 pi per ``volts_per_2pi``, the chip temperature and the laser's
optical frequency read from the simulators while the proposed gains run the loop.

Pass criterion for "the loop holds": the pair rate stays within 2% of its on-resonance value.
The rate goes as the square of the pump power coupled into the ring (drivers/sim/pairsource.py),
``1 / (1 + x^2)^2`` with ``x = 2 detuning / linewidth``, so |detuning| <= 0.0505 linewidth:
10 MHz for the 200 MHz ring, i.e. 4 mK of chip temperature at -2.5 GHz/K.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import signal

from drivers.sim import arroyo
from drivers.sim.clock import VirtualClock
from drivers.sim.environment import PROFILES
from labctl import autotune_job
from labctl.autotune import Fopdt, simc_gains
from labctl.autotune_job import AutotuneError, AutotuneStopped, run_autotune
from labctl.config import CONFIG_DIR, BenchConfig, load_bench
from labctl.loop_config import SPEED_OF_LIGHT_M_S, fine_tuning_mhz_per_pm
from labctl.loops_job import run_loops
from labctl.pid import PidGains

BENCH = CONFIG_DIR / "entanglement_sim.toml"
#: fraction of the on-resonance pair rate the loops must keep (module docstring)
PAIR_RATE_KEPT = 0.98


def max_detuning_hz(config: BenchConfig) -> float:
    """|pump - resonance| keeping the pair rate within PAIR_RATE_KEPT: (1 + x^2)^-2 >= kept."""
    assert config.entanglement is not None and config.entanglement.sim is not None
    x = math.sqrt(PAIR_RATE_KEPT**-0.5 - 1.0)
    return 0.5 * x * config.entanglement.sim.linewidth_hz


def max_chip_error_c(config: BenchConfig) -> float:
    assert config.entanglement is not None and config.entanglement.sim is not None
    return max_detuning_hz(config) / abs(config.entanglement.sim.thermo_optic_hz_per_k)


def bench_variant(tmp_path: Path, old: str, new: str) -> Path:
    """The shipped bench file with one line changed (written to tmp_path)."""
    text = BENCH.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "bench.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


class Capture:
    """hook(bench): keeps the simulators (they stay readable after the bench closed)."""

    def __init__(self, action: Any = None) -> None:
        self.sims: dict[str, Any] = {}
        self.action = action
        self.calls = 0

    def __call__(self, bench: Any) -> None:
        self.calls += 1
        self.sims = dict(bench.sim_host.sims)
        if self.action is not None:
            self.action(bench, self.sims)


def autotune(config: BenchConfig, loop: str, capture: Capture | None = None, **kw: Any):
    return run_autotune(config, loop, clock=VirtualClock(realtime=False), hook=capture, **kw)


# --------------------------------------------------------------------------------- the TEC
def twin_plant(config: BenchConfig) -> dict[str, float]:
    """The Arroyo twin's thermal parameters on this bench (its options, else its defaults)."""
    opts = config.instruments["tec1"].sim
    defaults = {
        "thermal_capacity_j_per_k": arroyo.THERMAL_CAPACITY_J_PER_K,
        "thermal_resistance_k_per_w": arroyo.THERMAL_RESISTANCE_K_PER_W,
        "peltier_w_per_a": arroyo.PELTIER_W_PER_A,
        "chip_capacity_j_per_k": arroyo.CHIP_CAPACITY_J_PER_K,
        "chip_stage_resistance_k_per_w": arroyo.CHIP_STAGE_RESISTANCE_K_PER_W,
        "chip_ambient_resistance_k_per_w": arroyo.CHIP_AMBIENT_RESISTANCE_K_PER_W,
    }
    return {key: float(opts.get(key, value)) for key, value in defaults.items()}


def twin_stage_gain_c_per_a(config: BenchConfig) -> float:
    """Steady state of drivers/sim/arroyo.py at constant current: the stage loses heat to the
    room directly (R_sa) and through the chip (R_cs + R_ca), dT_s/dI = k / (1/R_sa + 1/(R_cs +
    R_ca))."""
    p = twin_plant(config)
    r_chip = p["chip_stage_resistance_k_per_w"] + p["chip_ambient_resistance_k_per_w"]
    return p["peltier_w_per_a"] / (1.0 / p["thermal_resistance_k_per_w"] + 1.0 / r_chip)


def twin_stage_step_c(config: BenchConfig, t_s: np.ndarray, du_a: float) -> np.ndarray:
    """Exact stage response to a current step of the two-node plant (state space from the
    simulator's equations, step response by scipy.signal)."""
    p = twin_plant(config)
    c_s, c_c = p["thermal_capacity_j_per_k"], p["chip_capacity_j_per_k"]
    r_sa, r_cs = p["thermal_resistance_k_per_w"], p["chip_stage_resistance_k_per_w"]
    r_ca = p["chip_ambient_resistance_k_per_w"]
    a = [
        [-(1 / r_sa + 1 / r_cs) / c_s, 1 / (r_cs * c_s)],
        [1 / (r_cs * c_c), -(1 / r_cs + 1 / r_ca) / c_c],
    ]
    system = signal.StateSpace(a, [[p["peltier_w_per_a"] / c_s], [0.0]], [[1.0, 0.0]], [[0.0]])
    y = np.zeros_like(t_s)
    after = t_s > 0
    _, y[after] = signal.step(system, T=t_s[after])
    return du_a * y


def test_ring_temperature_fit_matches_the_twin_in_a_quiet_room(tmp_path):
    """The shipped bench with a quiet room: the fitted FOPDT has the plant's closed-form static
    gain, follows the twin's exact step response, and its residuals are the thermistor noise."""
    config = load_bench(
        bench_variant(
            tmp_path, 'ambient = { profile = "typical_lab" }', 'ambient = { profile = "quiet" }'
        )
    )
    capture = Capture()
    result = autotune(config, "ring-temperature", capture, model="both")
    fopdt = result.fit("fopdt").model
    assert isinstance(fopdt, Fopdt)
    assert result.kind == "temperature" and result.units == ("degC", "A")
    assert fopdt.gain == pytest.approx(twin_stage_gain_c_per_a(config), rel=0.01)
    t = result.t_s
    after = t > 0
    exact = twin_stage_step_c(config, t, result.step)
    fitted = fopdt.response(t, result.step) - fopdt.baseline
    amplitude = abs(twin_stage_gain_c_per_a(config) * result.step)
    assert np.abs(fitted[after] - exact[after]).max() < 0.02 * amplitude
    assert fopdt.rmse < 2.0 * arroyo.SENSOR_NOISE_C  # residuals: noise (and 0.1 mK resolution)
    # the record is on the loop's grid, before and after the step, the repeat at t = 0 dropped
    assert result.t_s.dtype == np.float64 and result.y.dtype == np.float64
    assert np.all(np.diff(t) > 0) and 0.0 not in t
    assert t[0] < -0.9 * result.baseline_s and t[-1] == pytest.approx(result.duration_s)
    # the actuator was handed over bumplessly and back: ITE at the PID's current, then T mode
    sent = [m.decode().strip() for m in capture.sims["tec1"].received]
    assert sent.index("TEC:MODE:ITE") < sent.index("TEC:MODE:T", sent.index("TEC:MODE:ITE"))
    writes = [float(m.split()[1]) for m in sent if m.startswith("TEC:ITE ")]
    assert writes[0] == pytest.approx(result.u_before) and writes[-1] == writes[0]
    assert max(writes) == pytest.approx(result.u_after)
    # the current the controller's PID held the stage at the setpoint with: (T - T_room) / K
    setpoint = autotune_job.find_loop(config, "ring-temperature").setpoint
    held_a = (setpoint - config.ambient_c) / twin_stage_gain_c_per_a(config)
    assert result.u_before == pytest.approx(held_a, rel=0.01)


#: ring hold runs: bench seconds, settling excluded, status interval
HOLD_S, SETTLE_S, UPDATE_S = 300.0, 60.0, 0.5


def hold_ring(config: BenchConfig, gains: PidGains, derivative_filter_s: float) -> np.ndarray:
    """|chip - setpoint| (degC) of the ring loop run with ``gains``, after SETTLE_S."""
    loops = tuple(
        replace(
            c,
            gains=gains,
            settings=replace(c.settings, derivative_filter_s=derivative_filter_s),
        )
        if c.name == "ring-temperature"
        else c
        for c in config.loops
    )
    sims: dict[str, Any] = {}
    chip: list[tuple[float, float, str]] = []

    def sink(status: Any) -> None:
        row = status.loops[0].status
        chip.append((status.time_s, sims["tec1"].chip_temperature_c(), row.state))

    run_loops(
        replace(config, loops=loops),
        duration_s=HOLD_S,
        only=["ring-temperature"],
        update_s=UPDATE_S,
        sinks=[sink],
        clock=VirtualClock(realtime=False),
        hook=lambda bench, lp, wd: sims.update(bench.sim_host.sims),
    )
    assert all(state == "running" for _, _, state in chip)
    setpoint = next(c.setpoint for c in loops if c.name == "ring-temperature")
    return np.array([abs(c - setpoint) for t, c, _ in chip if t > SETTLE_S])


def test_ring_temperature_on_the_shipped_bench_and_the_proposed_gains_hold_the_ring(capsys):
    """The shipped bench (typical_lab room): the fit still finds the plant, within what the
    room moves the stage during the record, and the proposed gains hold the ring on the pumps'
    resonance, as the bench file's gains do."""
    config = load_bench(BENCH)
    result = autotune(config, "ring-temperature", model="both")
    assert result.drift_per_s != 0.0  # the room was moving: the detrend had work to do
    # room budget: a line fitted before the step leaves the HVAC sine's curvature over the
    # record, A (2 pi / P)^2 T^2 / 2, against a response of K du
    assert config.ambient is not None
    env = PROFILES[config.ambient["profile"]]
    curvature_c = (
        0.5 * env["hvac_amplitude_c"] * (2 * math.pi / env["hvac_period_s"]) ** 2
        * result.duration_s**2
    )  # fmt: skip
    k_twin = twin_stage_gain_c_per_a(config)
    for name in ("fopdt", "sopdt"):
        assert result.fit(name).model.gain == pytest.approx(
            k_twin, abs=curvature_c / abs(result.step)
        )
    proposed = result.fit(result.recommended)
    errors = {
        "proposed": hold_ring(config, proposed.proposed, proposed.derivative_filter_s),
        "bench file": hold_ring(config, result.configured, result.configured_derivative_filter_s),
    }
    limit = max_chip_error_c(config)
    with capsys.disabled():
        print()
        for label, err in errors.items():
            gains = proposed.proposed if label == "proposed" else result.configured
            print(
                f"ring-temperature {label} kp {gains.kp:.3g} ki {gains.ki:.3g} kd {gains.kd:.3g}:"
                f" max |chip - setpoint| {err.max() * 1e3:.2f} mK over {HOLD_S - SETTLE_S:g} s "
                f"(limit {limit * 1e3:.1f} mK)"
            )
    for err in errors.values():
        assert err.size == pytest.approx((HOLD_S - SETTLE_S) / UPDATE_S, abs=1)
        assert err.max() < limit


# ---------------------------------------------------------------------------- the pump lock
def test_pump_lock_fit_is_the_tuning_gain_and_the_proposed_gains_lock_the_pump(capsys):
    """pump0 through its fine tuning, read by wm0: a static plant of gain 1 MHz/MHz (the step
    lands on the 0.01 pm grid) with no lag beyond the sampling; SIMC proposes a (nearly pure)
    integrator, stable on that plant, which holds the pump on its resonance."""
    config = load_bench(BENCH)
    capture = Capture()
    step_mhz = 100.0  # the laser's own wander over the record (below) is small against it
    result = autotune(config, "pump0-lock", capture, step=step_mhz)
    quantum = 0.01 * fine_tuning_mhz_per_pm(1550.12)
    assert result.step == pytest.approx(round(step_mhz / quantum) * quantum)
    fit = result.fit("fopdt").model
    # uncertainty of the level change: wavemeter noise over the samples and the laser's
    # random walk between the two halves of the record, Var = D (T_before + T_after) / 3
    laser, wm = capture.sims["pump0"], capture.sims["wm0"]
    diffusion_mhz2_per_s = laser.walk.sigma_hz**2 / laser.walk.step_s / 1e12
    n_before = np.count_nonzero(result.t_s < 0)
    n_after = result.t_s.size - n_before
    sigma_mhz = math.sqrt(
        diffusion_mhz2_per_s * (result.baseline_s + result.duration_s) / 3.0
        + (wm.noise_rms_hz / 1e6) ** 2 * (1 / n_before + 1 / n_after)
    )
    assert fit.gain == pytest.approx(1.0, abs=4 * sigma_mhz / result.step)
    assert fit.time_constant_s + fit.dead_time_s < result.period_s  # no lag beyond a sample
    assert fit.rmse < 3 * sigma_mhz
    gains = result.fit("fopdt").proposed
    # labctl's PID integrates by forward difference: with y_k = K u_(k-1) a pure integrator
    # closes z^2 - z + K ki T = 0, stable (|z|^2 = K ki T) below 1
    loop_gain = fit.gain * gains.ki * result.period_s
    assert 0.0 < loop_gain < 1.0
    assert gains.integral_time_s < result.period_s
    # the tuning went back where it was: the last fine-tuning write is the start value
    sent = [m.decode().strip() for m in laser.received]
    tuning = [m for m in sent if m.upper().startswith(":WAV:FIN ")]
    assert float(tuning[-1].split()[1]) == pytest.approx(-result.u_before / (quantum / 0.01))
    # both gain sets hold the pump on the ring resonance
    target_hz = SPEED_OF_LIGHT_M_S / 1550.12e-9
    limit_mhz = max_detuning_hz(config) / 1e6
    rms = {}
    for label, g in (("proposed", gains), ("bench file", result.configured)):
        offsets = lock_pump(config, g, target_hz)
        rms[label] = (g, float(np.sqrt(np.mean(offsets**2))), float(np.abs(offsets).max()))
        assert np.abs(offsets).max() < limit_mhz
    with capsys.disabled():
        print()
        for label, (g, r, m) in rms.items():
            print(
                f"pump0-lock {label} kp {g.kp:.3g} ki {g.ki:.3g}: {r:.2f} MHz rms, "
                f"max {m:.2f} MHz over 25 s (limit {limit_mhz:.1f} MHz)"
            )


def lock_pump(config: BenchConfig, gains: PidGains, target_hz: float) -> np.ndarray:
    """Offset (MHz) of pump0 from where the wavemeter reads the target, 30 s lock, after 5 s."""
    loops = tuple(replace(c, gains=gains) if c.name == "pump0-lock" else c for c in config.loops)
    sims: dict[str, Any] = {}
    rows: list[tuple[float, float]] = []

    def sink(status: Any) -> None:
        assert status.loops[0].status.state == "running"
        hz = sims["pump0"].optical_frequency_hz() + sims["wm0"].accuracy_offset_hz
        rows.append((status.time_s, (hz - target_hz) / 1e6))

    run_loops(
        replace(config, loops=loops),
        duration_s=30.0,
        only=["pump0-lock"],
        update_s=0.1,
        sinks=[sink],
        clock=VirtualClock(realtime=False),
        hook=lambda bench, lp, wd: sims.update(bench.sim_host.sims),
    )
    return np.array([off for t, off in rows if t > 5.0])


# ------------------------------------------------------------------------- the phase lock
def test_phase_lock_step_across_pi_is_unwrapped(tmp_path):
    """alice's interferometer started 0.14 rad below +pi: the 0.1 V step takes the phase
    across the wrap, and the fit still sees 2 pi / volts_per_2pi rad/V."""
    config = load_bench(BENCH)
    cfg = autotune_job.find_loop(config, "alice-phase")
    assert cfg.volts_per_2pi is not None
    rad_per_v = 2 * math.pi / cfg.volts_per_2pi
    start_v = {}

    def park_near_pi(bench: Any, sims: dict[str, Any]) -> None:
        pairs = sims["awg1"].bench.elements["pairs"]
        offset_rad = pairs.user_phase_rad("alice", sims["awg1"].now_s())  # at 0 V, output off
        start_v["v"] = (math.pi - 0.14 - offset_rad) / rad_per_v
        awg = bench.instruments["awg1"]
        awg.set("function", "DC", 1)
        awg.set("offset_v", start_v["v"], 1, ramp=False)

    result = autotune(config, "alice-phase", Capture(park_near_pi), step=0.1)
    assert result.u_before == pytest.approx(start_v["v"], abs=1e-3)
    assert result.y.max() > math.pi  # unwrapped: the record crosses +pi continuously
    fit = result.fit("fopdt").model
    assert fit.gain == pytest.approx(rad_per_v, rel=0.02)
    assert fit.time_constant_s + fit.dead_time_s < result.period_s


# ------------------------------------------------------------------------------ refusals
def test_out_of_range_step_is_refused_before_any_actuator_write():
    """u0 + step beyond output_max: refused after reading the present current, before the TEC
    is switched to constant current or any current is written."""
    config = load_bench(BENCH)
    capture = Capture()
    with pytest.raises(AutotuneError) as info:
        autotune(config, "ring-temperature", capture, step=1.0)
    text = str(info.value)
    assert "ring-temperature" in text and "--step 1 A" in text and "[-1.5, 1.5] A" in text
    tec = capture.sims["tec1"]
    sent = [m.decode().strip().upper() for m in tec.received]
    assert "TEC:ITE?" in sent  # the present current was read
    assert not any(m.startswith(("TEC:ITE ", "TEC:MODE:ITE")) for m in sent)
    assert tec.mode == "T"
    # a step wider than the whole range is refused before connecting
    capture = Capture()
    with pytest.raises(AutotuneError, match=r"pump0-lock.*--step 30000 MHz.*larger than"):
        autotune(config, "pump0-lock", capture, step=30000.0)
    assert capture.calls == 0


def test_interlock_holding_the_actuator_refuses_the_test():
    """An open thermistor trips the pumps-off interlock at its first evaluation: the pump lock
    is not tuned and the laser's tuning is never written."""
    capture = Capture(lambda bench, sims: sims["tec1"].set_sensor_open(True))
    with pytest.raises(AutotuneError, match="pump0 is held safe by tripped interlock"):
        autotune(load_bench(BENCH), "pump0-lock", capture)
    sent = [m.decode().strip().upper() for m in capture.sims["pump0"].received]
    assert not any(m.startswith(":WAV:FIN ") for m in sent)
    assert capture.sims["pump0"].snapshot()["emission"] is False


def test_stop_hands_the_actuator_back_and_leaves_the_bench_safe():
    """Ctrl-C (the stop event) before the step: AutotuneStopped; the TEC went back to its own
    PID (T mode) and was then closed safe (output off)."""
    stop = threading.Event()
    capture = Capture(lambda bench, sims: stop.set())
    with pytest.raises(AutotuneStopped, match="stopped by the operator"):
        autotune(load_bench(BENCH), "ring-temperature", capture, stop=stop)
    tec = capture.sims["tec1"]
    sent = [m.decode().strip().upper() for m in tec.received]
    assert "TEC:MODE:ITE" in sent and sent[sent.index("TEC:MODE:ITE") :].count("TEC:MODE:T") == 1
    assert tec.mode == "T" and tec.output is False


def test_unknown_loop_and_bad_options_are_clear_errors():
    config = load_bench(BENCH)
    with pytest.raises(AutotuneError, match=r"no loop named 'nope'.*ring-temperature"):
        run_autotune(config, "nope")
    with pytest.raises(AutotuneError, match="--duration"):
        run_autotune(config, "ring-temperature", duration_s=-1.0)
    with pytest.raises(AutotuneError, match="--model"):
        run_autotune(config, "ring-temperature", model="pid")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ CLI
def cli(argv: list[str]) -> int:
    """``labctl autotune ...`` through the top-level parser once it registers the command,
    else through a parser built with ``autotune_job.add_parser``."""
    from labctl import cli as top

    parser = top.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "autotune" in commands.choices:
        return top.main(argv)
    parser = argparse.ArgumentParser(prog="labctl")
    autotune_job.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_json_reports_models_gains_and_the_record(tmp_path, capsys):
    path = bench_variant(
        tmp_path, 'name = "entanglement-sim"', 'name = "entanglement-sim"\nclock = "manual"'
    )
    code = cli(["autotune", str(path), "--loop", "ring-temperature", "--model", "both", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["loop"] == "ring-temperature" and data["units"] == {
        "measurement": "degC",
        "output": "A",
    }
    assert data["step"] == pytest.approx(autotune_job.KIND_DEFAULTS["temperature"].step)
    ring = autotune_job.find_loop(load_bench(BENCH), "ring-temperature")
    assert data["configured"] == {
        "kp": ring.gains.kp,
        "ki": ring.gains.ki,
        "kd": ring.gains.kd,
        "derivative_filter_s": ring.settings.derivative_filter_s,
    }
    t = np.array(data["response"]["t_s"])
    assert t.size == len(data["response"]["y"]) and t[-1] == pytest.approx(data["duration_s"])
    # the proposed gains are SIMC's for the reported model and the loop's period
    fopdt = data["models"]["fopdt"]["model"]
    # ... with the PID's forward-difference integrator as one more period of dead time
    period = data["period_s"]
    model = Fopdt(fopdt["gain"], fopdt["time_constant_s"], fopdt["dead_time_s"] + period, 0.0)
    expected = simc_gains(model, sample_period_s=period)
    proposed = data["models"]["fopdt"]["proposed"]
    assert (proposed["kp"], proposed["ki"], proposed["kd"]) == pytest.approx(
        (expected.kp, expected.ki, expected.kd)
    )
    sopdt = data["models"]["sopdt"]
    assert sopdt["proposed"]["derivative_filter_s"] == pytest.approx(
        0.1 * sopdt["model"]["time_constant2_s"]
    )
    assert data["recommended"] in ("fopdt", "sopdt")
    assert "handed over" in err


def test_cli_table_and_errors(tmp_path, capsys):
    path = bench_variant(
        tmp_path, 'name = "entanglement-sim"', 'name = "entanglement-sim"\nclock = "manual"'
    )
    assert cli(["autotune", str(path), "--loop", "alice-phase"]) == 0
    out, _ = capsys.readouterr()
    assert "gain (rad/V)" in out and "kp (V/rad)" in out and "bench file" in out
    assert "SIMC PI (FOPDT) *" in out
    assert cli(["autotune", str(path), "--loop", "alice-phase", "--step", "5"]) == 1
    _, err = capsys.readouterr()
    assert "error" in err and "--step 5 V" in err and "alice-phase" in err
