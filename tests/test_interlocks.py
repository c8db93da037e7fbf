"""Interlocks: every rule kind tripped through the simulators, safe states read back.

The bench (``tests/benches/interlock_bench.toml``) runs its simulators on real transports with
a manual clock, so the TEC's physics only moves when a test advances it; the watchdog's own
time is passed to ``evaluate_once(now_s=...)``. Safe states are checked through the drivers
and against each simulator's ground truth (``sim.snapshot()``).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.sim.base import SimInstrument
from drivers.sim.clock import VirtualClock
from labctl.bench import Bench
from labctl.config import BenchConfig, ConfigError, parse_bench
from labctl.interlocks import (
    DERIVED_QUANTITIES,
    ConditionTrigger,
    DerivedQuantity,
    InterlockEvent,
    InterlockHeld,
    InterlockWatchdog,
    QuantityTrigger,
    UnreachableTrigger,
    parse_interlocks,
    register_derived_quantity,
)

BENCH_FILE = Path(__file__).parent / "benches" / "interlock_bench.toml"
BENCH_DATA: dict[str, Any] = tomllib.loads(BENCH_FILE.read_text(encoding="utf-8"))
PUMPS = ("pump0", "pump10")
RING = "pumps-off-on-ring-temperature"
UNREACHABLE = "pumps-off-when-tec-unreachable"
OVERLOAD = "awg-off-on-scope-overload"
FAULT = "pumps-off-on-tec-fault"
#: the TEC simulator's sensor noise (drivers/sim/arroyo.py) plus one 10 ms control step
TEC_READING_SLACK_C = 0.01


def bench_config(rules: list[dict[str, Any]] | dict[str, Any] | None = None) -> BenchConfig:
    """The test bench, with its own rules or ``rules`` instead."""
    data = copy.deepcopy(BENCH_DATA)
    if rules is not None:
        data["interlocks"] = rules
    return parse_bench(data, BENCH_FILE)


@dataclass
class Rig:
    bench: Bench
    watchdog: InterlockWatchdog

    def sim(self, name: str) -> Any:
        assert self.bench.sim_host is not None
        return self.bench.sim_host.sims[name]

    @property
    def clock(self) -> VirtualClock:
        assert self.bench.sim_host is not None
        return self.bench.sim_host.bench.clock

    def pumps_on(self) -> None:
        for name in PUMPS:
            self.bench.instruments[name].emission_on()
            assert self.sim(name).snapshot()["emission"] is True

    def assert_pumps_off(self) -> None:
        for name in PUMPS:
            assert self.bench.instruments[name].emission is False, name
            truth = self.sim(name).snapshot()
            assert truth["emission"] is False and truth["optical_power_mw"] == 0.0, name

    def knob(self, setpoint_c: float) -> None:
        """Turn the TEC's setpoint behind the driver's back (the front-panel knob)."""
        tec: SimInstrument = self.sim("tec1")
        with tec.lock:
            tec.setpoint_c = setpoint_c  # type: ignore[attr-defined]

    def events(self, rule: str, kind: str | None = None) -> list[InterlockEvent]:
        return [e for e in self.watchdog.log if e.rule == rule and kind in (None, e.event)]


@pytest.fixture
def rig_factory() -> Iterator[Callable[..., Rig]]:
    """Factory: connected bench + watchdog; watchdog stopped, then bench closed safely."""
    rigs: list[Rig] = []

    def make(rules: list[dict[str, Any]] | dict[str, Any] | None = None, **kwargs: Any) -> Rig:
        config = bench_config(rules)
        bench = Bench(config)
        try:
            bench.connect()
            watchdog = InterlockWatchdog(parse_interlocks(config), bench.instruments, **kwargs)
        except BaseException:
            bench.close()
            raise
        rig = Rig(bench, watchdog)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.watchdog.stop()
        rig.bench.close()


@pytest.fixture
def rig(rig_factory: Callable[..., Rig]) -> Rig:
    return rig_factory()


def reason_value(reason: str, quantity: str) -> float:
    match = re.search(rf"{quantity}(?:\[\d\])? = (\S+)", reason)
    assert match, reason
    return float(match.group(1))


# ------------------------------------------------------------------------------------ the rules


def test_bench_file_rules_parse_as_written() -> None:
    rules = {r.name: r for r in parse_interlocks(bench_config())}
    raw = {r["name"]: r for r in BENCH_DATA["interlocks"]}
    assert list(rules) == list(raw)
    ring = rules[RING].trigger
    assert isinstance(ring, QuantityTrigger) and ring.derived is not None
    assert (ring.above, ring.below, ring.units) == (raw[RING]["when"]["above"], None, "degC")
    assert rules[RING].for_s == raw[RING]["when"]["for_s"]
    unreachable = rules[UNREACHABLE]
    assert isinstance(unreachable.trigger, UnreachableTrigger)
    assert unreachable.for_s == raw[UNREACHABLE]["when"]["unreachable_for_s"]
    for name in (OVERLOAD, FAULT):
        trigger = rules[name].trigger
        assert isinstance(trigger, ConditionTrigger)
        assert trigger.condition.name == raw[name]["when"]["condition"]
    for name, rule in rules.items():
        assert rule.safe == tuple(raw[name]["then"]["safe"]) and rule.latch
        assert rule.description == raw[name]["description"]
    assert rules[RING].describe() == (
        "when tec1 temperature_error_c > 0.05 degC for 2 s: safe pump0, pump10 (latching)"
    )
    assert rules[UNREACHABLE].key == "interlocks[1]"


def test_table_of_named_rules_is_accepted() -> None:
    section = {
        "awg-off": {
            "when": {"instrument": "scope1", "condition": "overload"},
            "then": {"safe": ["awg1"]},
            "latch": False,
        }
    }
    (rule,) = parse_interlocks(bench_config(section))
    assert rule.name == "awg-off" and rule.key == "interlocks.awg-off" and not rule.latch


def test_bench_without_interlocks_has_no_rules() -> None:
    data = copy.deepcopy(BENCH_DATA)
    del data["interlocks"]
    assert parse_interlocks(parse_bench(data, BENCH_FILE)) == []


# ------------------------------------------------------------------------ temperature error


def test_warm_room_trips_the_ring_rule_after_its_debounce(rig: Rig) -> None:
    rig.pumps_on()
    rule = rig.watchdog.rules[RING]
    threshold = rule.trigger.above  # type: ignore[union-attr]
    assert rig.watchdog.evaluate_once(now_s=rig.clock.now_s()) == []
    rig.bench.sim_host.bench.ambient_c = 40.0  # type: ignore[union-attr]  # air-con failure
    samples: list[tuple[float, float, str]] = []  # (time, error seen, state)
    trip: InterlockEvent | None = None
    while trip is None and rig.clock.now_s() < 30.0:
        rig.clock.advance(0.25)
        now = rig.clock.now_s()
        events = rig.watchdog.evaluate_once(now_s=now)
        status = rig.watchdog.status()[RING]
        samples.append((now, status.value, status.state))
        trip = next((e for e in events if e.event == "trip"), None)
    assert trip is not None, samples

    # the reference debounce: the first sample at least for_s after the violation began
    start = next(t for t, error, _ in samples if error > threshold)
    assert all(error > threshold for t, error, _ in samples if t >= start)
    expected_trip_s = next(t for t, _, _ in samples if t - start >= rule.for_s - 1e-9)
    assert trip.time_s == pytest.approx(expected_trip_s)
    assert all(state == "pending" for t, _, state in samples if start <= t < expected_trip_s)

    truth = rig.sim("tec1").snapshot()
    assert samples[-1][1] == pytest.approx(
        abs(truth["temperature_c"] - truth["setpoint_c"]), abs=TEC_READING_SLACK_C
    )
    assert trip.reason.startswith("tec1 temperature_error_c = ")
    assert reason_value(trip.reason, "temperature_error_c") == pytest.approx(samples[-1][1])
    assert f"> {threshold:g} degC" in trip.reason and f"for_s = {rule.for_s:g} s" in trip.reason
    assert trip.instruments == ("tec1", *PUMPS)
    rig.assert_pumps_off()
    actions = rig.events(RING, "action")
    assert sorted(e.instruments[0] for e in actions) == sorted(PUMPS)
    assert all("safe state applied" in e.reason for e in actions)


def test_violation_shorter_than_for_s_does_not_trip(rig: Rig) -> None:
    rig.pumps_on()
    for_s = rig.watchdog.rules[RING].for_s
    rig.knob(25.5)  # 0.5 degC off, the sim clock stands still: the error stays exactly there
    rig.watchdog.evaluate_once(now_s=0.0)
    assert rig.watchdog.status()[RING].state == "pending"
    rig.watchdog.evaluate_once(now_s=for_s * 0.9)
    rig.knob(25.0)
    assert rig.watchdog.evaluate_once(now_s=for_s * 1.1) == []
    assert rig.watchdog.status()[RING].state == "armed"
    rig.knob(25.5)  # again, and now held: the debounce restarted at the new violation
    rig.watchdog.evaluate_once(now_s=for_s * 1.2)
    assert rig.watchdog.evaluate_once(now_s=for_s * 2.1) == []
    (trip, *_) = rig.watchdog.evaluate_once(now_s=for_s * 2.2)
    assert trip.event == "trip" and trip.time_s == pytest.approx(for_s * 2.2)
    assert reason_value(trip.reason, "temperature_error_c") == pytest.approx(0.5)
    rig.assert_pumps_off()


def reference_trip_index(samples: list[tuple[float, bool]], for_s: float) -> int | None:
    """Index of the first sample at which the violation has lasted ``for_s`` (or None)."""
    start: float | None = None
    for k, (t, violated) in enumerate(samples):
        if not violated:
            start = None
            continue
        start = t if start is None else start
        if t - start >= for_s - 1e-9:
            return k
    return None


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    for_s=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    steps=st.lists(
        st.tuples(st.sampled_from([0.1, 0.25, 0.5, 1.0]), st.booleans()), min_size=1, max_size=8
    ),
)
def test_debounce_matches_the_reference(
    rig: Rig, for_s: float, steps: list[tuple[float, bool]]
) -> None:
    rule = dict(BENCH_DATA["interlocks"][0])
    rule["when"] = {**rule["when"], "for_s": for_s}
    (parsed,) = parse_interlocks(bench_config([rule]))
    watchdog = InterlockWatchdog([parsed], rig.bench.instruments)
    try:
        samples, t = [], 0.0
        trip_index = None
        for k, (dt, violated) in enumerate(steps):
            t += dt
            samples.append((t, violated))
            rig.knob(25.5 if violated else 25.0)
            events = watchdog.evaluate_once(now_s=t)
            if any(e.event == "trip" for e in events):
                trip_index = k
                break
        assert trip_index == reference_trip_index(samples, for_s)
    finally:
        watchdog.stop()
        rig.knob(25.0)


def test_hysteresis_holds_the_reset_until_the_margin(rig_factory: Callable[..., Rig]) -> None:
    rule = {
        "name": "ring-far-off",
        "when": {
            "instrument": "tec1",
            "quantity": "temperature_error_c",
            "above": 0.5,
            "hysteresis": 0.2,
        },
        "then": {"safe": list(PUMPS)},
    }
    rig = rig_factory([rule])
    rig.knob(26.0)
    (trip, *_) = rig.watchdog.evaluate_once(now_s=1.0)
    assert trip.event == "trip" and "> 0.5 degC" in trip.reason
    rig.knob(25.4)  # 0.4: below the threshold, inside the hysteresis band
    assert rig.watchdog.reset("ring-far-off", now_s=2.0) is False
    refused = rig.events("ring-far-off", "reset_refused")[-1]
    assert "not clear" in refused.reason
    assert reason_value(refused.reason, "temperature_error_c") == pytest.approx(0.4)
    rig.knob(25.25)  # 0.25 <= 0.5 - 0.2
    assert rig.watchdog.reset("ring-far-off", now_s=3.0) is True
    assert rig.watchdog.status()["ring-far-off"].state == "armed"


# ------------------------------------------------------------------------------ unreachable


@pytest.mark.parametrize("fault", ["refuse", "no_reply", "drop"])
def test_unreachable_tec_trips_after_unreachable_for_s(rig: Rig, fault: str) -> None:
    rig.pumps_on()
    tec = rig.bench.instruments["tec1"]
    tec.resync_timeout_s, tec.reconnect_attempts = 0.3, 1  # give up sooner: a quicker test
    after_s = rig.watchdog.rules[UNREACHABLE].for_s
    assert rig.watchdog.evaluate_once(now_s=0.0) == []
    rig.sim("tec1").faults.inject(fault, count=None)

    assert rig.watchdog.evaluate_once(now_s=10.0) == []  # first failed probe: the clock starts
    assert rig.watchdog.status()[UNREACHABLE].state == "pending"
    health = rig.watchdog.instrument_health()["tec1"]
    assert health.reachable is False and health.unreachable_since_s == 10.0
    assert "InstrumentTimeout" in health.last_error
    # just before unreachable_for_s: no trip (not waiting for the probe now running)
    assert rig.watchdog.evaluate_once(now_s=10.0 + after_s * 0.99, probe_wait_s=0.0) == []
    assert all(rig.sim(p).snapshot()["emission"] for p in PUMPS)

    events = rig.watchdog.evaluate_once(now_s=10.0 + after_s)
    trip = next(e for e in events if e.rule == UNREACHABLE and e.event == "trip")
    assert trip.reason.startswith(
        f"tec1 unreachable for {after_s:g} s (unreachable_for_s = {after_s:g} s), "
        "last error: InstrumentTimeout: tec1: "
    )
    rig.assert_pumps_off()
    # the other tec1 rules had no reading: they neither tripped nor cleared
    assert {e.rule for e in events if e.event == "trip"} == {UNREACHABLE}

    assert rig.watchdog.reset(UNREACHABLE, now_s=20.0) is False
    refused = rig.events(UNREACHABLE, "reset_refused")[-1].reason
    assert refused.startswith("reset refused: condition not clear: tec1 still unreachable: ")
    rig.sim("tec1").faults.clear()
    assert rig.watchdog.reset(UNREACHABLE, now_s=21.0) is True
    assert rig.events(UNREACHABLE, "reset")[-1].reason == "reset by operator: tec1 answers"
    assert rig.watchdog.instrument_health()["tec1"].reachable is True


def test_reachability_alone_is_probed_with_the_identity_query(
    rig_factory: Callable[..., Rig],
) -> None:
    rule = {
        "name": "pump0-off-when-awg-gone",
        "when": {"instrument": "awg1", "unreachable_for_s": 0.0},
        "then": {"safe": ["pump0"]},
    }
    rig = rig_factory([rule])
    rig.pumps_on()
    awg = rig.sim("awg1")
    before = list(awg.received).count(b"*IDN?")
    assert rig.watchdog.evaluate_once(now_s=0.0) == []
    assert list(awg.received).count(b"*IDN?") == before + 1
    awg.faults.inject("refuse", count=None)  # the link is dropped and reconnection refused
    (trip, action) = rig.watchdog.evaluate_once(now_s=1.0)
    assert re.match(
        r"awg1 unreachable for 0 s \(unreachable_for_s = 0 s\), "
        r"last error: Instrument(Timeout|Disconnected): awg1: ",
        trip.reason,
    ), trip.reason
    assert action.reason == "pump0 safe state applied"
    assert rig.sim("pump0").snapshot()["emission"] is False
    assert rig.sim("pump10").snapshot()["emission"] is True  # not named by the rule
    awg.faults.clear()


# ---------------------------------------------------------------------------- scope overload


def overdrive_scope(rig: Rig) -> None:
    """Drive the AWG beyond the scope's range and take one record (trips its protection)."""
    awg, scope = rig.bench.instruments["awg1"], rig.bench.instruments["scope1"]
    awg.upload_arb(1, "sine", np.sin(2 * np.pi * np.arange(100) / 100), 1e6)
    awg.amplitude_vpp[1] = 4.0
    awg.output_on(1)
    scope.sample_rate_hz = 1e6
    scope.record_length = 1000
    scope.channel_scale_v_per_div[1] = 0.1  # +-0.4 V full scale
    scope.acquire([1])
    assert rig.sim("scope1").snapshot()["tripped"][1] is True


