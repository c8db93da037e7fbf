"""Interlocks: declarative rules in the bench file, evaluated by an independent watchdog.

A rule says *when* (one condition on one instrument, held for a debounce time) and *then*
(instruments driven to their safe state, optional Python callbacks). Example::

    [[interlocks]]
    name = "pumps-off-on-ring-temperature"      # unique
    description = "The ring drifts off the pump resonance: stop pumping"
    when = { instrument = "tec1", quantity = "temperature_error_c", above = 0.05, for_s = 2.0 }
    then = { safe = ["pump0", "pump10"] }       # each instrument's safe_state()
    latch = true                                # default: tripped until reset() succeeds

    [[interlocks]]
    name = "pumps-off-when-tec-unreachable"
    when = { instrument = "tec1", unreachable_for_s = 3.0 }
    then = { safe = ["pump0", "pump10"] }

    [[interlocks]]
    name = "awg-off-on-scope-overload"
    when = { instrument = "scope1", condition = "overload" }
    then = { safe = ["awg1"] }

The section may also be a table of named rules (``[interlocks.NAME]``, no ``name`` key).

``when`` holds ``instrument`` and exactly one of

* ``quantity``: any readable setting of the instrument's driver, or a derived quantity of
  its class (:data:`DERIVED_QUANTITIES`, e.g. ``temperature_error_c`` of a TEC). Numeric
  quantities take ``above`` and/or ``below`` (both: outside the window trips) and an
  optional ``hysteresis`` (same units): a tripped rule only counts as clear once the value
  is back inside the window by that margin. Boolean and enumerated settings take
  ``equals``. Per-channel settings take ``channel``; without it every channel is watched
  and any one of them trips the rule.
* ``condition``: a named condition of the instrument's class (:data:`CONDITIONS`:
  ``overload`` of a scope, ``fault`` of a TEC).
* ``unreachable_for_s``: every probe of the instrument has failed (driver timeout, refused
  or dropped link, garbled reply) for that long.

``for_s`` (default 0) is the debounce of quantities and conditions: the condition must be
seen on consecutive evaluations spanning at least ``for_s`` seconds before the rule trips.

Semantics
---------
A rule is *armed*, *pending* (violated, debounce running) or *tripped*. On a trip the
watchdog logs why, calls ``safe_state()`` of every instrument in ``then.safe`` (each one is
attempted even if another fails; a failed one is retried at every evaluation until it
succeeds) and calls the rule's callbacks and the watchdog's listeners, so control loops can
stop writing to what was switched off (:meth:`InterlockWatchdog.check_allowed`). The
interlock never switches anything back on. A latched rule stays tripped until
:meth:`InterlockWatchdog.reset` succeeds, which it only does when a fresh reading shows the
condition clear and every safe-state action has succeeded; a non-latched rule re-arms by
itself when the condition clears. Every trip, action result and reset (or refused reset) is
an :class:`InterlockEvent`: kept in memory, sent to the ``logging`` logger and appended to a
JSON-lines file, flushed and synced per entry.

A reset takes its own fresh probe (waited for outside the watchdog's lock, so evaluations
go on meanwhile); readings from probes issued before an accepted reset are not used for that
rule, so a slow probe started while the fault was present cannot re-trip it.

A rule on an instrument that cannot be read neither trips nor clears: losing contact is
what ``unreachable_for_s`` rules are for (write one for every instrument whose loss matters).
A safe-state action runs on its instrument's worker, after that instrument's probe if one is
queued (the driver's lock serialises them anyway; the wait is bounded by its timeouts).

Timing
------
Each instrument has its own worker thread (a one-thread executor) that runs its probes and
its safe-state actions, so an instrument that blocks (a dead serial line, a driver busy in
reconnection attempts) never stops the other rules from being evaluated. Per evaluation an
instrument is probed once, reading the union of what its rules need (settings, derived
quantities' inputs, named conditions; the identity query when only reachability matters),
and a new probe is only started when the previous one has finished. The watchdog waits at
most ``period_s`` for the probes of one evaluation, then judges the rules on the readings it
has; an instrument whose probe is still running contributes no new reading that time.

Detection delay of a lost instrument: the first probe after the loss fails once the
driver's ``timeout_s`` expires (a refused connection fails at once), which starts the
unreachable clock at that probe's start; the rule trips at the first evaluation at least
``unreachable_for_s`` later. Later probes may block longer in the driver's reconnection
attempts (up to ``reconnect_attempts * resync_timeout_s``): that does not delay the trip,
which only needs "no success since". A probe still running after ``probe_stall_s`` (a lock
held elsewhere, a driver without a timeout) also counts as failed from its start.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from drivers.instrument import Instrument
from drivers.registry import driver_class
from drivers.scope import Oscilloscope
from drivers.settings import Setting
from drivers.tec import TecCondition, TemperatureController
from labctl.config_table import SectionError, Table

if TYPE_CHECKING:
    from labctl.config import BenchConfig

log = logging.getLogger(__name__)

Value = float | bool | str
RuleState = Literal["armed", "pending", "tripped"]
EventKind = Literal["trip", "action", "action_failed", "reset", "reset_refused"]
#: a setting read by a probe: (setting name, channel or None)
ReadKey = tuple[str, int | None]

_EPS_S = 1e-9  # float slack when comparing held times with for_s


# ---------------------------------------------------------------------------------------------
# Derived quantities and named conditions, per instrument class (extensible registries)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DerivedQuantity:
    """A number computed from readable settings of one instrument.

    ``compute`` receives the values of ``inputs`` (settings without channels) in order.
    """

    name: str
    units: str
    doc: str
    inputs: tuple[str, ...]
    compute: Callable[..., float]


def _absolute_difference(measured: float, setpoint: float) -> float:
    return abs(float(measured) - float(setpoint))


#: instrument class -> derived quantity name -> definition (see :func:`register_derived_quantity`)
DERIVED_QUANTITIES: dict[str, dict[str, DerivedQuantity]] = {
    "tec": {
        "temperature_error_c": DerivedQuantity(
            name="temperature_error_c",
            units="degC",
            doc="|measured - setpoint| temperature: how far the stage is from where the "
            "controller should hold it (a microring moves ~10 pm/K, physics.md section 2)",
            inputs=("temperature_c", "setpoint_c"),
            compute=_absolute_difference,
        )
    }
}


def register_derived_quantity(instrument_class: str, quantity: DerivedQuantity) -> None:
    """Make ``quantity`` usable in rules on instruments of ``instrument_class``.

    Register before bench files are parsed (rules are validated against the registry).
    """
    table = DERIVED_QUANTITIES.setdefault(instrument_class, {})
    if quantity.name in table:
        raise ValueError(f"{instrument_class} already has a derived quantity {quantity.name!r}")
    table[quantity.name] = quantity


@dataclass(frozen=True)
class NamedCondition:
    """A named fault condition of an instrument class.

    ``check`` reads the instrument and returns ``None`` when the condition is clear, else a
    short text saying what is wrong (it goes into the trip reason).
    """

    name: str
    doc: str
    check: Callable[[Instrument], str | None]


def _scope_overload(instrument: Instrument) -> str | None:
    scope = cast(Oscilloscope, instrument)
    tripped = [ch for ch in scope.channels if scope.overloaded(ch)]
    if not tripped:
        return None
    return "input protection tripped on channel " + ", ".join(map(str, tripped))


def _tec_fault(instrument: Instrument) -> str | None:
    faults = cast(TemperatureController, instrument).faults()
    names = [flag.name for flag in TecCondition if flag in faults and flag.name]
    return " | ".join(names) if names else None


#: instrument class -> condition name -> definition (see :func:`register_condition`)
CONDITIONS: dict[str, dict[str, NamedCondition]] = {
    "scope": {
        "overload": NamedCondition(
            "overload",
            "any input channel's overload protection has tripped (latched by the scope "
            "until cleared, so a reset needs the operator to clear it first)",
            _scope_overload,
        )
    },
    "tec": {
        "fault": NamedCondition(
            "fault",
            "the controller reports a condition of drivers.tec.TEC_FAULTS (sensor open or "
            "shorted, TEC open, temperature limit, thermal run-away): the stage is not under "
            "control",
            _tec_fault,
        )
    },
}


def register_condition(instrument_class: str, condition: NamedCondition) -> None:
    """Make ``condition`` usable in rules on instruments of ``instrument_class``."""
    table = CONDITIONS.setdefault(instrument_class, {})
    if condition.name in table:
        raise ValueError(f"{instrument_class} already has a condition {condition.name!r}")
    table[condition.name] = condition


# ---------------------------------------------------------------------------------------------
# Triggers and rules
# ---------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _with_units(value: Any, units: str) -> str:
    return f"{_fmt(value)} {units}" if units else _fmt(value)


@dataclass(frozen=True)
class Verdict:
    """What one reading says about one rule.

    ``violated`` is None when the reading says nothing (instrument not read this time);
    ``clear`` is True only when the reading positively shows the condition gone (beyond the
    hysteresis); ``since_s`` is set by triggers that know when the violation started.
    """

    violated: bool | None
    clear: bool
    text: str
    value: Any = None
    since_s: float | None = None


@dataclass(frozen=True)
class QuantityTrigger:
    """A numeric quantity outside [below, above], or a setting equal to ``equals``."""

    quantity: str
    units: str
    channels: tuple[int | None, ...] = (None,)
    derived: DerivedQuantity | None = None
    above: float | None = None
    below: float | None = None
    equals: bool | str | None = None
    hysteresis: float = 0.0

    def reads(self) -> set[ReadKey]:
        if self.derived is not None:
            return {(name, None) for name in self.derived.inputs}
        return {(self.quantity, ch) for ch in self.channels}

    def label(self, channel: int | None) -> str:
        return self.quantity if channel is None else f"{self.quantity}[{channel}]"

    def values(self, settings: Mapping[ReadKey, Any]) -> dict[str, Value]:
        """The watched value(s), by label, from a probe's settings."""
        if self.derived is not None:
            args = [settings[(name, None)] for name in self.derived.inputs]
            return {self.quantity: float(self.derived.compute(*args))}
        return {self.label(ch): settings[(self.quantity, ch)] for ch in self.channels}

    def violation(self, value: Value) -> str | None:
        """``"> 0.05 degC"`` when ``value`` violates the rule, else None."""
        if self.equals is not None:
            return f"(equals = {_fmt(self.equals)})" if value == self.equals else None
        number = float(value)
        if self.above is not None and number > self.above:
            return f"> {_with_units(self.above, self.units)}"
        if self.below is not None and number < self.below:
            return f"< {_with_units(self.below, self.units)}"
        return None

    def clear(self, value: Value) -> bool:
        """Back inside the window by the hysteresis (or no longer equal)."""
        if self.equals is not None:
            return value != self.equals
        number, margin = float(value), self.hysteresis
        return (self.above is None or number <= self.above - margin) and (
            self.below is None or number >= self.below + margin
        )

    def judge(self, instrument: str, settings: Mapping[ReadKey, Any]) -> Verdict:
        values = self.values(settings)
        shown = next(iter(values.values())) if len(values) == 1 else values
        for label, value in values.items():
            problem = self.violation(value)
            if problem is not None:
                text = f"{instrument} {label} = {_with_units(value, self.units)} {problem}"
                return Verdict(True, False, text, shown)
        text = ", ".join(
            f"{instrument} {k} = {_with_units(v, self.units)}" for k, v in values.items()
        )
        return Verdict(False, all(self.clear(v) for v in values.values()), text, shown)

    def describe(self) -> str:
        if self.equals is not None:
            return f"{self.quantity} = {_fmt(self.equals)}"
        parts = []
        if self.above is not None:
            parts.append(f"{self.quantity} > {_with_units(self.above, self.units)}")
        if self.below is not None:
            parts.append(f"{self.quantity} < {_with_units(self.below, self.units)}")
        return " or ".join(parts)


