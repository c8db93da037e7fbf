"""The ``[[loops]]`` tables of a bench file: feedback loops the bench runs while it works.

Every loop names its kind, the instruments it reads and drives, its rate, its PID gains and
constraints, and the watchdog limits of :mod:`labctl.loop_runner`::

    [[loops]]
    name = "ring-temperature"     # unique; how the CLI, the GUI and the logs name the loop
    kind = "temperature"          # temperature | laser_lock | phase_lock (below)
    rate_hz = 10.0
    setpoint = 25.0               # in the loop's measurement units (below)
    kp = 2.0                      # output units per measurement unit
    ki = 0.4                      # output units per measurement unit per second
    kd = 0.0                      # output units x seconds per measurement unit
    derivative_filter_s = 0.0
    output_min = -1.5             # actuator units; default: the actuator's whole range
    output_max = 1.5
    rate_limit_per_s = 2.0        # max |d output / dt|; default none
    setpoint_ramp_per_s = 0.05    # default: setpoint steps at once
    max_reading_age_s = 1.0       # watchdog: a loop without a fresh reading this long faults
    max_missed_ticks = 10         # watchdog: consecutive missed ticks before the loop faults
    autostart = true              # start with the bench's loops (false: started by hand)

Kinds, with what they read and drive (units of setpoint / output):

``temperature`` (degC / A), keys ``tec``
    The TEC controller in constant-current mode: the loop reads the thermistor
    (``temperature_c``) and writes the TEC current (``current_setpoint_a``). The controller's
    own PID is bypassed, so labctl's gains, rate limit and watchdog hold the stage. On a fault
    the TEC goes to its safe state (setpoint ramp, output off).
``laser_lock`` (MHz / MHz), keys ``laser``, ``wavemeter``, ``setpoint_nm``
    A wavemeter-driven lock (physics.md section 2). The measurement is the wavemeter's
    frequency minus the reference frequency c / ``setpoint_nm`` in MHz (so ``setpoint`` is an
    offset from it, default 0); the output is a frequency correction in MHz applied through the
    laser's fine tuning (``fine_tuning_pm``; one pm is about -125 MHz at 1550 nm). The output
    range defaults to the whole fine-tuning range. On a fault the laser keeps its last tuning
    (emission is an interlock's business, not the lock's).
``phase_lock`` (rad / V), keys ``awg`` ("AWG:CHANNEL" of the phase shifter), ``volts_per_2pi``,
``scope``, ``i_channel``, ``q_channel``, ``dc_v``
    An interferometer held on its reference light: two photodiodes in quadrature on two scope
    inputs give the phase ``atan2(Q - dc, I - dc)``; the phase shifter is driven by the AWG's DC
    level. Errors wrap at 2 pi and the output wraps by ``volts_per_2pi`` when it reaches the end
    of its range (a fringe hop: the same phase one period on). On a fault the AWG output holds
    (its outputs are switched off by the bench's safe state or an interlock).

Everything is checked before anything connects; errors name the key (``loops[2].kp``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drivers.registry import driver_class
from drivers.sim.bench import parse_port
from labctl.config_table import SectionError, Table
from labctl.pid import PidGains, PidSettings

SPEED_OF_LIGHT_M_S = 299_792_458.0
LOOP_KINDS = ("temperature", "laser_lock", "phase_lock")
#: instrument class each kind's keys must name
_KIND_INSTRUMENTS: dict[str, dict[str, str]] = {
    "temperature": {"tec": "tec"},
    "laser_lock": {"laser": "laser", "wavemeter": "wavemeter"},
    "phase_lock": {"scope": "scope"},
}
_COMMON_KEYS = {
    "name",
    "kind",
    "description",
    "rate_hz",
    "setpoint",
    "kp",
    "ki",
    "kd",
    "derivative_filter_s",
    "output_min",
    "output_max",
    "rate_limit_per_s",
    "setpoint_ramp_per_s",
    "tracking_time_s",
    "max_reading_age_s",
    "max_missed_ticks",
    "autostart",
}
_KIND_KEYS: dict[str, set[str]] = {
    "temperature": {"tec"},
    "laser_lock": {"laser", "wavemeter", "setpoint_nm"},
    "phase_lock": {"awg", "volts_per_2pi", "scope", "i_channel", "q_channel", "dc_v"},
}
#: measurement and output units per kind (display, logs)
UNITS: dict[str, tuple[str, str]] = {
    "temperature": ("degC", "A"),
    "laser_lock": ("MHz", "MHz"),
    "phase_lock": ("rad", "V"),
}


def fine_tuning_mhz_per_pm(wavelength_nm: float) -> float:
    """|d frequency / d wavelength| near ``wavelength_nm``: MHz per pm (~124.8 at 1550 nm)."""
    return SPEED_OF_LIGHT_M_S / (wavelength_nm * 1e-9) ** 2 * 1e-12 / 1e6


@dataclass(frozen=True)
class LoopConfig:
    """One checked ``[[loops]]`` table (see the module docstring for the kinds)."""

    name: str
    kind: str
    rate_hz: float
    setpoint: float
    gains: PidGains
    settings: PidSettings
    max_reading_age_s: float
    max_missed_ticks: int
    autostart: bool = True
    description: str = ""
    #: temperature
    tec: str | None = None
    #: laser_lock
    laser: str | None = None
    wavemeter: str | None = None
    setpoint_nm: float | None = None
    #: phase_lock
    awg: tuple[str, int] | None = None
    volts_per_2pi: float | None = None
    scope: str | None = None
    i_channel: int | None = None
    q_channel: int | None = None
    dc_v: float | None = None

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def units(self) -> tuple[str, str]:
        """(measurement units, output units)."""
        return UNITS[self.kind]

    @property
    def actuator(self) -> str:
        """The instrument the loop drives (interlocks pause the loop when it goes safe)."""
        if self.kind == "temperature":
            return str(self.tec)
        if self.kind == "laser_lock":
            return str(self.laser)
        assert self.awg is not None
        return self.awg[0]

    @property
    def reference_hz(self) -> float:
        """laser_lock: the frequency the measurement is relative to (c / setpoint_nm)."""
        if self.setpoint_nm is None:
            raise ValueError(f"loop {self.name!r} has no setpoint_nm")
        return SPEED_OF_LIGHT_M_S / (self.setpoint_nm * 1e-9)


def _instrument(t: Table, key: str, expected_class: str, classes: Mapping[str, str]) -> str:
    name = t.string(key)
    if name not in classes:
        known = ", ".join(sorted(classes))
        raise SectionError(
            t.key(key), f"got {name!r}, expected an instrument of the bench ({known})"
        )
    if classes[name] != expected_class:
        raise SectionError(
            t.key(key), f"{name!r} is a {classes[name]}, expected a {expected_class}"
        )
    return name


def _optional(t: Table, key: str) -> float | None:
    return None if t.data.get(key) is None else t.number(key)


def _range_of(
    instrument: str,
    setting: str,
    models: Mapping[str, str],
    limits: Mapping[str, Mapping[str, tuple[float, float]]],
) -> tuple[float, float]:
    """Allowed range of ``instrument.setting``: the model's range within the bench limits."""
    lo, hi = -math.inf, math.inf
    declared = driver_class(models[instrument]).settings().get(setting)
    if declared is not None and declared.model_range is not None:
        lo, hi = float(declared.model_range.low), float(declared.model_range.high)
    bench = limits.get(instrument, {}).get(setting)
    if bench is not None:
        lo, hi = max(lo, float(bench[0])), min(hi, float(bench[1]))
    return lo, hi