def test_scope_overload_switches_the_awg_off_until_the_protection_is_cleared(rig: Rig) -> None:
    assert rig.watchdog.evaluate_once(now_s=0.0) == []
    overdrive_scope(rig)
    events = rig.watchdog.evaluate_once(now_s=1.0)
    assert [(e.rule, e.event) for e in events] == [(OVERLOAD, "trip"), (OVERLOAD, "action")]
    assert events[0].reason == "scope1 overload: input protection tripped on channel 1"
    assert events[1].reason == "awg1 safe state applied"
    awg = rig.bench.instruments["awg1"]
    assert [awg.output[ch] for ch in awg.channels] == [False, False]
    truth = rig.sim("awg1").snapshot()["channels"]
    assert [truth[ch]["output"] for ch in awg.channels] == [False, False]
    status = rig.watchdog.status()[OVERLOAD]
    assert (status.state, status.since_s, status.actions) == ("tripped", 1.0, {"awg1": "done"})

    # the scope latches its protection: the condition holds until the operator clears it
    assert rig.watchdog.evaluate_once(now_s=2.0) == []
    assert rig.watchdog.reset(OVERLOAD, now_s=3.0) is False
    refused = rig.events(OVERLOAD, "reset_refused")[-1]
    assert refused.reason == (
        "reset refused: condition not clear: scope1 overload: input protection tripped on channel 1"
    )
    rig.bench.instruments["scope1"].clear_protection(1)
    assert rig.watchdog.reset(OVERLOAD, now_s=4.0) is True
    assert rig.events(OVERLOAD, "reset")[-1].reason == "reset by operator: scope1 overload: clear"
    assert rig.watchdog.status()[OVERLOAD].state == "armed"
    assert awg.output[1] is False  # the interlock never switches anything back on