@dataclass(frozen=True)
class ConditionTrigger:
    """A named condition of the instrument's class is present."""

    condition: NamedCondition

    def judge(self, instrument: str, conditions: Mapping[str, str | None]) -> Verdict:
        detail = conditions[self.condition.name]
        name = self.condition.name
        if detail is None:
            return Verdict(False, True, f"{instrument} {name}: clear", False)
        return Verdict(True, False, f"{instrument} {name}: {detail}", detail)

    def describe(self) -> str:
        return self.condition.name


@dataclass(frozen=True)
class UnreachableTrigger:
    """Every probe has failed for ``after_s`` seconds (the rule's ``for_s``)."""

    after_s: float

    def describe(self) -> str:
        return f"unreachable for {self.after_s:g} s"


Trigger = QuantityTrigger | ConditionTrigger | UnreachableTrigger


@dataclass(frozen=True)
class InterlockRule:
    """One validated rule of the ``[interlocks]`` section."""

    name: str
    instrument: str
    trigger: Trigger
    safe: tuple[str, ...] = ()
    callbacks: tuple[str, ...] = ()
    for_s: float = 0.0
    latch: bool = True
    description: str = ""
    #: where the rule was declared ("interlocks[0]"), for messages
    key: str = ""

    @property
    def instruments(self) -> tuple[str, ...]:
        """The watched instrument, then the ones the rule makes safe (no repeats)."""
        return tuple(dict.fromkeys((self.instrument, *self.safe)))

    def describe(self) -> str:
        """One line: ``when tec1 temperature_error_c > 0.05 degC for 2 s: safe pump0``."""
        when = f"when {self.instrument} {self.trigger.describe()}"
        if self.for_s and not isinstance(self.trigger, UnreachableTrigger):
            when += f" for {self.for_s:g} s"
        actions = [f"safe {', '.join(self.safe)}"] if self.safe else []
        actions += [f"call {', '.join(self.callbacks)}"] if self.callbacks else []
        return f"{when}: {'; '.join(actions)} ({'latching' if self.latch else 'self-clearing'})"


