"""``labctl autotune``: step one loop's actuator on the bench, fit a model, propose PID gains.

Registered by the top-level CLI with ``autotune_job.add_parser(sub)``; the maths is
:mod:`labctl.autotune` (``step_test``, ``fit_fopdt``, ``fit_sopdt``, ``simc_gains``), the
hand-over of the actuator is the loop's own (:class:`labctl.loops.LoopBinding`). Steps of
:func:`run_autotune`:

1. refuse a step that cannot fit in the loop's output range at all (before connecting);
   connect, apply the safe start values, arm the interlocks (their own threads; on a manual
   bench clock they are evaluated once per second of bench time, as ``labctl loops`` does);
2. read the output the loop would start from (the read-only twin of ``LoopBinding.engage``) and
   refuse, BEFORE any write, a step that leaves the loop's ``output_min``/``output_max``;
3. switch on the emission of the laser a ``laser_lock`` holds; hand the actuator over exactly
   as the loop would (``LoopBinding.engage``: the TEC goes to constant-current mode at the current
   its own PID was driving, so the stage sees no step);
4. hold that output ``settle_s``; the last ``baseline_s`` of the hold are recorded (t < 0),
   then the output steps by ``step`` and the sensor is sampled every ``period_s`` (default: the
   loop's period) for ``duration_s`` (:func:`labctl.autotune.step_test`, on the loop's clock:
   virtual time on a manual simulated bench), and the output is set back to where it was;
5. fit FOPDT and/or SOPDT and propose SIMC gains (:func:`fit_and_propose`: the loop period as
   ``sample_period_s`` and one more period of dead time for labctl's PID,
   ``CONTROLLER_DELAY_PERIODS``);
6. hand the actuator back (``LoopBinding.release``: the TEC to its own PID at the loop's setpoint),
   stop the interlocks and close the bench (every instrument to its safe state), also on an
   error, on an interlock trip and on Ctrl-C.

Record conditioning before the fit
----------------------------------
* Repeated timestamps (a wavemeter answering twice with one scan) are dropped: a sample
  without a new measurement carries no information and the fit needs increasing times.
* ``phase_lock``: the quadrature phase is unwrapped (``numpy.unwrap``), so a step across
  +-pi is one step and not a 2 pi jump.
* ``detrend`` (default on for ``temperature`` only): a straight line fitted to the baseline
  (t < 0) is removed from the whole record (slope only, so the level at the step is kept).
  At constant current the stage follows the room: the ``typical_lab`` HVAC swing (+-0.3 degC
  every 10 min) moves it by up to 3 mK/s, 0.12 degC over a 40 s record, a quarter of the
  0.5 degC response. A line is exact for a linear drift and leaves the curvature,
  ``A (2 pi / P)^2 t^2 / 2`` <= 0.026 degC at t = 40 s for that swing (at its extremes, much
  less near its zero crossings), and the room's random drift. It is off for the locks: the
  free-running laser wanders as a random walk, which a line fitted to 1 s extrapolates as
  noise, not as drift.

Default step, hold and record per kind (:data:`KIND_DEFAULTS`)
-------------------------------------------------------------
The default step is positive, or negative when a positive one would leave the output range,
and never more than ``MAX_DEFAULT_STEP_FRACTION`` of the range. A step test in a drifting
room or on a wandering laser has a bias of (drift over the record) / (response): the step is
chosen large against that, and small against what the experiment tolerates.

``temperature``: 0.1 A (1/30 of the shipped +-1.5 A range)
    0.5 degC on the twin's 5 degC/A stage, ~1700x the 0.3 mK thermistor noise. Record 40 s:
    4 stage time constants (10 s, R_sa C_s of drivers/sim/arroyo.py), 98% of the final value;
    the drift's curvature grows as the record squared, so a longer record costs more than it
    gives. Hold 30 s, of which the last 20 s are the baseline the detrend is fitted to. On
    the twin in the typical_lab room (one run): 0.05 A over 60 s fitted the gain 7% and the
    time constant 19% low, 0.1 A over 40 s 2% and 4% (quiet room: 0.2%). The twin's Peltier
    is linear; on a real TEC, whose Joule heating makes the gain depend on the current, the
    step measures the slope around the working current. The ring moves 0.5 degC off its
    pumps' resonance: the shipped interlock switches the pumps off while it does.
``laser_lock``: 20 MHz, rounded to the laser's 0.01 pm fine-tuning grid (16 steps, 0.16 pm)
    ~30x the wavemeter's 0.6 MHz repeatability; the free-running random walk moves the level
    by ~1.2 MHz rms between baseline and record (D (T_before + T_after) / 3 with D = 1e12
    Hz^2/s), a 6% uncertainty on the gain. A tenth of the ring's 200 MHz linewidth: the pump
    keeps > 90% of its pair rate. Hold 2 s (baseline 1 s), record 3 s: on the twin the plant
    has no lag beyond the sampling (the wavemeter's 20 Hz frames see the new tuning at once).
``phase_lock``: 0.1 V
    0.31 rad on a 2 V / 2 pi shifter: well above the photodiodes' noise, far from a fringe
    hop. Hold 3 s (baseline 2 s: 10 samples at 5 Hz), record 4 s.

A hardware bench has other plants: ``--step``, ``--settle`` and ``--duration`` override them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from drivers.errors import InstrumentError
from drivers.sim.clock import VirtualClock
from labctl.autotune import Fopdt, Sopdt, fit_fopdt, fit_sopdt, simc_gains, step_test
from labctl.bench import Bench
from labctl.bench_control import switch_on_for_locks
from labctl.config import CONFIG_DIR, BenchConfig, ConfigError, load_bench
from labctl.interlocks import InterlockEvent, InterlockWatchdog
from labctl.loop_config import LoopConfig, fine_tuning_mhz_per_pm
from labctl.loop_runner import LoopClock, Reading
from labctl.loops import LoopBinding, loop_clock
from labctl.pid import PidGains

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
Progress = Callable[[str], None]
ModelChoice = Literal["fopdt", "sopdt", "both"]
MODEL_CHOICES: tuple[str, ...] = ("fopdt", "sopdt", "both")

_PROG = "labctl autotune"
#: the bench ``labctl autotune`` uses without CONFIG: the shipped ISAQN default bench has no
#: loops, the simulated entanglement bench has seven
DEFAULT_AUTOTUNE_CONFIG = CONFIG_DIR / "entanglement_sim.toml"
#: a default step is at most this fraction of the loop's output range
MAX_DEFAULT_STEP_FRACTION = 0.1
#: with ``--model both`` the SOPDT model (PID) is recommended when its residual rms is below
#: this fraction of the FOPDT one: a FOPDT that misses an S-shape leaves systematic residuals
#: on top of the noise, and 20% less is well beyond the scatter of the rms between records
SOPDT_RMSE_RATIO = 0.8
#: derivative filter proposed with a SOPDT PID: Td / 10 (labctl.autotune.simc_gains; Astrom &
#: Hagglund 2006, ch. 3)
DERIVATIVE_FILTER_FRACTION = 0.1
#: dead time labctl's PID adds, in loop periods, on top of the sample-and-hold's half period
#: that ``simc_gains(sample_period_s=...)`` accounts for: its integral term is a forward
#: difference (the term applied at tick k integrates the errors up to tick k - 1,
#: labctl/pid.py), one more period in the integral path. On a plant without lag (a laser lock:
#: y_k = K u_(k-1)) a pure integrator then gives z^2 - z + K ki T = 0, marginal at
#: K ki T = 1, which is what SIMC proposes with the half period alone (measured on the twin:
#: the pump lock oscillated at a period of 6 ticks); with this period K ki T = 1/3.
CONTROLLER_DELAY_PERIODS = 1.0
#: interlock evaluation period on a manual bench clock (bench seconds), as ``labctl loops``
INTERLOCK_PERIOD_S = 1.0
#: a sample stamped within this of the step (s) was taken at the instant of the write: on a
#: virtual clock, in the same instant. Whether it shows the step depends on the instrument's
#: internal timing (the twin's wavemeter frame at that instant already sees the new tuning, the
#: TEC's reading does not), and the models (y = y0 for t <= 0) would count a step it shows as
#: baseline, so it is dropped.
STEP_INSTANT_S = 1e-9
#: fine-tuning grid of the laser locks' actuator (labctl.loops.LoopBinding.write rounds to it)
FINE_TUNING_STEP_PM = 0.01


@dataclass(frozen=True)
class KindDefaults:
    """Default step (output units), hold, baseline and record (s) of one loop kind."""

    step: float
    settle_s: float
    baseline_s: float
    duration_s: float
    detrend: bool


#: per-kind defaults; the module docstring gives the reasoning for each value
KIND_DEFAULTS: dict[str, KindDefaults] = {
    "temperature": KindDefaults(
        step=0.1, settle_s=30.0, baseline_s=20.0, duration_s=40.0, detrend=True
    ),
    "laser_lock": KindDefaults(
        step=20.0, settle_s=2.0, baseline_s=1.0, duration_s=3.0, detrend=False
    ),
    "phase_lock": KindDefaults(
        step=0.1, settle_s=3.0, baseline_s=2.0, duration_s=4.0, detrend=False
    ),
}


class AutotuneError(RuntimeError):
    """The autotune cannot run or failed (the message names the loop and what was wrong)."""


class AutotuneStopped(AutotuneError):
    """Stopped by the operator (Ctrl-C); the actuator was restored and the bench left safe."""


@dataclass(frozen=True)
class ModelFit:
    """One fitted model and the SIMC gains proposed from it.

    ``derivative_filter_s``: the filter to use with ``proposed.kd`` (0 for a PI)."""

    name: Literal["fopdt", "sopdt"]
    model: Fopdt | Sopdt
    proposed: PidGains
    derivative_filter_s: float

    def to_dict(self) -> dict[str, Any]:
        m = self.model
        params: dict[str, Any] = {
            "gain": m.gain,
            "time_constant_s": m.time_constant_s,
            "time_constant2_s": m.time_constant2_s if isinstance(m, Sopdt) else None,
            "dead_time_s": m.dead_time_s,
            "baseline": m.baseline,
            "rmse": m.rmse,
        }
        return {
            "model": params,
            "proposed": _gains_dict(self.proposed, self.derivative_filter_s),
        }


@dataclass(frozen=True)
class AutotuneResult:
    """What :func:`run_autotune` measured and proposes (values in the loop's units).

    ``t_s``/``y``: the record as measured (s since the step; the phase unwrapped), after
    dropping repeated timestamps; the fits saw ``y - drift_per_s * t_s``.
    """

    loop: str
    kind: str
    units: tuple[str, str]
    period_s: float
    u_before: float
    u_after: float
    settle_s: float
    baseline_s: float
    duration_s: float
    closed_loop_tau_s: float | None
    drift_per_s: float
    fits: tuple[ModelFit, ...]
    recommended: str
    configured: PidGains
    configured_derivative_filter_s: float
    t_s: F64
    y: F64
    interlock_events: tuple[str, ...] = field(default=())

    @property
    def step(self) -> float:
        return self.u_after - self.u_before

    def fit(self, name: str) -> ModelFit:
        """The fit called ``name`` ("fopdt" or "sopdt")."""
        for f in self.fits:
            if f.name == name:
                return f
        raise KeyError(f"no {name} fit in this result (fits: {[f.name for f in self.fits]})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "loop": self.loop,
            "kind": self.kind,
            "units": {"measurement": self.units[0], "output": self.units[1]},
            "period_s": self.period_s,
            "u_before": self.u_before,
            "u_after": self.u_after,
            "step": self.step,
            "settle_s": self.settle_s,
            "baseline_s": self.baseline_s,
            "duration_s": self.duration_s,
            "closed_loop_tau_s": self.closed_loop_tau_s,
            "drift_per_s": self.drift_per_s,
            "models": {f.name: f.to_dict() for f in self.fits},
            "recommended": self.recommended,
            "configured": _gains_dict(self.configured, self.configured_derivative_filter_s),
            "interlock_events": list(self.interlock_events),
            "response": {"t_s": self.t_s.tolist(), "y": self.y.tolist()},
        }


def _gains_dict(gains: PidGains, derivative_filter_s: float) -> dict[str, float]:
    return {
        "kp": gains.kp,
        "ki": gains.ki,
        "kd": gains.kd,
        "derivative_filter_s": derivative_filter_s,
    }


# ------------------------------------------------------------------------------ preparation
def find_loop(config: BenchConfig, loop_name: str) -> LoopConfig:
    """The bench file's loop ``loop_name``; AutotuneError listing the loops otherwise."""
    for cfg in config.loops:
        if cfg.name == loop_name:
            return cfg
    known = ", ".join(c.name for c in config.loops) or "none"
    raise AutotuneError(f"{config.path}: no loop named {loop_name!r} (bench loops: {known})")


def _positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0.0):
        raise AutotuneError(f"{name} must be a number > 0 s, got {value!r}")
    return float(value)


