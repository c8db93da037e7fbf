"""The shipped entanglement bench's loops and interlocks, end to end on its simulators.

Everything goes through the real drivers over the simulators' sockets and ptys; the bench runs
on a manual clock (waiting advances virtual time), so minutes of loop time take seconds.
Truth comes from the simulators: the chip temperature, the laser's optical frequency, the
interferometer's phase.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from drivers.sim.clock import VirtualClock
from labctl.config import CONFIG_DIR, load_bench
from labctl.loop_config import SPEED_OF_LIGHT_M_S
from labctl.loops_job import LoopsStatus, run_loops

BENCH = CONFIG_DIR / "entanglement_sim.toml"


class Probe:
    """Sink that samples the simulators' truth at every status, and runs actions at times."""

    def __init__(self, actions: dict[float, Any] | None = None) -> None:
        self.sims: dict[str, Any] = {}
        self.loops: Any = None
        self.watchdog: Any = None
        self.statuses: list[LoopsStatus] = []
        self.truth: list[dict[str, float]] = []
        self.actions = dict(actions or {})

    def hook(self, bench, loops, watchdog) -> None:
        self.sims, self.loops, self.watchdog = bench.sim_host.sims, loops, watchdog

    def __call__(self, status: LoopsStatus) -> None:
        self.statuses.append(status)
        pairs = self.sims["pump0"].bench.elements["pairs"]
        now = self.sims["tec1"].now_s()
        self.truth.append(
            {
                "t": status.time_s,
                "chip_c": self.sims["tec1"].chip_temperature_c(),
                "pump0_hz": self.sims["pump0"].optical_frequency_hz(),
                "alice_rad": pairs.user_phase_rad("alice", now),
            }
        )
        for t in [t for t in self.actions if status.time_s + 1e-9 >= t]:
            self.actions.pop(t)(self)

    def series(self, key: str, after_s: float = 0.0) -> np.ndarray:
        return np.array([row[key] for row in self.truth if row["t"] > after_s])


def run(only, duration_s, update_s=0.5, actions=None, config=None) -> Probe:
    probe = Probe(actions)
    run_loops(
        config or load_bench(BENCH),
        duration_s=duration_s,
        only=only,
        update_s=update_s,
        sinks=[probe],
        clock=VirtualClock(realtime=False),
        hook=probe.hook,
    )
    return probe


def test_ring_settles_and_holds_within_a_millikelvin_in_the_lab_air():
    """Host PID through the TEC in constant-current mode, 10 Hz on the stage thermistor, the
    typical_lab room (HVAC +-0.3 degC every 10 min): the chip, which the ring follows, stays
    within +-1 mK of the setpoint over 10 min after a minute of settling."""
    probe = run(["ring-temperature"], 660.0)
    chip = probe.series("chip_c", after_s=60.0)
    assert chip.size > 1000
    assert np.abs(chip - 25.0).max() < 1.0e-3
    status = probe.statuses[-1].loops[0].status
    assert status.state == "running" and status.missed_ticks == 0 and status.read_errors == 0
    # the room really moved: a 10 min HVAC cycle of +-0.3 degC went by
    room = probe.sims["tec1"].bench.environment
    swing = [room.ambient_c(t) for t in np.linspace(60.0, 660.0, 200)]
    assert max(swing) - min(swing) > 0.4


def test_pump_lock_holds_the_laser_and_reacquires_after_a_mode_hop():
    """The free-running pump is held on its resonance wavelength by the wavemeter PID; a mode
    hop of 3 GHz at t = 20 s is pulled back and the lock holds ~1 MHz again within 5 s."""
    target_hz = SPEED_OF_LIGHT_M_S / 1550.12e-9
    probe = run(
        ["pump0-lock"],
        45.0,
        update_s=0.1,
        actions={20.0: lambda p: p.sims["pump0"].mode_hop(3.0e9)},
    )
    t = probe.series("t")
    # the lock holds the wavemeter's reading on target; the laser is then off by the
    # wavemeter's own calibration error (5 MHz, inside the 871A's +-0.2 ppm)
    wm_error_hz = probe.sims["wm0"].accuracy_offset_hz
    offset_mhz = (probe.series("pump0_hz") + wm_error_hz - target_hz) / 1e6
    hop = (t > 20.0) & (t < 20.5)
    assert np.abs(offset_mhz[hop]).max() > 1000.0  # the hop was seen by the laser
    locked = ((t > 5.0) & (t < 20.0)) | (t > 25.0)
    assert np.sqrt(np.mean(offset_mhz[locked] ** 2)) < 1.5
    assert np.abs(offset_mhz[locked]).max() < 4.0
    assert probe.statuses[-1].loops[0].status.state == "running"