# ---------------------------------------------------------------------------------------------
# Parsing and validation
# ---------------------------------------------------------------------------------------------
_RULE_KEYS = {"name", "description", "when", "then", "latch"}
_WHEN_KEYS = {
    "instrument",
    "quantity",
    "channel",
    "above",
    "below",
    "equals",
    "hysteresis",
    "condition",
    "unreachable_for_s",
    "for_s",
}
_TRIGGER_KINDS = ("quantity", "condition", "unreachable_for_s")
_QUANTITY_ONLY = ("channel", "above", "below", "equals", "hysteresis")
_THEN_KEYS = {"safe", "callbacks"}


def parse_interlocks(config: BenchConfig) -> list[InterlockRule]:
    """The rules of ``config``'s ``[interlocks]`` section (empty when none).

    :func:`labctl.config.parse_bench` validates them with :func:`parse_interlock_section` when
    the bench file is loaded, so a bad rule (``bench.toml: interlocks[1].when.quantity: got
    'temp', expected ...``) fails before anything connects.
    """
    return list(config.interlocks)


def parse_interlock_section(
    section: Any, models: Mapping[str, str], *, prefix: str = "interlocks"
) -> tuple[InterlockRule, ...]:
    """Validate a raw ``[interlocks]`` value against the bench's instruments.

    ``models`` maps each declared instrument name to its model key (drivers.registry).
    Raises :class:`~labctl.config_table.SectionError` with the dotted key path.
    """
    entries: list[tuple[str, str | None, Any]]
    if isinstance(section, list):
        entries = [(f"{prefix}[{k}]", None, entry) for k, entry in enumerate(section)]
    elif isinstance(section, dict):
        if "when" in section or "then" in section:
            raise SectionError(
                prefix, "a single rule: write it as [[interlocks]] (an array of tables)"
            )
        entries = [(f"{prefix}.{name}", name, entry) for name, entry in section.items()]
    else:
        raise SectionError(
            prefix, f"got {section!r}, expected [[interlocks]] tables or [interlocks.NAME] tables"
        )
    rules: list[InterlockRule] = []
    seen: dict[str, str] = {}
    for key, name, entry in entries:
        rule = _parse_rule(key, name, entry, models)
        if rule.name in seen:
            raise SectionError(
                f"{key}.name",
                f"got {rule.name!r}, expected a unique rule name ({seen[rule.name]} has it)",
            )
        seen[rule.name] = key
        rules.append(rule)
    return tuple(rules)


def _subtable(parent: Table, name: str, allowed: set[str], example: str) -> Table:
    if name not in parent.data:
        raise SectionError(parent.key(name), f"missing; expected a table such as {example}")
    return Table(parent.data[name], parent.key(name), allowed)


def _boolean(table: Table, name: str, default: bool) -> bool:
    value = table.data.get(name, default)
    if not isinstance(value, bool):
        raise SectionError(table.key(name), f"got {value!r}, expected true or false")
    return value


def _names(table: Table, name: str) -> tuple[str, ...]:
    value = table.data.get(name, [])
    if not isinstance(value, list):
        raise SectionError(table.key(name), f"got {value!r}, expected a list of names")
    for k, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise SectionError(f"{table.key(name)}[{k}]", f"got {item!r}, expected a name")
        if item in value[:k]:
            raise SectionError(f"{table.key(name)}[{k}]", f"got {item!r} twice")
    return tuple(value)


def _parse_rule(
    key: str, forced_name: str | None, data: Any, models: Mapping[str, str]
) -> InterlockRule:
    rule = Table(data, key, _RULE_KEYS - {"name"} if forced_name is not None else _RULE_KEYS)
    name = forced_name if forced_name is not None else rule.string("name")
    description = rule.data.get("description", "")
    if not isinstance(description, str):
        raise SectionError(rule.key("description"), f"got {description!r}, expected a string")
    latch = _boolean(rule, "latch", True)
    when = _subtable(
        rule,
        "when",
        _WHEN_KEYS,
        '{ instrument = "tec1", quantity = "temperature_error_c", above = 0.05 }',
    )
    instrument = when.string("instrument")
    if instrument not in models:
        raise SectionError(
            when.key("instrument"),
            f"got {instrument!r}, expected a declared instrument: {', '.join(models)}",
        )
    trigger, for_s = _parse_when(when, instrument, models[instrument])

    then = _subtable(rule, "then", _THEN_KEYS, '{ safe = ["pump0"] }')
    safe = _names(then, "safe")
    for k, target in enumerate(safe):
        if target not in models:
            raise SectionError(
                f"{then.key('safe')}[{k}]",
                f"got {target!r}, expected a declared instrument: {', '.join(models)}",
            )
    callbacks = _names(then, "callbacks")
    if not safe and not callbacks:
        raise SectionError(
            then.prefix, 'no action; expected safe = ["INSTRUMENT", ...] and/or callbacks'
        )
    return InterlockRule(
        name=name,
        instrument=instrument,
        trigger=trigger,
        safe=safe,
        callbacks=callbacks,
        for_s=for_s,
        latch=latch,
        description=description,
        key=key,
    )