def _snap_step(cfg: LoopConfig, step: float) -> float:
    """A laser lock's output moves on the fine-tuning grid: round the step to it."""
    if cfg.kind != "laser_lock" or cfg.setpoint_nm is None:
        return step
    quantum = FINE_TUNING_STEP_PM * fine_tuning_mhz_per_pm(cfg.setpoint_nm)
    return round(step / quantum) * quantum


def _range_error(cfg: LoopConfig, step: float, u0: float | None) -> AutotuneError:
    lo, hi = cfg.settings.output_min, cfg.settings.output_max
    unit = cfg.units[1]
    where = (
        f"from the present output {u0:g} {unit} gives {u0 + step:g} {unit}, which is"
        if u0 is not None
        else "is larger than"
    )
    return AutotuneError(
        f"loop {cfg.name!r}: --step {step:g} {unit} {where} outside the loop's output range "
        f"[{lo:g}, {hi:g}] {unit} (output_min/output_max in the bench file); nothing was "
        "written: give a smaller step or the other sign"
    )


def choose_step(cfg: LoopConfig, u0: float, step: float | None) -> float:
    """The step to apply from ``u0``: ``step`` if given (refused with AutotuneError when
    ``u0 + step`` leaves the output range), else the kind's default (positive unless that
    leaves the range), at most ``MAX_DEFAULT_STEP_FRACTION`` of the range."""
    lo, hi = cfg.settings.output_min, cfg.settings.output_max
    if step is not None:
        if not (lo <= u0 + step <= hi):
            raise _range_error(cfg, step, u0)
        return step
    size = min(KIND_DEFAULTS[cfg.kind].step, MAX_DEFAULT_STEP_FRACTION * (hi - lo))
    size = abs(_snap_step(cfg, size)) or size
    for candidate in (size, -size):
        if lo <= u0 + candidate <= hi:
            return candidate
    raise _range_error(cfg, size, u0)