def test_phase_lock_holds_the_interferometer_at_its_setpoints():
    """alice's interferometer, read in quadrature on scope1 and driven by awg1:1, is held at
    0 rad and then at 2.5 rad (a setpoint step at t = 20 s)."""
    probe = run(
        ["alice-phase"],
        40.0,
        update_s=0.2,
        actions={20.0: lambda p: p.loops.runner.set_setpoint("alice-phase", 2.5)},
    )
    t, phase = probe.series("t"), probe.series("alice_rad")

    def error(target: float, mask: np.ndarray) -> np.ndarray:
        return np.angle(np.exp(1j * (phase[mask] - target)))

    assert np.abs(error(0.0, (t > 8.0) & (t <= 20.0))).max() < 0.05
    assert np.abs(error(2.5, t > 28.0)).max() < 0.05


def test_interlock_turns_the_pumps_off_and_pauses_their_locks_when_the_tec_faults():
    """An open thermistor at t = 5 s: the TEC reports the fault, the watchdog switches both
    pumps off, logs why, and the pump locks stop writing (faulted by the interlock)."""
    probe = run(
        ["ring-temperature", "pump0-lock", "pump10-lock"],
        10.0,
        actions={5.0: lambda p: p.sims["tec1"].set_sensor_open(True)},
    )
    for pump in ("pump0", "pump10"):
        assert probe.sims[pump].snapshot()["emission"] is False
    trips = [e for e in probe.watchdog.log if e.event == "trip"]
    # the fault trips at once; with the TEC off the ring then also drifts off its setpoint
    assert trips[0].rule == "pumps-off-on-tec-fault"
    assert "tec1" in trips[0].reason and "SENSOR_OPEN" in trips[0].reason
    assert {e.rule for e in trips} <= {"pumps-off-on-tec-fault", "pumps-off-on-ring-temperature"}
    assert all("tec1" in e.reason for e in trips)
    final = {r.name: r.status for r in probe.statuses[-1].loops}
    for lock in ("pump0-lock", "pump10-lock"):
        assert final[lock].state == "fault"
        assert "interlock" in (final[lock].fault_reason or "")


def test_loops_command_runs_and_reports_json():
    """`labctl loops` on the shipped bench in real time, one loop, JSON at the end."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "labctl",
            "loops",
            str(BENCH),
            "--loop",
            "ring-temperature",
            "--duration",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    loop = out["loops"]["ring-temperature"]
    assert loop["kind"] == "temperature" and loop["state"] == "running"
    assert loop["ticks"] >= 10 and math.isfinite(loop["measurement"])
    assert set(out["interlocks"]) == {r.name for r in load_bench(BENCH).interlocks}


def test_unknown_loop_is_a_clear_error():
    proc = subprocess.run(
        [sys.executable, "-m", "labctl", "loops", str(BENCH), "--loop", "nope", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "no loop named nope" in proc.stderr and "ring-temperature" in proc.stderr


@pytest.mark.parametrize(
    ("change", "key", "fragment"),
    [
        ({"kind": "speed"}, "loops[0].kind", "expected one of temperature"),
        ({"tec": "pump0"}, "loops[0].tec", "is a laser, expected a tec"),
        ({"output_max": 3.0}, "loops[0].output_max", "outside the actuator's range"),
        ({"setpoint": 80.0}, "loops[0].setpoint", "outside"),
        ({"kp": 1.0, "ki": -1.0}, "loops[0].kp", "mix signs"),
        ({"rate_hz": 0.0}, "loops[0].rate_hz", "a number > 0"),
        ({"colour": "red"}, "loops[0].colour", "unknown key"),
    ],
)
def test_bad_loop_tables_name_the_key(change, key, fragment):
    import tomllib

    from labctl.config import ConfigError, parse_bench

    data = tomllib.loads(BENCH.read_text())
    data["loops"][0].update(change)
    with pytest.raises(ConfigError) as info:
        parse_bench(data, BENCH)
    assert info.value.key == key and fragment in str(info.value), str(info.value)