def _parse_when(when: Table, instrument: str, model: str) -> tuple[Trigger, float]:
    kinds = [k for k in _TRIGGER_KINDS if k in when.data]
    if len(kinds) != 1:
        found = f"; got {', '.join(kinds)}" if kinds else ""
        raise SectionError(
            when.prefix, f"expected exactly one of {', '.join(_TRIGGER_KINDS)}{found}"
        )
    kind = kinds[0]
    if kind != "quantity":
        for extra in _QUANTITY_ONLY:
            if extra in when.data:
                raise SectionError(when.key(extra), f"only used with quantity, not with {kind}")
    driver = driver_class(model)
    iclass = driver.instrument_class
    if kind == "unreachable_for_s":
        if "for_s" in when.data:
            raise SectionError(
                when.key("for_s"), "not used with unreachable_for_s (it is the debounce)"
            )
        after_s = when.number("unreachable_for_s", None, lambda v: v >= 0, "seconds >= 0")
        return UnreachableTrigger(after_s), after_s
    for_s = when.number("for_s", 0.0, lambda v: v >= 0, "seconds >= 0")
    if kind == "condition":
        name = when.string("condition")
        known = CONDITIONS.get(iclass, {})
        if name not in known:
            expected = (
                f"a condition of a {iclass}: {', '.join(known)}"
                if known
                else f"a named condition, but none is defined for class {iclass}"
            )
            raise SectionError(when.key("condition"), f"got {name!r}, expected {expected}")
        return ConditionTrigger(known[name]), for_s
    return _parse_quantity(when, instrument, model, driver.settings(), iclass), for_s


def _parse_quantity(
    when: Table, instrument: str, model: str, settings: Mapping[str, Setting], iclass: str
) -> QuantityTrigger:
    name = when.string("quantity")
    derived = DERIVED_QUANTITIES.get(iclass, {}).get(name)
    setting = settings.get(name)
    if derived is None and (setting is None or not setting.readable):
        readable = [n for n, s in settings.items() if s.readable]
        extra = list(DERIVED_QUANTITIES.get(iclass, {}))
        raise SectionError(
            when.key("quantity"),
            f"got {name!r}, expected a readable quantity of {instrument} ({model}): "
            + ", ".join(readable + [f"{d} (derived)" for d in extra]),
        )
    if derived is not None:
        missing = [s for s in derived.inputs if s not in settings or not settings[s].readable]
        if missing:
            raise SectionError(
                when.key("quantity"),
                f"derived quantity {name!r} needs {', '.join(missing)}, which {model} cannot read",
            )
    channels: tuple[int | None, ...] = (None,)
    if "channel" in when.data:
        if setting is None or setting.channels is None:
            raise SectionError(when.key("channel"), f"{name!r} of {model} has no channels")
        channel = when.data["channel"]
        if isinstance(channel, bool) or channel not in setting.channels:
            raise SectionError(
                when.key("channel"), f"got {channel!r}, expected one of {list(setting.channels)}"
            )
        channels = (int(channel),)
    elif setting is not None and derived is None and setting.channels is not None:
        channels = tuple(setting.channels)

    numeric = derived is not None or (
        setting is not None and setting.kind in (float, int) and setting.choices is None
    )
    units = derived.units if derived is not None else cast(Setting, setting).units
    if not numeric:
        assert setting is not None
        for extra in ("above", "below", "hysteresis"):
            if extra in when.data:
                raise SectionError(
                    when.key(extra), f"{name!r} is not numeric: use equals = <value>"
                )
        if "equals" not in when.data:
            raise SectionError(when.key("equals"), f"missing; {name!r} needs equals = <value>")
        return QuantityTrigger(
            name, units, channels, None, equals=_equals_value(when, setting, name)
        )
    if "equals" in when.data:
        raise SectionError(when.key("equals"), f"{name!r} is numeric: use above and/or below")
    above = when.number("above") if "above" in when.data else None
    below = when.number("below") if "below" in when.data else None
    if above is None and below is None:
        raise SectionError(when.prefix, f"numeric quantity {name!r} needs above and/or below")
    hysteresis = when.number("hysteresis", 0.0, lambda v: v >= 0, f"a number >= 0 ({units})")
    if above is not None and below is not None and not below + 2 * hysteresis <= above:
        problem = "below < above" if hysteresis == 0 else "below + 2 * hysteresis <= above"
        raise SectionError(
            when.key("below"), f"got {below:g} with above = {above:g}, expected {problem}"
        )
    return QuantityTrigger(name, units, channels, derived, above, below, None, hysteresis)


def _equals_value(when: Table, setting: Setting, name: str) -> bool | str:
    value = when.data["equals"]
    if setting.kind is bool:
        if not isinstance(value, bool):
            raise SectionError(when.key("equals"), f"got {value!r}, expected true or false")
        return value
    if setting.choices is not None and value not in setting.choices:
        raise SectionError(
            when.key("equals"), f"got {value!r}, expected one of {', '.join(setting.choices)}"
        )
    if not isinstance(value, str):
        raise SectionError(when.key("equals"), f"got {value!r}, expected a string")
    return value