# --------------------------------------------------------------------------------- TEC fault


def test_tec_fault_trips_latches_and_resets_only_when_clear(rig: Rig) -> None:
    rig.pumps_on()
    assert rig.watchdog.evaluate_once(now_s=0.0) == []
    rig.watchdog.check_allowed("pump0")  # nothing held yet
    rig.sim("tec1").set_sensor_open(True)
    events = rig.watchdog.evaluate_once(now_s=1.0)
    trip = next(e for e in events if e.event == "trip")
    assert (trip.rule, trip.reason) == (FAULT, "tec1 fault: SENSOR_OPEN")
    rig.assert_pumps_off()
    assert rig.watchdog.held_instruments() == {"pump0": (FAULT,), "pump10": (FAULT,)}
    with pytest.raises(InterlockHeld, match=f"pump0 is held .* by tripped interlock {FAULT}"):
        rig.watchdog.check_allowed("pump0")

    assert rig.watchdog.reset(FAULT, now_s=2.0) is False
    assert rig.watchdog.status()[FAULT].state == "tripped"
    rig.sim("tec1").set_sensor_open(False)
    assert rig.watchdog.evaluate_once(now_s=3.0) == []  # latched: clear is not enough
    assert rig.watchdog.status()[FAULT].state == "tripped"
    assert rig.watchdog.reset(FAULT, now_s=4.0) is True
    assert rig.watchdog.held_instruments() == {}
    assert [(e.event, e.time_s, e.reason) for e in rig.events(FAULT)[-2:]] == [
        ("reset_refused", 2.0, "reset refused: condition not clear: tec1 fault: SENSOR_OPEN"),
        ("reset", 4.0, "reset by operator: tec1 fault: clear"),
    ]
    assert rig.watchdog.reset(FAULT, now_s=5.0) is True  # not tripped: nothing to do
    assert len(rig.events(FAULT)) == 5  # trip, 2 actions, refused, reset
    rig.assert_pumps_off()


