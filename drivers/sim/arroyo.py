"""Simulated Arroyo TECSource 5305 temperature controller on a serial line.

Served on a pseudo-terminal (``ASRL/dev/pts/N::INSTR``). Input commands may
end in CR, LF or CR LF; replies end in CR LF. ``TERMINAL 1`` switches terminal
echo on: each received command line is then sent back, CR LF terminated,
before its replies. The power-on default is off, or on with the ``echo``
option. Commands (case-insensitive, lowercase letters optional):

``TEC:T <degC>`` / ``TEC:T?`` (measured) / ``TEC:SET:T?``, ``TEC:OUTput 0|1|ON|OFF``,
``TEC:LIMit:ITE <A>``, ``TEC:LIMit:THI|TLO <degC>``, ``TEC:PID p,i,d``,
``TEC:TOLerance tol,time``, ``TEC:ITE <A>`` (current setpoint in ITE mode) / ``TEC:ITE?``
(measured) / ``TEC:SET:ITE?``, ``TEC:V?``, ``TEC:COND?``,
``TEC:MODE:T`` / ``TEC:MODE:ITE`` / ``TEC:MODE?`` (temperature and constant-current modes;
R mode is not simulated),
``TEC:GAIN PID`` / ``TEC:GAIN?`` (only the PID loop is simulated),
``ERRSTR?`` (``0`` or ``code,text[,code,text...]``, drains the queue),
``ERR?`` (codes only), ``TERMINAL 0|1``, ``*IDN?``, ``*RST``, ``*CLS``.
Error codes are the SCPI engine's (-222 data out of range, -113 undefined
header, ...); the real instrument's codes are not public.

Physics: a two-node thermal plant
---------------------------------
The TEC pumps heat into a stage (copper plate, thermal mass C_s) that carries the
thermistor; the microring chip (C_c) sits on the stage, coupled to it through the die attach
(R_cs), and both leak to the room (R_sa, R_ca). The Peltier element is linearised (Joule
heating and the dependence of the pumped heat on the temperature difference are ignored)::

    C_s dT_s/dt = -(T_s - T_amb) / R_sa - (T_s - T_c) / R_cs + k_tec * I
    C_c dT_c/dt = -(T_c - T_s) / R_cs - (T_c - T_amb) / R_ca

Stage: C_s = 2 J/K, R_sa = 5 K/W (R_sa C_s = 10 s) and k_tec = 1 W/A (positive current
heats), so each amp holds the stage about 5 degC from ambient. Chip (options in brackets):
C_c = 0.1 J/K (``chip_capacity_j_per_k``: a 5 x 5 mm silicon die, 0.04 J/K, on a copper
carrier of ~0.15 g), R_cs = 20 K/W (``chip_stage_resistance_k_per_w``: epoxy die attach and
the carrier-to-stage contact), so the chip follows the stage with tau ~ R_cs C_c = 2 s;
R_ca = 20000 K/W (``chip_ambient_resistance_k_per_w``: radiation and still air from the
exposed die inside a lidded package, 50 uW/K). The plant's two time constants are then
10.6 s and 1.9 s. In equilibrium the chip sits a fraction R_cs / (R_cs + R_ca) ~ 1e-3 of the
way from the stage to the room (:meth:`SimArroyo5300.chip_equilibrium_c`): 3 mK below a stage
held 3 degC above the room, and a room that swings by 0.3 degC moves a perfectly held chip by
0.3 mK. The thermistor reads the STAGE; the ring resonance follows the CHIP
(:meth:`SimArroyo5300.chip_temperature_c`, read by :mod:`drivers.sim.pairsource`), which is
why holding the thermistor is not quite holding the ring. T_amb is the bench's environment
(:mod:`drivers.sim.environment`) at the start of each step, so a test may warm the room or let
the HVAC cycle.

Discretisation: the state x = (T_s, T_c) moves in steps of ``DT_S`` = 10 ms with the inputs
u = (I, T_amb) held over each step (zero-order hold). The step is exact for the held inputs::

    x[k+1] = Ad x[k] + Bd u[k],    [[Ad, Bd], [0, 1]] = expm([[A, B], [0, 0]] * DT_S)

(Van Loan's block matrix exponential, ``scipy.linalg.expm``, computed once per parameter set
in :class:`TwoNodeThermalPlant`). Where the current does not depend on the state (output off,
constant-current mode) the steps are applied to whole arrays at once through the plant's two
modes (``scipy.signal.lfilter`` on each eigencoordinate of Ad); a quiet room over a stretch
with the output off is bridged in closed form.

The thermistor reading, taken at the start of every step, is T_s plus Gaussian noise
(``sensor_noise_c``, 0.3 mK RMS, from a generator seeded from the bench's rng; no public
figure for the 5305's measurement noise was found, so the previous value is kept). ``TEC:T?``
returns the latest reading with 0.1 mK resolution.

Temperature mode (``TEC:MODE:T``, the power-on mode): the controller runs a discrete PID in
standard form on the reading, once per step::

    e   = T_set - T_meas
    u   = P * (e + I * integral(e dt) - D * dT_meas/dt)
    I_tec = clamp(u, -I_lim, +I_lim)

Here P is in A/degC, I in 1/s and D in s. The derivative acts on the measurement, not on the
error, so a setpoint step does not kick it. It goes through a first-order filter of 0.1 s. The
integral stops growing while the output is clamped and e would push it further into the clamp
(conditional-integration anti-windup). The power-on gains (P 2.0 A/degC, I 0.3 1/s, D 0.5 s)
take the stage from 22 to 30 degC (clamped at the 2 A default limit for the first 12 s) to
within 0.05 degC of the setpoint in about 20 s, with 0.02 degC overshoot; P 1.0, I 0.1
(I = 1 / (R_sa C_s)) needs about 45 s. In the "typical_lab" room the power-on gains leave the
chip up to ~1.6 mK off its equilibrium (tests/test_sim_environment.py): holding it within
1 mK takes a tuned loop.

Constant-current mode (``TEC:MODE:ITE``, for host-side loops): the controller's PID is
bypassed and the current setpoint ``TEC:ITE <A>`` (-5..5 A, read back with ``TEC:SET:ITE?``),
clamped to +-``TEC:LIM:ITE``, drives the plant; ``TEC:ITE?`` reads the current actually
driven. A new setpoint takes effect from the start of the 10 ms step in progress. The
temperature limits still trip the output. Changing the mode (``TEC:MODE:T`` <-> ``ITE``)
switches the output off; selecting the mode already in force changes nothing. The Arroyo
manual's wording on a mode change with the output on was not found in public sources: this is
the conservative choice (no current the operator did not ask for in the new mode), and it is
why a driver that connects (and selects T mode) does not disturb a TEC left regulating in T
mode. ``TEC:MODE?`` replies ``T`` or ``ITE``.

Integration is lazy: every received message first brings the state up to the bench clock's
``now`` in whole 10 ms steps.

Condition register (``TEC:COND?``), computed from the state:

* bit 0, current limit: the last control step was clamped at ``I_lim``;
* bits 3/4, temperature high/low limit: the reading is beyond
  ``TEC:LIM:THI`` / ``TLO``. Crossing a limit switches the output off (in either mode);
* bit 6, sensor open: set by :meth:`SimArroyo5300.set_sensor_open` (the
  fault hook for interlock tests). It forces the output off and refuses
  ``TEC:OUT 1``. ``TEC:T?`` keeps reporting the stage temperature; a real
  open thermistor would read a rail value;
* bit 9, out of tolerance: in T mode *not* (output on and the reading has stayed
  within +-tol of the setpoint for the tolerance time), from ``TEC:TOL``; in ITE mode *not*
  (output on and the current set is the current driven, i.e. not clamped);
* bit 10, output on.

Bits 1, 2, 5, 7 and 12 (voltage limit, sensor limit, shorted sensor, open TEC,
thermal run-away) are never set. Other simulators read the stage temperature through
:meth:`SimArroyo5300.temperature_c` and the chip's through
:meth:`SimArroyo5300.chip_temperature_c`.

Simulator options: ``initial_temperature_c`` (default: the bench's ambient; stage and chip
start there) and ``initial_output`` (default False: the controller starts off). With
``initial_output`` the controller already regulates at the initial temperature when the bench
starts (T mode, setpoint there, chip at its equilibrium, integral preloaded with the
steady-state current), as a TEC left running overnight. Plant options:
``thermal_capacity_j_per_k`` (C_s), ``thermal_resistance_k_per_w`` (R_sa),
``peltier_w_per_a``, the three chip options above and ``sensor_noise_c``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.linalg import expm
from scipy.signal import lfilter

from drivers.sim.base import SimInstrument
from drivers.sim.scpi import (
    DATA_OUT_OF_RANGE,
    MISSING_PARAMETER,
    PARAMETER_NOT_ALLOWED,
    SETTINGS_CONFLICT,
    Arg,
    Reply,
    check_range,
    error,
    parse_bool_arg,
    parse_number,
)

if TYPE_CHECKING:
    from drivers.sim.bench import BenchModel

# Plant and controller constants (see the module docstring).
THERMAL_CAPACITY_J_PER_K = 2.0
THERMAL_RESISTANCE_K_PER_W = 5.0
PELTIER_W_PER_A = 1.0
CHIP_CAPACITY_J_PER_K = 0.1
CHIP_STAGE_RESISTANCE_K_PER_W = 20.0
CHIP_AMBIENT_RESISTANCE_K_PER_W = 20_000.0
TEC_RESISTANCE_OHM = 1.5
SENSOR_NOISE_C = 0.0003
DT_S = 0.01
DERIVATIVE_FILTER_S = 0.1
#: steps per array when a long stretch is integrated in one go (bounds the memory used)
_BATCH_STEPS = 1 << 18
#: up to this many steps a trajectory is stepped directly rather than through lfilter
_DIRECT_STEPS = 64

CURRENT_LIMIT_RANGE_A = (0.0, 5.0)
CURRENT_SETPOINT_RANGE_A = (-5.0, 5.0)
TEMPERATURE_RANGE_C = (-99.0, 250.0)
GAIN_RANGE = (0.0, 10.0)
TOLERANCE_RANGE_C = (0.01, 10.0)
TOLERANCE_TIME_RANGE_S = (0.1, 50.0)
MODES = ("T", "ITE")

# TEC:COND? bits
COND_CURRENT_LIMIT = 1 << 0
COND_T_HIGH = 1 << 3
COND_T_LOW = 1 << 4
COND_SENSOR_OPEN = 1 << 6
COND_OUT_OF_TOLERANCE = 1 << 9
COND_OUTPUT_ON = 1 << 10


def _one_arg(args: list[Arg]) -> Arg:
    if len(args) != 1:
        raise error(MISSING_PARAMETER if not args else PARAMETER_NOT_ALLOWED)
    return args[0]


class TwoNodeThermalPlant:
    """Stage + chip, linear, with its exact 10 ms step (see the module docstring).

    State ``x = (T_s, T_c)`` in degC, input ``u = (I, T_amb)`` in A and degC.
    """

    def __init__(
        self,
        *,
        stage_capacity_j_per_k: float = THERMAL_CAPACITY_J_PER_K,
        stage_ambient_k_per_w: float = THERMAL_RESISTANCE_K_PER_W,
        peltier_w_per_a: float = PELTIER_W_PER_A,
        chip_capacity_j_per_k: float = CHIP_CAPACITY_J_PER_K,
        chip_stage_k_per_w: float = CHIP_STAGE_RESISTANCE_K_PER_W,
        chip_ambient_k_per_w: float = CHIP_AMBIENT_RESISTANCE_K_PER_W,
        dt_s: float = DT_S,
    ) -> None:
        values = {
            "thermal_capacity_j_per_k": stage_capacity_j_per_k,
            "thermal_resistance_k_per_w": stage_ambient_k_per_w,
            "chip_capacity_j_per_k": chip_capacity_j_per_k,
            "chip_stage_resistance_k_per_w": chip_stage_k_per_w,
            "chip_ambient_resistance_k_per_w": chip_ambient_k_per_w,
            "dt_s": dt_s,
        }
        for key, value in values.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"thermal plant {key}: got {value!r}, expected a number > 0")
        if not math.isfinite(peltier_w_per_a):
            raise ValueError(f"thermal plant peltier_w_per_a: got {peltier_w_per_a!r}")
        cs, rsa, k = stage_capacity_j_per_k, stage_ambient_k_per_w, peltier_w_per_a
        cc, rcs, rca = chip_capacity_j_per_k, chip_stage_k_per_w, chip_ambient_k_per_w
        self.stage_ambient_k_per_w, self.peltier_w_per_a = rsa, k
        self.chip_stage_k_per_w, self.chip_ambient_k_per_w = rcs, rca
        self.dt_s = dt_s
        #: continuous-time dx/dt = A x + B u
        self.a = np.array(
            [
                [-(1 / rsa + 1 / rcs) / cs, 1 / (rcs * cs)],
                [1 / (rcs * cc), -(1 / rcs + 1 / rca) / cc],
            ]
        )
        self.b = np.array([[k / cs, 1 / (rsa * cs)], [0.0, 1 / (rca * cc)]])
        # Van Loan: expm([[A, B], [0, 0]] dt) = [[Ad, Bd], [0, 1]] (inputs held over the step)
        block = np.zeros((4, 4))
        block[:2, :2], block[:2, 2:] = self.a, self.b
        step = expm(block * dt_s)
        self.ad, self.bd = step[:2, :2], step[:2, 2:]
        # eigencoordinates: A (and so Ad) is similar to a symmetric matrix, real eigenvalues
        mu, v = np.linalg.eig(self.a)
        if np.max(np.abs(np.imag(mu))) > 0:
            raise ValueError("thermal plant: complex modes (not an RC network)")
        self._mu = np.real(mu)
        self._v = np.real(v)
        self._v_inv = np.linalg.inv(self._v)
        self._lam = np.exp(self._mu * dt_s)  #: eigenvalues of Ad

    @property
    def time_constants_s(self) -> tuple[float, float]:
        """The two modes' time constants (slow, fast) in seconds."""
        slow, fast = sorted(-1.0 / self._mu, reverse=True)
        return float(slow), float(fast)

    def equilibrium(self, stage_c: float, ambient_c: float) -> tuple[float, float]:
        """(chip degC, TEC current A) that hold the stage at ``stage_c`` in a steady room."""
        rsa, rcs, rca = (
            self.stage_ambient_k_per_w,
            self.chip_stage_k_per_w,
            self.chip_ambient_k_per_w,
        )
        chip_c = (stage_c * rca + ambient_c * rcs) / (rcs + rca)
        heat_w = (stage_c - ambient_c) * (1.0 / rsa + 1.0 / (rcs + rca))
        return chip_c, heat_w / self.peltier_w_per_a

    def trajectory(
        self, x0: tuple[float, float], current_a: float, ambient_c: np.ndarray
    ) -> np.ndarray:
        """States x[0..n] (float64, shape (n + 1, 2)) for a constant current and the ambient
        of each step: n steps of Ad, Bd. Long runs go through the plant's two modes as one
        first-order recursion each (``lfilter``); short ones step directly (less overhead)."""
        n = ambient_c.size
        if n <= _DIRECT_STEPS:
            (a00, a01), (a10, a11) = self.ad.tolist()
            (b00, b01), (b10, b11) = self.bd.tolist()
            drive_s, drive_c = b00 * current_a, b10 * current_a
            states = [x0]
            stage, chip = x0
            for room in ambient_c.tolist():
                stage, chip = (
                    a00 * stage + a01 * chip + drive_s + b01 * room,
                    a10 * stage + a11 * chip + drive_c + b11 * room,
                )
                states.append((stage, chip))
            return np.array(states, dtype=np.float64)
        u = np.empty((2, n))
        u[0] = current_a
        u[1] = ambient_c
        drive = self._v_inv @ (self.bd @ u)  # per-mode input of each step
        z0 = self._v_inv @ np.asarray(x0, dtype=np.float64)
        z = np.empty((2, n + 1))
        z[:, 0] = z0
        for m in range(2):  # z[k+1] = lam z[k] + drive[k]
            lam = self._lam[m]
            z[m, 1:], _ = lfilter([1.0], [1.0, -lam], drive[m], zi=[lam * z0[m]])
        return (self._v @ z).T

    def relax(self, x0: tuple[float, float], ambient_c: float, duration_s: float) -> np.ndarray:
        """State after ``duration_s`` with no current in a constant room (closed form)."""
        eq = np.array([ambient_c, ambient_c])
        z = self._v_inv @ (np.asarray(x0, dtype=np.float64) - eq)
        return eq + self._v @ (np.exp(self._mu * duration_s) * z)