# ---------------------------------------------------------------------------------------------
# Log entries and status
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InterlockEvent:
    """One entry of the trip log (also one JSON line of the log file)."""

    time_utc: str  #: ISO 8601 wall-clock time of the entry
    time_s: float  #: watchdog clock (monotonic, or the manual time given)
    rule: str
    event: EventKind
    reason: str  #: human readable: what was seen, its value and the threshold
    instruments: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "time_utc": self.time_utc,
            "time_s": self.time_s,
            "rule": self.rule,
            "event": self.event,
            "reason": self.reason,
            "instruments": list(self.instruments),
        }


_LEVELS: dict[str, int] = {
    "trip": logging.WARNING,
    "action": logging.INFO,
    "action_failed": logging.ERROR,
    "reset": logging.INFO,
    "reset_refused": logging.WARNING,
}


@dataclass(frozen=True)
class RuleStatus:
    """Snapshot of one rule: state, since when, the last value seen and why."""

    rule: str
    state: RuleState
    since_s: float | None
    value: Any
    reason: str  #: the trip reason while tripped, else the last reading's text
    actions: dict[str, str]  #: instrument -> "done", "in progress" or "failed: ..."


@dataclass(frozen=True)
class InstrumentHealth:
    """Snapshot of one probed instrument."""

    instrument: str
    reachable: bool | None  #: None until a first probe has finished
    probe_in_flight: bool
    unreachable_since_s: float | None
    last_error: str


class InterlockHeld(RuntimeError):
    """A write was asked for on an instrument a tripped interlock holds in its safe state."""


# ---------------------------------------------------------------------------------------------
# Probing
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    """What one probe of an instrument reads (the union over its rules)."""

    settings: tuple[ReadKey, ...]
    conditions: tuple[NamedCondition, ...]


@dataclass(frozen=True)
class _Reading:
    ok: bool
    settings: dict[ReadKey, Any] = field(default_factory=dict)
    conditions: dict[str, str | None] = field(default_factory=dict)
    error: str = ""


def _probe(instrument: Instrument, plan: _Plan) -> _Reading:
    """Read everything in ``plan`` (runs in the instrument's worker thread)."""
    try:
        settings = {key: instrument.get(key[0], key[1]) for key in plan.settings}
        conditions = {c.name: c.check(instrument) for c in plan.conditions}
        if not plan.settings and not plan.conditions:
            instrument.query(instrument.identity_query)
    except Exception as exc:  # any failure to read counts: the rule must not see a value
        return _Reading(False, error=f"{type(exc).__name__}: {exc}")
    return _Reading(True, settings, conditions)


@dataclass(frozen=True)
class _Sample:
    """A finished probe: its reading, when it started and its sequence number."""

    reading: _Reading
    started_s: float
    seq: int


@dataclass
class _Health:
    """Reachability of one instrument, from its probes.

    Probes are numbered in the order they are issued (evaluations and resets share the
    numbering); an observation older than the last success is ignored, so a slow probe that
    fails after a newer one succeeded cannot restart the unreachable clock.
    """

    name: str
    plan: _Plan
    future: Future[_Reading] | None = None  #: the evaluations' probe in flight
    seq: int = 0  #: its sequence number
    submitted_s: float = 0.0  #: and when it was issued
    issued: int = 0
    last_ok_seq: int = 0  #: 0: never answered yet
    fail_seq: int | None = None  #: first failed probe after the last success
    fail_since_s: float | None = None
    last_error: str = ""

    @property
    def reachable(self) -> bool | None:
        if self.fail_seq is None:
            return None if self.last_ok_seq == 0 else True
        return False

    def issue(self) -> int:
        self.issued += 1
        return self.issued

    def observe(self, seq: int, started_s: float, ok: bool, error: str = "") -> None:
        if ok:
            if seq > self.last_ok_seq:
                self.last_ok_seq = seq
                if self.fail_seq is not None and self.fail_seq <= seq:
                    self.fail_seq, self.fail_since_s, self.last_error = None, None, ""
        elif seq > self.last_ok_seq:
            self.last_error = error
            if self.fail_seq is None:
                self.fail_seq, self.fail_since_s = seq, started_s

    def collect(self, now_s: float, stall_s: float) -> _Sample | None:
        """The evaluations' finished probe, or None (none, or still running)."""
        future = self.future
        if future is None:
            return None
        if future.cancelled():  # its worker was shut down before it ran
            self.future = None
            return None
        if not future.done():
            if now_s - self.submitted_s >= stall_s:
                waited = f"probe still running after {now_s - self.submitted_s:.3g} s"
                self.observe(self.seq, self.submitted_s, False, waited)
            return None
        self.future = None
        reading = future.result()
        self.observe(self.seq, self.submitted_s, reading.ok, reading.error)
        return _Sample(reading, self.submitted_s, self.seq)


@dataclass
class _Action:
    target: str
    future: Future[None] | None = None
    attempts: int = 0
    done: bool = False
    error: str = ""
    logged_error: str = ""


@dataclass
class _Tracker:
    """Mutable state of one rule."""

    state: RuleState = "armed"
    since_s: float | None = None
    value: Any = None
    text: str = ""
    trip_reason: str = ""
    actions: dict[str, _Action] = field(default_factory=dict)
    #: readings from probes issued before the last reset are not used
    min_seq: int = 0


# ---------------------------------------------------------------------------------------------
# The watchdog
# ---------------------------------------------------------------------------------------------
Listener = Callable[[InterlockEvent], None]