# ---------------------------------------------------------------------------------- record
def condition_record(
    cfg: LoopConfig, t_s: F64, y: F64, *, detrend: bool
) -> tuple[F64, F64, F64, float]:
    """(t, y as measured, y for the fit, drift removed per s) (module docstring)."""
    t = np.asarray(t_s, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    keep = np.concatenate(([True], np.diff(t) > 0.0)) & (np.abs(t) > STEP_INSTANT_S)
    t, yy = t[keep], yy[keep]
    if cfg.kind == "phase_lock":
        yy = np.unwrap(yy)
    drift = 0.0
    before = t < 0.0
    if detrend and np.count_nonzero(before) >= 3:
        drift = float(np.polyfit(t[before], yy[before], 1)[0])
    return t, yy, yy - drift * t, drift


def fit_and_propose(
    t_s: F64,
    y: F64,
    u_before: float,
    u_after: float,
    *,
    model: ModelChoice,
    period_s: float,
    closed_loop_tau_s: float | None,
) -> tuple[tuple[ModelFit, ...], str]:
    """Fit the chosen model(s), propose SIMC gains; returns (fits, recommended model name).

    The gains are :func:`labctl.autotune.simc_gains` with ``sample_period_s = period_s`` (the
    sample-and-hold's half period of dead time) for the fitted model with
    ``CONTROLLER_DELAY_PERIODS`` more periods of dead time: the delay labctl's PID adds.
    """
    fits: list[ModelFit] = []

    def propose(fitted: Fopdt | Sopdt) -> PidGains:
        delayed = replace(
            fitted, dead_time_s=fitted.dead_time_s + CONTROLLER_DELAY_PERIODS * period_s
        )
        return simc_gains(delayed, closed_loop_tau_s, sample_period_s=period_s)

    if model in ("fopdt", "both"):
        first = fit_fopdt(t_s, y, u_before, u_after)
        fits.append(ModelFit("fopdt", first, propose(first), 0.0))
    if model in ("sopdt", "both"):
        second = fit_sopdt(t_s, y, u_before, u_after)
        gains = propose(second)
        fits.append(
            ModelFit("sopdt", second, gains, DERIVATIVE_FILTER_FRACTION * second.time_constant2_s)
        )
    recommended = fits[0].name
    if len(fits) == 2 and fits[1].model.rmse < SOPDT_RMSE_RATIO * fits[0].model.rmse:
        recommended = "sopdt"
    return tuple(fits), recommended


# ------------------------------------------------------------------------------ interlocks
class _Interlocks:
    """The bench's interlocks during the test; a trip that drives one of the loop's
    instruments safe halts the test (``halt`` is set, :attr:`abort_reason` says why)."""

    def __init__(
        self,
        config: BenchConfig,
        bench: Bench,
        cfg: LoopConfig,
        vclock: VirtualClock | None,
        halt: threading.Event,
        say: Progress,
    ) -> None:
        self.manual = vclock is not None and not vclock.realtime
        self.watchdog = InterlockWatchdog(
            list(config.interlocks),
            bench.instruments,
            clock=vclock.now_s if vclock is not None else time.monotonic,
        )
        self.involved = {
            name
            for name in (cfg.tec, cfg.laser, cfg.wavemeter, cfg.scope, cfg.awg and cfg.awg[0])
            if name
        }
        self.halt = halt
        self.say = say
        self.loop = cfg.name
        self.abort_reason: str | None = None
        self.events: list[str] = []
        self._next_s = -math.inf
        self.watchdog.add_listener(self._on_event)

    def _on_event(self, event: InterlockEvent) -> None:
        if event.event not in ("trip", "action", "action_failed"):
            return
        text = f"interlock {event.rule}: {event.event}: {event.reason}"
        self.events.append(text)
        self.say(text)
        if event.event == "trip":
            hit = self.involved & set(self.watchdog.rules[event.rule].safe)
            if hit and self.abort_reason is None:
                self.abort_reason = (
                    f"interlock {event.rule!r} tripped ({event.reason}) and drives "
                    f"{', '.join(sorted(hit))} safe"
                )
                self.halt.set()

    def start(self) -> None:
        if self.manual:
            self.watchdog.evaluate_once()
        else:
            self.watchdog.start()

    def evaluate_if_due(self, now_s: float) -> None:
        """Manual clock: one evaluation per ``INTERLOCK_PERIOD_S`` of bench time."""
        if self.manual and now_s >= self._next_s:
            self._next_s = now_s + INTERLOCK_PERIOD_S
            self.watchdog.evaluate_once()

    def check_allowed(self) -> None:
        held = self.watchdog.held_instruments()
        for name in sorted(self.involved):
            if name in held:
                raise AutotuneError(
                    f"loop {self.loop!r}: {name} is held safe by tripped interlock "
                    f"{', '.join(held[name])}: nothing to tune until it is reset"
                )

    def stop(self) -> None:
        try:
            self.watchdog.stop()
        except Exception:
            log.exception("stopping the interlock watchdog failed")


# ------------------------------------------------------------------------------------- job
@dataclass(frozen=True)
class StepPlan:
    """Checked options of one step test (seconds; ``step`` in output units, None: default)."""

    period_s: float
    duration_s: float
    settle_s: float
    baseline_s: float
    step: float | None
    detrend: bool


def plan_test(
    cfg: LoopConfig,
    *,
    step: float | None = None,
    settle_s: float | None = None,
    duration_s: float | None = None,
    period_s: float | None = None,
    baseline_s: float | None = None,
    detrend: bool | None = None,
) -> StepPlan:
    """The options of :func:`run_autotune` checked against the loop, defaults filled in from
    :data:`KIND_DEFAULTS`; AutotuneError names the option. A step wider than the whole output
    range is refused here, before anything connects."""
    defaults = KIND_DEFAULTS[cfg.kind]
    period = _positive("--period", cfg.period_s if period_s is None else period_s)
    duration = _positive("--duration", defaults.duration_s if duration_s is None else duration_s)
    settle = defaults.settle_s if settle_s is None else float(settle_s)
    if not (math.isfinite(settle) and settle >= 0.0):
        raise AutotuneError(f"--settle must be a number >= 0 s, got {settle_s!r}")
    baseline = min(defaults.baseline_s if baseline_s is None else float(baseline_s), settle)
    if not (math.isfinite(baseline) and baseline >= 0.0):
        raise AutotuneError(f"baseline_s must be a number >= 0 s, got {baseline_s!r}")
    if duration < 8 * period:
        raise AutotuneError(
            f"loop {cfg.name!r}: --duration {duration:g} s holds fewer than 8 samples of "
            f"{period:g} s: the fit needs more"
        )
    if step is not None:
        if not (math.isfinite(step) and step != 0.0):
            raise AutotuneError(f"loop {cfg.name!r}: --step must be a non-zero number, got {step}")
        if abs(step) > cfg.settings.output_max - cfg.settings.output_min:
            raise _range_error(cfg, step, None)
        step = _snap_step(cfg, step)
        if step == 0.0:
            raise AutotuneError(
                f"loop {cfg.name!r}: --step rounds to 0 on the laser's 0.01 pm tuning grid"
            )
    return StepPlan(
        period_s=period,
        duration_s=duration,
        settle_s=settle,
        baseline_s=baseline,
        step=step,
        detrend=defaults.detrend if detrend is None else detrend,
    )


@dataclass(frozen=True)
class _Record:
    u_before: float
    u_after: float
    t_s: F64
    y: F64
    interlock_events: tuple[str, ...]


def run_autotune(
    config: BenchConfig,
    loop_name: str,
    *,
    step: float | None = None,
    settle_s: float | None = None,
    duration_s: float | None = None,
    period_s: float | None = None,
    closed_loop_tau_s: float | None = None,
    model: ModelChoice = "fopdt",
    baseline_s: float | None = None,
    detrend: bool | None = None,
    progress: Progress | None = None,
    clock: VirtualClock | None = None,
    stop: threading.Event | None = None,
    hook: Callable[[Bench], None] | None = None,
) -> AutotuneResult:
    """Step-test loop ``loop_name`` of the bench and propose gains (module docstring).

    ``step`` in the loop's output units (A, MHz, V); ``settle_s`` the hold at the start output
    before the step, of which the last ``baseline_s`` are recorded; ``duration_s`` the record
    after the step; ``period_s`` the sampling period (default: the loop's); None takes the
    kind's default (:data:`KIND_DEFAULTS`); ``detrend``: remove the baseline's linear drift
    (default: temperature loops only). ``closed_loop_tau_s``: SIMC's tau_c (default: SIMC's,
    the dead time). ``clock``: the simulated bench's virtual clock (a manual one runs the test
    in virtual time). ``stop`` (Ctrl-C) ends the test early with :class:`AutotuneStopped`; an
    interlock trip on the loop's instruments sets it too and ends it with
    :class:`AutotuneError`. ``hook(bench)`` runs once connected and safe-started, before any
    actuator write (tests).
    """
    if model not in MODEL_CHOICES:
        raise AutotuneError(f"--model: got {model!r}, expected one of {', '.join(MODEL_CHOICES)}")
    if closed_loop_tau_s is not None:
        _positive("--tau-c", closed_loop_tau_s)
    cfg = find_loop(config, loop_name)
    plan = plan_test(
        cfg,
        step=step,
        settle_s=settle_s,
        duration_s=duration_s,
        period_s=period_s,
        baseline_s=baseline_s,
        detrend=detrend,
    )
    record = _step_on_bench(
        config,
        cfg,
        plan,
        say=progress or (lambda text: None),
        clock=clock,
        halt=stop if stop is not None else threading.Event(),
        hook=hook,
    )
    t, y, y_fit, drift = condition_record(cfg, record.t_s, record.y, detrend=plan.detrend)
    try:
        fits, recommended = fit_and_propose(
            t,
            y_fit,
            record.u_before,
            record.u_after,
            model=model,
            period_s=plan.period_s,
            closed_loop_tau_s=closed_loop_tau_s,
        )
    except ValueError as exc:
        raise AutotuneError(
            f"loop {cfg.name!r}: the step response cannot be fitted: {exc}"
        ) from exc
    return AutotuneResult(
        loop=cfg.name,
        kind=cfg.kind,
        units=cfg.units,
        period_s=plan.period_s,
        u_before=record.u_before,
        u_after=record.u_after,
        settle_s=plan.settle_s,
        baseline_s=plan.baseline_s,
        duration_s=plan.duration_s,
        closed_loop_tau_s=closed_loop_tau_s,
        drift_per_s=drift,
        fits=fits,
        recommended=recommended,
        configured=cfg.gains,
        configured_derivative_filter_s=cfg.settings.derivative_filter_s,
        t_s=t,
        y=y,
        interlock_events=record.interlock_events,
    )


def _step_on_bench(
    config: BenchConfig,
    cfg: LoopConfig,
    plan: StepPlan,
    *,
    say: Progress,
    clock: VirtualClock | None,
    halt: threading.Event,
    hook: Callable[[Bench], None] | None,
) -> _Record:
    """Steps 1-4 and 6 of the module docstring: the bench part, always left safe."""
    bench = Bench(config, clock=clock)
    interlocks: _Interlocks | None = None
    binding: LoopBinding | None = None
    engaged = False
    try:
        bench.connect(progress=say)
        bench.apply_safe_start(progress=say)
        if hook is not None:
            hook(bench)
        vclock = bench.sim_host.bench.clock if bench.sim_host is not None else None
        lclock = loop_clock(vclock)
        binding = LoopBinding(cfg, bench.instruments, lclock)
        interlocks = _Interlocks(config, bench, cfg, vclock, halt, say)
        interlocks.start()
        interlocks.check_allowed()
        du = choose_step(cfg, binding.present_output(), plan.step)  # nothing written yet
        if cfg.kind == "laser_lock":
            switch_on_for_locks(bench.instruments, [cfg], say)
        u0 = binding.engage() + 0.0  # + 0.0: no "-0" in the report
        engaged = True
        du = choose_step(cfg, u0, du)  # engage may start from a slightly different output
        unit = cfg.units[1]
        say(
            f"loop {cfg.name!r}: {cfg.actuator} handed over at {u0:g} {unit}; holding "
            f"{plan.settle_s:g} s, then a step of {du:+g} {unit} recorded for "
            f"{plan.duration_s:g} s"
        )
        _hold(lclock, plan.settle_s - plan.baseline_s, plan.period_s, binding, interlocks, halt)

        def read() -> float | Reading:
            interlocks.evaluate_if_due(lclock.now_s())
            return binding.read()

        try:
            t_s, y = step_test(
                read, binding.write, u0, u0 + du, plan.duration_s, plan.period_s, lclock,
                baseline_s=plan.baseline_s, stop=halt,
            )  # fmt: skip
        except RuntimeError as exc:
            raise _halted(cfg, interlocks, exc) from exc
        say(f"loop {cfg.name!r}: step recorded ({t_s.size} samples); output back at {u0:g}")
        return _Record(u0, u0 + du, t_s, y, tuple(interlocks.events))
    except InstrumentError as exc:
        raise AutotuneError(f"loop {cfg.name!r}: {exc}") from exc
    finally:
        if engaged and binding is not None:
            try:
                binding.release(cfg.setpoint)
            except Exception:
                log.exception("loop %r: handing %s back failed", cfg.name, cfg.actuator)
        if interlocks is not None:
            interlocks.stop()
        bench.close()


def _hold(
    lclock: LoopClock,
    hold_s: float,
    period_s: float,
    binding: LoopBinding,
    interlocks: _Interlocks,
    halt: threading.Event,
) -> None:
    """Hold the output ``hold_s``, reading the sensor every period (a sensor that fails shows
    before the step; on a manual clock the interlocks are evaluated on the way)."""
    if hold_s <= 0.0:
        return
    t_end = lclock.now_s() + hold_s
    t_next = lclock.now_s()
    while t_next < t_end - 1e-9:
        t_next = min(t_next + period_s, t_end)
        if lclock.wait_until(t_next, halt):
            raise _halted(binding.cfg, interlocks, None)
        interlocks.evaluate_if_due(lclock.now_s())
        binding.read()
        if halt.is_set():
            raise _halted(binding.cfg, interlocks, None)


def _halted(cfg: LoopConfig, interlocks: _Interlocks, exc: Exception | None) -> AutotuneError:
    if interlocks.abort_reason is not None:
        return AutotuneError(f"loop {cfg.name!r}: step test aborted: {interlocks.abort_reason}")
    if interlocks.halt.is_set():
        return AutotuneStopped(
            f"loop {cfg.name!r}: step test stopped by the operator; output restored, "
            "actuator handed back, instruments left safe"
        )
    return AutotuneError(f"loop {cfg.name!r}: step test failed: {exc}")


# ------------------------------------------------------------------------------- rendering
def _fmt(value: float | None, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return format(value, spec)


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows of cells as text lines: first column left-aligned, the others right-aligned."""
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(widths[k]) if k == 0 else cell.rjust(widths[k]) for k, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def format_result(result: AutotuneResult) -> str:
    """The human-readable report: the test, the fitted models, the gains side by side."""
    m_unit, o_unit = result.units
    lines = [
        f"loop {result.loop} ({result.kind}): output {result.u_before:g} -> {result.u_after:g} "
        f"{o_unit} (step {result.step:+g} {o_unit}), sampled every {result.period_s:g} s for "
        f"{result.duration_s:g} s after a {result.settle_s:g} s hold",
    ]
    if result.drift_per_s != 0.0:
        lines.append(
            f"linear drift removed before the fit: {result.drift_per_s:+.3g} {m_unit}/s "
            f"(fitted to the {result.baseline_s:g} s before the step)"
        )
    models = [
        [
            "model",
            f"gain ({m_unit}/{o_unit})",
            "tau1 (s)",
            "tau2 (s)",
            "dead time (s)",
            f"fit rms ({m_unit})",
        ]
    ]
    for f in result.fits:
        m = f.model
        tau2 = m.time_constant2_s if isinstance(m, Sopdt) else None
        models.append(
            [
                f.name.upper(),
                _fmt(m.gain),
                _fmt(m.time_constant_s),
                _fmt(tau2),
                _fmt(m.dead_time_s, ".3g"),
                _fmt(m.rmse, ".3g"),
            ]
        )
    gains = [
        [
            "gains",
            f"kp ({o_unit}/{m_unit})",
            f"ki ({o_unit}/({m_unit} s))",
            f"kd ({o_unit} s/{m_unit})",
            "Ti (s)",
            "Td (s)",
            "d-filter (s)",
        ]
    ]
    entries: list[tuple[str, PidGains, float]] = [
        ("bench file", result.configured, result.configured_derivative_filter_s)
    ]
    for f in result.fits:
        label = f"SIMC {'PI' if f.name == 'fopdt' else 'PID'} ({f.name.upper()})"
        entries.append((label + (" *" if f.name == result.recommended else ""), f.proposed,
                        f.derivative_filter_s))  # fmt: skip
    for label, g, filt in entries:
        gains.append(
            [
                label,
                _fmt(g.kp),
                _fmt(g.ki),
                _fmt(g.kd),
                _fmt(g.integral_time_s),
                _fmt(g.derivative_time_s),
                _fmt(filt),
            ]
        )
    tau_c = "default" if result.closed_loop_tau_s is None else f"{result.closed_loop_tau_s:g} s"
    lines += ["", *_columns(models), "", *_columns(gains)]
    lines.append(f"* proposed; SIMC tau_c {tau_c}, sample period {result.period_s:g} s")
    lines += [f"during the test: {text}" for text in result.interlock_events]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- CLI
def add_parser(subparsers: Any) -> None:
    """Register the ``autotune`` sub-command on an argparse sub-parsers object."""
    parser = subparsers.add_parser(
        "autotune",
        help="step one loop's actuator on the bench, fit a model, propose PID gains",
        description=(
            "Hand one [[loops]] actuator over as the loop would, hold it, step it, record the "
            "sensor, fit a first- (FOPDT) or second-order (SOPDT) plus dead time model and "
            "propose SIMC gains beside the bench file's. The actuator is handed back and the "
            "bench left safe at the end, on an error and on Ctrl-C."
        ),
    )
    parser.add_argument(
        "config",
        nargs="?",
        default=None,
        help=f"bench file (TOML); default: the simulated entanglement bench "
        f"({DEFAULT_AUTOTUNE_CONFIG.name})",
    )
    parser.add_argument("--loop", required=True, metavar="NAME", help="the loop to tune")
    parser.add_argument(
        "--step",
        type=float,
        default=None,
        metavar="DELTA",
        help="output step in the loop's output units (A, MHz, V); default per kind: "
        + ", ".join(f"{k} {d.step:g}" for k, d in KIND_DEFAULTS.items()),
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        dest="settle_s",
        metavar="S",
        help="hold the start output S seconds before the step (default per kind: "
        + ", ".join(f"{k} {d.settle_s:g}" for k, d in KIND_DEFAULTS.items())
        + ")",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        dest="duration_s",
        metavar="S",
        help="record S seconds after the step (default per kind: "
        + ", ".join(f"{k} {d.duration_s:g}" for k, d in KIND_DEFAULTS.items())
        + ")",
    )
    parser.add_argument(
        "--period",
        type=float,
        default=None,
        dest="period_s",
        metavar="S",
        help="sampling period (default: the loop's period, 1 / rate_hz)",
    )
    parser.add_argument(
        "--tau-c",
        type=float,
        default=None,
        dest="closed_loop_tau_s",
        metavar="S",
        help="SIMC closed-loop time constant (default: the fitted dead time, floored at "
        "a tenth of the time constant)",
    )
    parser.add_argument(
        "--model",
        choices=MODEL_CHOICES,
        default="fopdt",
        help="fopdt (PI), sopdt (PID) or both (default fopdt)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def _stop_on_ctrl_c() -> tuple[threading.Event, Any]:
    """First Ctrl-C sets the event (the test ends, the bench is left safe); a second one
    raises KeyboardInterrupt. Returns (event, previous handler or None off the main thread)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return stop, None

    def interrupt(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        print(
            f"{_PROG}: stopping: output restored, actuator handed back (Ctrl-C again to abort)",
            file=sys.stderr,
            flush=True,
        )
        stop.set()

    return stop, signal.signal(signal.SIGINT, interrupt)


def run(args: argparse.Namespace) -> int:
    """Execute ``labctl autotune``; returns the exit code (0 ok, 1 error, 130 Ctrl-C)."""

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    stop, previous = _stop_on_ctrl_c()
    try:
        config = load_bench(args.config if args.config is not None else DEFAULT_AUTOTUNE_CONFIG)
        result = run_autotune(
            config,
            args.loop,
            step=args.step,
            settle_s=args.settle_s,
            duration_s=args.duration_s,
            period_s=args.period_s,
            closed_loop_tau_s=args.closed_loop_tau_s,
            model=args.model,
            progress=progress,
            stop=stop,
        )
    except AutotuneStopped as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 130
    except (AutotuneError, ConfigError, InstrumentError) as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if args.json:
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print(format_result(result))
    return 0


__all__ = [
    "DEFAULT_AUTOTUNE_CONFIG",
    "KIND_DEFAULTS",
    "AutotuneError",
    "AutotuneResult",
    "AutotuneStopped",
    "KindDefaults",
    "ModelFit",
    "StepPlan",
    "add_parser",
    "choose_step",
    "condition_record",
    "find_loop",
    "fit_and_propose",
    "format_result",
    "plan_test",
    "run",
    "run_autotune",
]