def test_self_clearing_rule_rearms_but_never_switches_back_on(
    rig_factory: Callable[..., Rig],
) -> None:
    rule = {
        "name": "pumps-off-while-tec-off",
        "when": {"instrument": "tec1", "quantity": "output", "equals": False},
        "then": {"safe": list(PUMPS)},
        "latch": False,
    }
    rig = rig_factory([rule])
    rig.pumps_on()
    tec = rig.bench.instruments["tec1"]
    assert rig.watchdog.evaluate_once(now_s=0.0) == []
    tec.output_off()  # someone switches the ring's TEC off
    (trip, *_) = rig.watchdog.evaluate_once(now_s=1.0)
    assert trip.reason == "tec1 output = false (equals = false)"
    rig.assert_pumps_off()
    tec.output_on()
    (reset,) = rig.watchdog.evaluate_once(now_s=2.0)
    assert (reset.event, reset.reason) == ("reset", "condition cleared: tec1 output = true")
    assert rig.watchdog.status()["pumps-off-while-tec-off"].state == "armed"
    rig.assert_pumps_off()


# ----------------------------------------------------------------------------------- actions


def test_failed_action_is_logged_retried_and_blocks_the_reset(rig: Rig) -> None:
    rig.pumps_on()
    rig.sim("pump0").faults.inject("refuse", count=None)  # pump0 cannot be reached
    rig.sim("tec1").set_sensor_open(True)
    events = rig.watchdog.evaluate_once(now_s=1.0)
    by_target = {e.instruments[0]: e for e in events if e.event.startswith("action")}
    assert by_target["pump10"].event == "action"  # attempted although pump0 failed
    assert by_target["pump0"].event == "action_failed"
    assert "pump0 safe state failed (attempt 1" in by_target["pump0"].reason
    assert rig.sim("pump10").snapshot()["emission"] is False
    assert rig.sim("pump0").snapshot()["emission"] is True  # still on: the link is down
    assert rig.watchdog.status()[FAULT].actions["pump0"].startswith("failed: ")

    rig.sim("tec1").set_sensor_open(False)
    assert rig.watchdog.reset(FAULT, now_s=2.0) is False
    assert "pump0 safe state not applied yet" in rig.events(FAULT, "reset_refused")[-1].reason

    rig.watchdog.evaluate_once(now_s=3.0)  # retried: still failing
    rig.sim("pump0").faults.clear()
    events = rig.watchdog.evaluate_once(now_s=4.0)
    assert [(e.event, e.reason) for e in events] == [
        ("action", "pump0 safe state applied after 3 attempts")
    ]
    failures = [e.reason for e in rig.events(FAULT, "action_failed")]
    assert all(f.startswith("pump0 safe state failed (attempt ") for f in failures)
    assert len(failures) == len(set(f.partition("): ")[2] for f in failures))  # no repeats
    rig.assert_pumps_off()
    assert rig.watchdog.reset(FAULT, now_s=5.0) is True