def _parse_loop(
    data: Any,
    prefix: str,
    classes: Mapping[str, str],
    models: Mapping[str, str],
    limits: Mapping[str, Mapping[str, tuple[float, float]]],
) -> LoopConfig:
    if not isinstance(data, dict):
        raise SectionError(prefix, f"got {data!r}, expected a table")
    kind = data.get("kind")
    if kind not in LOOP_KINDS:
        raise SectionError(
            f"{prefix}.kind", f"got {kind!r}, expected one of {', '.join(LOOP_KINDS)}"
        )
    t = Table(data, prefix, _COMMON_KEYS | _KIND_KEYS[kind])
    name = t.string("name")
    refs = {key: _instrument(t, key, cls, classes) for key, cls in _KIND_INSTRUMENTS[kind].items()}
    extra: dict[str, Any] = dict(refs)
    measurement_range = (-math.inf, math.inf)
    if kind == "temperature":
        output_range = _range_of(refs["tec"], "current_setpoint_a", models, limits)
        current_limit = limits.get(refs["tec"], {}).get("current_limit_a")
        if current_limit is not None:
            output_range = (
                max(output_range[0], -current_limit[1]),
                min(output_range[1], current_limit[1]),
            )
        measurement_range = _range_of(refs["tec"], "setpoint_c", models, limits)
        setpoint = t.number("setpoint")
    elif kind == "laser_lock":
        setpoint_nm = t.positive("setpoint_nm")
        lo, hi = _range_of(refs["laser"], "wavelength_nm", models, limits)
        if not lo <= setpoint_nm <= hi:
            raise SectionError(
                t.key("setpoint_nm"),
                f"got {setpoint_nm:g}, outside {refs['laser']}'s wavelength_nm range "
                f"[{lo:g}, {hi:g}]",
            )
        extra["setpoint_nm"] = setpoint_nm
        pm_lo, pm_hi = _range_of(refs["laser"], "fine_tuning_pm", models, limits)
        mhz_per_pm = fine_tuning_mhz_per_pm(setpoint_nm)
        # more pm is a longer wavelength: a lower frequency
        output_range = (-pm_hi * mhz_per_pm, -pm_lo * mhz_per_pm)
        setpoint = t.number("setpoint", 0.0)
    else:
        port = t.string("awg")
        try:
            awg, channel = parse_port(port)
        except ValueError:
            raise SectionError(t.key("awg"), f'got {port!r}, expected "AWG:CHANNEL"') from None
        if classes.get(awg) != "awg":
            raise SectionError(t.key("awg"), f"{awg!r} is not an awg of the bench")
        extra["awg"] = (awg, channel)
        extra["volts_per_2pi"] = t.positive("volts_per_2pi")
        extra["i_channel"] = t.integer("i_channel")
        extra["q_channel"] = t.integer("q_channel")
        if extra["i_channel"] == extra["q_channel"]:
            raise SectionError(t.key("q_channel"), "must differ from i_channel")
        extra["dc_v"] = t.number("dc_v", 0.0)
        output_range = _range_of(awg, "offset_v", models, limits)
        if output_range[1] - output_range[0] < extra["volts_per_2pi"]:
            raise SectionError(
                t.key("volts_per_2pi"),
                f"{awg}'s offset_v range [{output_range[0]:g}, {output_range[1]:g}] V must span "
                f"at least one period ({extra['volts_per_2pi']:g} V) so the lock can wrap",
            )
        setpoint = t.number("setpoint", 0.0)
    if not measurement_range[0] <= setpoint <= measurement_range[1]:
        raise SectionError(
            t.key("setpoint"),
            f"got {setpoint:g}, outside [{measurement_range[0]:g}, {measurement_range[1]:g}] "
            "(the instrument's limits)",
        )
    out_min = t.number("output_min", output_range[0])
    out_max = t.number("output_max", output_range[1])
    for key, value in (("output_min", out_min), ("output_max", out_max)):
        if not output_range[0] <= value <= output_range[1]:
            raise SectionError(
                t.key(key),
                f"got {value:g}, outside the actuator's range [{output_range[0]:g}, "
                f"{output_range[1]:g}] {UNITS[kind][1]}",
            )
    try:
        gains = PidGains(t.number("kp"), t.number("ki", 0.0), t.number("kd", 0.0))
    except ValueError as exc:
        raise SectionError(f"{prefix}.kp", str(exc)) from None
    try:
        settings = PidSettings(
            output_min=out_min,
            output_max=out_max,
            rate_limit_per_s=_optional(t, "rate_limit_per_s"),
            derivative_filter_s=t.number("derivative_filter_s", 0.0),
            setpoint_ramp_per_s=_optional(t, "setpoint_ramp_per_s"),
            error_wrap=2 * math.pi if kind == "phase_lock" else None,
            tracking_time_s=_optional(t, "tracking_time_s"),
        )
    except ValueError as exc:
        raise SectionError(prefix, str(exc)) from None
    autostart = data.get("autostart", True)
    if not isinstance(autostart, bool):
        raise SectionError(t.key("autostart"), f"got {autostart!r}, expected true or false")
    rate_hz = t.positive("rate_hz")
    return LoopConfig(
        name=name,
        kind=kind,
        rate_hz=rate_hz,
        setpoint=setpoint,
        gains=gains,
        settings=settings,
        max_reading_age_s=t.positive("max_reading_age_s", max(1.0, 5.0 / rate_hz)),
        max_missed_ticks=t.integer("max_missed_ticks", 10),
        autostart=autostart,
        description=str(data.get("description", "")),
        **extra,
    )


def parse_loops(
    data: Any,
    classes: Mapping[str, str],
    models: Mapping[str, str],
    limits: Mapping[str, Mapping[str, tuple[float, float]]],
) -> tuple[LoopConfig, ...]:
    """Check a bench file's ``loops`` value (an array of tables); SectionError names the key."""
    if not isinstance(data, list):
        raise SectionError("loops", "expected an array of tables: [[loops]]")
    loops = tuple(
        _parse_loop(item, f"loops[{k}]", classes, models, limits) for k, item in enumerate(data)
    )
    names: set[str] = set()
    actuators: dict[tuple[str, Any], str] = {}
    for k, loop in enumerate(loops):
        if loop.name in names:
            raise SectionError(f"loops[{k}].name", f"duplicate loop name {loop.name!r}")
        names.add(loop.name)
        target = (loop.actuator, loop.awg)
        if target in actuators:
            raise SectionError(
                f"loops[{k}]",
                f"drives the same actuator as loop {actuators[target]!r}: two loops would fight",
            )
        actuators[target] = loop.name
    return loops