class SimArroyo5300(SimInstrument):
    instrument_class = "tec"
    model = "arroyo_5300"
    transport = "pty"
    terminator = (b"\r", b"\n")
    reply_terminator = b"\r\n"
    identity = "Arroyo 5305 TECSource 530512345 2.10"

    def __init__(
        self, name: str, bench: BenchModel, options: Mapping[str, Any] | None = None
    ) -> None:
        opts = dict(options or {})
        self.plant = TwoNodeThermalPlant(
            stage_capacity_j_per_k=float(
                opts.get("thermal_capacity_j_per_k", THERMAL_CAPACITY_J_PER_K)
            ),
            stage_ambient_k_per_w=float(
                opts.get("thermal_resistance_k_per_w", THERMAL_RESISTANCE_K_PER_W)
            ),
            peltier_w_per_a=float(opts.get("peltier_w_per_a", PELTIER_W_PER_A)),
            chip_capacity_j_per_k=float(opts.get("chip_capacity_j_per_k", CHIP_CAPACITY_J_PER_K)),
            chip_stage_k_per_w=float(
                opts.get("chip_stage_resistance_k_per_w", CHIP_STAGE_RESISTANCE_K_PER_W)
            ),
            chip_ambient_k_per_w=float(
                opts.get("chip_ambient_resistance_k_per_w", CHIP_AMBIENT_RESISTANCE_K_PER_W)
            ),
        )
        self.sensor_noise_c = float(opts.get("sensor_noise_c", SENSOR_NOISE_C))
        #: the stage's own time constant R_sa C_s (the chip adds a slower mode, see the plant)
        self.tau_s = self.plant.stage_ambient_k_per_w * float(
            opts.get("thermal_capacity_j_per_k", THERMAL_CAPACITY_J_PER_K)
        )
        self.rng = bench.rng.spawn(1)[0]
        # plant and controller state: physics, not settings, so *RST keeps it
        self._temp_c = float(opts.get("initial_temperature_c", bench.ambient_c))
        self._chip_c = self._temp_c
        self._sim_time_s = bench.clock.now_s()
        self._current_a = 0.0
        self._integral = 0.0
        self._deriv = 0.0
        self._last_meas: float | None = None
        self._last_meas_c = self._temp_c
        self._clamped = False
        self._tol_since: float | None = None
        self.sensor_open = False
        self.echo = bool(opts.get("echo", False))
        super().__init__(name, bench, opts)
        if opts.get("initial_output", False):
            self._hold_initial_temperature()

    def _hold_initial_temperature(self) -> None:
        """Start regulating at the initial temperature as if settled long ago: output on,
        setpoint there, chip at equilibrium, integral preloaded with the steady-state current
        (option ``initial_output``: a TEC left running before the simulated bench starts)."""
        self.setpoint_c = self._temp_c
        self.output = True
        self._chip_c, current = self.plant.equilibrium(self._temp_c, self.bench.ambient_c)
        p, i_gain, _ = self.pid
        self._integral = current / (p * i_gain)
        self._current_a = current

    # -- state ---------------------------------------------------------------
    def reset(self) -> None:
        self.setpoint_c = 25.0
        self.output = False
        self.mode = "T"
        self.current_setpoint_a = 0.0
        self.current_limit_a = 2.0
        self.pid = (2.0, 0.3, 0.5)
        self.t_high_c = 100.0
        self.t_low_c = -10.0
        self.tolerance_c = 0.1
        self.tolerance_time_s = 2.0
        self._controller_off()

    def _controller_off(self) -> None:
        self.output = False
        self._current_a = 0.0
        self._integral = 0.0
        self._deriv = 0.0
        self._last_meas = None
        self._clamped = False
        self._tol_since = None

    def register(self) -> None:
        e = self.engine
        e.add("TEC:T", on_set=self._set_setpoint, on_query=lambda a, s: self._fmt_t())
        e.add("TEC:SET:T", on_query=lambda a, s: f"{self.setpoint_c:.4f}")
        e.add("TEC:OUTput", on_set=self._set_output, on_query=lambda a, s: str(int(self.output)))
        e.add(
            "TEC:LIMit:ITE",
            on_set=self._set_current_limit,
            on_query=lambda a, s: f"{self.current_limit_a:.3f}",
        )
        e.add(
            "TEC:LIMit:THI",
            on_set=lambda a, s: self._set_t_limit(a, high=True),
            on_query=lambda a, s: f"{self.t_high_c:.3f}",
        )
        e.add(
            "TEC:LIMit:TLO",
            on_set=lambda a, s: self._set_t_limit(a, high=False),
            on_query=lambda a, s: f"{self.t_low_c:.3f}",
        )
        e.add(
            "TEC:PID",
            on_set=self._set_pid,
            on_query=lambda a, s: ",".join(f"{g:.4f}" for g in self.pid),
        )
        e.add(
            "TEC:TOLerance",
            on_set=self._set_tolerance,
            on_query=lambda a, s: f"{self.tolerance_c:.3f},{self.tolerance_time_s:.3f}",
        )
        e.add(
            "TEC:ITE",
            on_set=self._set_current_setpoint,
            on_query=lambda a, s: f"{self._current_a:.4f}",
        )
        e.add("TEC:SET:ITE", on_query=lambda a, s: f"{self.current_setpoint_a:.4f}")
        e.add("TEC:V", on_query=lambda a, s: f"{self._current_a * TEC_RESISTANCE_OHM:.4f}")
        e.add("TEC:COND", on_query=lambda a, s: str(self.condition()))
        e.add("TEC:MODE:T", on_set=lambda a, s: self._set_mode(a, "T"))
        e.add("TEC:MODE:ITE", on_set=lambda a, s: self._set_mode(a, "ITE"))
        e.add("TEC:MODE", on_query=lambda a, s: self.mode)
        e.add("TEC:GAIN", on_set=self._set_gain, on_query=lambda a, s: "PID")
        e.add("ERRSTR", on_query=lambda a, s: self._errstr())
        e.add("ERR", on_query=lambda a, s: self._err_codes())
        e.add(
            "TERMINAL",
            on_set=lambda a, s: setattr(self, "echo", parse_bool_arg(_one_arg(a))),
            on_query=lambda a, s: str(int(self.echo)),
        )

    def process(self, message: bytes) -> list[Reply]:
        with self.lock:
            self._advance()
            echo = self.echo  # the echo state when the line arrived
        replies = super().process(message)
        if echo:
            return [message.decode("latin-1"), *replies]
        return replies

    # -- handlers --------------------------------------------------------------
    def _fmt_t(self) -> str:
        return f"{self._last_meas_c:.4f}"

    def _set_setpoint(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        value = parse_number(_one_arg(args))
        self.setpoint_c = check_range(value, self.t_low_c, self.t_high_c, "temperature setpoint")

    def _set_output(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        on = parse_bool_arg(_one_arg(args))
        if on and self.sensor_open:
            raise error(SETTINGS_CONFLICT, "sensor open: output cannot be switched on")
        if on and not self.output:
            self._controller_off()
            self.output = True
            self._apply_constant_current()
        elif not on:
            self._controller_off()

    def _set_mode(self, args: list[Arg], mode: str) -> None:
        if args:
            raise error(PARAMETER_NOT_ALLOWED, f"TEC:MODE:{mode} takes no parameter")
        if mode != self.mode:
            self._controller_off()  # a mode change switches the output off (module docstring)
            self.mode = mode

    def _set_current_setpoint(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        value = parse_number(_one_arg(args))
        self.current_setpoint_a = check_range(value, *CURRENT_SETPOINT_RANGE_A, "TEC current")
        self._apply_constant_current()

    def _apply_constant_current(self) -> None:
        """In ITE mode with the output on: drive the (clamped) setpoint from now on."""
        if self.output and self.mode == "ITE":
            limit = self.current_limit_a
            self._current_a = min(max(self.current_setpoint_a, -limit), limit)
            self._clamped = abs(self.current_setpoint_a) > limit

    def _set_current_limit(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        value = parse_number(_one_arg(args))
        self.current_limit_a = check_range(value, *CURRENT_LIMIT_RANGE_A, "current limit")
        self._apply_constant_current()

    def _set_t_limit(self, args: list[Arg], *, high: bool) -> None:
        value = check_range(parse_number(_one_arg(args)), *TEMPERATURE_RANGE_C, "limit")
        low, hi = (self.t_low_c, value) if high else (value, self.t_high_c)
        if not low < hi:
            raise error(SETTINGS_CONFLICT, f"low limit {low:g} must be below high limit {hi:g}")
        self.t_low_c, self.t_high_c = low, hi

    def _set_pid(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        if len(args) != 3:
            raise error(MISSING_PARAMETER, "TEC:PID needs P,I,D")
        gains = tuple(
            check_range(parse_number(a), *GAIN_RANGE, name)
            for a, name in zip(args, "PID", strict=True)
        )
        self.pid = (gains[0], gains[1], gains[2])

    def _set_tolerance(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        if len(args) != 2:
            raise error(MISSING_PARAMETER, "TEC:TOL needs tolerance,time")
        self.tolerance_c = check_range(parse_number(args[0]), *TOLERANCE_RANGE_C, "tolerance")
        self.tolerance_time_s = check_range(
            parse_number(args[1]), *TOLERANCE_TIME_RANGE_S, "tolerance time"
        )
        self._tol_since = None

    def _set_gain(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        token = _one_arg(args)
        if not isinstance(token, str) or token.strip().upper() != "PID":
            raise error(DATA_OUT_OF_RANGE, "only the PID gain setting is simulated")

    def _errstr(self) -> str:
        errors = []
        while self.engine.errors:
            code_text, _, text = self.engine.pop_error().partition(",")
            errors.append(f"{int(code_text)},{text.strip(chr(34))}")
        return ",".join(errors) if errors else "0"

    def _err_codes(self) -> str:
        codes = []
        while self.engine.errors:
            codes.append(str(int(self.engine.pop_error().partition(",")[0])))
        return ",".join(codes) if codes else "0"

    # -- physics -----------------------------------------------------------------
    def _advance(self) -> None:
        """Integrate plant and controller up to the bench clock's now (call under lock)."""
        n_steps = int((self.now_s() - self._sim_time_s) / DT_S + 1e-9)
        if n_steps <= 0:
            return
        if not self.output:
            self._advance_passive(n_steps)
        elif self.mode == "ITE":
            self._advance_constant_current(n_steps)
        else:
            self._advance_pid(n_steps)

    def _ambient_c(self, t0_s: float, n_steps: int) -> np.ndarray:
        """The room at the start of each of ``n_steps`` steps from ``t0_s``."""
        t_s = t0_s + DT_S * np.arange(n_steps, dtype=np.float64)
        return self.bench.environment.ambient_c(t_s)

    def _advance_passive(self, n_steps: int) -> None:
        """Output off: the plant relaxes towards the room (no current)."""
        t0 = self._sim_time_s
        x = np.array([self._temp_c, self._chip_c])
        constant = self.bench.environment.constant_between(t0, t0 + n_steps * DT_S)
        if constant is not None:  # a quiet room: closed form over the whole gap
            x = self.plant.relax((x[0], x[1]), constant, n_steps * DT_S)
        else:
            for first in range(0, n_steps, _BATCH_STEPS):
                n = min(_BATCH_STEPS, n_steps - first)
                room = self._ambient_c(t0 + first * DT_S, n)
                x = self.plant.trajectory((x[0], x[1]), 0.0, room)[-1]
        self._temp_c, self._chip_c = float(x[0]), float(x[1])
        self._sim_time_s = t0 + n_steps * DT_S
        self._last_meas_c = self._temp_c + self.sensor_noise_c * self.rng.normal()

    def _advance_constant_current(self, n_steps: int) -> None:
        """ITE mode: the set current (clamped) drives the plant; the T limits still trip."""
        t0 = self._sim_time_s
        x = (self._temp_c, self._chip_c)
        current = self._current_a
        for first in range(0, n_steps, _BATCH_STEPS):
            n = min(_BATCH_STEPS, n_steps - first)
            t_first = t0 + first * DT_S
            states = self.plant.trajectory(x, current, self._ambient_c(t_first, n))
            meas = states[:-1, 0] + self.sensor_noise_c * self.rng.normal(size=n)
            beyond = (meas > self.t_high_c) | (meas < self.t_low_c)
            if beyond.any():  # the instrument trips its output; the rest of the gap is passive
                k = int(np.argmax(beyond))
                self._temp_c, self._chip_c = float(states[k, 0]), float(states[k, 1])
                self._sim_time_s, self._last_meas_c = t_first + k * DT_S, float(meas[k])
                self._controller_off()
                self._advance()
                return
            x = (float(states[-1, 0]), float(states[-1, 1]))
            self._last_meas_c = float(meas[-1])
        self._temp_c, self._chip_c = x
        self._sim_time_s = t0 + n_steps * DT_S

    def _advance_pid(self, n_steps: int) -> None:
        """T mode: the controller's PID on the stage reading, one update per step."""
        noise = (self.sensor_noise_c * self.rng.normal(size=n_steps)).tolist()
        t0 = self._sim_time_s
        ambient = self._ambient_c(t0, n_steps).tolist()
        (a00, a01), (a10, a11) = self.plant.ad.tolist()
        (b00, b01), (b10, b11) = self.plant.bd.tolist()
        p, i_gain, d_gain = self.pid
        alpha = DT_S / (DERIVATIVE_FILTER_S + DT_S)
        limit = self.current_limit_a
        temp, chip = self._temp_c, self._chip_c
        integral, deriv = self._integral, self._deriv
        last_meas = self._last_meas
        current = self._current_a
        for k in range(n_steps):
            t = t0 + k * DT_S
            meas = temp + noise[k]
            if meas > self.t_high_c or meas < self.t_low_c:
                # the instrument trips its output; the rest of the gap is passive
                self._temp_c, self._chip_c = temp, chip
                self._sim_time_s, self._last_meas_c = t, meas
                self._controller_off()
                self._advance()
                return
            error_c = self.setpoint_c - meas
            if last_meas is not None:
                deriv += alpha * ((meas - last_meas) / DT_S - deriv)
            last_meas = meas
            trial = integral + error_c * DT_S
            u = p * (error_c + i_gain * trial - d_gain * deriv)
            if abs(u) <= limit or (u > 0) != (error_c > 0):
                integral = trial
            u = p * (error_c + i_gain * integral - d_gain * deriv)
            current = min(max(u, -limit), limit)
            self._clamped = abs(u) > limit
            t_amb = ambient[k]
            temp, chip = (
                a00 * temp + a01 * chip + b00 * current + b01 * t_amb,
                a10 * temp + a11 * chip + b10 * current + b11 * t_amb,
            )
            if abs(meas - self.setpoint_c) <= self.tolerance_c:
                if self._tol_since is None:
                    self._tol_since = t + DT_S
            else:
                self._tol_since = None
        self._temp_c, self._chip_c = temp, chip
        self._integral, self._deriv = integral, deriv
        self._last_meas = last_meas
        self._last_meas_c = float(last_meas) if last_meas is not None else temp
        self._current_a = current
        self._sim_time_s = t0 + n_steps * DT_S

    def condition(self) -> int:
        """``TEC:COND?`` value now (call under lock, after :meth:`_advance`)."""
        meas = self._last_meas_c
        bits = 0
        if meas > self.t_high_c:
            bits |= COND_T_HIGH
        if meas < self.t_low_c:
            bits |= COND_T_LOW
        if self.sensor_open:
            bits |= COND_SENSOR_OPEN
        if self.output:
            bits |= COND_OUTPUT_ON
            if self._clamped:
                bits |= COND_CURRENT_LIMIT
        if self.mode == "ITE":
            in_tolerance = self.output and not self._clamped
        else:
            in_tolerance = (
                self.output
                and self._tol_since is not None
                and self._sim_time_s - self._tol_since >= self.tolerance_time_s - 1e-9
            )
        if not in_tolerance:
            bits |= COND_OUT_OF_TOLERANCE
        return bits

    # -- read by other simulators and tests ------------------------------------
    def temperature_c(self) -> float:
        """Stage temperature now (true value, without sensor noise): what the thermistor sees."""
        with self.lock:
            self._advance()
            return self._temp_c

    def chip_temperature_c(self) -> float:
        """Chip (microring) temperature now: what the ring resonance follows."""
        with self.lock:
            self._advance()
            return self._chip_c

    def chip_equilibrium_c(self, stage_c: float, ambient_c: float | None = None) -> float:
        """Where the chip settles when the stage is held at ``stage_c`` in a room at
        ``ambient_c`` (default: the environment's mean, without its disturbances)."""
        room_c = self.bench.environment.mean_c if ambient_c is None else ambient_c
        return self.plant.equilibrium(stage_c, room_c)[0]

    def set_sensor_open(self, is_open: bool = True) -> None:
        """Fault hook: an open thermistor forces the output off (condition bit 6)."""
        with self.lock:
            self._advance()
            self.sensor_open = is_open
            if is_open:
                self._controller_off()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            self._advance()
            return {
                "temperature_c": self._temp_c,
                "chip_temperature_c": self._chip_c,
                "setpoint_c": self.setpoint_c,
                "mode": self.mode,
                "output": self.output,
                "tec_current_a": self._current_a,
                "current_setpoint_a": self.current_setpoint_a,
                "current_limit_a": self.current_limit_a,
                "pid": self.pid,
                "condition": self.condition(),
                "sensor_open": self.sensor_open,
                "echo": self.echo,
            }