def test_callbacks_and_listeners_hear_the_trip(rig_factory: Callable[..., Rig]) -> None:
    rule = {
        "name": "scope-overload",
        "when": {"instrument": "scope1", "condition": "overload"},
        "then": {"safe": ["awg1"], "callbacks": ["pause-lock", "broken"]},
    }
    heard: list[InterlockEvent] = []
    paused: list[InterlockEvent] = []

    def broken(event: InterlockEvent) -> None:
        raise RuntimeError("loop already gone")

    with pytest.raises(ValueError, match="callback 'broken' is not registered"):
        rig_factory([rule], callbacks={"pause-lock": paused.append})
    rig = rig_factory([rule], callbacks={"pause-lock": paused.append, "broken": broken})
    rig.watchdog.add_listener(heard.append)
    rig.watchdog.add_listener(broken)  # a failing listener does not stop the others
    overdrive_scope(rig)
    rig.watchdog.evaluate_once(now_s=1.0)
    assert [e.event for e in paused] == ["trip"]
    assert [(e.event, e.reason) for e in heard] == [
        ("trip", "scope1 overload: input protection tripped on channel 1"),
        ("action", "awg1 safe state applied"),
        ("action", "callback pause-lock called"),
        ("action_failed", "callback broken failed: RuntimeError: loop already gone"),
    ]