class InterlockWatchdog:
    """Evaluates interlock rules on its own thread and drives instruments to safe states.

    Parameters
    ----------
    rules:
        Validated rules (:func:`parse_interlocks`).
    instruments:
        Connected drivers by name (``bench.instruments``): the same objects everyone else
        uses; their per-transaction lock makes sharing them safe.
    period_s:
        Evaluation period of :meth:`start`'s thread; also the longest it waits for probes.
    clock:
        Seconds, monotonic: the time base of debounce and unreachable durations.
    log_path:
        JSON-lines trip log, appended to and synced per entry (a crash loses nothing).
    logger:
        Where entries are also logged (WARNING for trips, ERROR for failed actions).
    callbacks:
        Python callables named by rules' ``then.callbacks``, called with the trip event.
    probe_stall_s:
        A probe running this long counts as failed from its start (see the module doc).
    max_log_entries:
        Entries kept in memory (the file keeps all of them).
    """

    def __init__(
        self,
        rules: Iterable[InterlockRule],
        instruments: Mapping[str, Instrument],
        *,
        period_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        log_path: Path | str | None = None,
        logger: logging.Logger | None = None,
        callbacks: Mapping[str, Listener] | None = None,
        probe_stall_s: float = 10.0,
        max_log_entries: int = 10_000,
    ) -> None:
        self.rules: dict[str, InterlockRule] = {}
        for rule in rules:
            if rule.name in self.rules:
                raise ValueError(f"interlock rule {rule.name!r} given twice")
            self.rules[rule.name] = rule
        if not (period_s > 0 and math.isfinite(period_s)):
            raise ValueError(f"period_s must be a finite number > 0, got {period_s!r}")
        if not probe_stall_s > 0:
            raise ValueError(f"probe_stall_s must be > 0, got {probe_stall_s!r}")
        self.callbacks = dict(callbacks or {})
        for rule in self.rules.values():
            for name in rule.instruments:
                if name not in instruments:
                    raise ValueError(
                        f"interlock rule {rule.name!r}: instrument {name!r} is not connected "
                        f"(connected: {', '.join(instruments) or 'none'})"
                    )
            for name in rule.callbacks:
                if name not in self.callbacks:
                    raise ValueError(
                        f"interlock rule {rule.name!r}: callback {name!r} is not registered "
                        f"(registered: {', '.join(self.callbacks) or 'none'})"
                    )
        self.instruments = dict(instruments)
        self.period_s = float(period_s)
        self.probe_stall_s = float(probe_stall_s)
        self.log_path = Path(log_path) if log_path is not None else None
        self.logger = logger if logger is not None else log
        self._clock = clock
        self._health = {name: _Health(name, plan) for name, plan in self._plans().items()}
        self._trackers = {name: _Tracker() for name in self.rules}
        self._workers: dict[str, ThreadPoolExecutor] = {}
        self._listeners: list[Listener] = []
        self._log: deque[InterlockEvent] = deque(maxlen=max_log_entries)
        self._eval_lock = threading.RLock()  # one evaluation or reset at a time
        self._state_lock = threading.Lock()  # trackers, read by status() from any thread
        self._log_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _plans(self) -> dict[str, _Plan]:
        reads: dict[str, set[ReadKey]] = {}
        conditions: dict[str, dict[str, NamedCondition]] = {}
        for rule in self.rules.values():
            reads.setdefault(rule.instrument, set())
            conditions.setdefault(rule.instrument, {})
            if isinstance(rule.trigger, QuantityTrigger):
                reads[rule.instrument] |= rule.trigger.reads()
            elif isinstance(rule.trigger, ConditionTrigger):
                cond = rule.trigger.condition
                conditions[rule.instrument][cond.name] = cond
        return {
            name: _Plan(
                tuple(sorted(reads[name], key=lambda k: (k[0], k[1] or 0))),
                tuple(conditions[name].values()),
            )
            for name in reads
        }

    # -- thread ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Evaluate every ``period_s`` on a daemon thread until :meth:`stop`."""
        if self.running:
            raise RuntimeError("the interlock watchdog is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="interlock-watchdog", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread and the workers (safe states already started or queued still run)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        with self._eval_lock:
            for worker in self._workers.values():
                worker.shutdown(wait=False)  # queued safe states still run
            self._workers.clear()

    def __enter__(self) -> InterlockWatchdog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        next_s = time.monotonic()
        while not self._stop.is_set():
            try:
                self.evaluate_once(probe_wait_s=self.period_s)
            except Exception:  # the watchdog must outlive any bug in one evaluation
                self.logger.exception("interlock evaluation failed")
            next_s += self.period_s
            delay = next_s - time.monotonic()
            if delay < 0:
                next_s, delay = time.monotonic(), 0.0
            self._stop.wait(delay)

    def _worker(self, name: str) -> ThreadPoolExecutor:
        worker = self._workers.get(name)
        if worker is None:
            worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"interlock-{name}")
            self._workers[name] = worker
        return worker

    # -- evaluation ------------------------------------------------------------------------
    def evaluate_once(
        self, now_s: float | None = None, *, probe_wait_s: float | None = None
    ) -> list[InterlockEvent]:
        """Probe, judge every rule, act; returns the log entries this produced.

        ``now_s`` replaces the clock (tests, manual clocks). ``probe_wait_s`` bounds the wait
        for probes and the safe-state actions they start (wall-clock seconds); None waits for
        all of them, so the safe states have been applied (or have failed) when this returns.
        What is not finished in time is picked up by a later evaluation.
        """
        events: list[InterlockEvent] = []
        with self._eval_lock:
            deadline = None if probe_wait_s is None else time.monotonic() + probe_wait_s
            now = float(self._clock()) if now_s is None else float(now_s)
            self._collect_actions(now, events)
            for health in self._health.values():
                if health.future is None:
                    health.seq, health.submitted_s = health.issue(), now
                    health.future = self._worker(health.name).submit(
                        _probe, self.instruments[health.name], health.plan
                    )
            probes = [h.future for h in self._health.values() if h.future is not None]
            wait_futures(probes, timeout=probe_wait_s)
            readings = {
                name: health.collect(now, self.probe_stall_s)
                for name, health in self._health.items()
            }
            trips: list[InterlockRule] = []
            with self._state_lock:
                for rule in self.rules.values():
                    event = self._step(rule, readings[rule.instrument], now)
                    if event is not None:
                        events.append(event)
                        if event.event == "trip":
                            trips.append(rule)
            self._dispatch_actions()
            # wait for the safe states in what is left of the wait (all of them if unbounded)
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            wait_futures(self._action_futures(), timeout=remaining)
            self._collect_actions(now, events)
        for event in events:
            self._emit(event)
        for rule in trips:
            trip = next(e for e in events if e.rule == rule.name and e.event == "trip")
            for event in self._call_callbacks(rule, trip, now):
                self._emit(event)
        return events

    def _verdict(
        self, rule: InterlockRule, sample: _Sample | None, now_s: float
    ) -> tuple[Verdict, float]:
        """The rule's verdict and the time it applies to."""
        trigger = rule.trigger
        health = self._health[rule.instrument]
        if isinstance(trigger, UnreachableTrigger):
            if health.fail_since_s is not None:
                held = now_s - health.fail_since_s
                text = (
                    f"{rule.instrument} unreachable for {held:.3g} s "
                    f"(unreachable_for_s = {rule.for_s:g} s), last error: {health.last_error}"
                )
                return Verdict(True, False, text, held, health.fail_since_s), now_s
            if health.reachable:
                return Verdict(False, True, f"{rule.instrument} answers", 0.0), now_s
            return Verdict(None, False, f"{rule.instrument} not probed yet"), now_s
        if sample is None:
            return Verdict(None, False, f"{rule.instrument}: no new reading"), now_s
        result, taken_s = sample.reading, sample.started_s
        if not result.ok:
            text = f"{rule.instrument} could not be read: {result.error}"
            return Verdict(None, False, text), taken_s
        try:
            if isinstance(trigger, QuantityTrigger):
                return trigger.judge(rule.instrument, result.settings), taken_s
            return trigger.judge(rule.instrument, result.conditions), taken_s
        except Exception as exc:  # a bad reply or a derived-quantity bug: no verdict
            text = f"{rule.instrument}: reading not usable: {type(exc).__name__}: {exc}"
            return Verdict(None, False, text), taken_s

    def _step(
        self, rule: InterlockRule, sample: _Sample | None, now_s: float
    ) -> InterlockEvent | None:
        """Advance one rule's state machine (under the state lock)."""
        tracker = self._trackers[rule.name]
        if sample is not None and sample.seq < tracker.min_seq:
            sample = None  # taken before the operator's reset: superseded
        verdict, sample_s = self._verdict(rule, sample, now_s)
        if verdict.violated is not None:
            tracker.value, tracker.text = verdict.value, verdict.text
        if tracker.state == "tripped":
            if not rule.latch and verdict.clear and self._actions_done(tracker):
                self._rearm(tracker, sample_s)
                return self._event(
                    now_s, rule, "reset", f"condition cleared: {verdict.text}", (rule.instrument,)
                )
            return None
        if verdict.violated is None:
            return None  # nothing new: a pending debounce keeps running
        if not verdict.violated:
            self._rearm(tracker, sample_s)
            return None
        start_s = verdict.since_s
        if start_s is None:
            start_s = tracker.since_s if tracker.state == "pending" else sample_s
        held_s = sample_s - start_s
        if held_s + _EPS_S < rule.for_s:
            tracker.state, tracker.since_s = "pending", start_s
            return None
        reason = verdict.text
        if rule.for_s > 0 and not isinstance(rule.trigger, UnreachableTrigger):
            reason += f" for {held_s:.3g} s (for_s = {rule.for_s:g} s)"
        tracker.state, tracker.since_s, tracker.trip_reason = "tripped", sample_s, reason
        tracker.actions = {target: _Action(target) for target in rule.safe}
        return self._event(now_s, rule, "trip", reason, rule.instruments)

    @staticmethod
    def _rearm(tracker: _Tracker, now_s: float) -> None:
        if tracker.state != "armed":
            tracker.since_s = now_s
        tracker.state, tracker.trip_reason, tracker.actions = "armed", "", {}

    @staticmethod
    def _actions_done(tracker: _Tracker) -> bool:
        return all(a.done for a in tracker.actions.values())

    # -- actions ---------------------------------------------------------------------------
    def _dispatch_actions(self) -> None:
        """Start the safe state of every target not yet safe and not in progress."""
        with self._state_lock:
            for tracker in self._trackers.values():
                for action in tracker.actions.values():
                    if not action.done and action.future is None:
                        action.attempts += 1
                        action.future = self._worker(action.target).submit(
                            self.instruments[action.target].safe_state
                        )

    def _action_futures(self) -> list[Future[None]]:
        with self._state_lock:
            return [
                a.future
                for t in self._trackers.values()
                for a in t.actions.values()
                if a.future is not None
            ]

    def _collect_actions(self, now_s: float, events: list[InterlockEvent]) -> None:
        """Log finished safe-state actions.

        A failure is logged when its message differs from the last one logged for that
        action, so a target that stays unreachable does not flood the log at every retry;
        the success after retries says how many attempts it took.
        """
        with self._state_lock:
            for name, tracker in self._trackers.items():
                rule = self.rules[name]
                for action in tracker.actions.values():
                    future = action.future
                    if future is None or not future.done():
                        continue
                    action.future = None
                    if future.cancelled():  # the worker was shut down: dispatched again
                        action.attempts -= 1
                        continue
                    exc = future.exception()
                    if exc is None:
                        action.done, action.error = True, ""
                        tries = f" after {action.attempts} attempts" if action.attempts > 1 else ""
                        reason = f"{action.target} safe state applied{tries}"
                        events.append(self._event(now_s, rule, "action", reason, (action.target,)))
                        continue
                    action.error = f"{type(exc).__name__}: {exc}"
                    if action.error != action.logged_error:
                        action.logged_error = action.error
                        reason = (
                            f"{action.target} safe state failed (attempt {action.attempts}, "
                            f"retried at every evaluation): {action.error}"
                        )
                        events.append(
                            self._event(now_s, rule, "action_failed", reason, (action.target,))
                        )

    def _call_callbacks(
        self, rule: InterlockRule, trip: InterlockEvent, now_s: float
    ) -> list[InterlockEvent]:
        events = []
        for name in rule.callbacks:
            try:
                self.callbacks[name](trip)
            except Exception as exc:
                reason = f"callback {name} failed: {type(exc).__name__}: {exc}"
                events.append(self._event(now_s, rule, "action_failed", reason, ()))
            else:
                events.append(self._event(now_s, rule, "action", f"callback {name} called", ()))
        return events

    # -- reset -----------------------------------------------------------------------------
    def reset(
        self, name: str, *, now_s: float | None = None, timeout_s: float | None = None
    ) -> bool:
        """Re-arm a tripped rule if a fresh reading shows its condition clear.

        The fresh probe runs on the instrument's worker (after any probe already queued
        there) and is waited for without holding up the evaluations; ``timeout_s`` bounds
        that wait (None: until the driver answers or gives up). Also refused while a
        safe-state action of the rule has not succeeded. Both outcomes are logged. Returns
        True when the rule is armed afterwards (a rule that is not tripped is left alone and
        nothing is logged).
        """
        rule = self._rule(name)
        with self._eval_lock:
            now = float(self._clock()) if now_s is None else float(now_s)
            with self._state_lock:
                if self._trackers[name].state != "tripped":
                    return True
            health = self._health[rule.instrument]
            seq = health.issue()
            future = self._worker(rule.instrument).submit(
                _probe, self.instruments[rule.instrument], health.plan
            )
        done, _ = wait_futures([future], timeout=timeout_s)
        if done:
            reading = future.result()
        else:
            reading = _Reading(False, error=f"no answer within {timeout_s} s")
        events: list[InterlockEvent] = []
        with self._eval_lock:
            health.observe(seq, now, reading.ok, reading.error)
            self._collect_actions(now, events)
            with self._state_lock:
                tracker = self._trackers[name]
                accepted = self._decide_reset(rule, tracker, reading, seq, now, events)
        for event in events:
            self._emit(event)
        return accepted

    def _decide_reset(
        self,
        rule: InterlockRule,
        tracker: _Tracker,
        reading: _Reading,
        seq: int,
        now_s: float,
        events: list[InterlockEvent],
    ) -> bool:
        """Accept or refuse a reset on a fresh reading (under the state lock); logs it."""
        if tracker.state != "tripped":  # re-armed meanwhile (a self-clearing rule)
            return True
        if isinstance(rule.trigger, UnreachableTrigger):
            verdict = (
                Verdict(False, True, f"{rule.instrument} answers")
                if reading.ok
                else Verdict(True, False, f"{rule.instrument} still unreachable: {reading.error}")
            )
        else:
            verdict, _ = self._verdict(rule, _Sample(reading, now_s, seq), now_s)
            if verdict.violated is not None:
                tracker.value, tracker.text = verdict.value, verdict.text
        unfinished = [a for a in tracker.actions.values() if not a.done]
        if unfinished:
            accepted = False
            why = "; ".join(
                f"{a.target} safe state not applied yet ({a.error or 'in progress'})"
                for a in unfinished
            )
            reason = f"reset refused: {why}"
        elif verdict.clear:
            accepted = True
            reason = f"reset by operator: {verdict.text}"
            self._rearm(tracker, now_s)
            tracker.min_seq = seq
        else:
            accepted = False
            reason = f"reset refused: condition not clear: {verdict.text}"
        kind: EventKind = "reset" if accepted else "reset_refused"
        events.append(self._event(now_s, rule, kind, reason, (rule.instrument,)))
        return accepted

    def _rule(self, name: str) -> InterlockRule:
        try:
            return self.rules[name]
        except KeyError:
            raise KeyError(
                f"no interlock rule {name!r}; rules: {', '.join(self.rules) or 'none'}"
            ) from None

    # -- queries ---------------------------------------------------------------------------
    def status(self) -> dict[str, RuleStatus]:
        """Snapshot of every rule (safe to call from any thread)."""
        with self._state_lock:
            return {
                name: RuleStatus(
                    rule=name,
                    state=t.state,
                    since_s=t.since_s,
                    value=t.value,
                    reason=t.trip_reason if t.state == "tripped" else t.text,
                    actions={
                        a.target: "done"
                        if a.done
                        else "in progress"
                        if a.future is not None or not a.error
                        else f"failed: {a.error}"
                        for a in t.actions.values()
                    },
                )
                for name, t in self._trackers.items()
            }

    def instrument_health(self) -> dict[str, InstrumentHealth]:
        """Snapshot of every probed instrument (lock-free: never waits for an evaluation)."""
        return {
            name: InstrumentHealth(
                name, h.reachable, h.future is not None, h.fail_since_s, h.last_error
            )
            for name, h in self._health.items()
        }

    def held_instruments(self) -> dict[str, tuple[str, ...]]:
        """Instruments held in their safe state -> the tripped rules holding them."""
        held: dict[str, list[str]] = {}
        with self._state_lock:
            for name, tracker in self._trackers.items():
                if tracker.state == "tripped":
                    for target in self.rules[name].safe:
                        held.setdefault(target, []).append(name)
        return {target: tuple(rules) for target, rules in held.items()}

    def check_allowed(self, instrument: str) -> None:
        """Raise :class:`InterlockHeld` if a tripped rule holds ``instrument`` safe.

        Control loops call this before writing, so they never re-enable what an interlock
        switched off.
        """
        rules = self.held_instruments().get(instrument)
        if rules:
            raise InterlockHeld(
                f"{instrument} is held in its safe state by tripped interlock "
                f"{', '.join(rules)}: reset the interlock first"
            )

    # -- log -------------------------------------------------------------------------------
    @property
    def log(self) -> list[InterlockEvent]:
        """The trip log, oldest first (the last ``max_log_entries``)."""
        with self._log_lock:
            return list(self._log)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every future log entry (from the watchdog thread)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    @staticmethod
    def _event(
        now_s: float,
        rule: InterlockRule,
        kind: EventKind,
        reason: str,
        instruments: tuple[str, ...],
    ) -> InterlockEvent:
        return InterlockEvent(
            time_utc=datetime.now(UTC).isoformat(timespec="milliseconds"),
            time_s=now_s,
            rule=rule.name,
            event=kind,
            reason=reason,
            instruments=instruments,
        )

    def _emit(self, event: InterlockEvent) -> None:
        with self._log_lock:
            self._log.append(event)
            self.logger.log(
                _LEVELS[event.event], "interlock %s: %s: %s", event.rule, event.event, event.reason
            )
            if self.log_path is not None:
                try:
                    with self.log_path.open("a", encoding="utf-8") as stream:
                        stream.write(json.dumps(event.as_dict()) + "\n")
                        stream.flush()
                        os.fsync(stream.fileno())
                except OSError as exc:
                    self.logger.error("interlock log %s not written: %s", self.log_path, exc)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                self.logger.exception("interlock listener %r failed", listener)
