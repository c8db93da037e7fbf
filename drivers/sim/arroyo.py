"""Simulated Arroyo TECSource 5305 temperature controller on a serial line.

Served on a pseudo-terminal (``ASRL/dev/pts/N::INSTR``). Input commands may
end in CR, LF or CR LF; replies end in CR LF. ``TERMINAL 1`` switches terminal
echo on: each received command line is then sent back, CR LF terminated,
before its replies. The power-on default is off, or on with the ``echo``
option. Commands (case-insensitive, lowercase letters optional):

``TEC:T <degC>`` / ``TEC:T?`` (measured) / ``TEC:SET:T?``, ``TEC:OUTput 0|1|ON|OFF``,
``TEC:LIMit:ITE <A>``, ``TEC:LIMit:THI|TLO <degC>``, ``TEC:PID p,i,d``,
``TEC:TOLerance tol,time``, ``TEC:ITE?``, ``TEC:V?``, ``TEC:COND?``,
``TEC:MODE:T`` / ``TEC:MODE?`` (only temperature mode is simulated),
``TEC:GAIN PID`` / ``TEC:GAIN?`` (only the PID loop is simulated),
``ERRSTR?`` (``0`` or ``code,text[,code,text...]``, drains the queue),
``ERR?`` (codes only), ``TERMINAL 0|1``, ``*IDN?``, ``*RST``, ``*CLS``.
Error codes are the SCPI engine's (-222 data out of range, -113 undefined
header, ...); the real instrument's codes are not public.

Physics
-------
The stage is one thermal mass coupled to the ambient, heated or cooled by
the TEC (linearised Peltier element: Joule heating and the dependence of
the pumped heat on the temperature difference are ignored)::

    C dT/dt = -(T - T_amb) / R_th + k_tec * I

with C = 2 J/K, R_th = 5 K/W (tau = R_th * C = 10 s) and k_tec = 1 W/A
(positive current heats). At steady state T = T_amb + R_th * k_tec * I, so
each amp holds the stage 5 degC from ambient. T_amb is the bench's
``ambient_c``, read at every step, so a test may warm the room.

The controller samples the thermistor every ``DT_S`` = 10 ms. The reading is
T plus Gaussian noise (0.3 mK RMS, from a generator seeded from the bench's
rng). It runs a discrete PID in standard form on the reading::

    e   = T_set - T_meas
    u   = P * (e + I * integral(e dt) - D * dT_meas/dt)
    I_tec = clamp(u, -I_lim, +I_lim)

Here P is in A/degC, I in 1/s and D in s. The derivative acts on the
measurement, not on the error, so a setpoint step does not kick it. It goes
through a first-order filter of 0.1 s. The integral stops growing while the
output is clamped and e would push it further into the clamp. This is
conditional-integration anti-windup. Between samples the current is held,
and the plant is integrated exactly over the step::

    T(t + dt) = T_ss + (T - T_ss) * exp(-dt / tau),   T_ss = T_amb + R_th * k_tec * I_tec

Physics is integrated lazily: every received message first brings the
state up to the bench clock's ``now`` in whole 10 ms steps. With the output
off, the stage relaxes in closed form, ``T = T_amb + (T - T_amb) exp(-t/tau)``.
The power-on gains (P 2.0 A/degC, I 0.3 1/s, D 0.5 s) take the stage from
22 to 30 degC (clamped at the 2 A default limit for the first seconds) to
within 0.05 degC of the setpoint in about 20 s, with 0.02 degC overshoot;
the pole-cancelling P 1.0, I 0.1 (I = 1/tau) needs about 45 s after the
clamp.

Condition register (``TEC:COND?``), computed from the state:

* bit 0, current limit: the last control step was clamped at ``I_lim``;
* bits 3/4, temperature high/low limit: the reading is beyond
  ``TEC:LIM:THI`` / ``TLO``. Crossing a limit switches the output off;
* bit 6, sensor open: set by :meth:`SimArroyo5300.set_sensor_open` (the
  fault hook for interlock tests). It forces the output off and refuses
  ``TEC:OUT 1``. ``TEC:T?`` keeps reporting the stage temperature; a real
  open thermistor would read a rail value;
* bit 9, out of tolerance: *not* (output on and the reading has stayed
  within +-tol of the setpoint for the tolerance time), from ``TEC:TOL``;
* bit 10, output on.

Bits 1, 2, 5, 7 and 12 (voltage limit, sensor limit, shorted sensor, open TEC,
thermal run-away) are never set. Other simulators read the stage
temperature through :meth:`SimArroyo5300.temperature_c`.

Simulator options: ``initial_temperature_c`` (default: the bench's ambient) and
``initial_output`` (default False: the controller starts off). With ``initial_output`` the
controller already regulates at the initial temperature when the bench starts (setpoint
there, integral preloaded with the steady-state current), as a TEC left running overnight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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
TEC_RESISTANCE_OHM = 1.5
SENSOR_NOISE_C = 0.0003
DT_S = 0.01
DERIVATIVE_FILTER_S = 0.1

CURRENT_LIMIT_RANGE_A = (0.0, 5.0)
TEMPERATURE_RANGE_C = (-99.0, 250.0)
GAIN_RANGE = (0.0, 10.0)
TOLERANCE_RANGE_C = (0.01, 10.0)
TOLERANCE_TIME_RANGE_S = (0.1, 50.0)

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
        self.capacity_j_per_k = float(
            opts.get("thermal_capacity_j_per_k", THERMAL_CAPACITY_J_PER_K)
        )
        self.resistance_k_per_w = float(
            opts.get("thermal_resistance_k_per_w", THERMAL_RESISTANCE_K_PER_W)
        )
        self.peltier_w_per_a = float(opts.get("peltier_w_per_a", PELTIER_W_PER_A))
        self.sensor_noise_c = float(opts.get("sensor_noise_c", SENSOR_NOISE_C))
        self.tau_s = self.resistance_k_per_w * self.capacity_j_per_k
        self.rng = bench.rng.spawn(1)[0]
        # plant and controller state: physics, not settings, so *RST keeps it
        self._temp_c = float(opts.get("initial_temperature_c", bench.ambient_c))
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
        setpoint there, integral preloaded with the steady-state current (option
        ``initial_output``: a TEC left running before the simulated bench starts)."""
        self.setpoint_c = self._temp_c
        self.output = True
        gain_k_per_a = self.resistance_k_per_w * self.peltier_w_per_a
        current = (self._temp_c - self.bench.ambient_c) / gain_k_per_a
        p, i_gain, _ = self.pid
        self._integral = current / (p * i_gain)
        self._current_a = current

    # -- state ---------------------------------------------------------------
    def reset(self) -> None:
        self.setpoint_c = 25.0
        self.output = False
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
        e.add("TEC:ITE", on_query=lambda a, s: f"{self._current_a:.4f}")
        e.add("TEC:V", on_query=lambda a, s: f"{self._current_a * TEC_RESISTANCE_OHM:.4f}")
        e.add("TEC:COND", on_query=lambda a, s: str(self.condition()))
        e.add("TEC:MODE:T", on_set=lambda a, s: None)
        e.add("TEC:MODE", on_query=lambda a, s: "T")
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
        elif not on:
            self._controller_off()

    def _set_current_limit(self, args: list[Arg], suffixes: tuple[int, ...]) -> None:
        value = parse_number(_one_arg(args))
        self.current_limit_a = check_range(value, *CURRENT_LIMIT_RANGE_A, "current limit")

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
        now = self.now_s()
        if not self.output:
            gap = now - self._sim_time_s
            if gap > 0:
                t_amb = self.bench.ambient_c
                self._temp_c = t_amb + (self._temp_c - t_amb) * math.exp(-gap / self.tau_s)
                self._sim_time_s = now
                self._last_meas_c = self._temp_c + self.sensor_noise_c * self.rng.normal()
            return
        n_steps = int((now - self._sim_time_s) / DT_S + 1e-9)
        if n_steps <= 0:
            return
        noise = self.sensor_noise_c * self.rng.normal(size=n_steps)
        decay = math.exp(-DT_S / self.tau_s)
        gain_k_per_a = self.resistance_k_per_w * self.peltier_w_per_a
        p, i_gain, d_gain = self.pid
        alpha = DT_S / (DERIVATIVE_FILTER_S + DT_S)
        limit = self.current_limit_a
        temp, integral, deriv = self._temp_c, self._integral, self._deriv
        last_meas = self._last_meas
        t = self._sim_time_s
        for k in range(n_steps):
            meas = temp + noise[k]
            if meas > self.t_high_c or meas < self.t_low_c:
                # the instrument trips its output; the rest of the gap is passive
                self._temp_c, self._sim_time_s, self._last_meas_c = temp, t, meas
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
            t_ss = self.bench.ambient_c + gain_k_per_a * current
            temp = t_ss + (temp - t_ss) * decay
            t += DT_S
            if abs(meas - self.setpoint_c) <= self.tolerance_c:
                if self._tol_since is None:
                    self._tol_since = t
            else:
                self._tol_since = None
        self._temp_c, self._integral, self._deriv = temp, integral, deriv
        self._last_meas = last_meas
        self._last_meas_c = float(last_meas) if last_meas is not None else temp
        self._current_a = current
        self._sim_time_s = t

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
        """Stage temperature now (true value, without sensor noise)."""
        with self.lock:
            self._advance()
            return self._temp_c

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
                "setpoint_c": self.setpoint_c,
                "output": self.output,
                "tec_current_a": self._current_a,
                "current_limit_a": self.current_limit_a,
                "pid": self.pid,
                "condition": self.condition(),
                "sensor_open": self.sensor_open,
                "echo": self.echo,
            }