# ------------------------------------------------------------------------------ independence


def test_a_blocked_instrument_does_not_stall_the_other_rules(rig: Rig) -> None:
    rig.pumps_on()
    rig.sim("tec1").set_sensor_open(True)
    assert rig.watchdog.evaluate_once(now_s=0.0)[0].rule == FAULT
    overdrive_scope(rig)
    tec = rig.bench.instruments["tec1"]
    resets: list[bool] = []
    with tec._lock:  # another thread in a long tec1 transaction: no tec1 probe can run
        # an operator's reset waits for its fresh tec1 reading without holding up evaluations
        operator = threading.Thread(target=lambda: resets.append(rig.watchdog.reset(FAULT)))
        operator.start()
        events = rig.watchdog.evaluate_once(now_s=1.0, probe_wait_s=0.1)
        assert [(e.rule, e.event) for e in events if e.event == "trip"] == [(OVERLOAD, "trip")]
        assert rig.watchdog.instrument_health()["tec1"].probe_in_flight is True
        assert rig.watchdog.status()[UNREACHABLE].state == "armed"
        assert resets == []
    operator.join(timeout=60.0)
    assert resets == [False]  # the sensor is still open
    rig.watchdog.evaluate_once(now_s=2.0)
    assert [e.reason for e in rig.events(OVERLOAD, "action")] == ["awg1 safe state applied"]
    assert rig.watchdog.instrument_health()["tec1"].probe_in_flight is False


