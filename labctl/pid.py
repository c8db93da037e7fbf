"""A discrete PID controller for lab feedback loops (TEC, wavemeter laser lock, phase lock).

Control law (parallel form, derivative on the measurement)::

    e = r_eff - y                    (wrapped into [-period/2, period/2) with ``error_wrap``)
    u = kp * e + ki * integral(e dt) + kd * d(-y)/dt

with the units of the loop's measurement ``y`` (e.g. degC, MHz, rad) and actuator ``u`` (e.g.
A, V, pm): ``kp`` in output units per input unit, ``ki`` in output units per input unit per
second, ``kd`` in output units x seconds per input unit. ``Ti = kp / ki`` and ``Td = kd / kp``
are the integral and derivative times of the textbook standard form (Åström & Hägglund,
*Advanced PID Control*, ISA 2006, ch. 3).

Discretisation (Åström & Hägglund 2006, ch. 13 "Implementation"), per update with
the caller's ``dt_s``:

- P: ``kp * e`` on the current error.
- D: derivative of the measurement (a setpoint step never kicks the output) through an
  optional first-order filter with time constant ``derivative_filter_s`` (``Tf``), discretised
  by backward difference, ``dydt_f <- (Tf * dydt_f + (y - y_prev)) / (Tf + dt)``. This is
  stable and free of ringing for every ``Tf >= 0`` (Tustin's rule rings when ``Tf`` is small
  against ``dt``); ``Tf = 0`` gives the raw difference quotient.
- I: the integral *term* (in output units) is the state, updated after the output is computed
  (forward difference): ``I <- I + ki * e * dt + (u - v) * (1 - exp(-dt / Tt))``. Keeping the
  term, not the integral of the error, is what makes a change of ``ki`` bumpless.

Output constraints: ``v = P + I + D`` is the unconstrained output; the applied output ``u`` is
``v`` clipped to ``[u_prev - rate * dt, u_prev + rate * dt]`` (``rate_limit_per_s``) and then
to ``[output_min, output_max]``. The absolute limits win over the rate limit: they protect the
hardware, so an output left outside new limits by a settings change is clamped at once.

Anti-windup: back-calculation (tracking), the last term of the ``I`` update above. The
difference ``u - v`` between the applied and the unconstrained output contains both the
saturation and the rate limiting, so one mechanism covers both constraints: while the output
is held by either, the integral term is pulled towards the value that makes ``v`` equal ``u``,
with tracking time constant ``Tt`` (``tracking_time_s``). Conditional integration (freezing
the integrator while limited) was not chosen because it keeps whatever the integrator held
when the limit was hit, and it needs a separate rule for the rate limit. The factor
``1 - exp(-dt/Tt)`` is the exact discretisation of the first-order tracking and stays stable
for any ``dt`` (also ``Tt = 0``: immediate tracking). Default ``Tt``: ``Ti / 4``, or
``sqrt(Ti * Td)`` for a PID when that is smaller. ``sqrt(Ti * Td)`` is the rule of thumb of
Åström & Hägglund (2006, ch. 3, "Integrator windup": Tt "larger than Td and smaller than
Ti"); it vanishes for a PI, and ``Tt = 0`` lets a single noisy sample at the limit reset the
integrator. The cap ``Ti / 4`` comes from simulating first-order plants (tau 10 s, PI gains
from pole cancelling to 4x more aggressive, a step that needs 80% of the output range): with
output saturation every ``Tt <= Ti / 2`` gives no overshoot, but with rate limiting
``Tt = Ti / 2`` still overshoots by up to 5% of the step, ``Ti / 4`` by < 1%, and ``Tt -> 0``
settled up to 25% slower.

Bumpless transfer: ``set_manual(output)`` moves the output to the operator's value *through
the rate limit* (the limit protects the actuator, whoever commands it) and within the output
limits; ``set_auto()`` resumes from the current output: at the next update the integral term
is set so that ``P + I + D`` equals the held output, then integration continues. Gain changes
are bumpless by the same idea (Åström & Hägglund 2006, ch. 13, bumpless parameter changes):
the change of ``P`` and ``D`` with the last error and derivative is absorbed into ``I``.

Setpoint ramp: ``pid.setpoint = r`` sets the target; with ``setpoint_ramp_per_s`` the
effective setpoint moves towards it by at most ``ramp * dt`` per update. When a ramp is set,
the effective setpoint starts at the measurement on the first update (after construction,
``reset`` or ``set_auto``) and follows the measurement in manual mode, so a loop switched on
far from its target ramps there from where the process is.

Not thread-safe: one owner calls it (the loop runner serialises access under its lock).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

Mode = Literal["auto", "manual"]


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class PidGains:
    """Gains of the parallel-form PID ``u = kp*e + ki*int(e dt) + kd*d(-y)/dt``.

    kp: output units per input unit; ki: output units per input unit per second; kd: output
    units x seconds per input unit. A reverse-acting loop (more output lowers the measurement,
    e.g. a TEC cooling) uses negative gains; all non-zero gains must share one sign (mixed
    signs make the integral or derivative fight the proportional action).
    """

    kp: float
    ki: float = 0.0
    kd: float = 0.0

    def __post_init__(self) -> None:
        for name in ("kp", "ki", "kd"):
            object.__setattr__(self, name, _finite(f"PidGains.{name}", getattr(self, name)))
        signs = {math.copysign(1.0, g) for g in (self.kp, self.ki, self.kd) if g != 0.0}
        if len(signs) > 1:
            raise ValueError(
                f"PidGains: kp={self.kp}, ki={self.ki}, kd={self.kd} mix signs; a reverse-acting "
                "loop needs all gains negative"
            )

    @property
    def integral_time_s(self) -> float:
        """Ti = kp / ki in seconds (inf without integral action, 0 for a pure I controller)."""
        if self.ki == 0.0:
            return math.inf
        return self.kp / self.ki

    @property
    def derivative_time_s(self) -> float:
        """Td = kd / kp in seconds (0 without derivative action or without kp)."""
        if self.kp == 0.0:
            return 0.0
        return self.kd / self.kp


@dataclass(frozen=True, slots=True)
class PidSettings:
    """Validated constraints and options of a PID (everything but gains and setpoint).

    A bench file's loop table can be turned into this first, so a mistake is reported before
    anything connects. ``None`` means "no limit" for the rates; the output limits default to
    unbounded.

    - ``output_min`` / ``output_max``: absolute output limits (actuator units), min < max.
    - ``rate_limit_per_s``: max |du/dt| in actuator units per second (> 0) or None.
    - ``derivative_filter_s``: time constant of the first-order derivative filter (>= 0 s);
      typically Td / 10 to Td / 5 (Åström & Hägglund 2006, ch. 3).
    - ``setpoint_ramp_per_s``: max speed of the effective setpoint, input units per second
      (> 0) or None for an immediate setpoint.
    - ``error_wrap``: period of a wrapped measurement (e.g. 2*pi for a phase in rad); the
      error and the measurement difference are wrapped into [-period/2, period/2).
    - ``tracking_time_s``: anti-windup tracking time constant Tt (>= 0 s) or None for the
      default (see the module docstring).
    """

    output_min: float = -math.inf
    output_max: float = math.inf
    rate_limit_per_s: float | None = None
    derivative_filter_s: float = 0.0
    setpoint_ramp_per_s: float | None = None
    error_wrap: float | None = None
    tracking_time_s: float | None = None

    def __post_init__(self) -> None:
        lo, hi = float(self.output_min), float(self.output_max)
        if math.isnan(lo) or lo == math.inf:
            raise ValueError(f"output_min must be a number below +inf, got {lo!r}")
        if math.isnan(hi) or hi == -math.inf:
            raise ValueError(f"output_max must be a number above -inf, got {hi!r}")
        if not lo < hi:
            raise ValueError(f"output_min ({lo}) must be < output_max ({hi})")
        object.__setattr__(self, "output_min", lo)
        object.__setattr__(self, "output_max", hi)
        for name in ("rate_limit_per_s", "setpoint_ramp_per_s", "error_wrap"):
            value = getattr(self, name)
            if value is not None:
                value = float(value)
                if not value > 0.0 or math.isnan(value):
                    raise ValueError(f"{name} must be > 0 (or None), got {value!r}")
                if name == "error_wrap" and not math.isfinite(value):
                    raise ValueError(f"error_wrap must be a finite period, got {value!r}")
                object.__setattr__(self, name, value)
        tf = float(self.derivative_filter_s)
        if not (math.isfinite(tf) and tf >= 0.0):
            raise ValueError(f"derivative_filter_s must be >= 0 s, got {tf!r}")
        object.__setattr__(self, "derivative_filter_s", tf)
        if self.tracking_time_s is not None:
            tt = float(self.tracking_time_s)
            if not (math.isfinite(tt) and tt >= 0.0):
                raise ValueError(f"tracking_time_s must be >= 0 s (or None), got {tt!r}")
            object.__setattr__(self, "tracking_time_s", tt)

    def clamp(self, value: float) -> float:
        """``value`` clipped to [output_min, output_max]."""
        return min(max(value, self.output_min), self.output_max)


class PidTerms(NamedTuple):
    """The three terms of the last output, in output units (for display)."""

    p: float
    i: float
    d: float


class PID:
    """Discrete PID controller; see the module docstring for the algorithm.

    ``update(measurement, dt_s)`` returns the output to apply. Construct with keyword
    arguments (validated by :class:`PidSettings`) or with :meth:`from_settings`.
    ``initial_output`` is the actuator's value when the controller starts (the rate limit of
    the first update counts from it); it seeds the integral term, so a freshly built PI
    controller returns ``kp * e + initial_output`` at its first update.
    """

    def __init__(
        self,
        gains: PidGains,
        *,
        setpoint: float = 0.0,
        output_min: float = -math.inf,
        output_max: float = math.inf,
        rate_limit_per_s: float | None = None,
        derivative_filter_s: float = 0.0,
        setpoint_ramp_per_s: float | None = None,
        error_wrap: float | None = None,
        tracking_time_s: float | None = None,
        initial_output: float = 0.0,
    ) -> None:
        settings = PidSettings(
            output_min=output_min,
            output_max=output_max,
            rate_limit_per_s=rate_limit_per_s,
            derivative_filter_s=derivative_filter_s,
            setpoint_ramp_per_s=setpoint_ramp_per_s,
            error_wrap=error_wrap,
            tracking_time_s=tracking_time_s,
        )
        self._init(gains, settings, setpoint, initial_output)

    @classmethod
    def from_settings(
        cls,
        gains: PidGains,
        settings: PidSettings,
        *,
        setpoint: float = 0.0,
        initial_output: float = 0.0,
    ) -> PID:
        """Build a controller from an already validated :class:`PidSettings`."""
        pid = cls.__new__(cls)
        pid._init(gains, settings, setpoint, initial_output)
        return pid

    def _init(
        self, gains: PidGains, settings: PidSettings, setpoint: float, initial_output: float
    ) -> None:
        if not isinstance(gains, PidGains):
            raise TypeError(f"gains must be a PidGains, got {type(gains).__name__}")
        if not isinstance(settings, PidSettings):
            raise TypeError(f"settings must be a PidSettings, got {type(settings).__name__}")
        self._gains = gains
        self._settings = settings
        self._target = _finite("setpoint", setpoint)
        u0 = _finite("initial_output", initial_output)
        if settings.clamp(u0) != u0:
            raise ValueError(
                f"initial_output {u0} is outside [output_min, output_max] = "
                f"[{settings.output_min}, {settings.output_max}]"
            )
        self._mode: Mode = "auto"
        self._manual_output = u0
        self._output = u0
        self._integral = u0
        self._effective: float | None = None
        self._y_prev: float | None = None
        self._dydt = 0.0
        self._error = math.nan
        self._p = 0.0
        self._i = u0
        self._d = 0.0
        self._saturated = False
        self._rate_limited = False
        self._bumpless_pending = False
        self._invalid = 0

    # ----------------------------------------------------------------- configuration
    @property
    def gains(self) -> PidGains:
        """Current gains. Setting them is bumpless: the next output continues the last one."""
        return self._gains

    @gains.setter
    def gains(self, gains: PidGains) -> None:
        if not isinstance(gains, PidGains):
            raise TypeError(f"gains must be a PidGains, got {type(gains).__name__}")
        old = self._gains
        if self._y_prev is not None and math.isfinite(self._error):
            # Absorb the jump of P and D into I (bumpless parameter change, Åström & Hägglund).
            self._integral += (old.kp - gains.kp) * self._error + (gains.kd - old.kd) * self._dydt
        self._gains = gains
        self._p = gains.kp * self._error if math.isfinite(self._error) else 0.0
        self._d = -gains.kd * self._dydt

    @property
    def settings(self) -> PidSettings:
        """Limits and options; may be replaced at run time (new output limits apply at once)."""
        return self._settings

    @settings.setter
    def settings(self, settings: PidSettings) -> None:
        if not isinstance(settings, PidSettings):
            raise TypeError(f"settings must be a PidSettings, got {type(settings).__name__}")
        self._settings = settings
        if settings.setpoint_ramp_per_s is None:
            self._effective = None

    @property
    def setpoint(self) -> float:
        """Target setpoint (input units). The effective setpoint ramps to it if configured."""
        return self._target

    @setpoint.setter
    def setpoint(self, value: float) -> None:
        self._target = _finite("setpoint", value)

    def reset_ramp(self) -> None:
        """The effective setpoint jumps to the target now (a step, not a ramp)."""
        if self._settings.setpoint_ramp_per_s is not None:
            self._effective = self._target

    @property
    def effective_setpoint(self) -> float:
        """Setpoint the error is computed from (the ramp's current position)."""
        if self._settings.setpoint_ramp_per_s is None or self._effective is None:
            return self._target
        return self._effective

    # ------------------------------------------------------------------ read-outs
    @property
    def output(self) -> float:
        """Last output returned by :meth:`update` (or the initial / reset output)."""
        return self._output

    @property
    def last_error(self) -> float:
        """Error of the last valid update (input units; NaN before the first one)."""
        return self._error

    @property
    def last_measurement(self) -> float:
        """Last valid measurement (NaN before the first one)."""
        return math.nan if self._y_prev is None else self._y_prev

    @property
    def terms(self) -> PidTerms:
        """P, I and D terms of the last update (output units). They add up to the
        unconstrained output, which differs from :attr:`output` while :attr:`saturated`. In
        manual mode the I term tracks the output (that is what makes ``set_auto`` bumpless)."""
        return PidTerms(self._p, self._i, self._d)

    @property
    def saturated(self) -> bool:
        """True if the last output was held by the output limits or the rate limit."""
        return self._saturated

    @property
    def rate_limited(self) -> bool:
        """True if the rate limit held the last output."""
        return self._rate_limited

    @property
    def mode(self) -> Mode:
        """ "auto" (closed loop) or "manual" (the output follows :meth:`set_manual`)."""
        return self._mode

    @property
    def manual_output(self) -> float:
        """Output requested by the last :meth:`set_manual` (reached through the rate limit)."""
        return self._manual_output

    @property
    def invalid_measurements(self) -> int:
        """Number of non-finite measurements ignored by :meth:`update`."""
        return self._invalid

    # ------------------------------------------------------------------ mode changes
    def set_manual(self, output: float) -> None:
        """Hold ``output`` (actuator units). Reached from the current output at the rate limit
        by the following updates (which must keep being called); refused if outside the output
        limits. The measurement is still followed, so :meth:`set_auto` is bumpless."""
        value = _finite("manual output", output)
        if self._settings.clamp(value) != value:
            raise ValueError(
                f"manual output {value} is outside [output_min, output_max] = "
                f"[{self._settings.output_min}, {self._settings.output_max}]"
            )
        self._mode = "manual"
        self._manual_output = value

    def set_auto(self) -> None:
        """Close the loop again, starting from the current output without a jump."""
        if self._mode == "manual":
            self._mode = "auto"
            self._bumpless_pending = True

    def reset(self, output: float | None = None) -> None:
        """Forget the dynamic state: integral, derivative filter, last measurement and the
        setpoint ramp's position; the mode and the manual output are kept.

        ``output=None``: a fresh controller, integral term zero (the next update returns
        ``P + D``, through the rate limit from the last output). ``output=x``: the output is
        set to ``x`` (within the limits) and the next update starts bumplessly from it.
        """
        self._y_prev = None
        self._dydt = 0.0
        self._effective = None
        self._error = math.nan
        self._p = self._d = 0.0
        self._saturated = self._rate_limited = False
        if output is None:
            self._integral = self._i = 0.0
            self._bumpless_pending = False
            return
        value = _finite("reset output", output)
        if self._settings.clamp(value) != value:
            raise ValueError(
                f"reset output {value} is outside [output_min, output_max] = "
                f"[{self._settings.output_min}, {self._settings.output_max}]"
            )
        self._output = self._integral = self._i = value
        self._bumpless_pending = True

    def shift_output(self, delta: float) -> None:
        """Move the output and the integral term together by ``delta`` (actuator units), past
        the rate limit. For actuators with a periodic effect (a phase shifter: one period of
        volts is the same phase), where a loop at the end of its range continues one period
        further on without a transient; refused if the shifted output leaves the limits."""
        value = self._output + _finite("output shift", delta)
        if self._settings.clamp(value) != value:
            raise ValueError(
                f"shifted output {value} is outside [output_min, output_max] = "
                f"[{self._settings.output_min}, {self._settings.output_max}]"
            )
        self._output = value
        self._integral += delta
        self._i += delta
        self._manual_output += delta
        self._saturated = self._rate_limited = False

    # ------------------------------------------------------------------ the update
    def _wrap(self, value: float) -> float:
        period = self._settings.error_wrap
        if period is None:
            return value
        return (value + 0.5 * period) % period - 0.5 * period

    def _limit(self, v: float, dt_s: float) -> float:
        s = self._settings
        u = v
        self._rate_limited = False
        if s.rate_limit_per_s is not None:
            step = s.rate_limit_per_s * dt_s
            lo, hi = self._output - step, self._output + step
            if u < lo or u > hi:
                u = min(max(u, lo), hi)
                self._rate_limited = True
        return s.clamp(u)

    def update(self, measurement: float, dt_s: float) -> float:
        """Advance by ``dt_s`` seconds (time since the previous measurement, > 0) with a new
        ``measurement`` and return the output to apply.

        A non-finite measurement (NaN/inf: a failed read) changes nothing: the last output is
        returned (held), the integral, derivative filter, ramp and last values are untouched,
        and :attr:`invalid_measurements` counts it. The next valid update then spans only its
        own ``dt_s``, which the caller should measure from the last valid sample.
        """
        dt = float(dt_s)
        if not (math.isfinite(dt) and dt > 0.0):
            raise ValueError(f"dt_s must be a finite time > 0 s, got {dt_s!r}")
        y = float(measurement)
        if not math.isfinite(y):
            self._invalid += 1
            return self._output
        g, s = self._gains, self._settings

        # Setpoint: target, or a ramp towards it (starting from the measurement).
        ramp = s.setpoint_ramp_per_s
        if ramp is None:
            r = self._target
        else:
            if self._effective is None or self._bumpless_pending or self._mode == "manual":
                self._effective = y
            step = ramp * dt
            self._effective = min(max(self._target, self._effective - step), self._effective + step)
            r = self._effective

        e = self._wrap(r - y)
        dy = 0.0 if self._y_prev is None else self._wrap(y - self._y_prev)
        tf = s.derivative_filter_s
        self._dydt = (tf * self._dydt + dy) / (tf + dt)
        p = g.kp * e
        d = -g.kd * self._dydt
        self._error, self._p, self._d, self._y_prev = e, p, d, y

        if self._mode == "manual":
            u = self._limit(self._manual_output, dt)
            self._saturated = u != self._manual_output
            self._integral = self._i = u - p - d
        elif self._bumpless_pending:
            self._bumpless_pending = False
            u = s.clamp(self._output)
            self._saturated = self._rate_limited = False
            self._i = u - p - d
            self._integral = self._i + g.ki * e * dt
        else:
            self._i = self._integral
            v = p + self._i + d
            u = self._limit(v, dt)
            self._saturated = u != v
            self._integral += g.ki * e * dt
            if g.ki != 0.0 and self._saturated:
                self._integral += (u - v) * self._tracking_factor(dt)
        self._output = u
        return u

    def _tracking_factor(self, dt_s: float) -> float:
        tt = self._settings.tracking_time_s
        if tt is None:
            ti = self._gains.integral_time_s
            td = self._gains.derivative_time_s
            tt = 0.25 * ti
            if td > 0.0:
                tt = min(tt, math.sqrt(ti * td))
        if tt <= 0.0:
            return 1.0
        return -math.expm1(-dt_s / tt)

    def __repr__(self) -> str:
        g = self._gains
        return (
            f"PID(kp={g.kp}, ki={g.ki}, kd={g.kd}, setpoint={self._target}, mode={self._mode}, "
            f"output={self._output})"
        )