def test_watchdog_thread_trips_on_its_own(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(period_s=0.05)
    rig.pumps_on()
    done = threading.Event()
    actions: list[InterlockEvent] = []

    def listen(event: InterlockEvent) -> None:
        if event.rule == FAULT and event.event == "action":
            actions.append(event)
            if len(actions) == len(PUMPS):
                done.set()

    rig.watchdog.add_listener(listen)
    with rig.watchdog:
        assert rig.watchdog.running
        rig.sim("tec1").set_sensor_open(True)
        assert done.wait(timeout=60.0), rig.watchdog.log
    assert not rig.watchdog.running
    assert rig.watchdog.status()[FAULT].state == "tripped"
    assert [e.event for e in rig.events(FAULT)] == ["trip", "action", "action"]
    rig.assert_pumps_off()


# ------------------------------------------------------------------------------------- log


def test_log_file_holds_every_entry_as_json_lines(
    rig_factory: Callable[..., Rig], tmp_path: Path
) -> None:
    path = tmp_path / "interlocks.jsonl"
    rig = rig_factory(log_path=path)
    rig.sim("tec1").set_sensor_open(True)
    rig.watchdog.evaluate_once(now_s=1.0)
    rig.watchdog.reset(FAULT, now_s=2.0)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [e.as_dict() for e in rig.watchdog.log]
    assert [(d["event"], d["time_s"]) for d in lines] == [
        ("trip", 1.0),
        ("action", 1.0),
        ("action", 1.0),
        ("reset_refused", 2.0),
    ]
    for entry in lines:
        assert set(entry) == {"time_utc", "time_s", "rule", "event", "reason", "instruments"}
        assert datetime.fromisoformat(entry["time_utc"]).tzinfo is not None
        assert entry["rule"] == FAULT


def test_entries_go_to_the_logger_with_their_level(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.sim("tec1").set_sensor_open(True)
    with caplog.at_level("INFO", logger="labctl.interlocks"):
        rig.watchdog.evaluate_once(now_s=1.0)
    levels = {r.getMessage().split(": ")[1]: r.levelname for r in caplog.records}
    assert levels == {"trip": "WARNING", "action": "INFO"}
    assert "tec1 fault: SENSOR_OPEN" in caplog.records[0].getMessage()


# ------------------------------------------------------------------------ derived quantities


def test_a_registered_derived_quantity_is_usable_in_rules(rig_factory: Callable[..., Rig]) -> None:
    shortfall = DerivedQuantity(
        "power_shortfall_mw",
        "mW",
        "setpoint - monitored power",
        ("power_mw", "measured_power_mw"),
        lambda setpoint, measured: float(setpoint) - float(measured),
    )
    register_derived_quantity("laser", shortfall)
    try:
        with pytest.raises(ValueError, match="already has"):
            register_derived_quantity("laser", shortfall)
        rule = {
            "name": "pump0-weak",
            "when": {"instrument": "pump0", "quantity": "power_shortfall_mw", "above": 0.1},
            "then": {"safe": ["pump0"]},
        }
        rig = rig_factory([rule])
        rig.bench.instruments["pump0"].emission_on()  # frozen clock: no light yet
        (trip, *_) = rig.watchdog.evaluate_once(now_s=1.0)
        truth = rig.sim("pump0").snapshot()
        expected = truth["power_setpoint_mw"] - 0.0
        assert reason_value(trip.reason, "power_shortfall_mw") == pytest.approx(expected)
        assert rig.sim("pump0").snapshot()["emission"] is False
    finally:
        del DERIVED_QUANTITIES["laser"]["power_shortfall_mw"]


@given(
    above=st.floats(-100, 100),
    width=st.floats(0.0, 50.0),
    hysteresis=st.floats(0.0, 10.0),
    value=st.floats(-300, 300),
)
def test_clear_implies_not_violated(
    above: float, width: float, hysteresis: float, value: float
) -> None:
    below = above - width - 2 * hysteresis
    trigger = QuantityTrigger("x", "V", above=above, below=below, hysteresis=hysteresis)
    if trigger.clear(value):
        assert trigger.violation(value) is None
    if hysteresis == 0.0:
        assert trigger.clear(value) == (trigger.violation(value) is None)


# ----------------------------------------------------------------------------- config errors

W = {"instrument": "tec1", "quantity": "temperature_error_c", "above": 0.05}


def rule(when: dict[str, Any] | None = None, then: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": "r",
        "when": W if when is None else when,
        "then": {"safe": ["pump0"]} if then is None else then,
        **extra,
    }


BAD = [
    ([rule(colour="red")], "interlocks[0].colour", "unknown key"),
    ([rule({**W, "treshold": 1})], "interlocks[0].when.treshold", "unknown key"),
    ([rule({**W, "instrument": "tec9"})], "interlocks[0].when.instrument", "got 'tec9'"),
    (
        [rule({**W, "quantity": "temperature_k"})],
        "interlocks[0].when.quantity",
        "setpoint_c, temperature_c",
    ),
    ([rule({**W, "instrument": "pump0"})], "interlocks[0].when.quantity", "pump0 (santec_tsl570)"),
    ([rule({**W, "above": "0.05"})], "interlocks[0].when.above", "expected a number"),
    ([rule({**W, "above": True})], "interlocks[0].when.above", "expected a number"),
    ([rule({"instrument": "tec1", "quantity": "temperature_c"})], "interlocks[0].when", "above"),
    ([rule({**W, "below": 0.1})], "interlocks[0].when.below", "below < above"),
    (
        [rule({**W, "quantity": "temperature_c", "above": 30, "below": 20, "hysteresis": 6})],
        "interlocks[0].when.below",
        "below + 2 * hysteresis <= above",
    ),
    ([rule({**W, "hysteresis": -1})], "interlocks[0].when.hysteresis", ">= 0"),
    ([rule({**W, "condition": "fault"})], "interlocks[0].when", "exactly one of"),
    ([rule({"instrument": "tec1"})], "interlocks[0].when", "exactly one of"),
    (
        [rule({"instrument": "tec1", "condition": "overload"})],
        "interlocks[0].when.condition",
        "a condition of a tec: fault",
    ),
    (
        [rule({"instrument": "pump0", "condition": "fault"})],
        "interlocks[0].when.condition",
        "none is defined for class laser",
    ),
    (
        [rule({"instrument": "tec1", "condition": "fault", "above": 1})],
        "interlocks[0].when.above",
        "only used with quantity",
    ),
    (
        [rule({"instrument": "tec1", "unreachable_for_s": 3, "for_s": 1})],
        "interlocks[0].when.for_s",
        "not used with unreachable_for_s",
    ),
    ([rule({"instrument": "tec1", "unreachable_for_s": -3})], "when.unreachable_for_s", ">= 0"),
    ([rule({**W, "for_s": -1})], "interlocks[0].when.for_s", "seconds >= 0"),
    ([rule({**W, "channel": 1})], "interlocks[0].when.channel", "has no channels"),
    (
        [
            rule(
                {
                    "instrument": "scope1",
                    "quantity": "channel_protection_tripped",
                    "channel": 7,
                    "equals": True,
                }
            )
        ],
        "interlocks[0].when.channel",
        "one of [1, 2, 3, 4]",
    ),
    ([rule({**W, "equals": 1})], "interlocks[0].when.equals", "is numeric"),
    (
        [rule({"instrument": "tec1", "quantity": "output", "equals": "off"})],
        "interlocks[0].when.equals",
        "true or false",
    ),
    (
        [rule({"instrument": "tec1", "quantity": "output"})],
        "interlocks[0].when.equals",
        "missing",
    ),
    (
        [rule({"instrument": "tec1", "quantity": "output", "above": 0})],
        "interlocks[0].when.above",
        "not numeric",
    ),
    ([{"name": "r", "then": {"safe": ["pump0"]}}], "interlocks[0].when", "missing"),
    ([{"name": "r", "when": W}], "interlocks[0].then", "missing"),
    ([rule(then={})], "interlocks[0].then", "no action"),
    ([rule(then={"safe": ["pump0", "pump7"]})], "interlocks[0].then.safe[1]", "got 'pump7'"),
    ([rule(then={"safe": "pump0"})], "interlocks[0].then.safe", "a list of names"),
    ([rule(then={"safe": ["pump0", "pump0"]})], "interlocks[0].then.safe[1]", "twice"),
    ([rule(then={"callbacks": [3]})], "interlocks[0].then.callbacks[0]", "expected a name"),
    ([rule(latch="yes")], "interlocks[0].latch", "true or false"),
    ([rule(description=3)], "interlocks[0].description", "a string"),
    ([rule(), rule()], "interlocks[1].name", "unique rule name (interlocks[0] has it)"),
    ([{"when": W, "then": {"safe": ["pump0"]}}], "interlocks[0].name", "non-empty string"),
    (["pumps-off"], "interlocks[0]", "expected a table"),
    (rule(), "interlocks", "write it as [[interlocks]]"),
    ({"r": rule()}, "interlocks.r.name", "unknown key"),
]


@pytest.mark.parametrize(("section", "key", "fragment"), BAD, ids=[b[1] for b in BAD])
def test_bad_rules_name_the_file_and_the_key(section: Any, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:  # at load: before anything connects
        bench_config(section)
    message = str(info.value)
    assert message.startswith(f"{BENCH_FILE}: "), message
    assert info.value.key.endswith(key), message
    assert fragment in message, message


def test_unknown_quantity_lists_the_derived_ones() -> None:
    with pytest.raises(ConfigError) as info:
        bench_config([rule({**W, "quantity": "temp"})])
    assert "temperature_error_c (derived)" in str(info.value)


def test_watchdog_refuses_rules_on_instruments_it_does_not_have() -> None:
    rules = parse_interlocks(bench_config())
    with pytest.raises(ValueError, match="instrument 'tec1' is not connected"):
        InterlockWatchdog(rules, {})
    with pytest.raises(ValueError, match="period_s"):
        InterlockWatchdog([], {}, period_s=0.0)
